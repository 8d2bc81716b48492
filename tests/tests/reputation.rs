//! Reputation-based provider choice between real nodes in one process: a
//! provider that answers wrongly is caught and avoided, a slow one gets
//! fewer calls, and advice that is not backed by the provider's receipt,
//! is forged, or comes in a flood is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;
use serde_bytes::ByteBuf;
use sp2a::net::evidence::{Evaluation, Receipt};
use sp2a::net::protocol::{AdviceRequest, AdviceResponse, MAX_ADVICE_EVALUATIONS};
use sp2a::net::{InboundRequest, Multiaddr, NetConfig, PeerId, keys};
use sp2a::node::Node;
use sp2a_tests::net::{FakeProvider, Misbehaviour, TestNet, address, providers_including, within};
use sp2a_tests::service_package;

/// Calls `greet("sp2a")` (hello's self-test call, which every provider
/// here answers the same way when honest) `n` times; the calls each
/// provider answered.
async fn call(consumer: &Node, n: usize) -> HashMap<PeerId, usize> {
    let mut answered = HashMap::new();
    for _ in 0..n {
        let outcome = consumer
            .invoke_remote("hello", "greet(\"sp2a\")")
            .await
            .unwrap();
        *answered.entry(outcome.peer).or_default() += 1;
    }
    answered
}

