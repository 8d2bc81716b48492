//! `sp2a bench simulate`: the diffusion experiment at internet scale, as a
//! discrete-event simulation that drives the real swarm core
//! ([`sp2a::swarm::SwarmCore`]) and the real upload decisions
//! ([`choose_for_want`], [`Uplink`]) with a model of the network in place of
//! libp2p.
//!
//! The model:
//! * **Nodes**: one seed holding the package and N downloaders that start
//!   together (the paper's experiment). Every node has an uplink of rate U
//!   (a FIFO of bytes, as the real node's [`Uplink`]) and optionally a
//!   downlink of rate D.
//! * **Latency**: each node has an access delay drawn uniformly so that the
//!   round trip between two nodes, twice the sum of their delays, lies in
//!   `[rtt_min, rtt_max]`.
//! * **Serving**, as `node::upload` does in swarm mode: at most 64 answers
//!   in flight per node, `Busy` (with up to 8 recent askers as hints) when
//!   the uplink's backlog exceeds 1 s, a requested range only if held in
//!   full, a `Want` answered with [`choose_for_want`], and up to 2 recent
//!   askers as hints with data.
//! * **Discovery**: a node publishes its provider record when its download
//!   starts; the record becomes visible one lookup later on the key's 20
//!   replica servers. Each keeps up to its store's total of 16,384 records
//!   for the key (`--records-per-key`; `net::records` lets a popular key
//!   take the room other keys leave, and the key's replicas are assumed to
//!   hold little else), evicting the one with the highest draw under its
//!   own secret, as `net::records` does (`--record-ranking closest`: the one
//!   farthest from the key, the same on every server), and answers with a
//!   random 20 of them. A lookup merges the answers of 3 replicas (the
//!   node's query ends shortly after the second answer) and takes `hops`
//!   round trips, `hops = 1 + ceil(log_20 S)` for S DHT servers (one node
//!   in 10).
//! * **Churn**: a fraction of the downloaders leaves at a uniformly random
//!   moment of the first 2 T*; a request to a node that left fails after a
//!   round trip, and T_all counts the nodes that stayed.
//! * A node is an active provider a fixed `deploy` time after its download
//!   completes (compile, self-test, announce).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sp2a::blocks::{BLOCK_SIZE, Bitmap, block_count};
use sp2a::node::config::PullConfig;
use sp2a::package::units::{format_size, parse_duration, parse_size};
use sp2a::swarm::{
    Action, Answer, Ask, Event, Holdings, RequestId, SwarmCore, Uplink, choose_for_want,
};

use crate::diffusion::lower_bound;

/// Answers with data on their way from one node at once (`node::upload`:
/// the benchmark's `max-concurrent`).
const MAX_ANSWERING: usize = 64;
/// A node answers `Busy` when its uplink is queued further ahead than this.
const MAX_BACKLOG: Duration = Duration::from_secs(1);
/// Recent askers a node remembers per package, and names as hints.
const MAX_ASKERS: usize = 32;
const HINTS_WITH_DATA: usize = 2;
const HINTS_WHEN_BUSY: usize = 8;
/// Providers a DHT server keeps for the key by default: its store's total
/// (`net::records::ProviderLimits`), which a popular key may fill.
const RECORDS_PER_KEY: usize = 16384;
/// Kademlia's bucket size: a lookup gains about log2(20) bits per hop, a
/// key's records are replicated on this many servers, and a server names at
/// most this many providers in an answer.
const KAD_K: usize = 20;
/// Replicas whose answers a lookup merges.
const LOOKUP_ANSWERS: usize = 3;

