//! Several nodes in one process on loopback: share -> find -> pull -> call,
//! diffusion through nodes that pulled, remote invocation, and the hostile
//! and faulty peers a pull must survive.

use std::collections::HashSet;
use std::time::Duration;

use sp2a::net::protocol::{SolicitRequest, SolicitResponse};
use sp2a::net::{Multiaddr, PeerId};
use sp2a::node::{Node, NodeError, NodeEvent, PullError, Strategy};
use sp2a::package::{SecretKey, VerifiedPackage, pack};
use sp2a::policy::Refusal;
use sp2a_tests::net::{FakeProvider, Misbehaviour, TestNet, address, providers_including, within};
use sp2a_tests::{component, manifest, service_package};

/// The `notes` package and a node for others to meet at (kept alive by the
/// caller), with its address.
async fn notes_and_hub(net: &mut TestNet) -> (VerifiedPackage, Node, Multiaddr) {
    let package = service_package("notes", &net.key);
    let hub = net.node(&[]).await;
    let hub_address = address(&hub).await;
    (package, hub, hub_address)
}

#[tokio::test]
async fn two_nodes_share_find_pull_call() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        let package = service_package("hello", &net.key);
        let id = a.share(package.clone().into_inner()).await.unwrap();
        let b = net.node(&[address(&a).await]).await;

        let found = b.find("hello").await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].peer, a.peer_id());
        assert_eq!(found[0].advert.content_id(), id);
        assert!(b.find("no-such-service").await.is_empty());

        let pulled = b.pull("hello").await.unwrap();
        assert!(pulled.downloaded);
        assert_eq!(pulled.content_id, id);
        assert_eq!(pulled.bytes, package.component().len() as u64);
        assert_eq!(pulled.sources, vec![a.peer_id()]);
        let outcome = b.invoke_local("hello", "greet(\"b\")").await.unwrap();
        assert_eq!(outcome.value, "\"Hello, b!\"");
        // b now provides it: a finds b.
        let b_only = HashSet::from([b.peer_id()]);
        assert_eq!(providers_including(&a, "hello", &b_only).await, b_only);
        // Pulling again is a no-op.
        assert!(!b.pull("hello").await.unwrap().downloaded);
    })
    .await;
}

#[tokio::test]
async fn a_node_that_pulled_serves_the_next_one() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        a.share(service_package("checksum", &net.key).into_inner())
            .await
            .unwrap();
        let b = net.node(&[address(&a).await]).await;
        b.pull("checksum").await.unwrap();
        // The original provider leaves; the third node can only get it from b.
        a.shutdown().await;
        let c = net.node(&[address(&b).await]).await;
        let pulled = c.pull("checksum").await.unwrap();
        assert_eq!(pulled.sources, vec![b.peer_id()]);
        let outcome = c
            .invoke_local("checksum", "blake3-text(\"abc\")")
            .await
            .unwrap();
        assert!(outcome.value.contains("6437b3ac"));
    })
    .await;
}

#[tokio::test]
async fn ten_nodes_all_pull_and_provide() {
    within(120, async {
        let mut net = TestNet::new();
        let seed = net.node(&[]).await;
        let id = seed
            .share(service_package("notes", &net.key).into_inner())
            .await
            .unwrap();
        let seed_address = address(&seed).await;
        let mut nodes = Vec::new();
        for _ in 0..9 {
            nodes.push(net.node(std::slice::from_ref(&seed_address)).await);
        }
        let pulls = nodes.iter().map(|n| n.pull("notes"));
        let results = futures::future::join_all(pulls).await;
        for (node, result) in nodes.iter().zip(results) {
            let pulled = result.unwrap_or_else(|e| panic!("{}: {e}", node.peer_id()));
            assert_eq!(pulled.content_id, id);
            assert!(node.service("notes").is_some());
        }
        let expected: HashSet<_> = nodes.iter().map(|n| n.peer_id()).collect();
        let providers = providers_including(&seed, "notes", &expected).await;
        assert_eq!(providers, expected, "every node provides it now");
    })
    .await;
}

#[tokio::test]
async fn concurrent_pulls_on_one_node_share_one_download() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        let package = service_package("notes", &net.key);
        a.share(package.clone().into_inner()).await.unwrap();
        let mut served = a.events();
        let b = net.node(&[address(&a).await]).await;
        let results = futures::future::join_all((0..5).map(|_| b.pull("notes"))).await;
        let ids: Vec<_> = results.into_iter().map(|r| r.unwrap().content_id).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        let mut served_bytes = 0;
        while let Ok(event) = served.try_recv() {
            if let NodeEvent::Served { bytes, .. } = event {
                served_bytes += bytes;
            }
        }
        let size = package.component().len() as u64;
        assert!(
            served_bytes >= size && served_bytes < size + size / 4,
            "one download's worth: {served_bytes} bytes served for a {size}-byte component"
        );
    })
    .await;
}

#[tokio::test]
async fn remote_invocation_without_download() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        a.share(service_package("checksum", &net.key).into_inner())
            .await
            .unwrap();
        let b = net.node(&[address(&a).await]).await;
        let outcome = b
            .invoke_remote("checksum", "sha256-text(\"abc\")")
            .await
            .unwrap();
        assert_eq!(outcome.peer, a.peer_id());
        assert!(outcome.value.contains("ba7816bf"));
        assert!(b.service("checksum").is_none(), "nothing was downloaded");
        // A call that fails on the provider is reported, not retried elsewhere.
        let err = b
            .invoke_remote("checksum", "blake3-chain([], 4000000000)")
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::Remote { .. }), "{err}");
        assert!(err.to_string().contains("out of fuel"), "{err}");
        let err = b.invoke_remote("nothing-here", "f()").await.unwrap_err();
        assert!(matches!(err, NodeError::NoProvider(_)), "{err}");
    })
    .await;
}

const SLOW: &str = "<requirements><time-per-call>8s</time-per-call></requirements>\
    <capabilities><clocks/></capabilities>";

