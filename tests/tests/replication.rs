//! Adaptive replication with several nodes in one process: load makes the
//! providers solicit a standby, which pulls, verifies and serves; idle load
//! makes the replica retire while the pinned provider stays; load reports
//! that are forged, from a peer that does not provide the service, or
//! flooded are not used.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::{gossipsub, identity, noise, tcp, yamux};
use sp2a::net::protocol::{LoadReport, load_topic};
use sp2a::net::{Multiaddr, NetConfig, PeerId};
use sp2a::node::{GroupStatus, Node, NodeConfig, NodeEvent};
use sp2a::package::{Package, SecretKey, pack};
use sp2a_tests::net::{TEST_SETTINGS, TestNet, address, within};
use sp2a_tests::{component, manifest};

/// Replication at test speed.
const FAST: &str = r#"
    max-invocations-per-service = 2
    [replication]
    report-every = "500ms"
    report-ttl = "2s"
    hold = "3s"
    cooldown = "1s"
    refresh = "1s"
"#;

fn config(dir: PathBuf, standby: &[&str]) -> NodeConfig {
    // FAST's top-level key comes before the tables.
    let mut config = NodeConfig::from_toml(&format!("{FAST}{TEST_SETTINGS}"), &dir).unwrap();
    config.data_dir = dir;
    config.standby = standby.iter().map(|s| s.to_string()).collect();
    config
}

/// The `hostile` test guest (its `nap(ms)` makes calls that take time),
/// with replication: calls within 2 s at 50% utilisation, 1 to 3 replicas.
fn elastic(key: &SecretKey) -> Package {
    let body = "<requirements/><capabilities><clocks/>\
        <dir name=\"sandbox\" path=\"/sandbox\" access=\"read-write\"/></capabilities>\
        <qos latency=\"2s\" utilisation=\"0.5\"/><replicas min=\"1\" max=\"3\"/>";
    pack(component("hostile"), &manifest("hostile", body), key)
        .unwrap()
        .into_inner()
}

async fn start(net: &mut TestNet, standby: &[&str], bootstrap: &[Multiaddr]) -> Node {
    let dir = net.dir();
    let policy = net.policy();
    net.start(config(dir, standby), policy, bootstrap).await
}

/// Waits for an event `wanted` accepts (events lost to a lagging receiver
/// are skipped).
async fn until_event(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    wanted: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    loop {
        match events.recv().await {
            Ok(event) if wanted(&event) => return event,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => panic!("events ended: {e}"),
        }
    }
}

/// The group of `name` as `node` sees it, once `ready` accepts it.
async fn group_until(node: &Node, name: &str, ready: impl Fn(&GroupStatus) -> bool) -> GroupStatus {
    loop {
        let status = node.status().await;
        if let Some(group) = status
            .services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.group.clone())
            && ready(&group)
        {
            return group;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The group of `name` as `node` sees it now.
async fn group(node: &Node, name: &str) -> GroupStatus {
    group_until(node, name, |_| true).await
}

#[tokio::test]
async fn load_brings_a_standby_in_and_idleness_retires_it_but_not_the_pinned_provider() {
    within(120, async {
        let mut net = TestNet::new();
        let a = start(&mut net, &[], &[]).await;
        a.share(elastic(&net.key)).await.unwrap();
        let hub = address(&a).await;
        let standby = start(&mut net, &["hostile"], std::slice::from_ref(&hub)).await;
        let caller = start(&mut net, &[], std::slice::from_ref(&hub)).await;
        let other_caller = start(&mut net, &[], std::slice::from_ref(&hub)).await;
        let mut a_events = a.events();
        let mut s_events = standby.events();
        assert!(standby.services().is_empty(), "a standby runs nothing yet");

        // Six callers on two nodes (a node holds at most half of a
        // provider's slots), each calling a 300 ms function again and
        // again: more than the provider's limit L = 2 serves.
        let stop = Arc::new(AtomicBool::new(false));
        let mut callers = Vec::new();
        for i in 0..6 {
            let caller = if i % 2 == 0 { &caller } else { &other_caller };
            let (caller, stop) = (caller.clone(), stop.clone());
            callers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if caller.invoke_remote("hostile", "nap(300)").await.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }

        // Diffusion: the provider asks the standby, which pulls (every check
        // of a pull), activates, and serves the caller.
        let event = until_event(&mut a_events, |e| matches!(e, NodeEvent::Diffusion { .. })).await;
        let NodeEvent::Diffusion {
            standbys, reason, ..
        } = event
        else {
            unreachable!()
        };
        assert_eq!(standbys, [standby.peer_id()], "{reason}");
        until_event(&mut s_events, |e| matches!(e, NodeEvent::Pulled { .. })).await;
        let caller_id = caller.peer_id();
        until_event(
            &mut s_events,
            |e| matches!(e, NodeEvent::Invoked { peer, .. } if *peer == caller_id),
        )
        .await;
        assert_eq!(standby.status().await.services[0].role, "replica");
        // Both see a group of two.
        group_until(&a, "hostile", |g| g.providers == 2).await;
        group_until(&standby, "hostile", |g| g.providers == 2).await;

        // Regression: the load goes; after the hold the replica retires,
        // the pinned provider stays.
        stop.store(true, Ordering::Relaxed);
        for caller in callers {
            caller.await.unwrap();
        }
        let event = until_event(&mut s_events, |e| matches!(e, NodeEvent::Regression { .. })).await;
        let NodeEvent::Regression { reason, .. } = event else {
            unreachable!()
        };
        assert!(reason.contains("load"), "{reason}");
        assert!(standby.services().is_empty());
        assert_eq!(a.services().len(), 1);
        let g = group_until(&a, "hostile", |g| g.providers == 1).await;
        assert!(g.reports.taken > 0, "{g:?}");
        // Calls still succeed, on the provider that stayed.
        let answer = caller.invoke_remote("hostile", "nap(1)").await.unwrap();
        assert_eq!(answer.peer, a.peer_id());
    })
    .await;
}

/// A gossipsub peer outside sp2a: it publishes `reports` on `topic` to the
/// node at `target`, claiming to be `author` without signing (as a forger
/// would), once every `every`, until dropped.
fn forger(
    target: Multiaddr,
    topic: String,
    author: PeerId,
    report: LoadReport,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let keypair = identity::Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Permissive)
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let behaviour: gossipsub::Behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Author(author), config).unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = gossipsub::IdentTopic::new(topic);
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    swarm.dial(target).unwrap();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                _ = tick.tick() => {
                    let mut report = report.clone();
                    report.at_ms = now_ms();
                    let _ = swarm.behaviour_mut().publish(topic.clone(), report.encode());
                }
            }
        }
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A report of a provider overwhelmed: every slot busy, callers turned away.
fn overwhelmed(content_id: [u8; 32]) -> LoadReport {
    LoadReport {
        content_id,
        at_ms: 0,
        calls_per_s: 10.0,
        in_flight: 2,
        limit: 2,
        busy_per_s: 50.0,
        p95_us: 5_000_000,
        upload: 1.0,
        pinned: false,
    }
}