/// Which providers a DHT server keeps when a key has more than it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordRanking {
    /// Those with the lowest draw under the server's own secret: each
    /// server keeps a different uniform sample (the node's store).
    Drawn,
    /// Those closest (XOR) to the key: every server keeps the same ones.
    Closest,
}

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Downloaders per run (a list: one run each).
    #[arg(long, value_delimiter = ',', default_value = "100,400,1000")]
    nodes: Vec<usize>,
    /// Package size.
    #[arg(long, default_value = "2 MiB")]
    size: String,
    /// Every node's uplink rate, per second.
    #[arg(long, default_value = "512 KiB")]
    upload_rate: String,
    /// Every node's downlink rate, per second (default: unlimited).
    #[arg(long)]
    download_rate: Option<String>,
    /// Shortest round trip between two nodes.
    #[arg(long, default_value = "10ms")]
    rtt_min: String,
    /// Longest round trip between two nodes.
    #[arg(long, default_value = "150ms")]
    rtt_max: String,
    /// Fraction of the downloaders that leave during the run.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// One node in this many is a DHT server.
    #[arg(long, default_value_t = 10)]
    dht_server_every: usize,
    /// Providers a DHT server keeps for the key (the node's store holds
    /// 16,384 records, and a key keeps 64 for sure when others need room).
    #[arg(long, default_value_t = RECORDS_PER_KEY)]
    records_per_key: usize,
    /// Which of a crowded key's providers a DHT server keeps.
    #[arg(long, value_enum, default_value_t = RecordRanking::Drawn)]
    record_ranking: RecordRanking,
    /// From a completed download to an active provider.
    #[arg(long, default_value = "100ms")]
    deploy: String,
    /// Blocks of 16 KiB per request at first.
    #[arg(long, default_value_t = 4)]
    blocks_per_request: u32,
    /// Seed of every random choice: the same seed, the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the CSV and the plot go.
    #[arg(long, default_value = "diffusion-results/simulated")]
    out: PathBuf,
}

/// One simulated run's parameters.
#[derive(Clone, Debug)]
pub struct Model {
    pub nodes: usize,
    pub size: u64,
    pub upload_rate: u64,
    pub download_rate: Option<u64>,
    pub rtt_min: Duration,
    pub rtt_max: Duration,
    pub churn: f64,
    pub dht_server_every: usize,
    pub records_per_key: usize,
    pub record_ranking: RecordRanking,
    pub deploy: Duration,
    pub blocks_per_request: u32,
    pub seed: u64,
}

/// What a simulated run measured.
#[derive(Clone, Debug)]
pub struct Simulated {
    pub model: Model,
    pub t_star: Duration,
    /// Until every downloader that stayed was an active provider.
    pub t_all: Option<Duration>,
    /// When each downloader that stayed became an active provider, sorted.
    pub completed: Vec<Duration>,
    /// Downloaders that stayed but did not complete (gave up).
    pub failed: usize,
    pub left: usize,
    /// Bytes the seed uploaded.
    pub seed_uploaded: u64,
    /// Round trips per DHT lookup.
    pub hops: u32,
    /// Median time of the first lookup (find providers).
    pub discovery_p50: Duration,
    pub lookups: u64,
    pub requests: u64,
    pub busy: u64,
    /// Answers that carried blocks, and the blocks they carried.
    pub answers_with_data: u64,
    pub blocks_sent: u64,
    pub events: u64,
    /// Wall time the simulation took.
    pub wall: Duration,
}

type Core = SwarmCore<u32, ()>;

struct SimNode {
    /// Half of this node's share of a round trip.
    delay: Duration,
    uplink: Uplink,
    downlink: Option<Uplink>,
    core: Option<Core>,
    /// Whole package held (the seed, or an active provider).
    complete: bool,
    /// Download finished (blocks all verified), from the start.
    downloaded: Option<Duration>,
    active: Option<Duration>,
    discovery: Option<Duration>,
    gave_up: bool,
    left: bool,
    /// When answers with data now on the uplink are sent.
    answering: Vec<Instant>,
    uploads_per_block: Vec<u32>,
    askers: VecDeque<u32>,
    uploaded: u64,
    /// The wake-up scheduled for the core, if any.
    wake_at: Option<Instant>,
    /// This node's distance to the package key (its id XOR the key).
    distance: u64,
    /// It announced its provider record.
    published: bool,
}

enum Ev {
    /// The first lookup (find providers, fetch the advert) ended.
    Found {
        node: u32,
    },
    Wake {
        node: u32,
    },
    Request {
        from: u32,
        to: u32,
        id: RequestId,
        ask: Ask,
    },
    Answer {
        to: u32,
        id: RequestId,
        answer: Answer<u32, ()>,
    },
    /// Blocks arriving: the answer is built when they land.
    Data {
        to: u32,
        id: RequestId,
        first: u64,
        count: u32,
        holdings: Holdings,
        hints: Vec<u32>,
    },
    Lookup {
        node: u32,
        found: Vec<u32>,
    },
    Published {
        node: u32,
    },
    Leave {
        node: u32,
    },
    Active {
        node: u32,
    },
}

