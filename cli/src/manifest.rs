//! `sp2a manifest init COMPONENT.wasm`: an `rps.xml` skeleton from a
//! component's real imports and exports, for authors of any toolchain.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use sp2a::package::is_service_name;
use sp2a::package::manifest::Capabilities;
use sp2a::sandbox::audit::{ImportClass, manifest_skeleton};
use sp2a::sandbox::{Sandbox, SandboxConfig, Tiering};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write an `rps.xml` skeleton from a component's imports: every
    /// capability it imports declared, every linked interface explained.
    Init(InitArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The component (`.wasm`, built for wasm32-wasip2 by any toolchain).
    component: PathBuf,
    /// The service name (default: the file name, if it is a service name).
    #[arg(long)]
    name: Option<String>,
    /// Where to write the manifest.
    #[arg(short, long, default_value = "rps.xml")]
    out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init(args) => init(args).await,
    }
}

async fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .component
            .file_stem()
            .map(|stem| stem.to_string_lossy().replace('_', "-"))
            .unwrap_or_default(),
    };
    if !is_service_name(&name) {
        bail!(
            "{name:?} is not a service name (1-63 of a-z, 0-9 and '-', starting with a letter): pass --name"
        );
    }
    if args.out.exists() && !args.force {
        bail!("{} exists: pass --force to replace it", args.out.display());
    }
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read component {}", args.component.display()))?;
    // Only the component's types are needed: the baseline compiler gets
    // them fastest.
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 1,
        tiering: Tiering::BaselineOnly,
        ..SandboxConfig::default()
    })?;
    let audit = tokio::task::spawn_blocking(move || {
        sandbox.audit_component(&bytes, &Capabilities::default())
    })
    .await
    .context("compile task failed")?
    .with_context(|| format!("{}", args.component.display()))?;

    let source = args
        .component
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let xml = manifest_skeleton(&audit, &name, &source);
    // What is written must be a manifest `pack` reads.
    sp2a::package::Manifest::parse(xml.as_bytes())
        .context("the skeleton does not parse: a bug, please report it")?;
    let written = if args.force {
        std::fs::write(&args.out, &xml)
    } else {
        // Refused, not replaced, if it appeared meanwhile.
        sp2a::files::write_new(&args.out, xml.as_bytes(), 0o644)
    };
    written.with_context(|| format!("cannot write {}", args.out.display()))?;

    println!("wrote {} for {name}", args.out.display());
    let mut listed = std::collections::BTreeSet::new();
    for import in &audit.imports {
        match &import.class {
            ImportClass::Capability { capability, .. } if listed.insert(*capability) => {
                let how = if *capability == "feed" {
                    "to fill in"
                } else {
                    "declared"
                };
                println!("  {capability:<8} {how} ({})", import.name);
            }
            ImportClass::Unsupported { reason } => {
                eprintln!(
                    "warning: {}: {reason}; nodes will refuse this component",
                    import.name
                )
            }
            ImportClass::Capability { .. } | ImportClass::Linked { .. } | ImportClass::Host => {}
        }
    }
    println!(
        "review it, then: sp2a pack {} --manifest {} --key KEY -o {name}.rps",
        args.component.display(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
