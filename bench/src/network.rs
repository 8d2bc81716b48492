//! `sp2a bench network`: two nodes on loopback: pull time of the 2 MiB
//! `stream` package against the same bytes over plain TCP, remote call
//! latency against a local call and against the same text as a plain TCP
//! request/response, call throughput, and node memory; each target of the
//! data path is printed next to what was measured.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use sp2a::package::SecretKey;
use sp2a::policy::Policy;
use sp2a::sandbox::{Sandbox, SandboxConfig};

use crate::{median, micros, millis, percentile};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `services/` directory (manifests and built components).
    #[arg(long, default_value = "services")]
    services: PathBuf,
    /// Pulls to time.
    #[arg(long, default_value_t = 15)]
    pulls: usize,
    /// Sequential remote calls to time.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Concurrent callers for the throughput measurement.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

pub async fn run(args: Options) -> anyhow::Result<ExitCode> {
    use sp2a::node::{Node, NodeConfig};

    let dir = tempfile::tempdir()?;
    let key = SecretKey::generate();
    let stream = crate::services::pack(&args.services, "stream", &key, dir.path())?;
    let hello = crate::services::pack(&args.services, "hello", &key, dir.path())?;
    let policy = Policy::parse(
        &format!("[trust]\npublishers = [\"{}\"]\n", key.public()),
        dir.path(),
    )?;
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 256,
        ..SandboxConfig::default()
    })?;
    let mut counter = 0;
    let mut node = |bootstrap: Vec<sp2a::net::Multiaddr>, sandbox: &Sandbox| {
        counter += 1;
        let mut config = NodeConfig::new(dir.path().join(format!("node-{counter}")));
        config.net.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")];
        config.net.local_addresses = true;
        config.net.bootstrap = bootstrap;
        config.max_invocations_per_service = 256;
        let policy = policy.clone();
        let sandbox = sandbox.clone();
        async move {
            let node = Node::start(config.clone(), policy, sandbox).await?;
            for address in &config.net.bootstrap {
                node.dial(address.clone()).await?;
            }
            anyhow::Ok(node)
        }
    };
    let provider = node(Vec::new(), &sandbox).await?;
    provider.share(stream.clone().into_inner()).await?;
    provider.share(hello.clone().into_inner()).await?;
    let bootstrap = provider.addresses().await;
    let size = stream.advert().component_len();
    println!(
        "package: stream, {size} bytes ({:.2} MiB)",
        size as f64 / (1 << 20) as f64
    );

    // Pull, each time by a fresh consumer node with a cold sandbox of its
    // own (no compile cache), as a node on another machine would.
    let mut total = Vec::new();
    let mut discovery = Vec::new();
    let mut download = Vec::new();
    let mut compile = Vec::new();
    let mut activation = Vec::new();
    for run in 0..args.pulls.max(2) {
        let cold = Sandbox::new(SandboxConfig {
            max_instances: 16,
            ..SandboxConfig::default()
        })?;
        let consumer = node(bootstrap.clone(), &cold).await?;
        let start = Instant::now();
        let pulled = consumer
            .pull("stream")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let elapsed = start.elapsed();
        let compiled = consumer
            .service("stream")
            .context("the pulled service is not active")?
            .activation
            .compiled()
            .clone();
        anyhow::ensure!(
            compiled.source == sp2a::sandbox::executor::CompileSource::Compiled,
            "the consumer did not compile the component ({:?})",
            compiled.source
        );
        // The first run warms up connections.
        if run > 0 {
            total.push(elapsed);
            discovery.push(pulled.discovery);
            download.push(pulled.download);
            compile.push(compiled.elapsed);
            activation.push(
                pulled
                    .deploy
                    .saturating_sub(pulled.discovery + pulled.download + compiled.elapsed),
            );
        }
        consumer.shutdown().await;
    }

    // Baseline: the same bytes over a plain loopback TCP connection.
    let mut tcp = Vec::new();
    let payload = stream.component().to_vec();
    for _ in 0..args.pulls.max(2) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let data = payload.clone();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            tokio::io::AsyncWriteExt::write_all(&mut socket, &data).await?;
            std::io::Result::Ok(())
        });
        let start = Instant::now();
        let mut socket = tokio::net::TcpStream::connect(address).await?;
        let mut received = Vec::with_capacity(payload.len());
        tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut received).await?;
        tcp.push(start.elapsed());
        server.await??;
        anyhow::ensure!(received.len() == payload.len());
    }

    // Remote calls: a consumer that never downloads the service.
    let caller = node(bootstrap.clone(), &sandbox).await?;
    let call = "greet(\"bench\")";
    let answer = caller.invoke_remote("hello", call).await?.value;
    let mut remote = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let start = Instant::now();
        caller.invoke_remote("hello", call).await?;
        remote.push(start.elapsed());
    }
    // Baseline: the same call and answer text, length-prefixed, over one
    // plain loopback TCP connection kept open (as the nodes' connection is).
    let tcp_calls = tcp_request_response(call.as_bytes(), answer.as_bytes(), args.calls).await?;
    let mut remote_tcp = tcp_calls;
    let mut local = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let start = Instant::now();
        provider.invoke_local("hello", call).await?;
        local.push(start.elapsed());
    }
    let throughput_window = Duration::from_secs(3);
    let started = Instant::now();
    let deadline = started + throughput_window;
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let caller = caller.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                caller.invoke_remote("hello", call).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut calls = 0;
    for worker in workers {
        calls += worker.await??;
    }
    // Calls that started before the deadline finish after it: divide by
    // the time they all took, not by the nominal window.
    let calls_per_second = calls as f64 / started.elapsed().as_secs_f64();
    caller.shutdown().await;
    provider.shutdown().await;

    // Memory of an idle node: a separate `sp2a node` process.
    let idle = node_rss(dir.path(), &[]).await?;
    let stream_path = dir.path().join("stream.rps");
    let providing = node_rss(
        dir.path(),
        &["--share", stream_path.to_str().unwrap_or_default()],
    )
    .await?;

    println!();
    println!("{:<52} {:>12} {:>12}", "measurement", "median", "p90");
    println!(
        "{:<52} {:>12} {:>12}",
        "pull 2 MiB, two nodes (find+advert+download+activate)",
        millis(median(&mut total)),
        millis(percentile(&mut total, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "  of which discovery (DHT + signed advert)",
        millis(median(&mut discovery)),
        millis(percentile(&mut discovery, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "  of which download (every block verified)",
        millis(median(&mut download)),
        millis(percentile(&mut download, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "  of which compile (a cold sandbox of its own)",
        millis(median(&mut compile)),
        millis(percentile(&mut compile, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "  of which verify+audit+self-test+store+announce",
        millis(median(&mut activation)),
        millis(percentile(&mut activation, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "baseline: same bytes over plain loopback TCP",
        millis(median(&mut tcp)),
        millis(percentile(&mut tcp, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "remote call round trip (hello.greet)",
        micros(median(&mut remote)),
        micros(percentile(&mut remote, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "baseline: same text as request/response over TCP",
        micros(median(&mut remote_tcp)),
        micros(percentile(&mut remote_tcp, 0.9))
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "baseline: local call on the provider",
        micros(median(&mut local)),
        micros(percentile(&mut local, 0.9))
    );
    println!(
        "{:<52} {:>12.0}",
        format!(
            "remote calls per second ({} concurrent callers)",
            args.concurrency
        ),
        calls_per_second
    );
    println!(
        "{:<52} {:>9} MiB",
        "idle node memory (RSS, separate process)",
        idle >> 10
    );
    println!(
        "{:<52} {:>9} MiB",
        "node providing the 2 MiB stream service (RSS)",
        providing >> 10
    );

    println!();
    println!("targets:");
    let line = |what: &str, target: &str, measured: String, met: bool| {
        let verdict = if met { "met" } else { "MISSED" };
        println!("  {what:<48} {target:>10} {measured:>10}  {verdict}");
    };
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let download = ratio(median(&mut download), median(&mut tcp));
    line(
        "2 MiB download / plain TCP",
        "<= 5x",
        format!("{download:.1}x"),
        download <= 5.0,
    );
    let round_trip = ratio(median(&mut remote), median(&mut remote_tcp));
    line(
        "remote call round trip / TCP request-response",
        "<= 4x",
        format!("{round_trip:.1}x"),
        round_trip <= 4.0,
    );
    line(
        &format!("remote calls per second, {} callers", args.concurrency),
        ">= 15000",
        format!("{calls_per_second:.0}"),
        calls_per_second >= 15000.0,
    );
    Ok(ExitCode::SUCCESS)
}

/// Round trips of `request` answered by `response`, each length-prefixed,
/// over one loopback TCP connection with Nagle off.
async fn tcp_request_response(
    request: &[u8],
    response: &[u8],
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read_frame(
        socket: &mut tokio::net::TcpStream,
        into: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let len = socket.read_u32().await? as usize;
        into.resize(len, 0);
        socket.read_exact(into).await?;
        Ok(())
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let answer = response.to_vec();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buffer = Vec::new();
        loop {
            if read_frame(&mut socket, &mut buffer).await.is_err() {
                return std::io::Result::Ok(());
            }
            let mut frame = Vec::with_capacity(4 + answer.len());
            frame.extend_from_slice(&(answer.len() as u32).to_be_bytes());
            frame.extend_from_slice(&answer);
            socket.write_all(&frame).await?;
        }
    });
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    socket.set_nodelay(true)?;
    let mut frame = Vec::with_capacity(4 + request.len());
    frame.extend_from_slice(&(request.len() as u32).to_be_bytes());
    frame.extend_from_slice(request);
    let mut buffer = Vec::new();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds.max(1) + 1 {
        let start = Instant::now();
        socket.write_all(&frame).await?;
        read_frame(&mut socket, &mut buffer).await?;
        // The first round trip warms up the connection.
        if round > 0 {
            samples.push(start.elapsed());
        }
        anyhow::ensure!(buffer == response, "the baseline server answered wrongly");
    }
    drop(socket);
    server.await??;
    Ok(samples)
}

/// Starts `sp2a node` as a separate process and reads its resident memory
/// (KiB) two seconds after it is ready.
async fn node_rss(dir: &std::path::Path, extra: &[&str]) -> anyhow::Result<u64> {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir_in(dir)?;
    let policy = dir.join("bench-policy.toml");
    let publisher = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "rps"))
        .and_then(|e| sp2a::package::Package::read_file(&e.path()).ok())
        .map(|p| p.advert().publisher().to_string())
        .unwrap_or_default();
    std::fs::write(
        &policy,
        format!("[trust]\npublishers = [\"{publisher}\"]\n"),
    )?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["node", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(data.path())
        .arg("--policy")
        .arg(&policy)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if line == "ready" {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.id().context("the node exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc (Linux only)")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS")?;
    child.kill().await?;
    Ok(rss)
}
