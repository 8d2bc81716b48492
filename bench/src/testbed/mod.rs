//! `sp2a bench testbed`: the diffusion experiment of [`crate::diffusion`]
//! with every node as its own `sp2a node` process in its own network
//! namespace, on a bridge, each uplink shaped by the kernel (a token bucket
//! on the node's veth) instead of the node's own rate limiter. This is how
//! an operator rehearses a deployment on one machine, and the check that
//! the in-process experiment measures what separate hosts would see: each
//! testbed run is followed by the in-process run with the same parameters,
//! and the two are compared.
//!
//! The command builds the namespaces ([`netns`]), writes each node a
//! configuration file (the in-process run's settings, transcribed), starts
//! the seed and the N nodes, waits until every node has met a peer and the
//! network has settled, asks every node through its control socket to pull
//! the package at the same moment, and collects each node's reply (discovery,
//! download and deploy times, sources) and counters. CPU and memory are the
//! node processes' own (`/proc/<pid>`). Everything is torn down at the end,
//! on an error and on Ctrl-C; `--clean` removes what a killed run left.

pub mod homes;
pub mod netns;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::stream::{FuturesUnordered, StreamExt};
use sp2a::blocks::BLOCK_SIZE;
use sp2a::net::{Multiaddr, PeerId};
use sp2a::node::control::{self, ControlReply, ControlRequest};
use sp2a::node::{Counters, NodeConfig, Status, Strategy};
use sp2a::package::units::{format_duration, format_size, parse_duration, parse_size};
use sp2a::package::{ContentId, SecretKey, VerifiedPackage};
use sp2a::policy::Policy;
use sp2a::sandbox::{Sandbox, SandboxConfig};

use crate::diffusion::report::{self, ModeArg, TransportArg, seconds};
use crate::diffusion::{
    Cost, Experiment, Mode, NodeRecord, Outcome, PEER_CONNECTIONS, SEED_SPARE_CONNECTIONS,
    Transport, lower_bound, node_config,
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Downloaders; a comma-separated list runs each in turn.
    #[arg(long, default_value = "50,100", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Package size; default: the `stream` service (2 MiB media sample).
    #[arg(long)]
    size: Option<String>,
    /// Chunk (request) size, a multiple of 16 KiB.
    #[arg(long, default_value = "64 KiB")]
    chunk: String,
    /// Upload rate of every node, seed included, enforced by the kernel on
    /// the node's link. The default is slow enough that 100 node processes
    /// on two cores are not CPU-bound.
    #[arg(long, default_value = "64 KiB")]
    upload_rate: String,
    /// How long a packet may wait in an uplink's queue before the kernel
    /// drops it (a modem's buffer).
    #[arg(long, default_value = "1s")]
    queue: String,
    /// How each uplink's queue is served.
    #[arg(long, value_enum, default_value_t = netns::Queueing::SmallFirst)]
    queueing: netns::Queueing,
    /// The nodes' own upload limit (`upload.rate`), as a share of the
    /// link's rate, as an operator sets it a little below the line's speed
    /// so that the modem's queue stays empty; 0: no limit in the node, the
    /// kernel's link alone paces it (answers then wait in socket buffers and
    /// the modem's queue, and requests time out: see the README).
    #[arg(long, default_value_t = 0.95)]
    node_rate: f64,
    /// No shaping in the kernel: the nodes' own limit (`--node-rate`, a
    /// share of `--upload-rate`) alone paces them, as in the in-process run;
    /// separates what processes cost from what real links do.
    #[arg(long)]
    no_shaping: bool,
    /// Swarm, paper, or both (`all`).
    #[arg(long, value_enum, default_value_t = ModeArg::Swarm)]
    mode: ModeArg,
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
    /// Give up on a node after this long.
    #[arg(long, default_value = "10m")]
    timeout: String,
    /// Timeout of a first request to a provider (doubling per retry);
    /// default as in `sp2a bench diffusion`.
    #[arg(long)]
    attempt_timeout: Option<String>,
    /// One node in this many is a DHT server, the others DHT clients.
    #[arg(long, default_value_t = 10)]
    dht_server_every: usize,
    /// Skip the in-process run with the same parameters.
    #[arg(long)]
    no_compare: bool,
    /// The `services/` directory (manifests and built components).
    #[arg(long, default_value = "services")]
    services: PathBuf,
    /// Where to write the CSV and SVG files.
    #[arg(long, default_value = "testbed-results")]
    out: PathBuf,
    /// Remove the namespaces (and the processes in them) that a killed run
    /// left behind, and exit.
    #[arg(long)]
    clean: bool,
}

