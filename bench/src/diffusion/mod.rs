//! The SP2A paper's diffusion experiment, reproducible on one machine: one
//! seed provides a package, N real nodes (libp2p over loopback TCP, in this
//! process, sharing one sandbox) pull it at the same moment, and every node's
//! discovery, download and deploy times and uploads are recorded.
//!
//! Modes:
//! * [`Mode::Swarm`]: ours: blocks from many providers at once, rarest first,
//!   verified blocks served before the download completes.
//! * [`Mode::Paper`]: the paper's approach: the whole file from one provider
//!   at a time, with its retry and rediscovery policy; every provider serves
//!   one download at a time and queues the other requesters, serving the
//!   next the moment it is free; a node re-shares only after it completed.
//! * [`Mode::Origin`]: no re-sharing at all: everyone downloads from the
//!   seed, which takes about N·F/U by construction.
//!
//! Every node's uplink is limited to the same rate (the seed's too), so the
//! network, not the CPU, is the bottleneck being measured.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use sp2a::net::PeerId;
use sp2a::node::{Counters, Node, NodeConfig, NodeError, NodeEvent, PullStage, Strategy};
use sp2a::package::{ContentId, VerifiedPackage};
use sp2a::policy::Policy;
use sp2a::sandbox::Sandbox;

pub(crate) mod report;

pub use report::{Options, run_bench};

/// How the downloaders get the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Swarm,
    Paper,
    Origin,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Swarm => "swarm",
            Mode::Paper => "paper",
            Mode::Origin => "origin",
        }
    }
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct Experiment {
    pub nodes: usize,
    pub mode: Mode,
    /// Upload rate of every node, bytes per second (`None`: unlimited).
    pub upload_rate: Option<u64>,
    /// Blocks of 16 KiB per request: the chunk size.
    pub blocks_per_request: u32,
    /// Give up on a node after this long.
    pub timeout: Duration,
    /// Timeout of a first request to a provider; each retry doubles it
    /// (with the paper's approach this bounds waiting in a provider's line).
    pub attempt_timeout: Duration,
    /// Where the nodes' data directories go (tmpfs keeps fsyncs cheap).
    pub data_dir: PathBuf,
    /// QUIC (one UDP socket per node) or TCP (a socket per connection).
    pub transport: Transport,
    /// One node in this many (and the seed) is a DHT server; the others are
    /// DHT clients, as peers behind NATs are. 1: every node is a server.
    pub dht_server_every: usize,
}

/// The transport the nodes listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Quic,
}

/// What happened to one downloader.
#[derive(Clone, Debug)]
pub struct NodeRecord {
    pub index: usize,
    pub peer: PeerId,
    pub discovery: Duration,
    pub download: Duration,
    pub deploy: Duration,
    /// When it became an active provider, from the common start.
    pub completed: Option<Duration>,
    pub uploaded: u64,
    /// How many distinct nodes it sent blocks to (`None`: not observed, as
    /// for a node in another process).
    pub served_peers: Option<usize>,
    /// The providers it received verified blocks from, most first.
    pub sources: Vec<PeerId>,
    pub content_id: Option<ContentId>,
    pub error: Option<String>,
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub experiment: Experiment,
    pub size: u64,
    pub nodes: Vec<NodeRecord>,
    pub seed_uploaded: u64,
    pub seed_peers: usize,
    /// Time until every node was an active provider (`None` if some failed).
    pub all_done: Option<Duration>,
    /// Time to start the N nodes (not part of the measurement).
    pub setup: Duration,
    /// What all nodes (seed included) served, summed.
    pub counters: Counters,
    /// What the run cost: this process (every node in it), or the node
    /// processes (a testbed).
    pub cost: Cost,
    /// Every node ran as its own process in its own network namespace
    /// (the testbed), not in this process.
    pub processes: bool,
}

impl Outcome {
    /// The run's name in tables and charts: its mode, and where it ran.
    pub fn label(&self) -> String {
        let mode = self.experiment.mode.name();
        if self.processes {
            format!("{mode} (processes)")
        } else {
            mode.to_owned()
        }
    }

    pub fn completed(&self) -> usize {
        self.nodes.iter().filter(|n| n.completed.is_some()).count()
    }

    /// Bytes of the package delivered: one copy per node that completed.
    pub fn delivered(&self) -> u64 {
        self.size * self.completed() as u64
    }

    /// CPU time per delivered MiB while the pulls ran.
    pub fn cpu_per_mib(&self) -> Option<Duration> {
        let mib = self.delivered() as f64 / (1 << 20) as f64;
        (mib > 0.0).then(|| self.cost.cpu.div_f64(mib))
    }

