//! The node dashboard (`sp2a node --dashboard ADDR`) in a real browser:
//! headless Chromium, driven over WebDriver by chromedriver (Debian's
//! `chromium` and `chromium-driver` packages, which `./run test` installs
//! as root), loads the page of a running node and finds a shared service
//! and a completed pull on it; the screenshot is saved as
//! `docs/dashboard.png`. Without the browser this test fails, it does not
//! skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sp2a_tests::{NodeProcess, run_sp2a, text, write_packages_and_policy};

/// The W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

fn find_program(names: &[&str]) -> String {
    for name in names {
        if let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            && out.status.success()
        {
            return String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
    }
    panic!(
        "none of {names:?} is installed: the dashboard test needs Chromium and its WebDriver \
         (Debian: apt-get install chromium chromium-driver; `./run test` installs them as root)"
    )
}

impl Browser {
    fn start() -> Self {
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
        let chromedriver = find_program(&["chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .agent
                .get(format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|r| r.into_body().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let session = browser.command(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000"],
                },
            }}}),
        );
        browser.session = session["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// One WebDriver command; its `value`, or a panic with the error.
    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = match path.starts_with("/session/") || path == "/session" {
            true => format!("{}{path}", self.base),
            false => format!("{}/session/{}{path}", self.base, self.session),
        };
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(&body),
        }
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let value: Value = response.into_body().read_json().unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    /// The rendered text of the first element `css` selects.
    fn text(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        let id = found[ELEMENT].as_str().expect("an element");
        self.command("GET", &format!("/element/{id}/text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The computed value of a style `property` of the first element `css`
    /// selects.
    fn style(&self, css: &str, property: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        let id = found[ELEMENT].as_str().expect("an element");
        self.command("GET", &format!("/element/{id}/css/{property}"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the text of `css` contains every one of `needles`.
    fn wait_for(&self, css: &str, needles: &[&str]) -> String {
        self.wait_until(css, &format!("{needles:?}"), |text| {
            needles.iter().all(|n| text.contains(n))
        })
    }

    /// Waits until the text of `css` satisfies `shows` (described by `what`).
    fn wait_until(&self, css: &str, what: &str, shows: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text(css);
            if shows(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {what}; it shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn screenshot(&self) -> Vec<u8> {
        let png = self.command("GET", "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 text"))
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The dashboard URL a node printed.
fn dashboard_url(node: &NodeProcess) -> String {
    node.printed
        .iter()
        .find_map(|l| l.strip_prefix("dashboard on "))
        .expect("the node prints where its dashboard is")
        .to_owned()
}

#[test]
fn the_dashboard_shows_a_shared_service_and_a_completed_pull_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let provider = NodeProcess::start(
        dir,
        "provider",
        &["--policy", "policy.toml", "--share", "hello.rps"],
    );
    let node = NodeProcess::start(
        dir,
        "watched",
        &[
            "--policy",
            "policy.toml",
            "--share",
            "stream.rps",
            "--bootstrap",
            &provider.address,
            "--dashboard",
            "127.0.0.1:0",
        ],
    );
    let browser = Browser::start();
    browser.open(&dashboard_url(&node));
    // The shared service, pinned here, and the node's own share event.
    browser.wait_for("#services", &["stream 0.1.0", "pinned"]);
    browser.wait_for("#events", &["shared stream 0.1.0"]);
    browser.wait_for("#peers", &[provider.address.rsplit('/').next().unwrap()]);

    // A pull while the page is open: it appears without a reload.
    let out = run_sp2a(dir, &["pull", "hello", "--data-dir", node.data_dir()]);
    assert!(out.status.success(), "{:?}", text(&out));
    browser.wait_for(
        "#events",
        &["pull of hello started", "downloaded hello", "pulled hello"],
    );
    // A replica now, with the provider lookup's count: the provider and us.
    browser.wait_until("#services", "hello as a replica of 2 providers", |text| {
        text.lines()
            .any(|l| l.starts_with("hello 0.1.0 replica") && l.contains(" 2 "))
    });
    browser.wait_for("#audits", &["hello 0.1.0", "stream 0.1.0", "imports ("]);
    let png = browser.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
    std::fs::write(&docs, &png).unwrap();
}

/// Beyond loopback every request needs the token: the page names its
/// style and script with it, so a browser given the printed URL loads
/// them and the script reaches the node.
#[test]
fn the_dashboard_beyond_loopback_loads_its_style_and_script_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let node = NodeProcess::start(
        dir,
        "open",
        &[
            "--policy",
            "policy.toml",
            "--share",
            "stream.rps",
            "--dashboard",
            "0.0.0.0:0",
        ],
    );
    // Reached on loopback, as a wildcard listener is.
    let url = dashboard_url(&node).replace("http://0.0.0.0:", "http://127.0.0.1:");
    assert!(url.contains("/?token="), "{url}");
    let browser = Browser::start();
    browser.open(&url);
    browser.wait_for("#services", &["stream 0.1.0", "pinned"]);
    assert_eq!(
        browser.style("header", "background-color"),
        "rgba(29, 42, 58, 1)",
        "the style sheet loaded"
    );
    assert!(!browser.text("#updated").contains("cannot reach"));
}

/// A raw HTTP GET: the status line.
fn status_of(address: &str, path: &str, host: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn the_dashboard_beyond_loopback_needs_its_token_and_on_loopback_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    // Bound to every interface: a token is made and printed.
    let open = NodeProcess::start(
        dir,
        "open",
        &["--policy", "policy.toml", "--dashboard", "0.0.0.0:0"],
    );
    let url = dashboard_url(&open);
    let (address, token) = url
        .strip_prefix("http://0.0.0.0:")
        .and_then(|rest| rest.split_once("/?token="))
        .map(|(port, token)| (format!("127.0.0.1:{port}"), token.to_owned()))
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 32, "{token}");
    for path in [
        "/",
        "/api/state",
        "/app.js",
        &format!("/?token={}", &token[..31]),
    ] {
        assert!(
            status_of(&address, path, &address).contains(" 401 "),
            "{path}"
        );
    }
    for path in [
        format!("/?token={token}"),
        format!("/api/state?token={token}"),
        format!("/app.js?token={token}"),
        format!("/app.css?token={token}"),
    ] {
        assert!(
            status_of(&address, &path, &address).contains(" 200 "),
            "{path}"
        );
    }

    // On loopback no token, but only for requests to this host.
    let local = NodeProcess::start(
        dir,
        "local",
        &["--policy", "policy.toml", "--dashboard", "127.0.0.1:0"],
    );
    let url = dashboard_url(&local);
    let address = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap()
        .to_owned();
    assert!(status_of(&address, "/api/state", &address).contains(" 200 "));
    assert!(
        status_of(&address, "/api/state", "attacker.example:80").contains(" 421 "),
        "a rebound name is refused"
    );
}
