//! Outgoing HTTP (`wasi:http`) and JavaScript components. The JavaScript
//! test service (`tests/guests/js-web`, built here with componentize-js)
//! packs, audits and answers through the real `sp2a` binary; its `fetch()`
//! reaches a granted loopback server, is refused everywhere else before a
//! connection is made, and stays within the call's deadline and memory.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sp2a::node::activate;
use sp2a::package::{Manifest, SecretKey, pack};
use sp2a::sandbox::{Activation, Sandbox, SandboxConfig, Tiering};
use sp2a_tests::{js_component, keygen, policy, run_sp2a, text};

/// A loopback HTTP/1.1 server on its own threads, recording each request
/// as `METHOD PATH host=HOST`. Paths ending in `/silent` get no answer (the
/// connection is held open), `/huge` a 1 GiB body, anything else
/// `hello from PATH`.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve(stream, &log));
            }
        });
        Self { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut host = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("host")
        {
            host = value.trim().to_owned();
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    seen.lock()
        .unwrap()
        .push(format!("{method} {path} host={host}"));
    let mut stream = stream;
    if path.ends_with("/silent") {
        std::thread::sleep(Duration::from_secs(30));
    } else if path.ends_with("/huge") {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n");
        let chunk = vec![b'x'; 64 << 10];
        while stream.write_all(&chunk).is_ok() {}
    } else {
        let body = format!("hello from {path}");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// The fixture's manifest, its HTTP grant moved to `port`, with `edit`
/// applied to the text.
fn js_manifest(port: u16, edit: impl Fn(String) -> String) -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/js-web/rps.xml");
    let text = std::fs::read_to_string(path).unwrap().replace(
        "http://127.0.0.1:8080/greetings/",
        &format!("http://127.0.0.1:{port}/greetings/"),
    );
    Manifest::parse(edit(text).as_bytes()).unwrap()
}

/// The JavaScript service activated (self-test passed) with `manifest`,
/// on a node whose policy grants HTTP to 127.0.0.1 on any port. The
/// baseline compiler only: these tests are about what the code does.
async fn activate_js(manifest: &Manifest, grants: &str) -> (Activation, tempfile::TempDir) {
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let policy = policy(&key, data.path(), grants);
    let component = std::fs::read(js_component()).unwrap();
    let package = pack(component, manifest, &key).unwrap();
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 4,
        tiering: Tiering::BaselineOnly,
        ..SandboxConfig::default()
    })
    .unwrap();
    let service = activate(&sandbox, &policy, package.into_inner())
        .await
        .unwrap_or_else(|e| panic!("activation: {e}"));
    (service.activation, data)
}

const GRANT_LOOPBACK: &str = "http = [\"http://127.0.0.1:*/\"]";

/// The service's answer to `fetch-text(url)` and what the sandbox refused.
async fn fetch_and_refusals(activation: &Activation, url: &str) -> (String, Vec<String>) {
    let outcome = activation
        .invoke(&format!("fetch-text({url:?})"))
        .await
        .unwrap_or_else(|e| panic!("fetch {url}: {e}"));
    (outcome.value, outcome.refused)
}

async fn fetch(activation: &Activation, url: &str) -> String {
    let (answer, refused) = fetch_and_refusals(activation, url).await;
    assert!(refused.is_empty(), "{url}: {refused:?}");
    answer
}