#[tokio::test]
async fn a_busy_provider_makes_the_consumer_fail_over() {
    within(60, async {
        let mut net = TestNet::new();
        let package = pack(component("hostile"), &manifest("hostile", SLOW), &net.key).unwrap();
        // Provider a serves one call at a time (L = 1).
        let dir = net.dir();
        let mut config = net.config(dir);
        config.max_invocations_per_service = 1;
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        a.share(package.clone().into_inner()).await.unwrap();
        let a_address = address(&a).await;
        let b = net.node(std::slice::from_ref(&a_address)).await;
        let c = net.node(std::slice::from_ref(&a_address)).await;
        // Occupy a's only slot with a call that sleeps until its deadline
        // (sleeping burns no fuel, so only the deadline can end it).
        let hog = net.node(&[a_address]).await;
        let busy = tokio::spawn(async move { hog.invoke_remote("hostile", "nap(60000)").await });
        // With only a, the consumer is told it is busy (once the slow call
        // has reached a): an explicit answer, not a silent drop.
        let err = loop {
            match c.invoke_remote("hostile", "echo(1)").await {
                Ok(outcome) => assert_eq!(outcome.peer, a.peer_id()),
                Err(err) => break err,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(err.to_string().contains("busy"), "{err}");
        // With a second provider, the consumer fails over to it.
        b.share(package.into_inner()).await.unwrap();
        let outcome = c.invoke_remote("hostile", "echo(2)").await.unwrap();
        assert_eq!(outcome.value, "2");
        assert_eq!(outcome.peer, b.peer_id());
        let hogged = busy.await.unwrap().unwrap_err();
        assert!(hogged.to_string().contains("deadline"), "{hogged}");
    })
    .await;
}

#[tokio::test]
async fn allow_lists_refuse_explicitly() {
    within(60, async {
        let mut net = TestNet::new();
        let dir = net.dir();
        let mut config = net.config(dir);
        let friend = net.node(&[]).await;
        config
            .allow
            .insert("hello".into(), [friend.peer_id()].into_iter().collect());
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        friend.dial(address(&a).await).await.unwrap();
        let stranger = net.node(&[address(&a).await]).await;
        let err = stranger
            .invoke_remote("hello", "greet(\"x\")")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("denied"), "{err}");
        assert!(err.to_string().contains("allow-list"), "{err}");
        assert_eq!(
            friend
                .invoke_remote("hello", "greet(\"f\")")
                .await
                .unwrap()
                .value,
            "\"Hello, f!\""
        );
    })
    .await;
}

#[tokio::test]
async fn corrupt_blocks_are_caught_and_the_good_ones_kept() {
    within(90, async {
        let mut net = TestNet::new();
        let (package, _hub, hub_address) = notes_and_hub(&mut net).await;
        // At first the only provider is a liar: honest for one request, then
        // it flips a byte.
        let liar = FakeProvider::start(&package, &hub_address, Misbehaviour::CorruptAfter(1)).await;
        let b = net.node(std::slice::from_ref(&hub_address)).await;
        let mut events = b.events();
        let pull = {
            let b = b.clone();
            tokio::spawn(async move { b.pull("notes").await })
        };
        let reason = banned(&mut events, liar.client.peer_id()).await;
        assert!(
            reason.contains("does not match the component hash"),
            "{reason}"
        );
        assert_eq!(liar.requests(), 2, "detected at the first bad chunk");
        // An honest provider appears; b rediscovers and completes from it.
        let honest = net.node(&[hub_address]).await;
        honest.share(package.clone().into_inner()).await.unwrap();
        let pulled = pull.await.unwrap().unwrap();
        assert!(pulled.sources.contains(&honest.peer_id()));
        assert!(
            pulled.sources.contains(&liar.client.peer_id()),
            "its one good chunk was kept"
        );
        assert_eq!(liar.requests(), 2, "the liar was not asked again");
        let active = b.service("notes").unwrap();
        assert_eq!(active.package.content_id(), package.content_id());
    })
    .await;
}

/// Waits for `events` to report a ban of `peer`; returns the reason.
async fn banned(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>, peer: PeerId) -> String {
    loop {
        if let NodeEvent::PeerBanned {
            peer: banned,
            reason,
            ..
        } = events.recv().await.unwrap()
        {
            assert_eq!(banned, peer, "banned the wrong peer: {reason}");
            return reason;
        }
    }
}

#[tokio::test]
async fn a_banned_provider_is_not_asked_again_by_a_later_pull() {
    within(90, async {
        let mut net = TestNet::new();
        let (package, _hub, hub_address) = notes_and_hub(&mut net).await;
        let liar = FakeProvider::start(&package, &hub_address, Misbehaviour::CorruptAfter(0)).await;
        let dir = net.dir();
        let mut config = net.config(dir);
        config.pull.total_timeout = Duration::from_secs(3);
        let policy = net.policy();
        let b = net
            .start(config, policy, std::slice::from_ref(&hub_address))
            .await;
        // With only the liar, the first pull bans it and gives up.
        let err = b.pull("notes").await.unwrap_err();
        assert!(matches!(*err, PullError::GaveUp { .. }), "{err}");
        assert!(err.to_string().contains("(banned)"), "{err}");
        let asked = liar.requests();
        assert_eq!(asked, 1);
        // The liar still advertises the package; an honest provider appears.
        let honest = net.node(&[hub_address]).await;
        honest.share(package.clone().into_inner()).await.unwrap();
        assert!(
            b.find("notes")
                .await
                .iter()
                .any(|f| f.peer == liar.client.peer_id())
        );
        let pulled = b.pull("notes").await.unwrap();
        assert_eq!(pulled.sources, vec![honest.peer_id()]);
        assert_eq!(
            liar.requests(),
            asked,
            "the second pull did not ask the liar"
        );
    })
    .await;
}

#[tokio::test]
async fn a_provider_killed_mid_transfer_is_resumed_elsewhere() {
    within(90, async {
        let mut net = TestNet::new();
        let (package, _hub, hub_address) = notes_and_hub(&mut net).await;
        // At first: one provider that serves one chunk and dies at the next
        // request, one that never answers and one that is always busy.
        let dying = FakeProvider::start(&package, &hub_address, Misbehaviour::DieAfter(1)).await;
        let stalling = FakeProvider::start(&package, &hub_address, Misbehaviour::Stall).await;
        let busy = FakeProvider::start(&package, &hub_address, Misbehaviour::Busy).await;
        let b = net.node(std::slice::from_ref(&hub_address)).await;
        let pull = {
            let b = b.clone();
            tokio::spawn(async move { b.pull("notes").await })
        };
        while dying.requests() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // It died; an honest provider appears and b resumes from it.
        let honest = net.node(&[hub_address]).await;
        honest.share(package.clone().into_inner()).await.unwrap();
        let pulled = pull.await.unwrap().unwrap();
        assert_eq!(pulled.content_id, package.content_id());
        assert!(pulled.sources.contains(&honest.peer_id()));
        assert!(
            pulled.sources.contains(&dying.client.peer_id()),
            "the chunk it sent before dying was kept"
        );
        assert_eq!(
            dying.requests(),
            2,
            "it answered one chunk and died at the next"
        );
        for faulty in [&stalling, &busy] {
            assert!(!pulled.sources.contains(&faulty.client.peer_id()));
        }
        assert!(b.service("notes").is_some());
    })
    .await;
}

#[tokio::test]
async fn a_provider_with_one_slot_serves_the_others_in_line_not_busy() {
    within(120, async {
        let mut net = TestNet::new();
        let package = service_package("stream", &net.key);
        // The paper's server: one download at a time, at 8 MiB/s.
        let dir = net.dir();
        let mut config = net.config(dir);
        config.upload.slots = Some(1);
        config.upload.rate = Some(8 << 20);
        config.upload.share_partial = false;
        let policy = net.policy();
        let provider = net.start(config, policy, &[]).await;
        provider.share(package.clone().into_inner()).await.unwrap();
        let hub = address(&provider).await;
        let mut consumers = Vec::new();
        for _ in 0..3 {
            let dir = net.dir();
            let mut config = net.config(dir);
            config.pull.strategy = Strategy::Sequential;
            config.pull.base_timeout = Duration::from_secs(10);
            config.reshare = false;
            let policy = net.policy();
            consumers.push(net.start(config, policy, std::slice::from_ref(&hub)).await);
        }
        let pulls = consumers.iter().map(|c| c.pull("stream"));
        for (consumer, result) in consumers.iter().zip(futures::future::join_all(pulls).await) {
            let pulled = result.unwrap_or_else(|e| panic!("{}: {e}", consumer.peer_id()));
            assert_eq!(pulled.sources, vec![provider.peer_id()]);
        }
        // Each waited in line for the slot instead of being turned away,
        // and each got exactly one copy.
        let counters = provider.counters();
        assert_eq!(counters.busy, 0, "{counters:?}");
        let blocks = sp2a::blocks::block_count(package.component().len() as u64);
        assert_eq!(counters.blocks_served, 3 * blocks, "{counters:?}");
        // Every answer with data carried 1 to 64 blocks.
        let most = u64::from(sp2a::blocks::MAX_BLOCKS_PER_REQUEST);
        assert!(
            (3 * blocks.div_ceil(most)..=3 * blocks).contains(&counters.answers_with_data),
            "{counters:?}"
        );
    })
    .await;
}

async fn stalled_pull(strategy: Strategy) -> (FakeProvider, String) {
    let mut net = TestNet::new();
    let package = service_package("hello", &net.key);
    let hub = net.node(&[]).await;
    let hub_address = address(&hub).await;
    let stalling = FakeProvider::start(&package, &hub_address, Misbehaviour::Stall).await;
    let dir = net.dir();
    let mut config = net.config(dir);
    config.pull.strategy = strategy;
    config.pull.base_timeout = Duration::from_millis(200);
    config.pull.total_timeout = Duration::from_secs(3);
    let policy = net.policy();
    let b = net.start(config, policy, &[hub_address]).await;
    let err = b.pull("hello").await.unwrap_err();
    assert!(matches!(*err, PullError::GaveUp { .. }), "{err}");
    assert!(b.service("hello").is_none());
    (stalling, err.to_string())
}

#[tokio::test]
async fn a_stalling_provider_times_out_and_the_pull_gives_up_clearly() {
    within(60, async {
        let (stalling, text) = stalled_pull(Strategy::Swarm).await;
        assert!(text.contains("stalled"), "{text}");
        let size = service_package("hello", &SecretKey::generate())
            .component()
            .len();
        assert!(
            text.contains(&format!("0 of {size} bytes verified")),
            "{text}"
        );
        // How the deadlines grow is the swarm core's (tested there).
        assert!(stalling.requests() >= 1);
    })
    .await;
}

#[tokio::test]
async fn sequential_pull_retries_one_provider_with_growing_timeouts() {
    within(60, async {
        let (stalling, text) = stalled_pull(Strategy::Sequential).await;
        assert!(text.contains("stalled"), "{text}");
        // One provider in the vector: all 4 attempts go to it.
        assert!(text.contains("(4 attempts)"), "{text}");
        assert!(stalling.requests() >= 4);
    })
    .await;
}

#[tokio::test]
async fn sequential_pull_bans_a_corrupting_provider_and_completes_elsewhere() {
    within(90, async {
        let mut net = TestNet::new();
        let (package, _hub, hub_address) = notes_and_hub(&mut net).await;
        // At first the only provider corrupts its first answer.
        let liar = FakeProvider::start(&package, &hub_address, Misbehaviour::CorruptAfter(0)).await;
        let dir = net.dir();
        let mut config = net.config(dir);
        config.pull.strategy = Strategy::Sequential;
        let policy = net.policy();
        let b = net
            .start(config, policy, std::slice::from_ref(&hub_address))
            .await;
        let mut events = b.events();
        let pull = {
            let b = b.clone();
            tokio::spawn(async move { b.pull("notes").await })
        };
        let reason = banned(&mut events, liar.client.peer_id()).await;
        assert!(
            reason.contains("does not match the component hash"),
            "{reason}"
        );
        let honest = net.node(&[hub_address]).await;
        honest.share(package.clone().into_inner()).await.unwrap();
        let pulled = pull.await.unwrap().unwrap();
        assert_eq!(pulled.content_id, package.content_id());
        // The blocks before the flipped byte verified and were kept.
        assert_eq!(
            pulled.sources,
            vec![liar.client.peer_id(), honest.peer_id()]
        );
        assert_eq!(liar.requests(), 1, "the liar was asked once");
    })
    .await;
}

#[tokio::test]
async fn a_size_liar_is_banned() {
    within(60, async {
        let mut net = TestNet::new();
        let package = service_package("hello", &net.key);
        let hub = net.node(&[]).await;
        let hub_address = address(&hub).await;
        let liar = FakeProvider::start(&package, &hub_address, Misbehaviour::LieAboutSize).await;
        let b = net.node(std::slice::from_ref(&hub_address)).await;
        let mut events = b.events();
        let pull = {
            let b = b.clone();
            tokio::spawn(async move { b.pull("hello").await })
        };
        loop {
            if let NodeEvent::PeerBanned { peer, reason, .. } = events.recv().await.unwrap() {
                assert_eq!(peer, liar.client.peer_id());
                assert!(reason.contains("declared a component of"), "{reason}");
                break;
            }
        }
        let honest = net.node(&[hub_address]).await;
        honest.share(package.into_inner()).await.unwrap();
        let pulled = pull.await.unwrap().unwrap();
        assert_eq!(pulled.sources, vec![honest.peer_id()]);
    })
    .await;
}

#[tokio::test]
async fn requirements_beyond_the_node_are_refused_before_download() {
    within(60, async {
        let mut net = TestNet::new();
        let greedy = manifest(
            "greedy",
            "<requirements><min-cpus>512</min-cpus><min-free-memory>64 GiB</min-free-memory></requirements>",
        );
        let package = pack(component("hello"), &greedy, &net.key).unwrap();
        // The provider is a big machine.
        let dir = net.dir();
        let config = net.config(dir);
        let mut policy = net.policy();
        policy.resources.cpus = 1024;
        policy.resources.free_memory = 1 << 40;
        let a = net.start(config, policy, &[]).await;
        a.share(package.into_inner()).await.unwrap();
        let mut served = a.events();
        let b = net.node(&[address(&a).await]).await;
        let err = b.pull("greedy").await.unwrap_err();
        assert!(matches!(*err, PullError::Refused { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("needs 512 CPUs"), "{text}");
        assert!(text.contains("free memory"), "{text}");
        assert!(
            !std::iter::from_fn(|| served.try_recv().ok()).any(|e| matches!(e, NodeEvent::Served { .. })),
            "nothing was downloaded"
        );
        assert_eq!(a.counters().transfer_requests, 0, "not even asked");
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_publisher_is_refused_before_download() {
    within(60, async {
        let mut net = TestNet::new();
        let stranger = sp2a::package::SecretKey::generate();
        let a = net.node(&[]).await;
        // a trusts the stranger; b does not.
        let package = service_package("hello", &stranger);
        let mut trusting = a.policy().clone();
        trusting.trusted.push(stranger.public());
        let dir = net.dir();
        let config = net.config(dir);
        let a2 = net.start(config, trusting, &[address(&a).await]).await;
        a2.share(package.into_inner()).await.unwrap();
        let b = net.node(&[address(&a2).await]).await;
        let err = b.pull("hello").await.unwrap_err();
        let PullError::Refused { refused, .. } = &*err else {
            panic!("{err}")
        };
        assert!(
            matches!(refused[0].refusals.0[..], [Refusal::UntrustedPublisher(_)]),
            "{err}"
        );
        assert!(b.service("hello").is_none());
        // Its advert is not read: found only as an untrusted publisher's.
        let lookup = b.lookup_all("hello").await;
        assert!(lookup.found.is_empty());
        assert_eq!(lookup.untrusted[0].publisher, stranger.public());
        assert_eq!(a2.counters().transfer_requests, 0, "nothing was downloaded");
    })
    .await;
}

#[tokio::test]
async fn malformed_and_oversize_messages_are_refused_and_the_node_carries_on() {
    use sp2a::net::RequestError;
    use sp2a::net::protocol::*;
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        let package = service_package("hello", &net.key);
        a.share(package.clone().into_inner()).await.unwrap();
        let raw = FakeProvider::start(&package, &address(&a).await, Misbehaviour::Honest).await;
        let peer = a.peer_id();
        let client = &raw.client;
        let id = package.content_id().0;
        // Out-of-range and zero-length block requests.
        for (first_block, blocks) in [
            (0, 0),
            (0, MAX_BLOCKS_PER_REQUEST + 1),
            (u64::MAX, 1),
            (1_000_000, 1),
        ] {
            let response = client
                .request_transfer(
                    peer,
                    TransferRequest::Blocks {
                        content_id: id,
                        first_block,
                        blocks,
                        queue_ms: 0,
                    },
                    0,
                )
                .await
                .unwrap();
            assert_eq!(response, TransferResponse::NotFound);
        }
        // Unknown package, bad names.
        let response = client
            .request_transfer(
                peer,
                TransferRequest::Blocks {
                    content_id: [0; 32],
                    first_block: 0,
                    blocks: 1,
                    queue_ms: 0,
                },
                0,
            )
            .await
            .unwrap();
        assert_eq!(response, TransferResponse::NotFound);
        let response = client
            .request_advert(peer, AdvertRequest::Name("../../etc".into()))
            .await
            .unwrap();
        assert_eq!(response, AdvertResponse::NotFound);
        let response = client
            .request_invoke(
                peer,
                InvokeRequest {
                    service: "hello".into(),
                    content_id: None,
                    publisher: None,
                    call: "greet(((((".into(),
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(response, InvokeResponse::Failed { ref kind, .. } if kind == "bad-call"),
            "{response:?}"
        );
        // An oversize request never leaves the sender (the codec's limit).
        let huge = InvokeRequest {
            service: "hello".into(),
            content_id: None,
            publisher: None,
            call: format!("greet(\"{}\")", "x".repeat(MAX_INVOKE_REQUEST as usize)),
        };
        let err = client.request_invoke(peer, huge).await.unwrap_err();
        assert!(matches!(err, RequestError::Io(_)), "{err}");
        // The node still serves honest requests.
        let response = client
            .request_advert(peer, AdvertRequest::ContentId(id))
            .await
            .unwrap();
        assert!(matches!(response, AdvertResponse::Adverts(ref a) if a.len() == 1));
        let b = net.node(&[address(&a).await]).await;
        assert_eq!(
            b.invoke_remote("hello", "greet(\"ok\")")
                .await
                .unwrap()
                .value,
            "\"Hello, ok!\""
        );
    })
    .await;
}

#[tokio::test]
async fn forged_adverts_are_dropped_by_find() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        let genuine = service_package("hello", &net.key);
        // A provider that advertises a package whose advert was tampered
        // with (description changed after signing) under the name "hello".
        let mut manifest = genuine.manifest().clone();
        manifest.description = "totally legit".into();
        let other = pack(genuine.component().to_vec(), &manifest, &net.key).unwrap();
        let mut bytes = other.advert().bytes().to_vec();
        let at = bytes
            .windows(13)
            .position(|w| w == b"totally legit")
            .unwrap();
        bytes[at] = b'T';
        assert!(matches!(
            sp2a::package::Advert::parse(&bytes)
                .unwrap()
                .check_signature(),
            Err(sp2a::package::PackageError::BadSignature)
        ));
        let forged = sp2a::package::Package::from_parts(
            sp2a::package::Advert::parse(&bytes).unwrap(),
            genuine.component().to_vec(),
        );
        // Serve the forged advert from a raw peer by handing it a "package"
        // whose advert fails verification.
        let fake = FakeProvider::start(&forged, &address(&a).await, Misbehaviour::Honest).await;
        // Nothing valid to find: the pull keeps discovering until its time is up.
        let dir = net.dir();
        let mut config = net.config(dir);
        config.pull.total_timeout = Duration::from_secs(2);
        let policy = net.policy();
        let b = net.start(config, policy, &[address(&a).await]).await;
        let found = b.find("hello").await;
        assert!(found.is_empty(), "a forged advert was accepted: {found:?}");
        let err = b.pull("hello").await.unwrap_err();
        assert!(err.to_string().contains("no provider"), "{err}");
        assert!(fake.requests() == 0, "nothing downloaded from the forger");
    })
    .await;
}

#[tokio::test]
async fn a_restarted_node_re_announces_what_it_stored() {
    within(90, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let a_address = address(&a).await;
        let dir = net.dir();
        let policy = net.policy();
        let config = net.config(dir.clone());
        let b = net
            .start(
                config.clone(),
                policy.clone(),
                std::slice::from_ref(&a_address),
            )
            .await;
        b.pull("hello").await.unwrap();
        let b_id = b.peer_id();
        b.shutdown().await;
        drop(b);
        let b = net.start(config, policy, &[a_address]).await;
        assert_eq!(b.peer_id(), b_id, "the identity persists");
        assert!(b.service("hello").is_some(), "re-activated from the store");
        let providers = providers_including(&a, "hello", &HashSet::from([b_id])).await;
        assert!(providers.contains(&b_id), "re-announced");
    })
    .await;
}

#[tokio::test]
async fn nodes_on_the_same_network_find_each_other_with_mdns() {
    within(60, async {
        let mut net = TestNet::new();
        let local = |net: &mut TestNet| {
            let dir = net.dir();
            let mut config = net.config(dir);
            config.net.mdns = true;
            config.net.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()];
            config
        };
        let config = local(&mut net);
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let config = local(&mut net);
        let policy = net.policy();
        // No bootstrap address: b can only learn of a through mDNS.
        let b = net.start(config, policy, &[]).await;
        let found = loop {
            let found = b.find("hello").await;
            if !found.is_empty() {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(found[0].peer, a.peer_id());
    })
    .await;
}

/// A peer built on the network API that announces `keys` provider records
/// to whoever is closest (here: the node it bootstraps from).
async fn flood_provider_records(bootstrap: &Multiaddr, keys: usize) -> sp2a::net::Client {
    let config = sp2a::net::NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![bootstrap.clone()],
        local_addresses: true,
        ..Default::default()
    };
    let (client, _inbound) = sp2a::net::event_loop::start(sp2a::net::libp2p_identity(), config)
        .await
        .unwrap();
    client.dial(bootstrap.clone()).await.unwrap();
    for n in 0..keys {
        let key = format!("flood {} {n}", client.peer_id());
        client
            .start_providing(sp2a::net::RecordKey::new(&key))
            .await;
    }
    client
}

#[tokio::test]
async fn a_flood_of_provider_records_cannot_silence_our_announcements() {
    within(180, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        let a_address = address(&a).await;
        // Five ids, 1,200 records each: more than any one id's quota (512)
        // and, in all, more keys than the store could once hold (4,096).
        let mut flooders = Vec::new();
        for _ in 0..5 {
            flooders.push(flood_provider_records(&a_address, 1200).await);
        }
        let quota = sp2a::net::records::ProviderLimits::default().per_peer;
        let mut held = 0;
        for _ in 0..300 {
            held = a.status().await.provider_records;
            if held >= 5 * quota {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(held, 5 * quota, "each flooding id holds its quota, no more");

        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let c = net.node(&[a_address]).await;
        let found = providers_including(&c, "hello", &HashSet::from([a.peer_id()])).await;
        assert!(
            found.contains(&a.peer_id()),
            "a third node finds the flooded node's service"
        );
        let status = a.status().await;
        assert_eq!(
            status.announcements.len(),
            2,
            "the service and the package keys"
        );
        drop(flooders);
    })
    .await;
}

#[tokio::test]
async fn a_failed_announcement_is_shown_and_retried() {
    within(60, async {
        let mut net = TestNet::new();
        // Alone, a node's announcement reaches nobody.
        let a = net.node(&[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let failed = loop {
            let status = a.status().await;
            if status.announcements.iter().all(|s| s.state == "failed") {
                break status.announcements;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].error.as_deref(), Some("no DHT peer reached"));
        assert!(failed[0].retry_in_secs.is_some());
        // Retried on its own (after 5 s), still alone.
        loop {
            let status = a.status().await;
            if status.announcements.iter().all(|s| s.failures >= 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A peer arrives: the announcement is made again and succeeds.
        let _b = net.node(&[address(&a).await]).await;
        loop {
            let status = a.status().await;
            if status.announcements.iter().all(|s| s.state == "announced") {
                assert!(status.announcements.iter().all(|s| s.peers > 0));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Has `node` share the hostile test service (clocks and a data directory),
/// signed with `key`.
async fn share_hostile(node: &Node, key: &SecretKey) {
    let capabilities = "<capabilities><clocks/>\
        <dir name=\"sandbox\" path=\"/sandbox\" access=\"read-write\"/></capabilities>";
    let package = pack(
        component("hostile"),
        &manifest("hostile", &format!("<requirements/>{capabilities}")),
        key,
    )
    .unwrap();
    node.share(package.into_inner()).await.unwrap();
}

#[tokio::test]
async fn remote_callers_get_the_error_kind_but_no_host_details() {
    within(60, async {
        let mut net = TestNet::new();
        let root = net.dir();
        let policy = sp2a_tests::policy(&net.key, &root, "");
        let dir = net.dir();
        let config = net.config(dir);
        let a = net.start(config, policy, &[]).await;
        share_hostile(&a, &net.key).await;
        let b = net.node(&[address(&a).await]).await;
        let root = root.display().to_string();
        for (call, kind, said) in [
            ("crash(\"the secret the guest read\")", "trap", "secret"),
            ("allocate(4096)", "memory", "bytes"),
            ("spin()", "out-of-fuel", "all of its"),
        ] {
            let err = b
                .invoke_remote("hostile", call)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("({kind})")), "{call}: {err}");
            assert!(!err.contains(said), "{call}: {err}");
            assert!(!err.contains(&root), "{call}: {err}");
        }
        // The provider's own log and local callers keep the detail.
        let local = a
            .invoke_local("hostile", "crash(\"the secret\")")
            .await
            .unwrap_err();
        assert!(local.to_string().contains("the secret"), "{local}");
    })
    .await;
}

/// A policy trusting `keys`, with a data root and `extra` TOML appended.
fn policy_trusting(
    keys: &[&SecretKey],
    root: &std::path::Path,
    extra: &str,
) -> sp2a::policy::Policy {
    let publishers: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.public())).collect();
    let text = format!(
        "[trust]\npublishers = [{}]\n[grants]\nclocks = true\nfs-root = \"{}\"\nfs-access = \"read-write\"\n{extra}",
        publishers.join(", "),
        root.display()
    );
    sp2a::policy::Policy::parse(&text, std::path::Path::new(".")).unwrap()
}

#[tokio::test]
async fn services_and_their_data_are_namespaced_by_publisher() {
    within(60, async {
        let mut net = TestNet::new();
        let (alice, bob) = (SecretKey::generate(), SecretKey::generate());
        let notes_by = |key: &SecretKey, version: &str| {
            let mut m = sp2a_tests::service_manifest("notes");
            m.version = version.parse().unwrap();
            pack(component("notes"), &m, key).unwrap().into_inner()
        };
        let root = net.dir();
        let policy = policy_trusting(&[&alice, &bob], &root, "");
        let dir = net.dir();
        let config = net.config(dir);
        let a = net.start(config, policy, &[]).await;
        a.share(notes_by(&alice, "0.1.0")).await.unwrap();
        // Another trusted publisher's higher version of the same name.
        a.share(notes_by(&bob, "99.0.0")).await.unwrap();

        let err = a.invoke_local("notes", "names()").await.unwrap_err();
        assert!(matches!(err, NodeError::Ambiguous { .. }), "{err}");
        assert!(err.to_string().contains("[pin] notes"), "{err}");
        assert!(a.service("notes").is_none(), "ambiguous");

        let alice_notes = format!("notes@{}", alice.public());
        let bob_hex = bob.public().to_string()["ed25519:".len()..][..12].to_owned();
        let bob_notes = format!("notes@{bob_hex}");
        let put = a
            .invoke_local(&alice_notes, "put(\"n\", \"by alice\")")
            .await
            .unwrap();
        assert_eq!(put.value, "ok");
        let got = a.invoke_local(&alice_notes, "get(\"n\")").await.unwrap();
        assert_eq!(got.value, "ok(\"by alice\")");
        // Bob's service has a directory of its own: it cannot read Alice's note.
        let got = a.invoke_local(&bob_notes, "get(\"n\")").await.unwrap();
        assert!(got.value.starts_with("err("), "{}", got.value);
        let alice_dir = root.join(sp2a::policy::publisher_dir(&alice.public()));
        assert!(alice_dir.join("notes").join("notes").join("n").exists());
        assert!(a.invoke_local("notes@0000000000", "names()").await.is_err());

        // A remote caller names the publisher the same way; without one, the
        // provider refuses the ambiguous name and says how to name one.
        let c = net.node(&[address(&a).await]).await;
        let err = c.invoke_remote("notes", "names()").await.unwrap_err();
        assert!(matches!(err, NodeError::Remote { .. }), "{err}");
        assert!(err.to_string().contains("notes@<publisher key>"), "{err}");
        let got = c.invoke_remote(&alice_notes, "get(\"n\")").await.unwrap();
        assert_eq!(got.value, "ok(\"by alice\")");
        let got = c.invoke_remote(&bob_notes, "get(\"n\")").await.unwrap();
        assert!(got.value.starts_with("err("), "{}", got.value);
        // A publisher nobody here has: the provider does not run it.
        let err = c
            .invoke_remote("notes@0000000000", "names()")
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::AllDeclined { .. }), "{err}");
        assert!(err.to_string().contains("does not provide it"), "{err}");
        let err = c.invoke_remote("notes@xyz", "names()").await.unwrap_err();
        assert!(matches!(err, NodeError::BadPublisher(_)), "{err}");

        // A pin in the policy settles the name.
        let dir = net.dir();
        let config = net.config(dir);
        let pinned = policy_trusting(
            &[&alice, &bob],
            &root,
            &format!("[pin]\nnotes = \"{}\"", bob.public()),
        );
        let b = net.start(config, pinned, &[]).await;
        b.share(notes_by(&alice, "0.1.0")).await.unwrap();
        b.share(notes_by(&bob, "99.0.0")).await.unwrap();
        let service = b.service("notes").unwrap();
        assert_eq!(service.package.advert().publisher(), bob.public());
    })
    .await;
}

/// A node standing by for `hello` with `policy`, connected to `hub`; it
/// does not prefetch (it downloads only when asked).
async fn hello_standby(net: &mut TestNet, policy: sp2a::policy::Policy, hub: &Multiaddr) -> Node {
    let dir = net.dir();
    let mut config = net.config(dir);
    config.standby = vec!["hello".into()];
    config.prefetch = false;
    net.start(config, policy, std::slice::from_ref(hub)).await
}

/// Waits until `finder` finds `standby` among the standbys of `name` in the
/// DHT (once its announcement has landed), as providers do before asking.
async fn until_found(finder: &Node, name: &str, standby: &Node) {
    while !finder
        .find_standbys(name)
        .await
        .contains(&standby.peer_id())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn standby_nodes_are_findable_and_each_services_role_is_shown() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let hub = address(&a).await;
        let policy = net.policy();
        let standby = hello_standby(&mut net, policy, &hub).await;
        let c = net.node(std::slice::from_ref(&hub)).await;

        until_found(&c, "hello", &standby).await;
        assert_eq!(c.find_standbys("hello").await, [standby.peer_id()]);
        assert!(c.find_standbys("checksum").await.is_empty());
        assert!(a.find_standbys("hello").await.contains(&standby.peer_id()));
        assert_eq!(standby.status().await.standby, ["hello"]);
        // Standing by is not providing: the standby runs nothing yet.
        assert!(standby.status().await.services.is_empty());

        // Shared by its operator: pinned. Pulled: a replica.
        c.pull("hello").await.unwrap();
        assert_eq!(a.status().await.services[0].role, "pinned");
        assert_eq!(c.status().await.services[0].role, "replica");
    })
    .await;
}

/// Waits until `node` runs the service `name`.
async fn runs(node: &sp2a::node::Node, name: &str) {
    while node.service(name).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_solicited_standby_pulls_verifies_and_serves() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let hub = address(&a).await;
        let policy = net.policy();
        let standby = hello_standby(&mut net, policy, &hub).await;

        // The provider finds the standby in the DHT, then asks it.
        until_found(&a, "hello", &standby).await;
        assert_eq!(a.find_standbys("hello").await, [standby.peer_id()]);
        let answer = a.solicit(standby.peer_id(), "hello").await.unwrap();
        assert_eq!(answer, SolicitResponse::Accepted);
        runs(&standby, "hello").await;
        let greeting = standby.invoke_local("hello", "greet(\"x\")").await.unwrap();
        assert_eq!(greeting.value, "\"Hello, x!\"");
        let status = standby.status().await;
        assert_eq!(status.services[0].role, "replica");
        // It provides the service now: asked again, it says so at once.
        assert_eq!(
            a.solicit(standby.peer_id(), "hello").await.unwrap(),
            SolicitResponse::Accepted
        );
    })
    .await;
}

#[tokio::test]
async fn a_standby_prefetches_and_starts_without_a_download_when_asked() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let hub = address(&a).await;
        let dir = net.dir();
        let mut config = net.config(dir.clone());
        config.standby = vec!["hello".into()];
        let policy = net.policy();
        let standby = net.start(config, policy, std::slice::from_ref(&hub)).await;

        // It downloads, verifies and keeps the package, and runs nothing.
        let kept = dir.join("store").join("retired");
        while std::fs::read_dir(&kept).map_or(0, |d| d.count()) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(standby.services().is_empty());
        assert!(a.counters().transfer_requests > 0);
        let served = a.counters().transfer_requests;

        // Asked, it starts the kept package: no block is fetched again.
        until_found(&a, "hello", &standby).await;
        let answer = a.solicit(standby.peer_id(), "hello").await.unwrap();
        assert_eq!(answer, SolicitResponse::Accepted);
        runs(&standby, "hello").await;
        assert_eq!(a.counters().transfer_requests, served);
        let greeting = standby.invoke_local("hello", "greet(\"x\")").await.unwrap();
        assert_eq!(greeting.value, "\"Hello, x!\"");
    })
    .await;
}

