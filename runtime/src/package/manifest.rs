//! The RPS manifest (`rps.xml`): what a service is, what it needs from a host
//! and which capabilities it asks for, plus self-test vectors.
//!
//! It carries what the SP2A paper's hosting-requirements file carries, mapped
//! to WebAssembly:
//!
//! ```xml
//! <rps format="1">
//!   <name>notes</name>
//!   <version>0.1.0</version>
//!   <description>Small text notes in a granted directory</description>
//!   <owner>ed25519:…64 hex digits…</owner>       <!-- set by `sp2a pack` -->
//!   <requirements>
//!     <min-cpus>1</min-cpus>
//!     <min-free-memory>32 MiB</min-free-memory>  <!-- host memory free -->
//!     <max-memory>16 MiB</max-memory>            <!-- linear memory per instance -->
//!     <fuel-per-call>500000000</fuel-per-call>
//!     <time-per-call>2s</time-per-call>
//!     <min-runtime-version>0.1.0</min-runtime-version>
//!     <arch>x86_64</arch> <os>linux</os>         <!-- only if restricted -->
//!   </requirements>
//!   <capabilities>
//!     <clocks/> <random/> <stdout/> <stderr/>
//!     <dir name="notes" path="/notes" access="read-write"/>
//!     <net host="example.org" port="443" protocol="tcp"/>
//!     <http url="https://api.example.org/v1/"/>  <!-- outgoing HTTP under this URL -->
//!     <env name="LANG"/>
//!     <feed name="live" publisher="ed25519:…"/> <!-- a live feed and its source's key -->
//!   </capabilities>
//!   <self-test>
//!     <call expect='ok("hi")'>notes.get("hello")</call>
//!   </self-test>
//!   <deterministic>true</deterministic>          <!-- callers may re-run calls to check answers -->
//!   <extensions>                                 <!-- forward compatibility -->
//!     <x-hint>ignored by nodes that do not know it</x-hint>
//!     <x-rule required="true">refused by nodes that do not know it</x-rule>
//!   </extensions>
//! </rps>
//! ```
//!
//! Parsing is two passes: a streaming pass over quick-xml events enforces
//! the size and depth limits, refuses DTDs, entity declarations, processing
//! instructions and unknown elements (naming the element and its line), then
//! serde maps the document onto typed fields and each value is validated.
//! Limits: [`MAX_MANIFEST_SIZE`] bytes, depth 8, 1024 elements, 64 entries per
//! list, 32 self-test calls.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use quick_xml::events::Event;
use serde::{Deserialize, Serialize};

use super::keys::PublisherKey;
use super::units::{format_duration, parse_count, parse_duration, parse_size};
use super::url::HttpUrl;

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_SIZE: usize = 64 * 1024;
const MAX_DEPTH: usize = 8;
const MAX_ELEMENTS: usize = 1024;
/// Events of any kind (elements, text, comments, references).
const MAX_EVENTS: usize = 8192;
const MAX_LIST: usize = 64;
/// Attributes on one element (the widest in the format has three): checked
/// while reading them, so a flood costs nothing before it is refused.
const MAX_ATTRIBUTES: usize = 8;
const MAX_SELF_TESTS: usize = 32;
const MAX_DESCRIPTION: usize = 1024;
/// The most providers a manifest may ask for.
pub const MAX_REPLICAS: u32 = 1024;
/// The range of a QoS latency target.
const LATENCY_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(600);
/// Capacity in use that providers aim at, unless the manifest says.
pub const DEFAULT_UTILISATION: f64 = 0.7;
/// Providers a replicated service may have at most, unless it says.
pub const DEFAULT_MAX_REPLICAS: u32 = 64;
/// The manifest format this runtime reads and writes.
pub const FORMAT: &str = "1";

/// Default linear memory per instance when the manifest does not say.
pub const DEFAULT_MAX_MEMORY: u64 = 64 << 20;
/// Default fuel per call when the manifest does not say.
pub const DEFAULT_FUEL_PER_CALL: u64 = 1_000_000_000;
/// Default wall time per call when the manifest does not say.
pub const DEFAULT_TIME_PER_CALL: Duration = Duration::from_secs(5);

/// A manifest that could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes; the limit is {MAX_MANIFEST_SIZE}")]
    TooLarge { size: usize },
    #[error("manifest is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("manifest line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("manifest line {line}: DTDs and entity declarations are not allowed")]
    Dtd { line: usize },
    #[error("manifest line {line}: unknown element <{element}> in <{parent}>")]
    UnknownElement {
        line: usize,
        element: String,
        parent: String,
    },
    #[error("manifest line {line}: unknown attribute {attribute} on <{element}>")]
    UnknownAttribute {
        line: usize,
        element: String,
        attribute: String,
    },
    #[error(
        "manifest line {line}: extension <{element}> is marked required=\"true\" and this node does not understand it"
    )]
    RequiredExtension { line: usize, element: String },
    #[error("manifest line {line}: <{element}> may appear only once in <{parent}>")]
    Duplicate {
        line: usize,
        element: String,
        parent: String,
    },
    #[error("manifest: missing required element <{0}>")]
    Missing(&'static str),
    #[error("manifest <{element}>: {message}")]
    Invalid { element: String, message: String },
    #[error("manifest: {0}")]
    Structure(String),
}

fn invalid(element: &str, message: impl std::fmt::Display) -> ManifestError {
    ManifestError::Invalid {
        element: element.to_owned(),
        message: message.to_string(),
    }
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Service name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    pub version: semver::Version,
    pub description: String,
    /// The publisher key; `sp2a pack` fills it in from the signing key.
    pub owner: Option<PublisherKey>,
    pub requirements: Requirements,
    pub capabilities: Capabilities,
    /// How the service spreads under load and retires when idle, if it
    /// does (`<qos>` and `<replicas>`).
    pub replication: Option<Replication>,
    pub self_tests: Vec<SelfTest>,
    /// `<deterministic>true</deterministic>`: the same call always gets the
    /// same answer, so callers may check a provider's answers by running
    /// the call again (on another provider, or locally).
    pub deterministic: bool,
    /// Unknown, optional extensions that were ignored (element names).
    pub ignored_extensions: Vec<String>,
}

