//! `sp2a bench first-call`: how soon a node answers with a big component it
//! has just pulled, and what its calls cost afterwards.
//!
//! The fixture is a Python service built by componentize-py
//! (`bench/fixtures/python-hello`, about 18 MB: the interpreter is in the
//! component). Each run activates the package as a node does after a pull
//! (admission, verification, compile, audit, self-tests; a fresh sandbox
//! with no compile cache) and makes a first call, once per tiering:
//! * optimising only: the first call waits for Cranelift (the baseline);
//! * baseline first: Winch's build answers, Cranelift's is made in the
//!   background and swapped in; then the time until the service runs on
//!   optimised code, and calls on both builds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use sp2a::node::activate;
use sp2a::package::{Manifest, SecretKey};
use sp2a::policy::Policy;
use sp2a::sandbox::{Activation, Sandbox, SandboxConfig, Tier, Tiering};

use crate::{median, millis};

/// The target: the first answer within this long of the package arriving.
const TARGET_FIRST_CALL: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The fixture directory (`rps.xml`).
    #[arg(long, default_value = "bench/fixtures/python-hello")]
    fixture: PathBuf,
    /// The component built from it (`bench/fixtures/python-hello/build`).
    #[arg(long, default_value = "target/fixtures/python-hello.wasm")]
    component: PathBuf,
    /// Runs per tiering (each compiles from scratch).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The call timed on each build: interpreted work.
    #[arg(long, default_value = "squares(100000)")]
    call: String,
    /// Calls timed per build.
    #[arg(long, default_value_t = 20)]
    calls: usize,
}

/// One activation and first call.
struct Run {
    /// From the package's arrival to activation done (self-tests passed).
    activated: Duration,
    /// From the package's arrival to the first answer of `greet`.
    first_answer: Duration,
    compile: Duration,
    /// From arrival until calls run on the optimised build.
    optimised: Duration,
    /// Median of the timed call on the build the service started on (none
    /// if the optimised build came before the first of them).
    call_first_build: Option<Duration>,
    /// Median of the timed call on the optimised build.
    call_optimised: Duration,
}

pub async fn run(args: Options) -> anyhow::Result<ExitCode> {
    let component = std::fs::read(&args.component).with_context(|| {
        format!(
            "cannot read {} (build it with {}/build)",
            args.component.display(),
            args.fixture.display()
        )
    })?;
    let manifest_path = args.fixture.join("rps.xml");
    let manifest = Manifest::parse(&std::fs::read(&manifest_path)?)
        .with_context(|| manifest_path.display().to_string())?;
    let key = SecretKey::generate();
    let package = sp2a::package::pack(component, &manifest, &key)?.into_inner();
    let dir = tempfile::tempdir()?;
    let policy = Policy::parse(
        &format!(
            "[trust]\npublishers = [\"{}\"]\n[grants]\nclocks = true\nrandom = true\n",
            key.public()
        ),
        dir.path(),
    )?;
    let verify = {
        let start = Instant::now();
        package.clone().verify()?;
        start.elapsed()
    };
    println!(
        "{} {}: {:.1} MB component from componentize-py ({:.1} MB of code); verification {}; {} runs per tiering, {} calls of {} per build",
        manifest.name,
        manifest.version,
        package.component().len() as f64 / 1e6,
        sp2a::sandbox::executor::code_size(package.component()) as f64 / 1e6,
        millis(verify),
        args.runs,
        args.calls,
        args.call
    );

    let tierings = [
        ("optimising only (Cranelift)", Tiering::Optimised),
        // The node's default: baseline first for components with at
        // least 1 MiB of code, as this one has.
        (
            "baseline first (Winch, then Cranelift)",
            SandboxConfig::default().tiering,
        ),
    ];
    let mut rows = Vec::new();
    for (label, tiering) in tierings {
        let mut runs = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            runs.push(one_run(&args, &policy, &package, tiering).await?);
        }
        rows.push((label, runs));
    }

    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>12} {:>12} {:>14} {:>14}",
        "tiering (medians)",
        "compile",
        "activated",
        "first answer",
        "optimised at",
        "call, 1st build",
        "call, optimised"
    );
    let mut first_answers = Vec::new();
    for (label, runs) in &rows {
        let pick = |f: fn(&Run) -> Duration| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let first = pick(|r| r.first_answer);
        let mut on_first: Vec<Duration> = runs.iter().filter_map(|r| r.call_first_build).collect();
        let on_first = if on_first.is_empty() {
            "n/a".to_owned()
        } else {
            millis(median(&mut on_first))
        };
        println!(
            "{:<40} {:>10} {:>10} {:>12} {:>12} {:>14} {:>14}",
            label,
            millis(pick(|r| r.compile)),
            millis(pick(|r| r.activated)),
            millis(first),
            millis(pick(|r| r.optimised)),
            on_first,
            millis(pick(|r| r.call_optimised)),
        );
        first_answers.push(first);
    }
    let (today, tiered) = (first_answers[0], first_answers[1]);
    println!();
    println!("targets:");
    println!(
        "  first answer after the package arrives (verification included): {} (optimising only: {}, {:.1}x sooner); target <= {}: {}",
        millis(tiered),
        millis(today),
        today.as_secs_f64() / tiered.as_secs_f64(),
        millis(TARGET_FIRST_CALL),
        if tiered <= TARGET_FIRST_CALL {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "  steady-state calls on optimised code: every baseline-first run switched to the optimised build (checked)"
    );
    Ok(ExitCode::SUCCESS)
}

async fn one_run(
    args: &Options,
    policy: &Policy,
    package: &sp2a::package::Package,
    tiering: Tiering,
) -> anyhow::Result<Run> {
    // A fresh sandbox and no disk cache: a node that has never seen it.
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 8,
        tiering,
        ..SandboxConfig::default()
    })?;
    let start = Instant::now();
    let service = activate(&sandbox, policy, package.clone()).await?;
    let activated = start.elapsed();
    let greeting = service.activation.invoke("greet(\"node\")").await?;
    let first_answer = start.elapsed();
    anyhow::ensure!(
        greeting.value == "\"Hello, node, from Python!\"",
        "unexpected answer {}",
        greeting.value
    );
    let activation = &service.activation;
    let compile = activation.compiled().elapsed;
    let first_tier = activation.compiled().tier;
    let expected = match tiering {
        Tiering::Optimised => Tier::Optimised,
        _ => Tier::Baseline,
    };
    anyhow::ensure!(
        first_tier == expected,
        "{tiering:?} started on {first_tier:?}"
    );
    // On a baseline build these calls share the 2 cores with the
    // background compile, as they would on a node.
    let call_first_build = time_calls(activation, &args.call, args.calls, first_tier).await?;
    let optimised = match first_tier {
        Tier::Optimised => activated,
        Tier::Baseline => {
            activation.optimised().await?;
            start.elapsed()
        }
    };
    let call_optimised = time_calls(activation, &args.call, args.calls, Tier::Optimised)
        .await?
        .context("not on optimised code")?;
    Ok(Run {
        activated,
        first_answer,
        compile,
        optimised,
        call_first_build,
        call_optimised,
    })
}

/// The median of those of `n` calls that ran on `tier`'s build.
async fn time_calls(
    activation: &Activation,
    call: &str,
    n: usize,
    tier: Tier,
) -> anyhow::Result<Option<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let before = activation.tier();
        let start = Instant::now();
        activation.invoke(call).await?;
        let elapsed = start.elapsed();
        if before == tier && activation.tier() == tier {
            samples.push(elapsed);
        }
    }
    Ok((!samples.is_empty()).then(|| median(&mut samples)))
}