    /// Share of the machine's cores busy while the pulls ran (1.0: all).
    pub fn utilisation(&self) -> f64 {
        let available = self.cost.elapsed.as_secs_f64() * self.cost.cores as f64;
        if available > 0.0 {
            self.cost.cpu.as_secs_f64() / available
        } else {
            0.0
        }
    }

    /// Resident memory the nodes added, per node (seed included), at the
    /// run's peak (KiB); `None` after an earlier run in this process, whose
    /// freed memory the allocator hands to this one unseen.
    pub fn memory_per_node(&self) -> Option<u64> {
        self.cost.first_run.then(|| {
            self.cost.rss_peak.saturating_sub(self.cost.rss_before) / (self.nodes.len() as u64 + 1)
        })
    }
}

/// CPU and memory of one run, from `/proc/self` (the kernel's rusage
/// figures: user plus system time; resident set size).
#[derive(Clone, Debug, Default)]
pub struct Cost {
    /// CPU time this process used from the common start until every pull
    /// ended (setup excluded).
    pub cpu: Duration,
    /// Wall time of the same span.
    pub elapsed: Duration,
    /// Cores of the machine.
    pub cores: usize,
    /// Resident memory before the seed and the nodes started (KiB).
    pub rss_before: u64,
    /// The highest resident memory sampled (every 500 ms) from the nodes'
    /// start until every pull ended (KiB).
    pub rss_peak: u64,
    /// The first run in this process (the only one whose memory per node
    /// can be read off the process).
    pub first_run: bool,
}

/// Set once a run has started in this process.
static RAN_BEFORE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A snapshot while the experiment runs.
#[derive(Clone, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub active: usize,
    pub downloading: usize,
    pub bytes: u64,
    pub nodes: usize,
}

#[derive(Default)]
struct Uploads {
    bytes: u64,
    peers: HashSet<PeerId>,
}

fn track_uploads(node: &Node) -> (Arc<Mutex<Uploads>>, tokio::task::JoinHandle<()>) {
    let uploads = Arc::new(Mutex::new(Uploads::default()));
    let mut events = node.events();
    let sink = uploads.clone();
    let task = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Served { peer, bytes, .. }) => {
                    let mut uploads = sink.lock().expect("uploads lock");
                    uploads.bytes += bytes;
                    uploads.peers.insert(peer);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    (uploads, task)
}

/// Node `index`'s configuration in `experiment` (0 is the seed).
pub(crate) fn node_config(experiment: &Experiment, index: usize, connections: u32) -> NodeConfig {
    let mut config = NodeConfig::new(experiment.data_dir.join(format!("node-{index}")));
    let listen = match experiment.transport {
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
        Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
    };
    config.net.listen = vec![listen.parse().expect("valid address")];
    // All nodes are on loopback: peer exchange must hand out loopback addresses.
    config.net.local_addresses = true;
    match experiment.transport {
        // Every TCP connection of every node costs this process two file
        // descriptors: cap them, and close the ones the network formed with
        // once they idle.
        Transport::Tcp => {
            config.net.max_connections = connections;
            config.net.idle_timeout = Duration::from_secs(20);
        }
        // QUIC multiplexes a node's connections over one UDP socket.
        Transport::Quic => config.net.max_connections = connections.max(256),
    }
    config.net.request_timeout = experiment.timeout;
    config.upload.rate = experiment.upload_rate;
    config.pull.blocks_per_request = experiment.blocks_per_request;
    config.net.dht_server = index.is_multiple_of(experiment.dht_server_every.max(1));
    config.pull.total_timeout = experiment.timeout;
    config.pull.base_timeout = experiment.attempt_timeout;
    config.upload.max_concurrent = 64;
    match experiment.mode {
        Mode::Swarm => {
            config.pull.strategy = Strategy::Swarm;
            config.upload.share_partial = true;
        }
        Mode::Paper => {
            config.pull.strategy = Strategy::Sequential;
            config.upload.share_partial = false;
            // The paper's provider serves one download at a time; the other
            // requesters wait in line and the next is served the moment the
            // slot frees (they leave when done or when they give up).
            config.upload.slots = Some(1);
            // No idle wait between rounds longer than an attempt's timeout.
            config.pull.max_rediscover_delay = config.pull.base_timeout;
        }
        Mode::Origin => {
            config.pull.strategy = Strategy::Sequential;
            config.upload.share_partial = false;
            config.reshare = false;
        }
    }
    config
}

/// Attempts to reach the seed while the nodes start.
const SETUP_DIALS: u32 = 5;

/// Connections a downloader may hold (the process's file descriptors are
/// shared by all nodes).
pub(crate) const PEER_CONNECTIONS: u32 = 40;

