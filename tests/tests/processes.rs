//! Separate `sp2a node` processes on loopback, driven through the CLI:
//! find, pull, local and remote calls, status, clean shutdown and restart,
//! and a node killed in the middle of a download.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sp2a_tests::{NodeProcess, run_sp2a, sp2a_bin, text, write_packages_and_policy};

fn sp2a_ok(dir: &Path, args: &[&str]) -> String {
    let out = run_sp2a(dir, args);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "sp2a {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn nodes_in_separate_processes_find_pull_and_call_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let provider = NodeProcess::start(
        dir,
        "provider",
        &["--policy", "policy.toml", "--share", "hello.rps"],
    );
    let consumer = NodeProcess::start(
        dir,
        "consumer",
        &["--policy", "policy.toml", "--bootstrap", &provider.address],
    );
    let data = consumer.data_dir().to_owned();

    let found = sp2a_ok(dir, &["find", "hello", "--data-dir", &data]);
    assert!(found.contains("1 provider(s) of hello"), "{found}");
    assert!(found.contains("trusted"), "{found}");

    let remote = sp2a_ok(
        dir,
        &[
            "call",
            "hello",
            "greet(\"remote\")",
            "--remote",
            "--data-dir",
            &data,
        ],
    );
    assert_eq!(remote.trim(), "\"Hello, remote!\"");
    // The caller judged the provider it called.
    let provider_id = provider.address.rsplit('/').next().unwrap();
    let judged = sp2a_ok(dir, &["reputation", "hello", "--data-dir", &data]);
    assert!(judged.contains(provider_id), "{judged}");
    assert!(judged.contains("accuracy checks"), "{judged}");
    let judged = sp2a_ok(dir, &["reputation", "hello", "--data-dir", &data, "--json"]);
    // The call, and the check of a provider's first answer (one of the
    // manifest's self-tests sent as a call) once that has run.
    assert!(
        judged.contains("\"calls\": 1") || judged.contains("\"calls\": 2"),
        "{judged}"
    );
    let out = run_sp2a(dir, &["reputation", "../x", "--data-dir", &data]);
    assert!(!out.status.success());
    // Not pulled yet: a local call is refused.
    let out = run_sp2a(dir, &["call", "hello", "greet(\"x\")", "--data-dir", &data]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("does not run service \"hello\""),
        "{:?}",
        text(&out)
    );

    let pulled = sp2a_ok(dir, &["pull", "hello", "--data-dir", &data]);
    assert!(pulled.contains("pulled hello"), "{pulled}");
    assert!(pulled.contains("this node now provides hello"), "{pulled}");
    let local = sp2a_ok(
        dir,
        &["call", "hello", "greet(\"local\")", "--data-dir", &data],
    );
    assert_eq!(local.trim(), "\"Hello, local!\"");

    let status = sp2a_ok(dir, &["status", "--data-dir", &data, "--json"]);
    assert!(status.contains("\"name\": \"hello\""), "{status}");

    // A short-lived node of the CLI's own finds both providers now. It
    // learns of the consumer's loopback address from the provider, so it
    // must be in local mode to dial it (without mDNS here).
    std::fs::write(dir.join("local.toml"), "[net]\nlocal-addresses = true\n").unwrap();
    let found = sp2a_ok(
        dir,
        &[
            "find",
            "hello",
            "--config",
            "local.toml",
            "--bootstrap",
            &provider.address,
            "--policy",
            "policy.toml",
        ],
    );
    assert!(found.contains("2 provider(s) of hello"), "{found}");

    // Only the operator can reach the control socket.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let socket = consumer.data_dir.join("control.sock");
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(&consumer.data_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    // Ctrl-C: clean shutdown; a restart re-activates and re-announces.
    let data_dir = consumer.data_dir.clone();
    let status = consumer.interrupt();
    assert!(status.success(), "{status:?}");
    assert!(!data_dir.join("control.sock").exists());
    let consumer = NodeProcess::start(
        dir,
        "consumer",
        &["--policy", "policy.toml", "--bootstrap", &provider.address],
    );
    let status = sp2a_ok(dir, &["status", "--data-dir", consumer.data_dir()]);
    assert!(status.contains("hello 0.1.0"), "{status}");
}

