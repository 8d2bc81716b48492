//! `sp2a audit`: everything about a package, before any of it runs.

use std::path::PathBuf;
use std::process::ExitCode;

use sp2a::node::{PackageReport, audit_package};
use sp2a::sandbox::ImportClass;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package file.
    package: PathBuf,
    /// The node policy to judge it by (default: trust nobody, grant nothing).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = super::load_policy(args.policy.as_deref())?;
    let package = super::read_package(&args.package)?;
    let sandbox = super::sandbox_for(&policy, None)?;
    let report = audit_package(&sandbox, &policy, package).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.would_activate() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn status(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "valid".into(),
        Err(e) => format!("INVALID: {e}"),
    }
}

pub fn print_report(r: &PackageReport) {
    println!("package      {} {}", r.name, r.version);
    if !r.description.is_empty() {
        println!("description  {}", r.description);
    }
    println!("content id   {}", r.content_id);
    println!(
        "publisher    {} ({})",
        r.publisher,
        if r.publisher_trusted {
            "trusted"
        } else {
            "NOT trusted"
        }
    );
    println!("signature    {}", status(&r.signature));
    println!(
        "component    blake3 {} ({} bytes): {}",
        r.component_hash,
        r.component_size,
        status(&r.component_integrity)
    );
    println!();
    println!("requirements");
    for (what, value) in &r.manifest.requirements {
        println!("  {what:<16} {value}");
    }
    println!(
        "effective limits: memory {}, fuel {} per call, time {} per call",
        r.effective_limits.max_memory,
        r.effective_limits.fuel_per_call,
        r.effective_limits.time_per_call
    );
    println!();
    if r.manifest.capabilities.is_empty() {
        println!("capabilities requested: none");
    } else {
        println!("capabilities requested");
        for capability in &r.manifest.capabilities {
            println!("  - {capability}");
        }
    }
    match (&r.manifest.replication, &r.manifest.effective_replication) {
        (Some(asked), Some(here)) if asked == here => println!("replication: {asked}"),
        (Some(asked), Some(here)) => {
            println!("replication: {asked}; this node's policy caps it: {here}")
        }
        _ => println!("replication: none (providers only where operators put it)"),
    }
    match &r.audit {
        Some(audit) => {
            println!();
            println!("imports ({})", audit.imports.len());
            for import in &audit.imports {
                let class = match &import.class {
                    ImportClass::Linked { grants } => format!("linked: {grants}"),
                    ImportClass::Capability {
                        capability,
                        declared: true,
                    } => format!("capability {capability}: declared"),
                    ImportClass::Capability {
                        capability,
                        declared: false,
                    } => format!("capability {capability}: NOT DECLARED"),
                    ImportClass::Host => "sp2a host interface".into(),
                    ImportClass::Unsupported { reason } => format!("UNSUPPORTED: {reason}"),
                };
                println!("  {:<40} {class}", import.name);
            }
            println!();
            println!("exports");
            for export in &audit.exports {
                println!("  {}", export.name);
                for (name, signature) in &export.functions {
                    if name.is_empty() {
                        println!("    {signature}");
                    } else {
                        println!("    {name}: {signature}");
                    }
                }
            }
        }
        None => {
            println!();
            println!(
                "imports/exports: {}",
                r.compile_error.as_deref().unwrap_or("not available")
            );
        }
    }
    if !r.manifest.self_tests.is_empty() {
        println!();
        println!("self-tests (run in the sandbox before activation)");
        for (call, expect) in &r.manifest.self_tests {
            println!("  {call} == {expect}");
        }
    }
    if r.manifest.deterministic {
        println!(
            "deterministic: callers may check answers by re-running calls and by sending these self-tests as unmarked calls"
        );
    }
    if !r.manifest.ignored_extensions.is_empty() {
        println!(
            "ignored optional extensions: {}",
            r.manifest.ignored_extensions.join(", ")
        );
    }
    for note in &r.notes {
        println!("note: {note}");
    }
    println!();
    if r.would_activate() {
        println!("verdict: WOULD ACTIVATE on this node");
    } else {
        println!("verdict: REFUSED on this node");
        for reason in &r.refusals {
            println!("  - {reason}");
        }
    }
}
