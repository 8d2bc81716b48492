//! A node's configuration: every setting with its default, the
//! configuration file (TOML) that sets them, and the overrides a command
//! line adds on top. The CLI, the tests and the benchmarks all build their
//! configuration here.
//!
//! ```toml
//! data-dir = "node-data"              # identity, store, compile cache, control socket
//! policy = "policy.toml"              # the node policy (default: deny everything)
//! share = ["hello.rps"]               # packages provided from the start (pinned)
//! standby = ["live"]                  # services this node offers to host when asked
//! prefetch = true                     # a standby downloads and keeps them beforehand
//! compile-cache = "/var/cache/sp2a"   # shared with this user's other nodes here
//!                                     # (default: <data-dir>/cache); each sharer
//!                                     # can run code in the others, so it must be
//!                                     # this user's, closed to other users
//! max-invocations-per-service = 8     # the paper's limit L
//! reshare = true                      # provide what this node pulls
//!
//! [net]
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! bootstrap = ["/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...", "/dns4/boot.example.org/tcp/4001/p2p/12D3KooW..."]
//! mdns = false
//! local-addresses = false             # dial private/loopback addresses from peer exchange
//! max-connections = 512
//! max-connections-per-peer = 4        # a relayed one, direct ones, AutoNAT dial-backs
//! request-timeout = "30s"
//! idle-timeout = "60s"
//! query-timeout = "10s"
//! inbound-queue = 256
//! max-concurrent-streams = 64
//! provider-records-per-peer = 512     # records from others held, per peer ...
//! provider-records-per-key = 64       # ... per key for sure (more while there is room)
//! provider-records = 16384            # ... in all
//! provider-record-ttl = "2h"          # ... each at most this long
//! kad-bucket-size = 20
//! dht-server = true                   # answer DHT requests while reachable
//! external = ["/ip4/198.51.100.7/tcp/4001"]  # reachable here (a forwarded port); AutoNAT checks
//! autonat = true                      # ask peers to dial back; answer their requests
//! upnp = false                        # ask the router to forward the listen ports
//! relays = 2                          # relay reservations held while not reachable
//! direct-wait = "3s"                  # a transfer waits this long for hole punching ...
//! max-relayed-download = "128 KiB"    # ... then goes through the relay only up to this
//!
//! [net.relay]                         # relaying for others, only while reachable
//! enabled = true
//! max-reservations = 128
//! max-reservations-per-peer = 4
//! reservation-duration = "1h"
//! max-circuits = 16
//! max-circuits-per-peer = 4
//! max-circuit-duration = "2m"
//! max-circuit-bytes = "128 KiB"
//!
//! [upload]
//! max-concurrent = 32
//! rate = "512 KiB"                    # per second; default unlimited
//! max-backlog = "1s"                  # with a rate: Busy beyond this queue
//! slots = 1                           # peers served at once, the rest in line; default unlimited
//! share-partial = true                # serve verified blocks while downloading
//!
//! [pull]
//! strategy = "swarm"                  # or "sequential" (the paper's approach)
//! parallel = 8                        # requests in flight (swarm)
//! blocks-per-request = 4              # 16 KiB blocks
//! attempt-budget = 4
//! attempt-timeout = "5s"              # first attempt; doubles per retry
//! advert-timeout = "5s"
//! rediscover-delay = "500ms"          # doubles while lookups find nobody new ...
//! max-rediscover-delay = "8s"         # ... up to this
//! timeout = "2m"                      # give up after
//! keep-partial = "168h"               # saved unfinished downloads kept this long ...
//! max-partial = "1 GiB"               # ... and within this in all
//!
//! [replication]                       # services whose manifest has <replicas>
//! report-every = "1s"                 # load reports to the other providers
//! report-ttl = "3s"                   # a provider silent this long is gone
//! hold = "30s"                        # low load this long before replicas retire
//! cooldown = "5s"                     # between solicitations of standbys
//! refresh = "30s"                     # look up the other providers again
//!
//! [reputation]                        # choosing among a service's providers
//! alpha = 8.0                         # choice weight is reputation to this power
//! exploration = 0.05                  # share of calls that go to newcomers
//! min = 0.0                           # known providers below this are not called
//! pin = ["12D3KooW..."]               # call only these when they provide it
//! block = ["12D3KooW..."]             # never call these
//!
//! [allow]                             # services open only to these peers
//! notes = ["12D3KooW..."]
//! ```
//!
//! Relative paths in a file are relative to the file's directory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::backoff::Backoff;
use crate::net::{Multiaddr, NetConfig, PeerId};
use crate::package::is_service_name;
use crate::package::units::{UnitError, parse_duration, parse_size};
use crate::policy::{Policy, PolicyError};

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("node configuration {path}: {error}")]
    InFile {
        path: String,
        error: Box<ConfigError>,
    },
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{field}: {error}")]
    Value {
        field: &'static str,
        error: UnitError,
    },
    #[error("{field}: bad multiaddr {value:?}")]
    Address { field: &'static str, value: String },
    #[error("reputation.{field}: bad peer id {value:?}")]
    Provider { field: &'static str, value: String },
    #[error("reputation.{field}: {value} is not a number in {range}")]
    Range {
        field: &'static str,
        value: f64,
        range: &'static str,
    },
    #[error("allow.{service}: bad peer id {value:?}")]
    PeerId { service: String, value: String },
    #[error("pull.strategy {0:?}: use \"swarm\" or \"sequential\"")]
    Strategy(String),
    #[error("standby {0:?} is not a service name")]
    Standby(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// How a component is downloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Blocks from several providers at once, rarest first, serving verified
    /// blocks before the download completes ([`crate::swarm`]).
    Swarm,
    /// The paper's approach: the whole file from one provider at a time,
    /// with its retry and rediscovery policy.
    Sequential,
}

/// Pull settings. Defaults: swarm strategy with up to 8 requests in flight,
/// 4 blocks (64 KiB) per request, a 4-attempt budget, 5 s first attempt
/// timeout, 5 s advert timeout, rediscovery after 500 ms doubling to 8 s,
/// give up after 2 minutes; unfinished downloads saved for 7 days, 1 GiB in
/// all.
#[derive(Clone, Debug)]
pub struct PullConfig {
    pub strategy: Strategy,
    /// Requests in flight at once (swarm strategy), one per provider.
    pub parallel: usize,
    pub blocks_per_request: u32,
    /// Swarm: failures before a provider that delivered nothing is dropped.
    /// Sequential: attempts spread over the providers of one result vector.
    pub attempt_budget: u32,
    /// Timeout of the first attempt; each retry doubles it.
    pub base_timeout: Duration,
    pub advert_timeout: Duration,
    /// First wait before discovering again; doubles while lookups bring
    /// nothing new, up to `max_rediscover_delay`.
    pub rediscover_delay: Duration,
    pub max_rediscover_delay: Duration,
    pub total_timeout: Duration,
    /// Saved unfinished downloads are removed when untouched this long ...
    pub keep_partial: Duration,
    /// ... and, least recently written first, beyond this many bytes.
    pub max_partial: u64,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Swarm,
            parallel: 8,
            blocks_per_request: 4,
            attempt_budget: 4,
            base_timeout: Duration::from_secs(5),
            advert_timeout: Duration::from_secs(5),
            rediscover_delay: Duration::from_millis(500),
            max_rediscover_delay: Duration::from_secs(8),
            total_timeout: Duration::from_secs(120),
            keep_partial: Duration::from_secs(7 * 24 * 3600),
            max_partial: 1 << 30,
        }
    }
}

