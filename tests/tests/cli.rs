//! The real `sp2a` binary: keygen -> pack -> audit -> call for every example
//! service, and the refusals an operator sees on the command line.

use std::path::Path;

use sp2a_tests::{guests_dir, run_sp2a, services_dir, text};

/// keygen + a policy trusting the new key, in `dir`.
fn setup(dir: &Path) -> String {
    let publisher = sp2a_tests::keygen(dir);
    assert!(dir.join("key.pem.pub").exists());
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "[trust]\npublishers = [\"{publisher}\"]\n[grants]\nclocks = true\nfs-root = \"data\"\nfs-access = \"read-write\"\n"
        ),
    )
    .unwrap();
    publisher
}

fn pack(dir: &Path, name: &str, manifest: &Path, extra: &[&str]) -> std::process::Output {
    let component = guests_dir().join(format!("{name}.wasm"));
    let mut args = vec![
        "pack",
        component.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--key",
        "key.pem",
        "-o",
    ];
    let out = format!("{name}.rps");
    args.push(&out);
    args.extend_from_slice(extra);
    run_sp2a(dir, &args)
}

#[test]
fn round_trip_every_example_service() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = setup(dir.path());
    let cases = [
        ("hello", "greet(\"cli\")", "\"Hello, cli!\""),
        (
            "checksum",
            "digest.sha256-text(\"abc\")",
            "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"",
        ),
        ("notes", "names()", "ok([])"),
    ];
    for (name, call, expected) in cases {
        let manifest = services_dir().join(name).join("rps.xml");
        let out = pack(dir.path(), name, &manifest, &[]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "pack {name}: {stderr}");
        assert!(stdout.contains("content id:"), "{stdout}");

        let package = format!("{name}.rps");
        let out = run_sp2a(dir.path(), &["audit", &package, "--policy", "policy.toml"]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "audit {name}: {stdout}{stderr}");
        assert!(stdout.contains("signature    valid"), "{stdout}");
        assert!(
            stdout.contains(&format!("{publisher} (trusted)")),
            "{stdout}"
        );
        assert!(stdout.contains("verdict: WOULD ACTIVATE"), "{stdout}");
        assert!(
            stdout.contains("wasi:io/streams@"),
            "imports are listed: {stdout}"
        );

        let out = run_sp2a(
            dir.path(),
            &["audit", &package, "--policy", "policy.toml", "--json"],
        );
        let (stdout, _) = text(&out);
        assert!(out.status.success());
        assert!(stdout.contains("\"refusals\": []"), "{stdout}");

        let out = run_sp2a(
            dir.path(),
            &["call", &package, call, "--policy", "policy.toml"],
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "call {name}: {stderr}");
        assert_eq!(stdout.trim(), expected, "{stderr}");
    }
    // The notes service wrote into its granted directory only.
    let out = run_sp2a(
        dir.path(),
        &[
            "call",
            "notes.rps",
            "put(\"a\", \"b\")",
            "--policy",
            "policy.toml",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    // Under its publisher's directory.
    let publisher = sp2a::package::Package::read_file(&dir.path().join("notes.rps"))
        .unwrap()
        .advert()
        .publisher();
    let publisher_dir = sp2a::policy::publisher_dir(&publisher);
    assert_eq!(
        std::fs::read_to_string(
            dir.path()
                .join("data")
                .join(publisher_dir)
                .join("notes/notes/a")
        )
        .unwrap(),
        "b"
    );
}

#[test]
fn a_passphrase_protected_ssh_key_signs_and_its_public_line_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "open sesame",
            "-C",
            "alice@example",
        ])
        .args(["-f", "key.pem"])
        .current_dir(dir.path())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let line = std::fs::read_to_string(dir.path().join("key.pem.pub")).unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("[trust]\npublishers = [{:?}]\n", line.trim()),
    )
    .unwrap();
    let manifest = services_dir().join("hello").join("rps.xml");
    // Without a terminal or SP2A_KEY_PASSPHRASE the key stays shut.
    let out = pack(dir.path(), "hello", &manifest, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("passphrase-protected") && stderr.contains("SP2A_KEY_PASSPHRASE"),
        "{stderr}"
    );
    let component = guests_dir().join("hello.wasm");
    let out = std::process::Command::new(sp2a_tests::sp2a_bin())
        .current_dir(dir.path())
        .args(["pack", component.to_str().unwrap(), "--manifest"])
        .arg(&manifest)
        .args(["--key", "key.pem", "-o", "hello.rps"])
        .env("SP2A_KEY_PASSPHRASE", "open sesame")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run_sp2a(
        dir.path(),
        &["audit", "hello.rps", "--policy", "policy.toml"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("(trusted)"), "{stdout}");
    assert!(stdout.contains("verdict: WOULD ACTIVATE"), "{stdout}");
}

