//! What the README promises about moving packages between nodes, each
//! checked on real nodes: peer exchange, serving a download in progress,
//! the upload rate limit and `Busy` on a long upload queue, the capability
//! check before any download, QUIC, connection limits, and the receiver's
//! own bound on a message's size.

use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};
use sp2a::blocks::{Bitmap, Download, block_count};
use sp2a::net::protocol::*;
use sp2a::net::{Client, NetConfig, PeerId};
use sp2a::node::{Node, PullError, Strategy};
use sp2a::package::{VerifiedPackage, pack};
use sp2a::policy::Refusal;
use sp2a_tests::net::{FakeProvider, Misbehaviour, TestNet, address, within};
use sp2a_tests::{component, manifest, service_package};

/// A bare network client (no node behind it) joined to `bootstrap`.
async fn raw_client(bootstrap: &sp2a::net::Multiaddr) -> Client {
    let config = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![bootstrap.clone()],
        ..NetConfig::default()
    };
    let (client, _inbound) = sp2a::net::event_loop::start(sp2a::net::libp2p_identity(), config)
        .await
        .unwrap();
    client.dial(bootstrap.clone()).await.unwrap();
    client
}

#[tokio::test]
async fn peer_exchange_leads_to_a_provider_no_lookup_names() {
    within(90, async {
        let mut net = TestNet::new();
        let package = service_package("stream", &net.key);
        let a = net.node(&[]).await;
        a.share(package.clone().into_inner()).await.unwrap();
        // b gets the package but does not announce it (it does not re-share).
        let dir = net.dir();
        let mut config = net.config(dir);
        config.reshare = false;
        let policy = net.policy();
        let b = net.start(config, policy, &[address(&a).await]).await;
        b.pull("stream").await.unwrap();
        a.shutdown().await;
        // The only announced provider is always busy, and names b.
        let b_address = address(&b).await;
        let hinter = FakeProvider::start(
            &package,
            &b_address,
            Misbehaviour::BusyNaming(b.peer_id(), b.addresses().await),
        )
        .await;
        let c = net.node(std::slice::from_ref(&hinter.address)).await;
        let found: Vec<PeerId> = c.find_all("stream").await.iter().map(|f| f.peer).collect();
        assert_eq!(found, [hinter.client.peer_id()], "no lookup names b");
        let pulled = c.pull("stream").await.unwrap();
        assert_eq!(pulled.sources, [b.peer_id()]);
        assert!(hinter.requests() > 0);
        assert!(b.counters().blocks_served >= block_count(package.component().len() as u64));
    })
    .await;
}