impl PullConfig {
    /// Attempt timeouts: `base_timeout` doubling per retry (at most 64x).
    pub fn attempt_timeout(&self) -> Backoff {
        Backoff::new(self.base_timeout, self.base_timeout.saturating_mul(64))
    }

    /// Waits between discoveries.
    pub fn rediscover(&self) -> Backoff {
        Backoff::new(self.rediscover_delay, self.max_rediscover_delay)
    }

    /// The swarm core's settings for a download of `blocks` blocks under
    /// this configuration (the simulator uses the same).
    pub fn swarm_params(&self, blocks: u64) -> crate::swarm::Params {
        let mut params = crate::swarm::Params::new(blocks);
        params.blocks_per_request = self.blocks_per_request;
        params.parallel = self.parallel.max(1);
        params.attempt_budget = self.attempt_budget;
        params.attempt_timeout = self.attempt_timeout();
        params.rediscover = self.rediscover();
        params.deadline = self.total_timeout;
        params
    }

    /// Attempts per provider for a result vector of `providers` entries:
    /// few providers, more attempts each.
    pub fn attempts_per_provider(&self, providers: usize) -> u32 {
        let budget = self.attempt_budget.max(1);
        (budget as usize)
            .div_ceil(providers.max(1))
            .clamp(1, budget as usize) as u32
    }
}

