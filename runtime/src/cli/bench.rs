//! `sp2a bench`: benchmarks that print numbers next to a baseline measured in
//! the same run.
//!
//! `sp2a bench local`: compile time, cache-hit activation, instantiation and
//! per-call overhead of the sandbox, against plain wasmtime with no limits
//! (default engine configuration, on-demand allocation, no fuel, no epochs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use sp2a::package::SecretKey;
use sp2a::policy::Policy;
use sp2a::sandbox::{Sandbox, SandboxConfig};
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Single-node sandbox costs: compile, cached activation, instantiate, call.
    Local(LocalArgs),
    /// Two nodes on loopback: pull time of the 2 MiB stream package, remote
    /// call latency and throughput, memory of an idle node.
    Network(NetworkArgs),
    /// The paper's experiment: 1 seed, N nodes pull at once (swarm, paper,
    /// origin), against the uplink-sharing lower bound; CSV and SVG plots.
    Diffusion(super::diffusion::Args),
}

#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
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

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// The `services/` directory (manifests and built components).
    #[arg(long, default_value = "services")]
    services: PathBuf,
    /// The service to measure.
    #[arg(long, default_value = "checksum")]
    service: String,
    /// The call to time.
    #[arg(long, default_value = "blake3-text(\"sp2a\")")]
    call: String,
    /// Iterations for the per-call measurements.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Local(args) => local(args).await,
        Command::Network(args) => network(args).await,
        Command::Diffusion(args) => super::diffusion::run_bench(args).await,
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