/// Connections the seed may hold beyond one per downloader.
pub(crate) const SEED_SPARE_CONNECTIONS: u32 = 128;

/// Resident memory of this process now (Linux), KiB.
pub(crate) fn process_rss_kib() -> Option<u64> {
    rss_kib("/proc/self/status")
}

/// Resident memory (KiB) in a `/proc/<pid>/status` file.
pub(crate) fn rss_kib(status: impl AsRef<std::path::Path>) -> Option<u64> {
    let status = std::fs::read_to_string(status).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time this process has used (Linux), to tell when it is quiet.
pub(crate) fn process_cpu() -> Option<Duration> {
    cpu_time("/proc/self/stat")
}

/// User plus system CPU time in a `/proc/<pid>/stat` file.
pub(crate) fn cpu_time(stat: impl AsRef<std::path::Path>) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Waits until the nodes are done forming the network (identify, Kademlia
/// bootstrap): until the CPU they use (`cpu`: their total so far) per
/// half-second has stopped falling (four windows within 5% of a core of
/// each other, or below 20%), at most two minutes; five seconds where CPU
/// time cannot be read. What remains is the network's idle load
/// (keep-alives), present in any run.
pub(crate) async fn settle(cpu: impl Fn() -> Option<Duration>) {
    let Some(mut last) = cpu() else {
        tokio::time::sleep(Duration::from_secs(5)).await;
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut windows: Vec<Duration> = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu().unwrap_or(last);
        windows.push(now.saturating_sub(last));
        last = now;
        let recent = &windows[windows.len().saturating_sub(4)..];
        let quiet = recent.len() >= 2 && recent.iter().all(|w| *w < Duration::from_millis(100));
        let flat = recent.len() == 4
            && recent
                .iter()
                .max()
                .unwrap_or(&Duration::ZERO)
                .saturating_sub(*recent.iter().min().unwrap_or(&Duration::ZERO))
                < Duration::from_millis(25);
        if quiet || flat {
            break;
        }
    }
}

/// Runs one experiment: start the seed and the N nodes, pull everywhere at
/// once, wait for all, shut everything down, report.
pub async fn run(
    experiment: Experiment,
    sandbox: Sandbox,
    policy: Policy,
    package: VerifiedPackage,
    mut progress: impl FnMut(Progress),
) -> Result<Outcome, NodeError> {
    let setup_start = Instant::now();
    let first_run = !RAN_BEFORE.swap(true, std::sync::atomic::Ordering::Relaxed);
    let rss_before = process_rss_kib().unwrap_or(0);
    let mut rss_peak = rss_before;
    let n = experiment.nodes;
    let seed = Node::start(
        node_config(&experiment, 0, n as u32 + SEED_SPARE_CONNECTIONS),
        policy.clone(),
        sandbox.clone(),
    )
    .await?;
    seed.share(package.clone().into_inner()).await?;
    let bootstrap = seed.addresses().await;
    let (seed_uploads, seed_tracker) = track_uploads(&seed);

    // Start the downloaders, a batch at a time, each connected to the seed.
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for batch in (1..=n).collect::<Vec<_>>().chunks(32) {
        rss_peak = rss_peak.max(process_rss_kib().unwrap_or(0));
        let started = batch.iter().map(|&index| {
            let mut config = node_config(&experiment, index, PEER_CONNECTIONS);
            config.net.bootstrap = bootstrap.clone();
            let policy = policy.clone();
            let sandbox = sandbox.clone();
            let bootstrap = bootstrap.clone();
            async move {
                let node = Node::start(config, policy, sandbox).await?;
                // A node that cannot reach the seed would not be part of
                // the experiment: retry (handshakes time out while hundreds
                // of nodes start), then stop rather than measure without it.
                for address in bootstrap {
                    let mut tries = 0;
                    while let Err(e) = node.dial(address.clone()).await {
                        tries += 1;
                        if tries == SETUP_DIALS {
                            return Err(e.into());
                        }
                        tracing::warn!(error = %e, tries, "cannot reach the seed yet; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Ok::<_, NodeError>(node)
            }
        });
        for node in futures::future::join_all(started).await {
            nodes.push(node?);
        }
    }
    let trackers: Vec<_> = nodes.iter().map(track_uploads).collect();
    // Let the network form (identify, Kademlia bootstrap; each node meets
    // dozens of others) before the measurement starts: the experiment is
    // about pulling in a running network, not about booting one.
    settle(process_cpu).await;
    let setup = setup_start.elapsed();

    // Everyone pulls at once.
    let name = package.manifest().name.clone();
    let start = Instant::now();
    let cpu_start = process_cpu();
    let mut watches = Vec::with_capacity(n);
    let mut pulls = FuturesUnordered::new();
    for (i, node) in nodes.iter().enumerate() {
        let (future, watch) = node.pull_with_progress(&name);
        watches.push(watch);
        pulls.push(async move { (i, future.await, start.elapsed()) });
    }
    let mut results: HashMap<usize, (Result<sp2a::node::Pulled, String>, Duration)> =
        HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while results.len() < n {
        tokio::select! {
            Some((i, result, at)) = pulls.next() => {
                results.insert(i, (result.map_err(|e| e.to_string()), at));
            }
            _ = tick.tick() => {
                rss_peak = rss_peak.max(process_rss_kib().unwrap_or(0));
                let mut downloading = 0;
                let mut bytes = 0;
                for watch in &watches {
                    let p = watch.borrow();
                    if p.stage == PullStage::Downloading {
                        downloading += 1;
                    }
                    bytes += p.bytes;
                }
                progress(Progress {
                    elapsed: start.elapsed(),
                    active: results.values().filter(|(r, _)| r.is_ok()).count(),
                    downloading,
                    bytes,
                    nodes: n,
                });
            }
        }
    }
    let elapsed = start.elapsed();
    let cost = Cost {
        cpu: cpu_start
            .zip(process_cpu())
            .map_or(Duration::ZERO, |(from, to)| to.saturating_sub(from)),
        elapsed,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rss_before,
        rss_peak: rss_peak.max(process_rss_kib().unwrap_or(0)),
        first_run,
    };
    progress(Progress {
        elapsed,
        active: results.values().filter(|(r, _)| r.is_ok()).count(),
        downloading: 0,
        bytes: 0,
        nodes: n,
    });
    // Let the last uploads' events arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut records = Vec::with_capacity(n);
    for (i, node) in nodes.iter().enumerate() {
        let (result, at) = results.remove(&i).expect("every pull finished");
        let uploads = trackers[i].0.lock().expect("uploads lock");
        let mut record = NodeRecord {
            index: i + 1,
            peer: node.peer_id(),
            discovery: Duration::ZERO,
            download: Duration::ZERO,
            deploy: Duration::ZERO,
            completed: None,
            uploaded: uploads.bytes,
            served_peers: Some(uploads.peers.len()),
            sources: Vec::new(),
            content_id: None,
            error: None,
        };
        match result {
            Ok(pulled) => {
                record.discovery = pulled.discovery;
                record.download = pulled.download;
                record.deploy = pulled.deploy;
                record.completed = Some(at);
                record.content_id = Some(pulled.content_id);
                record.sources = pulled.sources;
            }
            Err(e) => record.error = Some(e),
        }
        records.push(record);
    }
    let (seed_uploaded, seed_peers) = {
        let uploads = seed_uploads.lock().expect("uploads lock");
        (uploads.bytes, uploads.peers.len())
    };
    let all_done = records
        .iter()
        .map(|r| r.completed)
        .collect::<Option<Vec<_>>>()
        .and_then(|times| times.into_iter().max());
    let mut counters = Counters::default();
    for node in nodes.iter().chain([&seed]) {
        counters += node.counters();
    }
    for (_, task) in &trackers {
        task.abort();
    }
    seed_tracker.abort();
    let shutdowns = nodes.iter().chain([&seed]).map(|node| node.shutdown());
    futures::future::join_all(shutdowns).await;
    Ok(Outcome {
        size: package.advert().component_len(),
        experiment,
        nodes: records,
        seed_uploaded,
        seed_peers,
        all_done,
        setup,
        counters,
        cost,
        processes: false,
    })
}

/// The lower bound on the time to send a file of `size` bytes in `chunks`
/// pieces from one seed to `nodes` nodes when every node uploads at `rate`
/// bytes per second (Mundinger, Weber & Weiss, uplink-sharing model):
/// `T* = (F/U)(1 + floor(log2 N)/k)`.
pub fn lower_bound(size: u64, rate: u64, nodes: usize, chunks: u64) -> Duration {
    let f_over_u = size as f64 / rate.max(1) as f64;
    let log = (nodes.max(1) as f64).log2().floor();
    Duration::from_secs_f64(f_over_u * (1.0 + log / chunks.max(1) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_bound_of_the_default_experiment() {
        // 2 MiB at 512 KiB/s in 32 chunks to 400 nodes: 4 s * (1 + 8/32) = 5 s.
        let t = lower_bound(2 << 20, 512 << 10, 400, 32);
        assert!((t.as_secs_f64() - 5.0).abs() < 1e-9, "{t:?}");
        let one = lower_bound(2 << 20, 512 << 10, 1, 32);
        assert!((one.as_secs_f64() - 4.0).abs() < 1e-9);
    }
}
