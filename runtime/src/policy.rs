//! The node operator's policy: which publishers this node trusts, which
//! capabilities it will ever grant (and where file-system grants live), caps
//! that override larger manifest requests, and the node's own resources.
//!
//! ```toml
//! [trust]
//! publishers = ["ed25519:…"]          # trusted publisher keys, or OpenSSH lines
//!                                      # ("ssh-ed25519 AAAA… alice@host")
//! publisher-files = ["alice.pem.pub"]  # or files: SPKI PEM or OpenSSH .pub (relative to this file)
//!
//! [grants]                             # everything defaults to "never"
//! clocks = true
//! random = true
//! stdout = false                       # guest output is captured into the node log
//! stderr = false
//! env = { LANG = "C.UTF-8" }           # variables a service may ask for, with values
//! net = ["api.example.org:443", "10.0.0.7:*"]   # destinations that may be granted
//! http = ["https://api.example.org/", "http://10.0.0.7:*/v1"]  # URL prefixes that may be
//!                                      # granted over wasi:http (scheme, host, port or *, path)
//!                                      # (for net and http alike, a host name reaches only
//!                                      # the internet; write loopback and private addresses
//!                                      # as addresses, or localhost)
//! feeds = ["live", "news@ed25519:…"]  # live feeds a service may read: a name (from the
//!                                      # source its manifest names), name@source, or "*"
//! fs-root = "/var/lib/sp2a/data"       # granted dirs: <fs-root>/ed25519-<publisher hex>/<service>/<dir name>
//! fs-access = "read-write"             # the most a file-system grant may allow
//!
//! [limits]                             # caps; smaller manifest requests are kept
//! max-memory = "64 MiB"
//! max-fuel-per-call = 1_000_000_000
//! max-time-per-call = "10s"
//! max-instances = 64                   # concurrently running instances
//! max-component-size = "64 MiB"
//! max-replicas = 64                    # providers this node's decisions aim for at most
//!
//! [compile]                            # how a component not yet compiled gets ready
//! tiering = "baseline-first"           # or "optimised" (wait for the optimising compiler)
//!                                      # or "baseline-only" (never optimise: least CPU)
//! baseline-first-from = "1 MiB"        # of code: smaller ones wait for the optimising compiler
//!
//! [resources]                          # defaults are read from this machine
//! cpus = 2
//! free-memory = "8 GiB"
//!
//! [pin]                                # which publisher's service a name means
//! notes = "ed25519:…"                  # when several trusted publishers provide it
//! ```
//!
//! Services are namespaced by publisher: each publisher's service keeps its
//! data in a directory of its own, and a name that two publishers' services
//! share here is ambiguous until pinned (here, or as `name@publisher`).
//!
//! Deny by default: an empty policy trusts nobody and grants nothing.
//!
//! [`Policy::admit`] is the one admission check: whether this node would
//! run the package an advert describes (publisher trusted, size within the
//! limit, requirements met by this node, every capability grantable), with
//! the grants it would run with or every [`Refusal`]. `audit`, pull (before
//! downloading) and activation (before compiling) all call it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::package::manifest::{Access, FeedRequest, Manifest, NetRequest};
use crate::package::units::{UnitError, format_duration, format_size, parse_duration, parse_size};
use crate::package::url::HttpUrl;
use crate::package::{Advert, KeyError, PublisherKey};
use crate::sandbox::{DirGrant, FeedGrant, Grants, Limits, NetGrant, Tiering};

