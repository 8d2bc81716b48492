//! The sandbox: wasmtime with the component model, running verified packages
//! with fuel, memory, stack and wall-time limits and only the WASI
//! capabilities that the manifest asks for and the node's policy grants.
//!
//! * [`engine`]: the wasmtime engines of a process, one per compiler
//!   (optimising and baseline; pooling allocator, fuel, epoch interruption,
//!   bounded stacks), their epoch ticker and the tiering setting.
//! * [`caps`]: per-call host state: the WASI context built from [`Grants`],
//!   captured stdio and the `sp2a:rps` host imports (live feeds read from
//!   the node's [`crate::feed::Feeds`], granted ones only).
//! * [`audit`]: the component's real imports and exports compared with the
//!   manifest's declared capabilities.
//! * [`executor`]: compile cache, baseline-first compiling with the
//!   optimised build swapped in, activation (`InstancePre`), dynamic
//!   invocation with WAVE values, trap classification, self-tests.
//! * [`wit`]: renders component types as WIT text for audits.

pub mod audit;
pub mod caps;
pub mod engine;
pub mod executor;
mod outbound;
pub mod wit;

use std::path::PathBuf;
use std::time::Duration;

use crate::package::manifest::{Access, Protocol};

pub use audit::{Audit, ImportClass, ImportReport};
pub use engine::{Sandbox, SandboxConfig, Tiering};
pub use executor::{
    Activation, CallOutcome, ExportedFunc, Instance, InvokeError, SelfTestFailure, Tier, same_wave,
};

/// Per-call limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest linear memory of the instance, in bytes.
    pub max_memory: u64,
    pub fuel_per_call: u64,
    pub time_per_call: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory: crate::package::manifest::DEFAULT_MAX_MEMORY,
            fuel_per_call: crate::package::manifest::DEFAULT_FUEL_PER_CALL,
            time_per_call: crate::package::manifest::DEFAULT_TIME_PER_CALL,
        }
    }
}

/// A directory granted to a service: `<root>/<relative>` on the host,
/// mounted at `guest_path`.
#[derive(Clone, Debug, PartialEq)]
pub struct DirGrant {
    pub root: PathBuf,
    pub relative: PathBuf,
    pub guest_path: String,
    pub access: Access,
}

/// An outbound network destination granted to a service.
#[derive(Clone, Debug, PartialEq)]
pub struct NetGrant {
    pub host: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A live feed granted to a service: its name and its source's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedGrant {
    pub name: String,
    pub publisher: crate::package::PublisherKey,
}

/// Everything a service instance is given: the intersection of what its
/// manifest asks for and what the node's policy allows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grants {
    pub limits: Limits,
    pub clocks: bool,
    pub random: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub env: Vec<(String, String)>,
    pub net: Vec<NetGrant>,
    /// URL prefixes outgoing HTTP requests may go to.
    pub http: Vec<crate::package::url::HttpUrl>,
    pub dirs: Vec<DirGrant>,
    pub feeds: Vec<FeedGrant>,
}

/// Sandbox failures outside of a call (compiling, activating).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    #[error("not a WebAssembly component: {0}")]
    NotComponent(String),
    #[error("cannot compile the component: {0}")]
    Compile(String),
    #[error("cannot link the component: {0}")]
    Link(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("cannot prepare granted directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{legacy} holds data from before directories were kept per publisher; \
         move it to {moved} if it belongs to this publisher's service, or remove it"
    )]
    LegacyData { legacy: String, moved: String },
    #[error("cannot resolve granted host {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("compile cache {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
    #[error("self-test failed: {0}")]
    SelfTest(#[from] SelfTestFailure),
}
