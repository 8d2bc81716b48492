//! The process-wide wasmtime engines: component model, async execution, fuel,
//! epoch interruption driven by a ticker thread, a bounded wasm stack and the
//! pooling instance allocator; plus the linker shared by every activation and
//! the compile cache.
//!
//! Two compilers, two engines configured alike: the optimising one
//! (Cranelift) runs services in the steady state; the baseline one (Winch)
//! compiles about seven times faster into slower code, so a node that has
//! just pulled a big component answers in about a second (1.1 s for an
//! 18 MB Python component here, against 7.2 s) while the optimised build is
//! made in the background ([`Tiering`]). Winch supports fuel,
//! epochs and the component model on x86-64 and aarch64; elsewhere the
//! sandbox compiles with Cranelift only.
//!
//! Defaults ([`SandboxConfig::default`]): 128 concurrent instances, 256 MiB
//! largest linear memory, 512 KiB wasm stack, 10 ms epoch tick, no on-disk
//! cache, components with 1 MiB of code or more compiled by the baseline
//! compiler first.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Strategy,
};

use super::SandboxError;
use super::caps::HostState;
use crate::feed::Feeds;

/// How often the epoch advances; wall-time deadlines are multiples of it.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings, normally derived from the node policy.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Instances that may exist at once across all services.
    pub max_instances: u32,
    /// Ceiling for any one linear memory (per-service limits are lower).
    pub max_memory: u64,
    /// Wasm stack per call; deeper recursion traps with a stack overflow.
    pub max_wasm_stack: usize,
    /// Directory for compiled artifacts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Which compiler makes a component ready to call.
    pub tiering: Tiering,
}

/// Which compiler makes a component that is not in a compile cache ready
/// to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiering {
    /// The optimising compiler only: the first call waits for it (7 s
    /// here for an 18 MB Python component).
    Optimised,
    /// Components with at least `from` bytes of code
    /// ([`code_size`](super::executor::code_size)): the baseline compiler
    /// first, the optimised build swapped in when a background thread has
    /// made it (and stored in the disk cache); others as
    /// [`Tiering::Optimised`].
    BaselineFirst { from: usize },
    /// The baseline compiler only, never optimised: for inspecting a
    /// component (`pack`, audits) or machines where compile time matters
    /// more than speed.
    BaselineOnly,
}

/// Components with this much code or more are compiled by the baseline
/// compiler first by default: below it the optimising compiler takes well
/// under a second here.
pub const BASELINE_FIRST_FROM: usize = 1 << 20;

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory: 256 << 20,
            max_wasm_stack: 512 << 10,
            cache_dir: None,
            tiering: Tiering::BaselineFirst {
                from: BASELINE_FIRST_FROM,
            },
        }
    }
}

/// Stops the epoch ticker thread when the last sandbox handle goes away.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One compiler's engine and the linker bound to it.
pub(crate) struct Backend {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
}