#[tokio::test]
async fn verified_blocks_are_served_before_the_download_completes() {
    within(90, async {
        let mut net = TestNet::new();
        // A seed at 64 KiB/s: the 2 MiB download takes about half a minute.
        let (_a, package, at) = stream_provider(&mut net, |u| u.rate = Some(64 << 10)).await;
        let b = net.node(&[at]).await;
        let pulling = {
            let b = b.clone();
            tokio::spawn(async move { b.pull("stream").await })
        };
        let client = raw_client(&address(&b).await).await;
        let id = package.content_id().0;
        let size = package.component().len() as u64;
        let blocks = block_count(size);
        // Wait until b holds some blocks, then ask it for them.
        let held = loop {
            if let Ok(TransferResponse::Have { bitmap, .. }) = client
                .request_transfer(b.peer_id(), TransferRequest::Have { content_id: id }, 0)
                .await
            {
                let held = Bitmap::decode(&bitmap, blocks).expect("a well-formed bitmap");
                if !held.is_clear() {
                    break held;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(!held.is_full(), "b is still downloading");
        let response = client
            .request_transfer(
                b.peer_id(),
                TransferRequest::Want {
                    content_id: id,
                    wanted: held.encode(),
                    blocks: 4,
                },
                0,
            )
            .await
            .unwrap();
        assert!(b.service("stream").is_none(), "b has not finished");
        let TransferResponse::Data {
            size: served_size,
            first_block,
            blocks: count,
            encoded,
            ..
        } = response
        else {
            panic!("{response:?}")
        };
        let mut check = Download::new(package.advert().component_hash(), size);
        let accepted = check
            .accept(first_block, count, served_size, &encoded)
            .expect("the blocks b served verify");
        assert_eq!(accepted.verified, count);
        pulling.abort();
    })
    .await;
}

#[tokio::test]
async fn the_upload_rate_limits_how_fast_a_node_serves() {
    within(90, async {
        let mut net = TestNet::new();
        let rate = 1u64 << 20;
        let (_a, package, at) = stream_provider(&mut net, |u| u.rate = Some(rate)).await;
        let b = net.node(&[at]).await;
        let pulled = b.pull("stream").await.unwrap();
        // A lower bound: the bytes cannot have left faster than the rate
        // (unlimited, they take a few milliseconds here).
        let least = Duration::from_secs_f64(package.component().len() as f64 / rate as f64);
        assert!(
            pulled.download >= least,
            "{:?} < {least:?}",
            pulled.download
        );
    })
    .await;
}

#[tokio::test]
async fn a_long_upload_queue_is_answered_busy() {
    within(90, async {
        let mut net = TestNet::new();
        // 64 KiB/s with at most 1 s of queued uploads: two 64 KiB answers.
        let (a, package, at) = stream_provider(&mut net, |u| {
            u.rate = Some(64 << 10);
            u.max_backlog = Duration::from_secs(1);
        })
        .await;
        let client = raw_client(&at).await;
        let id = package.content_id().0;
        let asks = (0..6u64).map(|i| {
            client.request_transfer(
                a.peer_id(),
                TransferRequest::Blocks {
                    content_id: id,
                    first_block: i * 4,
                    blocks: 4,
                    queue_ms: 0,
                },
                0,
            )
        });
        let answers = futures::future::join_all(asks).await;
        let data = answers
            .iter()
            .filter(|a| matches!(a, Ok(TransferResponse::Data { .. })))
            .count();
        let busy = answers
            .iter()
            .filter(|a| matches!(a, Ok(TransferResponse::Busy { .. })))
            .count();
        assert!(
            data >= 1 && busy >= 1,
            "{data} data, {busy} busy: {answers:?}"
        );
        assert_eq!(data + busy, 6);
        assert_eq!(a.counters().busy, busy as u64);
    })
    .await;
}

#[tokio::test]
async fn a_capability_the_node_would_not_grant_is_refused_before_download() {
    within(60, async {
        let mut net = TestNet::new();
        let needs_random = manifest("dice", "<capabilities><random/></capabilities>");
        let package = pack(component("hello"), &needs_random, &net.key).unwrap();
        let a = net.node(&[]).await;
        a.share(package.into_inner()).await.unwrap();
        let dir = net.dir();
        let config = net.config(dir);
        let mut policy = net.policy();
        policy.random = false;
        let b = net.start(config, policy, &[address(&a).await]).await;
        let err = b.pull("dice").await.unwrap_err();
        let PullError::Refused { refused, .. } = &*err else {
            panic!("{err}")
        };
        assert_eq!(refused[0].refusals.0, [Refusal::Capability("random")]);
        assert_eq!(a.counters().transfer_requests, 0, "nothing was downloaded");
    })
    .await;
}

#[tokio::test]
async fn nodes_pull_and_call_over_quic() {
    within(60, async {
        let mut net = TestNet::new();
        let quic = |net: &mut TestNet| {
            let dir = net.dir();
            let mut config = net.config(dir);
            config.net.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
            config
        };
        let config = quic(&mut net);
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        let a_address = address(&a).await;
        assert!(a_address.to_string().contains("/quic-v1/"), "{a_address}");
        let config = quic(&mut net);
        let policy = net.policy();
        let b = net.start(config, policy, &[a_address]).await;
        assert_eq!(b.pull("hello").await.unwrap().sources, [a.peer_id()]);
        let outcome = b.invoke_remote("hello", "greet(\"quic\")").await.unwrap();
        assert_eq!(outcome.value, "\"Hello, quic!\"");
    })
    .await;
}

#[tokio::test]
async fn a_node_at_its_connection_limit_refuses_more() {
    within(60, async {
        let mut net = TestNet::new();
        let dir = net.dir();
        let mut config = net.config(dir);
        config.net.max_connections = 1;
        let policy = net.policy();
        let a = net.start(config, policy, &[]).await;
        let a_address = address(&a).await;
        let b = net.node(std::slice::from_ref(&a_address)).await;
        let c = net.node(&[]).await;
        // c's handshake may complete before a closes the connection; either
        // way c cannot talk to a.
        let _ = c.dial(a_address).await;
        let asked = c
            .client()
            .request_advert(a.peer_id(), AdvertRequest::Name("hello".into()))
            .await;
        assert!(asked.is_err(), "a node at its limit answered: {asked:?}");
        let connected = a.client().info().await.unwrap().connected;
        assert_eq!(connected, [b.peer_id()]);
        // The connection it has keeps working.
        let answer = b
            .client()
            .request_advert(a.peer_id(), AdvertRequest::Name("hello".into()))
            .await;
        assert_eq!(answer, Ok(AdvertResponse::NotFound));
    })
    .await;
}

#[tokio::test]
async fn the_receiver_bounds_a_message_whatever_the_sender_allows() {
    within(60, async {
        let mut net = TestNet::new();
        let a: Node = net.node(&[]).await;
        a.share(service_package("hello", &net.key).into_inner())
            .await
            .unwrap();
        // A sender whose own limit is far above the protocol's.
        let codec = cbor::codec::Codec::<InvokeRequest, InvokeResponse>::default()
            .set_request_size_maximum(16 << 20)
            .set_response_size_maximum(16 << 20);
        let behaviour = cbor::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(INVOKE_PROTOCOL), ProtocolSupport::Full)],
            request_response::Config::default(),
        );
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| behaviour)
            .unwrap()
            .build();
        swarm.dial(address(&a).await).unwrap();
        let huge = InvokeRequest {
            service: "hello".into(),
            content_id: None,
            publisher: None,
            call: format!("greet(\"{}\")", "x".repeat(2 * MAX_INVOKE_REQUEST as usize)),
        };
        let mut sent = None;
        let outcome = loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if sent.is_none() => {
                    sent = Some(swarm.behaviour_mut().send_request(&peer_id, huge.clone()));
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    break Err(error.to_string());
                }
                SwarmEvent::Behaviour(request_response::Event::Message { message, .. }) => {
                    break Ok(format!("{message:?}"));
                }
                _ => {}
            }
        };
        assert!(
            outcome.is_err(),
            "an oversize request was answered: {outcome:?}"
        );
        // The node carries on.
        let b = net.node(&[address(&a).await]).await;
        let outcome = b.invoke_remote("hello", "greet(\"ok\")").await.unwrap();
        assert_eq!(outcome.value, "\"Hello, ok!\"");
    })
    .await;
}