/// The QoS the providers of a service must keep, and how many of them there
/// may be: `<qos latency="500ms" utilisation="0.7"/>` and
/// `<replicas min="1" max="64"/>`. Providers ask standby nodes to pull the
/// service when the load threatens the target, and retire extra providers
/// when it falls.
#[derive(Clone, Debug, PartialEq)]
pub struct Replication {
    /// Calls are answered within this (1 ms to 10 min).
    pub latency: Duration,
    /// The fraction of the providers' capacity that may be in use before
    /// more are asked for (0 < u <= 1; default 0.7).
    pub utilisation: f64,
    /// Providers to keep at least (default 1) ...
    pub min_replicas: u32,
    /// ... and at most (default 64, at most 1024).
    pub max_replicas: u32,
}

impl Replication {
    /// One line for audits and logs.
    pub fn describe(&self) -> String {
        format!(
            "answer within {} at up to {:.0}% of capacity, {} to {} providers",
            format_duration(self.latency),
            self.utilisation * 100.0,
            self.min_replicas,
            self.max_replicas
        )
    }
}

/// What a host must offer to run the service.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirements {
    pub min_cpus: u32,
    /// Free host memory needed, in bytes.
    pub min_free_memory: u64,
    /// Largest linear memory of one instance, in bytes.
    pub max_memory: u64,
    pub fuel_per_call: u64,
    pub time_per_call: Duration,
    pub min_runtime_version: Option<semver::Version>,
    /// Allowed host architectures (`std::env::consts::ARCH` names); empty: any.
    pub arch: Vec<String>,
    /// Allowed host operating systems (`std::env::consts::OS` names); empty: any.
    pub os: Vec<String>,
}

impl Default for Requirements {
    fn default() -> Self {
        Self {
            min_cpus: 1,
            min_free_memory: 0,
            max_memory: DEFAULT_MAX_MEMORY,
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            time_per_call: DEFAULT_TIME_PER_CALL,
            min_runtime_version: None,
            arch: Vec::new(),
            os: Vec::new(),
        }
    }
}

/// The capabilities a service asks for. Anything not listed is denied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capabilities {
    pub clocks: bool,
    pub random: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub dirs: Vec<DirRequest>,
    pub net: Vec<NetRequest>,
    /// URLs (scheme, host, port, path prefix) reachable over `wasi:http`.
    pub http: Vec<HttpUrl>,
    pub env: Vec<String>,
    pub feeds: Vec<FeedRequest>,
}

impl Capabilities {
    /// One line per capability, for audits and logs.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (on, what) in [
            (self.clocks, "clocks (wall and monotonic time)"),
            (self.random, "random numbers"),
            (self.stdout, "stdout"),
            (self.stderr, "stderr"),
        ] {
            if on {
                out.push(what.to_owned());
            }
        }
        for dir in &self.dirs {
            out.push(format!(
                "directory {:?} at {} ({})",
                dir.name, dir.path, dir.access
            ));
        }
        for net in &self.net {
            out.push(format!("network {net}"));
        }
        for url in &self.http {
            out.push(format!("HTTP requests to {url}"));
        }
        for env in &self.env {
            out.push(format!("environment variable {env}"));
        }
        for feed in &self.feeds {
            out.push(format!("live feed {:?} from {}", feed.name, feed.publisher));
        }
        out
    }

    /// True when nothing is requested.
    pub fn is_empty(&self) -> bool {
        self.describe().is_empty()
    }
}

/// A directory the service wants mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirRequest {
    /// Name of the grant; the node maps it to a host directory.
    pub name: String,
    /// Absolute path where the guest sees it.
    pub path: String,
    pub access: Access,
}

/// File-system access mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
        })
    }
}

/// Transport of a network request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// An outbound network destination the service wants to reach.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetRequest {
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for NetRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.protocol, self.host, self.port)
    }
}

/// A live feed the service reads: its name and the key its source signs
/// every segment with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRequest {
    pub name: String,
    pub publisher: PublisherKey,
}

/// A self-test vector: a WAVE call and the WAVE result it must return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfTest {
    pub call: String,
    pub expect: String,
}

