//! The emulated home networks (`sp2a bench homes`): two public hosts and
//! three homes behind NAT routers, in network namespaces. Nodes behind the
//! NATs reach the public node; what the public side sees is the router's
//! address (and, behind the port-preserving NATs, the host's own port;
//! behind the symmetric one, another); nothing on the internet has a route
//! into a home; and everything is gone afterwards. Needs root, `ip netns`
//! and `iptables` (which `./run test` installs as root); fails without.
//!
//! Then the scenarios of running on the internet: a home shares, another
//! pulls over a hole-punched connection and calls; the symmetric NAT's
//! home pulls a small package through the relay and a large one from a
//! public provider; a relay closes a circuit beyond its byte limit; and a
//! node that believes it is public is corrected by AutoNAT. The testbed's
//! names are fixed, so these tests take turns.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use sp2a_bench::testbed::homes::{HomeNetworks, Nat, PREFIX};
use sp2a_tests::{NodeProcess, run_sp2a, text, write_packages_and_policy};

/// One testbed at a time.
static TESTBED: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    TESTBED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The established TCP connections in `namespace` as (local, peer) pairs.
fn connections(namespace: &str) -> Vec<(String, String)> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "ss",
            "-tnH",
            "state",
            "established",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace().rev();
            let peer = parts.next()?.to_owned();
            let local = parts.next()?.to_owned();
            Some((local, peer))
        })
        .collect()
}

fn port(address: &str) -> &str {
    address.rsplit(':').next().unwrap()
}

fn our_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

#[test]
fn nodes_behind_nats_reach_a_public_node_which_sees_only_their_routers() {
    let _turn = one_at_a_time();
    let networks = HomeNetworks::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let public = &networks.public[0];
    let listen = format!("/ip4/{}/tcp/4001", public.address);
    let server = NodeProcess::start_in(
        &public.namespace,
        dir,
        "public",
        &listen,
        &[
            "--policy",
            "policy.toml",
            "--share",
            "hello.rps",
            "--external",
            &listen,
        ],
    );
    let mut homes = Vec::new();
    for home in &networks.homes {
        let listen = format!("/ip4/{}/tcp/4001", home.host.address);
        let node = NodeProcess::start_in(
            &home.host.namespace,
            dir,
            home.host.name,
            &listen,
            &["--policy", "policy.toml", "--bootstrap", &server.address],
        );
        homes.push((home, node));
    }
    for (home, node) in &homes {
        // Through its NAT the home node finds and pulls the public node's
        // service.
        let out = run_sp2a(dir, &["pull", "hello", "--data-dir", node.data_dir()]);
        assert!(out.status.success(), "{}: {:?}", home.host.name, text(&out));
        // The public side sees the router's address, never the host's.
        let seen = connections(&public.namespace);
        let from_home: Vec<_> = seen
            .iter()
            .filter(|(_, peer)| peer.starts_with(&format!("{}:", home.router.address)))
            .collect();
        assert!(!from_home.is_empty(), "{}: {seen:?}", home.host.name);
        assert!(
            !seen
                .iter()
                .any(|(_, peer)| peer.starts_with(&format!("{}:", home.host.address))),
            "{seen:?}"
        );
        // Easy NATs keep the host's port, the symmetric one does not.
        let inside = connections(&home.host.namespace);
        let (_, outside) = from_home[0];
        let kept = inside.iter().any(|(local, _)| port(local) == port(outside));
        assert_eq!(
            kept,
            home.nat == Nat::Easy,
            "{}: inside {inside:?}, outside {outside}",
            home.host.name
        );
        // No route from the internet into the home.
        let route = Command::new("ip")
            .args(["-n", &public.namespace, "route", "get"])
            .arg(home.host.address.to_string())
            .output()
            .unwrap();
        assert!(!route.status.success(), "{}", home.host.name);
    }
    drop(homes);
    drop(server);
    drop(networks);
    assert!(our_namespaces().is_empty(), "{:?}", our_namespaces());
}