/// One of the key's replica servers: the provider records it keeps, as
/// node ids with their rank (the highest goes first when the key is full),
/// and the secret it draws them under.
struct Replica {
    salt: u64,
    kept: BinaryHeap<(u64, u32)>,
}

struct Sim {
    model: Model,
    blocks: u64,
    base: Instant,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    seq: u64,
    rng: StdRng,
    /// The provider records each replica server of the key keeps.
    replicas: Vec<Replica>,
    hops: u32,
    lookups: u64,
    requests: u64,
    busy: u64,
    answers_with_data: u64,
    blocks_sent: u64,
    processed: u64,
}

impl Sim {
    fn new(model: Model) -> Self {
        let mut rng = StdRng::seed_from_u64(model.seed);
        let blocks = block_count(model.size);
        let base = Instant::now();
        let quarter_min = model.rtt_min / 4;
        let quarter_max = (model.rtt_max / 4).max(quarter_min);
        let nodes = (0..=model.nodes)
            .map(|i| SimNode {
                delay: quarter_min + (quarter_max - quarter_min).mul_f64(rng.r#gen::<f64>()),
                uplink: Uplink::new(model.upload_rate, base),
                downlink: model.download_rate.map(|rate| Uplink::new(rate, base)),
                core: None,
                complete: i == 0,
                downloaded: None,
                active: (i == 0).then_some(Duration::ZERO),
                discovery: None,
                gave_up: false,
                left: false,
                answering: Vec::new(),
                uploads_per_block: vec![0; blocks as usize],
                askers: VecDeque::new(),
                uploaded: 0,
                wake_at: None,
                distance: rng.r#gen(),
                published: false,
            })
            .collect();
        let servers = (model.nodes + 1)
            .div_ceil(model.dht_server_every.max(1))
            .max(1);
        let hops = 1
            + ((servers as f64).ln() / (KAD_K as f64).ln())
                .ceil()
                .max(0.0) as u32;
        let replicas = (0..servers.min(KAD_K))
            .map(|_| Replica {
                salt: rng.r#gen(),
                kept: BinaryHeap::new(),
            })
            .collect();
        let mut sim = Self {
            blocks,
            base,
            nodes,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            seq: 0,
            rng,
            replicas,
            hops,
            lookups: 0,
            requests: 0,
            busy: 0,
            answers_with_data: 0,
            blocks_sent: 0,
            processed: 0,
            model,
        };
        sim.publish(0);
        sim
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(ev);
                slot
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        // The sequence number breaks ties in order of scheduling; the slot
        // is recovered from the low bits.
        self.queue
            .push(Reverse((at, (self.seq << 24) | slot as u64 & 0xff_ffff)));
        debug_assert!(slot < 1 << 24, "too many events pending");
    }

    fn one_way(&self, a: u32, b: u32) -> Duration {
        self.nodes[a as usize].delay + self.nodes[b as usize].delay
    }

    /// A lookup from `node`: `hops` round trips to random servers.
    fn lookup_time(&mut self, node: u32) -> Duration {
        let own = self.nodes[node as usize].delay;
        (0..self.hops)
            .map(|_| {
                let other = self.rng.gen_range(0..self.nodes.len());
                (own + self.nodes[other].delay) * 2
            })
            .sum()
    }

    /// The providers a lookup from `node` finds: the answers of
    /// [`LOOKUP_ANSWERS`] random replicas, each a random [`KAD_K`] of the
    /// records it keeps, ending early once `limit` are known after two
    /// answers (time linear in the answers, not in the records).
    fn providers_for(&mut self, node: u32, limit: usize) -> Vec<u32> {
        let asked = rand::seq::index::sample(
            &mut self.rng,
            self.replicas.len(),
            LOOKUP_ANSWERS.min(self.replicas.len()),
        );
        let mut found: Vec<u32> = Vec::new();
        for (answers, replica) in asked.into_iter().enumerate() {
            if answers >= 2 && found.len() >= limit {
                break;
            }
            let records = self.replicas[replica].kept.as_slice();
            let named =
                rand::seq::index::sample(&mut self.rng, records.len(), KAD_K.min(records.len()));
            for i in named {
                let (_, provider) = records[i];
                if provider != node && !found.contains(&provider) {
                    found.push(provider);
                }
            }
        }
        found
    }

    /// Where `node` ranks among the key's providers on replica `replica`:
    /// the highest goes first when the key is full.
    fn rank(&self, replica: usize, node: u32) -> u64 {
        match self.model.record_ranking {
            RecordRanking::Closest => self.nodes[node as usize].distance,
            RecordRanking::Drawn => mix(self.replicas[replica].salt ^ u64::from(node)),
        }
    }

    /// `node`'s provider record reaches the DHT a lookup from now.
    fn announce(&mut self, node: u32, now: Instant) {
        let delay = self.lookup_time(node);
        self.push(now + delay, Ev::Published { node });
    }

    /// A provider record arrives at every replica: each keeps it if it
    /// ranks among the lowest there.
    fn publish(&mut self, node: u32) {
        if std::mem::replace(&mut self.nodes[node as usize].published, true) {
            return;
        }
        let cap = self.model.records_per_key.max(1);
        for replica in 0..self.replicas.len() {
            let rank = self.rank(replica, node);
            let kept = &mut self.replicas[replica].kept;
            kept.push((rank, node));
            if kept.len() > cap {
                kept.pop();
            }
        }
    }

    fn run(mut self) -> Simulated {
        let started = Instant::now();
        let model = self.model.clone();
        let t_star = lower_bound(
            model.size,
            model.upload_rate,
            model.nodes,
            self.blocks
                .div_ceil(u64::from(model.blocks_per_request.max(1))),
        );
        for node in 1..=model.nodes as u32 {
            let delay = self.lookup_time(node) + (self.nodes[node as usize].delay * 4);
            self.push(self.base + delay, Ev::Found { node });
            if self.rng.r#gen::<f64>() < model.churn {
                let at = t_star.mul_f64(2.0 * self.rng.r#gen::<f64>());
                self.push(self.base + at, Ev::Leave { node });
            }
        }
        let horizon = self.base + t_star.mul_f64(50.0).max(Duration::from_secs(600));
        while let Some(Reverse((now, key))) = self.queue.pop() {
            if now > horizon {
                break;
            }
            let slot = (key & 0xff_ffff) as usize;
            let ev = self.events[slot].take().expect("pending event");
            self.free.push(slot);
            self.processed += 1;
            self.handle(now, ev);
        }

        let stayed: Vec<&SimNode> = self.nodes[1..].iter().filter(|n| !n.left).collect();
        let mut completed: Vec<Duration> = stayed.iter().filter_map(|n| n.active).collect();
        completed.sort();
        let failed = stayed.len() - completed.len();
        let mut discovery: Vec<Duration> = stayed.iter().filter_map(|n| n.discovery).collect();
        discovery.sort();
        Simulated {
            t_star,
            t_all: (failed == 0).then(|| completed.last().copied().unwrap_or_default()),
            failed,
            left: model.nodes - stayed.len(),
            completed,
            seed_uploaded: self.nodes[0].uploaded,
            hops: self.hops,
            discovery_p50: discovery
                .get(discovery.len() / 2)
                .copied()
                .unwrap_or_default(),
            lookups: self.lookups,
            requests: self.requests,
            busy: self.busy,
            answers_with_data: self.answers_with_data,
            blocks_sent: self.blocks_sent,
            events: self.processed,
            wall: started.elapsed(),
            model,
        }
    }

    fn handle(&mut self, now: Instant, ev: Ev) {
        match ev {
            Ev::Found { node } => {
                let n = &self.nodes[node as usize];
                if n.left {
                    return;
                }
                self.lookups += 1;
                let found = self.providers_for(node, self.model.records_per_key);
                self.nodes[node as usize].discovery = Some(now - self.base);
                // The node's settings, as the diffusion benchmark sets them.
                let mut config = PullConfig {
                    blocks_per_request: self.model.blocks_per_request,
                    ..PullConfig::default()
                };
                config.total_timeout = Duration::from_secs(3600);
                let params = config.swarm_params(self.blocks);
                let seed = self.rng.r#gen();
                let core = Core::new(params, found.into_iter().map(|p| (p, ())), now, seed);
                self.nodes[node as usize].core = Some(core);
                // Swarm mode: a downloader provides its partial blocks.
                self.announce(node, now);
                self.drive(node, now);
            }
            Ev::Wake { node } => {
                if self.nodes[node as usize].wake_at == Some(now) {
                    self.nodes[node as usize].wake_at = None;
                    self.drive(node, now);
                }
            }
            Ev::Request { from, to, id, ask } => self.serve(now, from, to, id, ask),
            Ev::Data {
                to,
                id,
                first,
                count,
                holdings,
                hints,
            } => {
                let Some(core) = self.nodes[to as usize].core.as_ref() else {
                    return;
                };
                let have = core.verified();
                let new_blocks = (first..first + u64::from(count))
                    .filter(|b| !have.contains(*b))
                    .count() as u64;
                let answer = Answer::Blocks {
                    first,
                    verified: count,
                    new_bytes: new_blocks * BLOCK_SIZE,
                    bad: None,
                    holdings,
                    hints: hints.into_iter().map(|p| (p, ())).collect(),
                };
                self.deliver(to, now, id, answer);
            }
            Ev::Answer { to, id, answer } => self.deliver(to, now, id, answer),
            Ev::Lookup { node, found } => {
                if let Some(core) = self.nodes[node as usize].core.as_mut() {
                    core.handle(
                        now,
                        Event::Discovered(found.into_iter().map(|p| (p, ())).collect()),
                    );
                    self.drive(node, now);
                }
            }
            Ev::Published { node } => {
                if !self.nodes[node as usize].left {
                    self.publish(node);
                }
            }
            Ev::Leave { node } => {
                let n = &mut self.nodes[node as usize];
                n.left = true;
                n.core = None;
                for replica in &mut self.replicas {
                    replica.kept.retain(|(_, p)| *p != node);
                }
            }
            Ev::Active { node } => {
                let n = &mut self.nodes[node as usize];
                if !n.left {
                    n.complete = true;
                    n.active = Some(now - self.base);
                }
            }
        }
    }

    fn deliver(&mut self, to: u32, now: Instant, id: RequestId, answer: Answer<u32, ()>) {
        if let Some(core) = self.nodes[to as usize].core.as_mut() {
            core.handle(now, Event::Answered { id, answer });
            self.drive(to, now);
        }
    }

    /// Carries out the core's decisions and schedules its next wake-up.
    fn drive(&mut self, node: u32, now: Instant) {
        loop {
            let Some(core) = self.nodes[node as usize].core.as_mut() else {
                return;
            };
            let Some(action) = core.poll_action(now) else {
                break;
            };
            match action {
                Action::Request { id, peer, ask, .. } => {
                    self.requests += 1;
                    let at = now + self.one_way(node, peer);
                    self.push(
                        at,
                        Ev::Request {
                            from: node,
                            to: peer,
                            id,
                            ask,
                        },
                    );
                }
                // The answer will be ignored by the core.
                Action::Cancel { .. } | Action::Ban { .. } => {}
                Action::Discover { limit } => {
                    self.lookups += 1;
                    let found = self.providers_for(node, limit);
                    let at = now + self.lookup_time(node);
                    self.push(at, Ev::Lookup { node, found });
                }
                Action::Complete => {
                    let n = &mut self.nodes[node as usize];
                    n.downloaded = Some(now - self.base);
                    let at = now + self.model.deploy;
                    self.push(at, Ev::Active { node });
                }
                Action::GiveUp => {
                    let n = &mut self.nodes[node as usize];
                    n.gave_up = true;
                    n.core = None;
                    return;
                }
            }
        }
        let wake = self.nodes[node as usize]
            .core
            .as_ref()
            .and_then(|c| c.next_timeout());
        if let Some(at) = wake {
            let at = at.max(now);
            let n = &mut self.nodes[node as usize];
            if n.wake_at != Some(at) {
                n.wake_at = Some(at);
                self.push(at, Ev::Wake { node });
            }
        }
    }

    /// An answer without data reaches the requester `to` at `at`.
    fn reply(&mut self, at: Instant, to: u32, id: RequestId, answer: Answer<u32, ()>) {
        self.push(at, Ev::Answer { to, id, answer });
    }

    /// A request arrives at `to`: answered as `node::upload` answers it.
    fn serve(&mut self, now: Instant, from: u32, to: u32, id: RequestId, ask: Ask) {
        let back = self.one_way(to, from);
        let provider = &mut self.nodes[to as usize];
        if provider.left {
            let answer = Answer::Failed("connection closed".into());
            self.reply(now + back, from, id, answer);
            return;
        }
        // Recent askers, for peer exchange.
        if !provider.askers.contains(&from) {
            if provider.askers.len() >= MAX_ASKERS {
                provider.askers.pop_front();
            }
            provider.askers.push_back(from);
        }
        provider.answering.retain(|done| *done > now);
        if provider.answering.len() >= MAX_ANSWERING || provider.uplink.backlog(now) > MAX_BACKLOG {
            self.busy += 1;
            let hints = self.hints(to, from, HINTS_WHEN_BUSY);
            let answer = Answer::Busy {
                hints: hints.into_iter().map(|p| (p, ())).collect(),
            };
            self.reply(now + back, from, id, answer);
            return;
        }
        let blocks = self.blocks;
        let provider = &self.nodes[to as usize];
        let complete = provider.complete;
        let held = provider.core.as_ref().map(|c| c.verified().clone());
        let holds = |b: u64| complete || held.as_ref().is_some_and(|h| h.contains(b));
        let selected = match &ask {
            Ask::Blocks { first, count } => {
                let end = first + u64::from(*count);
                (end <= blocks && (*first..end).all(holds)).then_some((*first, *count))
            }
            Ask::Want { wanted, max } => {
                let uploads = &provider.uploads_per_block;
                choose_for_want(
                    blocks,
                    *max,
                    wanted,
                    holds,
                    |b| uploads[b as usize],
                    &mut self.rng,
                )
            }
        };
        let Some((first, count)) = selected else {
            self.reply(now + back, from, id, Answer::NotFound);
            return;
        };
        let holdings = if complete {
            Holdings::All
        } else {
            Holdings::Some(held.unwrap_or_else(|| Bitmap::empty(blocks)))
        };
        let hints = self.hints(to, from, HINTS_WITH_DATA);
        let bytes = u64::from(count) * BLOCK_SIZE;
        let provider = &mut self.nodes[to as usize];
        for b in first..first + u64::from(count) {
            provider.uploads_per_block[b as usize] += 1;
        }
        provider.uploaded += bytes;
        self.answers_with_data += 1;
        self.blocks_sent += u64::from(count);
        let sent = provider.uplink.reserve(bytes, now);
        provider.answering.push(sent);
        let mut arrives = sent + back;
        if let Some(downlink) = self.nodes[from as usize].downlink.as_mut() {
            arrives = arrives.max(downlink.reserve(bytes, sent + back));
        }
        self.push(
            arrives,
            Ev::Data {
                to: from,
                id,
                first,
                count,
                holdings,
                hints,
            },
        );
    }

    /// Up to `max` recent askers of `node`, other than `asker`, at random.
    fn hints(&mut self, node: u32, asker: u32, max: usize) -> Vec<u32> {
        let mut askers: Vec<u32> = self.nodes[node as usize]
            .askers
            .iter()
            .copied()
            .filter(|p| *p != asker)
            .collect();
        askers.shuffle(&mut self.rng);
        askers.truncate(max);
        askers
    }
}

/// SplitMix64's finaliser: a replica's draw of a node.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Runs one simulation.
pub fn simulate(model: Model) -> Simulated {
    Sim::new(model).run()
}

pub fn run(args: Options) -> anyhow::Result<ExitCode> {
    let size = parse_size(&args.size).context("--size")?;
    let upload_rate = parse_size(&args.upload_rate).context("--upload-rate")?;
    let download_rate = args
        .download_rate
        .as_deref()
        .map(parse_size)
        .transpose()
        .context("--download-rate")?;
    let rtt_min = parse_duration(&args.rtt_min).context("--rtt-min")?;
    let rtt_max = parse_duration(&args.rtt_max).context("--rtt-max")?;
    anyhow::ensure!(rtt_min <= rtt_max, "--rtt-min is above --rtt-max");
    anyhow::ensure!(
        (0.0..1.0).contains(&args.churn),
        "--churn is a fraction below 1"
    );
    let deploy = parse_duration(&args.deploy).context("--deploy")?;
    std::fs::create_dir_all(&args.out)?;
    println!(
        "simulated diffusion: F = {}, U = {}/s, D = {}, RTT {:?}-{:?}, churn {:.0}%, {} DHT records per key ({:?}), deploy {:?}, seed {}",
        format_size(size),
        format_size(upload_rate),
        download_rate.map_or("unlimited".into(), |d| format!("{}/s", format_size(d))),
        rtt_min,
        rtt_max,
        args.churn * 100.0,
        args.records_per_key,
        args.record_ranking,
        deploy,
        args.seed
    );
    println!();
    println!(
        "{:>8} {:>9} {:>10} {:>9} {:>10} {:>9} {:>5} {:>10} {:>7} {:>10} {:>8}",
        "N",
        "T*",
        "T_all",
        "T_all/T*",
        "p50 done",
        "seed (F)",
        "hops",
        "disc. p50",
        "left",
        "events",
        "wall"
    );
    let mut results = Vec::new();
    for &nodes in &args.nodes {
        let model = Model {
            nodes,
            size,
            upload_rate,
            download_rate,
            rtt_min,
            rtt_max,
            churn: args.churn,
            dht_server_every: args.dht_server_every,
            records_per_key: args.records_per_key,
            record_ranking: args.record_ranking,
            deploy,
            blocks_per_request: args.blocks_per_request,
            seed: args.seed,
        };
        let r = simulate(model);
        println!(
            "{:>8} {:>8.2}s {:>10} {:>9} {:>9.2}s {:>9.2} {:>5} {:>9.2}s {:>7} {:>10} {:>7.1}s",
            nodes,
            r.t_star.as_secs_f64(),
            r.t_all.map_or(format!("{} failed", r.failed), |t| format!(
                "{:.2}s",
                t.as_secs_f64()
            )),
            r.t_all.map_or("-".into(), |t| format!(
                "{:.2}",
                t.as_secs_f64() / r.t_star.as_secs_f64()
            )),
            r.completed
                .get(r.completed.len() / 2)
                .map_or(0.0, |d| d.as_secs_f64()),
            r.seed_uploaded as f64 / size as f64,
            r.hops,
            r.discovery_p50.as_secs_f64(),
            r.left,
            r.events,
            r.wall.as_secs_f64()
        );
        results.push(r);
    }
    write_csv(&args.out, &results)?;
    crate::plot::simulated(&args.out.join("simulated.svg"), &results)?;
    println!();
    println!(
        "CSV and plot in {} (summary.csv, completions.csv, simulated.svg)",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_csv(dir: &std::path::Path, results: &[Simulated]) -> anyhow::Result<()> {
    use std::fmt::Write;
    let mut summary = String::from(
        "nodes,upload_rate,churn,records_per_key,record_ranking,t_star_s,t_all_s,ratio,p50_done_s,seed_uploaded_f,hops,discovery_p50_s,left,failed,lookups,requests,busy,answers_with_data,blocks_sent,events,wall_s\n",
    );
    let mut completions = String::from("nodes,rank,completed_s\n");
    for r in results {
        let t_all = r.t_all.map(|t| t.as_secs_f64());
        writeln!(
            summary,
            "{},{},{},{},{},{:.3},{},{},{:.3},{:.3},{},{:.3},{},{},{},{},{},{},{},{},{:.2}",
            r.model.nodes,
            r.model.upload_rate,
            r.model.churn,
            r.model.records_per_key,
            match r.model.record_ranking {
                RecordRanking::Drawn => "drawn",
                RecordRanking::Closest => "closest",
            },
            r.t_star.as_secs_f64(),
            t_all.map_or(String::new(), |t| format!("{t:.3}")),
            t_all.map_or(String::new(), |t| format!(
                "{:.3}",
                t / r.t_star.as_secs_f64()
            )),
            r.completed
                .get(r.completed.len() / 2)
                .map_or(0.0, |d| d.as_secs_f64()),
            r.seed_uploaded as f64 / r.model.size as f64,
            r.hops,
            r.discovery_p50.as_secs_f64(),
            r.left,
            r.failed,
            r.lookups,
            r.requests,
            r.busy,
            r.answers_with_data,
            r.blocks_sent,
            r.events,
            r.wall.as_secs_f64()
        )?;
        for (rank, done) in r.completed.iter().enumerate() {
            writeln!(
                completions,
                "{},{},{:.3}",
                r.model.nodes,
                rank + 1,
                done.as_secs_f64()
            )?;
        }
    }
    std::fs::write(dir.join("summary.csv"), summary)?;
    std::fs::write(dir.join("completions.csv"), completions)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(nodes: usize) -> Model {
        Model {
            nodes,
            size: 2 << 20,
            upload_rate: 512 << 10,
            download_rate: None,
            rtt_min: Duration::from_millis(10),
            rtt_max: Duration::from_millis(100),
            churn: 0.0,
            dht_server_every: 10,
            records_per_key: RECORDS_PER_KEY,
            record_ranking: RecordRanking::Drawn,
            deploy: Duration::from_millis(100),
            blocks_per_request: 4,
            seed: 7,
        }
    }

    #[test]
    fn every_downloader_completes_and_no_faster_than_the_bound() {
        let r = simulate(model(200));
        let t_all = r.t_all.expect("every node completed");
        assert_eq!(r.completed.len(), 200);
        assert!(
            t_all >= r.t_star,
            "{t_all:?} below the bound {:?}",
            r.t_star
        );
        // The seed cannot upload faster than its uplink (what it queued
        // last may go out up to its backlog limit and one answer later).
        let most = 512.0 * 1024.0 * (t_all + MAX_BACKLOG).as_secs_f64() + (1 << 20) as f64;
        assert!((r.seed_uploaded as f64) <= most + 1.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let a = simulate(model(50));
        let b = simulate(model(50));
        assert_eq!(a.completed, b.completed);
        assert_eq!(a.seed_uploaded, b.seed_uploaded);
        let mut other = model(50);
        other.seed = 8;
        assert_ne!(simulate(other).completed, a.completed);
    }

    #[test]
    fn a_slower_uplink_takes_longer() {
        let fast = simulate(model(100));
        let mut slow = model(100);
        slow.upload_rate = 128 << 10;
        let slow = simulate(slow);
        // A quarter of the rate: the bound is four times as long.
        assert_eq!(slow.t_star, fast.t_star * 4);
        assert!(slow.t_all.unwrap() > fast.t_all.unwrap() * 2);
        assert!(slow.t_all.unwrap() >= slow.t_star);
    }

    #[test]
    fn nodes_that_leave_do_not_hold_up_the_others() {
        let mut churned = model(200);
        churned.churn = 0.3;
        let r = simulate(churned);
        assert!(r.left > 30, "{} left", r.left);
        assert_eq!(r.failed, 0, "a node that stayed did not complete");
        assert_eq!(r.completed.len(), 200 - r.left);
    }

    /// Places per key on a replica whose store is crowded by other keys:
    /// what each keeps for sure.
    const CROWDED: usize = 64;

    fn crowded(nodes: usize) -> Model {
        Model {
            records_per_key: CROWDED,
            ..model(nodes)
        }
    }

    #[test]
    fn drawn_records_spread_the_load_that_the_closest_concentrate() {
        let drawn = simulate(crowded(400));
        let mut closest = crowded(400);
        closest.record_ranking = RecordRanking::Closest;
        let closest = simulate(closest);
        assert!(
            drawn.t_all.unwrap() < closest.t_all.unwrap(),
            "{:?} vs {:?}",
            drawn.t_all,
            closest.t_all
        );
        assert!(drawn.seed_uploaded < closest.seed_uploaded);
    }

    #[test]
    fn a_key_given_the_room_spreads_the_load_further() {
        let roomy = simulate(model(1000));
        let crowded = simulate(crowded(1000));
        assert!(
            roomy.t_all.unwrap() < crowded.t_all.unwrap(),
            "{:?} vs {:?}",
            roomy.t_all,
            crowded.t_all
        );
        assert!(roomy.seed_uploaded < crowded.seed_uploaded);
    }

    #[test]
    fn replicas_keep_different_samples_unless_ranked_by_distance() {
        let mut sim = Sim::new(crowded(1000));
        for node in 1..=1000 {
            sim.publish(node);
        }
        let kept = |sim: &Sim, r: usize| -> std::collections::HashSet<u32> {
            sim.replicas[r].kept.iter().map(|(_, p)| *p).collect()
        };
        assert_eq!(sim.replicas.len(), KAD_K);
        assert_eq!(kept(&sim, 0).len(), CROWDED);
        let shared = kept(&sim, 0).intersection(&kept(&sim, 1)).count();
        assert!(shared < CROWDED / 2, "{shared} shared");
        // Given the room, a replica keeps every provider (the seed too).
        let mut sim = Sim::new(model(1000));
        for node in 1..=1000 {
            sim.publish(node);
        }
        assert_eq!(kept(&sim, 0).len(), 1 + 1000);
        let mut closest = crowded(1000);
        closest.record_ranking = RecordRanking::Closest;
        let mut sim = Sim::new(closest);
        for node in 1..=1000 {
            sim.publish(node);
        }
        assert_eq!(kept(&sim, 0), kept(&sim, 1));
    }

    #[test]
    fn lookups_take_more_hops_in_a_larger_network() {
        let small = Sim::new(model(100)).hops;
        let large = Sim::new(model(100_000)).hops;
        assert!(large > small, "{small} vs {large}");
    }
}
