//! Subcommands of the `sp2a` binary, one module each. Each parses into an
//! options struct and calls into the library.

mod audit;
mod bench;
mod call;
mod demo;
mod diffusion;
mod keygen;
mod node;
mod pack;
mod remote;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sp2a::policy::Policy;

/// sp2a: signed WebAssembly services that move across a peer-to-peer cloud.
#[derive(Debug, Parser)]
#[command(name = "sp2a", version, about)]
pub struct Cli {
    /// More output (-v: progress and context on errors, -vv: debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a publisher keypair (PKCS#8 PEM private key, SPKI PEM public key).
    Keygen(keygen::Args),
    /// Pack a component and its manifest into a signed package.
    Pack(pack::Args),
    /// Show what a package is, what it asks for and whether this node would run it.
    Audit(audit::Args),
    /// Verify, audit, self-test, activate and invoke a package locally.
    Call(call::Args),
    /// Run a node until Ctrl-C: provide services, pull, answer peers.
    Node(node::Args),
    /// Find the providers of a service and their signed adverts.
    Find(remote::FindArgs),
    /// Pull a service: check, download (verified), activate, provide.
    Pull(remote::PullArgs),
    /// Show a node's peers, services and transfers.
    Status(remote::StatusArgs),
    /// Pack, audit and call the example services, printing each step.
    Demo(demo::Args),
    /// Measure the runtime (see `sp2a bench --help`).
    #[command(subcommand)]
    Bench(bench::Command),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Pack(args) => pack::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Call(args) => call::run(args).await,
        Command::Node(args) => node::run(args).await,
        Command::Find(args) => remote::find(args).await,
        Command::Pull(args) => remote::pull(args).await,
        Command::Status(args) => remote::status(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(command) => bench::run(command).await,
    }
}

impl Cli {
    /// Benchmarks keep the terminal for their numbers: guest logs stay quiet.
    pub fn is_benchmark(&self) -> bool {
        matches!(self.command, Command::Bench(_))
    }
}

/// Logs go to stderr; guest log records show at info level by default
/// (except in benchmarks).
pub fn init_tracing(verbose: u8, benchmark: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if benchmark => "warn",
        0 => "warn,sp2a::guest=info",
        1 => "info",
        2 => "debug,wasmtime=info,cranelift=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("SP2A_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .try_init();
}

/// The node policy from `--policy FILE`, or the deny-everything default.
pub fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
    match path {
        Some(path) => Ok(Policy::load(path)?),
        None => Ok(Policy::default()),
    }
}

/// Sandbox settings derived from a policy.
pub fn sandbox_for(
    policy: &Policy,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<sp2a::sandbox::Sandbox> {
    let config = sp2a::sandbox::SandboxConfig {
        max_instances: policy.limits.max_instances,
        max_memory: policy.limits.max_memory,
        cache_dir,
        ..Default::default()
    };
    sp2a::sandbox::Sandbox::new(config).context("cannot start the sandbox")
}

/// Reads a package file, naming it in errors.
pub fn read_package(path: &Path) -> anyhow::Result<sp2a::package::Package> {
    sp2a::package::Package::read_file(path)
        .with_context(|| format!("cannot read package {}", path.display()))
}