#[test]
fn without_root_the_home_networks_refuse_and_say_why() {
    let out = sp2a_tests::run_sp2a_unprivileged(&["bench", "homes", "up"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("the home networks need root"), "{stderr}");
}

/// The internet of the testbed: `relay` (a public node that relays and
/// that everyone bootstraps from) and `public` (another public node), both
/// declaring their addresses as operators of public hosts do.
struct Internet {
    // Dropped in this order: the nodes stop before their networks go.
    relay: NodeProcess,
    public: NodeProcess,
    networks: HomeNetworks,
    dir: tempfile::TempDir,
}

impl Internet {
    /// `relay_config`: the relay's `[net.relay]` settings.
    fn start(relay_config: &str) -> Self {
        let networks = HomeNetworks::create().unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_packages_and_policy(dir.path());
        std::fs::write(
            dir.path().join("relay.toml"),
            format!("[net.relay]\n{relay_config}\n"),
        )
        .unwrap();
        let start_public = |index: usize, name: &str, extra: &[&str]| {
            let host = &networks.public[index];
            let listen = format!("/ip4/{}/tcp/4001", host.address);
            let mut args = vec!["--policy", "policy.toml", "--external", &listen];
            args.extend_from_slice(extra);
            NodeProcess::start_in(&host.namespace, dir.path(), name, &listen, &args)
        };
        let relay = start_public(0, "relay", &["--config", "relay.toml"]);
        let public = start_public(1, "public", &["--bootstrap", &relay.address.clone()]);
        Self {
            relay,
            public,
            networks,
            dir,
        }
    }

    fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A node in home `index` (0: A, 1: B, easy NATs; 2: C, symmetric),
    /// bootstrapping from the relay.
    fn home(&self, index: usize, extra: &[&str]) -> NodeProcess {
        let host = &self.networks.homes[index].host;
        let listen = format!("/ip4/{}/tcp/4001", host.address);
        let mut args = vec![
            "--policy",
            "policy.toml",
            "--bootstrap",
            &self.relay.address,
        ];
        args.extend_from_slice(extra);
        NodeProcess::start_in(&host.namespace, self.dir(), host.name, &listen, &args)
    }

    fn router(&self, index: usize) -> String {
        self.networks.homes[index].router.address.to_string()
    }
}

/// `sp2a status --json` of a running node.
fn status(dir: &std::path::Path, node: &NodeProcess) -> Value {
    let out = run_sp2a(dir, &["status", "--json", "--data-dir", node.data_dir()]);
    assert!(out.status.success(), "{:?}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `check` until it gives a value, or fails after `limit` with the
/// last status seen.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> (Option<T>, String)) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let (found, seen) = check();
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; last seen {seen}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn peer_id(node: &NodeProcess) -> String {
    node.address.rsplit('/').next().unwrap().to_owned()
}

/// Waits until `node` finds itself private and holds a relay reservation
/// whose address records now carry; returns its status.
fn until_relayed(dir: &std::path::Path, node: &NodeProcess) -> Value {
    wait_for(
        "a private node with a relay reservation",
        Duration::from_secs(60),
        || {
            let s = status(dir, node);
            let reach = &s["reach"];
            let relayed = reach["reachability"] == "private"
                && reach["relayed"].as_array().is_some_and(|r| !r.is_empty());
            (relayed.then(|| s.clone()), reach.to_string())
        },
    )
}

/// Waits until every announcement of `node` went out after its relayed
/// address was known (records carry the addresses of their announcement).
fn until_announced(dir: &std::path::Path, node: &NodeProcess) {
    wait_for(
        "announcements with the relayed address",
        Duration::from_secs(30),
        || {
            let s = status(dir, node);
            let all = s["announcements"].as_array().cloned().unwrap_or_default();
            let done = !all.is_empty() && all.iter().all(|a| a["state"] == "announced");
            (done.then_some(()), s["announcements"].to_string())
        },
    );
}

/// The connections of `node` to `peer`, as (path, remote) pairs.
fn links(dir: &std::path::Path, node: &NodeProcess, peer: &str) -> Vec<(String, String)> {
    status(dir, node)["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["peer"] == peer)
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["remote"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `sp2a pull SERVICE` on `node`: whether it succeeded, and what it
/// printed (shown with `--nocapture`: the path and time to first byte).
fn pull(dir: &std::path::Path, node: &NodeProcess, service: &str) -> (bool, String, String) {
    let out = run_sp2a(dir, &["pull", service, "--data-dir", node.data_dir()]);
    let (stdout, stderr) = text(&out);
    eprintln!("pull {service}: {stdout}{stderr}");
    (out.status.success(), stdout, stderr)
}

#[test]
fn a_home_pulls_from_another_home_over_a_hole_punched_connection_and_calls_it() {
    let _turn = one_at_a_time();
    let internet = Internet::start("");
    let dir = internet.dir();
    let a = internet.home(0, &["--share", "hello.rps", "--share", "stream.rps"]);
    let b = internet.home(1, &[]);
    // A learns it is behind a NAT and takes a slot on the relay.
    let seen = until_relayed(dir, &a);
    let relayed = seen["reach"]["relayed"][0].as_str().unwrap().to_owned();
    assert!(
        relayed.contains(&format!("{}/p2p-circuit", peer_id(&internet.relay))),
        "{relayed}"
    );
    assert_eq!(seen["reach"]["confirmed"], serde_json::json!([]));
    assert_eq!(seen["reach"]["dht"], "client");
    // The relay itself is public, answers DHT requests and relays.
    let relay = status(dir, &internet.relay)["reach"].clone();
    assert_eq!(relay["reachability"], "public", "{relay}");
    assert_eq!(relay["dht"], "server", "{relay}");
    assert!(
        relay["relaying_reservations"].as_u64() >= Some(1),
        "{relay}"
    );
    until_announced(dir, &a);
    // B pulls the 2 MB service: far beyond what relays carry, so only a
    // direct, hole-punched connection can bring it.
    let (ok, stdout, stderr) = pull(dir, &b, "stream");
    assert!(ok, "{stdout}\n{stderr}");
    let a_id = peer_id(&a);
    let direct = format!("from {a_id} direct /ip4/{}/tcp/4001", internet.router(0));
    assert!(stdout.contains(&direct), "{stdout}");
    let paths = links(dir, &b, &a_id);
    assert!(
        paths.iter().any(|(path, remote)| path == "direct"
            && remote.starts_with(&format!("/ip4/{}/tcp/4001", internet.router(0)))),
        "{paths:?}"
    );
    // Then B calls A's other service remotely.
    let out = run_sp2a(
        dir,
        &[
            "call",
            "hello",
            "greet(\"b\")",
            "--remote",
            "--data-dir",
            b.data_dir(),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Only A provides it (B pulled the other service).
    assert!(stdout.contains("Hello, b!"), "{stdout}");
}

#[test]
fn the_symmetric_home_pulls_small_packages_through_the_relay_and_large_ones_from_a_public_provider()
{
    let _turn = one_at_a_time();
    let internet = Internet::start("");
    let dir = internet.dir();
    std::fs::write(dir.join("c.toml"), "[pull]\ntimeout = \"20s\"\n").unwrap();
    let a = internet.home(0, &["--share", "hello.rps", "--share", "stream.rps"]);
    let c = internet.home(2, &["--config", "c.toml"]);
    until_relayed(dir, &a);
    until_announced(dir, &a);
    let a_id = peer_id(&a);
    // 52 KB: within what this node takes through relays, and hole
    // punching cannot pass a symmetric NAT.
    let (ok, stdout, stderr) = pull(dir, &c, "hello");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("from {a_id} relayed ")),
        "{stdout}"
    );
    let paths = links(dir, &c, &a_id);
    assert!(paths.iter().all(|(path, _)| path == "relayed"), "{paths:?}");
    // A sees the same: C reached it through the relay, and only so.
    let seen_by_a = links(dir, &a, &peer_id(&c));
    assert!(
        !seen_by_a.is_empty() && seen_by_a.iter().all(|(path, _)| path == "relayed"),
        "{seen_by_a:?}"
    );
    // 2 MB, from A alone: not through a relay; the pull says why.
    let (ok, stdout, stderr) = pull(dir, &c, "stream");
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("larger than this node takes through relays"),
        "{stderr}"
    );
    // A public node pulls it (A dials it back directly: no NAT in the
    // way), and provides it; now C takes it from there, directly.
    let (ok, stdout, stderr) = pull(dir, &internet.public, "stream");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("from {a_id} direct ")), "{stdout}");
    let (ok, stdout, stderr) = pull(dir, &c, "stream");
    assert!(ok, "{stdout}\n{stderr}");
    let public_id = peer_id(&internet.public);
    assert!(
        stdout.contains(&format!(
            "from {public_id} direct /ip4/{}/tcp/4001",
            internet.networks.public[1].address
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(&format!("from {a_id}")), "{stdout}");
}

/// Bulk transfer goes over direct connections, whatever the asker would
/// take: with a relay that carries anything (as one an attacker runs
/// would) and a downloader that would take 8 MiB through it, the
/// provider still serves the 2 MB package's blocks only on direct
/// connections, and counts what it refused.
#[test]
fn a_provider_serves_large_packages_only_on_direct_connections() {
    let _turn = one_at_a_time();
    let internet =
        Internet::start("max-circuit-bytes = \"64 MiB\"\nmax-circuit-duration = \"10m\"");
    let dir = internet.dir();
    std::fs::write(
        dir.join("c.toml"),
        "[pull]\ntimeout = \"20s\"\n[net]\nmax-relayed-download = \"8 MiB\"\ndirect-wait = \"1s\"\n",
    )
    .unwrap();
    let a = internet.home(0, &["--share", "stream.rps"]);
    let c = internet.home(2, &["--config", "c.toml"]);
    until_relayed(dir, &a);
    until_announced(dir, &a);
    let (ok, stdout, stderr) = pull(dir, &c, "stream");
    assert!(!ok, "{stdout}\n{stderr}");
    let counters = status(dir, &a)["counters"].clone();
    assert!(
        counters["relayed_refused"].as_u64() >= Some(1),
        "{counters}"
    );
    assert_eq!(counters["blocks_served"], 0, "{counters}");
}

#[test]
fn a_relay_closes_a_circuit_beyond_its_byte_limit() {
    let _turn = one_at_a_time();
    let internet = Internet::start("max-circuit-bytes = \"96 KiB\"");
    let dir = internet.dir();
    // C would take the 2 MB package through a relay, and A would serve it
    // so (the relay's limit is what stops it).
    std::fs::write(
        dir.join("c.toml"),
        "[pull]\ntimeout = \"20s\"\n[net]\nmax-relayed-download = \"8 MiB\"\ndirect-wait = \"1s\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.toml"),
        "[net]\nmax-relayed-download = \"8 MiB\"\n",
    )
    .unwrap();
    let a = internet.home(0, &["--share", "stream.rps", "--config", "a.toml"]);
    let c = internet.home(2, &["--config", "c.toml"]);
    until_relayed(dir, &a);
    until_announced(dir, &a);
    let (ok, stdout, stderr) = pull(dir, &c, "stream");
    assert!(!ok, "{stdout}");
    let relay = status(dir, &internet.relay);
    let closed = relay["reach"]["relaying_circuits_closed"].as_u64().unwrap();
    assert!(closed >= 1, "{}\n{stderr}", relay["reach"]);
    // Each circuit was cut at the limit (the relay lets C open another
    // now and then, within its rate limit): what C verified is at most
    // the limit per circuit, the one still open included.
    assert!(
        stderr.contains("the connection closed before the peer answered"),
        "{stderr}"
    );
    let verified: u64 = stderr
        .rsplit_once(" of ")
        .and_then(|(before, _)| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no verified count in {stderr}"));
    assert!(
        verified <= (closed + 1) * 96 * 1024,
        "{verified} bytes through {closed} closed circuit(s)"
    );
}

#[test]
fn autonat_corrects_a_node_that_believes_it_is_public() {
    let _turn = one_at_a_time();
    let internet = Internet::start("");
    let dir = internet.dir();
    // A's operator declares the router's address, but the router forwards
    // nothing.
    let believed = format!("/ip4/{}/tcp/4001", internet.router(0));
    let a = internet.home(0, &["--share", "hello.rps", "--external", &believed]);
    let first = status(dir, &a);
    assert_eq!(
        first["reach"]["reachability"], "public",
        "{}",
        first["reach"]
    );
    assert_eq!(
        first["reach"]["confirmed"],
        serde_json::json!([[believed.clone(), "declared"]])
    );
    assert_eq!(first["reach"]["dht"], "server", "{}", first["reach"]);
    let corrected = until_relayed(dir, &a);
    let reach = &corrected["reach"];
    assert_eq!(reach["confirmed"], serde_json::json!([]), "{reach}");
    assert_eq!(reach["dht"], "client", "{reach}");
    let refuted = reach["refuted"].as_array().unwrap();
    assert!(refuted.iter().any(|r| r[0] == believed.as_str()), "{reach}");
    // The records went out again without it: announced after the
    // correction, with only the relayed address to give.
    until_announced(dir, &a);
    let relayed = reach["relayed"][0].as_str().unwrap().to_owned();
    // And a peer finds A through the relay (then directly): the record
    // led it somewhere that answers.
    let b = internet.home(1, &[]);
    let (ok, stdout, stderr) = pull(dir, &b, "hello");
    assert!(ok, "{stdout}\n{stderr}\n{relayed}");
    assert!(
        stdout.contains(&format!("from {}", peer_id(&a))),
        "{stdout}"
    );
}