/// `sp2a new NAME [--lang LANG]` in an empty directory, then exactly the
/// build and pack commands it prints, then a call of the packed service.
fn new_service_builds_packs_and_answers(name: &str, lang: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["new", name];
    args.extend_from_slice(lang);
    let out = run_sp2a(dir.path(), &args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let printed = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} line: {stdout}"))
            .trim()
            .to_owned()
    };
    let (build, pack) = (printed("build:"), printed("pack:"));
    let project = dir.path().join(name);
    setup(&project);
    // The JavaScript and Python runtimes read the clocks and random.
    let policy = project.join("policy.toml");
    let text_of_policy = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text_of_policy.replace("clocks = true", "clocks = true\nrandom = true"),
    )
    .unwrap();
    // Exactly the printed commands: build, then pack with our key.
    let sp2a = sp2a_tests::sp2a_bin();
    let pack = pack
        .replacen("sp2a ", &format!("{} ", sp2a.display()), 1)
        .replace("KEY", "key.pem");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{build} && {pack}"))
        .current_dir(dir.path())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run_sp2a(
        &project,
        &[
            "call",
            &format!("{name}.rps"),
            "greet(\"new\")",
            "--policy",
            "policy.toml",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "\"Hello, new!\"");
    // The service's log record reached the node's log.
    assert!(stderr.contains("greeting new"), "{stderr}");
}

#[test]
fn a_new_service_builds_packs_and_answers_outside_the_repository() {
    new_service_builds_packs_and_answers("hello2", &[]);
}

/// Needs Node.js and npm (`./run test` installs them on Debian as root).
#[test]
fn a_new_javascript_service_builds_packs_and_answers() {
    new_service_builds_packs_and_answers("hello-js", &["--lang", "js"]);
}

/// Needs python3 with venv.
#[test]
fn a_new_python_service_builds_packs_and_answers() {
    new_service_builds_packs_and_answers("hello-py", &["--lang", "python"]);
}

