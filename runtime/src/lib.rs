//! sp2a: a runtime that lets services move across a peer-to-peer cloud as
//! signed WebAssembly components (the SP2A paper's "pull approach").
//!
//! * [`package`]: manifests, the signed one-file package format, content ids, keys.
//! * [`sandbox`]: wasmtime with limits and capability-based WASI; audit; invocation.
//! * [`policy`]: the node operator's trust, grants, caps and resources.
//! * [`node`]: the paper's RPSManager: verify, check, activate, invoke.

pub mod diffusion;
pub mod net;
pub mod node;
pub mod package;
pub mod policy;
pub mod sandbox;

/// The version of this runtime, compared with manifests' `<min-runtime-version>`.
pub fn runtime_version() -> semver::Version {
    semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver")
}