struct Plain {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

async fn local(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let key = SecretKey::generate();
    let package = super::demo::pack_service(&args.services, &args.service, &key, dir.path())?;
    let mut policy = Policy::parse(
        &format!(
            "[trust]\npublishers = [\"{}\"]\n[grants]\nclocks = true\nrandom = true\n",
            key.public()
        ),
        dir.path(),
    )
    .map_err(anyhow::Error::msg)?;
    policy.limits.max_instances = 16;
    let evaluation = policy.evaluate(package.manifest(), &key.public());
    anyhow::ensure!(
        evaluation.refusals.is_empty(),
        "refused: {:?}",
        evaluation.refusals
    );
    let grants = evaluation.grants;
    let component_bytes = package.component().len();
    println!(
        "service {} ({} bytes of component), call {}",
        args.service, component_bytes, args.call
    );

    // Compile (cold): a fresh sandbox each time, no caches.
    let mut compile = Vec::new();
    for _ in 0..5 {
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: 16,
            ..SandboxConfig::default()
        })?;
        let package = package.clone();
        let compiled = tokio::task::spawn_blocking(move || sandbox.compile(&package)).await??;
        compile.push(compiled.elapsed);
    }
    let compile = median(&mut compile);

    // Activation with a warm disk cache: a fresh sandbox (as after a
    // restart) that finds the artifact this node compiled before.
    let cache = dir.path().join("cache");
    let config = SandboxConfig {
        max_instances: 16,
        cache_dir: Some(cache.clone()),
        ..SandboxConfig::default()
    };
    Sandbox::new(config.clone())?
        .activate(&package, grants.clone())
        .await?;
    let mut cached = Vec::new();
    let mut load_only = Vec::new();
    let mut activation = None;
    for _ in 0..10 {
        let sandbox = Sandbox::new(config.clone())?;
        let start = Instant::now();
        let active = sandbox.activate(&package, grants.clone()).await?;
        cached.push(start.elapsed());
        anyhow::ensure!(
            active.compiled().source == sp2a::sandbox::executor::CompileSource::DiskCache,
            "expected a disk-cache hit, got {:?}",
            active.compiled().source
        );
        load_only.push(active.compiled().elapsed);
        activation = Some(active);
    }
    let cached = median(&mut cached);
    let load_only = median(&mut load_only);
    let activation = activation.context("no activation")?;

    // Full invoke: WAVE parse, fresh store + instance, limits, call, WAVE print.
    let func = activation.resolve(&call_name(&args.call)?)?.clone();
    let params = {
        let parsed = wasmtime::component::wasm_wave::untyped::UntypedFuncCall::parse(&args.call)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        parsed
            .to_wasm_params::<Val>(func.params.iter().map(|(_, t)| t))
            .map_err(|e| anyhow::anyhow!("{e}"))?
    };
    for _ in 0..100 {
        activation.invoke(&args.call).await?;
    }
    let mut invoke = Vec::with_capacity(args.iterations as usize);
    let mut typed = Vec::with_capacity(args.iterations as usize);
    for _ in 0..args.iterations {
        let start = Instant::now();
        activation.invoke(&args.call).await?;
        invoke.push(start.elapsed());
        let start = Instant::now();
        activation.call(&func, &params).await?;
        typed.push(start.elapsed());
    }
    let invoke = median(&mut invoke);
    let typed = median(&mut typed);

    // Baseline: plain wasmtime, default configuration, no limits.
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    let bytes = package.component().to_vec();
    let engine2 = engine.clone();
    let component = tokio::task::spawn_blocking(move || Component::new(&engine2, &bytes))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plain_compile = start.elapsed();
    let mut linker = Linker::<Plain>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
    sp2a_host_stubs(&mut linker)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let interface = func.interface.clone();
    let index = match &interface {
        Some(i) => component
            .get_export_index(None, i)
            .and_then(|i| component.get_export_index(Some(&i), &func.name)),
        None => component.get_export_index(None, &func.name),
    }
    .context("export not found in the baseline")?;
    let new_store = || {
        Store::new(
            &engine,
            Plain {
                ctx: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        )
    };
    let mut plain_instantiate = Vec::new();
    let mut plain_call = Vec::new();
    let mut plain_total = Vec::new();
    let mut results = vec![Val::Bool(false); func.results.len()];
    for _ in 0..args.iterations {
        let total = Instant::now();
        let mut store = new_store();
        let start = Instant::now();
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plain_instantiate.push(start.elapsed());
        let f = instance.get_func(&mut store, index).context("no func")?;
        let start = Instant::now();
        f.call_async(&mut store, &params, &mut results)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plain_call.push(start.elapsed());
        plain_total.push(total.elapsed());
    }
    let plain_instantiate = median(&mut plain_instantiate);
    let plain_call = median(&mut plain_call);
    let plain_total = median(&mut plain_total);
    // The same split for sp2a: instantiate in a limited store, then call.
    let (sp2a_instantiate, sp2a_call) = activation
        .time_phases(&func, &params, args.iterations)
        .await?;

    println!();
    println!(
        "{:<44} {:>14} {:>18}",
        "measurement (median)", "sp2a", "plain wasmtime"
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "compile (cold, no cache)",
        format!("{:.1} ms", compile.as_secs_f64() * 1e3),
        format!("{:.1} ms", plain_compile.as_secs_f64() * 1e3)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "activation, disk-cache hit (load+audit+link)",
        micros(cached),
        "-"
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "  of which artifact load (MAC + deserialize)",
        micros(load_only),
        "-"
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "instantiate (fresh store per call)",
        micros(sp2a_instantiate),
        micros(plain_instantiate)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "call only (typed values)",
        micros(sp2a_call),
        micros(plain_call)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "new store + instantiate + call (typed)",
        micros(typed),
        micros(plain_total)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "invoke with WAVE text in/out",
        micros(invoke),
        "-"
    );
    println!();
    println!(
        "per-call overhead of sp2a over plain wasmtime (WAVE invoke vs plain store+instantiate+call): {:+.1} us",
        (invoke.as_secs_f64() - plain_total.as_secs_f64()) * 1e6
    );
    println!(
        "cache-hit activation is {:.0}x faster than compiling",
        compile.as_secs_f64() / cached.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn call_name(call: &str) -> anyhow::Result<String> {
    let parsed = wasmtime::component::wasm_wave::untyped::UntypedFuncCall::parse(call)
        .map_err(|e| anyhow::anyhow!("cannot parse {call:?}: {e}"))?;
    Ok(parsed.name().to_owned())
}

/// The baseline links the sp2a host interfaces as no-ops so that services
/// that import them can be instantiated by plain wasmtime.
fn sp2a_host_stubs(linker: &mut Linker<Plain>) -> anyhow::Result<()> {
    let err = |e: wasmtime::Error| anyhow::anyhow!("{e}");
    let mut log = linker.instance("sp2a:rps/log@0.1.0").map_err(err)?;
    log.func_new("log", |_, _, _, _| Ok(())).map_err(err)?;
    let mut host = linker.instance("sp2a:rps/host@0.1.0").map_err(err)?;
    host.func_new("service", |_, _, _, results| {
        results[0] = Val::Record(vec![
            ("name".into(), Val::String("baseline".into())),
            ("version".into(), Val::String("0.0.0".into())),
            ("content-id".into(), Val::String(String::new())),
        ]);
        Ok(())
    })
    .map_err(err)?;
    Ok(())
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

async fn network(args: NetworkArgs) -> anyhow::Result<ExitCode> {
    use sp2a::node::{Node, NodeConfig};

    let dir = tempfile::tempdir()?;
    let key = SecretKey::generate();
    let stream = super::demo::pack_service(&args.services, "stream", &key, dir.path())?;
    let hello = super::demo::pack_service(&args.services, "hello", &key, dir.path())?;
    let policy = Policy::parse(
        &format!("[trust]\npublishers = [\"{}\"]\n", key.public()),
        dir.path(),
    )
    .map_err(anyhow::Error::msg)?;
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 256,
        ..SandboxConfig::default()
    })?;
    let mut counter = 0;
    let mut node = |bootstrap: Vec<sp2a::net::Multiaddr>| {
        counter += 1;
        let mut config = NodeConfig::new(dir.path().join(format!("node-{counter}")));
        config.net.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")];
        config.net.bootstrap = bootstrap;
        config.max_invocations_per_service = 256;
        let policy = policy.clone();
        let sandbox = sandbox.clone();
        async move {
            let node = Node::start(config.clone(), policy, sandbox).await?;
            for address in &config.net.bootstrap {
                node.dial(address.clone())
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            anyhow::Ok(node)
        }
    };
    let provider = node(Vec::new()).await?;
    provider.share(stream.clone().into_inner()).await?;
    provider.share(hello.clone().into_inner()).await?;
    let bootstrap = provider.addresses().await;
    let size = stream.advert().component_len();
    println!(
        "package: stream, {size} bytes ({:.2} MiB)",
        size as f64 / (1 << 20) as f64
    );

    // Pull, each time by a fresh consumer node. The first activation
    // compiles; later ones hit the in-process compile cache.
    let mut total = Vec::new();
    let mut discovery = Vec::new();
    let mut download = Vec::new();
    let mut activation = Vec::new();
    for run in 0..args.pulls.max(2) {
        let consumer = node(bootstrap.clone()).await?;
        let start = Instant::now();
        let pulled = consumer
            .pull("stream")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let elapsed = start.elapsed();
        // The first run warms up connections and caches.
        if run > 0 {
            total.push(elapsed);
            discovery.push(pulled.discovery);
            download.push(pulled.download);
            activation.push(
                pulled
                    .deploy
                    .saturating_sub(pulled.discovery + pulled.download),
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
    let caller = node(bootstrap.clone()).await?;
    let call = "greet(\"bench\")";
    caller.invoke_remote("hello", call).await?;
    let mut remote = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let start = Instant::now();
        caller.invoke_remote("hello", call).await?;
        remote.push(start.elapsed());
    }
    let mut local = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let start = Instant::now();
        provider.invoke_local("hello", call).await?;
        local.push(start.elapsed());
    }
    let throughput_window = Duration::from_secs(3);
    let deadline = Instant::now() + throughput_window;
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
    let calls_per_second = calls as f64 / throughput_window.as_secs_f64();
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
    Ok(ExitCode::SUCCESS)
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
