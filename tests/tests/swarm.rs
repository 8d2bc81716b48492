//! Swarming diffusion: a small version of the paper's experiment (the full
//! runs are `sp2a bench diffusion`), and swarms with lying peers in them.

use std::time::Duration;

use sp2a::node::NodeEvent;
use sp2a_bench::diffusion::{Experiment, Mode, Transport, run};
use sp2a_tests::net::{FakeProvider, Misbehaviour, TestNet, address, within};
use sp2a_tests::service_package;

fn experiment(nodes: usize, mode: Mode, dir: &std::path::Path) -> Experiment {
    Experiment {
        nodes,
        mode,
        upload_rate: Some(4 << 20),
        blocks_per_request: 4,
        timeout: Duration::from_secs(90),
        attempt_timeout: Duration::from_secs(5),
        data_dir: dir.to_path_buf(),
        transport: Transport::Tcp,
        dht_server_every: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_swarm_and_all_become_providers_of_the_exact_package() {
    within(240, async {
        let net = TestNet::new();
        let dir = tempfile::tempdir().unwrap();
        let package = service_package("stream", &net.key);
        let policy = sp2a_tests::policy(&net.key, dir.path(), "");
        let outcome = run(
            experiment(20, Mode::Swarm, dir.path()),
            net.sandbox.clone(),
            policy,
            package.clone(),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            outcome.completed(),
            20,
            "{:?}",
            outcome.nodes.iter().find_map(|n| n.error.clone())
        );
        for node in &outcome.nodes {
            assert_eq!(
                node.content_id,
                Some(package.content_id()),
                "node {}",
                node.index
            );
        }
        // Swarming: most nodes got their blocks from several providers.
        let multi = outcome.nodes.iter().filter(|n| n.sources.len() > 1).count();
        assert!(
            multi > 10,
            "only {multi} of 20 nodes had more than one source"
        );
        // Downloaders served each other: every node received the whole
        // component, from the seed and from other downloaders.
        let uploaders = outcome.nodes.iter().filter(|n| n.uploaded > 0).count();
        assert!(uploaders > 1, "only {uploaders} downloader(s) uploaded");
        let by_downloaders: u64 = outcome.nodes.iter().map(|n| n.uploaded).sum();
        assert!(
            outcome.seed_uploaded + by_downloaders >= 20 * outcome.size,
            "seed {} + downloaders {by_downloaders} bytes for 20 copies of {}",
            outcome.seed_uploaded,
            outcome.size
        );
        assert!(outcome.all_done.is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_papers_approach_takes_each_copy_from_one_provider() {
    within(240, async {
        let net = TestNet::new();
        let dir = tempfile::tempdir().unwrap();
        // 33 chunks: a swarm would take them from several providers.
        let package = service_package("stream", &net.key);
        let policy = sp2a_tests::policy(&net.key, dir.path(), "");
        let outcome = run(
            experiment(8, Mode::Paper, dir.path()),
            net.sandbox.clone(),
            policy,
            package.clone(),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(outcome.completed(), 8);
        // One provider at a time, and nobody failing: each node got the
        // whole package from exactly one provider, which held all of it.
        for node in &outcome.nodes {
            assert_eq!(node.content_id, Some(package.content_id()));
            assert_eq!(
                node.sources.len(),
                1,
                "node {}: {:?}",
                node.index,
                node.sources
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_with_liars_still_completes_and_every_package_verifies() {
    within(120, async {
        let mut net = TestNet::new();
        let package = service_package("stream", &net.key);
        let dir = net.dir();
        let mut config = net.config(dir);
        config.upload.rate = Some(8 << 20);
        let policy = net.policy();
        let seed = net.start(config, policy, &[]).await;
        seed.share(package.clone().into_inner()).await.unwrap();
        let hub = address(&seed).await;
        // One peer claims every block and sends none; one corrupts what it sends.
        let pretender = FakeProvider::start(&package, &hub, Misbehaviour::Pretend).await;
        let corrupter = FakeProvider::start(&package, &hub, Misbehaviour::CorruptAfter(0)).await;
        let mut nodes = Vec::new();
        for _ in 0..8 {
            let dir = net.dir();
            let mut config = net.config(dir);
            config.upload.rate = Some(8 << 20);
            let policy = net.policy();
            nodes.push(net.start(config, policy, std::slice::from_ref(&hub)).await);
        }
        let mut events: Vec<_> = nodes.iter().map(|n| n.events()).collect();
        let results = futures::future::join_all(nodes.iter().map(|n| n.pull("stream"))).await;
        for (node, result) in nodes.iter().zip(results) {
            let pulled = result.unwrap_or_else(|e| panic!("{}: {e}", node.peer_id()));
            assert_eq!(pulled.content_id, package.content_id());
            let active = node.service("stream").unwrap();
            // The stored package verifies from scratch.
            let stored = sp2a::package::Package::parse(&active.package.to_bytes()).unwrap();
            assert_eq!(stored.verify().unwrap().content_id(), package.content_id());
        }
        // Whoever received the corrupter's blocks banned it; nobody banned
        // an honest node.
        let mut bans = 0;
        for receiver in &mut events {
            while let Ok(event) = receiver.try_recv() {
                if let NodeEvent::PeerBanned { peer, .. } = event {
                    assert_eq!(peer, corrupter.client.peer_id());
                    bans += 1;
                }
            }
        }
        // Every node found the corrupter among its first providers and
        // asked it; whoever got its data banned it.
        assert!(corrupter.requests() > 0, "the corrupter was never asked");
        assert!(bans > 0, "{} requests, no ban", corrupter.requests());
        assert!(
            pretender.requests() + pretender.haves() < 400,
            "the pretender was not hammered"
        );
    })
    .await;
}
