//! A network partition that heals, with real node processes in two network
//! namespaces joined by one veth link: the link is cut while providers
//! join each side, then restored; each side must find the other side's
//! provider within 60 s (Kademlia's own republication takes an hour).
//!
//! Needs `ip netns` (root, or CAP_NET_ADMIN); the test fails, it does not
//! skip, when namespaces cannot be made.
//!
//! The network is small, so the test makes it resemble a large one:
//! k = 2, and node identities are chosen so that for each provider's
//! service key the two closest peers are on the *other* side. A provider
//! that announced during the partition could only store its record on its
//! own side; after the heal, lookups from the other side converge on
//! peers that never heard of it, and only a new announcement places it
//! there. (In a network of thousands, the k closest peers of a key are as
//! likely to be across the partition.) Eight nodes are still few enough
//! that a lookup may wander across and find the record anyway, so the test
//! also checks that each provider announced again after the heal.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::kad::{KBucketKey, RecordKey};
use sp2a::net::keys::service_key;
use sp2a::node::Status;
use sp2a_tests::{NodeProcess, run_sp2a, text, write_packages_and_policy};

const A_IP: &str = "10.77.0.1";
const B_IP: &str = "10.77.0.2";
const HEAL_WITHIN: Duration = Duration::from_secs(60);
/// A lost peer is probed at least every 20 s; once reached, the keys are
/// announced 2 s later.
const REANNOUNCE_WITHIN: Duration = Duration::from_secs(30);