/// Upload settings. Defaults: 32 concurrent block uploads, unlimited rate
/// (with a rate, `Busy` beyond 1 s of queued uploads), every peer served at
/// once, partial downloads served.
#[derive(Clone, Debug)]
pub struct UploadConfig {
    pub max_concurrent: usize,
    /// Upload rate of this node in bytes per second (`None`: unlimited):
    /// blocks and the results of calls answered for other peers.
    pub rate: Option<u64>,
    /// With a rate, answer `Busy` when the queue is longer than this.
    pub max_backlog: Duration,
    /// Peers served blocks at the same time (a peer holds its slot until it
    /// sends `Leave` or has not asked for two seconds); the others wait in a
    /// first-come, first-served line of at most 128 and are served the moment
    /// a slot frees; beyond that they are answered `Busy`. `None`: unlimited.
    /// The paper's server served one download at a time.
    pub slots: Option<usize>,
    /// Serve (and announce) the verified blocks of a download in progress.
    pub share_partial: bool,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 32,
            rate: None,
            max_backlog: Duration::from_secs(1),
            slots: None,
            share_partial: true,
        }
    }
}

/// Adaptive replication settings (services whose manifest has
/// `<replicas>`). Defaults: a load report every second, reports count for
/// 3 s, a 30 s hold before surplus replicas retire, 5 s between
/// solicitations, the other providers looked up every 30 s (sooner when an
/// unknown one reports).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    pub report_every: Duration,
    pub report_ttl: Duration,
    pub hold: Duration,
    pub cooldown: Duration,
    pub refresh: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            report_every: Duration::from_secs(1),
            report_ttl: Duration::from_secs(3),
            hold: Duration::from_secs(30),
            cooldown: Duration::from_secs(5),
            refresh: Duration::from_secs(30),
        }
    }
}

/// How a caller chooses among a service's providers (see
/// [`crate::reputation`]). Defaults: the core's ([`crate::reputation::Params`]:
/// α = 8, 5% exploration, no minimum), nothing pinned or blocked.
#[derive(Clone, Debug, Default)]
pub struct ReputationConfig {
    pub params: crate::reputation::Params,
    /// When any of these provides a service, only these are called.
    pub pin: HashSet<PeerId>,
    /// Never called.
    pub block: HashSet<PeerId>,
}