/// A plain HTTP/1.1 GET: the status line, the headers and the body.
fn http_get(address: &str, path: &str) -> (String, String, String) {
    http_get_as(address, path, address)
}

/// [`http_get`] naming `host` in the `Host` header.
fn http_get_as(address: &str, path: &str, host: &str) -> (String, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

/// The value of the sample `name` (a metric with its labels) in an
/// OpenMetrics text, or 0 when absent.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// The metrics URL a node printed, as `host:port`.
fn metrics_address(node: &NodeProcess) -> String {
    node.printed
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .and_then(|url| url.strip_suffix("/metrics"))
        .expect("the node prints where its metrics are")
        .to_owned()
}

#[test]
fn metrics_count_a_services_calls_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let node = NodeProcess::start(
        dir,
        "metered",
        &[
            "--policy",
            "policy.toml",
            "--share",
            "hello.rps",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let address = &metrics_address(&node);
    let ok_calls = |body: &str| sample(body, r#"sp2a_calls_total{service="hello",outcome="ok"}"#);
    let (status, headers, before) = http_get(address, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("application/openmetrics-text"),
        "{headers}"
    );
    assert!(before.ends_with("# EOF\n"), "{before}");
    assert!(before.contains("sp2a_services 1"), "{before}");
    for _ in 0..3 {
        sp2a_ok(
            dir,
            &[
                "call",
                "hello",
                "greet(\"m\")",
                "--data-dir",
                node.data_dir(),
            ],
        );
    }
    let (_, _, after) = http_get(address, "/metrics");
    assert_eq!(ok_calls(&after), ok_calls(&before) + 3.0, "{after}");
    assert!(
        after.contains(r#"sp2a_call_duration_seconds_count{service="hello"} "#),
        "{after}"
    );
    // Only /metrics, and only reading.
    let (status, _, _) = http_get(address, "/status");
    assert!(status.contains("404"), "{status}");
    // A web page that rebinds a name of its own to loopback gets nothing.
    let port = address.rsplit(':').next().unwrap();
    let (status, _, body) = http_get_as(address, "/metrics", &format!("evil.example:{port}"));
    assert!(status.contains("421"), "{status}");
    assert!(!body.contains("sp2a_"), "{body}");
    let (status, _, _) = http_get_as(address, "/metrics", &format!("localhost:{port}"));
    assert!(status.contains("200"), "{status}");
}

#[test]
fn metrics_show_a_pull_its_stages_events_and_libp2ps_own_counts() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let provider = NodeProcess::start(
        dir,
        "provider",
        &["--policy", "policy.toml", "--share", "hello.rps"],
    );
    let consumer = NodeProcess::start(
        dir,
        "consumer",
        &[
            "--policy",
            "policy.toml",
            "--bootstrap",
            &provider.address,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let address = metrics_address(&consumer);
    let (_, _, before) = http_get(&address, "/metrics");
    assert_eq!(sample(&before, r#"sp2a_pulls_total{outcome="ok"}"#), 0.0);
    sp2a_ok(dir, &["pull", "hello", "--data-dir", consumer.data_dir()]);
    let (_, _, after) = http_get(&address, "/metrics");
    let size = std::fs::metadata(sp2a_tests::guests_dir().join("hello.wasm"))
        .unwrap()
        .len() as f64;
    for (name, expected) in [
        (r#"sp2a_pulls_total{outcome="ok"}"#, 1.0),
        (
            r#"sp2a_pull_stage_duration_seconds_count{stage="discovery"}"#,
            1.0,
        ),
        (
            r#"sp2a_pull_stage_duration_seconds_count{stage="download"}"#,
            1.0,
        ),
        (
            r#"sp2a_pull_stage_duration_seconds_count{stage="deploy"}"#,
            1.0,
        ),
        ("sp2a_downloaded_bytes_total", size),
        // Every 16 KiB block, from a provider that sends good data.
        ("sp2a_blocks_verified_total", (size / 16384.0).ceil()),
        ("sp2a_blocks_rejected_total", 0.0),
        (r#"sp2a_events_total{event="pull-started"}"#, 1.0),
        (r#"sp2a_events_total{event="pulled"}"#, 1.0),
        (r#"sp2a_events_total{event="shared"}"#, 1.0),
    ] {
        assert_eq!(sample(&after, name), expected, "{name} in {after}");
    }
    // libp2p's own: the download's bytes came in over TCP, the provider
    // lookup was a Kademlia query, and the node dialled its bootstrap peer.
    let inbound = sample(
        &after,
        r#"sp2a_libp2p_bandwidth_bytes_total{protocols="/ip4/tcp/p2p",direction="Inbound"}"#,
    );
    assert!(inbound > size, "{inbound} bytes in: {after}");
    for name in [
        "sp2a_libp2p_kad_query_result_get_providers_ok_count",
        r#"sp2a_libp2p_kad_query_result_num_requests_count{type="GetProviders"}"#,
        r#"sp2a_libp2p_swarm_connections_established_total{role="Dialer",protocols="/ip4/tcp/p2p"}"#,
    ] {
        assert!(sample(&after, name) >= 1.0, "{name} in {after}");
    }
}

#[test]
fn a_bootstrap_peer_named_by_host_name_in_the_config_file_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let provider = NodeProcess::start(
        dir,
        "provider",
        &["--policy", "policy.toml", "--share", "hello.rps"],
    );
    // The provider's address with its host named, as a config file would
    // name a bootstrap node on the internet: resolved by the system's
    // resolver (here from the hosts file).
    let named = provider
        .address
        .replacen("/ip4/127.0.0.1/", "/dns4/localhost/", 1);
    assert!(named.starts_with("/dns4/localhost/tcp/"), "{named}");
    std::fs::write(
        dir.join("named.toml"),
        format!("policy = \"policy.toml\"\n[net]\nbootstrap = [\"{named}\"]\n"),
    )
    .unwrap();
    let consumer = NodeProcess::start(dir, "consumer", &["--config", "named.toml"]);
    let pulled = sp2a_ok(dir, &["pull", "hello", "--data-dir", consumer.data_dir()]);
    assert!(pulled.contains("pulled hello"), "{pulled}");
}

/// A node sharing `stream` with its uplink limited to `rate` per second.
fn slow_stream_provider(dir: &Path, rate: &str) -> NodeProcess {
    let config = format!(
        "policy = \"policy.toml\"\nshare = [\"stream.rps\"]\n[upload]\nrate = \"{rate}\"\n"
    );
    std::fs::write(dir.join("slow.toml"), config).unwrap();
    NodeProcess::start(dir, "provider", &["--config", "slow.toml"])
}

#[test]
fn a_node_killed_mid_download_restarts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    // A provider with a slow uplink: the 2 MiB download takes half a minute.
    let provider = slow_stream_provider(dir, "64 KiB");
    let mut consumer = NodeProcess::start(
        dir,
        "consumer",
        &["--policy", "policy.toml", "--bootstrap", &provider.address],
    );
    let data = consumer.data_dir().to_owned();
    let pull = Command::new(sp2a_bin())
        .current_dir(dir)
        .args(["pull", "stream", "--data-dir", &data])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the transfer is under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = sp2a_ok(dir, &["status", "--data-dir", &data, "--json"]);
        if status.contains("\"stage\": \"Downloading\"") && !status.contains("\"bytes\": 0,") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the download did not start: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Crash: SIGKILL, no chance to clean up.
    consumer.kill();
    let out = pull.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the pull cannot succeed on a dead node"
    );

    let store = consumer.data_dir.join("store");
    let stored: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rps"))
        .collect();
    assert!(
        stored.is_empty(),
        "nothing partial or unverified was stored"
    );
    drop(consumer);

    // The restarted node (stale socket and all) comes up clean: no service,
    // no transfer, an empty temporary directory.
    let consumer = NodeProcess::start(dir, "consumer", &["--policy", "policy.toml"]);
    let status = sp2a_ok(
        dir,
        &["status", "--data-dir", consumer.data_dir(), "--json"],
    );
    assert!(status.contains("\"services\": []"), "{status}");
    assert!(status.contains("\"transfers\": []"), "{status}");
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    drop(provider);
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// libp2p's CBOR codec, except that responses are never read: the
/// request's stream stays open with the provider's answer unread.
#[derive(Clone, Default)]
struct NeverReads(
    libp2p::request_response::cbor::codec::Codec<
        sp2a::net::protocol::TransferRequest,
        sp2a::net::protocol::TransferResponse,
    >,
);

impl libp2p::request_response::Codec for NeverReads {
    type Protocol = libp2p::StreamProtocol;
    type Request = sp2a::net::protocol::TransferRequest;
    type Response = sp2a::net::protocol::TransferResponse;

    async fn read_request<T>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
    ) -> std::io::Result<Self::Request>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.0.read_request(p, io).await
    }

    async fn read_response<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
    ) -> std::io::Result<Self::Response>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        futures::future::pending().await
    }

    async fn write_request<T>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
        request: Self::Request,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.0.write_request(p, io, request).await
    }

    async fn write_response<T>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
        response: Self::Response,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.0.write_response(p, io, response).await
    }
}

/// A peer that sends transfer requests to the provider at `address` and
/// never reads the answers ([`NeverReads`]).
struct Stubborn {
    swarm: libp2p::Swarm<libp2p::request_response::Behaviour<NeverReads>>,
    provider: sp2a::net::PeerId,
    content_id: [u8; 32],
}

impl Stubborn {
    async fn connect(address: &str, content_id: [u8; 32]) -> Self {
        use libp2p::request_response::{self, ProtocolSupport};
        let (provider, address) = sp2a::net::split_peer_address(&address.parse().unwrap()).unwrap();
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    NeverReads::default(),
                    [(
                        libp2p::StreamProtocol::new(sp2a::net::protocol::TRANSFER_PROTOCOL),
                        ProtocolSupport::Outbound,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(120))
                        .with_max_concurrent_streams(1024),
                )
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        swarm.add_peer_address(provider, address);
        swarm.dial(provider).unwrap();
        let mut stubborn = Self {
            swarm,
            provider,
            content_id,
        };
        stubborn.run_for(Duration::from_secs(2)).await;
        stubborn
    }

    /// Asks for 64 blocks (1 MiB) `count` times.
    fn ask(&mut self, count: usize) {
        for _ in 0..count {
            let request = sp2a::net::protocol::TransferRequest::Blocks {
                content_id: self.content_id,
                first_block: 0,
                blocks: sp2a::net::protocol::MAX_BLOCKS_PER_REQUEST,
                queue_ms: 0,
            };
            self.swarm
                .behaviour_mut()
                .send_request(&self.provider, request);
        }
    }

    /// Drives the connection (and reads nothing) for `time`.
    async fn run_for(&mut self, time: Duration) {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + time;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.swarm.next()).await {}
    }
}

fn stream_content_id(dir: &Path) -> [u8; 32] {
    sp2a::package::Package::read_file(&dir.join("stream.rps"))
        .unwrap()
        .content_id()
        .0
}

#[test]
fn a_peer_that_never_reads_its_answers_pins_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let provider = NodeProcess::start(
        dir,
        "provider",
        &["--policy", "policy.toml", "--share", "stream.rps"],
    );
    let pid = provider.pid();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut peer = Stubborn::connect(&provider.address, stream_content_id(dir)).await;
        let before = rss(pid);
        // 64 requests of 64 blocks (1 MiB each), the most one connection
        // may have open, answers never read.
        peer.ask(64);
        peer.run_for(Duration::from_secs(5)).await;
        let grown = rss(pid).saturating_sub(before);
        // At most 4 answers per peer wait to be written: about 4 MiB, plus
        // the encoding's copies and allocator slack.
        assert!(grown < 24 << 20, "the provider grew by {} MiB", grown >> 20);
        eprintln!(
            "provider RSS grew by {:.1} MiB",
            grown as f64 / (1 << 20) as f64
        );
    });
}

