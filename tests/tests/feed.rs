//! The live feed capability: the `live` service reads only segments its
//! declared source signed; a guest without the capability cannot read a
//! feed at all; and across nodes a feed reaches the providers, a forged
//! segment is refused and never served, and the buffer stays bounded.

use std::time::Duration;

use sp2a::feed::{FeedId, Feeds, KEEP_SEGMENTS, Segment};
use sp2a::node::{ActivateError, LocalService, Node, activate};
use sp2a::package::{Manifest, PublisherKey, SecretKey, pack};
use sp2a::policy::{Policy, Refusal, Refusals};
use sp2a::sandbox::SandboxError;
use sp2a_tests::net::{TestNet, address, within};
use sp2a_tests::{component, policy, sandbox, service_manifest};

/// The `live` service's manifest, reading the feed of `source`.
fn live_manifest(source: &PublisherKey) -> Manifest {
    let mut manifest = service_manifest("live");
    manifest.capabilities.feeds[0].publisher = *source;
    manifest
}

fn live_policy(key: &SecretKey, root: &std::path::Path) -> Policy {
    policy(key, root, "feeds = [\"live\"]")
}

async fn call(service: &LocalService, call: &str) -> String {
    service.activation.invoke(call).await.unwrap().value
}

fn segment(source: &SecretKey, index: u64, data: &[u8]) -> Segment {
    Segment::sign(source, "live", index, 1_000 * index, data.to_vec()).unwrap()
}

