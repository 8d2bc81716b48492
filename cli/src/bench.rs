//! `sp2a bench ...`: the benchmarks of `sp2a_bench`, one subcommand each.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Single-node sandbox costs: compile, cached activation, instantiate, call.
    Local(sp2a_bench::local::Options),
    /// The first call of a big component (an 18 MB Python component) after
    /// it arrives: baseline-first compiling against the optimising compiler
    /// only, and calls on each build.
    FirstCall(sp2a_bench::first_call::Options),
    /// Two nodes on loopback: pull time of the 2 MiB stream package, remote
    /// call latency and throughput, memory of an idle node.
    Network(sp2a_bench::network::Options),
    /// The paper's experiment: 1 seed, N nodes pull at once (swarm, paper,
    /// origin), against the uplink-sharing lower bound; CSV and SVG plots.
    Diffusion(sp2a_bench::diffusion::Options),
    /// The diffusion experiment simulated to 10^5 nodes: the real swarm
    /// core and upload decisions over a modelled network (uplinks,
    /// downlinks, round trips, DHT lookups, churn); CSV and a plot.
    Simulate(sp2a_bench::simulate::Options),
    /// The diffusion experiment with every node as its own `sp2a node`
    /// process in its own network namespace, uplinks shaped by the kernel,
    /// against the in-process run with the same parameters (needs root and
    /// `ip netns`; `--clean` removes what a killed run left).
    Testbed(sp2a_bench::testbed::Options),
    /// Emulated home networks for nodes behind NATs, in network
    /// namespaces: two public hosts on an "internet" bridge and three homes
    /// behind NAT routers (two port-preserving, one symmetric). `up` builds
    /// them and prints each host's namespace; `down` removes them (needs
    /// root, `ip netns` and `iptables`).
    Homes(sp2a_bench::testbed::homes::Options),
    /// The live-streaming scenario: a flash crowd of viewers; providers
    /// that spread to standby nodes and retire (adaptive), against the
    /// initial providers only (static) and every standby active (all).
    Adapt(sp2a_bench::adapt::Options),
    /// Reputation-based provider selection (SAFE) against bad providers,
    /// slanderers, colluders, whitewashers and oscillating providers: a
    /// seeded simulation of the reputation core, against random choice and
    /// own experience only.
    Reputation(sp2a_bench::reputation::Options),
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Local(options) => sp2a_bench::local::run(options).await,
        Command::FirstCall(options) => sp2a_bench::first_call::run(options).await,
        Command::Network(options) => sp2a_bench::network::run(options).await,
        Command::Diffusion(options) => sp2a_bench::diffusion::run_bench(options).await,
        Command::Simulate(options) => sp2a_bench::simulate::run(options),
        Command::Testbed(options) => sp2a_bench::testbed::run(options).await,
        Command::Homes(options) => sp2a_bench::testbed::homes::run(options),
        Command::Adapt(options) => sp2a_bench::adapt::run(options).await,
        Command::Reputation(options) => sp2a_bench::reputation::run(options),
    }
}
