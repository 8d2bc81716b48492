//! The testbed command (`sp2a bench testbed`): the diffusion experiment
//! with every node its own `sp2a node` process in its own network
//! namespace, on a bridge, uplinks shaped by the kernel. Needs root and
//! `ip netns`; the tests fail, they do not skip, when those are missing
//! (except the one that checks the refusal without root).
//!
//! The testbed's namespaces share one name prefix, so its tests take turns.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use sp2a_tests::{guests_dir, services_dir, sp2a_bin, text};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const PREFIX: &str = "sp2a-tb-";

fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("the ip command (iproute2) runs");
    assert!(out.status.success(), "ip netns list: {:?}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn testbed_namespaces() -> Vec<String> {
    namespaces()
        .into_iter()
        .filter(|n| n.starts_with(PREFIX))
        .collect()
}

/// A `services/` directory as the benchmarks read it: each service's
/// manifest, and the built components under `target/`.
fn services_layout(dir: &Path) {
    let built = dir.join("target/wasm32-wasip2/release");
    std::fs::create_dir_all(&built).unwrap();
    std::fs::copy(guests_dir().join("stream.wasm"), built.join("stream.wasm")).unwrap();
    std::fs::create_dir_all(dir.join("stream")).unwrap();
    std::fs::copy(
        services_dir().join("stream/rps.xml"),
        dir.join("stream/rps.xml"),
    )
    .unwrap();
}

fn testbed(program: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .current_dir(dir)
        .args(["bench", "testbed"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn node_processes_pull_through_kernel_shaped_links_and_leave_nothing_behind() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    services_layout(&dir.path().join("services"));
    let out = testbed(
        &sp2a_bin(),
        dir.path(),
        &[
            "--nodes",
            "3",
            "--upload-rate",
            "512 KiB",
            "--no-compare",
            "--timeout",
            "2m",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 of 3 nodes active providers"),
        "{stdout}\n{stderr}"
    );
    // Every downloader's row has a completion time; the seed uploaded.
    let csv = std::fs::read_to_string(
        dir.path()
            .join("testbed-results/diffusion-swarm-3-processes.csv"),
    )
    .unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for row in &rows[..3] {
        assert!(!row[6].is_empty(), "a node did not complete: {csv}");
        assert!(row[9].is_empty(), "a node failed: {csv}");
    }
    let seed_uploaded: u64 = rows[3][7].parse().unwrap();
    assert!(seed_uploaded >= 2 << 20, "{csv}");
    assert!(
        testbed_namespaces().is_empty(),
        "namespaces left behind: {:?}",
        testbed_namespaces()
    );
}

#[test]
fn what_a_killed_run_left_is_refused_then_cleaned() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let leftover = format!("{PREFIX}left-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &leftover])
        .output()
        .unwrap();
    assert!(made.status.success(), "ip netns add: {:?}", text(&made));
    let refused = testbed(&sp2a_bin(), dir.path(), &["--nodes", "2"]);
    let (stdout, stderr) = text(&refused);
    assert!(!refused.status.success(), "{stdout}");
    assert!(
        stderr.contains("earlier testbed run") && stderr.contains("--clean"),
        "{stderr}"
    );
    // An unrelated namespace is left alone.
    let other = format!("sp2a-other-{}", std::process::id());
    Command::new("ip")
        .args(["netns", "add", &other])
        .status()
        .unwrap();
    let cleaned = testbed(&sp2a_bin(), dir.path(), &["--clean"]);
    let (stdout, stderr) = text(&cleaned);
    assert!(cleaned.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("removed 1 testbed namespace"), "{stdout}");
    let left = namespaces();
    let _ = Command::new("ip").args(["netns", "del", &other]).status();
    assert!(!left.contains(&leftover), "{left:?}");
    assert!(
        left.contains(&other),
        "--clean removed a namespace not its own"
    );
}

#[test]
fn without_root_the_testbed_refuses_and_says_why() {
    let out = sp2a_tests::run_sp2a_unprivileged(&["bench", "testbed", "--nodes", "2"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("the testbed needs root"), "{stderr}");
}