// ---------------------------------------------------------------------------
// The document as serde sees it. Values stay strings here so that every
// conversion error can name its element.

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename = "rps")]
struct RawManifest {
    #[serde(rename = "@format", default, skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    name: Option<String>,
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requirements: Option<RawRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capabilities: Option<RawCapabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    qos: Option<RawQos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replicas: Option<RawReplicas>,
    #[serde(rename = "self-test", default, skip_serializing_if = "Option::is_none")]
    self_test: Option<RawSelfTests>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deterministic: Option<String>,
    /// Accepted (and skipped) so that optional extensions parse; the
    /// structure pass has already checked them.
    #[serde(default, skip_serializing)]
    #[allow(dead_code)]
    extensions: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct RawRequirements {
    #[serde(rename = "min-cpus", default, skip_serializing_if = "Option::is_none")]
    min_cpus: Option<String>,
    #[serde(
        rename = "min-free-memory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    min_free_memory: Option<String>,
    #[serde(
        rename = "max-memory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    max_memory: Option<String>,
    #[serde(
        rename = "fuel-per-call",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    fuel_per_call: Option<String>,
    #[serde(
        rename = "time-per-call",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    time_per_call: Option<String>,
    #[serde(
        rename = "min-runtime-version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    min_runtime_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    arch: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    os: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct Flag {}

#[derive(Debug, Default, Deserialize, Serialize)]
struct RawCapabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clocks: Option<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    random: Option<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdout: Option<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stderr: Option<Flag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dir: Vec<RawDir>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    net: Vec<RawNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    http: Vec<RawHttp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    env: Vec<RawEnv>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    feed: Vec<RawFeed>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawFeed {
    #[serde(rename = "@name")]
    name: Option<String>,
    #[serde(rename = "@publisher")]
    publisher: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawDir {
    #[serde(rename = "@name")]
    name: Option<String>,
    #[serde(rename = "@path")]
    path: Option<String>,
    #[serde(rename = "@access")]
    access: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawNet {
    #[serde(rename = "@host")]
    host: Option<String>,
    #[serde(rename = "@port")]
    port: Option<String>,
    #[serde(rename = "@protocol", default, skip_serializing_if = "Option::is_none")]
    protocol: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawHttp {
    #[serde(rename = "@url")]
    url: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawEnv {
    #[serde(rename = "@name")]
    name: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawQos {
    #[serde(rename = "@latency")]
    latency: Option<String>,
    #[serde(
        rename = "@utilisation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    utilisation: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawReplicas {
    #[serde(rename = "@min", default, skip_serializing_if = "Option::is_none")]
    min: Option<String>,
    #[serde(rename = "@max", default, skip_serializing_if = "Option::is_none")]
    max: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct RawSelfTests {
    #[serde(default)]
    call: Vec<RawCall>,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawCall {
    #[serde(rename = "@expect")]
    expect: Option<String>,
    #[serde(rename = "$text", default)]
    call: String,
}

// ---------------------------------------------------------------------------
// Pass 1: structure and safety.

/// Children each known element may have, and whether each may repeat.
fn schema(parent: &str) -> Option<&'static [(&'static str, bool)]> {
    Some(match parent {
        "" => &[("rps", false)],
        "rps" => &[
            ("name", false),
            ("version", false),
            ("description", false),
            ("owner", false),
            ("requirements", false),
            ("capabilities", false),
            ("qos", false),
            ("replicas", false),
            ("self-test", false),
            ("deterministic", false),
            ("extensions", false),
        ],
        "requirements" => &[
            ("min-cpus", false),
            ("min-free-memory", false),
            ("max-memory", false),
            ("fuel-per-call", false),
            ("time-per-call", false),
            ("min-runtime-version", false),
            ("arch", true),
            ("os", true),
        ],
        "capabilities" => &[
            ("clocks", false),
            ("random", false),
            ("stdout", false),
            ("stderr", false),
            ("dir", true),
            ("net", true),
            ("http", true),
            ("env", true),
            ("feed", true),
        ],
        "self-test" => &[("call", true)],
        // Leaf elements: text only.
        _ => &[],
    })
}

/// The attributes each element of the format may carry (elements under
/// `<extensions>` are not checked: they have their own place).
fn attributes(element: &str) -> &'static [&'static str] {
    match element {
        "rps" => &["format"],
        "dir" => &["name", "path", "access"],
        "net" => &["host", "port", "protocol"],
        "http" => &["url"],
        "env" => &["name"],
        "feed" => &["name", "publisher"],
        "call" => &["expect"],
        "qos" => &["latency", "utilisation"],
        "replicas" => &["min", "max"],
        _ => &[],
    }
}

fn line_of(text: &str, position: u64) -> usize {
    let end = usize::try_from(position)
        .unwrap_or(usize::MAX)
        .min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Walks the document once, enforcing limits and the schema. Returns the
/// names of ignored optional extensions.
fn check_structure(text: &str) -> Result<Vec<String>, ManifestError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    // (element name, children seen)
    let mut stack: Vec<(String, HashMap<String, usize>)> = vec![(String::new(), HashMap::new())];
    let mut elements = 0usize;
    let mut ignored = Vec::new();
    // Depth at which an ignored extension subtree started.
    let mut skipping: Option<usize> = None;
    let (mut counted_to, mut line_here, mut events) = (0usize, 1usize, 0usize);
    loop {
        let position = reader.buffer_position();
        let event = reader.read_event().map_err(|e| ManifestError::Syntax {
            line: line_of(text, reader.error_position()),
            message: e.to_string(),
        })?;
        // Lines are counted incrementally: positions only grow.
        let end = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(text.len());
        if end > counted_to {
            line_here += text.as_bytes()[counted_to..end]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted_to = end;
        }
        let line = line_here;
        events += 1;
        if events > MAX_EVENTS {
            return Err(ManifestError::Syntax {
                line,
                message: format!("more than {MAX_EVENTS} XML events"),
            });
        }
        match event {
            Event::DocType(_) => return Err(ManifestError::Dtd { line }),
            Event::PI(_) => {
                return Err(ManifestError::Syntax {
                    line,
                    message: "processing instructions are not allowed".into(),
                });
            }
            Event::GeneralRef(reference) => {
                let predefined = matches!(&*reference, b"amp" | b"lt" | b"gt" | b"apos" | b"quot");
                let character = reference.is_char_ref();
                if !predefined && !character {
                    return Err(ManifestError::Syntax {
                        line,
                        message: format!(
                            "entity reference &{}; is not allowed (only the five predefined XML entities)",
                            String::from_utf8_lossy(&reference)
                        ),
                    });
                }
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(ManifestError::Syntax {
                        line,
                        message: format!("more than {MAX_ELEMENTS} elements"),
                    });
                }
                if stack.len() > MAX_DEPTH {
                    return Err(ManifestError::Syntax {
                        line,
                        message: format!("elements nested deeper than {MAX_DEPTH}"),
                    });
                }
                let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                // quick-xml's own duplicate check compares each attribute with
                // every earlier one: off, and done here on a bounded list.
                let mut keys: Vec<&[u8]> = Vec::new();
                for attribute in start.attributes().with_checks(false) {
                    let attribute = attribute.map_err(|e| ManifestError::Syntax {
                        line,
                        message: format!("<{name}>: {e}"),
                    })?;
                    let key = attribute.key.into_inner();
                    if keys.contains(&key) {
                        return Err(ManifestError::Syntax {
                            line,
                            message: format!(
                                "<{name}>: attribute {} appears twice",
                                String::from_utf8_lossy(key)
                            ),
                        });
                    }
                    if keys.len() == MAX_ATTRIBUTES {
                        return Err(ManifestError::Syntax {
                            line,
                            message: format!("<{name}> has more than {MAX_ATTRIBUTES} attributes"),
                        });
                    }
                    keys.push(key);
                    // Refuses unknown entities inside attribute values too.
                    attribute
                        .unescape_value()
                        .map_err(|e| ManifestError::Syntax {
                            line,
                            message: format!("<{name}>: {e}"),
                        })?;
                }
                if skipping.is_none() {
                    let (parent, seen) = stack.last_mut().expect("stack has a root");
                    if parent == "extensions" {
                        let required = start
                            .try_get_attribute("required")
                            .ok()
                            .flatten()
                            .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()));
                        if required.as_deref() == Some("true") {
                            return Err(ManifestError::RequiredExtension {
                                line,
                                element: name,
                            });
                        }
                        ignored.push(name.clone());
                        skipping = Some(stack.len());
                    } else {
                        let allowed = schema(parent).unwrap_or(&[]);
                        let Some(&(_, repeats)) = allowed.iter().find(|(n, _)| *n == name) else {
                            return Err(ManifestError::UnknownElement {
                                line,
                                element: name,
                                parent: if parent.is_empty() {
                                    "document".into()
                                } else {
                                    parent.clone()
                                },
                            });
                        };
                        let count = seen.entry(name.clone()).or_default();
                        *count += 1;
                        if *count > 1 && !repeats {
                            return Err(ManifestError::Duplicate {
                                line,
                                element: name,
                                parent: parent.clone(),
                            });
                        }
                        if repeats && *count > MAX_LIST {
                            return Err(invalid(&name, format!("more than {MAX_LIST} entries")));
                        }
                        let known = attributes(&name);
                        if let Some(key) = keys
                            .iter()
                            .find(|key| !known.iter().any(|k| k.as_bytes() == **key))
                        {
                            return Err(ManifestError::UnknownAttribute {
                                line,
                                attribute: String::from_utf8_lossy(key).into_owned(),
                                element: name,
                            });
                        }
                    }
                }
                if !is_empty {
                    stack.push((name, HashMap::new()));
                }
            }
            Event::End(_) => {
                stack.pop();
                if skipping.is_some_and(|depth| stack.len() < depth) {
                    skipping = None;
                }
            }
            Event::Eof => break,
            Event::Text(_) | Event::CData(_) | Event::Comment(_) | Event::Decl(_) => {}
        }
    }
    if stack.len() != 1 || elements == 0 {
        return Err(ManifestError::Structure(
            "document has no complete <rps> element".into(),
        ));
    }
    Ok(ignored)
}

// ---------------------------------------------------------------------------
// Pass 2: typed values.

/// The service-name rule: 1 to 63 lowercase ASCII letters, digits and `-`,
/// starting with a letter and not ending with `-`. Manifests are held to it,
/// and so is every name that arrives in a network request.
pub fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

fn is_grant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != ".."
}

fn is_guest_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 255
        && !path.contains('\0')
        && path.split('/').all(|part| part != ".." && part != ".")
}

fn is_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// A host name (letters, digits and `-` in dot-separated labels) or an IP
/// address.
pub(crate) fn is_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
}

