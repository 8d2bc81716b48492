//! The node operator's policy: which publishers this node trusts, which
//! capabilities it will ever grant (and where file-system grants live), caps
//! that override larger manifest requests, and the node's own resources.
//!
//! ```toml
//! [trust]
//! publishers = ["ed25519:…"]          # trusted publisher keys
//! publisher-files = ["alice.pem.pub"]  # or SPKI PEM files (relative to this file)
//!
//! [grants]                             # everything defaults to "never"
//! clocks = true
//! random = true
//! stdout = false                       # guest output is captured into the node log
//! stderr = false
//! env = { LANG = "C.UTF-8" }           # variables a service may ask for, with values
//! net = ["api.example.org:443", "10.0.0.7:*"]   # destinations that may be granted
//! fs-root = "/var/lib/sp2a/data"       # granted dirs: <fs-root>/<service>/<dir name>
//! fs-access = "read-write"             # the most a file-system grant may allow
//!
//! [limits]                             # caps; smaller manifest requests are kept
//! max-memory = "64 MiB"
//! max-fuel-per-call = 1_000_000_000
//! max-time-per-call = "10s"
//! max-instances = 64                   # concurrently running instances
//! max-component-size = "64 MiB"
//!
//! [resources]                          # defaults are read from this machine
//! cpus = 2
//! free-memory = "8 GiB"
//! ```
//!
//! Deny by default: an empty policy trusts nobody and grants nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::package::PublisherKey;
use crate::package::manifest::{Access, Manifest};
use crate::package::units::{format_duration, format_size, parse_duration, parse_size};
use crate::sandbox::{DirGrant, Grants, Limits, NetGrant};

/// A policy file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy {path}: {message}")]
    Invalid { path: String, message: String },
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
    resources: RawResources,
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
    fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("net rule {text:?}: expected \"host:port\" or \"host:*\""))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("net rule {text:?}: empty host"));
        }
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("net rule {text:?}: bad port {p:?}"))?,
            ),
        };
        Ok(Self { host, port })
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.host == host && self.port.is_none_or(|p| p == port)
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
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            max_memory: 256 << 20,
            max_fuel_per_call: 10_000_000_000,
            max_time_per_call: Duration::from_secs(30),
            max_instances: 128,
            max_component_size: 64 << 20,
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
    pub fs_root: Option<PathBuf>,
    pub fs_access: Access,
    pub limits: PolicyLimits,
    pub resources: Resources,
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
            fs_root: None,
            fs_access: Access::ReadOnly,
            limits: PolicyLimits::default(),
            resources: Resources::detect(),
        }
    }
}

/// The decision for one manifest: what would be granted, and every reason
/// it would not be activated.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub trusted: bool,
    pub grants: Grants,
    /// Reasons to refuse; empty means the policy accepts the manifest.
    pub refusals: Vec<String>,
    /// Adjustments made (limits lowered to the node's caps).
    pub notes: Vec<String>,
}