/// A policy that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy {path}: {error}")]
    InFile {
        path: String,
        error: Box<PolicyError>,
    },
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{field}: {error}")]
    Value {
        field: &'static str,
        error: UnitError,
    },
    #[error("net rule {rule:?}: {reason}")]
    NetRule { rule: String, reason: &'static str },
    #[error("http rule {rule:?}: {reason}")]
    HttpRule { rule: String, reason: String },
    #[error("feed rule {rule:?}: {reason}")]
    FeedRule { rule: String, reason: String },
    #[error("grants.fs-access {0:?}: use read-only or read-write")]
    FsAccess(String),
    #[error("compile.tiering {0:?}: use baseline-first, optimised or baseline-only")]
    Tiering(String),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("pin.{name}: {reason}")]
    Pin { name: String, reason: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPolicy {
    #[serde(default)]
    trust: RawTrust,
    #[serde(default)]
    grants: RawGrants,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    compile: RawCompile,
    #[serde(default)]
    resources: RawResources,
    /// Service name -> the publisher (key text) that name means.
    #[serde(default)]
    pin: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTrust {
    #[serde(default)]
    publishers: Vec<String>,
    #[serde(default)]
    publisher_files: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGrants {
    #[serde(default)]
    clocks: bool,
    #[serde(default)]
    random: bool,
    #[serde(default)]
    stdout: bool,
    #[serde(default)]
    stderr: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    net: Vec<String>,
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    feeds: Vec<String>,
    fs_root: Option<PathBuf>,
    fs_access: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_memory: Option<String>,
    max_fuel_per_call: Option<u64>,
    max_time_per_call: Option<String>,
    max_instances: Option<u32>,
    max_component_size: Option<String>,
    max_replicas: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCompile {
    tiering: Option<String>,
    baseline_first_from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawResources {
    cpus: Option<u32>,
    free_memory: Option<String>,
}

/// A destination the node may grant: a host (name or IP) and a port or any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    pub host: String,
    pub port: Option<u16>,
}

impl NetRule {
    fn parse(text: &str) -> Result<Self, PolicyError> {
        let bad = |reason| PolicyError::NetRule {
            rule: text.to_owned(),
            reason,
        };
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected \"host:port\" or \"host:*\""))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("bad port (1 to 65535, or *)"))?,
            ),
        };
        Ok(Self { host, port })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port.is_none_or(|p| p == port)
    }
}

/// Live feeds the node may grant: `*` (any), a name (whichever source the
/// manifest names) or `name@ed25519:…` (that source only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRule {
    /// `None`: any feed.
    pub name: Option<String>,
    /// `None`: any source.
    pub publisher: Option<PublisherKey>,
}

impl FeedRule {
    fn parse(text: &str) -> Result<Self, PolicyError> {
        let bad = |reason: String| PolicyError::FeedRule {
            rule: text.to_owned(),
            reason,
        };
        if text == "*" {
            return Ok(Self {
                name: None,
                publisher: None,
            });
        }
        let (name, publisher) = match text.split_once('@') {
            Some((name, key)) => (
                name,
                Some(
                    key.parse::<PublisherKey>()
                        .map_err(|e| bad(e.to_string()))?,
                ),
            ),
            None => (text, None),
        };
        if !crate::feed::is_feed_name(name) {
            return Err(bad(
                "not a feed name (1-64 of a-z, 0-9, '-', '_', '.'), name@ed25519:… or *".into(),
            ));
        }
        Ok(Self {
            name: Some(name.to_owned()),
            publisher,
        })
    }

    fn allows(&self, feed: &FeedRequest) -> bool {
        self.name.as_ref().is_none_or(|n| *n == feed.name)
            && self.publisher.is_none_or(|p| p == feed.publisher)
    }
}

/// Caps on what any one service may use.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyLimits {
    pub max_memory: u64,
    pub max_fuel_per_call: u64,
    pub max_time_per_call: Duration,
    pub max_instances: u32,
    pub max_component_size: u64,
    /// The most providers of one service this node's replication decisions
    /// aim for, whatever its manifest allows.
    pub max_replicas: u32,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            max_memory: 256 << 20,
            max_fuel_per_call: 10_000_000_000,
            max_time_per_call: Duration::from_secs(30),
            max_instances: 128,
            max_component_size: 64 << 20,
            max_replicas: 64,
        }
    }
}

/// This node's resources, compared with a manifest's requirements.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    pub cpus: u32,
    pub free_memory: u64,
    pub arch: String,
    pub os: String,
}

impl Resources {
    /// Reads the machine: available parallelism and available memory.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Self {
            cpus,
            free_memory: available_memory().unwrap_or(1 << 30),
            arch: std::env::consts::ARCH.to_owned(),
            os: std::env::consts::OS.to_owned(),
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, where there is one.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The node operator's policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub trusted: Vec<PublisherKey>,
    pub clocks: bool,
    pub random: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub env: BTreeMap<String, String>,
    pub net: Vec<NetRule>,
    /// URL prefixes that may be granted for outgoing HTTP (port `None`: any).
    pub http: Vec<HttpUrl>,
    pub feeds: Vec<FeedRule>,
    pub fs_root: Option<PathBuf>,
    pub fs_access: Access,
    pub limits: PolicyLimits,
    /// Which compiler makes a component ready to call.
    pub tiering: Tiering,
    pub resources: Resources,
    /// Which publisher's service a name means, where several provide it.
    pub pins: BTreeMap<String, PublisherKey>,
}