fn required<'a>(
    value: &'a Option<String>,
    element: &'static str,
) -> Result<&'a str, ManifestError> {
    value
        .as_deref()
        .map(str::trim)
        .ok_or(ManifestError::Missing(element))
}

fn attr<'a>(
    value: &'a Option<String>,
    element: &str,
    attr: &str,
) -> Result<&'a str, ManifestError> {
    value
        .as_deref()
        .map(str::trim)
        .ok_or_else(|| invalid(element, format!("missing attribute {attr}=\"…\"")))
}

impl Manifest {
    /// Parses and validates a manifest document.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge { size: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(ManifestError::NotUtf8)?;
        let ignored_extensions = check_structure(text)?;
        let raw: RawManifest =
            quick_xml::de::from_str(text).map_err(|e| ManifestError::Structure(e.to_string()))?;
        Self::from_raw(raw, ignored_extensions)
    }

    fn from_raw(raw: RawManifest, ignored_extensions: Vec<String>) -> Result<Self, ManifestError> {
        if let Some(format) = raw.format.as_deref()
            && format.trim() != FORMAT
        {
            return Err(invalid(
                "rps",
                format!(
                    "format=\"{format}\" is not supported (this runtime reads format {FORMAT})"
                ),
            ));
        }
        let name = required(&raw.name, "name")?.to_owned();
        if !is_service_name(&name) {
            return Err(invalid(
                "name",
                format!(
                    "{name:?}: use 1-63 lowercase letters, digits and '-', starting with a letter"
                ),
            ));
        }
        let version_text = required(&raw.version, "version")?;
        let version = semver::Version::parse(version_text).map_err(|e| {
            invalid(
                "version",
                format!("{version_text:?} is not a semantic version: {e}"),
            )
        })?;
        let description = raw.description.as_deref().unwrap_or("").trim().to_owned();
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(invalid(
                "description",
                format!("longer than {MAX_DESCRIPTION} characters"),
            ));
        }
        let owner = match raw.owner.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<PublisherKey>()
                    .map_err(|e| invalid("owner", e.to_string()))?,
            ),
        };
        let requirements = Self::requirements(raw.requirements.unwrap_or_default())?;
        let capabilities = Self::capabilities(raw.capabilities.unwrap_or_default())?;
        let replication = Self::replication(raw.qos, raw.replicas)?;
        let mut self_tests = Vec::new();
        for call in raw.self_test.map(|s| s.call).unwrap_or_default() {
            let expect = attr(&call.expect, "call", "expect")?.to_owned();
            let text = call.call.trim().to_owned();
            if text.is_empty() {
                return Err(invalid("call", "empty call (write e.g. greet(\"x\"))"));
            }
            self_tests.push(SelfTest { call: text, expect });
        }
        let deterministic = match raw.deterministic.as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid(
                    "deterministic",
                    format!("{other:?} is neither true nor false"),
                ));
            }
        };
        if self_tests.len() > MAX_SELF_TESTS {
            return Err(invalid(
                "self-test",
                format!("more than {MAX_SELF_TESTS} calls"),
            ));
        }
        Ok(Self {
            name,
            version,
            description,
            owner,
            requirements,
            capabilities,
            replication,
            self_tests,
            deterministic,
            ignored_extensions,
        })
    }

    fn replication(
        qos: Option<RawQos>,
        replicas: Option<RawReplicas>,
    ) -> Result<Option<Replication>, ManifestError> {
        let Some(qos) = qos else {
            return match replicas {
                Some(_) => Err(invalid(
                    "replicas",
                    "needs a <qos latency=\"...\"/> target: providers are added and retired to keep it",
                )),
                None => Ok(None),
            };
        };
        let text = attr(&qos.latency, "qos", "latency")?;
        let latency = parse_duration(text).map_err(|e| invalid("qos", format!("latency: {e}")))?;
        if !LATENCY_RANGE.contains(&latency) {
            return Err(invalid(
                "qos",
                format!("latency {text:?} is outside 1ms to 10min"),
            ));
        }
        let utilisation = match qos.utilisation.as_deref().map(str::trim) {
            None => DEFAULT_UTILISATION,
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|u| u.is_finite() && *u > 0.0 && *u <= 1.0)
                .ok_or_else(|| {
                    invalid(
                        "qos",
                        format!("utilisation {text:?} is not a fraction above 0 and at most 1"),
                    )
                })?,
        };
        let count = |text: Option<&str>, what: &str, default: u32| -> Result<u32, ManifestError> {
            let Some(text) = text else {
                return Ok(default);
            };
            parse_count(text)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_REPLICAS).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "replicas",
                        format!("{what} {text:?} is not a count from 1 to {MAX_REPLICAS}"),
                    )
                })
        };
        let (min, max) = match &replicas {
            Some(r) => (r.min.as_deref(), r.max.as_deref()),
            None => (None, None),
        };
        let min_replicas = count(min, "min", 1)?;
        let max_replicas = count(max, "max", DEFAULT_MAX_REPLICAS.max(min_replicas))?;
        if max_replicas < min_replicas {
            return Err(invalid(
                "replicas",
                format!("max {max_replicas} is below min {min_replicas}"),
            ));
        }
        Ok(Some(Replication {
            latency,
            utilisation,
            min_replicas,
            max_replicas,
        }))
    }

    fn requirements(raw: RawRequirements) -> Result<Requirements, ManifestError> {
        let mut out = Requirements::default();
        if let Some(text) = raw.min_cpus.as_deref() {
            let cpus = parse_count(text).map_err(|e| invalid("min-cpus", e))?;
            out.min_cpus = u32::try_from(cpus)
                .ok()
                .filter(|c| *c >= 1)
                .ok_or_else(|| {
                    invalid("min-cpus", format!("{cpus} is not between 1 and 2^32-1"))
                })?;
        }
        if let Some(text) = raw.min_free_memory.as_deref() {
            out.min_free_memory = parse_size(text).map_err(|e| invalid("min-free-memory", e))?;
        }
        if let Some(text) = raw.max_memory.as_deref() {
            out.max_memory = parse_size(text).map_err(|e| invalid("max-memory", e))?;
            if out.max_memory < 64 * 1024 {
                return Err(invalid(
                    "max-memory",
                    "must be at least one 64 KiB wasm page",
                ));
            }
        }
        if let Some(text) = raw.fuel_per_call.as_deref() {
            out.fuel_per_call = parse_count(text).map_err(|e| invalid("fuel-per-call", e))?;
            if out.fuel_per_call == 0 {
                return Err(invalid("fuel-per-call", "must be positive"));
            }
        }
        if let Some(text) = raw.time_per_call.as_deref() {
            out.time_per_call = parse_duration(text).map_err(|e| invalid("time-per-call", e))?;
            if out.time_per_call.is_zero() {
                return Err(invalid("time-per-call", "must be positive"));
            }
        }
        if let Some(text) = raw.min_runtime_version.as_deref() {
            out.min_runtime_version = Some(semver::Version::parse(text.trim()).map_err(|e| {
                invalid(
                    "min-runtime-version",
                    format!("{text:?} is not a semantic version: {e}"),
                )
            })?);
        }
        for (element, list, target) in [
            ("arch", raw.arch, &mut out.arch),
            ("os", raw.os, &mut out.os),
        ] {
            for value in list {
                let value = value.trim().to_owned();
                if value.is_empty()
                    || value.len() > 32
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(invalid(
                        element,
                        format!("{value:?} is not a platform name"),
                    ));
                }
                target.push(value);
            }
        }
        Ok(out)
    }

    fn capabilities(raw: RawCapabilities) -> Result<Capabilities, ManifestError> {
        let mut out = Capabilities {
            clocks: raw.clocks.is_some(),
            random: raw.random.is_some(),
            stdout: raw.stdout.is_some(),
            stderr: raw.stderr.is_some(),
            ..Capabilities::default()
        };
        for dir in raw.dir {
            let name = attr(&dir.name, "dir", "name")?.to_owned();
            if !is_grant_name(&name) {
                return Err(invalid(
                    "dir",
                    format!("name {name:?}: use letters, digits, '-', '_', '.'"),
                ));
            }
            let path = attr(&dir.path, "dir", "path")?.to_owned();
            if !is_guest_path(&path) {
                return Err(invalid(
                    "dir",
                    format!("path {path:?} must be absolute, without '.' or '..' components"),
                ));
            }
            let access = match dir.access.as_deref().map(str::trim) {
                None | Some("read-only") => Access::ReadOnly,
                Some("read-write") => Access::ReadWrite,
                Some(other) => {
                    return Err(invalid(
                        "dir",
                        format!("access {other:?}: use \"read-only\" or \"read-write\""),
                    ));
                }
            };
            if out.dirs.iter().any(|d| d.name == name || d.path == path) {
                return Err(invalid(
                    "dir",
                    format!("{name:?} / {path:?} is declared twice"),
                ));
            }
            out.dirs.push(DirRequest { name, path, access });
        }
        for net in raw.net {
            let host = attr(&net.host, "net", "host")?.to_ascii_lowercase();
            if !is_host(&host) {
                return Err(invalid(
                    "net",
                    format!("host {host:?} is not a host name or IP address"),
                ));
            }
            let port_text = attr(&net.port, "net", "port")?;
            let port = port_text
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("net", format!("port {port_text:?} is not 1-65535")))?;
            let protocol = match net.protocol.as_deref().map(str::trim) {
                None | Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(other) => {
                    return Err(invalid(
                        "net",
                        format!("protocol {other:?}: use tcp or udp"),
                    ));
                }
            };
            out.net.push(NetRequest {
                host,
                port,
                protocol,
            });
        }
        for http in raw.http {
            let url = HttpUrl::parse(attr(&http.url, "http", "url")?)
                .map_err(|reason| invalid("http", format!("url: {reason}")))?;
            if !out.http.contains(&url) {
                out.http.push(url);
            }
        }
        for env in raw.env {
            let name = attr(&env.name, "env", "name")?.to_owned();
            if !is_env_name(&name) {
                return Err(invalid(
                    "env",
                    format!("{name:?} is not an environment variable name"),
                ));
            }
            if !out.env.contains(&name) {
                out.env.push(name);
            }
        }
        for feed in raw.feed {
            let name = attr(&feed.name, "feed", "name")?.to_owned();
            if !crate::feed::is_feed_name(&name) {
                return Err(invalid(
                    "feed",
                    format!("name {name:?}: use 1-64 of a-z, 0-9, '-', '_', '.'"),
                ));
            }
            let publisher = attr(&feed.publisher, "feed", "publisher")?
                .parse::<PublisherKey>()
                .map_err(|e| invalid("feed", format!("publisher: {e}")))?;
            if out.feeds.iter().any(|f| f.name == name) {
                return Err(invalid("feed", format!("{name:?} is declared twice")));
            }
            out.feeds.push(FeedRequest { name, publisher });
        }
        Ok(out)
    }

    /// The canonical XML form: what `sp2a pack` signs and packages carry.
    /// Parsing it yields this manifest again (minus ignored extensions).
    pub fn to_xml(&self) -> String {
        let r = &self.requirements;
        let defaults = Requirements::default();
        let requirements = RawRequirements {
            min_cpus: (r.min_cpus != defaults.min_cpus).then(|| r.min_cpus.to_string()),
            min_free_memory: (r.min_free_memory != 0).then(|| r.min_free_memory.to_string()),
            max_memory: Some(r.max_memory.to_string()),
            fuel_per_call: Some(r.fuel_per_call.to_string()),
            time_per_call: Some(format_duration(r.time_per_call)),
            min_runtime_version: r.min_runtime_version.as_ref().map(|v| v.to_string()),
            arch: r.arch.clone(),
            os: r.os.clone(),
        };
        let c = &self.capabilities;
        let flag = |on: bool| on.then(Flag::default);
        let capabilities = RawCapabilities {
            clocks: flag(c.clocks),
            random: flag(c.random),
            stdout: flag(c.stdout),
            stderr: flag(c.stderr),
            dir: c
                .dirs
                .iter()
                .map(|d| RawDir {
                    name: Some(d.name.clone()),
                    path: Some(d.path.clone()),
                    access: Some(d.access.to_string()),
                })
                .collect(),
            net: c
                .net
                .iter()
                .map(|n| RawNet {
                    host: Some(n.host.clone()),
                    port: Some(n.port.to_string()),
                    protocol: Some(n.protocol.to_string()),
                })
                .collect(),
            http: c
                .http
                .iter()
                .map(|u| RawHttp {
                    url: Some(u.to_string()),
                })
                .collect(),
            env: c
                .env
                .iter()
                .map(|e| RawEnv {
                    name: Some(e.clone()),
                })
                .collect(),
            feed: c
                .feeds
                .iter()
                .map(|f| RawFeed {
                    name: Some(f.name.clone()),
                    publisher: Some(f.publisher.to_string()),
                })
                .collect(),
        };
        let raw = RawManifest {
            format: Some(FORMAT.to_owned()),
            name: Some(self.name.clone()),
            version: Some(self.version.to_string()),
            description: (!self.description.is_empty()).then(|| self.description.clone()),
            owner: self.owner.map(|o| o.to_string()),
            requirements: Some(requirements),
            capabilities: (!c.is_empty()).then_some(capabilities),
            qos: self.replication.as_ref().map(|r| RawQos {
                latency: Some(format_duration(r.latency)),
                utilisation: Some(r.utilisation.to_string()),
            }),
            replicas: self.replication.as_ref().map(|r| RawReplicas {
                min: Some(r.min_replicas.to_string()),
                max: Some(r.max_replicas.to_string()),
            }),
            self_test: (!self.self_tests.is_empty()).then(|| RawSelfTests {
                call: self
                    .self_tests
                    .iter()
                    .map(|t| RawCall {
                        expect: Some(t.expect.clone()),
                        call: t.call.clone(),
                    })
                    .collect(),
            }),
            deterministic: self.deterministic.then(|| "true".to_owned()),
            extensions: None,
        };
        let mut out = String::new();
        let mut serializer = quick_xml::se::Serializer::new(&mut out);
        serializer.indent(' ', 2);
        raw.serialize(serializer)
            .expect("serializing a manifest to a string cannot fail");
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<rps format="1">
  <name>notes</name>
  <version>0.2.1</version>
  <description>Small text notes &amp; more</description>
  <requirements>
    <min-cpus>2</min-cpus>
    <min-free-memory>32 MiB</min-free-memory>
    <max-memory>16 MiB</max-memory>
    <fuel-per-call>500_000_000</fuel-per-call>
    <time-per-call>1500ms</time-per-call>
    <min-runtime-version>0.1.0</min-runtime-version>
    <arch>x86_64</arch>
    <arch>aarch64</arch>
    <os>linux</os>
  </requirements>
  <capabilities>
    <clocks/>
    <stderr/>
    <dir name="notes" path="/notes" access="read-write"/>
    <net host="Example.org" port="443"/>
    <http url="https://API.example.org/v1/"/>
    <http url="http://127.0.0.1:8080"/>
    <env name="LANG"/>
    <feed name="live" publisher="ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"/>
  </capabilities>
  <qos latency="500ms" utilisation="0.8"/>
  <replicas min="2" max="12"/>
  <self-test>
    <call expect='ok("a &lt; b")'>notes.get("x")</call>
    <call expect="true">delete("y")</call>
  </self-test>
  <deterministic>true</deterministic>
  <extensions>
    <x-hint><deep>ignored</deep></x-hint>
  </extensions>
</rps>
"#;

    #[test]
    fn parses_every_field() {
        let m = Manifest::parse(FULL.as_bytes()).unwrap();
        assert_eq!(m.name, "notes");
        assert_eq!(m.version, semver::Version::new(0, 2, 1));
        assert_eq!(m.description, "Small text notes & more");
        assert_eq!(m.requirements.min_cpus, 2);
        assert_eq!(m.requirements.min_free_memory, 32 << 20);
        assert_eq!(m.requirements.max_memory, 16 << 20);
        assert_eq!(m.requirements.fuel_per_call, 500_000_000);
        assert_eq!(m.requirements.time_per_call, Duration::from_millis(1500));
        assert_eq!(m.requirements.arch, ["x86_64", "aarch64"]);
        assert_eq!(m.requirements.os, ["linux"]);
        assert!(m.capabilities.clocks && !m.capabilities.random && m.capabilities.stderr);
        assert_eq!(m.capabilities.dirs[0].access, Access::ReadWrite);
        assert_eq!(m.capabilities.net[0].host, "example.org");
        assert_eq!(m.capabilities.net[0].protocol, Protocol::Tcp);
        let urls: Vec<String> = m.capabilities.http.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            urls,
            ["https://api.example.org/v1/", "http://127.0.0.1:8080/"]
        );
        assert_eq!(m.capabilities.env, ["LANG"]);
        assert_eq!(m.capabilities.feeds[0].name, "live");
        assert_eq!(
            m.capabilities.feeds[0].publisher.to_string(),
            "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            m.replication,
            Some(Replication {
                latency: Duration::from_millis(500),
                utilisation: 0.8,
                min_replicas: 2,
                max_replicas: 12,
            })
        );
        assert_eq!(m.self_tests[0].expect, "ok(\"a < b\")");
        assert!(m.deterministic);
        assert_eq!(m.self_tests[1].call, "delete(\"y\")");
        assert_eq!(m.ignored_extensions, ["x-hint"]);
    }

    #[test]
    fn canonical_form_round_trips() {
        let mut m = Manifest::parse(FULL.as_bytes()).unwrap();
        m.owner = Some(crate::package::SecretKey::generate().public());
        let xml = m.to_xml();
        let again = Manifest::parse(xml.as_bytes()).unwrap();
        m.ignored_extensions.clear();
        assert_eq!(again, m, "{xml}");
        assert_eq!(again.to_xml(), xml);
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = Manifest::parse(b"<rps><name>a</name><version>1.0.0</version></rps>").unwrap();
        assert_eq!(m.requirements, Requirements::default());
        assert!(m.capabilities.is_empty());
    }

    fn error(xml: &str) -> String {
        Manifest::parse(xml.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn refuses_dtd_and_entity_bombs() {
        let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<rps><name>&lol2;</name><version>1.0.0</version></rps>"#;
        assert_eq!(
            error(bomb),
            "manifest line 2: DTDs and entity declarations are not allowed"
        );
        let undeclared = "<rps><name>&lol;</name><version>1.0.0</version></rps>";
        assert!(
            error(undeclared).contains("entity reference &lol;"),
            "{}",
            error(undeclared)
        );
        let in_attribute = r#"<rps><name>a</name><version>1.0.0</version><capabilities><env name="&x;"/></capabilities></rps>"#;
        assert!(
            error(in_attribute).contains("line 1"),
            "{}",
            error(in_attribute)
        );
        let external = r#"<!DOCTYPE rps SYSTEM "file:///etc/passwd"><rps/>"#;
        assert!(error(external).contains("DTD"));
    }

    #[test]
    fn refuses_oversize_and_deep_documents() {
        let big = format!(
            "<rps><name>a</name><version>1.0.0</version><description>{}</description></rps>",
            "x".repeat(MAX_MANIFEST_SIZE)
        );
        assert!(error(&big).contains("limit is 65536"));
        let deep = format!(
            "<rps><extensions>{}{}</extensions></rps>",
            "<x>".repeat(20),
            "</x>".repeat(20)
        );
        assert!(error(&deep).contains("deeper than 8"), "{}", error(&deep));
    }

    #[test]
    fn an_attribute_flood_is_refused_before_it_costs_anything() {
        // 7,000 attributes fit in 64 KiB: quadratic duplicate checks made
        // such a manifest take 0.4 s to parse.
        let attributes: String = (0..7000).map(|i| format!(" a{i}=\"\"")).collect();
        let flood = format!("<rps>\n<name{attributes}>a</name><version>1.0.0</version></rps>");
        assert!(flood.len() <= MAX_MANIFEST_SIZE);
        let start = std::time::Instant::now();
        assert_eq!(
            error(&flood),
            "manifest line 2: <name> has more than 8 attributes"
        );
        // Generous for a loaded machine; the quadratic parse took 400 ms.
        assert!(start.elapsed() < std::time::Duration::from_millis(100));
        let twice = "<rps><name>a</name><version>1.0.0</version><capabilities>\n<dir name=\"a\" path=\"/a\" name=\"b\"/></capabilities></rps>";
        assert_eq!(
            error(twice),
            "manifest line 2: <dir>: attribute name appears twice"
        );
    }

    #[test]
    fn names_unknown_and_duplicate_elements() {
        let unknown = "<rps>\n<name>a</name>\n<version>1.0.0</version>\n<requirements><gpu>1</gpu></requirements></rps>";
        assert_eq!(
            error(unknown),
            "manifest line 4: unknown element <gpu> in <requirements>"
        );
        let duplicate = "<rps><name>a</name><name>b</name><version>1.0.0</version></rps>";
        assert_eq!(
            error(duplicate),
            "manifest line 1: <name> may appear only once in <rps>"
        );
        let attribute = "<rps><name>a</name><version>1.0.0</version><capabilities>\n<dir name=\"a\" path=\"/a\" mode=\"0777\"/></capabilities></rps>";
        assert_eq!(
            error(attribute),
            "manifest line 2: unknown attribute mode on <dir>"
        );
        let on_text = "<rps><name lang=\"en\">a</name><version>1.0.0</version></rps>";
        assert_eq!(
            error(on_text),
            "manifest line 1: unknown attribute lang on <name>"
        );
        // Extensions keep their own attributes.
        let extension = "<rps><name>a</name><version>1.0.0</version><extensions><x-rule level=\"2\"><x-sub k=\"v\"/></x-rule></extensions></rps>";
        assert!(Manifest::parse(extension.as_bytes()).is_ok());
        let required_ext = "<rps><name>a</name><version>1.0.0</version>\n<extensions>\n<x-rule required=\"true\"/></extensions></rps>";
        assert!(error(required_ext).starts_with("manifest line 3: extension <x-rule>"));
        let wrong_root = "<service><name>a</name></service>";
        assert!(error(wrong_root).contains("unknown element <service> in <document>"));
    }

    #[test]
    fn names_bad_values() {
        let cases = [
            ("<name>Hello</name><version>1.0.0</version>", "<name>"),
            ("<name>a</name><version>one</version>", "<version>"),
            ("<name>a</name>", "<version>"),
            (
                "<name>a</name><version>1.0.0</version><requirements><max-memory>12 XB</max-memory></requirements>",
                "<max-memory>",
            ),
            (
                "<name>a</name><version>1.0.0</version><requirements><time-per-call>5</time-per-call></requirements>",
                "<time-per-call>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><dir name=\"x\" path=\"/a/../b\"/></capabilities>",
                "<dir>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><dir name=\"..\" path=\"/a\"/></capabilities>",
                "<dir>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><net host=\"a b\" port=\"1\"/></capabilities>",
                "<net>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><net host=\"a\" port=\"0\"/></capabilities>",
                "<net>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><env name=\"A=B\"/></capabilities>",
                "<env>",
            ),
            (
                "<name>a</name><version>1.0.0</version><owner>ed25519:00</owner>",
                "<owner>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><feed name=\"live\"/></capabilities>",
                "<feed>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><feed name=\"Live!\" publisher=\"ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"/></capabilities>",
                "<feed>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><feed name=\"live\" publisher=\"ed25519:00\"/></capabilities>",
                "<feed>",
            ),
            (
                "<name>a</name><version>1.0.0</version><capabilities><feed name=\"live\" publisher=\"ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"/><feed name=\"live\" publisher=\"ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"/></capabilities>",
                "<feed>",
            ),
            ("<name>a</name><version>1.0.0</version><qos/>", "<qos>"),
            (
                "<name>a</name><version>1.0.0</version><deterministic>yes</deterministic>",
                "<deterministic>",
            ),
            (
                "<name>a</name><version>1.0.0</version><qos latency=\"0ms\"/>",
                "<qos>",
            ),
            (
                "<name>a</name><version>1.0.0</version><qos latency=\"1s\" utilisation=\"1.5\"/>",
                "<qos>",
            ),
            (
                "<name>a</name><version>1.0.0</version><qos latency=\"1s\" utilisation=\"NaN\"/>",
                "<qos>",
            ),
            (
                "<name>a</name><version>1.0.0</version><qos latency=\"1s\" burst=\"2\"/>",
                "<qos>",
            ),
            (
                "<name>a</name><version>1.0.0</version><replicas min=\"1\"/>",
                "<replicas>",
            ),
            (
                "<name>a</name><version>1.0.0</version><qos latency=\"1s\"/><replicas min=\"3\" max=\"2\"/>",
                "<replicas>",
            ),
            (
                "<name>a</name><version>1.0.0</version><qos latency=\"1s\"/><replicas max=\"5000\"/>",
                "<replicas>",
            ),
            (
                "<name>a</name><version>1.0.0</version><qos latency=\"1s\"/><replicas min=\"0\"/>",
                "<replicas>",
            ),
        ];
        for (body, element) in cases {
            let message = error(&format!("<rps>{body}</rps>"));
            assert!(message.contains(element), "{body}: {message}");
        }
    }

    #[test]
    fn refuses_malformed_xml_with_line() {
        let message = error("<rps>\n<name>a</nam>\n</rps>");
        assert!(message.starts_with("manifest line 2"), "{message}");
        assert!(error("").contains("no complete <rps>"));
        assert!(
            error("<rps><name>a</name>").contains("no complete"),
            "{}",
            error("<rps><name>a</name>")
        );
        assert!(error("<?php evil ?><rps/>").contains("processing instructions"));
    }
}