/// A `Blocks` request for the first 64 KiB of `id`, waiting up to `queue_ms`
/// in line.
fn first_blocks(id: [u8; 32], queue_ms: u32) -> TransferRequest {
    TransferRequest::Blocks {
        content_id: id,
        first_block: 0,
        blocks: 4,
        queue_ms,
    }
}

/// A node that shares `stream`, its upload settings changed by `upload`:
/// the node, the package and the node's address.
async fn stream_provider(
    net: &mut TestNet,
    upload: impl FnOnce(&mut sp2a::node::UploadConfig),
) -> (Node, VerifiedPackage, sp2a::net::Multiaddr) {
    let package = service_package("stream", &net.key);
    let dir = net.dir();
    let mut config = net.config(dir);
    upload(&mut config.upload);
    let policy = net.policy();
    let a = net.start(config, policy, &[]).await;
    a.share(package.clone().into_inner()).await.unwrap();
    let at = address(&a).await;
    (a, package, at)
}

/// A node that shares `stream` and serves one peer at a time.
async fn one_slot_provider(net: &mut TestNet) -> (Node, VerifiedPackage, sp2a::net::Multiaddr) {
    stream_provider(net, |upload| upload.slots = Some(1)).await
}

#[tokio::test]
async fn a_freed_upload_slot_goes_at_once_to_the_first_peer_still_waiting_in_line() {
    within(90, async {
        let mut net = TestNet::new();
        let (a, package, at) = one_slot_provider(&mut net).await;
        let (holder, gone, waiting) = (
            raw_client(&at).await,
            raw_client(&at).await,
            raw_client(&at).await,
        );
        let id = package.content_id().0;
        let provider = a.peer_id();
        let ask = |client: &Client, queue_ms| {
            let client = client.clone();
            async move {
                client
                    .request_transfer(provider, first_blocks(id, queue_ms), 0)
                    .await
                    .unwrap()
            }
        };
        let is_data = |r: &TransferResponse| matches!(r, TransferResponse::Data { .. });
        assert!(is_data(&ask(&holder, 0).await), "the free slot is taken");
        // Not held: told its place at once, and when to ask again.
        assert_eq!(
            ask(&gone, 0).await,
            TransferResponse::Queued {
                ahead: 0,
                retry_ms: 1000
            }
        );
        // Held for its 200 ms, then told to ask again at once.
        assert_eq!(
            ask(&gone, 200).await,
            TransferResponse::Queued {
                ahead: 0,
                retry_ms: 0
            }
        );
        // `gone` stops asking; `waiting` stands behind it, its request held.
        let waiting_answer = tokio::spawn(ask(&waiting, 10_000));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting_answer.is_finished(),
            "held while the slot is taken"
        );
        // The holder leaves: the slot goes to `waiting` (asking), not to
        // `gone` (ahead of it, but not asking), and its request is answered
        // with data at once: not at the end of its hold, nor after a slot
        // given to `gone` would have idled out (2 s).
        let left = holder
            .request_transfer(provider, TransferRequest::Leave { content_id: id }, 0)
            .await
            .unwrap();
        assert_eq!(left, TransferResponse::Left);
        let answer = tokio::time::timeout(Duration::from_millis(1500), waiting_answer)
            .await
            .expect("answered before a slot given to the absent peer idles out")
            .unwrap();
        assert!(is_data(&answer), "{answer:?}");
        // `gone` kept its place: first in line behind the new holder.
        assert_eq!(
            ask(&gone, 0).await,
            TransferResponse::Queued {
                ahead: 0,
                retry_ms: 1000
            }
        );
        assert_eq!(a.counters().queued, 3);
    })
    .await;
}

