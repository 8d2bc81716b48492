//! `sp2a bench diffusion`: runs the experiment of [`super`] and reports it:
//! a summary against the uplink-sharing lower bound, a CSV of every node
//! and SVG plots mirroring the paper's figures.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sp2a::blocks::BLOCK_SIZE;
use sp2a::package::units::{format_size, parse_duration, parse_size};
use sp2a::package::{SecretKey, VerifiedPackage, pack};
use sp2a::policy::Policy;
use sp2a::sandbox::{Sandbox, SandboxConfig};

use super::{Experiment, Mode, Outcome, Transport, lower_bound, run};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Swarm,
    Paper,
    Origin,
    /// Swarm and paper, same parameters, one after the other.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportArg {
    Tcp,
    Quic,
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Self {
        match arg {
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Quic => Transport::Quic,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Downloaders (the paper: 100, 200, 400); a comma-separated list runs
    /// each in turn (`--nodes 100,400`).
    #[arg(long, default_value = "400", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Package size; default: the `stream` service (2 MiB media sample).
    #[arg(long)]
    size: Option<String>,
    /// Chunk (request) size, a multiple of 16 KiB.
    #[arg(long, default_value = "64 KiB")]
    chunk: String,
    /// Upload rate of every node, seed included; a comma-separated list
    /// sweeps them (`--upload-rate "64 KiB,128 KiB,256 KiB,512 KiB"`), so
    /// that the protocol's efficiency and the machine's saturation show
    /// apart.
    #[arg(long, default_value = "512 KiB", value_delimiter = ',')]
    upload_rate: Vec<String>,
    #[arg(long, value_enum, default_value_t = ModeArg::Swarm)]
    mode: ModeArg,
    /// Give up on a node after this long.
    #[arg(long, default_value = "15m")]
    timeout: String,
    /// Timeout of a first request to a provider (doubling per retry), for
    /// every mode. Default: each mode's best at N = 100 here: 5 s for swarm
    /// (shorter deadlines fail loaded peers: 24 s at 1 s against 13 s),
    /// 0.5 s for paper (the attempts' time also bounds the wait in a
    /// provider's line; 0.25, 0.5, 1, 2 and 5 s took 122, 59, 67, 85 and
    /// 122 s).
    #[arg(long)]
    attempt_timeout: Option<String>,
    /// Transport between the nodes: QUIC shares one UDP socket per node;
    /// TCP needs two file descriptors per connection in this process.
    #[arg(long, value_enum, default_value_t = TransportArg::Quic)]
    transport: TransportArg,
    /// One node in this many is a DHT server, the others DHT clients (as
    /// peers behind NATs are); 1 makes every node a server.
    #[arg(long, default_value_t = 10)]
    dht_server_every: usize,
    /// The `services/` directory (manifests and built components).
    #[arg(long, default_value = "services")]
    services: PathBuf,
    /// Where to write the CSV and SVG files.
    #[arg(long, default_value = "diffusion-results")]
    out: PathBuf,
}

/// Appends a custom section to a component so that it is `size` bytes
/// (a custom section is valid anywhere in a component and changes nothing
/// at run time). The padding is pseudo-random: it does not compress.
fn pad_component(mut bytes: Vec<u8>, size: usize) -> anyhow::Result<Vec<u8>> {
    let name = b"sp2a-padding";
    anyhow::ensure!(
        size > bytes.len() + 32,
        "--size must exceed the base component ({} bytes)",
        bytes.len()
    );
    let payload = size - bytes.len() - 1 - 5 - 1 - name.len();
    let section = 1 + name.len() + payload;
    bytes.push(0);
    // Fixed-width (5-byte) LEB128 length, so the total size is exact.
    let mut len = section as u32;
    for i in 0..5 {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if i < 4 {
            byte |= 0x80;
        }
        bytes.push(byte);
    }
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..payload {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push((state >> 32) as u8);
    }
    Ok(bytes)
}

/// The experiment's package: the `stream` service, or `hello` padded to
/// `size` and renamed `bulk`.
pub(crate) fn package(
    services: &Path,
    size: Option<&str>,
    key: &SecretKey,
) -> anyhow::Result<VerifiedPackage> {
    let read = |name: &str| crate::services::component_and_manifest(services, name);
    Ok(match size {
        None => {
            let (component, manifest) = read("stream")?;
            pack(component, &manifest, key)?
        }
        Some(size) => {
            let size = parse_size(size)? as usize;
            let (component, mut manifest) = read("hello")?;
            manifest.name = "bulk".into();
            pack(pad_component(component, size)?, &manifest, key)?
        }
    })
}

pub(crate) fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) fn p50(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run_bench(args: Options) -> anyhow::Result<ExitCode> {
    let rates = args
        .upload_rate
        .iter()
        .map(|r| parse_size(r.trim()))
        .collect::<Result<Vec<u64>, _>>()?;
    anyhow::ensure!(
        !rates.is_empty() && !args.nodes.is_empty(),
        "--nodes and --upload-rate need at least one value"
    );
    let chunk = parse_size(&args.chunk)?;
    anyhow::ensure!(
        chunk >= BLOCK_SIZE && chunk % BLOCK_SIZE == 0 && chunk / BLOCK_SIZE <= 64,
        "--chunk must be a multiple of 16 KiB, at most 1 MiB"
    );
    let timeout = parse_duration(&args.timeout)?;
    let attempt_timeout = args
        .attempt_timeout
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let key = SecretKey::generate();
    let package = package(&args.services, args.size.as_deref(), &key)?;
    let size = package.advert().component_len();
    let k = size.div_ceil(chunk);
    let policy = Policy::parse(
        &format!("[trust]\npublishers = [\"{}\"]\n", key.public()),
        Path::new("."),
    )?;
    // One sandbox for every node in this process: the component is compiled
    // once, as with a compile cache shared between the nodes of one host.
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 256,
        ..SandboxConfig::default()
    })?;
    let modes: Vec<Mode> = match args.mode {
        ModeArg::Swarm => vec![Mode::Swarm],
        ModeArg::Paper => vec![Mode::Paper],
        ModeArg::Origin => vec![Mode::Origin],
        ModeArg::All => vec![Mode::Swarm, Mode::Paper],
    };
    std::fs::create_dir_all(&args.out)?;
    let scratch_root = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let sweep = rates.len() > 1;
    let mut outcomes = Vec::new();
    for &nodes in &args.nodes {
        for &rate in &rates {
            let t_star = lower_bound(size, rate, nodes, k);
            println!(
                "\ndiffusion: 1 seed -> {nodes} nodes, {} ({size} bytes) in k = {k} chunks of {}, upload {}/s per node",
                package.manifest().name,
                format_size(chunk),
                format_size(rate)
            );
            println!(
                "lower bound T* = (F/U)(1 + floor(log2 N)/k) = {:.2} s",
                seconds(t_star)
            );
            let mut group = Vec::new();
            for &mode in &modes {
                let scratch = tempfile::tempdir_in(&scratch_root)?;
                let experiment = Experiment {
                    nodes,
                    mode,
                    upload_rate: Some(rate),
                    blocks_per_request: (chunk / BLOCK_SIZE) as u32,
                    timeout,
                    attempt_timeout: attempt_timeout.unwrap_or(self::attempt_timeout(mode)),
                    data_dir: scratch.path().to_path_buf(),
                    dht_server_every: args.dht_server_every,
                    transport: args.transport.into(),
                };
                let outcome = run_one(experiment, &sandbox, &policy, &package).await?;
                let tag = if sweep {
                    format!("-{}k", rate >> 10)
                } else {
                    String::new()
                };
                write_csv(&args.out, &outcome, &tag)?;
                group.push(outcome);
            }
            let tag = if sweep {
                format!("-{}k", rate >> 10)
            } else {
                String::new()
            };
            crate::plot::diffusion(&args.out, &group, &tag)?;
            outcomes.extend(group);
        }
    }
    summary(&outcomes, k);
    targets(&outcomes, k);
    println!("CSV and SVG plots in {}", args.out.display());
    let all_ok = outcomes.iter().all(|o| o.all_done.is_some());
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A mode's default first-attempt timeout (see `--attempt-timeout`).
pub(crate) fn attempt_timeout(mode: Mode) -> Duration {
    match mode {
        Mode::Paper => Duration::from_millis(500),
        Mode::Swarm | Mode::Origin => Duration::from_secs(5),
    }
}

