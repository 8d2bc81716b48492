//! Builds the example services and the hostile test guests for
//! wasm32-wasip2, each with a nested `cargo build` in a target directory of
//! its own (sharing the outer one deadlocks on its lock), and tells the tests
//! where the components are through `SP2A_GUESTS_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("guests");

    for watched in [
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "services/Cargo.toml",
        "services/Cargo.lock",
        "services/hello",
        "services/checksum",
        "services/notes",
        "services/stream",
        "services/live",
        "tests/guests/Cargo.toml",
        "tests/guests/Cargo.lock",
        "tests/guests/hostile",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    ensure_target();
    build(&root.join("services"), &target_dir);
    build(&root.join("tests/guests"), &target_dir);

    let components = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=SP2A_GUESTS_DIR={}", components.display());
    println!(
        "cargo:rustc-env=SP2A_SERVICES_DIR={}",
        root.join("services").display()
    );
}

/// Installs the wasm32-wasip2 target if rustup can, or fails with the command.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |sysroot: &Option<PathBuf>| {
        sysroot
            .as_ref()
            .is_some_and(|s| s.join("lib/rustlib").join(TARGET).exists())
    };
    if installed(&sysroot) {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added || !installed(&sysroot) {
        panic!("the {TARGET} Rust target is not installed; run: rustup target add {TARGET}");
    }
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .env("CARGO_TARGET_DIR", target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", workspace.display()));
    if !output.status.success() {
        panic!(
            "building the guests in {} failed:\n{}",
            workspace.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