/// A peer that speaks sp2a's network but provides nothing: it subscribes
/// to `topic` and publishes signed reports, `count` of them, one every
/// `every`.
async fn stranger(
    hub: &Multiaddr,
    topic: String,
    report: LoadReport,
    count: usize,
    every: Duration,
) {
    let config = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![hub.clone()],
        local_addresses: true,
        ..NetConfig::default()
    };
    let (client, _inbound) = sp2a::net::event_loop::start(sp2a::net::libp2p_identity(), config)
        .await
        .unwrap();
    client.dial(hub.clone()).await.unwrap();
    client.subscribe(topic.clone()).await;
    // Time for the subscriptions to be exchanged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..count {
        let mut report = report.clone();
        report.at_ms = now_ms();
        client.publish(topic.clone(), report.encode()).await;
        tokio::time::sleep(every).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.shutdown().await;
}

#[tokio::test]
async fn a_forged_load_report_in_a_real_providers_name_is_not_used() {
    within(90, async {
        let mut net = TestNet::new();
        let a = start(&mut net, &[], &[]).await;
        let package = elastic(&net.key);
        let id = a.share(package.clone()).await.unwrap();
        let hub = address(&a).await;
        let b = start(&mut net, &[], std::slice::from_ref(&hub)).await;
        b.pull("hostile").await.unwrap();
        // A takes B's reports: B is a member of the group.
        group_until(&a, "hostile", |g| g.providers == 2).await;
        let b_id = b.peer_id();
        b.shutdown().await;
        group_until(&a, "hostile", |g| g.providers == 1).await;

        // A forger publishes unsigned reports in B's name: B is still a
        // member in A's view, so only the missing signature stops them.
        let topic = load_topic("hostile", &net.key.public().to_bytes());
        let forging = forger(
            hub.clone(),
            topic,
            b_id,
            overwhelmed(id.0),
            Duration::from_millis(200),
        );
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let g = group(&a, "hostile").await;
            assert_eq!(g.providers, 1, "a forged report was used: {g:?}");
            assert!(!g.violated, "{g:?}");
        }
        forging.abort();
    })
    .await;
}

