//! The process-wide wasmtime engine: component model, async execution, fuel,
//! epoch interruption driven by a ticker thread, a bounded wasm stack and the
//! pooling instance allocator; plus the linker shared by every activation and
//! the compile cache.
//!
//! Defaults ([`SandboxConfig::default`]): 128 concurrent instances, 256 MiB
//! largest linear memory, 512 KiB wasm stack, 10 ms epoch tick, no on-disk
//! cache.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

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
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory: 256 << 20,
            max_wasm_stack: 512 << 10,
            cache_dir: None,
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

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: SandboxConfig,
    /// Components compiled or loaded in this process, by component hash.
    pub(crate) compiled: Mutex<HashMap<[u8; 32], Component>>,
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

    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine = Engine::new(&wasmtime_config(&config))
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        super::caps::add_host_imports(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;

        let (cache_dir, cache_key) = match &config.cache_dir {
            Some(dir) => {
                let key = super::executor::cache_key(dir)?;
                (Some(artifact_dir(dir, &engine)), Some(key))
            }
            None => (None, None),
        };

        let stop = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("sp2a-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| SandboxError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                compiled: Mutex::new(HashMap::new()),
                cache_dir,
                cache_key,
                _ticker: Ticker { stop },
            }),
            feeds: Feeds::default(),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
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
