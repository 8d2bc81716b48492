//! The paper's live-streaming scenario (section 2.4), measured: a flash
//! crowd of viewers arrives at a stream, the providers spread it to standby
//! nodes while the load lasts and retire them when it goes.
//!
//! * **Setup**, all in one process on loopback: a live feed source that
//!   publishes one signed segment of S bytes (16 KiB by default) per
//!   segment period, `M` providers that share the `live` service (pinned),
//!   `K` standby nodes and viewers on a few client nodes. Every node that
//!   runs `live` subscribes to the feed and verifies every segment; a
//!   standby holds the feed from its prefetch on. Every provider has a real
//!   uplink limit `U` (call results leave through it) and the limit `L` on
//!   concurrent calls, so its capacity is `U` over the bytes of a segment:
//!   finite, set by the model, not by this machine.
//! * **Viewers:** each fetches the newest segment (`newest-hex(S)`: the
//!   segment's S bytes as hex text) once every segment period, through the
//!   library's load-aware remote call. A fetch is on time when it is answered
//!   within the QoS latency. The number of viewers follows a profile: by
//!   default a flash crowd (10 viewers, up to 300 in 10 s, 60 s at 300,
//!   back to 10 in 10 s, then 60 s more), or a CSV (`second,viewers`).
//! * **Modes:** `adaptive` (ours: the standbys are solicited under load and
//!   retire after it), `static` (the M providers only), `all` (every standby
//!   provides from the start: the QoS and cost upper bound); `compare` runs
//!   the three with the same parameters.
//!
//! Output: a per-second CSV per mode, a summary CSV and table (on-time
//! fraction overall and during the crowd, reaction time, peak providers,
//! provider-seconds against the minimum the load needs, providers at the
//! end, direction changes, CPU), SVG plots (viewers and providers over time,
//! the paper's figure 3 measured; on-time fraction and p95 latency), and one
//! line per replication decision as it happens.

mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sp2a::net::PeerId;
use sp2a::node::{Node, NodeConfig, NodeError, NodeEvent};
use sp2a::package::manifest::Replication;
use sp2a::package::units::{parse_duration, parse_size};
use sp2a::package::{Package, SecretKey};
use sp2a::policy::Policy;
use sp2a::sandbox::Sandbox;

pub use report::{Second, Summary};

/// Which nodes provide the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Adaptive,
    Static,
    All,
    Compare,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Adaptive,
    Static,
    All,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Adaptive => "adaptive",
            Mode::Static => "static",
            Mode::All => "all",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Options {
    #[arg(long, value_enum, default_value_t = ModeArg::Compare)]
    mode: ModeArg,
    /// Providers at the start (pinned: they never retire), M.
    #[arg(long, default_value_t = 2)]
    providers: usize,
    /// Standby nodes, K.
    #[arg(long, default_value_t = 30)]
    standbys: usize,
    /// Viewers before and after the crowd.
    #[arg(long, default_value_t = 10)]
    base: usize,
    /// Viewers at the crowd's peak.
    #[arg(long, default_value_t = 300)]
    peak: usize,
    /// Time at the base before the crowd.
    #[arg(long, default_value = "10s")]
    lead: String,
    /// Time the crowd takes to arrive, and to leave.
    #[arg(long, default_value = "10s")]
    ramp: String,
    /// Time at the peak.
    #[arg(long, default_value = "60s")]
    crowd: String,
    /// Time at the base after the crowd.
    #[arg(long, default_value = "60s")]
    tail: String,
    /// A profile instead: a CSV of `second,viewers` lines (the viewers from
    /// that second on).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Each viewer fetches a segment once per period.
    #[arg(long, default_value = "2s")]
    period: String,
    /// A fetch answered within this is on time (the manifest's QoS latency).
    #[arg(long, default_value = "1s")]
    latency: String,
    /// Target utilisation of the providers' capacity (the manifest's QoS).
    #[arg(long, default_value_t = 0.8)]
    utilisation: f64,
    /// Concurrent calls a provider serves, L.
    #[arg(long, default_value_t = 4)]
    limit: usize,
    /// Uplink of every provider and standby, U.
    #[arg(long, default_value = "512 KiB")]
    upload: String,
    /// Bytes of media per fetch, S (at most 64 KiB; sent as hex text).
    #[arg(long, default_value = "16 KiB")]
    segment: String,
    /// How long the load stays low before surplus replicas retire.
    #[arg(long, default_value = "10s")]
    hold: String,
    /// Client nodes the viewers call from.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// The `services/` directory (manifests and built components).
    #[arg(long, default_value = "services")]
    services: PathBuf,
    /// Where to write the CSV and SVG files.
    #[arg(long, default_value = "adapt-results")]
    out: PathBuf,
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub mode: Mode,
    pub providers: usize,
    pub standbys: usize,
    /// Viewers in each second of the run.
    pub viewers: Vec<usize>,
    pub period: Duration,
    pub latency: Duration,
    pub utilisation: f64,
    pub limit: usize,
    pub upload: u64,
    /// Media bytes per fetch.
    pub segment: u64,
    pub hold: Duration,
    pub clients: usize,
    pub services: PathBuf,
    /// Print a line per second as the run goes.
    pub progress: bool,
}

