//! sp2a: a runtime that lets services move across a peer-to-peer cloud as
//! signed WebAssembly components (the SP2A paper's "pull approach").
//!
//! * [`package`]: manifests, the signed one-file package format, content ids, keys.
//! * [`sandbox`]: wasmtime with limits and capability-based WASI; audit; invocation.
//! * [`policy`]: the node operator's trust, grants, caps and resources, and
//!   the one admission check.
//! * [`net`]: libp2p: the event loop that owns the swarm, its client, the
//!   wire protocols, DHT keys.
//! * [`node`]: the paper's RPSManager, as roles that each own their state.
//! * [`swarm`]: the swarming download's decisions, a pure state machine.
//! * [`replication`]: when a service's providers grow and retire under load,
//!   a pure decision core.
//! * [`reputation`]: which provider to call, from own transactions and
//!   advisors' evaluations (the paper's SAFE), a pure decision core.
//! * [`feed`]: live feeds: signed segments and the bounded buffer guests
//!   read them from.
//! * [`blocks`]: verified 16 KiB blocks of a component and their bitmaps.
//! * [`backoff`] and [`files`]: the one back-off policy; safe file writes
//!   and trusted directories.
//! * [`ip`] and [`limit`]: how far an IP address reaches and its network;
//!   token buckets, per peer, per network and in all.
//!
//! `sandbox` and `net` never import each other; `node` is where they meet.
//! The pure cores (`swarm`, `replication`, `reputation`, `blocks`, `backoff`,
//! `ip`, `limit`) import neither.

pub mod backoff;
pub mod blocks;
pub mod feed;
pub mod files;
pub mod ip;
pub mod limit;
pub mod net;
pub mod node;
pub mod package;
pub mod policy;
pub mod replication;
pub mod reputation;
pub mod sandbox;
pub mod swarm;

/// The version of this runtime, compared with manifests' `<min-runtime-version>`.
pub fn runtime_version() -> semver::Version {
    semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver")
}