impl Backend {
    fn new(config: &Config) -> Result<Self, SandboxError> {
        let engine = Engine::new(config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        super::caps::add_host_imports(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        Ok(Self { engine, linker })
    }
}

pub(crate) struct Inner {
    /// The optimising compiler's engine.
    pub(crate) optimised: Backend,
    /// The baseline compiler's, unless tiering is off or Winch does not
    /// support this machine.
    pub(crate) baseline: Option<Backend>,
    pub(crate) config: SandboxConfig,
    /// Optimised components compiled or loaded in this process, by
    /// component hash.
    pub(crate) compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Baseline builds, by component hash, each with the receiver of its
    /// optimised build while one is being made.
    pub(crate) quick: Mutex<HashMap<[u8; 32], super::executor::Quick>>,
    /// `<cache_dir>/<engine hash>`, when caching to disk.
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) cache_key: Option<[u8; 32]>,
    _ticker: Ticker,
}

/// A cloneable handle to the engine, linker and compile cache. One per
/// process is enough: every node and service shares it. Each node gives
/// its own clone the live feeds it holds ([`Sandbox::with_feeds`]).
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Inner>,
    /// Where granted guests read live feeds from (empty unless a node
    /// fills it).
    pub(crate) feeds: Feeds,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Sandbox {
    /// This sandbox (same engine and caches), whose services read live
    /// feeds from `feeds`.
    pub fn with_feeds(&self, feeds: Feeds) -> Self {
        Self {
            inner: self.inner.clone(),
            feeds,
        }
    }

    /// Builds the engines and linkers and starts the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let optimised = Backend::new(&wasmtime_config(&config))?;
        let baseline = match config.tiering {
            Tiering::Optimised => None,
            Tiering::BaselineFirst { .. } | Tiering::BaselineOnly => {
                let mut baseline = wasmtime_config(&config);
                // Winch compiles the functions; Cranelift still makes the
                // entry trampolines (one per escaping function: thousands
                // in an interpreter), where optimising only costs time.
                baseline
                    .strategy(Strategy::Winch)
                    .cranelift_opt_level(OptLevel::None);
                match Backend::new(&baseline) {
                    Ok(tier) => Some(tier),
                    Err(e) => {
                        tracing::warn!(error = %e, "the baseline compiler is not available here: compiling with the optimising compiler only");
                        None
                    }
                }
            }
        };

        let (cache_dir, cache_key) = match &config.cache_dir {
            Some(dir) => {
                let artifacts = artifact_dir(dir, &optimised.engine);
                let key = super::executor::cache_key(dir, &artifacts)?;
                (Some(artifacts), Some(key))
            }
            None => (None, None),
        };

        let stop = Arc::new(AtomicBool::new(false));
        let ticking: Vec<Engine> = std::iter::once(&optimised)
            .chain(&baseline)
            .map(|backend| backend.engine.clone())
            .collect();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("sp2a-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &ticking {
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| SandboxError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                optimised,
                baseline,
                config,
                compiled: Mutex::new(HashMap::new()),
                quick: Mutex::new(HashMap::new()),
                cache_dir,
                cache_key,
                _ticker: Ticker { stop },
            }),
            feeds: Feeds::default(),
        })
    }

    /// The optimising compiler's wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.optimised.engine
    }

    /// The linker bound to the engine `component` was compiled by.
    pub(crate) fn linker_for(&self, component: &Component) -> &Linker<HostState> {
        match &self.inner.baseline {
            Some(baseline) if Engine::same(component.engine(), &baseline.engine) => {
                &baseline.linker
            }
            _ => &self.inner.optimised.linker,
        }
    }

    /// The settings this sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Components compiled (or loaded from the disk cache) in this process
    /// and kept in memory.
    pub fn components_in_memory(&self) -> usize {
        self.inner.compiled.lock().expect("cache lock").len()
    }
}

/// Where an engine's compiled artifacts live under a cache directory: a
/// subdirectory per engine configuration (its precompile compatibility
/// hash), since an artifact only loads into an engine configured the same.
pub fn artifact_dir(cache: &std::path::Path, engine: &Engine) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    cache.join(format!("{:016x}", hasher.finish()))
}

/// Linear memory (per memory) kept resident between instances.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
/// Table bytes (per table) kept resident between instances.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// The wasmtime configuration of a sandbox with these settings: component
/// model, async, fuel, epoch interruption, a bounded wasm stack and the
/// pooling allocator sized by `max_instances`.
pub fn wasmtime_config(settings: &SandboxConfig) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.concurrency_support(false);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(settings.max_wasm_stack);
    // Host functions run on the same fiber stack as the guest: leave room.
    config.async_stack_size(settings.max_wasm_stack + (1 << 20));
    config.cranelift_opt_level(OptLevel::Speed);

    let instances = settings.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances);
    // Toolchains emit a few core instances (main module, adapter shims) per
    // component; allow generous counts per component.
    pool.max_core_instances_per_component(32);
    pool.total_core_instances(instances.saturating_mul(8));
    pool.max_memories_per_component(4);
    pool.total_memories(instances.saturating_mul(2));
    pool.max_tables_per_component(8);
    pool.total_tables(instances.saturating_mul(4));
    pool.total_stacks(instances);
    pool.max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX));
    pool.max_component_instance_size(4 << 20);
    pool.max_core_instance_size(4 << 20);
    // A call instantiates afresh. Resetting a slot with `memset` (up to
    // these sizes, the pages a small call touches) instead of `madvise`
    // spares each call page faults and the TLB shootdowns that unmapping
    // costs every core; memory beyond them is still returned to the kernel.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
    pool.table_keep_resident(KEEP_RESIDENT_TABLE);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_kept_apart_per_engine_configuration() {
        let cache = std::path::Path::new("/cache");
        let settings = SandboxConfig::default();
        let ours = Engine::new(&wasmtime_config(&settings)).unwrap();
        let again = Engine::new(&wasmtime_config(&settings)).unwrap();
        let mut unmetered = wasmtime_config(&settings);
        unmetered.consume_fuel(false);
        let unmetered = Engine::new(&unmetered).unwrap();
        assert_eq!(artifact_dir(cache, &ours), artifact_dir(cache, &again));
        assert_ne!(artifact_dir(cache, &ours), artifact_dir(cache, &unmetered));
    }
}
