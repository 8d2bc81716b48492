//! `sp2a call`: verify, audit, self-test, activate and invoke a package.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A package file (run here, in a sandbox of this process), or the name
    /// of a service (run by the local node, or a remote provider with --remote).
    /// Where services of several publishers share a name, say which one:
    /// NAME@ed25519:KEY (or the key's first 8+ hex digits), or pin it in the
    /// node's policy.
    package: PathBuf,
    /// The call in WAVE syntax, e.g. 'greet("world")' or 'digest.blake3-text("abc")'.
    call: String,
    /// Call a remote provider of the service without downloading it.
    #[arg(long)]
    remote: bool,
    /// Directory for compiled artifacts (a second activation skips compiling).
    #[arg(long)]
    cache: Option<PathBuf>,
    #[command(flatten)]
    node: super::node::NodeArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let is_file = args.package.exists() || args.package.extension().is_some_and(|e| e == "rps");
    if !is_file {
        let service = args.package.to_string_lossy().into_owned();
        return super::remote::call(&args.node, service, args.call, args.remote).await;
    }
    if args.remote {
        anyhow::bail!("--remote takes a service name, not a package file");
    }
    let policy = super::load_policy(args.node.policy.as_deref())?;
    let package = super::read_package(&args.package)?;
    let sandbox = super::sandbox_for(&policy, args.cache.clone())?;
    let service = sp2a::node::activate(&sandbox, &policy, package)
        .await
        .with_context(|| format!("cannot activate {}", args.package.display()))?;
    tracing::info!(
        compile = ?service.activation.compiled().source,
        elapsed = ?service.activation.compiled().elapsed,
        "component ready"
    );
    let outcome = service
        .activation
        .invoke(&args.call)
        .await
        .with_context(|| format!("{} failed", args.call))?;
    std::io::stderr().write_all(&outcome.stderr)?;
    std::io::stdout().write_all(&outcome.stdout)?;
    println!("{}", outcome.value);
    for refused in &outcome.refused {
        eprintln!("refused by the sandbox: {refused}");
    }
    tracing::info!(fuel = outcome.fuel_used, elapsed = ?outcome.elapsed, "call finished");
    Ok(ExitCode::SUCCESS)
}
