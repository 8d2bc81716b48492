//! `sp2a bench local`: what the sandbox costs, one effect at a time.
//!
//! The same harness (plain wasmtime API: compile, `InstancePre`, a fresh
//! store per call, a typed call) runs the same component on four engine
//! configurations, with the same number of samples each:
//! * sp2a's configuration (`sandbox::engine::wasmtime_config`: fuel, epoch
//!   interruption, pooling allocator, bounded stack);
//! * the same without fuel and epochs: what the instrumentation costs;
//! * the same with on-demand allocation: what the pooling allocator buys;
//! * wasmtime's defaults.
//!
//! Then sp2a's own call path on its configuration (limits set per call,
//! WASI context from the grants, WAVE text in and out), and activation from
//! the disk cache against compiling.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use sp2a::package::SecretKey;
use sp2a::policy::Policy;
use sp2a::sandbox::engine::wasmtime_config;
use sp2a::sandbox::{ExportedFunc, Sandbox, SandboxConfig};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::{median, micros};

/// The sp2a host interfaces, bound from the WIT itself: the harness links
/// them as no-ops, so services that import them run on plain wasmtime.
mod host {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sp2a:rps/service",
    });
}

/// Compiles timed per configuration (each with a fresh engine).
const COMPILES: usize = 5;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `services/` directory (manifests and built components).
    #[arg(long, default_value = "services")]
    services: PathBuf,
    /// The service to measure.
    #[arg(long, default_value = "checksum")]
    service: String,
    /// The call to time.
    #[arg(long, default_value = "blake3-text(\"sp2a\")")]
    call: String,
    /// Iterations for the per-call measurements.
    #[arg(long, default_value_t = 2000)]
    iterations: u32,
}

struct Plain {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl host::sp2a::rps::log::Host for Plain {
    fn log(&mut self, _: host::sp2a::rps::log::Level, _: String, _: Vec<(String, String)>) {}
}

impl host::sp2a::rps::host::Host for Plain {
    fn service(&mut self) -> host::sp2a::rps::host::ServiceInfo {
        host::sp2a::rps::host::ServiceInfo {
            name: "baseline".into(),
            version: "0.0.0".into(),
            content_id: String::new(),
        }
    }
}

/// The baseline grants no feed.
impl host::sp2a::rps::feed::Host for Plain {
    fn latest(&mut self, _: String) -> Result<Option<u64>, host::sp2a::rps::feed::Error> {
        Err(host::sp2a::rps::feed::Error::NotGranted)
    }

    fn oldest(&mut self, _: String) -> Result<Option<u64>, host::sp2a::rps::feed::Error> {
        Err(host::sp2a::rps::feed::Error::NotGranted)
    }