/// How far the testbed's T_all may be from the in-process run's.
const AGREEMENT: f64 = 0.20;

/// How long a node process may take to open its control socket, and to
/// meet its first peer (the seed's shaped uplink carries every newcomer's
/// handshake and DHT bootstrap).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Node processes started at once (each loads the runtime, opens its store
/// and greets the seed).
const START_BATCH: usize = 10;

pub async fn run(options: Options) -> anyhow::Result<ExitCode> {
    if options.clean {
        let removed = netns::clean()?;
        println!("removed {removed} testbed namespace(s)");
        return Ok(ExitCode::SUCCESS);
    }
    netns::preflight()?;
    let rate = parse_size(&options.upload_rate)?;
    let queue = parse_duration(&options.queue)?;
    anyhow::ensure!(
        (0.0..=1.0).contains(&options.node_rate),
        "--node-rate is a share of the link's rate, 0 to 1"
    );
    let chunk = parse_size(&options.chunk)?;
    anyhow::ensure!(
        chunk >= BLOCK_SIZE && chunk % BLOCK_SIZE == 0 && chunk / BLOCK_SIZE <= 64,
        "--chunk must be a multiple of 16 KiB, at most 1 MiB"
    );
    anyhow::ensure!(
        options
            .nodes
            .iter()
            .all(|&n| (1..netns::MAX_HOSTS).contains(&n)),
        "--nodes: 1 to {} each",
        netns::MAX_HOSTS - 1
    );
    let timeout = parse_duration(&options.timeout)?;
    let attempt_timeout = options
        .attempt_timeout
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let modes = match options.mode {
        ModeArg::Swarm => vec![Mode::Swarm],
        ModeArg::Paper => vec![Mode::Paper],
        ModeArg::Origin => vec![Mode::Origin],
        ModeArg::All => vec![Mode::Swarm, Mode::Paper],
    };
    let exe = std::env::current_exe().context("cannot find the sp2a executable")?;
    let key = SecretKey::generate();
    let package = report::package(&options.services, options.size.as_deref(), &key)?;
    let policy_text = format!("[trust]\npublishers = [\"{}\"]\n", key.public());
    let policy = Policy::parse(&policy_text, Path::new("."))?;
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 256,
        ..SandboxConfig::default()
    })?;
    let size = package.advert().component_len();
    let k = size.div_ceil(chunk);
    std::fs::create_dir_all(&options.out)?;
    let scratch_root = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };

    let mut pairs: Vec<(Outcome, Option<Outcome>)> = Vec::new();
    for &nodes in &options.nodes {
        for &mode in &modes {
            let scratch = tempfile::Builder::new()
                .prefix("sp2a-testbed-")
                .tempdir_in(&scratch_root)?;
            let experiment = Experiment {
                nodes,
                mode,
                upload_rate: Some(rate),
                blocks_per_request: (chunk / BLOCK_SIZE) as u32,
                timeout,
                attempt_timeout: attempt_timeout.unwrap_or(report::attempt_timeout(mode)),
                data_dir: scratch.path().to_path_buf(),
                transport: options.transport.into(),
                dht_server_every: options.dht_server_every,
            };
            let own_limit = if options.node_rate > 0.0 {
                format!("{:.0}% of it", options.node_rate * 100.0)
            } else {
                "none".into()
            };
            let links = if options.no_shaping {
                format!("uplinks not shaped (nodes' own limit: {own_limit})")
            } else {
                format!(
                    "uplinks shaped by the kernel ({:?}, queue {}; nodes' own limit: {own_limit})",
                    options.queueing,
                    format_duration(queue)
                )
            };
            println!(
                "\ntestbed: 1 seed -> {nodes} node processes in network namespaces, {} ({size} bytes) in k = {k} chunks of {}, \
                 {}/s, {links}, mode {}",
                package.manifest().name,
                format_size(chunk),
                format_size(rate),
                mode.name()
            );
            println!(
                "lower bound T* = {:.2} s",
                seconds(lower_bound(size, rate, nodes, k))
            );
            let testbed = Testbed {
                experiment: experiment.clone(),
                link: netns::Link {
                    rate: (!options.no_shaping).then_some(rate),
                    queue,
                    queueing: options.queueing,
                },
                exe: exe.clone(),
                policy: policy_text.clone(),
                node_rate: options.node_rate,
            };
            // Ctrl-C ends the run through the same teardown as an error.
            let outcome = tokio::select! {
                outcome = testbed.run(&package) => outcome?,
                _ = wait_for_signal() => bail!("interrupted; the testbed was torn down"),
            };
            report_counters(&outcome);
            report::write_csv(&options.out, &outcome, "-processes")?;
            let in_process = if options.no_compare {
                None
            } else {
                let scratch = tempfile::tempdir_in(&scratch_root)?;
                let experiment = Experiment {
                    data_dir: scratch.path().to_path_buf(),
                    ..experiment
                };
                println!("\nthe same experiment in one process (in-process rate limiter):");
                let outcome = report::run_one(experiment, &sandbox, &policy, &package).await?;
                report::write_csv(&options.out, &outcome, "")?;
                Some(outcome)
            };
            let group: Vec<Outcome> = [Some(outcome.clone()), in_process.clone()]
                .into_iter()
                .flatten()
                .collect();
            crate::plot::diffusion(&options.out, &group, &format!("-{}", mode.name()))?;
            pairs.push((outcome, in_process));
        }
    }
    let all: Vec<Outcome> = pairs
        .iter()
        .flat_map(|(t, i)| [Some(t.clone()), i.clone()])
        .flatten()
        .collect();
    report::summary(&all, k);
    println!(
        "(processes rows: CPU of the node processes, memory their proportional set size, \
         shared pages split between them)"
    );
    let agree = compare(&pairs, k);
    println!("CSV and SVG plots in {}", options.out.display());
    let complete = all.iter().all(|o| o.all_done.is_some());
    Ok(if complete && agree {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints each testbed run next to its in-process twin; true when every
/// pair's T_all agrees within [`AGREEMENT`].
fn compare(pairs: &[(Outcome, Option<Outcome>)], k: u64) -> bool {
    println!();
    println!("testbed (processes, kernel-shaped links) against in-process (same parameters):");
    println!(
        "  {:<6} {:>5} {:>8} {:>14} {:>14} {:>8} {:>16} {:>16}  verdict (T_all within {:.0}%)",
        "mode",
        "N",
        "T*",
        "T_all testbed",
        "T_all in-proc",
        "ratio",
        "p50 done testbd",
        "p50 done in-prc",
        AGREEMENT * 100.0
    );
    let mut agree = true;
    for (testbed, in_process) in pairs {
        let Some(in_process) = in_process else {
            continue;
        };
        let t = testbed.all_done.map(seconds);
        let i = in_process.all_done.map(seconds);
        let ratio = t.zip(i).map(|(t, i)| t / i);
        let within = ratio.is_some_and(|r| (r - 1.0).abs() <= AGREEMENT);
        agree &= within;
        let show = |v: Option<f64>| v.map_or("failed".into(), |v| format!("{v:.2} s"));
        println!(
            "  {:<6} {:>5} {:>6.2} s {:>14} {:>14} {:>8} {:>14.2} s {:>14.2} s  {}",
            testbed.experiment.mode.name(),
            testbed.nodes.len(),
            seconds(report::t_star(testbed, k)),
            show(t),
            show(i),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
            median_completion(testbed),
            median_completion(in_process),
            if within { "agree" } else { "DISAGREE" }
        );
    }
    agree
}

fn median_completion(o: &Outcome) -> f64 {
    let mut done: Vec<f64> = o
        .nodes
        .iter()
        .filter_map(|n| n.completed.map(seconds))
        .collect();
    report::p50(&mut done)
}

fn report_counters(o: &Outcome) {
    let c = &o.counters;
    println!(
        "  {} of {} nodes active providers; setup took {:.1} s (not measured); \
         requests served: {} ({} answered Busy, {} with data), {:.1} MiB uploaded in all",
        o.completed(),
        o.nodes.len(),
        seconds(o.setup),
        c.transfer_requests,
        c.busy,
        c.answers_with_data,
        c.bytes_uploaded as f64 / (1 << 20) as f64
    );
    if let Some(error) = o.nodes.iter().find_map(|n| n.error.clone()) {
        println!("  first failure: {error}");
    }
}

/// One testbed run's setting.
struct Testbed {
    experiment: Experiment,
    link: netns::Link,
    exe: PathBuf,
    /// The nodes' policy file.
    policy: String,
    /// The nodes' own upload limit, a share of the link's rate (0: none).
    node_rate: f64,
}

/// A node process in its namespace.
struct NodeProcess {
    child: tokio::process::Child,
    pid: u32,
    data_dir: PathBuf,
    log: PathBuf,
}

impl NodeProcess {
    fn cpu(&self) -> Option<Duration> {
        crate::diffusion::cpu_time(format!("/proc/{}/stat", self.pid))
    }

    /// Proportional set size: the process's own memory plus its share of
    /// pages shared with others (the executable, libraries), KiB.
    fn pss_kib(&self) -> Option<u64> {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid)).ok()?;
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    async fn status(&self) -> anyhow::Result<Status> {
        match control::request(&self.data_dir, &ControlRequest::Status, |_| {}).await? {
            ControlReply::Status(status) => Ok(*status),
            other => bail!("unexpected reply to status: {other:?}"),
        }
    }

    /// Waits until the node answers on its control socket; fails with the
    /// end of its log if it exits first.
    async fn ready(&mut self) -> anyhow::Result<Status> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(exit) = self.child.try_wait()? {
                bail!(
                    "the node in {} exited ({exit}) before it was ready:\n{}",
                    self.data_dir.display(),
                    log_tail(&self.log)
                );
            }
            if let Ok(status) = self.status().await {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "the node in {} did not open its control socket within {START_TIMEOUT:?}:\n{}",
                    self.data_dir.display(),
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The last lines of a node's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The CPU time of `processes` together, if it can be read for all.
fn cpu_of(processes: &[NodeProcess]) -> Option<Duration> {
    processes.iter().map(NodeProcess::cpu).sum()
}

impl Testbed {
    async fn run(&self, package: &VerifiedPackage) -> anyhow::Result<Outcome> {
        let setup_start = Instant::now();
        let n = self.experiment.nodes;
        let dir = &self.experiment.data_dir;
        let network = netns::Network::create(n + 1, self.link)?;
        let package_path = dir.join("package.rps");
        std::fs::write(&package_path, package.clone().into_inner().to_bytes())?;
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, &self.policy)?;
        let shared = Shared {
            package: package_path,
            policy: policy_path,
            compile_cache: dir.join("compile-cache"),
        };

        // The seed first: everyone bootstraps from it.
        let mut seed = self.start(&network, 0, &[], &shared)?;
        let seed_status = seed.ready().await?;
        let seed_id: PeerId = seed_status.peer_id.parse()?;
        let bootstrap = self
            .listen_address(&network, 0)
            .with_p2p(seed_id)
            .map_err(|a| anyhow::anyhow!("cannot add the seed's peer id to its address {a}"))?;
        let mut nodes: Vec<NodeProcess> = Vec::with_capacity(n);
        let mut peers = Vec::with_capacity(n);
        for batch in (1..=n).collect::<Vec<_>>().chunks(START_BATCH) {
            let mut started = Vec::new();
            for &index in batch {
                started.push(self.start(
                    &network,
                    index,
                    std::slice::from_ref(&bootstrap),
                    &shared,
                )?);
            }
            // The next batch starts once this one has met the network: a
            // hundred handshakes at once through the seed's shaped uplink
            // time out.
            for node in &mut started {
                node.ready().await?;
            }
            for node in &started {
                peers.push(met_a_peer(node).await?);
            }
            nodes.extend(started);
            print!("\r  started {}/{n} node processes ", nodes.len());
            let _ = std::io::stdout().flush();
        }
        println!();
        let all: Vec<&NodeProcess> = nodes.iter().chain([&seed]).collect();
        crate::diffusion::settle(|| all.iter().map(|p| p.cpu()).sum()).await;
        let setup = setup_start.elapsed();

        // Everyone pulls at once.
        let name = package.manifest().name.clone();
        let start = Instant::now();
        let cpu_start = cpu_of(&nodes).zip(seed.cpu()).map(|(a, b)| a + b);
        let mut pulls = FuturesUnordered::new();
        for (i, node) in nodes.iter().enumerate() {
            let request = ControlRequest::Pull {
                target: name.clone(),
            };
            let data_dir = node.data_dir.clone();
            pulls.push(async move {
                let reply = control::request(&data_dir, &request, |_| {}).await;
                (i, reply, start.elapsed())
            });
        }
        let mut results: Vec<Option<(Result<ControlReply, String>, Duration)>> = vec![None; n];
        let mut done = 0;
        let mut rss_peak = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let deadline = tokio::time::sleep(self.experiment.timeout + Duration::from_secs(30));
        tokio::pin!(deadline);
        while done < n {
            tokio::select! {
                Some((i, reply, at)) = pulls.next() => {
                    results[i] = Some((reply.map_err(|e| e.to_string()), at));
                    done += 1;
                }
                _ = tick.tick() => {
                    let rss: u64 = all.iter().filter_map(|p| p.pss_kib()).sum();
                    rss_peak = rss_peak.max(rss);
                    let active = results
                        .iter()
                        .flatten()
                        .filter(|(r, _)| matches!(r, Ok(ControlReply::Pulled { .. })))
                        .count();
                    print!(
                        "\r  t = {:6.1} s   active providers {active:>4}/{n}   node processes' memory {} MiB ",
                        seconds(start.elapsed()),
                        rss >> 10
                    );
                    let _ = std::io::stdout().flush();
                }
                _ = &mut deadline => break,
            }
        }
        let elapsed = start.elapsed();
        println!();
        let cpu = cpu_of(&nodes)
            .zip(seed.cpu())
            .map(|(a, b)| a + b)
            .zip(cpu_start)
            .map_or(Duration::ZERO, |(end, begin)| end.saturating_sub(begin));
        drop(pulls);

        let mut records = Vec::with_capacity(n);
        let mut counters = Counters::default();
        for (i, node) in nodes.iter().enumerate() {
            let status = node.status().await;
            let uploaded = status.as_ref().map_or(0, |s| s.counters.bytes_uploaded);
            if let Ok(status) = &status {
                counters += status.counters;
            }
            let mut record = NodeRecord {
                index: i + 1,
                peer: peers[i],
                discovery: Duration::ZERO,
                download: Duration::ZERO,
                deploy: Duration::ZERO,
                completed: None,
                uploaded,
                served_peers: None,
                sources: Vec::new(),
                content_id: None,
                error: None,
            };
            match results[i].take() {
                Some((
                    Ok(ControlReply::Pulled {
                        discovery_ms,
                        download_ms,
                        deploy_ms,
                        sources,
                        content_id,
                        ..
                    }),
                    at,
                )) => {
                    record.discovery = Duration::from_millis(discovery_ms);
                    record.download = Duration::from_millis(download_ms);
                    record.deploy = Duration::from_millis(deploy_ms);
                    record.completed = Some(at);
                    record.sources = sources.iter().filter_map(|s| s.parse().ok()).collect();
                    record.content_id = content_id.parse::<ContentId>().ok();
                }
                Some((Ok(ControlReply::Error(e)), _)) | Some((Err(e), _)) => record.error = Some(e),
                Some((Ok(other), _)) => record.error = Some(format!("unexpected reply {other:?}")),
                None => record.error = Some("no answer before the timeout".into()),
            }
            records.push(record);
        }
        let seed_status = seed.status().await?;
        counters += seed_status.counters;
        let all_done = records
            .iter()
            .map(|r| r.completed)
            .collect::<Option<Vec<_>>>()
            .and_then(|times| times.into_iter().max());
        // The processes end before their namespaces go (dropping `network`).
        for process in nodes.iter_mut().chain([&mut seed]) {
            let _ = process.child.start_kill();
        }
        for process in nodes.iter_mut().chain([&mut seed]) {
            let _ = process.child.wait().await;
        }
        drop(network);
        Ok(Outcome {
            experiment: self.experiment.clone(),
            size: package.advert().component_len(),
            nodes: records,
            seed_uploaded: seed_status.counters.bytes_uploaded,
            seed_peers: 0,
            all_done,
            setup,
            counters,
            cost: Cost {
                cpu,
                elapsed,
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                rss_before: 0,
                rss_peak,
                first_run: true,
            },
            processes: true,
        })
    }

    /// Where node `index` listens: its own address, the experiment's
    /// transport, a fixed port.
    fn listen_address(&self, network: &netns::Network, index: usize) -> Multiaddr {
        let ip = network.hosts()[index].address;
        match self.experiment.transport {
            Transport::Tcp => format!("/ip4/{ip}/tcp/4001"),
            Transport::Quic => format!("/ip4/{ip}/udp/4001/quic-v1"),
        }
        .parse()
        .expect("valid address")
    }

    /// Writes node `index`'s configuration and starts it in its namespace.
    fn start(
        &self,
        network: &netns::Network,
        index: usize,
        bootstrap: &[Multiaddr],
        shared: &Shared,
    ) -> anyhow::Result<NodeProcess> {
        let connections = if index == 0 {
            self.experiment.nodes as u32 + SEED_SPARE_CONNECTIONS
        } else {
            PEER_CONNECTIONS
        };
        let mut config = node_config(&self.experiment, index, connections);
        config.net.listen = vec![self.listen_address(network, index)];
        config.net.bootstrap = bootstrap.to_vec();
        // The kernel shapes the uplink; the node paces itself only if told.
        config.upload.rate = self
            .experiment
            .upload_rate
            .map(|rate| (rate as f64 * self.node_rate) as u64)
            .filter(|&rate| rate > 0);
        config.policy = Some(shared.policy.clone());
        config.compile_cache = Some(shared.compile_cache.clone());
        if index == 0 {
            config.share = vec![shared.package.clone()];
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let config_path = config.data_dir.join("node.toml");
        std::fs::write(&config_path, config_toml(&config))?;
        let log = config.data_dir.join("node.log");
        let out = std::fs::File::create(&log)?;
        let child = network
            .command(index, &self.exe)
            .arg("node")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn,libp2p_gossipsub=error")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a node process")?;
        let pid = child.id().context("the node process has no id")?;
        Ok(NodeProcess {
            child,
            pid,
            data_dir: config.data_dir,
            log,
        })
    }
}

/// Files every node of a run uses.
struct Shared {
    package: PathBuf,
    policy: PathBuf,
    /// One compile cache for the host's nodes, as one sandbox serves the
    /// in-process run's.
    compile_cache: PathBuf,
}

/// Waits until `node` is connected to a peer; returns its peer id.
async fn met_a_peer(node: &NodeProcess) -> anyhow::Result<PeerId> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let status = node.status().await?;
        if !status.peers.is_empty() {
            return Ok(status.peer_id.parse()?);
        }
        if Instant::now() > deadline {
            bail!(
                "the node in {} met no peer within {START_TIMEOUT:?}:\n{}",
                node.data_dir.display(),
                log_tail(&node.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The settings the diffusion experiment gives a node, as a configuration
/// file for `sp2a node --config` (the unit test checks that reading it back
/// gives the same configuration).
fn config_toml(c: &NodeConfig) -> String {
    let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let path = |p: &Path| text(&p.display().to_string());
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    let duration = |d: Duration| text(&format_duration(d));
    let mut t = String::new();
    let _ = writeln!(t, "data-dir = {}", path(&c.data_dir));
    if let Some(policy) = &c.policy {
        let _ = writeln!(t, "policy = {}", path(policy));
    }
    let _ = writeln!(
        t,
        "share = {}",
        list(c.share.iter().map(|p| path(p)).collect())
    );
    if let Some(cache) = &c.compile_cache {
        let _ = writeln!(t, "compile-cache = {}", path(cache));
    }
    let _ = writeln!(t, "reshare = {}", c.reshare);
    let net = &c.net;
    let addresses = |a: &[Multiaddr]| list(a.iter().map(|a| text(&a.to_string())).collect());
    let _ = writeln!(t, "\n[net]");
    let _ = writeln!(t, "listen = {}", addresses(&net.listen));
    let _ = writeln!(t, "bootstrap = {}", addresses(&net.bootstrap));
    let _ = writeln!(t, "local-addresses = {}", net.local_addresses);
    let _ = writeln!(t, "max-connections = {}", net.max_connections);
    let _ = writeln!(t, "idle-timeout = {}", duration(net.idle_timeout));
    let _ = writeln!(t, "request-timeout = {}", duration(net.request_timeout));
    let _ = writeln!(t, "dht-server = {}", net.dht_server);
    let up = &c.upload;
    let _ = writeln!(t, "\n[upload]");
    let _ = writeln!(t, "max-concurrent = {}", up.max_concurrent);
    if let Some(rate) = up.rate {
        let _ = writeln!(t, "rate = {}", text(&format_size(rate)));
    }
    if let Some(slots) = up.slots {
        let _ = writeln!(t, "slots = {slots}");
    }
    let _ = writeln!(t, "share-partial = {}", up.share_partial);
    let pull = &c.pull;
    let _ = writeln!(t, "\n[pull]");
    let strategy = match pull.strategy {
        Strategy::Swarm => "swarm",
        Strategy::Sequential => "sequential",
    };
    let _ = writeln!(t, "strategy = {}", text(strategy));
    let _ = writeln!(t, "blocks-per-request = {}", pull.blocks_per_request);
    let _ = writeln!(t, "attempt-timeout = {}", duration(pull.base_timeout));
    let _ = writeln!(
        t,
        "max-rediscover-delay = {}",
        duration(pull.max_rediscover_delay)
    );
    let _ = writeln!(t, "timeout = {}", duration(pull.total_timeout));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(mode: Mode, transport: Transport) -> Experiment {
        Experiment {
            nodes: 50,
            mode,
            upload_rate: Some(64 * 1024),
            blocks_per_request: 4,
            timeout: Duration::from_secs(600),
            attempt_timeout: report::attempt_timeout(mode),
            data_dir: PathBuf::from("/tmp/sp2a \"testbed\""),
            transport,
            dht_server_every: 10,
        }
    }

    /// Every setting the experiment gives a node survives the trip through
    /// the configuration file: a setting added to `node_config` but not to
    /// `config_toml` fails here.
    #[test]
    fn the_configuration_file_carries_every_experiment_setting() {
        for mode in [Mode::Swarm, Mode::Paper, Mode::Origin] {
            for transport in [Transport::Tcp, Transport::Quic] {
                for index in [0, 1, 10] {
                    let mut config = node_config(&experiment(mode, transport), index, 40);
                    config.net.bootstrap = vec![
                        "/ip4/10.77.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                            .parse()
                            .unwrap(),
                    ];
                    config.policy = Some(PathBuf::from("/tmp/policy.toml"));
                    config.compile_cache = Some(PathBuf::from("/tmp/cache"));
                    config.share = vec![PathBuf::from("/tmp/package.rps")];
                    let text = config_toml(&config);
                    let read = NodeConfig::from_toml(&text, Path::new("/elsewhere"))
                        .unwrap_or_else(|e| panic!("{e}\n{text}"));
                    assert_eq!(format!("{read:?}"), format!("{config:?}"), "{text}");
                }
            }
        }
    }
}