/// Everything a node is configured with. [`NodeConfig::new`] gives the
/// defaults listed in the module documentation.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Identity, store, compile cache and control socket live here.
    pub data_dir: PathBuf,
    /// The policy file (`None`: trust nobody, grant nothing).
    pub policy: Option<PathBuf>,
    /// Packages to provide from the start: pinned here, they never retire.
    pub share: Vec<PathBuf>,
    /// Services this node offers to host when their providers ask: it is
    /// findable as a standby node for each (`Node::find_standbys`).
    pub standby: Vec<String>,
    /// A standby downloads, verifies and keeps (without running) the
    /// services it stands by for, so that it starts them at once when asked.
    pub prefetch: bool,
    /// Compiled artifacts (`None`: `<data_dir>/cache`).
    pub compile_cache: Option<PathBuf>,
    pub net: NetConfig,
    /// The paper's limit L: concurrent invocations per service.
    pub max_invocations_per_service: usize,
    /// Provide what this node pulled (off: it only uses it, as a client).
    pub reshare: bool,
    pub upload: UploadConfig,
    pub pull: PullConfig,
    pub replication: ReplicationConfig,
    pub reputation: ReputationConfig,
    /// Services open only to these peers (others get an explicit refusal).
    pub allow: HashMap<String, HashSet<PeerId>>,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            policy: None,
            share: Vec::new(),
            standby: Vec::new(),
            prefetch: true,
            compile_cache: None,
            net: NetConfig::default(),
            max_invocations_per_service: 8,
            reshare: true,
            upload: UploadConfig::default(),
            pull: PullConfig::default(),
            replication: ReplicationConfig::default(),
            reputation: ReputationConfig::default(),
            allow: HashMap::new(),
        }
    }

    /// `$SP2A_DATA_DIR`, else `~/.sp2a`.
    pub fn default_data_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("SP2A_DATA_DIR") {
            return PathBuf::from(dir);
        }
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".sp2a"))
            .unwrap_or_else(|| PathBuf::from(".sp2a"))
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base).map_err(|error| ConfigError::InFile {
            path: path.display().to_string(),
            error: Box::new(error),
        })
    }

    /// Parses configuration text over the defaults; relative paths are
    /// relative to `base`. Without `data-dir`, the data directory is
    /// [`NodeConfig::default_data_dir`].
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text)?;
        let data_dir = file
            .data_dir
            .map(|d| base.join(d))
            .unwrap_or_else(Self::default_data_dir);
        let mut config = Self::new(data_dir);
        config.policy = file.policy.map(|p| base.join(p));
        config.share = file.share.iter().map(|p| base.join(p)).collect();
        if let Some(bad) = file.standby.iter().find(|n| !is_service_name(n)) {
            return Err(ConfigError::Standby(bad.clone()));
        }
        config.standby = file.standby;
        config.compile_cache = file.compile_cache.map(|d| base.join(d));
        set(
            &mut config.max_invocations_per_service,
            file.max_invocations_per_service.map(|n| n.max(1)),
        );
        set(&mut config.reshare, file.reshare);
        set(&mut config.prefetch, file.prefetch);
        for (service, peers) in file.allow {
            let peers = peers
                .iter()
                .map(|p| {
                    p.parse::<PeerId>().map_err(|_| ConfigError::PeerId {
                        service: service.clone(),
                        value: p.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
            config.allow.insert(service, peers);
        }
        file.net.apply(&mut config.net)?;
        file.upload.apply(&mut config.upload)?;
        file.pull.apply(&mut config.pull)?;
        file.replication.apply(&mut config.replication)?;
        file.reputation.apply(&mut config.reputation)?;
        Ok(config)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, overrides: Overrides) {
        if let Some(dir) = overrides.data_dir {
            self.data_dir = dir;
        }
        if let Some(policy) = overrides.policy {
            self.policy = Some(policy);
        }
        if !overrides.listen.is_empty() {
            self.net.listen = overrides.listen;
        }
        self.net.bootstrap.extend(overrides.bootstrap);
        self.net.nat.external.extend(overrides.external);
        self.net.mdns |= overrides.local;
        self.net.local_addresses |= overrides.local;
        self.share.extend(overrides.share);
        for name in overrides.standby {
            if !self.standby.contains(&name) {
                self.standby.push(name);
            }
        }
    }

    /// Where compiled artifacts go.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.compile_cache
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }

    /// The policy file's policy, or the deny-everything default.
    pub fn load_policy(&self) -> Result<Policy, ConfigError> {
        match &self.policy {
            Some(path) => Ok(Policy::load(path)?),
            None => Ok(Policy::default()),
        }
    }
}

/// What a command line may change: each field, when set, overrides the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    /// Replaces the listen addresses when not empty.
    pub listen: Vec<Multiaddr>,
    /// Added to the bootstrap peers.
    pub bootstrap: Vec<Multiaddr>,
    /// Added to the addresses the operator says the node is reachable at.
    pub external: Vec<Multiaddr>,
    /// Local mode: mDNS discovery, and private and loopback addresses
    /// from peer exchange.
    pub local: bool,
    /// Added to the packages shared at start.
    pub share: Vec<PathBuf>,
    /// Added to the services offered as standby.
    pub standby: Vec<String>,
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

fn duration(field: &'static str, text: Option<String>) -> Result<Option<Duration>, ConfigError> {
    text.map(|t| parse_duration(&t).map_err(|error| ConfigError::Value { field, error }))
        .transpose()
}

fn addresses(field: &'static str, list: Vec<String>) -> Result<Vec<Multiaddr>, ConfigError> {
    list.into_iter()
        .map(|a| {
            a.parse()
                .map_err(|_| ConfigError::Address { field, value: a })
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    data_dir: Option<PathBuf>,
    policy: Option<PathBuf>,
    #[serde(default)]
    share: Vec<PathBuf>,
    #[serde(default)]
    standby: Vec<String>,
    prefetch: Option<bool>,
    compile_cache: Option<PathBuf>,
    max_invocations_per_service: Option<usize>,
    reshare: Option<bool>,
    #[serde(default)]
    net: NetFile,
    #[serde(default)]
    upload: UploadFile,
    #[serde(default)]
    pull: PullFile,
    #[serde(default)]
    replication: ReplicationFile,
    #[serde(default)]
    reputation: ReputationFile,
    #[serde(default)]
    allow: HashMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NetFile {
    listen: Option<Vec<String>>,
    #[serde(default)]
    bootstrap: Vec<String>,
    mdns: Option<bool>,
    local_addresses: Option<bool>,
    max_connections: Option<u32>,
    max_connections_per_peer: Option<u32>,
    request_timeout: Option<String>,
    idle_timeout: Option<String>,
    query_timeout: Option<String>,
    inbound_queue: Option<usize>,
    max_concurrent_streams: Option<usize>,
    provider_records_per_peer: Option<usize>,
    provider_records_per_key: Option<usize>,
    provider_records: Option<usize>,
    provider_record_ttl: Option<String>,
    kad_bucket_size: Option<usize>,
    dht_server: Option<bool>,
    #[serde(default)]
    external: Vec<String>,
    autonat: Option<bool>,
    upnp: Option<bool>,
    relays: Option<usize>,
    direct_wait: Option<String>,
    max_relayed_download: Option<String>,
    #[serde(default)]
    relay: RelayFile,
}

/// `[net.relay]`: relaying for others.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RelayFile {
    enabled: Option<bool>,
    max_reservations: Option<usize>,
    max_reservations_per_peer: Option<usize>,
    reservation_duration: Option<String>,
    max_circuits: Option<usize>,
    max_circuits_per_peer: Option<usize>,
    max_circuit_duration: Option<String>,
    max_circuit_bytes: Option<String>,
}

fn size(field: &'static str, text: Option<String>) -> Result<Option<u64>, ConfigError> {
    text.map(|t| parse_size(&t).map_err(|error| ConfigError::Value { field, error }))
        .transpose()
}

impl NetFile {
    fn apply(self, net: &mut NetConfig) -> Result<(), ConfigError> {
        if let Some(listen) = self.listen {
            net.listen = addresses("net.listen", listen)?;
        }
        net.bootstrap = addresses("net.bootstrap", self.bootstrap)?;
        set(&mut net.mdns, self.mdns);
        set(&mut net.local_addresses, self.local_addresses);
        set(&mut net.max_connections, self.max_connections);
        set(
            &mut net.max_connections_per_peer,
            self.max_connections_per_peer,
        );
        set(
            &mut net.request_timeout,
            duration("net.request-timeout", self.request_timeout)?,
        );
        set(
            &mut net.idle_timeout,
            duration("net.idle-timeout", self.idle_timeout)?,
        );
        set(
            &mut net.query_timeout,
            duration("net.query-timeout", self.query_timeout)?,
        );
        set(&mut net.inbound_queue, self.inbound_queue.map(|n| n.max(1)));
        set(
            &mut net.max_concurrent_streams,
            self.max_concurrent_streams.map(|n| n.max(1)),
        );
        let records = &mut net.provider_records;
        set(
            &mut records.per_peer,
            self.provider_records_per_peer.map(|n| n.max(1)),
        );
        set(
            &mut records.per_key,
            self.provider_records_per_key.map(|n| n.max(1)),
        );
        set(&mut records.total, self.provider_records.map(|n| n.max(1)));
        set(
            &mut records.ttl,
            duration("net.provider-record-ttl", self.provider_record_ttl)?,
        );
        set(
            &mut net.kad_bucket_size,
            self.kad_bucket_size.map(|n| n.max(1)),
        );
        set(&mut net.dht_server, self.dht_server);
        let nat = &mut net.nat;
        nat.external = addresses("net.external", self.external)?;
        set(&mut nat.autonat, self.autonat);
        set(&mut nat.upnp, self.upnp);
        set(&mut nat.relays, self.relays);
        set(
            &mut nat.direct_wait,
            duration("net.direct-wait", self.direct_wait)?,
        );
        set(
            &mut nat.max_relayed_download,
            size("net.max-relayed-download", self.max_relayed_download)?,
        );
        let relay = self.relay;
        set(&mut nat.relay_server, relay.enabled);
        let limits = &mut nat.relay;
        set(&mut limits.max_reservations, relay.max_reservations);
        set(
            &mut limits.max_reservations_per_peer,
            relay.max_reservations_per_peer,
        );
        set(
            &mut limits.reservation_duration,
            duration("net.relay.reservation-duration", relay.reservation_duration)?,
        );
        set(&mut limits.max_circuits, relay.max_circuits);
        set(
            &mut limits.max_circuits_per_peer,
            relay.max_circuits_per_peer,
        );
        set(
            &mut limits.max_circuit_duration,
            duration("net.relay.max-circuit-duration", relay.max_circuit_duration)?,
        );
        set(
            &mut limits.max_circuit_bytes,
            size("net.relay.max-circuit-bytes", relay.max_circuit_bytes)?,
        );
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct UploadFile {
    max_concurrent: Option<usize>,
    rate: Option<String>,
    max_backlog: Option<String>,
    slots: Option<usize>,
    share_partial: Option<bool>,
}

impl UploadFile {
    fn apply(self, upload: &mut UploadConfig) -> Result<(), ConfigError> {
        set(
            &mut upload.max_concurrent,
            self.max_concurrent.map(|n| n.max(1)),
        );
        if let Some(rate) = self.rate {
            let rate = parse_size(&rate).map_err(|error| ConfigError::Value {
                field: "upload.rate",
                error,
            })?;
            upload.rate = Some(rate);
        }
        set(
            &mut upload.max_backlog,
            duration("upload.max-backlog", self.max_backlog)?,
        );
        if let Some(slots) = self.slots {
            upload.slots = Some(slots.max(1));
        }
        set(&mut upload.share_partial, self.share_partial);
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PullFile {
    strategy: Option<String>,
    parallel: Option<usize>,
    blocks_per_request: Option<u32>,
    attempt_budget: Option<u32>,
    attempt_timeout: Option<String>,
    advert_timeout: Option<String>,
    rediscover_delay: Option<String>,
    max_rediscover_delay: Option<String>,
    timeout: Option<String>,
    keep_partial: Option<String>,
    max_partial: Option<String>,
}

impl PullFile {
    fn apply(self, pull: &mut PullConfig) -> Result<(), ConfigError> {
        match self.strategy.as_deref() {
            None => {}
            Some("swarm") => pull.strategy = Strategy::Swarm,
            Some("sequential") => pull.strategy = Strategy::Sequential,
            Some(other) => return Err(ConfigError::Strategy(other.to_owned())),
        }
        set(&mut pull.parallel, self.parallel.map(|n| n.max(1)));
        set(&mut pull.blocks_per_request, self.blocks_per_request);
        set(
            &mut pull.attempt_budget,
            self.attempt_budget.map(|n| n.max(1)),
        );
        set(
            &mut pull.base_timeout,
            duration("pull.attempt-timeout", self.attempt_timeout)?,
        );
        set(
            &mut pull.advert_timeout,
            duration("pull.advert-timeout", self.advert_timeout)?,
        );
        set(
            &mut pull.rediscover_delay,
            duration("pull.rediscover-delay", self.rediscover_delay)?,
        );
        set(
            &mut pull.max_rediscover_delay,
            duration("pull.max-rediscover-delay", self.max_rediscover_delay)?,
        );
        set(
            &mut pull.total_timeout,
            duration("pull.timeout", self.timeout)?,
        );
        set(
            &mut pull.keep_partial,
            duration("pull.keep-partial", self.keep_partial)?,
        );
        if let Some(text) = self.max_partial {
            pull.max_partial = parse_size(&text).map_err(|error| ConfigError::Value {
                field: "pull.max-partial",
                error,
            })?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ReplicationFile {
    report_every: Option<String>,
    report_ttl: Option<String>,
    hold: Option<String>,
    cooldown: Option<String>,
    refresh: Option<String>,
}

impl ReplicationFile {
    fn apply(self, r: &mut ReplicationConfig) -> Result<(), ConfigError> {
        // Zero would make a node report or look up without pause.
        let at_least = |d: Option<Duration>, min: u64| d.map(|d| d.max(Duration::from_millis(min)));
        set(
            &mut r.report_every,
            at_least(
                duration("replication.report-every", self.report_every)?,
                100,
            ),
        );
        set(
            &mut r.report_ttl,
            at_least(duration("replication.report-ttl", self.report_ttl)?, 100),
        );
        set(&mut r.hold, duration("replication.hold", self.hold)?);
        set(
            &mut r.cooldown,
            duration("replication.cooldown", self.cooldown)?,
        );
        set(
            &mut r.refresh,
            at_least(duration("replication.refresh", self.refresh)?, 500),
        );
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ReputationFile {
    alpha: Option<f64>,
    exploration: Option<f64>,
    min: Option<f64>,
    #[serde(default)]
    pin: Vec<String>,
    #[serde(default)]
    block: Vec<String>,
}

impl ReputationFile {
    fn apply(self, r: &mut ReputationConfig) -> Result<(), ConfigError> {
        let check = |field, value: Option<f64>, ok: fn(f64) -> bool, range| match value {
            Some(v) if !ok(v) => Err(ConfigError::Range {
                field,
                value: v,
                range,
            }),
            _ => Ok(value),
        };
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        set(
            &mut r.params.alpha,
            check(
                "alpha",
                self.alpha,
                |v| v.is_finite() && v > 0.0 && v <= 64.0,
                "(0, 64]",
            )?,
        );
        set(
            &mut r.params.exploration,
            check("exploration", self.exploration, unit, "[0, 1]")?,
        );
        set(
            &mut r.params.min_reputation,
            check("min", self.min, unit, "[0, 1]")?,
        );
        let peers = |field, list: Vec<String>| {
            list.into_iter()
                .map(|p| {
                    p.parse::<PeerId>()
                        .map_err(|_| ConfigError::Provider { field, value: p })
                })
                .collect::<Result<HashSet<_>, _>>()
        };
        r.pin.extend(peers("pin", self.pin)?);
        r.block.extend(peers("block", self.block)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_sets_every_section_and_flags_win() {
        let text = r#"
            data-dir = "data"
            standby = ["live", "hello"]
            prefetch = false
            policy = "policy.toml"
            share = ["a.rps"]
            max-invocations-per-service = 3
            reshare = false
            [net]
            listen = ["/ip4/127.0.0.1/tcp/0"]
            bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGbMGV3UxqHKkbwQ1o8DG7Lr6LUykTB9GEJcvd1u7MphL"]
            request-timeout = "3s"
            kad-bucket-size = 8
            dht-server = false
            external = ["/ip4/198.51.100.7/tcp/4001"]
            autonat = false
            upnp = true
            relays = 1
            direct-wait = "1s"
            max-relayed-download = "1 MiB"
            [net.relay]
            enabled = false
            max-reservations = 8
            max-circuit-duration = "30s"
            max-circuit-bytes = "64 KiB"
            [upload]
            rate = "512 KiB"
            slots = 1
            share-partial = false
            [pull]
            strategy = "sequential"
            attempt-timeout = "800ms"
            max-rediscover-delay = "2s"
            timeout = "30s"
            keep-partial = "24h"
            max-partial = "64 MiB"
            [replication]
            hold = "3s"
            report-every = "0s"
            [reputation]
            alpha = 4.0
            exploration = 0.1
            block = ["12D3KooWGbMGV3UxqHKkbwQ1o8DG7Lr6LUykTB9GEJcvd1u7MphL"]
            [allow]
            notes = ["12D3KooWGbMGV3UxqHKkbwQ1o8DG7Lr6LUykTB9GEJcvd1u7MphL"]
        "#;
        let mut config = NodeConfig::from_toml(text, Path::new("/etc/sp2a")).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/etc/sp2a/data"));
        assert_eq!(config.policy, Some(PathBuf::from("/etc/sp2a/policy.toml")));
        assert_eq!(config.share, [PathBuf::from("/etc/sp2a/a.rps")]);
        assert_eq!(config.standby, ["live", "hello"]);
        assert!(!config.prefetch);
        assert_eq!(
            config.compile_cache_dir(),
            PathBuf::from("/etc/sp2a/data/cache")
        );
        assert_eq!(config.max_invocations_per_service, 3);
        assert!(!config.reshare);
        assert_eq!(config.net.request_timeout, Duration::from_secs(3));
        assert_eq!(config.net.kad_bucket_size, 8);
        assert!(!config.net.dht_server);
        assert_eq!(config.net.bootstrap.len(), 1);
        let nat = &config.net.nat;
        assert_eq!(nat.external.len(), 1);
        assert!(!nat.autonat && nat.upnp && !nat.relay_server);
        assert_eq!(nat.relays, 1);
        assert_eq!(nat.direct_wait, Duration::from_secs(1));
        assert_eq!(nat.max_relayed_download, 1 << 20);
        assert_eq!(nat.relay.max_reservations, 8);
        assert_eq!(nat.relay.max_circuit_duration, Duration::from_secs(30));
        assert_eq!(nat.relay.max_circuit_bytes, 64 << 10);
        // What the file leaves alone keeps libp2p's defaults.
        assert_eq!(nat.relay.max_circuits, 16);
        assert_eq!(config.upload.rate, Some(512 << 10));
        assert_eq!(config.upload.slots, Some(1));
        assert!(!config.upload.share_partial);
        assert_eq!(config.pull.strategy, Strategy::Sequential);
        assert_eq!(config.pull.base_timeout, Duration::from_millis(800));
        assert_eq!(config.pull.rediscover().delay(10), Duration::from_secs(2));
        assert_eq!(config.pull.keep_partial, Duration::from_secs(86400));
        assert_eq!(config.replication.hold, Duration::from_secs(3));
        assert_eq!(
            config.replication.report_every,
            Duration::from_millis(100),
            "a zero interval is raised"
        );
        assert_eq!(config.replication.cooldown, Duration::from_secs(5));
        assert_eq!(config.pull.max_partial, 64 << 20);
        assert_eq!(config.allow["notes"].len(), 1);
        assert_eq!(config.reputation.params.alpha, 4.0);
        assert_eq!(config.reputation.params.exploration, 0.1);
        assert_eq!(config.reputation.block.len(), 1);
        assert!(config.reputation.pin.is_empty());

        config.apply(Overrides {
            data_dir: Some("/tmp/x".into()),
            listen: vec!["/ip4/0.0.0.0/tcp/7".parse().unwrap()],
            share: vec!["b.rps".into()],
            local: true,
            ..Overrides::default()
        });
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.net.listen.len(), 1);
        assert_eq!(config.share.len(), 2);
        assert!(config.net.mdns && config.net.local_addresses);
    }

    #[test]
    fn defaults_and_mistakes() {
        let config = NodeConfig::from_toml("", Path::new(".")).unwrap();
        assert_eq!(
            config.net.listen.len(),
            2,
            "TCP and QUIC on every interface"
        );
        assert_eq!(config.pull.strategy, Strategy::Swarm);
        assert!(matches!(
            NodeConfig::from_toml("listen = []", Path::new(".")),
            Err(ConfigError::Toml(_))
        ));
        assert!(matches!(
            NodeConfig::from_toml("[pull]\nstrategy = \"fast\"", Path::new(".")),
            Err(ConfigError::Strategy(_))
        ));
        assert!(matches!(
            NodeConfig::from_toml("standby = [\"../etc\"]", Path::new(".")),
            Err(ConfigError::Standby(_))
        ));
        assert!(matches!(
            NodeConfig::from_toml("[upload]\nrate = \"fast\"", Path::new(".")),
            Err(ConfigError::Value {
                field: "upload.rate",
                ..
            })
        ));
        assert!(matches!(
            NodeConfig::from_toml("[net]\nlisten = [\"nowhere\"]", Path::new(".")),
            Err(ConfigError::Address { .. })
        ));
        assert!(matches!(
            NodeConfig::from_toml("[net]\nexternal = [\"my router\"]", Path::new(".")),
            Err(ConfigError::Address {
                field: "net.external",
                ..
            })
        ));
        assert!(matches!(
            NodeConfig::from_toml("[net.relay]\nmax-circuit-bytes = \"lots\"", Path::new(".")),
            Err(ConfigError::Value {
                field: "net.relay.max-circuit-bytes",
                ..
            })
        ));
        // A misspelt relay setting is refused, not ignored.
        assert!(NodeConfig::from_toml("[net.relay]\nmax-circuit = 1", Path::new(".")).is_err());
        assert!(matches!(
            NodeConfig::from_toml("[allow]\nx = [\"me\"]", Path::new(".")),
            Err(ConfigError::PeerId { .. })
        ));
        assert!(matches!(
            NodeConfig::from_toml("[reputation]\npin = [\"me\"]", Path::new(".")),
            Err(ConfigError::Provider { field: "pin", .. })
        ));
        for bad in [
            "alpha = 0.0",
            "alpha = nan",
            "exploration = 1.5",
            "min = -1.0",
        ] {
            assert!(
                matches!(
                    NodeConfig::from_toml(&format!("[reputation]\n{bad}"), Path::new(".")),
                    Err(ConfigError::Range { .. })
                ),
                "{bad}"
            );
        }
    }
}