/// Runs one experiment, showing its progress.
pub(crate) async fn run_one(
    experiment: Experiment,
    sandbox: &Sandbox,
    policy: &Policy,
    package: &VerifiedPackage,
) -> anyhow::Result<Outcome> {
    let nodes = experiment.nodes;
    println!(
        "\n== mode {} (first attempt timeout {:.1?})",
        experiment.mode.name(),
        experiment.attempt_timeout
    );
    let mut last = std::time::Instant::now();
    let outcome = run(experiment, sandbox.clone(), policy.clone(), package.clone(), |p| {
        if last.elapsed() >= Duration::from_secs(1) || p.active == p.nodes {
            last = std::time::Instant::now();
            print!(
                "\r  t = {:6.1} s   active providers {:>4}/{}   downloading {:>4}   {:>8} KiB in flight ",
                seconds(p.elapsed),
                p.active,
                p.nodes,
                p.downloading,
                p.bytes >> 10
            );
            let _ = std::io::stdout().flush();
        }
    })
    .await?;
    println!();
    println!(
        "  {} of {nodes} nodes active providers; setup of the nodes took {:.1} s (not measured)",
        outcome.completed(),
        seconds(outcome.setup)
    );
    let c = &outcome.counters;
    println!(
        "  requests served: {} ({} Have, {} answered Busy, {} Queued, {} with data), {} blocks ({:.2} per answer with data), {:.1} MiB uploaded in all",
        c.transfer_requests,
        c.have_requests,
        c.busy,
        c.queued,
        c.answers_with_data,
        c.blocks_served,
        c.blocks_served as f64 / c.answers_with_data.max(1) as f64,
        c.bytes_uploaded as f64 / (1 << 20) as f64
    );
    if let Some(error) = outcome.nodes.iter().find_map(|n| n.error.clone()) {
        println!("  first failure: {error}");
    }
    Ok(outcome)
}

