//! `sp2a pack`: sign a component and its manifest into one package file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use sp2a::package::{Manifest, Package, pack};
use sp2a::sandbox::{Sandbox, SandboxConfig, Tiering};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component (`.wasm`, built for wasm32-wasip2).
    component: PathBuf,
    /// The manifest (`rps.xml`).
    #[arg(short, long)]
    manifest: PathBuf,
    /// The publisher's private key: PKCS#8 PEM from `sp2a keygen`, or an
    /// OpenSSH ed25519 key (`ssh-keygen -t ed25519`; the passphrase from
    /// `SP2A_KEY_PASSPHRASE` or the terminal).
    #[arg(short, long)]
    key: PathBuf,
    /// The package file to write.
    #[arg(short, long)]
    out: PathBuf,
    /// Pack even if the component imports capabilities the manifest does not
    /// declare (nodes will refuse it; for testing).
    #[arg(long)]
    no_check: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let component = std::fs::read(&args.component)
        .with_context(|| format!("cannot read component {}", args.component.display()))?;
    let manifest_bytes = std::fs::read(&args.manifest)
        .with_context(|| format!("cannot read manifest {}", args.manifest.display()))?;
    let manifest =
        Manifest::parse(&manifest_bytes).with_context(|| format!("{}", args.manifest.display()))?;
    let key = crate::read_secret_key(&args.key)?;
    let package = pack(component, &manifest, &key)?;

    if !args.no_check {
        // The check only needs the component's types: the baseline
        // compiler gets them fastest.
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: 1,
            tiering: Tiering::BaselineOnly,
            ..SandboxConfig::default()
        })?;
        let checked = package.clone();
        let compiled =
            tokio::task::spawn_blocking(move || sandbox.compile(&checked).map(|c| (sandbox, c)))
                .await
                .context("compile task failed")??;
        let (sandbox, compiled) = compiled;
        let audit = sandbox.audit(&compiled.component, &manifest.capabilities);
        if !audit.refusals.is_empty() {
            bail!(
                "the manifest does not match the component: {} (declare it in {} or pass --no-check)",
                audit.refusals.join("; "),
                args.manifest.display()
            );
        }
        for note in &audit.notes {
            eprintln!("note: {note}");
        }
    }

    let bytes = package.to_bytes();
    let dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    sp2a::files::write_atomic(&args.out, dir, &[&bytes])
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    // Read back what was written, as any consumer would.
    Package::read_file(&args.out)?.verify()?;
    println!(
        "packed {} {} ({} bytes) -> {}",
        manifest.name,
        manifest.version,
        bytes.len(),
        args.out.display()
    );
    println!("content id: {}", package.content_id());
    println!("publisher:  {}", key.public());
    Ok(ExitCode::SUCCESS)
}