/// Waits until `provider` is judged to have been caught answering wrongly.
async fn caught(consumer: &Node, provider: PeerId) -> bool {
    for _ in 0..50 {
        let standing = consumer.reputation("hello");
        if standing
            .providers
            .iter()
            .any(|p| p.peer == provider.to_string() && p.last_wrong_secs_ago.is_some())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_provider_that_answers_wrongly_is_caught_and_then_avoided() {
    within(120, async {
        let mut net = TestNet::new();
        let hub_node = net.node(&[]).await;
        let hub = address(&hub_node).await;
        let package = service_package("hello", &net.key);
        assert!(package.manifest().deterministic);
        hub_node.share(package.clone().into_inner()).await.unwrap();
        let cheat =
            FakeProvider::start(&package.into_inner(), &hub, Misbehaviour::WrongAnswers).await;
        let cheat_id = cheat.client.peer_id();
        let consumer = net.node(std::slice::from_ref(&hub)).await;
        let both: std::collections::HashSet<PeerId> = [hub_node.peer_id(), cheat_id].into();
        assert_eq!(providers_including(&consumer, "hello", &both).await, both);

        // Until the cheat is called once, it is a newcomer like any other:
        // its first answer reaches the caller, and is then checked.
        let mut before = 0;
        let mut calls = 0;
        while calls < 300 {
            let answered = call(&consumer, 1).await;
            calls += 1;
            if answered.contains_key(&cheat_id) {
                before += 1;
                assert!(
                    caught(&consumer, cheat_id).await,
                    "the wrong answer was not caught"
                );
                break;
            }
        }
        assert_eq!(before, 1, "the cheat was never called in {calls} calls");

        // Caught once, it is not called again while an honest provider is
        // there.
        let after = call(&consumer, 40).await;
        assert_eq!(after.get(&cheat_id), None, "{after:?}");
        let standing = consumer.reputation("hello");
        let cheat_standing = standing
            .providers
            .iter()
            .find(|p| p.peer == cheat_id.to_string())
            .unwrap();
        let honest = standing
            .providers
            .iter()
            .find(|p| p.peer == hub_node.peer_id().to_string())
            .unwrap();
        assert!(
            cheat_standing.reputation < 0.15 && honest.reputation > 0.8,
            "{standing:?}"
        );
        assert!(standing.wrong >= 1 && standing.checks >= 2, "{standing:?}");
    })
    .await;
}

#[tokio::test]
async fn a_slow_provider_gets_fewer_calls() {
    within(120, async {
        let mut net = TestNet::new();
        let hub_node = net.node(&[]).await;
        let hub = address(&hub_node).await;
        let package = service_package("hello", &net.key);
        hub_node.share(package.clone().into_inner()).await.unwrap();
        // Right answers, at 1.6 times the default 1 s latency target.
        let slow = FakeProvider::start(
            &package.into_inner(),
            &hub,
            Misbehaviour::Slow(Duration::from_millis(1600)),
        )
        .await;
        let consumer = net.node(std::slice::from_ref(&hub)).await;
        let both: std::collections::HashSet<PeerId> =
            [hub_node.peer_id(), slow.client.peer_id()].into();
        assert_eq!(providers_including(&consumer, "hello", &both).await, both);
        let answered = call(&consumer, 40).await;
        let slow_calls = answered.get(&slow.client.peer_id()).copied().unwrap_or(0);
        assert!(slow_calls <= 6, "{answered:?}");
        assert!(answered[&hub_node.peer_id()] >= 34, "{answered:?}");
        let standing = consumer.reputation("hello");
        assert_eq!(standing.wrong, 0, "slow is not wrong: {standing:?}");
    })
    .await;
}

/// A peer that announces itself as an advisor of `provider` for `hello`
/// and answers every advice request with what `answer` holds then.
struct FakeAdvisor {
    key: Keypair,
    answer: Arc<Mutex<Vec<ByteBuf>>>,
}

impl FakeAdvisor {
    async fn start(hub: &Multiaddr, provider: PeerId) -> Self {
        let key = Keypair::generate_ed25519();
        let config = NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: vec![hub.clone()],
            ..NetConfig::default()
        };
        let (client, mut inbound) = sp2a::net::event_loop::start(key.clone(), config)
            .await
            .unwrap();
        client.dial(hub.clone()).await.unwrap();
        client
            .start_providing(keys::advice_key("hello", &provider))
            .await;
        let answer = Arc::new(Mutex::new(Vec::new()));
        let held = answer.clone();
        tokio::spawn(async move {
            while let Some(request) = inbound.recv().await {
                if let InboundRequest::Advice { channel, .. } = request {
                    let evaluations = held.lock().unwrap().clone();
                    client
                        .respond_advice(channel, AdviceResponse::Evaluations(evaluations))
                        .await;
                }
            }
        });
        Self { key, answer }
    }

    fn answer_with(&self, evaluations: Vec<Vec<u8>>) {
        *self.answer.lock().unwrap() = evaluations.into_iter().map(ByteBuf::from).collect();
    }
}

/// A consumer node, a provider's key (no node: only its receipts matter)
/// and a fake advisor of that provider, around a hub node.
struct Advised {
    _hub: Node,
    provider: Keypair,
    p: PeerId,
    advisor: FakeAdvisor,
    a: PeerId,
    consumer: Node,
}

impl Advised {
    async fn start(net: &mut TestNet) -> Self {
        let hub_node = net.node(&[]).await;
        let hub = address(&hub_node).await;
        let provider = Keypair::generate_ed25519();
        let p = provider.public().to_peer_id();
        let advisor = FakeAdvisor::start(&hub, p).await;
        let a = advisor.key.public().to_peer_id();
        let consumer = net.node(std::slice::from_ref(&hub)).await;
        Self {
            _hub: hub_node,
            provider,
            p,
            advisor,
            a,
            consumer,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A receipt for a call `n`, signed by `signer`, naming `provider` and
/// `consumer`.
fn receipt(signer: &Keypair, provider: PeerId, consumer: PeerId, n: u64) -> Vec<u8> {
    let (call, result) = Receipt::hashes(&format!("greet(\"{n}\")"), "\"x\"");
    Receipt {
        service: "hello".into(),
        content_id: [1; 32],
        call,
        result,
        at_ms: now_ms() - 10_000 + n,
        provider,
        consumer,
    }
    .sign(signer)
}

fn evaluation(signer: &Keypair, receipt: Vec<u8>) -> Vec<u8> {
    Evaluation {
        receipt,
        timeliness: 0.0,
        accurate: Some(false),
        at_ms: now_ms(),
    }
    .sign(signer)
}

#[tokio::test]
async fn advice_without_a_valid_receipt_or_with_a_forged_signature_is_refused() {
    within(60, async {
        let mut net = TestNet::new();
        let Advised {
            provider,
            p,
            advisor,
            a,
            consumer,
            _hub,
        } = Advised::start(&mut net).await;
        let stranger = Keypair::generate_ed25519();

        // Slander without a transaction: the advisor signs the receipt
        // itself.
        advisor.answer_with(vec![evaluation(
            &advisor.key,
            receipt(&advisor.key, p, a, 1),
        )]);
        assert_eq!(consumer.consult("hello", p).await, (0, 1));
        let standing = consumer.reputation("hello");
        assert!(
            standing
                .last_refusal
                .as_deref()
                .is_some_and(|r| r.contains("not") && r.contains(&p.to_string())),
            "{standing:?}"
        );

        // Someone else's evaluation passed on as the advisor's own.
        let theirs = receipt(&provider, p, stranger.public().to_peer_id(), 2);
        advisor.answer_with(vec![evaluation(&stranger, theirs)]);
        assert_eq!(consumer.consult("hello", p).await, (0, 1));

        // A forged signature: the advisor's own evaluation, one byte of
        // its signature changed.
        let mut forged = evaluation(&advisor.key, receipt(&provider, p, a, 3));
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        advisor.answer_with(vec![forged]);
        assert_eq!(consumer.consult("hello", p).await, (0, 1));
        let standing = consumer.reputation("hello");
        assert!(
            standing
                .last_refusal
                .as_deref()
                .is_some_and(|r| r.contains("bad signature")),
            "{standing:?}"
        );

        // One bad evaluation among good ones spoils the whole answer.
        let good = evaluation(&advisor.key, receipt(&provider, p, a, 4));
        let bad = evaluation(&advisor.key, receipt(&advisor.key, p, a, 5));
        advisor.answer_with(vec![good.clone(), bad]);
        assert_eq!(consumer.consult("hello", p).await, (0, 1));
        assert_eq!(consumer.reputation("hello").advice_admitted, 0);

        // A real transaction's evaluation is taken: the provider is now
        // advised on.
        advisor.answer_with(vec![good]);
        assert_eq!(consumer.consult("hello", p).await, (1, 0));
        let standing = consumer.reputation("hello");
        let judged = standing
            .providers
            .iter()
            .find(|s| s.peer == p.to_string())
            .unwrap();
        assert_eq!(judged.advisors, 1, "{standing:?}");
        assert!(judged.reputation < 0.5, "a bad evaluation: {standing:?}");
        assert_eq!(standing.advice_refused, 4);
    })
    .await;
}

#[tokio::test]
async fn an_evaluation_flood_from_one_consumer_is_capped() {
    within(60, async {
        let mut net = TestNet::new();
        // A colluding provider signs as many receipts as its partner wants.
        let Advised {
            provider,
            p,
            advisor,
            a,
            consumer,
            _hub,
        } = Advised::start(&mut net).await;
        let batch = |from: u64| {
            (from..from + MAX_ADVICE_EVALUATIONS as u64)
                .map(|n| evaluation(&advisor.key, receipt(&provider, p, a, n)))
                .collect::<Vec<_>>()
        };

        // A full answer is taken once ...
        advisor.answer_with(batch(0));
        assert_eq!(consumer.consult("hello", p).await, (1, 0));
        // ... but fresh full answers right after it are not: the pair's
        // interaction count would grow faster than the guard allows.
        for round in 1..5 {
            advisor.answer_with(batch(round * 100));
            assert_eq!(consumer.consult("hello", p).await, (0, 1), "round {round}");
        }
        let standing = consumer.reputation("hello");
        assert_eq!((standing.advice_admitted, standing.advice_refused), (1, 4));
        assert!(
            standing
                .last_refusal
                .as_deref()
                .is_some_and(|r| r.contains("faster than")),
            "{standing:?}"
        );
        // What one advisor brings is bounded by one answer, however many
        // receipts it holds.
        let judged = standing
            .providers
            .iter()
            .find(|s| s.peer == p.to_string())
            .unwrap();
        assert!(
            judged.advised <= MAX_ADVICE_EVALUATIONS as f64,
            "{standing:?}"
        );
        // More evaluations than one answer may carry do not even decode.
        let mut flood = batch(1000);
        flood.extend(batch(2000));
        advisor.answer_with(flood);
        assert_eq!(consumer.consult("hello", p).await, (0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_peer_asking_for_advice_too_often_is_answered_busy() {
    within(60, async {
        let mut net = TestNet::new();
        let advisor = net.node(&[]).await;
        let at = address(&advisor).await;
        let config = NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..NetConfig::default()
        };
        let (asker, _inbound) = sp2a::net::event_loop::start(Keypair::generate_ed25519(), config)
            .await
            .unwrap();
        let advisor_id = asker.dial(at).await.unwrap();
        let provider = Keypair::generate_ed25519().public().to_peer_id();
        let mut answers = Vec::new();
        for _ in 0..40 {
            let request = AdviceRequest {
                service: "hello".into(),
                provider: provider.to_bytes(),
            };
            answers.push(asker.request_advice(advisor_id, request).await.unwrap());
        }
        let busy = answers
            .iter()
            .filter(|a| matches!(a, AdviceResponse::Busy))
            .count();
        // A burst of 16 answered, then about 2 a second.
        assert!(
            answers[..16]
                .iter()
                .all(|a| matches!(a, AdviceResponse::Evaluations(e) if e.is_empty())),
            "{answers:?}"
        );
        assert!(busy >= 20, "{busy} of 40 busy");
    })
    .await;
}

/// Made-up peer ids buy no more answers: askers from one network share
/// its limit (32 at once, then 4 a second), however many ids they use.
#[tokio::test]
async fn fresh_peer_ids_from_one_address_share_its_advice_limit() {
    within(60, async {
        let mut net = TestNet::new();
        let advisor = net.node(&[]).await;
        let at = address(&advisor).await;
        let provider = Keypair::generate_ed25519().public().to_peer_id();
        let started = std::time::Instant::now();
        let mut answered = Vec::new();
        for _ in 0..4 {
            let config = NetConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                ..NetConfig::default()
            };
            let (asker, _inbound) =
                sp2a::net::event_loop::start(Keypair::generate_ed25519(), config)
                    .await
                    .unwrap();
            let advisor_id = asker.dial(at.clone()).await.unwrap();
            let mut count = 0;
            for _ in 0..16 {
                let request = AdviceRequest {
                    service: "hello".into(),
                    provider: provider.to_bytes(),
                };
                if let AdviceResponse::Evaluations(_) =
                    asker.request_advice(advisor_id, request).await.unwrap()
                {
                    count += 1;
                }
            }
            answered.push(count);
        }
        let total: usize = answered.iter().sum();
        let allowed = 32 + (4.0 * started.elapsed().as_secs_f64()).ceil() as usize;
        // Each id alone would be answered 16 times: 64 in all.
        assert!(
            total <= allowed,
            "{answered:?}: {total} answers, at most {allowed}"
        );
        assert!(total >= 32, "{answered:?}");
        assert_eq!(answered[0], 16, "{answered:?}");
    })
    .await;
}