/// The lower bound of an outcome's experiment.
pub(crate) fn t_star(o: &Outcome, k: u64) -> Duration {
    let rate = o.experiment.upload_rate.unwrap_or(u64::MAX);
    lower_bound(o.size, rate, o.nodes.len(), k)
}

/// Median discovery time of the nodes that completed.
pub(crate) fn discovery_p50(o: &Outcome) -> f64 {
    let mut discovery: Vec<f64> = o
        .nodes
        .iter()
        .filter(|n| n.completed.is_some())
        .map(|n| seconds(n.discovery))
        .collect();
    p50(&mut discovery)
}

pub(crate) fn summary(outcomes: &[Outcome], k: u64) {
    println!();
    println!(
        "{:<17} {:>5} {:>9} {:>4} {:>10} {:>8} {:>9} {:>8} {:>9} {:>10} {:>9} {:>8} {:>11} {:>8} {:>9} {:>9}",
        "mode",
        "N",
        "F",
        "k",
        "U",
        "T*",
        "T_all",
        "T_all/T*",
        "disc p50",
        "deploy p50",
        "uploaders",
        "seed up",
        "CPU/MiB",
        "CPU use",
        "peak RSS",
        "per node"
    );
    for o in outcomes {
        let t_star = t_star(o, k);
        let mut deploy: Vec<f64> = o
            .nodes
            .iter()
            .filter(|n| n.completed.is_some())
            .map(|n| seconds(n.deploy))
            .collect();
        let uploaders = o.nodes.iter().filter(|n| n.uploaded > 0).count();
        let t_all = o.all_done.map(seconds);
        println!(
            "{:<17} {:>5} {:>9} {:>4} {:>10} {:>7.2}s {:>9} {:>8} {:>8.3}s {:>9.2}s {:>8.1}% {:>7.2}F {:>8.1} ms {:>7.0}% {:>5} MiB {:>9}",
            o.label(),
            o.nodes.len(),
            format_size(o.size),
            k,
            format!("{}/s", format_size(o.experiment.upload_rate.unwrap_or(0))),
            seconds(t_star),
            t_all.map_or("-".into(), |t| format!("{t:.2}s")),
            t_all.map_or("-".into(), |t| format!("{:.2}", t / seconds(t_star))),
            discovery_p50(o),
            p50(&mut deploy),
            100.0 * uploaders as f64 / o.nodes.len().max(1) as f64,
            o.seed_uploaded as f64 / o.size as f64,
            o.cpu_per_mib().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
            100.0 * o.utilisation(),
            o.cost.rss_peak >> 10,
            o.memory_per_node()
                .map_or("n/a".into(), |m| format!("{:.1} MiB", m as f64 / 1024.0))
        );
    }
    println!(
        "(CPU: user + system time of this process, every node in it, from the common start to the last pull; \
         CPU use: of {} cores; peak RSS: sampled every 500 ms; per node: what the nodes added, over N + 1, \
         first run of the process only)",
        outcomes.first().map_or(0, |o| o.cost.cores)
    );
}