#[test]
fn answers_a_peer_does_not_read_are_dropped_at_the_request_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    std::fs::write(dir.join("node.toml"), "[net]\nrequest-timeout = \"2s\"\n").unwrap();
    let provider = NodeProcess::start(
        dir,
        "provider",
        &[
            "--config",
            "node.toml",
            "--policy",
            "policy.toml",
            "--share",
            "stream.rps",
        ],
    );
    let data = provider.data_dir().to_owned();
    let busy = || {
        let status = sp2a_ok(dir, &["status", "--json", "--data-dir", &data]);
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["counters"]["busy"].as_u64().unwrap()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut peer = Stubborn::connect(&provider.address, stream_content_id(dir)).await;
        // Four answers wait to be written; the other four are Busy.
        peer.ask(8);
        peer.run_for(Duration::from_secs(1)).await;
        assert_eq!(busy(), 4);
        // Past the deadline the unread answers are dropped, and what they
        // held with them: the peer is served again.
        peer.run_for(Duration::from_secs(3)).await;
        peer.ask(4);
        peer.run_for(Duration::from_secs(1)).await;
        assert_eq!(busy(), 4, "the dropped answers released their places");
    });
}

#[test]
fn a_thousand_peer_ids_connecting_keep_the_node_within_its_memory_bound() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let provider = NodeProcess::start(
        dir,
        "provider",
        &["--policy", "policy.toml", "--share", "hello.rps"],
    );
    let pid = provider.pid();
    let data = provider.data_dir().to_owned();
    let (peer, address) =
        sp2a::net::split_peer_address(&provider.address.parse().unwrap()).unwrap();
    let peers_of_provider = || {
        let status = sp2a_ok(dir, &["status", "--json", "--data-dir", &data]);
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["peers"].as_array().unwrap().len()
    };
    let before = rss(pid);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A thousand peer ids, one connection each, held open for 8 s.
    let swarms: Vec<_> = (0..1000)
        .map(|_| {
            let address = address.clone();
            runtime.spawn(async move {
                let mut swarm = libp2p::SwarmBuilder::with_new_identity()
                    .with_tokio()
                    .with_tcp(
                        libp2p::tcp::Config::default(),
                        libp2p::noise::Config::new,
                        libp2p::yamux::Config::default,
                    )
                    .unwrap()
                    .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
                    .unwrap()
                    .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
                    .build();
                let _ = swarm.dial(
                    libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                        .addresses(vec![address])
                        .build(),
                );
                let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
                while let Ok(Some(_)) = tokio::time::timeout_at(deadline, swarm.next()).await {}
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let connected = peers_of_provider();
    let grown = rss(pid).saturating_sub(before);
    for swarm in swarms {
        runtime.block_on(swarm).unwrap();
    }
    eprintln!(
        "{connected} of 1000 peer ids connected; provider RSS grew by {:.1} MiB",
        grown as f64 / (1 << 20) as f64
    );
    // The connection limit (512) holds, and the connections cost little.
    assert!(connected <= 512, "{connected} connections accepted");
    assert!(
        connected >= 100,
        "only {connected} connected: the test did not load the node"
    );
    assert!(
        grown < 128 << 20,
        "the provider grew by {} MiB",
        grown >> 20
    );
    // The node still answers.
    assert!(peers_of_provider() <= 512);
}

/// Another libp2p implementation's Kademlia client (js-libp2p, speaking
/// the sp2a protocol id) asks a node process for the providers of the
/// service's and the package's CIDs, as `sp2a status` prints them.
/// Needs Node.js and the npm packages of `tests/interop`: `./run interop`.
#[test]
#[ignore = "needs Node.js and tests/interop's npm packages: ./run interop"]
fn a_js_libp2p_kademlia_client_finds_our_provider_records() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let provider = NodeProcess::start(
        dir,
        "provider",
        &["--policy", "policy.toml", "--share", "hello.rps"],
    );
    let status = sp2a_ok(
        dir,
        &["status", "--json", "--data-dir", provider.data_dir()],
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let peer_id = status["peer_id"].as_str().unwrap().to_owned();
    let keys: Vec<String> = status["announcements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "the service and the package");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/find.mjs");
    let find = |cid: &str| -> Vec<String> {
        let out = Command::new("node")
            .arg(&script)
            .arg(&provider.address)
            .arg(cid)
            .output()
            .expect("node (Node.js) runs");
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
    };
    for key in &keys {
        assert_eq!(find(key), vec![peer_id.clone()], "providers of {key}");
    }
    // A CID nobody provides: nobody.
    let nobody = sp2a::net::keys::key_text(&sp2a::net::keys::service_key("nobody-provides-this"));
    assert!(find(&nobody).is_empty());
}

#[test]
fn a_node_killed_mid_download_resumes_from_its_verified_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    // 2 MiB at 256 KiB/s: about 8 s.
    let provider = slow_stream_provider(dir, "256 KiB");
    let size = sp2a::package::Package::read_file(&dir.join("stream.rps"))
        .unwrap()
        .advert()
        .component_len();
    let status_of = |data: &str| -> serde_json::Value {
        let status = sp2a_ok(dir, &["status", "--data-dir", data, "--json"]);
        serde_json::from_str(&status).unwrap()
    };
    let consumer_args = ["--policy", "policy.toml", "--bootstrap", &provider.address];
    let mut consumer = NodeProcess::start(dir, "consumer", &consumer_args);
    let data = consumer.data_dir().to_owned();
    let pull = Command::new(sp2a_bin())
        .current_dir(dir)
        .args(["pull", "stream", "--data-dir", &data])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once half the component is in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status_of(&data);
        let bytes = status["transfers"][0]["bytes"].as_u64().unwrap_or(0);
        if bytes >= size / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the download stalled: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    consumer.kill();
    let _ = { pull }.wait();
    drop(consumer);
    let before = status_of(provider.data_dir())["counters"]["bytes_uploaded"]
        .as_u64()
        .unwrap();

    // Restarted, it fetches only what it did not have.
    let consumer = NodeProcess::start(dir, "consumer", &consumer_args);
    sp2a_ok(dir, &["pull", "stream", "--data-dir", consumer.data_dir()]);
    let after = status_of(provider.data_dir())["counters"]["bytes_uploaded"]
        .as_u64()
        .unwrap();
    let second = after - before;
    eprintln!(
        "uploaded {before} bytes before the kill and {second} after, for a {size}-byte component"
    );
    assert!(
        second < size * 6 / 10,
        "the restarted pull fetched {second} of {size} bytes again"
    );
    assert!(
        before + second >= size,
        "every byte came from the provider once"
    );
    let called = sp2a_ok(
        dir,
        &["status", "--data-dir", consumer.data_dir(), "--json"],
    );
    assert!(called.contains("\"name\": \"stream\""), "{called}");
    assert!(
        !consumer
            .data_dir
            .join("partial")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "the saved blocks are gone once the package is stored"
    );
}

/// The control socket's first line, from a client that sends `request`
/// (or nothing) and then waits.
fn control_reply(socket: &Path, request: Option<&[u8]>) -> (String, Duration) {
    use std::io::{BufRead, Write};
    let started = Instant::now();
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    if let Some(request) = request {
        stream.write_all(request).unwrap();
    }
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    (line, started.elapsed())
}

/// Whatever a client sends, or fails to send, gets an answer: bytes that
/// are not UTF-8, a request that never comes (after 10 s), one client too
/// many (at once); the operator's next command still works.
#[test]
fn the_control_socket_answers_bad_late_and_surplus_clients() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_packages_and_policy(dir);
    let node = NodeProcess::start(dir, "controlled", &["--policy", "policy.toml"]);
    let socket = Path::new(node.data_dir()).join("control.sock");

    let (reply, _) = control_reply(&socket, Some(b"\xff\xfe\"Status\"\n"));
    assert!(reply.contains("not UTF-8"), "{reply}");

    // 64 clients that connect and send nothing hold every slot...
    let idle: Vec<_> = (0..64)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || control_reply(&socket, None))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (reply, took) = control_reply(&socket, Some(b"\"Status\"\n"));
    assert!(reply.contains("64 control connections"), "{reply}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // ... until their 10 s are up: each is told, and closed.
    for client in idle {
        let (reply, took) = client.join().unwrap();
        assert!(reply.contains("no request within 10 s"), "{reply}");
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    let status = sp2a_ok(dir, &["status", "--data-dir", node.data_dir()]);
    assert!(status.contains("peer"), "{status}");
}