/// Two namespaces, `a` and `b`, joined by a veth pair; deleted when dropped
/// (which deletes the link too).
struct Partition {
    a: String,
    b: String,
    link_a: String,
    link_b: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {args:?} failed (network namespaces need root or CAP_NET_ADMIN): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Partition {
    fn new() -> Self {
        let id = std::process::id();
        // Made first, so that whatever setup step fails, the drop undoes
        // the ones before it.
        let this = Self {
            a: format!("sp2a-{id}-a"),
            b: format!("sp2a-{id}-b"),
            link_a: format!("sp2a{id}a"),
            link_b: format!("sp2a{id}b"),
        };
        ip(&["netns", "add", &this.a]);
        ip(&["netns", "add", &this.b]);
        ip(&[
            "link",
            "add",
            &this.link_a,
            "type",
            "veth",
            "peer",
            "name",
            &this.link_b,
        ]);
        for (ns, link, address) in [(&this.a, &this.link_a, A_IP), (&this.b, &this.link_b, B_IP)] {
            ip(&["link", "set", link, "netns", ns]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                link,
            ]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", link, "up"]);
        }
        this
    }

    fn set_link(&self, state: &str) {
        ip(&["-n", &self.a, "link", "set", &self.link_a, state]);
        ip(&["-n", &self.b, "link", "set", &self.link_b, state]);
    }

    fn cut(&self) {
        self.set_link("down");
    }

    fn restore(&self) {
        self.set_link("up");
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Deleting a namespace deletes the link end in it; a link that never
        // got moved is still here.
        let _ = Command::new("ip")
            .args(["link", "del", &self.link_a])
            .stderr(std::process::Stdio::null())
            .status();
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Node identities for the two sides: every `a` identity is closer to
/// `near_a` than every `b` identity, and every `b` identity closer to
/// `near_b` than every `a` identity. Found by drawing identities: a peer is
/// on side `a` when its Kademlia key shares `near_a`'s key up to the first
/// bit where `near_a` and `near_b` differ (and then differs from `near_b`
/// there), and the other way round for `b`.
fn identities(
    near_a: &RecordKey,
    near_b: &RecordKey,
    per_side: usize,
) -> (Vec<Keypair>, Vec<Keypair>) {
    let key_a = KBucketKey::from(near_a.clone());
    let key_b = KBucketKey::from(near_b.clone());
    let split = key_a.distance(&key_b).ilog2().expect("two different keys");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    while a.len() < per_side || b.len() < per_side {
        let keypair = Keypair::generate_ed25519();
        let peer = KBucketKey::from(keypair.public().to_peer_id());
        if key_a.distance(&peer).ilog2().is_some_and(|d| d < split) && a.len() < per_side {
            a.push(keypair);
        } else if key_b.distance(&peer).ilog2().is_some_and(|d| d < split) && b.len() < per_side {
            b.push(keypair);
        }
    }
    // The first of each side is its bridge: make it the side's farthest
    // from the other side's key, so that it holds none of those records.
    let farthest = |side: &mut Vec<Keypair>, key: &KBucketKey<RecordKey>| {
        let i = (0..side.len())
            .max_by_key(|&i| key.distance(&KBucketKey::from(side[i].public().to_peer_id())))
            .unwrap();
        side.swap(0, i);
    };
    farthest(&mut a, &key_b);
    farthest(&mut b, &key_a);
    (a, b)
}

/// A node's data directory with its identity already in place (a key
/// only its owner may read, as the node requires).
fn prepare(dir: &Path, name: &str, keypair: &Keypair) {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    sp2a::files::write_new(
        &data.join("identity.key"),
        &keypair.to_protobuf_encoding().unwrap(),
        0o600,
    )
    .unwrap();
}

fn address(ip: &str, port: u16, keypair: &Keypair) -> String {
    format!("/ip4/{ip}/tcp/{port}/p2p/{}", keypair.public().to_peer_id())
}

fn status(dir: &Path, node: &NodeProcess) -> Status {
    let out = run_sp2a(dir, &["status", "--json", "--data-dir", node.data_dir()]);
    assert!(out.status.success(), "{:?}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether `node` finds a provider of `service` now.
fn finds(dir: &Path, node: &NodeProcess, service: &str) -> bool {
    let out = run_sp2a(dir, &["find", service, "--data-dir", node.data_dir()]);
    let (stdout, stderr) = text(&out);
    if stdout.contains(&format!("no provider of {service} found")) {
        return false;
    }
    assert!(out.status.success(), "find {service}: {stdout}\n{stderr}");
    stdout.contains("1 provider(s)")
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn after_a_partition_heals_each_side_finds_the_others_provider_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    std::fs::write(
        dir.join("node.toml"),
        "policy = \"policy.toml\"\n[net]\nlocal-addresses = true\nkad-bucket-size = 2\n",
    )
    .unwrap();

    // Side a provides hello, side b stream; the k closest peers of stream
    // are on side a, those of hello on side b.
    let (ids_a, ids_b) = identities(&service_key("stream"), &service_key("hello"), 4);
    let names_a = ["a1", "a2", "a3", "hello-provider"];
    let names_b = ["b1", "b2", "b3", "stream-provider"];
    for (name, id) in names_a.iter().zip(&ids_a).chain(names_b.iter().zip(&ids_b)) {
        prepare(dir, name, id);
    }
    let addresses = |ip: &str, ids: &[Keypair]| -> Vec<String> {
        (0..ids.len())
            .map(|i| address(ip, 4101 + i as u16, &ids[i]))
            .collect()
    };
    let (addr_a, addr_b) = (addresses(A_IP, &ids_a), addresses(B_IP, &ids_b));
    let listen = |ip: &str, i: usize| format!("/ip4/{ip}/tcp/{}", 4101 + i);

    let net = Partition::new();
    let start =
        |ns: &str, ip: &str, names: &[&str], i: usize, bootstrap: &[&str], share: Option<&str>| {
            let mut args = vec!["--config", "node.toml"];
            for b in bootstrap {
                args.extend(["--bootstrap", b]);
            }
            if let Some(package) = share {
                args.extend(["--share", package]);
            }
            NodeProcess::start_in(ns, dir, names[i], &listen(ip, i), &args)
        };

    // The two bridges know each other before the cut.
    let a1 = start(&net.a, A_IP, &names_a, 0, &[], None);
    let b1 = start(&net.b, B_IP, &names_b, 0, &[&addr_a[0]], None);
    wait_until("b1 connected to a1", Duration::from_secs(20), || {
        status(dir, &b1).peers.len() == 1
    });

    net.cut();
    // The others join during the partition. Their bootstrap lists name
    // both bridges (the other side's one cannot be reached now).
    let mut side_a = Vec::new();
    let mut side_b = Vec::new();
    for i in 1..4 {
        let share = (i == 3).then_some("hello.rps");
        side_a.push(start(
            &net.a,
            A_IP,
            &names_a,
            i,
            &[&addr_a[0], &addr_b[0]],
            share,
        ));
        let share = (i == 3).then_some("stream.rps");
        side_b.push(start(
            &net.b,
            B_IP,
            &names_b,
            i,
            &[&addr_b[0], &addr_a[0]],
            share,
        ));
    }
    let (finder_a, provider_a) = (&side_a[0], &side_a[2]);
    let (finder_b, provider_b) = (&side_b[0], &side_b[2]);
    for provider in [provider_a, provider_b] {
        wait_until(
            "the providers' announcements",
            Duration::from_secs(30),
            || {
                let announcements = status(dir, provider).announcements;
                !announcements.is_empty() && announcements.iter().all(|a| a.state == "announced")
            },
        );
    }
    // Each side works on its own, and the partition is real.
    wait_until(
        "each side finds its own provider",
        Duration::from_secs(20),
        || finds(dir, finder_a, "hello") && finds(dir, finder_b, "stream"),
    );
    assert!(
        !finds(dir, finder_a, "stream"),
        "stream found across the cut"
    );
    assert!(!finds(dir, finder_b, "hello"), "hello found across the cut");

    net.restore();
    let healed = Instant::now();
    let (mut a_found, mut b_found) = (None, None);
    wait_until(
        "each side finds the other's provider after the heal",
        HEAL_WITHIN,
        || {
            if a_found.is_none() && finds(dir, finder_a, "stream") {
                a_found = Some(healed.elapsed());
            }
            if b_found.is_none() && finds(dir, finder_b, "hello") {
                b_found = Some(healed.elapsed());
            }
            a_found.is_some() && b_found.is_some()
        },
    );
    println!(
        "after the heal: side a found stream in {:?}, side b found hello in {:?}",
        a_found.unwrap(),
        b_found.unwrap()
    );
    // Each provider announced its keys again because connectivity returned
    // (its probe of the other side's bridge succeeded): that, not a lucky
    // lookup, places its records on the peers closest to them across the
    // former cut. The table-change rule alone would take a minute.
    for provider in [provider_a, provider_b] {
        let within = REANNOUNCE_WITHIN.saturating_sub(healed.elapsed());
        wait_until(
            "the providers announce again after the heal",
            within,
            || {
                let since_heal = healed.elapsed().as_millis() as u64;
                status(dir, provider).announcements.iter().all(|a| {
                    a.state == "announced" && a.announced_ms_ago.is_some_and(|ago| ago < since_heal)
                })
            },
        );
    }
    println!(
        "both providers announced again within {:?} of the heal",
        healed.elapsed()
    );
    drop((a1, b1));
}