impl Scenario {
    /// Bytes of one fetch's result: the segment as hex text, quoted.
    pub fn fetch_bytes(&self) -> u64 {
        2 * self.segment + 2
    }

    /// Fetches per second one provider's uplink carries.
    pub fn capacity(&self) -> f64 {
        self.upload as f64 / self.fetch_bytes() as f64
    }

    /// Seconds in which the crowd is there (more viewers than at the start).
    pub fn crowd(&self) -> Option<(usize, usize)> {
        let base = self.viewers.first().copied().unwrap_or(0);
        let first = self.viewers.iter().position(|v| *v > base)?;
        let last = self.viewers.iter().rposition(|v| *v > base)?;
        Some((first, last))
    }
}

/// The viewers per second of a flash crowd.
pub fn flash_crowd(
    base: usize,
    peak: usize,
    lead: u64,
    ramp: u64,
    crowd: u64,
    tail: u64,
) -> Vec<usize> {
    let mut viewers = Vec::new();
    viewers.extend(std::iter::repeat_n(base, lead as usize));
    let step = |i: u64| base + ((peak - base.min(peak)) as u64 * i / ramp.max(1)) as usize;
    viewers.extend((1..=ramp).map(step));
    viewers.extend(std::iter::repeat_n(peak, crowd as usize));
    viewers.extend((1..=ramp).rev().map(|i| step(i - 1)));
    viewers.extend(std::iter::repeat_n(base, tail as usize));
    viewers
}

/// A profile from CSV lines `second,viewers` (a header line is skipped).
fn read_profile(path: &std::path::Path) -> anyhow::Result<Vec<usize>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut points = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((second, viewers)) = line.split_once(',') else {
            anyhow::bail!("{}: {line:?} is not `second,viewers`", path.display());
        };
        match (
            second.trim().parse::<usize>(),
            viewers.trim().parse::<usize>(),
        ) {
            (Ok(s), Ok(v)) => points.push((s, v)),
            _ if points.is_empty() => continue,
            _ => anyhow::bail!("{}: {line:?} is not `second,viewers`", path.display()),
        }
    }
    let end = points.last().map_or(0, |(s, _)| s + 1);
    anyhow::ensure!(
        end > 0 && end <= 3600,
        "{}: a profile of 1 s to 1 h",
        path.display()
    );
    let mut viewers = vec![0; end];
    for (i, (second, count)) in points.iter().enumerate() {
        let until = points.get(i + 1).map_or(end, |(s, _)| *s);
        for v in viewers.iter_mut().take(until).skip(*second) {
            *v = *count;
        }
    }
    Ok(viewers)
}