#[test]
fn manifest_init_writes_a_manifest_that_packs_and_activates() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let component = guests_dir().join("notes.wasm");
    let component = component.to_str().unwrap();
    let out = run_sp2a(
        dir.path(),
        &["manifest", "init", component, "-o", "init.xml"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("clocks   declared"), "{stdout}");
    let xml = std::fs::read_to_string(dir.path().join("init.xml")).unwrap();
    assert!(
        xml.contains("<name>notes</name>") && xml.contains("<clocks/>"),
        "{xml}"
    );
    assert!(xml.contains("wasi:filesystem/preopens@"), "{xml}");
    // It packs (the check finds every import declared) and would activate.
    let out = pack(dir.path(), "notes", &dir.path().join("init.xml"), &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run_sp2a(
        dir.path(),
        &["audit", "notes.rps", "--policy", "policy.toml"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("verdict: WOULD ACTIVATE"), "{stdout}");
    // An existing file stays unless --force; what is not a component is named.
    let again = run_sp2a(
        dir.path(),
        &["manifest", "init", component, "-o", "init.xml"],
    );
    assert!(!again.status.success());
    assert!(text(&again).1.contains("--force"), "{:?}", text(&again));
    let out = run_sp2a(
        dir.path(),
        &["manifest", "init", "init.xml", "--name", "x", "-o", "x.xml"],
    );
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("asm header"),
        "{stderr}"
    );
    assert!(!dir.path().join("x.xml").exists());
}

#[test]
fn audit_without_policy_refuses_and_names_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let manifest = services_dir().join("notes/rps.xml");
    assert!(pack(dir.path(), "notes", &manifest, &[]).status.success());
    let out = run_sp2a(dir.path(), &["audit", "notes.rps"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("NOT trusted"), "{stdout}");
    assert!(stdout.contains("verdict: REFUSED"), "{stdout}");
    assert!(stdout.contains("requests clocks"), "{stdout}");
    assert!(stdout.contains("grants no file-system access"), "{stdout}");
    // The JSON report names each refusal by kind, for tools.
    let out = run_sp2a(dir.path(), &["audit", "notes.rps", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = report["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for kind in ["untrusted-publisher", "capability", "no-file-system"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn flipped_byte_package_is_refused_by_audit_and_call() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let manifest = services_dir().join("hello/rps.xml");
    assert!(pack(dir.path(), "hello", &manifest, &[]).status.success());
    let path = dir.path().join("hello.rps");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let out = run_sp2a(
        dir.path(),
        &["audit", "hello.rps", "--policy", "policy.toml"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("component hash mismatch"), "{stdout}");
    assert!(
        stdout.contains("not compiled: the package did not verify"),
        "{stdout}"
    );
    let out = run_sp2a(
        dir.path(),
        &[
            "call",
            "hello.rps",
            "greet(\"x\")",
            "--policy",
            "policy.toml",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(
        stderr.starts_with(
            "error: cannot activate hello.rps: package integrity: component hash mismatch"
        ),
        "{stderr}"
    );
}

#[test]
fn pack_refuses_a_manifest_that_omits_an_imported_capability() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    // notes imports wasi:clocks; this manifest does not declare <clocks/>.
    let manifest = dir.path().join("rps.xml");
    std::fs::write(
        &manifest,
        "<rps><name>notes</name><version>0.1.0</version><capabilities>\
         <dir name=\"notes\" path=\"/notes\" access=\"read-write\"/></capabilities></rps>",
    )
    .unwrap();
    let out = pack(dir.path(), "notes", &manifest, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("imports wasi:clocks/wall-clock@0.2"),
        "{stderr}"
    );
    assert!(stderr.contains("does not declare <clocks/>"), "{stderr}");
    // Forced through, the node refuses it at audit and at call time.
    assert!(
        pack(dir.path(), "notes", &manifest, &["--no-check"])
            .status
            .success()
    );
    let out = run_sp2a(
        dir.path(),
        &["audit", "notes.rps", "--policy", "policy.toml"],
    );
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("capability clocks: NOT DECLARED"),
        "{stdout}"
    );
    let out = run_sp2a(
        dir.path(),
        &["call", "notes.rps", "names()", "--policy", "policy.toml"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("does not declare <clocks/>"), "{stderr}");
}

#[test]
fn xml_bomb_manifest_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let manifest = dir.path().join("bomb.xml");
    std::fs::write(
        &manifest,
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;\">\n]>\n<rps><name>&lol1;</name><version>1.0.0</version></rps>\n",
    )
    .unwrap();
    let out = pack(dir.path(), "hello", &manifest, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2: DTDs and entity declarations are not allowed"),
        "{stderr}"
    );
    assert!(!dir.path().join("hello.rps").exists());
}

#[test]
fn truncated_package_and_garbage_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let manifest = services_dir().join("hello/rps.xml");
    assert!(pack(dir.path(), "hello", &manifest, &[]).status.success());
    let bytes = std::fs::read(dir.path().join("hello.rps")).unwrap();
    std::fs::write(dir.path().join("short.rps"), &bytes[..bytes.len() / 3]).unwrap();
    let out = run_sp2a(
        dir.path(),
        &["audit", "short.rps", "--policy", "policy.toml"],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("package is truncated"), "{stderr}");
    std::fs::write(dir.path().join("junk.rps"), b"not a package at all").unwrap();
    let out = run_sp2a(dir.path(), &["call", "junk.rps", "f()"]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("not an sp2a package"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn traps_exit_nonzero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let manifest = services_dir().join("checksum/rps.xml");
    assert!(
        pack(dir.path(), "checksum", &manifest, &[])
            .status
            .success()
    );
    let out = run_sp2a(
        dir.path(),
        &[
            "call",
            "checksum.rps",
            "blake3-chain([], 4000000000)",
            "--policy",
            "policy.toml",
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("out of fuel"), "{stderr}");
    let out = run_sp2a(
        dir.path(),
        &["call", "checksum.rps", "nope(1)", "--policy", "policy.toml"],
    );
    let (_, stderr) = text(&out);
    assert!(stderr.contains("no exported function \"nope\""), "{stderr}");
    assert!(
        stderr.contains("digest.blake3-text"),
        "lists the exports: {stderr}"
    );
    let out = run_sp2a(
        dir.path(),
        &[
            "call",
            "checksum.rps",
            "blake3-text(42)",
            "--policy",
            "policy.toml",
        ],
    );
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("bad arguments for digest.blake3-text"),
        "{stderr}"
    );
}

#[test]
fn a_standby_for_what_is_not_a_service_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_sp2a(
        dir.path(),
        &["node", "--data-dir", "d", "--standby", "Not/A Name"],
    );
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("is not a service name"), "{stderr}");
    assert!(!dir.path().join("d").exists(), "refused before starting");
}