impl Policy {
    /// Reads a policy file. Relative paths inside it are relative to the file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|message| PolicyError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses policy text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut policy = Policy::default();
        for key in &raw.trust.publishers {
            policy.trusted.push(
                key.parse()
                    .map_err(|e: crate::package::KeyError| e.to_string())?,
            );
        }
        for file in &raw.trust.publisher_files {
            let path = base.join(file);
            policy
                .trusted
                .push(PublisherKey::read_pem_file(&path).map_err(|e| e.to_string())?);
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
        policy.fs_root = g.fs_root.map(|p| base.join(p));
        policy.fs_access = match g.fs_access.as_deref() {
            None | Some("read-only") => Access::ReadOnly,
            Some("read-write") => Access::ReadWrite,
            Some(other) => {
                return Err(format!(
                    "grants.fs-access {other:?}: use read-only or read-write"
                ));
            }
        };
        let l = raw.limits;
        let mut limits = PolicyLimits::default();
        if let Some(v) = l.max_memory {
            limits.max_memory = parse_size(&v).map_err(|e| format!("limits.max-memory: {e}"))?;
        }
        if let Some(v) = l.max_fuel_per_call {
            limits.max_fuel_per_call = v;
        }
        if let Some(v) = l.max_time_per_call {
            limits.max_time_per_call =
                parse_duration(&v).map_err(|e| format!("limits.max-time-per-call: {e}"))?;
        }
        if let Some(v) = l.max_instances {
            limits.max_instances = v.max(1);
        }
        if let Some(v) = l.max_component_size {
            limits.max_component_size =
                parse_size(&v).map_err(|e| format!("limits.max-component-size: {e}"))?;
        }
        policy.limits = limits;
        if let Some(cpus) = raw.resources.cpus {
            policy.resources.cpus = cpus;
        }
        if let Some(memory) = raw.resources.free_memory {
            policy.resources.free_memory =
                parse_size(&memory).map_err(|e| format!("resources.free-memory: {e}"))?;
        }
        Ok(policy)
    }

    /// Whether packages signed by `key` may run here.
    pub fn trusts(&self, key: &PublisherKey) -> bool {
        self.trusted.contains(key)
    }