/// The demo's short flash crowd: one provider, four standby nodes, 4 to
/// 24 viewers; one line per second and per decision, then the summary.
pub async fn demo_crowd(services: &std::path::Path) -> anyhow::Result<()> {
    let scenario = Scenario {
        mode: Mode::Adaptive,
        providers: 1,
        standbys: 4,
        viewers: flash_crowd(4, 24, 3, 3, 12, 14),
        period: Duration::from_secs(1),
        latency: Duration::from_secs(1),
        utilisation: 0.8,
        limit: 4,
        upload: 256 << 10,
        segment: 16 << 10,
        hold: Duration::from_secs(5),
        clients: 2,
        services: services.to_path_buf(),
        progress: true,
    };
    println!(
        "a live feed source (a signed 16 KiB segment a second), 1 provider of `live` (pinned), \
         4 standby nodes, viewers 4 -> 24 -> 4 each fetching the newest segment a second; \
         each provider's uplink carries {:.0} fetches/s",
        scenario.capacity()
    );
    let seconds = run_scenario(&scenario).await?;
    let s = Summary::of(&scenario, &seconds);
    println!(
        "on time {:.1}% ({:.1}% during the crowd); providers 1 -> {} -> {}; {} provider-seconds against a minimum of {}",
        s.on_time * 100.0,
        s.on_time_crowd * 100.0,
        s.peak_providers,
        s.providers_end,
        s.provider_seconds,
        s.min_provider_seconds
    );
    Ok(())
}