/// Prints each of the experiment's targets next to what this run measured.
fn targets(outcomes: &[Outcome], k: u64) {
    let line = |what: &str, target: &str, measured: String, met: bool| {
        let verdict = if met { "met" } else { "MISSED" };
        println!("  {what:<48} {target:>10} {measured:>12}  {verdict}");
    };
    println!();
    println!("targets (swarm, per N and U):");
    for o in outcomes.iter().filter(|o| o.experiment.mode == Mode::Swarm) {
        let n = o.nodes.len();
        let u = format_size(o.experiment.upload_rate.unwrap_or(0));
        println!(" N = {n}, U = {u}/s:");
        let ratio = o.all_done.map(|t| seconds(t) / seconds(t_star(o, k)));
        line(
            "T_all / T*",
            "<= 1.5",
            ratio.map_or("failed".into(), |r| format!("{r:.2}")),
            ratio.is_some_and(|r| r <= 1.5),
        );
        let seed = o.seed_uploaded as f64 / o.size as f64;
        line("seed upload", "<= 2 F", format!("{seed:.2} F"), seed <= 2.0);
        let cpu = o.cpu_per_mib().map(|d| d.as_secs_f64() * 1e3);
        line(
            "CPU per delivered MiB",
            "<= 20 ms",
            cpu.map_or("-".into(), |c| format!("{c:.1} ms")),
            cpu.is_some_and(|c| c <= 20.0),
        );
        let memory = o.memory_per_node().map(|m| m as f64 / 1024.0);
        line(
            "memory per node",
            "<= 8 MiB",
            memory.map_or("n/a".into(), |m| format!("{m:.1} MiB")),
            memory.is_some_and(|m| m <= 8.0),
        );
        let paper = outcomes.iter().find(|p| {
            p.experiment.mode == Mode::Paper
                && p.nodes.len() == n
                && p.experiment.upload_rate == o.experiment.upload_rate
        });
        if let (Some(paper), Some(swarm)) = (paper, o.all_done) {
            let speedup = paper.all_done.map(|p| seconds(p) / seconds(swarm));
            line(
                "T_all(paper) / T_all(swarm)",
                ">= 5",
                speedup.map_or("paper failed".into(), |s| format!("{s:.1}")),
                speedup.is_some_and(|s| s >= 5.0),
            );
        }
        let smallest = outcomes
            .iter()
            .filter(|s| {
                s.experiment.mode == Mode::Swarm
                    && s.experiment.upload_rate == o.experiment.upload_rate
                    && s.nodes.len() < n
            })
            .min_by_key(|s| s.nodes.len());
        if let Some(small) = smallest {
            let ratio = discovery_p50(o) / discovery_p50(small);
            line(
                &format!("discovery p50 against N = {}", small.nodes.len()),
                "<= 2x",
                format!("{ratio:.2}x"),
                ratio <= 2.0,
            );
        }
    }
}

/// Writes one run's nodes as CSV; `tag` tells the runs of a sweep apart.
pub(crate) fn write_csv(dir: &Path, o: &Outcome, tag: &str) -> anyhow::Result<()> {
    let mut csv = String::from(
        "mode,node,peer,discovery_ms,download_ms,deploy_ms,completed_ms,uploaded_bytes,served_nodes,error\n",
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for n in &o.nodes {
        let _ = writeln!(
            csv,
            "{},{},{},{:.1},{:.1},{:.1},{},{},{},{}",
            o.experiment.mode.name(),
            n.index,
            n.peer,
            ms(n.discovery),
            ms(n.download),
            ms(n.deploy),
            n.completed
                .map_or(String::new(), |c| format!("{:.1}", ms(c))),
            n.uploaded,
            n.served_peers.map_or(String::new(), |p| p.to_string()),
            n.error.as_deref().unwrap_or("").replace(',', ";")
        );
    }
    let _ = writeln!(
        csv,
        "{},0,seed,0,0,0,0,{},{},",
        o.experiment.mode.name(),
        o.seed_uploaded,
        o.seed_peers
    );
    std::fs::write(
        dir.join(format!(
            "diffusion-{}-{}{tag}.csv",
            o.experiment.mode.name(),
            o.nodes.len()
        )),
        csv,
    )?;
    Ok(())
}
