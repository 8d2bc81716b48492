//! The `sp2a` binary's own surface: help, version, usage errors. (Having an
//! integration test here also makes `cargo test --workspace` build the
//! binary that the end-to-end tests in `tests/` drive.)

use std::process::Command;

fn sp2a(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sp2a"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_every_command() {
    let out = sp2a(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "keygen", "pack", "audit", "call", "node", "find", "pull", "status", "demo", "bench",
    ] {
        assert!(text.contains(command), "missing {command} in:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2_without_a_panic() {
    let out = sp2a(&["pack"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--manifest"), "{text}");
    assert!(!text.contains("panicked"));
}

#[test]
fn a_missing_file_is_one_clear_line() {
    let out = sp2a(&["audit", "/nonexistent/x.rps"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("error: cannot read package /nonexistent/x.rps"),
        "{text}"
    );
}