#[test]
fn a_javascript_component_packs_audits_passes_its_self_test_and_answers() {
    let component = js_component();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let publisher = keygen(dir);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/js-web/rps.xml");
    let out = run_sp2a(
        dir,
        &[
            "pack",
            component.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--key",
            "key.pem",
            "-o",
            "js-web.rps",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "pack: {stdout}{stderr}");

    let policy = |grants: &str| {
        format!(
            "[trust]\npublishers = [\"{publisher}\"]\n[grants]\nclocks = true\nrandom = true\n{grants}\n"
        )
    };
    std::fs::write(dir.join("policy.toml"), policy(GRANT_LOOPBACK)).unwrap();
    let out = run_sp2a(dir, &["audit", "js-web.rps", "--policy", "policy.toml"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "audit: {stdout}{stderr}");
    for expected in [
        "HTTP requests to http://127.0.0.1:8080/greetings/",
        "wasi:http/outgoing-handler@0.2",
        "requests only to granted URLs",
        "verdict: WOULD ACTIVATE",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in {stdout}");
    }

    // `call` activates the package (its self-test included), then calls.
    let out = run_sp2a(
        dir,
        &[
            "call",
            "js-web.rps",
            "greet(\"cli\")",
            "--policy",
            "policy.toml",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "call: {stderr}");
    assert_eq!(
        stdout.trim(),
        "\"Hello, cli! This is js-web 0.1.0, in JavaScript.\""
    );

    // A refused request: the service answers with its error, and the
    // command says what the sandbox refused and why.
    let out = run_sp2a(
        dir,
        &[
            "call",
            "js-web.rps",
            "fetch-text(\"http://127.0.0.1:8080/admin\")",
            "--policy",
            "policy.toml",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "call: {stderr}");
    assert!(stdout.starts_with("err(\"fetch failed"), "{stdout}");
    assert!(
        stderr.contains("refused by the sandbox: HTTP GET http://127.0.0.1:8080/admin: not under a granted URL (http://127.0.0.1:8080/greetings/)"),
        "{stderr}"
    );

    // A node that grants no HTTP refuses the package, and says why.
    std::fs::write(dir.join("policy.toml"), policy("")).unwrap();
    let out = run_sp2a(dir, &["audit", "js-web.rps", "--policy", "policy.toml"]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    assert!(
        stdout.contains("requests HTTP to http://127.0.0.1:8080/greetings/, which this node's policy does not grant"),
        "{stdout}"
    );
}

/// A grant names a host, and a host name reaches only the internet: a
/// name that resolves to this host (here through a hosts file of the
/// test's own, in a mount namespace of its own, answering as a rebinding
/// DNS server would) is refused before any connection, while the same
/// server is reached under `localhost`, which names this host itself.
#[test]
fn a_granted_host_name_that_resolves_to_loopback_does_not_reach_it() {
    let server = Server::start();
    let port = server.port;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let publisher = keygen(dir);
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/js-web/rps.xml"),
    )
    .unwrap()
    .replace(
        r#"<http url="http://127.0.0.1:8080/greetings/"/>"#,
        &format!(
            r#"<http url="http://granted.test:{port}/greetings/"/><http url="http://localhost:{port}/greetings/"/>"#
        ),
    );
    std::fs::write(dir.join("rps.xml"), manifest).unwrap();
    let out = run_sp2a(
        dir,
        &[
            "pack",
            js_component().to_str().unwrap(),
            "--manifest",
            "rps.xml",
            "--key",
            "key.pem",
            "-o",
            "web.rps",
        ],
    );
    assert!(out.status.success(), "pack: {:?}", text(&out));
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "[trust]\npublishers = [\"{publisher}\"]\n[grants]\nclocks = true\nrandom = true\n\
             http = [\"http://granted.test:*/\", \"http://localhost:*/\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("hosts"),
        "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 granted.test\n",
    )
    .unwrap();
    let call = |url: String| {
        let out = std::process::Command::new("unshare")
            .current_dir(dir)
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(dir.join("hosts"))
            .arg(sp2a_tests::sp2a_bin())
            .args(["call", "web.rps", &format!("fetch-text({url:?})")])
            .args(["--policy", "policy.toml"])
            .env_remove("RUST_LOG")
            .output()
            .expect("unshare (util-linux) runs the call in a mount namespace of its own");
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{url}: {stdout}{stderr}");
        (stdout, stderr)
    };

    let url = format!("http://granted.test:{port}/greetings/hi");
    let (stdout, stderr) = call(url.clone());
    assert!(stdout.starts_with("err(\"fetch failed"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "refused by the sandbox: HTTP GET {url}: granted.test resolves only to addresses off the internet (127.0.0.1)"
        )),
        "{stderr}"
    );
    assert!(server.seen().is_empty(), "{:?}", server.seen());

    let (stdout, _) = call(format!("http://localhost:{port}/greetings/hi"));
    assert_eq!(stdout.trim(), "ok(\"200 hello from /greetings/hi\")");
    assert_eq!(
        server.seen(),
        [format!("GET /greetings/hi host=localhost:{port}")]
    );
}

#[tokio::test]
async fn fetch_reaches_a_granted_loopback_server() {
    let server = Server::start();
    let (activation, _data) = activate_js(&js_manifest(server.port, |t| t), GRANT_LOOPBACK).await;
    let port = server.port;
    assert_eq!(
        fetch(
            &activation,
            &format!("http://127.0.0.1:{port}/greetings/hi")
        )
        .await,
        "ok(\"200 hello from /greetings/hi\")"
    );
    // The query is the service's own business; the path decides.
    assert_eq!(
        fetch(
            &activation,
            &format!("http://127.0.0.1:{port}/greetings/?to=all")
        )
        .await,
        "ok(\"200 hello from /greetings/?to=all\")"
    );
    assert_eq!(
        server.seen(),
        [
            format!("GET /greetings/hi host=127.0.0.1:{port}"),
            format!("GET /greetings/?to=all host=127.0.0.1:{port}"),
        ]
    );
}

#[tokio::test]
async fn fetch_is_refused_outside_its_grant_before_any_connection() {
    let granted = Server::start();
    let other = Server::start();
    let (activation, _data) = activate_js(&js_manifest(granted.port, |t| t), GRANT_LOOPBACK).await;
    let (port, other_port) = (granted.port, other.port);
    let granted_url = format!("http://127.0.0.1:{port}/greetings/");
    let outside = format!("not under a granted URL ({granted_url})");
    for (url, reason) in [
        // Outside the path prefix, on the granted server.
        (format!("http://127.0.0.1:{port}/private"), outside.as_str()),
        (format!("http://127.0.0.1:{port}/greetingsx"), &outside),
        // Another port, another name for the same address, another scheme.
        (
            format!("http://127.0.0.1:{other_port}/greetings/hi"),
            &outside,
        ),
        (format!("http://localhost:{port}/greetings/hi"), &outside),
        (format!("https://127.0.0.1:{port}/greetings/hi"), &outside),
        // Encoded tricks that a server might resolve outside the prefix
        // (fetch() resolves encoded dot segments itself; an encoded slash
        // it leaves to the server, so the sandbox refuses it).
        (
            format!("http://127.0.0.1:{port}/greetings/%2e%2e/private"),
            &outside,
        ),
        (
            format!("http://127.0.0.1:{port}/greetings/..%2fprivate"),
            "encoded slashes or backslashes",
        ),
        // Path parameters (`..;` is `..` to a server in the Tomcat style),
        // double encoding and overlong UTF-8 dots, which fetch() leaves
        // as they are.
        (
            format!("http://127.0.0.1:{port}/greetings/..;/private"),
            "path parameters (';')",
        ),
        (
            format!("http://127.0.0.1:{port}/greetings/%2e%2e;/private"),
            "path parameters (';')",
        ),
        (
            format!("http://127.0.0.1:{port}/greetings/%252e%252e/private"),
            "an encoded '%' (double encoding)",
        ),
        (
            format!("http://127.0.0.1:{port}/greetings/%c0%ae%c0%ae/private"),
            "escapes that are not UTF-8",
        ),
    ] {
        let (answer, refused) = fetch_and_refusals(&activation, &url).await;
        // JavaScript's fetch() reports a bare NetworkError; the outcome
        // says what the sandbox refused and why.
        assert!(answer.starts_with("err(\"fetch failed"), "{url}: {answer}");
        assert_eq!(refused.len(), 1, "{url}: {refused:?}");
        assert!(
            refused[0].starts_with("HTTP GET ") && refused[0].ends_with(reason),
            "{url}: {refused:?}"
        );
    }
    assert!(granted.seen().is_empty(), "{:?}", granted.seen());
    assert!(other.seen().is_empty(), "{:?}", other.seen());

    // The manifest may ask only for what the policy covers.
    let key = SecretKey::generate();
    let data = tempfile::tempdir().unwrap();
    let narrow = policy(&key, data.path(), "http = [\"http://127.0.0.1:*/other/\"]");
    let component = std::fs::read(js_component()).unwrap();
    let package = pack(component, &js_manifest(port, |t| t), &key).unwrap();
    let refusals = narrow.admit(package.advert()).unwrap_err();
    assert_eq!(
        refusals.0.iter().map(|r| r.kind()).collect::<Vec<_>>(),
        ["http"],
        "{refusals:?}"
    );
}

#[tokio::test]
async fn a_request_lives_within_the_calls_deadline_and_memory() {
    let server = Server::start();
    let manifest = js_manifest(server.port, |t| {
        t.replace("<time-per-call>5s", "<time-per-call>1s")
    });
    let (activation, _data) = activate_js(&manifest, GRANT_LOOPBACK).await;
    let port = server.port;

    // A server that never answers: the call ends at its deadline.
    let start = Instant::now();
    let outcome = activation
        .invoke(&format!(
            "fetch-text(\"http://127.0.0.1:{port}/greetings/silent\")"
        ))
        .await;
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "took {elapsed:?}: {outcome:?}"
    );
    match outcome {
        Ok(done) => assert!(done.value.starts_with("err("), "{}", done.value),
        Err(e) => assert_eq!(e.kind(), "deadline", "{e}"),
    }

    // A body larger than the memory limit: the guest cannot hold it.
    let outcome = activation
        .invoke(&format!(
            "fetch-text(\"http://127.0.0.1:{port}/greetings/huge\")"
        ))
        .await;
    match outcome {
        Err(e) => assert!(matches!(e.kind(), "memory" | "deadline"), "{e}"),
        Ok(done) => panic!("a 1 GiB body fitted in 64 MiB: {}", &done.value[..80]),
    }
    // The service still answers.
    assert_eq!(
        fetch(
            &activation,
            &format!("http://127.0.0.1:{port}/greetings/again")
        )
        .await,
        "ok(\"200 hello from /greetings/again\")"
    );
}