/// The directory under `fs-root` that holds the data of one publisher's
/// services: `ed25519-<key hex>`.
pub fn publisher_dir(publisher: &PublisherKey) -> String {
    format!("ed25519-{}", hex::encode(publisher.to_bytes()))
}

impl Default for Policy {
    /// Trusts nobody and grants nothing; resources read from this machine.
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            clocks: false,
            random: false,
            stdout: false,
            stderr: false,
            env: BTreeMap::new(),
            net: Vec::new(),
            http: Vec::new(),
            feeds: Vec::new(),
            fs_root: None,
            fs_access: Access::ReadOnly,
            limits: PolicyLimits::default(),
            tiering: crate::sandbox::SandboxConfig::default().tiering,
            resources: Resources::detect(),
            pins: BTreeMap::new(),
        }
    }
}

/// Why this node would not run a package.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("publisher {0} is not trusted by this node's policy")]
    UntrustedPublisher(PublisherKey),
    #[error("component is {size} bytes; this node accepts at most {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("needs {needed} CPUs; this node has {available}")]
    Cpus { needed: u32, available: u32 },
    #[error("needs {} of free memory; this node has {}", format_size(*.needed), format_size(*.available))]
    Memory { needed: u64, available: u64 },
    #[error("needs sp2a runtime {needed} or newer; this node runs {running}")]
    RuntimeVersion {
        needed: semver::Version,
        running: semver::Version,
    },
    #[error("runs only on {}; this node is {this}", .allowed.join(", "))]
    Arch { allowed: Vec<String>, this: String },
    #[error("runs only on {}; this node runs {this}", .allowed.join(", "))]
    Os { allowed: Vec<String>, this: String },
    #[error("requests {0}, which this node's policy does not grant")]
    Capability(&'static str),
    #[error("requests environment variable {0}, which this node's policy does not grant")]
    Env(String),
    #[error("requests network {0}, which this node's policy does not grant")]
    Net(NetRequest),
    #[error("requests HTTP to {0}, which this node's policy does not grant")]
    Http(HttpUrl),
    #[error("reads live feed {:?} from {}, which this node's policy does not grant", .0.name, .0.publisher)]
    Feed(FeedRequest),
    #[error(
        "requests {access} directory {dir:?}, but this node's policy grants no file-system access (set grants.fs-root)"
    )]
    NoFileSystem { dir: String, access: Access },
    #[error("requests {access} directory {dir:?}, but this node's policy allows at most {allowed}")]
    FileSystemAccess {
        dir: String,
        access: Access,
        allowed: Access,
    },
}

impl Refusal {
    /// A stable name for the kind of refusal (for JSON and tests).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::UntrustedPublisher(_) => "untrusted-publisher",
            Refusal::TooLarge { .. } => "too-large",
            Refusal::Cpus { .. } => "cpus",
            Refusal::Memory { .. } => "memory",
            Refusal::RuntimeVersion { .. } => "runtime-version",
            Refusal::Arch { .. } => "arch",
            Refusal::Os { .. } => "os",
            Refusal::Capability(_) => "capability",
            Refusal::Env(_) => "env",
            Refusal::Net(_) => "net",
            Refusal::Http(_) => "http",
            Refusal::Feed(_) => "feed",
            Refusal::NoFileSystem { .. } => "no-file-system",
            Refusal::FileSystemAccess { .. } => "file-system-access",
        }
    }
}

impl serde::Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_reason(self.kind(), self, serializer)
    }
}

/// A reason as JSON and the like: `{"kind": ..., "reason": <the message>}`.
pub(crate) fn serialize_reason<S: serde::Serializer>(
    kind: &str,
    reason: &dyn std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut out = serializer.serialize_struct("Reason", 2)?;
    out.serialize_field("kind", kind)?;
    out.serialize_field("reason", &reason.to_string())?;
    out.end()
}

/// Every reason a package was refused (never empty).
#[derive(Clone, Debug, PartialEq, serde::Serialize, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Refusals(pub Vec<Refusal>);

/// What this node would run a package with.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    pub grants: Grants,
    /// Adjustments made (limits lowered to the node's caps).
    pub notes: Vec<String>,
}

/// The full assessment of an advert: the grants and notes it would get,
/// and every refusal (empty when admitted).
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub trusted: bool,
    pub admission: Admission,
    pub refusals: Vec<Refusal>,
}

impl Assessment {
    /// The verdict.
    pub fn into_result(self) -> Result<Admission, Refusals> {
        if self.refusals.is_empty() {
            Ok(self.admission)
        } else {
            Err(Refusals(self.refusals))
        }
    }
}

