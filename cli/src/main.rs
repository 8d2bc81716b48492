//! The `sp2a` command: parses arguments, sets up logging, runs one
//! subcommand. Each subcommand lives in a module of its own, parses its
//! flags and calls into the library (`sp2a`) or the benchmarks
//! (`sp2a_bench`).

mod audit;
mod bench;
mod call;
mod dashboard;
mod demo;
mod feed;
mod http_guard;
mod keygen;
mod manifest;
mod manual;
mod metrics;
mod new;
mod node;
mod pack;
mod remote;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sp2a::policy::Policy;

/// Hundreds of libp2p nodes in one process (the diffusion benchmark) make
/// millions of small allocations; mimalloc spends far less time on them
/// than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sp2a: signed WebAssembly services that move across a peer-to-peer cloud.
#[derive(Debug, Parser)]
#[command(name = "sp2a", version, about)]
struct Cli {
    /// More output (-v: progress and context on errors, -vv: debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a publisher keypair (PKCS#8 PEM private key, SPKI PEM public key).
    Keygen(keygen::Args),
    /// Create a Rust service project that builds and packs as it is.
    New(new::Args),
    /// Pack a component and its manifest into a signed package.
    Pack(pack::Args),
    /// Show what a package is, what it asks for and whether this node would run it.
    Audit(audit::Args),
    /// Manifests (see `sp2a manifest init --help`).
    #[command(subcommand)]
    Manifest(manifest::Command),
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
    /// Show how a node judges the providers of a service it calls.
    Reputation(remote::ReputationArgs),
    /// Live feeds (see `sp2a feed publish --help`).
    #[command(subcommand)]
    Feed(feed::Command),
    /// Pack, audit and call the example services, then let one spread
    /// across six nodes, printing each step.
    Demo(sp2a_bench::demo::Options),
    /// Measure the runtime (see `sp2a bench --help`).
    #[command(subcommand)]
    Bench(bench::Command),
    /// Print shell completions for bash, zsh, fish, elvish or PowerShell.
    Completions(manual::CompletionsArgs),
    /// Print the manual page, or write one per subcommand with `--out`.
    Man(manual::ManArgs),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    init_tracing(args.verbose, matches!(args.command, Command::Bench(_)));
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let location = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        eprintln!("error: internal error{location}: {message}");
    }));
    let verbose = args.verbose;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.command)) {
        Ok(code) => code,
        Err(error) => {
            if verbose > 0 {
                eprintln!("error: {error}");
                for cause in error.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Keygen(args) => keygen::run(args),
        Command::New(args) => new::run(args),
        Command::Pack(args) => pack::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Manifest(command) => manifest::run(command).await,
        Command::Call(args) => call::run(args).await,
        Command::Node(args) => node::run(args).await,
        Command::Find(args) => remote::find(args).await,
        Command::Pull(args) => remote::pull(args).await,
        Command::Status(args) => remote::status(args).await,
        Command::Reputation(args) => remote::reputation(args).await,
        Command::Feed(command) => feed::run(command).await,
        Command::Demo(options) => demo::run(options).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Completions(args) => manual::completions(args),
        Command::Man(args) => manual::man(args),
    }
}

/// Logs go to stderr; guest log records show at info level by default
/// (except in benchmarks). `RUST_LOG` (e.g. `sp2a=debug`) overrides the
/// verbosity flags.
fn init_tracing(verbose: u8, benchmark: bool) {
    use tracing_subscriber::EnvFilter;
    // Gossipsub warns about routine mesh churn (a replica that retires
    // and comes back grafts within its backoff): shown from -v on.
    let default = match verbose {
        0 if benchmark => "warn,libp2p_gossipsub=error",
        0 => "warn,sp2a::guest=info,libp2p_gossipsub=error",
        1 => "info",
        2 => "debug,wasmtime=info,cranelift=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .try_init();
}

/// The node policy from `--policy FILE`, or the deny-everything default.
fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
    match path {
        Some(path) => Ok(Policy::load(path)?),
        None => Ok(Policy::default()),
    }
}

/// A sandbox sized by a policy, caching compiled artifacts in `cache_dir`.
fn sandbox_for(
    policy: &Policy,
    cache_dir: Option<PathBuf>,
) -> anyhow::Result<sp2a::sandbox::Sandbox> {
    sp2a::sandbox::Sandbox::new(policy.sandbox_config(cache_dir))
        .context("cannot start the sandbox")
}

/// Reads a publisher's private key. A passphrase-protected OpenSSH key
/// takes its passphrase from `SP2A_KEY_PASSPHRASE`, else from the terminal.
fn read_secret_key(path: &Path) -> anyhow::Result<sp2a::package::SecretKey> {
    let passphrase = || {
        if let Ok(passphrase) = std::env::var("SP2A_KEY_PASSPHRASE") {
            return Ok(passphrase);
        }
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err("set SP2A_KEY_PASSPHRASE, or run on a terminal to be asked".to_string());
        }
        rpassword::prompt_password(format!("passphrase for {}: ", path.display()))
            .map_err(|e| format!("cannot read the passphrase: {e}"))
    };
    sp2a::package::SecretKey::read_file(path, passphrase)
        .with_context(|| format!("cannot read the key {}", path.display()))
}

/// Reads a package file, naming it in errors.
fn read_package(path: &Path) -> anyhow::Result<sp2a::package::Package> {
    sp2a::package::Package::read_file(path)
        .with_context(|| format!("cannot read package {}", path.display()))
}