    fn segment(
        &mut self,
        _: String,
        _: u64,
    ) -> Result<Option<host::sp2a::rps::feed::FeedSegment>, host::sp2a::rps::feed::Error> {
        Err(host::sp2a::rps::feed::Error::NotGranted)
    }
}

/// Medians of one engine configuration.
struct Row {
    label: &'static str,
    compile: Duration,
    instantiate: Duration,
    call: Duration,
    total: Duration,
}

fn err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// Times `bytes` on an engine with `config`: compile (fresh engine each
/// time), then per call a fresh store, instantiation and the typed call.
/// Fuel and epoch deadlines are set only where the engine consumes them.
async fn measure(
    label: &'static str,
    config: Config,
    metered: bool,
    bytes: &[u8],
    func: &ExportedFunc,
    params: &[Val],
    iterations: u32,
) -> anyhow::Result<Row> {
    let mut compile = Vec::with_capacity(COMPILES);
    let mut engine_component = None;
    for _ in 0..COMPILES {
        let engine = Engine::new(&config).map_err(err)?;
        let bytes = bytes.to_vec();
        let compiled = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let component = Component::new(&engine, &bytes);
            (start.elapsed(), engine, component)
        })
        .await?;
        compile.push(compiled.0);
        engine_component = Some((compiled.1, compiled.2.map_err(err)?));
    }
    let (engine, component) = engine_component.context("compiled")?;
    let mut linker = Linker::<Plain>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    host::Service::add_to_linker::<Plain, HasSelf<Plain>>(&mut linker, |state| state)
        .map_err(err)?;
    let pre = linker.instantiate_pre(&component).map_err(err)?;
    let index = match &func.interface {
        Some(i) => component
            .get_export_index(None, i)
            .and_then(|i| component.get_export_index(Some(&i), &func.name)),
        None => component.get_export_index(None, &func.name),
    }
    .context("export not found")?;
    let mut instantiate = Vec::with_capacity(iterations as usize);
    let mut call = Vec::with_capacity(iterations as usize);
    let mut total = Vec::with_capacity(iterations as usize);
    let mut results = vec![Val::Bool(false); func.results.len()];
    for _ in 0..iterations {
        let started = Instant::now();
        let mut store = Store::new(
            &engine,
            Plain {
                ctx: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        if metered {
            store.set_fuel(u64::MAX).map_err(err)?;
            store.set_epoch_deadline(u64::MAX);
        }
        let start = Instant::now();
        let instance = pre.instantiate_async(&mut store).await.map_err(err)?;
        instantiate.push(start.elapsed());
        let f = instance.get_func(&mut store, index).context("no func")?;
        let start = Instant::now();
        f.call_async(&mut store, params, &mut results)
            .await
            .map_err(err)?;
        call.push(start.elapsed());
        total.push(started.elapsed());
    }
    Ok(Row {
        label,
        compile: median(&mut compile),
        instantiate: median(&mut instantiate),
        call: median(&mut call),
        total: median(&mut total),
    })
}

pub async fn run(args: Options) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let key = SecretKey::generate();
    let package = crate::services::pack(&args.services, &args.service, &key, dir.path())?;
    let mut policy = Policy::parse(
        &format!(
            "[trust]\npublishers = [\"{}\"]\n[grants]\nclocks = true\nrandom = true\n",
            key.public()
        ),
        dir.path(),
    )?;
    policy.limits.max_instances = 16;
    let grants = policy
        .admit(package.advert())
        .map_err(|refusals| anyhow::anyhow!("refused: {refusals}"))?
        .grants;
    println!(
        "service {} ({} bytes of component), call {}; {COMPILES} compiles and {} calls per row",
        args.service,
        package.component().len(),
        args.call,
        args.iterations
    );

    // sp2a's own path: activation from a warm disk cache (a fresh sandbox,
    // as after a restart), then calls through the activation.
    let settings = SandboxConfig {
        max_instances: 16,
        cache_dir: Some(dir.path().join("cache")),
        ..SandboxConfig::default()
    };
    Sandbox::new(settings.clone())?
        .activate(&package, grants.clone())
        .await?;
    let mut cached = Vec::new();
    let mut load_only = Vec::new();
    let mut activation = None;
    for _ in 0..10 {
        let sandbox = Sandbox::new(settings.clone())?;
        let start = Instant::now();
        let active = sandbox.activate(&package, grants.clone()).await?;
        cached.push(start.elapsed());
        anyhow::ensure!(
            active.compiled().source == sp2a::sandbox::executor::CompileSource::DiskCache,
            "expected a disk-cache hit, got {:?}",
            active.compiled().source
        );
        load_only.push(active.compiled().elapsed);
        activation = Some(active);
    }
    let cached = median(&mut cached);
    let load_only = median(&mut load_only);
    let activation = activation.context("no activation")?;
    let func = activation.resolve(&call_name(&args.call)?)?.clone();
    let params = {
        let parsed = wasmtime::component::wasm_wave::untyped::UntypedFuncCall::parse(&args.call)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        parsed
            .to_wasm_params::<Val>(func.params.iter().map(|(_, t)| t))
            .map_err(|e| anyhow::anyhow!("{e}"))?
    };
    for _ in 0..100 {
        activation.invoke(&args.call).await?;
    }
    let mut invoke = Vec::with_capacity(args.iterations as usize);
    let mut typed = Vec::with_capacity(args.iterations as usize);
    for _ in 0..args.iterations {
        let start = Instant::now();
        activation.invoke(&args.call).await?;
        invoke.push(start.elapsed());
        let start = Instant::now();
        activation.call(&func, &params).await?;
        typed.push(start.elapsed());
    }
    let invoke = median(&mut invoke);
    let typed = median(&mut typed);

    // The engine configurations, one effect at a time.
    let sp2a_config = wasmtime_config(&SandboxConfig {
        max_instances: 16,
        ..SandboxConfig::default()
    });
    let mut uninstrumented = sp2a_config.clone();
    uninstrumented.consume_fuel(false).epoch_interruption(false);
    let mut on_demand = sp2a_config.clone();
    on_demand.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    let mut defaults = Config::new();
    defaults.wasm_component_model(true);
    let bytes = package.component();
    let n = args.iterations;
    // Each row differs from the one above it in one setting; the flag says
    // whether the engine is instrumented (fuel and epochs set per call).
    let engines = [
        ("sp2a (fuel, epochs, pooling)", sp2a_config, true),
        ("  without fuel and epochs", uninstrumented, false),
        ("  with on-demand allocation", on_demand, true),
        ("wasmtime defaults", defaults, false),
    ];
    let mut rows = Vec::with_capacity(engines.len());
    for (label, config, instrumented) in engines {
        rows.push(measure(label, config, instrumented, bytes, &func, &params, n).await?);
    }

    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>12} {:>18}",
        "engine (medians)", "compile", "instantiate", "call", "store+inst+call"
    );
    for row in &rows {
        println!(
            "{:<32} {:>12} {:>12} {:>12} {:>18}",
            row.label,
            format!("{:.1} ms", row.compile.as_secs_f64() * 1e3),
            micros(row.instantiate),
            micros(row.call),
            micros(row.total)
        );
    }
    println!();
    println!("sp2a's call path on its engine (limits set per call, WASI from the grants):");
    println!(
        "  typed call through the activation          {:>12}",
        micros(typed)
    );
    println!(
        "  invoke with WAVE text in and out           {:>12}",
        micros(invoke)
    );
    println!(
        "  activation from the disk cache             {:>12}  (of which artifact load {}; {:.0}x faster than compiling)",
        micros(cached),
        micros(load_only),
        rows[0].compile.as_secs_f64() / cached.as_secs_f64()
    );
    println!(
        "per-call cost of sp2a's path over the same engine in the plain harness: {:+.1} us",
        (typed.as_secs_f64() - rows[0].total.as_secs_f64()) * 1e6
    );
    Ok(ExitCode::SUCCESS)
}

fn call_name(call: &str) -> anyhow::Result<String> {
    let parsed = wasmtime::component::wasm_wave::untyped::UntypedFuncCall::parse(call)
        .map_err(|e| anyhow::anyhow!("cannot parse {call:?}: {e}"))?;
    Ok(parsed.name().to_owned())
}