impl Policy {
    /// Reads a policy file. Relative paths inside it are relative to the file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|error| PolicyError::InFile {
            path: path.display().to_string(),
            error: Box::new(error),
        })
    }

    /// Parses policy text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(text)?;
        let mut policy = Policy::default();
        for key in &raw.trust.publishers {
            policy.trusted.push(key.parse()?);
        }
        for file in &raw.trust.publisher_files {
            policy
                .trusted
                .push(PublisherKey::read_file(&base.join(file))?);
        }
        for (name, key) in &raw.pin {
            if !crate::package::is_service_name(name) {
                return Err(PolicyError::Pin {
                    name: name.clone(),
                    reason: "not a service name".into(),
                });
            }
            let key: PublisherKey = key.parse().map_err(|e: KeyError| PolicyError::Pin {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            policy.pins.insert(name.clone(), key);
        }
        let g = raw.grants;
        policy.clocks = g.clocks;
        policy.random = g.random;
        policy.stdout = g.stdout;
        policy.stderr = g.stderr;
        policy.env = g.env;
        policy.net = g
            .net
            .iter()
            .map(|r| NetRule::parse(r))
            .collect::<Result<_, _>>()?;
        policy.http = g
            .http
            .iter()
            .map(|r| {
                HttpUrl::parse_rule(r).map_err(|reason| PolicyError::HttpRule {
                    rule: r.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        policy.feeds = g
            .feeds
            .iter()
            .map(|r| FeedRule::parse(r))
            .collect::<Result<_, _>>()?;
        policy.fs_root = g.fs_root.map(|p| base.join(p));
        policy.fs_access = match g.fs_access.as_deref() {
            None | Some("read-only") => Access::ReadOnly,
            Some("read-write") => Access::ReadWrite,
            Some(other) => return Err(PolicyError::FsAccess(other.to_owned())),
        };
        let value = |field, error| PolicyError::Value { field, error };
        let l = raw.limits;
        let mut limits = PolicyLimits::default();
        if let Some(v) = l.max_memory {
            limits.max_memory = parse_size(&v).map_err(|e| value("limits.max-memory", e))?;
        }
        if let Some(v) = l.max_fuel_per_call {
            limits.max_fuel_per_call = v;
        }
        if let Some(v) = l.max_time_per_call {
            limits.max_time_per_call =
                parse_duration(&v).map_err(|e| value("limits.max-time-per-call", e))?;
        }
        if let Some(v) = l.max_instances {
            limits.max_instances = v.max(1);
        }
        if let Some(v) = l.max_component_size {
            limits.max_component_size =
                parse_size(&v).map_err(|e| value("limits.max-component-size", e))?;
        }
        if let Some(v) = l.max_replicas {
            limits.max_replicas = v.max(1);
        }
        policy.limits = limits;
        let from = match raw.compile.baseline_first_from {
            Some(v) => usize::try_from(
                parse_size(&v).map_err(|e| value("compile.baseline-first-from", e))?,
            )
            .unwrap_or(usize::MAX),
            None => crate::sandbox::engine::BASELINE_FIRST_FROM,
        };
        policy.tiering = match raw.compile.tiering.as_deref() {
            None | Some("baseline-first") => Tiering::BaselineFirst { from },
            Some("optimised") => Tiering::Optimised,
            Some("baseline-only") => Tiering::BaselineOnly,
            Some(other) => return Err(PolicyError::Tiering(other.to_owned())),
        };
        if let Some(cpus) = raw.resources.cpus {
            policy.resources.cpus = cpus;
        }
        if let Some(memory) = raw.resources.free_memory {
            policy.resources.free_memory =
                parse_size(&memory).map_err(|e| value("resources.free-memory", e))?;
        }
        Ok(policy)
    }

    /// Engine-wide sandbox settings for this policy: its instance and
    /// memory caps, compiled artifacts cached in `cache_dir`.
    pub fn sandbox_config(&self, cache_dir: Option<PathBuf>) -> crate::sandbox::SandboxConfig {
        crate::sandbox::SandboxConfig {
            max_instances: self.limits.max_instances,
            max_memory: self.limits.max_memory,
            cache_dir,
            tiering: self.tiering,
            ..Default::default()
        }
    }

    /// How this node replicates the service `manifest` describes: its
    /// `<qos>` and `<replicas>`, with the most providers capped by
    /// `[limits] max-replicas` (and the least by that cap). `None` for a
    /// service that does not replicate by load.
    pub fn replication(
        &self,
        manifest: &Manifest,
    ) -> Option<crate::package::manifest::Replication> {
        let mut replication = manifest.replication.clone()?;
        let cap = self.limits.max_replicas.max(1);
        replication.max_replicas = replication.max_replicas.min(cap);
        replication.min_replicas = replication.min_replicas.min(replication.max_replicas);
        Some(replication)
    }

    /// Whether packages signed by `key` may run here.
    pub fn trusts(&self, key: &PublisherKey) -> bool {
        self.trusted.contains(key)
    }

    /// The admission check: whether this node would run the package
    /// `advert` describes, and with what grants; or every reason it would not.
    pub fn admit(&self, advert: &Advert) -> Result<Admission, Refusals> {
        self.assess(advert).into_result()
    }

    /// [`Policy::admit`] in full: the grants and notes even when refused
    /// (an audit shows both).
    pub fn assess(&self, advert: &Advert) -> Assessment {
        let manifest = advert.manifest();
        let publisher = advert.publisher();
        let mut refusals = Vec::new();
        let mut notes = Vec::new();
        let trusted = self.trusts(&publisher);
        if !trusted {
            refusals.push(Refusal::UntrustedPublisher(publisher));
        }
        let size = advert.component_len();
        if size > self.limits.max_component_size {
            refusals.push(Refusal::TooLarge {
                size,
                limit: self.limits.max_component_size,
            });
        }
        refusals.extend(self.requirements(manifest));

        let r = &manifest.requirements;
        let l = &self.limits;
        let mut clamp = |what: &str, asked: String, cap: String, lower: bool| {
            if lower {
                notes.push(format!(
                    "{what} lowered from {asked} to the node's cap of {cap}"
                ));
            }
        };
        clamp(
            "memory limit",
            format_size(r.max_memory),
            format_size(l.max_memory),
            r.max_memory > l.max_memory,
        );
        clamp(
            "fuel per call",
            r.fuel_per_call.to_string(),
            l.max_fuel_per_call.to_string(),
            r.fuel_per_call > l.max_fuel_per_call,
        );
        clamp(
            "time per call",
            format_duration(r.time_per_call),
            format_duration(l.max_time_per_call),
            r.time_per_call > l.max_time_per_call,
        );
        let limits = Limits {
            max_memory: r.max_memory.min(l.max_memory),
            fuel_per_call: r.fuel_per_call.min(l.max_fuel_per_call),
            time_per_call: r.time_per_call.min(l.max_time_per_call),
        };

        let c = &manifest.capabilities;
        let mut grants = Grants {
            limits,
            ..Grants::default()
        };
        for (asked, allowed, name, slot) in [
            (c.clocks, self.clocks, "clocks", &mut grants.clocks),
            (c.random, self.random, "random", &mut grants.random),
            (c.stdout, self.stdout, "stdout", &mut grants.stdout),
            (c.stderr, self.stderr, "stderr", &mut grants.stderr),
        ] {
            if asked && !allowed {
                refusals.push(Refusal::Capability(name));
            }
            *slot = asked && allowed;
        }
        for name in &c.env {
            match self.env.get(name) {
                Some(value) => grants.env.push((name.clone(), value.clone())),
                None => refusals.push(Refusal::Env(name.clone())),
            }
        }
        for net in &c.net {
            if self.net.iter().any(|r| r.allows(&net.host, net.port)) {
                grants.net.push(NetGrant {
                    host: net.host.clone(),
                    port: net.port,
                    protocol: net.protocol,
                });
            } else {
                refusals.push(Refusal::Net(net.clone()));
            }
        }
        for url in &c.http {
            if self.http.iter().any(|rule| rule.covers(url)) {
                grants.http.push(url.clone());
            } else {
                refusals.push(Refusal::Http(url.clone()));
            }
        }
        for feed in &c.feeds {
            if self.feeds.iter().any(|r| r.allows(feed)) {
                grants.feeds.push(FeedGrant {
                    name: feed.name.clone(),
                    publisher: feed.publisher,
                });
            } else {
                refusals.push(Refusal::Feed(feed.clone()));
            }
        }
        for dir in &c.dirs {
            match &self.fs_root {
                None => refusals.push(Refusal::NoFileSystem {
                    dir: dir.name.clone(),
                    access: dir.access,
                }),
                Some(_) if dir.access > self.fs_access => {
                    refusals.push(Refusal::FileSystemAccess {
                        dir: dir.name.clone(),
                        access: dir.access,
                        allowed: self.fs_access,
                    })
                }
                Some(root) => grants.dirs.push(DirGrant {
                    root: root.clone(),
                    relative: PathBuf::from(publisher_dir(&publisher))
                        .join(&manifest.name)
                        .join(&dir.name),
                    guest_path: dir.path.clone(),
                    access: dir.access,
                }),
            }
        }
        Assessment {
            trusted,
            admission: Admission { grants, notes },
            refusals,
        }
    }

    /// The paper's check before downloading: can this node host the
    /// service? Every requirement the node does not meet.
    fn requirements(&self, manifest: &Manifest) -> Vec<Refusal> {
        let r = &manifest.requirements;
        let res = &self.resources;
        let mut refusals = Vec::new();
        if r.min_cpus > res.cpus {
            refusals.push(Refusal::Cpus {
                needed: r.min_cpus,
                available: res.cpus,
            });
        }
        if r.min_free_memory > res.free_memory {
            refusals.push(Refusal::Memory {
                needed: r.min_free_memory,
                available: res.free_memory,
            });
        }
        if let Some(min) = &r.min_runtime_version {
            let ours = crate::runtime_version();
            if *min > ours {
                refusals.push(Refusal::RuntimeVersion {
                    needed: min.clone(),
                    running: ours,
                });
            }
        }
        if !r.arch.is_empty() && !r.arch.contains(&res.arch) {
            refusals.push(Refusal::Arch {
                allowed: r.arch.clone(),
                this: res.arch.clone(),
            });
        }
        if !r.os.is_empty() && !r.os.contains(&res.os) {
            refusals.push(Refusal::Os {
                allowed: r.os.clone(),
                this: res.os.clone(),
            });
        }
        refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{SecretKey, pack};

    #[test]
    fn openssh_public_keys_name_trusted_publishers() {
        use crate::package::keys::tests::{pub_line, ssh_keygen};
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b", "c"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let inline = ssh_keygen(&dir.path().join("a"), "ed25519", "");
        let file = ssh_keygen(&dir.path().join("b"), "ed25519", "");
        let text = format!(
            "[trust]\npublishers = [{:?}]\npublisher-files = [\"b/id_ed25519.pub\"]\n",
            pub_line(&inline).trim()
        );
        let policy = Policy::parse(&text, dir.path()).unwrap();
        let never = || -> Result<String, String> { panic!("no passphrase") };
        let expected =
            [&inline, &file].map(|path| SecretKey::read_file(path, never).unwrap().public());
        assert_eq!(policy.trusted, expected);
        // An RSA key is refused by name, not skipped.
        let rsa = pub_line(&ssh_keygen(&dir.path().join("c"), "rsa", ""));
        let text = format!("[trust]\npublishers = [{:?}]\n", rsa.trim());
        let refused = Policy::parse(&text, dir.path()).unwrap_err().to_string();
        assert!(refused.contains("ssh-rsa"), "{refused}");
    }

    /// The advert of a package whose manifest has `extra` after name and
    /// version, signed by `key`, with a `size`-byte component.
    fn advert(extra: &str, key: &SecretKey, size: usize) -> Advert {
        let manifest = crate::package::Manifest::parse(
            format!("<rps><name>svc</name><version>1.0.0</version>{extra}</rps>").as_bytes(),
        )
        .unwrap();
        let mut component = vec![0, 97, 115, 109, 13, 0, 1, 0];
        component.resize(size.max(8), 0);
        pack(component, &manifest, key).unwrap().advert().clone()
    }

    #[test]
    fn empty_policy_denies_everything() {
        let key = SecretKey::generate();
        let policy = Policy::parse("", Path::new(".")).unwrap();
        let a = advert(
            r#"<capabilities><clocks/><random/><stdout/><env name="HOME"/>
               <dir name="d" path="/d"/><net host="example.org" port="443"/>
               <feed name="live" publisher="ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"/></capabilities>"#,
            &key,
            8,
        );
        let assessment = policy.assess(&a);
        assert!(!assessment.trusted);
        let kinds: Vec<&str> = assessment.refusals.iter().map(Refusal::kind).collect();
        assert_eq!(
            kinds,
            [
                "untrusted-publisher",
                "capability",
                "capability",
                "capability",
                "env",
                "net",
                "feed",
                "no-file-system"
            ]
        );
        let all = policy.admit(&a).unwrap_err().to_string();
        for needle in [
            "not trusted",
            "clocks",
            "random",
            "stdout",
            "HOME",
            "file-system",
            "example.org",
            "live feed \"live\"",
        ] {
            assert!(all.contains(needle), "missing {needle}: {all}");
        }
    }

    #[test]
    fn grants_and_caps() {
        let key = SecretKey::generate();
        let text = format!(
            r#"
            [trust]
            publishers = ["{}"]
            [grants]
            clocks = true
            env = {{ LANG = "C" }}
            net = ["example.org:443"]
            http = ["https://api.example.org/v1", "http://10.0.0.7:*/"]
            fs-root = "data"
            fs-access = "read-only"
            [limits]
            max-memory = "8 MiB"
            max-time-per-call = "1s"
            [resources]
            cpus = 4
            free-memory = "1 GiB"
            "#,
            key.public()
        );
        let policy = Policy::parse(&text, Path::new("/srv")).unwrap();
        let a = advert(
            r#"<requirements><max-memory>32 MiB</max-memory><time-per-call>500ms</time-per-call></requirements>
               <capabilities><clocks/><env name="LANG"/><net host="example.org" port="443"/>
               <http url="https://api.example.org/v1/items"/><http url="http://10.0.0.7:9000/x"/>
               <dir name="d" path="/d" access="read-only"/></capabilities>"#,
            &key,
            8,
        );
        let admission = policy.admit(&a).unwrap();
        let http: Vec<String> = admission
            .grants
            .http
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            http,
            ["https://api.example.org/v1/items", "http://10.0.0.7:9000/x"]
        );
        // Only what a rule covers: another path, port or scheme is refused.
        for url in [
            "https://api.example.org/v2",
            "https://api.example.org:8443/v1",
            "http://api.example.org/v1",
        ] {
            let other = advert(
                &format!(r#"<capabilities><http url="{url}"/></capabilities>"#),
                &key,
                8,
            );
            let refusals = policy.admit(&other).unwrap_err();
            assert_eq!(refusals.0[0].kind(), "http", "{url}");
            assert!(
                refusals.0[0].to_string().contains("requests HTTP to"),
                "{url}"
            );
        }
        assert_eq!(admission.grants.limits.max_memory, 8 << 20);
        assert_eq!(
            admission.grants.limits.time_per_call,
            Duration::from_millis(500)
        );
        assert!(admission.notes[0].contains("memory limit lowered"));
        assert_eq!(admission.grants.env, [("LANG".to_owned(), "C".to_owned())]);
        assert_eq!(admission.grants.dirs[0].root, PathBuf::from("/srv/data"));
        // Per publisher: another publisher's `svc` gets another directory.
        assert_eq!(
            admission.grants.dirs[0].relative,
            PathBuf::from(format!(
                "ed25519-{}/svc/d",
                hex::encode(key.public().to_bytes())
            ))
        );

        let rw = advert(
            r#"<capabilities><dir name="d" path="/d" access="read-write"/><net host="example.org" port="80"/></capabilities>"#,
            &key,
            8,
        );
        let Refusals(refusals) = policy.admit(&rw).unwrap_err();
        assert!(matches!(
            &refusals[0],
            Refusal::Net(request) if request.port == 80
        ));
        assert_eq!(
            refusals[1],
            Refusal::FileSystemAccess {
                dir: "d".into(),
                access: Access::ReadWrite,
                allowed: Access::ReadOnly
            }
        );
        assert!(refusals[1].to_string().contains("at most read-only"));
    }

    #[test]
    fn compile_tiering_is_the_operators_choice() {
        let parse = |text: &str| Policy::parse(text, Path::new("."));
        assert_eq!(
            parse("").unwrap().sandbox_config(None).tiering,
            Tiering::BaselineFirst {
                from: crate::sandbox::engine::BASELINE_FIRST_FROM
            }
        );
        let policy = parse(
            "[compile]
baseline-first-from = \"8 MiB\"",
        )
        .unwrap();
        assert_eq!(policy.tiering, Tiering::BaselineFirst { from: 8 << 20 });
        assert_eq!(
            parse(
                "[compile]
tiering = \"optimised\""
            )
            .unwrap()
            .tiering,
            Tiering::Optimised
        );
        assert_eq!(
            parse(
                "[compile]
tiering = \"baseline-only\""
            )
            .unwrap()
            .tiering,
            Tiering::BaselineOnly
        );
        let err = parse(
            "[compile]
tiering = \"fast\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("use baseline-first"), "{err}");
        assert!(
            parse(
                "[compile]
baseline-first-from = \"lots\""
            )
            .is_err()
        );
        assert!(
            parse(
                "[compile]
jit = true"
            )
            .is_err()
        );
    }

    #[test]
    fn requirements_and_size_against_this_node() {
        let key = SecretKey::generate();
        let policy = Policy::parse(
            &format!(
                "[trust]\npublishers = [\"{}\"]\n[limits]\nmax-component-size = \"1 KiB\"\n\
                 [resources]\ncpus = 2\nfree-memory = \"100 MiB\"",
                key.public()
            ),
            Path::new("."),
        )
        .unwrap();
        let a = advert(
            "<requirements><min-cpus>8</min-cpus><min-free-memory>1 GiB</min-free-memory>\
             <min-runtime-version>99.0.0</min-runtime-version><arch>riscv64</arch></requirements>",
            &key,
            4096,
        );
        let Refusals(refusals) = policy.admit(&a).unwrap_err();
        assert_eq!(
            refusals.iter().map(Refusal::kind).collect::<Vec<_>>(),
            ["too-large", "cpus", "memory", "runtime-version", "arch"]
        );
        assert_eq!(refusals[1].to_string(), "needs 8 CPUs; this node has 2");
        assert_eq!(
            refusals[0],
            Refusal::TooLarge {
                size: 4096,
                limit: 1024
            }
        );
        // Within every limit, the same advert is admitted.
        let small = advert("", &key, 8);
        assert!(policy.admit(&small).is_ok());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(matches!(
            Policy::parse("[grants]\nclock = true", Path::new(".")),
            Err(PolicyError::Toml(_))
        ));
        assert!(matches!(
            Policy::parse("[grants]\nhttp = [\"ftp://example.org/\"]", Path::new(".")),
            Err(PolicyError::HttpRule { .. })
        ));
        assert!(matches!(
            Policy::parse("[grants]\nnet = [\"nohost\"]", Path::new(".")),
            Err(PolicyError::NetRule { .. })
        ));
        assert!(matches!(
            Policy::parse("[limits]\nmax-memory = \"lots\"", Path::new(".")),
            Err(PolicyError::Value {
                field: "limits.max-memory",
                ..
            })
        ));
        assert!(matches!(
            Policy::parse("[trust]\npublishers = [\"ed25519:00\"]", Path::new(".")),
            Err(PolicyError::Key(_))
        ));
        assert!(matches!(
            Policy::parse("[pin]\nnotes = \"ed25519:00\"", Path::new(".")),
            Err(PolicyError::Pin { .. })
        ));
        assert!(matches!(
            Policy::parse("[pin]\n\"../x\" = \"ed25519:00\"", Path::new(".")),
            Err(PolicyError::Pin { .. })
        ));
        for rule in ["Live", "live@ed25519:00", "", "a/b"] {
            assert!(
                matches!(
                    Policy::parse(&format!("[grants]\nfeeds = [{rule:?}]"), Path::new(".")),
                    Err(PolicyError::FeedRule { .. })
                ),
                "{rule}"
            );
        }
    }

    #[test]
    fn feeds_are_granted_by_name_source_or_wildcard() {
        let key = SecretKey::generate();
        let source = SecretKey::generate().public();
        let other = SecretKey::generate().public();
        let reads = |publisher: &PublisherKey| {
            advert(
                &format!(
                    r#"<capabilities><feed name="live" publisher="{publisher}"/></capabilities>"#
                ),
                &key,
                8,
            )
        };
        let policy = |feeds: &str| {
            Policy::parse(
                &format!(
                    "[trust]\npublishers = [\"{}\"]\n[grants]\nfeeds = [{feeds}]",
                    key.public()
                ),
                Path::new("."),
            )
            .unwrap()
        };
        let by_name = policy(r#""live""#);
        let admission = by_name.admit(&reads(&source)).unwrap();
        assert_eq!(
            admission.grants.feeds,
            [FeedGrant {
                name: "live".into(),
                publisher: source
            }]
        );
        let pinned = policy(&format!(r#""live@{source}""#));
        assert!(pinned.admit(&reads(&source)).is_ok());
        let Refusals(refusals) = pinned.admit(&reads(&other)).unwrap_err();
        assert!(matches!(&refusals[..], [Refusal::Feed(f)] if f.publisher == other));
        assert!(policy(r#""news""#).admit(&reads(&source)).is_err());
        assert!(policy(r#""*""#).admit(&reads(&other)).is_ok());
    }
}
