//! `sp2a bench local`: compile time, cache-hit activation, instantiation
//! and per-call overhead of the sandbox, against plain wasmtime with no
//! limits (default engine configuration, on-demand allocation, no fuel, no
//! epochs), measured in the same run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use sp2a::package::SecretKey;
use sp2a::policy::Policy;
use sp2a::sandbox::{Sandbox, SandboxConfig};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::{median, micros};

/// The sp2a host interfaces, bound from the WIT itself: the baseline links
/// them as no-ops, so services that import them run on plain wasmtime.
mod host {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sp2a:rps/service",
    });
}

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
    let component_bytes = package.component().len();
    println!(
        "service {} ({} bytes of component), call {}",
        args.service, component_bytes, args.call
    );

    // Compile (cold): a fresh sandbox each time, no caches.
    let mut compile = Vec::new();
    for _ in 0..5 {
        let sandbox = Sandbox::new(SandboxConfig {
            max_instances: 16,
            ..SandboxConfig::default()
        })?;
        let package = package.clone();
        let compiled = tokio::task::spawn_blocking(move || sandbox.compile(&package)).await??;
        compile.push(compiled.elapsed);
    }
    let compile = median(&mut compile);

    // Activation with a warm disk cache: a fresh sandbox (as after a
    // restart) that finds the artifact this node compiled before.
    let cache = dir.path().join("cache");
    let config = SandboxConfig {
        max_instances: 16,
        cache_dir: Some(cache.clone()),
        ..SandboxConfig::default()
    };
    Sandbox::new(config.clone())?
        .activate(&package, grants.clone())
        .await?;
    let mut cached = Vec::new();
    let mut load_only = Vec::new();
    let mut activation = None;
    for _ in 0..10 {
        let sandbox = Sandbox::new(config.clone())?;
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

    // Full invoke: WAVE parse, fresh store + instance, limits, call, WAVE print.
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

    // Baseline: plain wasmtime, default configuration, no limits.
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    let bytes = package.component().to_vec();
    let engine2 = engine.clone();
    let component = tokio::task::spawn_blocking(move || Component::new(&engine2, &bytes))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plain_compile = start.elapsed();
    let mut linker = Linker::<Plain>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
    sp2a_host_stubs(&mut linker)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let interface = func.interface.clone();
    let index = match &interface {
        Some(i) => component
            .get_export_index(None, i)
            .and_then(|i| component.get_export_index(Some(&i), &func.name)),
        None => component.get_export_index(None, &func.name),
    }
    .context("export not found in the baseline")?;
    let new_store = || {
        Store::new(
            &engine,
            Plain {
                ctx: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        )
    };
    let mut plain_instantiate = Vec::new();
    let mut plain_call = Vec::new();
    let mut plain_total = Vec::new();
    let mut results = vec![Val::Bool(false); func.results.len()];
    for _ in 0..args.iterations {
        let total = Instant::now();
        let mut store = new_store();
        let start = Instant::now();
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plain_instantiate.push(start.elapsed());
        let f = instance.get_func(&mut store, index).context("no func")?;
        let start = Instant::now();
        f.call_async(&mut store, &params, &mut results)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plain_call.push(start.elapsed());
        plain_total.push(total.elapsed());
    }
    let plain_instantiate = median(&mut plain_instantiate);
    let plain_call = median(&mut plain_call);
    let plain_total = median(&mut plain_total);
    // The same split for sp2a: instantiate in a limited store, then call.
    let mut sp2a_instantiate = Vec::with_capacity(args.iterations as usize);
    let mut sp2a_call = Vec::with_capacity(args.iterations as usize);
    for _ in 0..args.iterations {
        let mut instance = activation.instance()?;
        let start = Instant::now();
        instance.instantiate().await?;
        sp2a_instantiate.push(start.elapsed());
        let start = Instant::now();
        instance.call(&func, &params).await?;
        sp2a_call.push(start.elapsed());
    }
    let sp2a_instantiate = median(&mut sp2a_instantiate);
    let sp2a_call = median(&mut sp2a_call);

    println!();
    println!(
        "{:<44} {:>14} {:>18}",
        "measurement (median)", "sp2a", "plain wasmtime"
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "compile (cold, no cache)",
        format!("{:.1} ms", compile.as_secs_f64() * 1e3),
        format!("{:.1} ms", plain_compile.as_secs_f64() * 1e3)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "activation, disk-cache hit (load+audit+link)",
        micros(cached),
        "-"
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "  of which artifact load (MAC + deserialize)",
        micros(load_only),
        "-"
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "instantiate (fresh store per call)",
        micros(sp2a_instantiate),
        micros(plain_instantiate)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "call only (typed values)",
        micros(sp2a_call),
        micros(plain_call)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "new store + instantiate + call (typed)",
        micros(typed),
        micros(plain_total)
    );
    println!(
        "{:<44} {:>14} {:>18}",
        "invoke with WAVE text in/out",
        micros(invoke),
        "-"
    );
    println!();
    println!(
        "per-call overhead of sp2a over plain wasmtime (WAVE invoke vs plain store+instantiate+call): {:+.1} us",
        (invoke.as_secs_f64() - plain_total.as_secs_f64()) * 1e6
    );
    println!(
        "cache-hit activation is {:.0}x faster than compiling",
        compile.as_secs_f64() / cached.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn call_name(call: &str) -> anyhow::Result<String> {
    let parsed = wasmtime::component::wasm_wave::untyped::UntypedFuncCall::parse(call)
        .map_err(|e| anyhow::anyhow!("cannot parse {call:?}: {e}"))?;
    Ok(parsed.name().to_owned())
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

/// The baseline links the sp2a host interfaces as no-ops so that services
/// that import them can be instantiated by plain wasmtime.
fn sp2a_host_stubs(linker: &mut Linker<Plain>) -> anyhow::Result<()> {
    host::Service::add_to_linker::<Plain, HasSelf<Plain>>(linker, |state| state)
        .map_err(|e| anyhow::anyhow!("{e}"))
}
