//! The emulated home networks (`sp2a bench homes`): two public hosts and
//! three homes behind NAT routers, in network namespaces. Nodes behind the
//! NATs reach the public node; what the public side sees is the router's
//! address (and, behind the port-preserving NATs, the host's own port;
//! behind the symmetric one, another); nothing on the internet has a route
//! into a home; and everything is gone afterwards. Needs root, `ip netns`
//! and `iptables` (which `./run test` installs as root); fails without.

use std::process::Command;

use sp2a_bench::testbed::homes::{HomeNetworks, Nat, PREFIX};
use sp2a_tests::{NodeProcess, run_sp2a, text, write_packages_and_policy};

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
        &["--policy", "policy.toml", "--share", "hello.rps"],
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