#[tokio::test]
async fn load_reports_from_a_peer_that_does_not_provide_the_service_are_refused() {
    within(90, async {
        let mut net = TestNet::new();
        let a = start(&mut net, &[], &[]).await;
        let id = a.share(elastic(&net.key)).await.unwrap();
        let hub = address(&a).await;
        // A standby, so that a report A believed would make it act.
        let _standby = start(&mut net, &["hostile"], std::slice::from_ref(&hub)).await;
        let mut events = a.events();
        let topic = load_topic("hostile", &net.key.public().to_bytes());
        // Six seconds of reports: the next lookups of the providers do not
        // list their author, who is then a stranger.
        stranger(
            &hub,
            topic,
            overwhelmed(id.0),
            20,
            Duration::from_millis(300),
        )
        .await;

        let g = group(&a, "hostile").await;
        assert!(g.reports.refused >= 1, "{g:?}");
        assert_eq!(g.reports.taken, 0, "{g:?}");
        assert_eq!(g.providers, 1, "{g:?}");
        // One check (the lookups it brought sooner), then refused without
        // another.
        assert_eq!(g.reports.checks, 1, "{g:?}");
        while let Ok(event) = events.try_recv() {
            assert!(!matches!(event, NodeEvent::Diffusion { .. }), "{event:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_load_reports_costs_one_check_and_moves_nothing() {
    within(90, async {
        let mut net = TestNet::new();
        let a = start(&mut net, &[], &[]).await;
        let id = a.share(elastic(&net.key)).await.unwrap();
        let hub = address(&a).await;
        let _standby = start(&mut net, &["hostile"], std::slice::from_ref(&hub)).await;
        let mut events = a.events();
        let topic = load_topic("hostile", &net.key.public().to_bytes());
        // 2,000 reports as fast as they go.
        stranger(&hub, topic, overwhelmed(id.0), 2000, Duration::ZERO).await;

        let g = group(&a, "hostile").await;
        assert!(
            g.reports.refused + g.reports.ignored >= 100,
            "the flood arrived: {g:?}"
        );
        assert_eq!(g.reports.taken, 0, "{g:?}");
        assert!(g.reports.checks <= 1, "{g:?}");
        assert_eq!(g.providers, 1);
        // The node still answers at once.
        let answer = a.invoke_local("hostile", "nap(1)").await.unwrap();
        assert!(answer.value.contains('1'), "{}", answer.value);
        while let Ok(event) = events.try_recv() {
            assert!(!matches!(event, NodeEvent::Diffusion { .. }), "{event:?}");
        }
    })
    .await;
}

/// The peer id at the end of a node's address.
fn peer_of(address: &str) -> PeerId {
    address.rsplit('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn node_processes_spread_a_service_under_load_and_shrink_back() {
    within(180, async {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let key = SecretKey::generate();
        std::fs::write(dir.join("hostile.rps"), elastic(&key).to_bytes()).unwrap();
        std::fs::create_dir(dir.join("root")).unwrap();
        std::fs::write(
            dir.join("policy.toml"),
            format!(
                "[trust]\npublishers = [\"{}\"]\n[grants]\nclocks = true\nfs-root = \"root\"\nfs-access = \"read-write\"\n",
                key.public()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("node.toml"),
            format!("{FAST}\n[net]\nlocal-addresses = true\n"),
        )
        .unwrap();
        let node = |extra: &[&str]| {
            let mut args = vec!["--config", "node.toml", "--policy", "policy.toml"];
            args.extend_from_slice(extra);
            args.into_iter().map(str::to_owned).collect::<Vec<String>>()
        };
        let args = node(&["--share", "hostile.rps"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let provider = sp2a_tests::NodeProcess::start(dir, "provider", &args);
        let args = node(&["--standby", "hostile", "--bootstrap", &provider.address]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let standbys = [
            sp2a_tests::NodeProcess::start(dir, "standby-a", &args),
            sp2a_tests::NodeProcess::start(dir, "standby-b", &args),
        ];
        let standby_ids: Vec<PeerId> = standbys.iter().map(|s| peer_of(&s.address)).collect();

        // The load generator: two library nodes, six callers of a 300 ms
        // call.
        let mut net = TestNet::new();
        let hub: Multiaddr = provider.address.parse().unwrap();
        let caller = start(&mut net, &[], std::slice::from_ref(&hub)).await;
        let other_caller = start(&mut net, &[], std::slice::from_ref(&hub)).await;
        let stop = Arc::new(AtomicBool::new(false));
        let answered_by = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let mut callers = Vec::new();
        for i in 0..6 {
            let caller = if i % 2 == 0 { &caller } else { &other_caller };
            let (caller, stop, answered_by) = (caller.clone(), stop.clone(), answered_by.clone());
            callers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match caller.invoke_remote("hostile", "nap(300)").await {
                        Ok(answer) => {
                            answered_by.lock().unwrap().insert(answer.peer);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        // Diffusion: a standby process is solicited, pulls and serves calls.
        while !answered_by
            .lock()
            .unwrap()
            .iter()
            .any(|p| standby_ids.contains(p))
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let running = |name: &str| {
            let data = dir.join(name);
            let out = sp2a_tests::run_sp2a(dir, &["status", "--data-dir", data.to_str().unwrap()]);
            let (stdout, _) = sp2a_tests::text(&out);
            assert!(out.status.success(), "{stdout}");
            !stdout.contains("services  0")
        };
        assert!(running("standby-a") || running("standby-b"));
        // Regression: the load goes; the standbys retire, the pinned
        // provider stays.
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        while running("standby-a") || running("standby-b") {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(running("provider"));
        let answer = caller.invoke_remote("hostile", "nap(1)").await.unwrap();
        assert_eq!(answer.peer, peer_of(&provider.address));
    })
    .await;
}