pub async fn run(options: Options) -> anyhow::Result<std::process::ExitCode> {
    let d = |field: &str, text: &str| {
        parse_duration(text).map_err(|e| anyhow::anyhow!("--{field}: {e}"))
    };
    let viewers = match &options.profile {
        Some(path) => read_profile(path)?,
        None => flash_crowd(
            options.base,
            options.peak,
            d("lead", &options.lead)?.as_secs(),
            d("ramp", &options.ramp)?.as_secs(),
            d("crowd", &options.crowd)?.as_secs(),
            d("tail", &options.tail)?.as_secs(),
        ),
    };
    let modes = match options.mode {
        ModeArg::Adaptive => vec![Mode::Adaptive],
        ModeArg::Static => vec![Mode::Static],
        ModeArg::All => vec![Mode::All],
        ModeArg::Compare => vec![Mode::Adaptive, Mode::Static, Mode::All],
    };
    let upload = parse_size(&options.upload).map_err(|e| anyhow::anyhow!("--upload: {e}"))?;
    let segment = parse_size(&options.segment).map_err(|e| anyhow::anyhow!("--segment: {e}"))?;
    anyhow::ensure!(
        (1..=64 << 10).contains(&segment),
        "--segment: 1 byte to 64 KiB"
    );
    anyhow::ensure!(options.providers >= 1, "--providers: at least 1");
    anyhow::ensure!(options.clients >= 1, "--clients: at least 1");
    std::fs::create_dir_all(&options.out)?;
    let mut results = Vec::new();
    for mode in modes {
        let scenario = Scenario {
            mode,
            providers: options.providers,
            standbys: options.standbys,
            viewers: viewers.clone(),
            period: d("period", &options.period)?,
            latency: d("latency", &options.latency)?,
            utilisation: options.utilisation,
            limit: options.limit.max(1),
            upload,
            segment,
            hold: d("hold", &options.hold)?,
            clients: options.clients,
            services: options.services.clone(),
            progress: false,
        };
        println!(
            "\n== {}: {} provider(s), {} standby node(s), {} to {} viewers, a segment every {:?} each, \
             on time within {:?}; L = {}, uplink {} KiB/s per provider ({:.1} fetches/s of {} bytes)",
            mode.name(),
            scenario.providers,
            if mode == Mode::Static {
                0
            } else {
                scenario.standbys
            },
            viewers.iter().min().unwrap_or(&0),
            viewers.iter().max().unwrap_or(&0),
            scenario.period,
            scenario.latency,
            scenario.limit,
            upload >> 10,
            scenario.capacity(),
            scenario.fetch_bytes()
        );
        let seconds = run_scenario(&scenario).await?;
        let summary = Summary::of(&scenario, &seconds);
        report::write_seconds(&options.out, mode, &seconds)?;
        results.push((scenario, seconds, summary));
    }
    report::print_and_write(&options.out, &results)?;
    report::plots(&options.out, &results)?;
    println!("\nCSV and SVG files in {}", options.out.display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// The package of the `live` service reading the feed of `source`, with the
/// scenario's QoS and replication bounds in its manifest.
fn live_package(
    scenario: &Scenario,
    key: &SecretKey,
    source: &SecretKey,
) -> anyhow::Result<Package> {
    let (component, mut manifest) =
        crate::services::component_and_manifest(&scenario.services, "live")?;
    for feed in &mut manifest.capabilities.feeds {
        feed.publisher = source.public();
    }
    manifest.replication = Some(Replication {
        latency: scenario.latency,
        utilisation: scenario.utilisation,
        min_replicas: scenario.providers as u32,
        max_replicas: (scenario.providers + scenario.standbys) as u32,
    });
    Ok(sp2a::package::pack(component, &manifest, key)?.into_inner())
}

/// The nodes of one run.
struct Nodes {
    source: Node,
    /// Publishes the feed for as long as the run lasts.
    publisher: tokio::task::JoinHandle<()>,
    providers: Vec<Node>,
    standbys: Vec<Node>,
    clients: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Nodes {
    async fn shutdown(&self) {
        self.publisher.abort();
        for node in std::iter::once(&self.source)
            .chain(&self.providers)
            .chain(&self.standbys)
            .chain(&self.clients)
        {
            node.shutdown().await;
        }
    }

    /// Nodes that provide the stream now.
    fn providing(&self) -> usize {
        self.providers
            .iter()
            .chain(&self.standbys)
            .filter(|n| n.service("live").is_some())
            .count()
    }
}

async fn start_nodes(scenario: &Scenario) -> anyhow::Result<Nodes> {
    let dir = tempfile::tempdir()?;
    let key = SecretKey::generate();
    let source_key = SecretKey::generate();
    let policy = Policy::parse(
        &format!(
            "[trust]\npublishers = [\"{}\"]\n[grants]\nfeeds = [\"live\"]\n",
            key.public()
        ),
        dir.path(),
    )?;
    let sandbox = Sandbox::new(policy.sandbox_config(Some(dir.path().join("cache"))))?;
    let package = live_package(scenario, &key, &source_key)?;
    let config = |name: &str, uplink: bool| {
        let mut config = NodeConfig::new(dir.path().join(name));
        config.net.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid address")];
        config.net.local_addresses = true;
        config.max_invocations_per_service = scenario.limit;
        config.upload.rate = uplink.then_some(scenario.upload);
        config.replication.hold = scenario.hold;
        // Dozens of nodes share this machine's two cores: reports every
        // 2 s (counted for 5 s) halve the gossip.
        config.replication.report_every = Duration::from_secs(2);
        config.replication.report_ttl = Duration::from_secs(5);
        config.replication.cooldown = Duration::from_secs(2);
        config.pull.base_timeout = Duration::from_secs(2);
        config.pull.rediscover_delay = Duration::from_millis(200);
        config.pull.max_rediscover_delay = Duration::from_secs(2);
        config
    };
    let start = |config: NodeConfig| {
        let (policy, sandbox) = (policy.clone(), sandbox.clone());
        async move { Node::start(config, policy, sandbox).await }
    };
    let hub_node = start(config("provider-0", true)).await?;
    hub_node.share(package.clone()).await?;
    let hub = hub_node.addresses().await;
    let join = |mut config: NodeConfig| {
        config.net.bootstrap = hub.clone();
        start(config)
    };
    let source = join(config("source", false)).await?;
    let mut feed = source.feed_source("live", source_key, 0).await?;
    let (period, segment) = (scenario.period, scenario.segment as usize);
    let publisher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let index = feed.next_index();
            let data: Vec<u8> = (0..segment).map(|i| (index as usize + i) as u8).collect();
            if let Err(e) = feed.publish(data).await {
                tracing::warn!(error = %e, "cannot publish a segment");
            }
        }
    });
    let mut providers = vec![hub_node];
    for i in 1..scenario.providers {
        let node = join(config(&format!("provider-{i}"), true)).await?;
        node.share(package.clone()).await?;
        providers.push(node);
    }
    let mut standbys = Vec::new();
    if scenario.mode != Mode::Static {
        for i in 0..scenario.standbys {
            let mut config = config(&format!("standby-{i}"), true);
            if scenario.mode == Mode::Adaptive {
                config.standby = vec!["live".into()];
            }
            let node = join(config).await?;
            if scenario.mode == Mode::All {
                node.share(package.clone()).await?;
            }
            standbys.push(node);
        }
    }
    let mut clients = Vec::new();
    for i in 0..scenario.clients {
        clients.push(join(config(&format!("client-{i}"), false)).await?);
    }
    Ok(Nodes {
        source,
        publisher,
        providers,
        standbys,
        clients,
        _dir: dir,
    })
}