#[tokio::test]
async fn a_sequential_pull_leaves_a_line_that_does_not_reach_it_in_its_attempts_time() {
    within(60, async {
        let mut net = TestNet::new();
        let (a, package, at) = one_slot_provider(&mut net).await;
        // A peer takes the only slot and keeps it, asking twice a second.
        let holder = raw_client(&at).await;
        let id = package.content_id().0;
        let provider = a.peer_id();
        let holding = tokio::spawn({
            let holder = holder.clone();
            async move {
                loop {
                    let answer = holder
                        .request_transfer(provider, first_blocks(id, 0), 0)
                        .await;
                    assert!(
                        matches!(answer, Ok(TransferResponse::Data { .. })),
                        "{answer:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        // Attempts of 0.2, 0.4, 0.8 and 1.6 s: 3 s in line at most, then
        // the pull looks for other providers (there are none) and comes back.
        let dir = net.dir();
        let mut config = net.config(dir);
        config.pull.strategy = Strategy::Sequential;
        config.pull.base_timeout = Duration::from_millis(200);
        config.pull.total_timeout = Duration::from_secs(8);
        config.reshare = false;
        let policy = net.policy();
        let b = net.start(config, policy, std::slice::from_ref(&at)).await;
        let err = b.pull("stream").await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(*err, PullError::GaveUp { .. }), "{text}");
        assert!(
            text.contains("still 0 peers ahead in line after 3.0s"),
            "{text}"
        );
        assert!(a.counters().queued >= 2, "{:?}", a.counters());
        // The holder leaves: the next pull is served, from the line.
        holding.abort();
        let left = holder
            .request_transfer(provider, TransferRequest::Leave { content_id: id }, 0)
            .await
            .unwrap();
        assert_eq!(left, TransferResponse::Left);
        let pulled = b.pull("stream").await.unwrap();
        assert_eq!(pulled.sources, vec![provider]);
    })
    .await;
}

/// Pulls `hello` with `local_addresses` set as given, from a provider that
/// is always busy and names an invented peer at a loopback address; returns
/// how many connections reached that address.
async fn connections_to_a_hinted_loopback_address(local_addresses: bool) -> usize {
    let mut net = TestNet::new();
    let package = service_package("hello", &net.key);
    let hub = net.node(&[]).await;
    let hub_address = address(&hub).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            while listener.accept().await.is_ok() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let home = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let hinter = FakeProvider::start(
        &package,
        &hub_address,
        Misbehaviour::BusyNaming(PeerId::random(), vec![home]),
    )
    .await;
    let dir = net.dir();
    let mut config = net.config(dir);
    config.net.local_addresses = local_addresses;
    config.pull.total_timeout = Duration::from_secs(3);
    let policy = net.policy();
    // b is told the hinter's address by its operator: an address another
    // peer names (the hub's lookup answer) is not dialled outside local mode.
    let b = net
        .start(config, policy, &[hub_address, hinter.address.clone()])
        .await;
    let err = b.pull("hello").await.unwrap_err();
    assert!(matches!(*err, PullError::GaveUp { .. }), "{err}");
    assert!(
        hinter.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the hint was given"
    );
    counting.abort();
    accepted.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn a_loopback_address_from_peer_exchange_is_not_dialled_outside_local_mode() {
    within(60, async {
        assert_eq!(connections_to_a_hinted_loopback_address(false).await, 0);
        // The same hint in local mode is dialled: the hint does arrive.
        assert!(connections_to_a_hinted_loopback_address(true).await >= 1);
    })
    .await;
}