#[tokio::test]
async fn solicitations_failing_a_check_are_refused_and_nothing_is_pulled() {
    within(60, async {
        let mut net = TestNet::new();
        let a = net.node(&[]).await;
        let hello = service_package("hello", &net.key);
        let hello_id = hello.content_id();
        a.share(hello.into_inner()).await.unwrap();
        a.share(service_package("checksum", &net.key).into_inner())
            .await
            .unwrap();
        let hub = address(&a).await;
        let policy = net.policy();
        let standby = hello_standby(&mut net, policy, &hub).await;
        let c = net.node(std::slice::from_ref(&hub)).await;
        until_found(&a, "hello", &standby).await;

        // Not a standby for that service.
        let answer = a.solicit(standby.peer_id(), "checksum").await.unwrap();
        assert!(
            matches!(&answer, SolicitResponse::Refused(why) if why.contains("not a standby for checksum")),
            "{answer:?}"
        );
        // Asked by a peer that does not provide the service.
        c.client().dial(address(&standby).await).await.unwrap();
        let forged = SolicitRequest {
            service: "hello".into(),
            content_id: hello_id.0,
        };
        let answer = c
            .client()
            .request_solicit(standby.peer_id(), forged.clone())
            .await
            .unwrap();
        assert!(
            matches!(&answer, SolicitResponse::Refused(why) if why.contains("is not a provider of hello")),
            "{answer:?}"
        );
        // Asking again at once: beyond the rate.
        let answer = c
            .client()
            .request_solicit(standby.peer_id(), forged)
            .await
            .unwrap();
        assert_eq!(answer, SolicitResponse::Busy);

        // An older version than the providers offer, asked for by a provider
        // that still runs it too.
        let mut old = sp2a_tests::service_manifest("hello");
        old.version = "0.0.9".parse().unwrap();
        let old = pack(component("hello"), &old, &net.key).unwrap();
        let old_id = old.content_id();
        a.share(old.into_inner()).await.unwrap();
        let stale = SolicitRequest {
            service: "hello".into(),
            content_id: old_id.0,
        };
        let answer = a
            .client()
            .request_solicit(standby.peer_id(), stale)
            .await
            .unwrap();
        assert!(
            matches!(&answer, SolicitResponse::Refused(why) if why.contains("hello 0.0.9 is older than the 0.1.0")),
            "{answer:?}"
        );

        // A standby whose policy does not trust the publisher.
        let wary = hello_standby(&mut net, sp2a::policy::Policy::default(), &hub).await;
        until_found(&a, "hello", &wary).await;
        let answer = a.solicit(wary.peer_id(), "hello").await.unwrap();
        assert!(
            matches!(&answer, SolicitResponse::Refused(why) if why.contains("is not trusted here")),
            "{answer:?}"
        );
        // Nothing was downloaded from the only provider, nothing runs.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(a.counters().transfer_requests, 0);
        assert!(standby.services().is_empty() && wary.services().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_replica_retires_finishing_its_calls_but_a_pinned_provider_does_not() {
    within(60, async {
        let mut net = TestNet::new();
        let a_dir = net.dir();
        let config = net.config(a_dir.clone());
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        share_hostile(&a, &net.key).await;
        let hub = address(&a).await;
        let dir = net.dir();
        let config = net.config(dir.clone());
        let policy = net.policy();
        let c = net.start(config, policy, std::slice::from_ref(&hub)).await;
        c.pull("hostile").await.unwrap();
        let served = a.counters().transfer_requests;
        assert!(served > 0);

        let err = a.retire("hostile").await.unwrap_err();
        assert!(matches!(err, NodeError::Pinned(_)), "{err}");
        // A call in flight when the replica retires finishes.
        let call = {
            let c = c.clone();
            tokio::spawn(async move { c.invoke_local("hostile", "nap(400)").await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.retire("hostile").await.unwrap();
        assert!(call.await.unwrap().is_ok(), "the call in flight finished");
        assert!(c.services().is_empty());
        let err = c.invoke_local("hostile", "nap(1)").await.unwrap_err();
        assert!(matches!(err, NodeError::NotRunning(_)), "{err}");
        // Lookups find only the pinned provider (the retired one serves no
        // advert any more).
        let b = net.node(std::slice::from_ref(&hub)).await;
        let peers: Vec<PeerId> = b.find("hostile").await.iter().map(|f| f.peer).collect();
        assert_eq!(peers, [a.peer_id()]);

        // Not restored at start; pulled again, activated without a download.
        c.shutdown().await;
        let config = net.config(dir);
        let policy = net.policy();
        let c = net.start(config, policy, std::slice::from_ref(&hub)).await;
        assert!(c.services().is_empty());
        let pulled = c.pull("hostile").await.unwrap();
        assert!(!pulled.downloaded);
        assert_eq!(a.counters().transfer_requests, served, "nothing downloaded");
        assert_eq!(c.status().await.services[0].role, "replica");

        // Pinned stays pinned across a restart.
        a.shutdown().await;
        let config = net.config(a_dir);
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        assert_eq!(a.status().await.services[0].role, "pinned");
        assert!(matches!(
            a.retire("hostile").await,
            Err(NodeError::Pinned(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_pinned_remote_call_answered_by_another_publishers_package_is_refused() {
    within(60, async {
        let mut net = TestNet::new();
        let hub_node = net.node(&[]).await;
        let hub = address(&hub_node).await;
        // A provider that ignores the pin, as a node from before pins did:
        // it runs `hello` by the test's publisher and answers every call.
        let package = service_package("hello", &net.key).into_inner();
        let _fake = FakeProvider::start(&package, &hub, Misbehaviour::AnswersEveryCall).await;
        let c = net.node(std::slice::from_ref(&hub)).await;
        let hex = |key: &SecretKey| key.public().to_string()["ed25519:".len()..][..12].to_owned();

        let other = SecretKey::generate();
        let err = c
            .invoke_remote(&format!("hello@{}", hex(&other)), "greet(\"x\")")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not shown to be by publisher"),
            "{err}"
        );
        // Pinned to the publisher whose package it does run: its answer
        // counts.
        let answer = c
            .invoke_remote(&format!("hello@{}", hex(&net.key)), "greet(\"x\")")
            .await
            .unwrap();
        assert_eq!(answer.value, "\"from another publisher\"");
    })
    .await;
}

#[tokio::test]
async fn data_from_before_publisher_namespaces_is_refused_clearly() {
    within(60, async {
        let mut net = TestNet::new();
        let root = net.dir();
        std::fs::create_dir_all(root.join("notes").join("notes")).unwrap();
        let policy = sp2a_tests::policy(&net.key, &root, "");
        let dir = net.dir();
        let config = net.config(dir);
        let a = net.start(config, policy, &[]).await;
        let err = a
            .share(service_package("notes", &net.key).into_inner())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("before directories were kept per publisher"),
            "{err}"
        );
        assert!(
            err.contains(&sp2a::policy::publisher_dir(&net.key.public())),
            "{err}"
        );
    })
    .await;
}

/// Whether v (in local mode or not) connects to y, which it can only learn
/// of from x's lookup answer. x knows y by y's loopback address (seen on
/// its connection), or, with `by_name`, also as `/dns4/localhost/...` (an
/// operator's bootstrap address for y). y itself dials only what it may, so
/// a connection between y and v is v's doing.
async fn dials_y_from_a_lookup(local: bool, by_name: bool) -> bool {
    let mut net = TestNet::new();
    let start = async |net: &mut TestNet, local: bool, bootstrap: &[Multiaddr]| {
        let dir = net.dir();
        let mut config = net.config(dir);
        config.net.local_addresses = local;
        let policy = net.policy();
        net.start(config, policy, bootstrap).await
    };
    let (x, y) = if by_name {
        let y = start(&mut net, false, &[]).await;
        let named: Multiaddr = address(&y)
            .await
            .to_string()
            .replacen("/ip4/127.0.0.1/", "/dns4/localhost/", 1)
            .parse()
            .unwrap();
        (start(&mut net, false, &[named]).await, y)
    } else {
        let x = net.node(&[]).await;
        let x_address = address(&x).await;
        let y = start(&mut net, false, std::slice::from_ref(&x_address)).await;
        (x, y)
    };
    // v reaches x by its operator's bootstrap address, and asks it.
    let v = start(&mut net, local, &[address(&x).await]).await;
    let v_id = v.peer_id().to_string();
    for _ in 0..3 {
        v.find_all("anything").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if y.status().await.peers.contains(&v_id) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn a_loopback_address_from_a_lookup_answer_is_not_dialled_outside_local_mode() {
    within(60, async {
        assert!(!dials_y_from_a_lookup(false, false).await);
        // In local mode the same answer is followed: the address does arrive.
        assert!(dials_y_from_a_lookup(true, false).await);
    })
    .await;
}

#[tokio::test]
async fn a_host_name_from_a_lookup_answer_is_not_dialled_outside_local_mode() {
    within(60, async {
        assert!(!dials_y_from_a_lookup(false, true).await);
        // In local mode the same answer is followed and reaches y.
        assert!(dials_y_from_a_lookup(true, true).await);
    })
    .await;
}

/// Latencies of `count` remote `nap(20)` calls from `node`, sorted, in ms.
async fn nap_latencies(node: &sp2a::node::Node, count: usize) -> Vec<f64> {
    let mut latencies = Vec::new();
    for _ in 0..count {
        let start = std::time::Instant::now();
        node.invoke_remote("hostile", "nap(20)").await.unwrap();
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

#[tokio::test]
async fn a_peer_flooding_a_service_with_calls_leaves_others_their_share() {
    within(60, async {
        let mut net = TestNet::new();
        let dir = net.dir();
        let mut config = net.config(dir);
        config.max_invocations_per_service = 4;
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        share_hostile(&a, &net.key).await;
        let a_address = address(&a).await;
        let caller = net.node(std::slice::from_ref(&a_address)).await;
        // The flooding peer sends its calls straight to a, as fast as
        // answers come back.
        let config = sp2a::net::NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            local_addresses: true,
            ..Default::default()
        };
        let (flooder, _inbound) =
            sp2a::net::event_loop::start(sp2a::net::libp2p_identity(), config)
                .await
                .unwrap();
        flooder.dial(a_address).await.unwrap();
        let a_peer = a.peer_id();

        let unloaded = nap_latencies(&caller, 20).await;
        // Sixteen callers on one peer, each call holding a slot for 200 ms.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood: Vec<_> = (0..16)
            .map(|_| {
                let (flooder, stop) = (flooder.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut declined = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let call = sp2a::net::protocol::InvokeRequest {
                            service: "hostile".into(),
                            content_id: None,
                            publisher: None,
                            call: "nap(200)".into(),
                        };
                        let answer = flooder.request_invoke(a_peer, call).await;
                        if matches!(answer, Ok(sp2a::net::protocol::InvokeResponse::Busy)) {
                            declined += 1;
                        }
                    }
                    declined
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let loaded = nap_latencies(&caller, 20).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut declined = 0;
        for task in flood {
            declined += task.await.unwrap();
        }
        let p95 = |l: &[f64]| l[(l.len() * 95).div_ceil(100) - 1];
        let median = |l: &[f64]| l[l.len() / 2];
        eprintln!(
            "a nap(20) call: median {:.1} ms, p95 {:.1} ms unloaded; median {:.1} ms, p95 {:.1} ms while another peer floods",
            median(&unloaded),
            p95(&unloaded),
            median(&loaded),
            p95(&loaded)
        );
        // Without the fair share the flood holds every slot for 200 ms at a
        // time, and the caller's calls wait for them (or are turned away).
        // The median, not the tail: two cores also run the flood itself.
        assert!(
            median(&loaded) <= 2.0 * median(&unloaded),
            "{loaded:?} vs {unloaded:?}"
        );
        // The flood did ask for more than its share, and was declined.
        assert!(declined > 0, "the flood never exceeded its share");
        // The provider measured it: calls answered and a p95 (over whole
        // seconds: wait for the current one to end). The flood was refused
        // for fairness while slots were free, which is no shortage of
        // capacity: no caller counts as turned away.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let status = a.status().await;
        let service = &status.services[0];
        assert!(service.calls_per_s > 0.0, "{service:?}");
        assert_eq!(service.busy_per_s, 0.0, "{service:?}");
        assert!(service.p95_ms.is_some_and(|ms| ms >= 20.0), "{service:?}");
        assert_eq!(service.limit, 4);
    })
    .await;
}