    /// Checks a manifest's publisher, requirements and requested capabilities
    /// against this policy, and computes the grants and limits it would run with.
    pub fn evaluate(&self, manifest: &Manifest, publisher: &PublisherKey) -> Evaluation {
        let mut refusals = Vec::new();
        let mut notes = Vec::new();
        let trusted = self.trusts(publisher);
        if !trusted {
            refusals.push(format!(
                "publisher {publisher} is not trusted by this node's policy"
            ));
        }
        self.check_requirements(manifest, &mut refusals);

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
                refusals.push(format!(
                    "requests {name}, which this node's policy does not grant"
                ));
            }
            *slot = asked && allowed;
        }
        for name in &c.env {
            match self.env.get(name) {
                Some(value) => grants.env.push((name.clone(), value.clone())),
                None => refusals.push(format!(
                    "requests environment variable {name}, which this node's policy does not grant"
                )),
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
                refusals.push(format!(
                    "requests network {net}, which this node's policy does not grant"
                ));
            }
        }
        for dir in &c.dirs {
            match &self.fs_root {
                None => refusals.push(format!(
                    "requests {} directory {:?}, but this node's policy grants no file-system access (set grants.fs-root)",
                    dir.access, dir.name
                )),
                Some(_) if dir.access > self.fs_access => refusals.push(format!(
                    "requests {} directory {:?}, but this node's policy allows at most {}",
                    dir.access, dir.name, self.fs_access
                )),
                Some(root) => grants.dirs.push(DirGrant {
                    root: root.clone(),
                    relative: PathBuf::from(&manifest.name).join(&dir.name),
                    guest_path: dir.path.clone(),
                    access: dir.access,
                }),
            }
        }
        Evaluation {
            trusted,
            grants,
            refusals,
            notes,
        }
    }

    /// The paper's check before downloading: can this node host the service?
    pub fn check_requirements(&self, manifest: &Manifest, refusals: &mut Vec<String>) {
        let r = &manifest.requirements;
        let res = &self.resources;
        if r.min_cpus > res.cpus {
            refusals.push(format!(
                "needs {} CPUs; this node has {}",
                r.min_cpus, res.cpus
            ));
        }
        if r.min_free_memory > res.free_memory {
            refusals.push(format!(
                "needs {} of free memory; this node has {}",
                format_size(r.min_free_memory),
                format_size(res.free_memory)
            ));
        }
        if let Some(min) = &r.min_runtime_version {
            let ours = crate::runtime_version();
            if *min > ours {
                refusals.push(format!(
                    "needs sp2a runtime {min} or newer; this node runs {ours}"
                ));
            }
        }
        if !r.arch.is_empty() && !r.arch.contains(&res.arch) {
            refusals.push(format!(
                "runs only on {}; this node is {}",
                r.arch.join(", "),
                res.arch
            ));
        }
        if !r.os.is_empty() && !r.os.contains(&res.os) {
            refusals.push(format!(
                "runs only on {}; this node runs {}",
                r.os.join(", "),
                res.os
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::SecretKey;

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(
            format!("<rps><name>svc</name><version>1.0.0</version>{extra}</rps>").as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn empty_policy_denies_everything() {
        let key = SecretKey::generate().public();
        let policy = Policy::parse("", Path::new(".")).unwrap();
        let m = manifest(
            r#"<capabilities><clocks/><random/><stdout/><env name="HOME"/>
               <dir name="d" path="/d"/><net host="example.org" port="443"/></capabilities>"#,
        );
        let eval = policy.evaluate(&m, &key);
        assert!(!eval.trusted);
        let all = eval.refusals.join("\n");
        for needle in [
            "not trusted",
            "clocks",
            "random",
            "stdout",
            "HOME",
            "file-system",
            "example.org",
        ] {
            assert!(all.contains(needle), "missing {needle}: {all}");
        }
    }

    #[test]
    fn grants_and_caps() {
        let key = SecretKey::generate().public();
        let text = format!(
            r#"
            [trust]
            publishers = ["{key}"]
            [grants]
            clocks = true
            env = {{ LANG = "C" }}
            net = ["example.org:443"]
            fs-root = "data"
            fs-access = "read-only"
            [limits]
            max-memory = "8 MiB"
            max-time-per-call = "1s"
            [resources]
            cpus = 4
            free-memory = "1 GiB"
            "#
        );
        let policy = Policy::parse(&text, Path::new("/srv")).unwrap();
        let m = manifest(
            r#"<requirements><max-memory>32 MiB</max-memory><time-per-call>500ms</time-per-call></requirements>
               <capabilities><clocks/><env name="LANG"/><net host="example.org" port="443"/>
               <dir name="d" path="/d" access="read-only"/></capabilities>"#,
        );
        let eval = policy.evaluate(&m, &key);
        assert!(eval.refusals.is_empty(), "{:?}", eval.refusals);
        assert_eq!(eval.grants.limits.max_memory, 8 << 20);
        assert_eq!(eval.grants.limits.time_per_call, Duration::from_millis(500));
        assert!(eval.notes[0].contains("memory limit lowered"));
        assert_eq!(eval.grants.env, [("LANG".to_owned(), "C".to_owned())]);
        assert_eq!(eval.grants.dirs[0].root, PathBuf::from("/srv/data"));
        assert_eq!(eval.grants.dirs[0].relative, PathBuf::from("svc/d"));

        let rw = manifest(
            r#"<capabilities><dir name="d" path="/d" access="read-write"/><net host="example.org" port="80"/></capabilities>"#,
        );
        let refusals = policy.evaluate(&rw, &key).refusals.join("\n");
        assert!(refusals.contains("at most read-only"), "{refusals}");
        assert!(refusals.contains("tcp/example.org:80"), "{refusals}");
    }

    #[test]
    fn requirements_against_resources() {
        let policy = Policy::parse(
            "[resources]\ncpus = 2\nfree-memory = \"100 MiB\"",
            Path::new("."),
        )
        .unwrap();
        let m = manifest(
            "<requirements><min-cpus>8</min-cpus><min-free-memory>1 GiB</min-free-memory>\
             <min-runtime-version>99.0.0</min-runtime-version><arch>riscv64</arch></requirements>",
        );
        let mut refusals = Vec::new();
        policy.check_requirements(&m, &mut refusals);
        assert_eq!(refusals.len(), 4, "{refusals:?}");
    }

    #[test]
    fn rejects_unknown_keys() {
        assert!(Policy::parse("[grants]\nclock = true", Path::new(".")).is_err());
        assert!(Policy::parse("[grants]\nnet = [\"nohost\"]", Path::new(".")).is_err());
    }
}