/// What the viewers saw in one second.
#[derive(Default)]
struct Tally {
    requests: usize,
    on_time: usize,
    busy: usize,
    failed: usize,
    latencies: Vec<f64>,
}

async fn run_scenario(scenario: &Scenario) -> anyhow::Result<Vec<Second>> {
    let nodes = Arc::new(start_nodes(scenario).await?);
    // Standbys prefetch the package (through the providers' uplinks), and
    // everyone finds everyone: let the network settle before the clock
    // starts.
    let settle = Instant::now();
    let mut ready_at = None;
    loop {
        let kept = (0..nodes.standbys.len())
            .filter(|i| {
                let dir = nodes._dir.path().join(format!("standby-{i}/store/retired"));
                std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
            })
            .count();
        // Every standby has the package, and replicas the prefetch traffic
        // may have brought in have retired again.
        let ready = (scenario.mode != Mode::Adaptive || kept == nodes.standbys.len())
            && nodes.providing()
                == nodes.providers.len()
                    + if scenario.mode == Mode::All {
                        nodes.standbys.len()
                    } else {
                        0
                    };
        if !ready {
            ready_at = None;
        } else if ready_at.is_none() {
            ready_at = Some(Instant::now());
        }
        // The uplinks' queues drain, the groups' reports settle.
        let settled = ready_at.is_some_and(|at| at.elapsed() > Duration::from_secs(5));
        if settled || settle.elapsed() > Duration::from_secs(180) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let decisions = log_decisions(&nodes);
    let seconds = scenario.viewers.len();
    let tallies: Arc<Mutex<Vec<Tally>>> = Arc::new(Mutex::new(
        (0..seconds + 1).map(|_| Tally::default()).collect(),
    ));
    let active = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let mut viewers = Vec::new();
    let mut per_second = Vec::with_capacity(seconds);
    let mut cpu_before = crate::diffusion::process_cpu();
    for second in 0..seconds {
        let wanted = scenario.viewers[second];
        active.store(wanted, Ordering::Relaxed);
        while viewers.len() < wanted {
            let index = viewers.len();
            viewers.push(tokio::spawn(viewer(
                index,
                nodes.clients[index % nodes.clients.len()].clone(),
                Fetch {
                    bytes: scenario.segment,
                    period: scenario.period,
                    latency: scenario.latency,
                },
                start,
                active.clone(),
                tallies.clone(),
            )));
        }
        // Viewers beyond `wanted` stop by themselves; their handles go.
        viewers.retain(|v| !v.is_finished());
        tokio::time::sleep_until(start + Duration::from_secs(second as u64 + 1)).await;
        let cpu_now = crate::diffusion::process_cpu();
        let cpu = match (cpu_before, cpu_now) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => f64::NAN,
        };
        cpu_before = cpu_now;
        let providing = nodes.providing();
        if scenario.progress {
            let t = &tallies.lock().expect("tallies lock")[second];
            let on_time = if t.requests == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}%", 100.0 * t.on_time as f64 / t.requests as f64)
            };
            println!(
                "  {:>3} s  viewers {wanted:>3}  providers {providing:>2}  on time {on_time}",
                second + 1
            );
        }
        per_second.push((providing, wanted, cpu));
    }
    active.store(0, Ordering::Relaxed);
    // Fetches still running finish (or time out) before the tally.
    for v in viewers {
        let _ = tokio::time::timeout(Duration::from_secs(15), v).await;
    }
    for task in decisions {
        task.abort();
    }
    nodes.shutdown().await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut tallies = tallies.lock().expect("tallies lock");
    Ok(per_second
        .into_iter()
        .enumerate()
        .map(|(s, (providers, viewers, cpu))| {
            let t = &mut tallies[s];
            Second::new(
                s,
                viewers,
                providers,
                t.requests,
                t.on_time,
                t.busy,
                t.failed,
                &mut t.latencies,
                cpu / cores,
            )
        })
        .collect())
}