#[tokio::test]
async fn the_live_service_serves_only_segments_its_source_signed() {
    let key = SecretKey::generate();
    let source = SecretKey::generate();
    let forger = SecretKey::generate();
    let root = tempfile::tempdir().unwrap();
    let feeds = Feeds::default();
    let package = pack(component("live"), &live_manifest(&source.public()), &key).unwrap();
    let service = activate(
        &sandbox().with_feeds(feeds.clone()),
        &live_policy(&key, root.path()),
        package.into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(
        call(&service, "latest()").await,
        r#"err("no segment of feed live yet")"#
    );

    let feed = FeedId::new("live", &source.public()).unwrap();
    for index in 0..3 {
        feeds
            .receive(&feed, segment(&source, index, &[index as u8; 8]))
            .unwrap();
    }
    // Forged, tampered and another feed's segments never get in.
    assert!(
        feeds
            .receive(&feed, segment(&forger, 3, b"forged!!"))
            .is_err()
    );
    let mut tampered = segment(&source, 4, b"original");
    tampered.data = b"tampered".to_vec();
    assert!(feeds.receive(&feed, tampered).is_err());
    // The same name from another source is another feed: not this service's.
    let other = FeedId::new("live", &forger.public()).unwrap();
    feeds
        .receive(&other, segment(&forger, 99, b"elsewhere"))
        .unwrap();

    assert_eq!(call(&service, "latest()").await, "ok(2)");
    assert_eq!(
        call(&service, "segment-hex(1, 4)").await,
        r#"ok("01010101")"#
    );
    for missing in [3, 4, 99] {
        assert_eq!(
            call(&service, &format!("segment-hex({missing}, 4)")).await,
            format!(r#"err("segment {missing} of feed live is not held")"#)
        );
    }
    let playlist = call(&service, "playlist()").await;
    for line in [
        "#EXTM3U",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXTINF:1.000,",
        "segment/2",
    ] {
        assert!(playlist.contains(line), "{line} in {playlist}");
    }
}

#[tokio::test]
async fn a_guest_without_the_feed_capability_cannot_read_it() {
    let key = SecretKey::generate();
    let source = SecretKey::generate();
    let root = tempfile::tempdir().unwrap();

    // The component imports the feed, the manifest does not declare it:
    // the audit refuses it before anything runs.
    let mut undeclared = live_manifest(&source.public());
    undeclared.capabilities.feeds.clear();
    let package = pack(component("live"), &undeclared, &key).unwrap();
    let err = activate(
        &sandbox(),
        &live_policy(&key, root.path()),
        package.into_inner(),
    )
    .await
    .unwrap_err();
    let ActivateError::Sandbox(SandboxError::Refused(reason)) = &err else {
        panic!("{err}");
    };
    assert!(
        reason.contains("sp2a:rps/feed") && reason.contains("<feed"),
        "{reason}"
    );

    // Declared, but the node's policy does not grant it.
    let package = pack(component("live"), &live_manifest(&source.public()), &key).unwrap();
    let err = activate(
        &sandbox(),
        &policy(&key, root.path(), ""),
        package.into_inner(),
    )
    .await
    .unwrap_err();
    let ActivateError::Refused(Refusals(refusals)) = &err else {
        panic!("{err}");
    };
    assert!(
        matches!(&refusals[..], [Refusal::Feed(f)] if f.name == "live" && f.publisher == source.public()),
        "{refusals:?}"
    );

    // Granted for another source only: refused too.
    let other = SecretKey::generate().public();
    let package = pack(component("live"), &live_manifest(&source.public()), &key).unwrap();
    let pinned = policy(&key, root.path(), &format!("feeds = [\"live@{other}\"]"));
    assert!(matches!(
        activate(&sandbox(), &pinned, package.into_inner()).await,
        Err(ActivateError::Refused(_))
    ));
}

/// Waits until `node`'s `live` service answers `call` with `expected`.
async fn until_served(node: &Node, call: &str, expected: &str) {
    loop {
        if let Ok(outcome) = node.invoke_local("live", call).await
            && outcome.value == expected
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_feed_reaches_its_providers_and_a_forged_segment_is_never_served() {
    within(120, async {
        let mut net = TestNet::new();
        let source_key = SecretKey::generate();
        let source_public = source_key.public();
        let forger_key = SecretKey::generate();
        let source = net.node(&[]).await;
        let bootstrap = [address(&source).await];

        // A provider of `live`, whose policy grants the feed.
        let dir = net.dir();
        let config = net.config(dir);
        let root = net.dir();
        let provider = net
            .start(config, live_policy(&net.key, &root), &bootstrap)
            .await;
        let package = pack(component("live"), &live_manifest(&source_public), &net.key).unwrap();
        provider.share(package.into_inner()).await.unwrap();

        // The source publishes until the provider serves what it sent.
        let mut feed = source.feed_source("live", source_key, 0).await.unwrap();
        loop {
            let index = feed.publish(b"first segment".to_vec()).await.unwrap();
            let served = tokio::time::timeout(
                Duration::from_millis(300),
                until_served(
                    &provider,
                    &format!("segment-hex({index}, 5)"),
                    r#"ok("6669727374")"#,
                ),
            )
            .await;
            if served.is_ok() {
                break;
            }
        }

        // A forger on the feed's topic: its segment (a far-ahead number,
        // so it would be the newest) is refused and never served.
        let forger = net.node(&bootstrap).await;
        forger.dial(address(&provider).await).await.unwrap();
        let topic = sp2a::net::protocol::feed_topic("live", &source_public.to_bytes());
        let forged = Segment::sign(&forger_key, "live", 1_000_000, 0, b"forged".to_vec()).unwrap();
        loop {
            forger
                .client()
                .publish(topic.clone(), forged.encode())
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let status = provider.status().await;
            if status.feeds.iter().any(|f| f.refused > 0) {
                break;
            }
        }
        let reply = provider
            .invoke_local("live", "segment-hex(1000000, 4)")
            .await
            .unwrap()
            .value;
        assert_eq!(reply, r#"err("segment 1000000 of feed live is not held")"#);
        let latest = provider
            .invoke_local("live", "latest()")
            .await
            .unwrap()
            .value;
        assert_ne!(latest, "ok(1000000)");

        // Many more segments than the buffer holds: it stays bounded, and
        // the newest are served.
        let mut last = 0;
        for _ in 0..(KEEP_SEGMENTS + 16) {
            last = feed.publish(vec![7; 1024]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        until_served(&provider, "latest()", &format!("ok({last})")).await;
        let status = provider.status().await;
        let held = &status.feeds[0];
        assert_eq!(held.name, "live");
        assert_eq!(held.publisher, source_public.to_string());
        assert!(held.segments <= KEEP_SEGMENTS, "{held:?}");
        assert_eq!(held.latest, Some(last));
        assert!(held.refused >= 1, "{held:?}");
    })
    .await;
}

/// A provider with the feed flowing from its source: (provider, source's
/// publisher, the feed's topic). The source publishes until the provider
/// serves a segment.
async fn feed_flowing(
    net: &mut TestNet,
    source: &Node,
    feed: &mut sp2a::node::FeedSource,
    source_public: &PublisherKey,
) -> (Node, String) {
    let bootstrap = [address(source).await];
    let dir = net.dir();
    let config = net.config(dir);
    let root = net.dir();
    let policy = live_policy(&net.key, &root);
    let package = pack(component("live"), &live_manifest(source_public), &net.key).unwrap();
    let provider = net.start(config, policy, &bootstrap).await;
    provider.share(package.into_inner()).await.unwrap();
    loop {
        let index = feed.publish(b"first segment".to_vec()).await.unwrap();
        let served = tokio::time::timeout(
            Duration::from_millis(300),
            until_served(
                &provider,
                &format!("segment-hex({index}, 5)"),
                r#"ok("6669727374")"#,
            ),
        )
        .await;
        if served.is_ok() {
            break;
        }
    }
    let topic = sp2a::net::protocol::feed_topic("live", &source_public.to_bytes());
    (provider, topic)
}

/// A peer that floods a feed's topic with 1,000 forged segments is
/// penalised by gossipsub's scoring: pruned, then graylisted, so the
/// provider checks only the first few of them; the real source's
/// segments still arrive.
#[tokio::test]
async fn a_peer_flooding_a_feed_with_forged_segments_is_graylisted() {
    within(120, async {
        let mut net = TestNet::new();
        let source_key = SecretKey::generate();
        let source_public = source_key.public();
        let source = net.node(&[]).await;
        let mut feed = source.feed_source("live", source_key, 0).await.unwrap();
        let (provider, topic) = feed_flowing(&mut net, &source, &mut feed, &source_public).await;

        let flooder = net.node(&[address(&source).await]).await;
        flooder.dial(address(&provider).await).await.unwrap();
        flooder.client().subscribe(topic.clone()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let forger_key = SecretKey::generate();
        for index in 0..1000u64 {
            let forged = Segment::sign(
                &forger_key,
                "live",
                1_000_000 + index,
                0,
                b"forged".to_vec(),
            )
            .unwrap();
            flooder
                .client()
                .publish(topic.clone(), forged.encode())
                .await;
            if index % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        let status = provider.status().await;
        let refused = status.feeds[0].refused;
        assert!(
            refused >= 1 && refused < 100,
            "{refused} of 1000 forged segments checked"
        );
        let flooder_id = flooder.peer_id().to_string();
        let penalty = status
            .gossip_penalised
            .iter()
            .find(|p| p.peer == flooder_id)
            .unwrap_or_else(|| panic!("{:?}", status.gossip_penalised));
        eprintln!("{refused} of 1000 forged segments checked; the flooder: {penalty:?}");
        assert!(penalty.graylisted, "{penalty:?}");
        // The source was not penalised, and its segments still arrive.
        let source_id = source.peer_id().to_string();
        assert!(status.gossip_penalised.iter().all(|p| p.peer != source_id));
        let index = feed.publish(b"second segment".to_vec()).await.unwrap();
        until_served(
            &provider,
            &format!("segment-hex({index}, 6)"),
            r#"ok("7365636f6e64")"#,
        )
        .await;
    })
    .await;
}
