//! Benchmarks, experiments and the demo of sp2a, kept out of the runtime
//! library: each prints its numbers next to a baseline measured in the same
//! run.
//!
//! * [`demo`]: the whole flow on the example services, on one node and
//!   then across six nodes (`./run demo`).
//! * [`local`]: the sandbox's costs against plain wasmtime.
//! * [`first_call`]: how soon a big component answers after a pull, with
//!   baseline-first compiling against the optimising compiler only.
//! * [`network`]: two nodes on loopback against plain TCP and local calls.
//! * [`diffusion`]: the paper's 1 -> N experiment, with CSV and SVG plots.
//! * [`adapt`]: the live-streaming scenario: a flash crowd, providers that
//!   spread and retire, against static and all-active baselines.
//! * [`reputation`]: the reputation core (SAFE) against attacks, in a
//!   seeded simulation.
//! * [`simulate`]: the diffusion experiment as a discrete-event simulation
//!   of the real swarm core, to 10^5 nodes.
//! * [`services`]: packing the example services for all of the above.

pub mod adapt;
pub mod cheat;
pub mod demo;
pub mod diffusion;
pub mod first_call;
pub mod local;
pub mod network;
mod plot;
pub mod reputation;
pub mod services;
pub mod simulate;
pub mod testbed;

use std::time::Duration;

/// The median of `samples` (sorts them).
pub(crate) fn median(samples: &mut [Duration]) -> Duration {
    percentile(samples, 0.5)
}

/// The `p` quantile of `samples`, nearest rank (sorts them).
pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

pub(crate) fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

pub(crate) fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