/// What a viewer fetches, how often, and within what it is on time.
#[derive(Clone, Copy)]
struct Fetch {
    bytes: u64,
    period: Duration,
    latency: Duration,
}

/// One viewer: fetches the newest segment once per period (at its own
/// phase) while it is among the `active` ones.
async fn viewer(
    index: usize,
    client: Node,
    Fetch {
        bytes,
        period,
        latency,
    }: Fetch,
    start: tokio::time::Instant,
    active: Arc<AtomicUsize>,
    tallies: Arc<Mutex<Vec<Tally>>>,
) {
    // Spread over the period (a golden-ratio sequence: even, for any count).
    let phase = period.mul_f64((index as f64 * 0.618_033_988_75).fract());
    let mut next = tokio::time::Instant::now() + phase;
    while index < active.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += period;
        if index >= active.load(Ordering::Relaxed) {
            break;
        }
        let asked = tokio::time::Instant::now();
        let second = asked.duration_since(start).as_secs() as usize;
        let outcome = client
            .invoke_remote("live", &format!("newest-hex({bytes})"))
            .await;
        let took = asked.elapsed();
        let mut tallies = tallies.lock().expect("tallies lock");
        let Some(t) = tallies.get_mut(second) else {
            continue;
        };
        t.requests += 1;
        match outcome {
            // A replica without a segment yet answers an error: a failure.
            Ok(answer) if answer.value.starts_with("ok(") => {
                t.latencies.push(took.as_secs_f64());
                if took <= latency {
                    t.on_time += 1;
                }
            }
            Err(NodeError::AllDeclined { .. }) => t.busy += 1,
            Ok(_) | Err(_) => t.failed += 1,
        }
    }
}

/// Prints each replication decision of every node as it happens.
fn log_decisions(nodes: &Nodes) -> Vec<tokio::task::JoinHandle<()>> {
    let labelled: Vec<(&Node, String)> = nodes
        .providers
        .iter()
        .enumerate()
        .map(|(i, n)| (n, format!("provider-{i}")))
        .chain(
            nodes
                .standbys
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("standby-{i}"))),
        )
        .collect();
    let names: Arc<HashMap<PeerId, String>> = Arc::new(
        labelled
            .iter()
            .map(|(n, label)| (n.peer_id(), label.clone()))
            .collect(),
    );
    let start = Instant::now();
    labelled
        .into_iter()
        .map(|(node, label)| {
            let mut events = node.events();
            let names = names.clone();
            tokio::spawn(async move {
                let name = |p: &PeerId| names.get(p).cloned().unwrap_or_else(|| p.to_string());
                loop {
                    let event = events.recv().await;
                    let at = start.elapsed().as_secs_f64();
                    match event {
                        Ok(NodeEvent::Diffusion {
                            standbys, reason, ..
                        }) => {
                            let asked: Vec<String> = standbys.iter().map(name).collect();
                            println!(
                                "  {at:>5.1} s  {label}: diffusion: asks {}: {reason}",
                                asked.join(", ")
                            )
                        }
                        Ok(NodeEvent::Regression { reason, .. }) => {
                            println!("  {at:>5.1} s  {label}: regression: retires: {reason}")
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}
