//! Helpers for the integration tests: where the built guest components are,
//! the `sp2a` binary, keys and policies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sp2a::package::{Manifest, SecretKey, VerifiedPackage, pack};
use sp2a::policy::Policy;
use sp2a::sandbox::{Sandbox, SandboxConfig};

/// Directory of the built `.wasm` components (services and test guests).
pub fn guests_dir() -> PathBuf {
    PathBuf::from(env!("SP2A_GUESTS_DIR"))
}

/// The `services/` directory (manifests).
pub fn services_dir() -> PathBuf {
    PathBuf::from(env!("SP2A_SERVICES_DIR"))
}

/// A built component by crate name (`hello`, `checksum`, `notes`, `hostile`).
pub fn component(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The manifest of an example service.
pub fn service_manifest(name: &str) -> Manifest {
    let path = services_dir().join(name).join("rps.xml");
    Manifest::parse(&std::fs::read(&path).unwrap()).unwrap()
}

/// Packs an example service with `key`.
pub fn service_package(name: &str, key: &SecretKey) -> VerifiedPackage {
    pack(component(name), &service_manifest(name), key).unwrap()
}

/// A manifest from body text (inside `<rps>`, after name and version).
pub fn manifest(name: &str, body: &str) -> Manifest {
    Manifest::parse(
        format!("<rps><name>{name}</name><version>0.1.0</version>{body}</rps>").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("bad test manifest: {e}"))
}

/// A policy trusting `key`, granting clocks and random and a read-write
/// file-system root at `fs_root`, with `extra` TOML appended to `[grants]`.
pub fn policy(key: &SecretKey, fs_root: &Path, extra: &str) -> Policy {
    let text = format!(
        "[trust]\npublishers = [\"{}\"]\n[grants]\nclocks = true\nrandom = true\nfs-root = \"{}\"\nfs-access = \"read-write\"\n{extra}",
        key.public(),
        fs_root.display()
    );
    Policy::parse(&text, Path::new(".")).unwrap()
}

/// A small sandbox for one test.
pub fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        max_instances: 16,
        ..SandboxConfig::default()
    })
    .unwrap()
}

/// The `sp2a` binary built alongside the tests.
pub fn sp2a_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let bin = dir.join(format!("sp2a{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p sp2a-runtime` first)",
        bin.display()
    );
    bin
}

/// Runs `sp2a` with `args` in `dir`.
pub fn run_sp2a(dir: &Path, args: &[&str]) -> Output {
    Command::new(sp2a_bin())
        .current_dir(dir)
        .args(args)
        .env_remove("SP2A_LOG")
        .output()
        .unwrap()
}

/// Stdout and stderr of a command as text, for assertion messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
