//! Compiling, activating and invoking services.
//!
//! * Compile cache: components are compiled once per process (kept in memory
//!   by component hash) and, when a cache directory is configured, stored as
//!   `<dir>/<engine hash>/<component blake3>.cwasm`. Each artifact carries a
//!   keyed BLAKE3 MAC under a key kept in `<dir>/key` (mode 0600) over the
//!   engine hash, the component hash and the machine code; an artifact whose
//!   MAC does not verify (tampered, renamed or moved) is deleted and
//!   recompiled, so only artifacts compiled by holders of that key, for that
//!   component and engine, are ever deserialized. The directories must be
//!   this user's (or root's) and writable by nobody else, and the key
//!   readable by its owner only: a cache another user could write into, or
//!   whose key they could read, is refused. Several nodes of one user on one
//!   host may share the directory (opt-in; each of them can then run code in
//!   the others): a per-artifact file lock makes the first one compile while
//!   the others wait and load its artifact; each node still verifies every
//!   package itself before asking for a compile.
//! * Tiering: a big component that no cache holds is compiled first by the
//!   baseline compiler, so that it answers in about a second; a background
//!   thread compiles the optimised build, stores it in the caches and hands
//!   it to the activations, which pre-instantiate it and start their next
//!   calls on it. Only optimised builds go to the disk cache.
//! * Activation: compile, audit against the manifest (refusing undeclared
//!   imports), pre-instantiate once (`InstancePre`), prepare grants.
//! * Invocation: a fresh `Store` per call with fuel, an epoch deadline, the
//!   memory limiter and a WASI context built from the grants; arguments and
//!   results are WAVE text typed by the export's signature.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
use wasmtime::component::wasm_wave::{self};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Type, Val};
use wasmtime::{Store, Trap};

use super::audit::{Audit, audit};
use super::caps::{CallContext, HostState, MemoryLimitExceeded, ServiceIdentity};
use super::engine::{EPOCH_TICK, Sandbox, Tiering};
use super::{Grants, SandboxError};
use crate::package::VerifiedPackage;
use crate::package::manifest::{Capabilities, SelfTest};
use crate::package::units::format_duration;

/// Fuel consumed between cooperative yields to the async executor.
const FUEL_YIELD_INTERVAL: u64 = 1_000_000;
/// Components kept compiled in memory per process.
const MAX_IN_MEMORY: usize = 64;
const MAX_OUTPUT_IN_ERROR: usize = 1024;

/// Where a compiled component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileSource {
    /// Compiled from the component bytes just now.
    Compiled,
    /// Compiled from the component bytes just now by the baseline compiler.
    Baseline,
    /// Loaded from this node's on-disk artifact cache.
    DiskCache,
    /// Already compiled in this process.
    Memory,
}

/// Which compiler's code runs a service's calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The baseline compiler's (Winch): ready fast, runs slower.
    Baseline,
    /// The optimising compiler's (Cranelift).
    Optimised,
}

/// Delivers the optimised build of a component whose baseline build is in
/// use: `Some` once the background compile finished; the sender is dropped
/// without a value if it failed.
pub(crate) type Optimising = tokio::sync::watch::Receiver<Option<Component>>;

/// A baseline build kept in memory.
#[derive(Clone)]
pub(crate) struct Quick {
    component: Component,
    optimising: Option<Optimising>,
}

/// A compiled component and how long it took to get it.
#[derive(Clone)]
pub struct Compiled {
    pub component: Component,
    pub source: CompileSource,
    pub tier: Tier,
    pub elapsed: Duration,
    /// For a baseline build: its optimised build, when one is being made.
    pub(crate) optimising: Option<Optimising>,
}

/// Reads or creates the cache MAC key in `dir`, and checks `dir` and
/// `artifacts` (its subdirectory for this engine): whoever can write either,
/// or read the key, can make this node load machine code of their choosing,
/// so both must be this user's (or root's) and closed to everyone else, and
/// the key readable by its owner alone (see [`crate::files`]).
pub(crate) fn cache_key(dir: &Path, artifacts: &Path) -> Result<[u8; 32], SandboxError> {
    let err = |source| SandboxError::Cache {
        path: dir.display().to_string(),
        source,
    };
    crate::files::open_trusted_dir(dir).map_err(err)?;
    crate::files::open_trusted_dir(artifacts).map_err(err)?;
    let path = dir.join("key");
    loop {
        match crate::files::read_secret(&path).map_err(err)? {
            Some(bytes) => {
                return bytes
                    .try_into()
                    .map_err(|_| err(std::io::Error::other("the cache key file is not 32 bytes")));
            }
            None => {
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
                match crate::files::write_new(&path, &key, 0o600) {
                    Ok(()) => return Ok(key),
                    // Another node created it first: read theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(err(e)),
                }
            }
        }
    }
}

/// Refuses bytes that are not a component, saying what they are instead.
fn check_header(bytes: &[u8]) -> Result<(), SandboxError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(SandboxError::NotComponent(
            "missing the \\0asm header".into(),
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(SandboxError::NotComponent(
            "this is a core wasm module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
                .into(),
        ));
    }
    Ok(())
}

impl Sandbox {
    /// Compiles a verified package's component, using the caches, with the
    /// compiler the sandbox's [`Tiering`](super::engine::Tiering) picks: a
    /// big component not in a cache comes back as a baseline build while
    /// a background thread makes the optimised one. CPU-heavy: call from a
    /// blocking context.
    pub fn compile(&self, package: &VerifiedPackage) -> Result<Compiled, SandboxError> {
        let start = Instant::now();
        let hash = *package.advert().component_hash().as_bytes();
        let ready = |component: Component, source, tier, optimising| Compiled {
            component,
            source,
            tier,
            elapsed: start.elapsed(),
            optimising,
        };
        if let Some(component) = self.inner.compiled.lock().expect("cache lock").get(&hash) {
            return Ok(ready(
                component.clone(),
                CompileSource::Memory,
                Tier::Optimised,
                None,
            ));
        }
        let bytes = package.component();
        check_header(bytes)?;
        if let Some(component) = self.load_cached(&hash) {
            self.keep_optimised(hash, component.clone());
            return Ok(ready(
                component,
                CompileSource::DiskCache,
                Tier::Optimised,
                None,
            ));
        }
        if let Some(quick) = self.inner.quick.lock().expect("cache lock").get(&hash) {
            return Ok(ready(
                quick.component.clone(),
                CompileSource::Memory,
                Tier::Baseline,
                quick.optimising.clone(),
            ));
        }
        let baseline_first = match self.inner.config.tiering {
            Tiering::Optimised => false,
            Tiering::BaselineFirst { from } => code_size(bytes) >= from,
            Tiering::BaselineOnly => true,
        };
        if let (true, Some(baseline)) = (baseline_first, &self.inner.baseline) {
            let component = Component::new(&baseline.engine, bytes)
                .map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
            let optimising = self.keep_baseline(hash, component, package)?;
            return Ok(ready(
                optimising.component,
                CompileSource::Baseline,
                Tier::Baseline,
                optimising.optimising,
            ));
        }
        let (component, source) = self.compile_optimised(&hash, bytes)?;
        Ok(ready(component, source, Tier::Optimised, None))
    }

    /// The optimised build of `bytes`: from the disk cache if another node
    /// sharing it made one meanwhile, else compiled (and stored there).
    /// Nodes sharing a cache directory compile each component once: the
    /// first takes the lock, the others wait and load.
    fn compile_optimised(
        &self,
        hash: &[u8; 32],
        bytes: &[u8],
    ) -> Result<(Component, CompileSource), SandboxError> {
        let _lock = self.lock_artifact(hash);
        let (component, source) = match self.load_cached(hash) {
            Some(component) => (component, CompileSource::DiskCache),
            None => {
                let component = Component::new(&self.inner.optimised.engine, bytes)
                    .map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
                self.store_cached(hash, &component);
                (component, CompileSource::Compiled)
            }
        };
        self.keep_optimised(*hash, component.clone());
        Ok((component, source))
    }

    fn keep_optimised(&self, hash: [u8; 32], component: Component) {
        let mut compiled = self.inner.compiled.lock().expect("cache lock");
        if compiled.len() >= MAX_IN_MEMORY
            && let Some(evict) = compiled.keys().next().copied()
        {
            compiled.remove(&evict);
        }
        compiled.insert(hash, component);
    }

    /// Keeps a fresh baseline build and, unless tiering is baseline-only,
    /// starts making the optimised build on a background thread. If another
    /// thread kept one first, that one is used (and only its optimised build
    /// is made).
    fn keep_baseline(
        &self,
        hash: [u8; 32],
        component: Component,
        package: &VerifiedPackage,
    ) -> Result<Quick, SandboxError> {
        let mut quick = self.inner.quick.lock().expect("cache lock");
        if let Some(theirs) = quick.get(&hash) {
            return Ok(theirs.clone());
        }
        let optimising = match self.inner.config.tiering {
            Tiering::BaselineOnly => None,
            Tiering::Optimised | Tiering::BaselineFirst { .. } => {
                let (deliver, optimising) = tokio::sync::watch::channel(None);
                let sandbox = self.clone();
                let package = package.clone();
                std::thread::Builder::new()
                    .name("sp2a-optimise".into())
                    .spawn(move || sandbox.optimise_in_background(hash, &package, deliver))
                    .map_err(|e| {
                        SandboxError::Compile(format!("cannot start the optimising compile: {e}"))
                    })?;
                Some(optimising)
            }
        };
        if quick.len() >= MAX_IN_MEMORY
            && let Some(evict) = quick.keys().next().copied()
        {
            quick.remove(&evict);
        }
        let kept = Quick {
            component,
            optimising,
        };
        quick.insert(hash, kept.clone());
        Ok(kept)
    }

    /// The background half of baseline-first tiering: compiles the
    /// optimised build, keeps it for later activations (memory and disk
    /// cache), forgets the baseline build and hands the optimised one to the
    /// activations running on the baseline build.
    fn optimise_in_background(
        &self,
        hash: [u8; 32],
        package: &VerifiedPackage,
        deliver: tokio::sync::watch::Sender<Option<Component>>,
    ) {
        let start = Instant::now();
        let result = self.compile_optimised(&hash, package.component());
        self.inner.quick.lock().expect("cache lock").remove(&hash);
        match result {
            Ok((component, _)) => {
                tracing::debug!(
                    service = %package.manifest().name,
                    elapsed = ?start.elapsed(),
                    "optimised build ready"
                );
                // No receiver left is fine: the build is cached for later.
                let _ = deliver.send(Some(component));
            }
            Err(e) => tracing::warn!(
                service = %package.manifest().name,
                error = %e,
                "the optimised compile failed: the service stays on its baseline build"
            ),
        }
    }

    /// An exclusive lock on compiling `hash` into the disk cache, released
    /// when the returned file is dropped (`None` without a cache or on error:
    /// compiling twice is then merely wasteful).
    fn lock_artifact(&self, hash: &[u8; 32]) -> Option<std::fs::File> {
        let dir = self.inner.cache_dir.as_ref()?;
        std::fs::create_dir_all(dir).ok()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{}.lock", hex::encode(hash))))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    }

    fn artifact_path(&self, hash: &[u8; 32]) -> Option<std::path::PathBuf> {
        Some(
            self.inner
                .cache_dir
                .as_ref()?
                .join(format!("{}.cwasm", hex::encode(hash))),
        )
    }

    #[allow(unsafe_code)]
    fn load_cached(&self, hash: &[u8; 32]) -> Option<Component> {
        let path = self.artifact_path(hash)?;
        let key = self.inner.cache_key?;
        let data = std::fs::read(&path).ok()?;
        let valid = data.len() > 32 && {
            let (mac, artifact) = data.split_at(32);
            self.artifact_mac(&key, hash, artifact).as_bytes() == mac
        };
        if !valid {
            tracing::warn!(path = %path.display(), "discarding a compiled artifact whose MAC does not verify");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: the artifact's keyed MAC verified, so it was produced by
        // `store_cached` of a holder of this cache's key, for this engine
        // configuration and this component (both are under the MAC, so a
        // renamed or moved artifact fails); the bytes were read into memory
        // before checking, so they cannot change between the check and the
        // load.
        match unsafe { Component::deserialize(&self.inner.optimised.engine, &data[32..]) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding an unusable compiled artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// The MAC of a compiled artifact: it binds the machine code to the
    /// engine configuration (the name of its cache subdirectory) and to the
    /// component it was compiled from.
    fn artifact_mac(&self, key: &[u8; 32], hash: &[u8; 32], artifact: &[u8]) -> blake3::Hash {
        let engine = self
            .inner
            .cache_dir
            .as_ref()
            .and_then(|dir| dir.file_name())
            .map(|name| name.as_encoded_bytes())
            .unwrap_or_default();
        let mut mac = blake3::Hasher::new_keyed(key);
        mac.update(b"sp2a compiled artifact 1\0");
        mac.update(&(engine.len() as u64).to_le_bytes());
        mac.update(engine);
        mac.update(hash);
        mac.update(artifact);
        mac.finalize()
    }

    fn store_cached(&self, hash: &[u8; 32], component: &Component) {
        let (Some(path), Some(key)) = (self.artifact_path(hash), self.inner.cache_key) else {
            return;
        };
        let result = (|| -> std::io::Result<()> {
            let artifact = component
                .serialize()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let dir = path.parent().expect("artifact path has a parent");
            std::fs::create_dir_all(dir)?;
            let mac = self.artifact_mac(&key, hash, &artifact);
            crate::files::write_atomic(&path, dir, &[mac.as_bytes(), &artifact])
        })();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot store a compiled artifact");
        }
    }

    /// Audits a compiled component against declared capabilities.
    pub fn audit(&self, component: &Component, declared: &Capabilities) -> Audit {
        audit(component.engine(), component, declared)
    }

    /// Audits an author's own component file against `declared`, before it
    /// is packed: compiled by the fastest compiler this sandbox has (only
    /// its types are needed), and not cached. For bytes on the author's own
    /// machine only: nothing from a peer comes here unverified. CPU-heavy:
    /// call from a blocking context.
    pub fn audit_component(
        &self,
        bytes: &[u8],
        declared: &Capabilities,
    ) -> Result<Audit, SandboxError> {
        check_header(bytes)?;
        let engine = match &self.inner.baseline {
            Some(baseline) => &baseline.engine,
            None => &self.inner.optimised.engine,
        };
        let component =
            Component::new(engine, bytes).map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
        Ok(audit(engine, &component, declared))
    }

    /// Compiles (or loads), audits and pre-instantiates a verified package
    /// with the given grants. Refuses a component that imports anything its
    /// manifest does not declare or this runtime does not provide.
    pub async fn activate(
        &self,
        package: &VerifiedPackage,
        grants: Grants,
    ) -> Result<Activation, SandboxError> {
        let sandbox = self.clone();
        let for_compile = package.clone();
        let compiled = tokio::task::spawn_blocking(move || sandbox.compile(&for_compile))
            .await
            .map_err(|e| SandboxError::Compile(format!("compile task failed: {e}")))??;
        self.activate_compiled(package, compiled, grants).await
    }

    /// Like [`Sandbox::activate`], for an already compiled component.
    pub async fn activate_compiled(
        &self,
        package: &VerifiedPackage,
        compiled: Compiled,
        grants: Grants,
    ) -> Result<Activation, SandboxError> {
        let manifest = package.manifest();
        let audit = self.audit(&compiled.component, &manifest.capabilities);
        if !audit.refusals.is_empty() {
            return Err(SandboxError::Refused(audit.refusals.join("; ")));
        }
        let functions = exported_functions(&compiled.component);
        let ready = Ready::new(self, &compiled.component, compiled.tier, &functions)?;
        let identity = ServiceIdentity {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            content_id: package.content_id().to_string(),
        };
        let context = CallContext::prepare(identity, grants, self.feeds.clone()).await?;
        Ok(Activation {
            sandbox: self.clone(),
            ready: std::sync::RwLock::new(Arc::new(ready)),
            optimising: compiled.optimising.clone(),
            stay_baseline: Default::default(),
            context,
            functions,
            compiled,
        })
    }
}

/// One build of a service, pre-instantiated: what a call instantiates.
struct Ready {
    pre: InstancePre<HostState>,
    /// Each exported function's index in this build, by
    /// [`ExportedFunc::position`].
    exports: Vec<ComponentExportIndex>,
    tier: Tier,
}

impl Ready {
    fn new(
        sandbox: &Sandbox,
        component: &Component,
        tier: Tier,
        functions: &[ExportedFunc],
    ) -> Result<Self, SandboxError> {
        let pre = sandbox
            .linker_for(component)
            .instantiate_pre(component)
            .map_err(|e| SandboxError::Link(format!("{e:#}")))?;
        let exports = functions
            .iter()
            .map(|f| {
                export_index(component, f.interface.as_deref(), &f.name).ok_or_else(|| {
                    SandboxError::Link(format!("{} is missing from this build", f.display_name()))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { pre, exports, tier })
    }
}

/// Bytes of function bodies in a component's core modules: what compile
/// time follows (data, however big, costs the compilers nothing). A
/// component that does not parse counts as having none here; compiling it
/// says what is wrong.
pub fn code_size(component: &[u8]) -> usize {
    let mut total = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload {
            Ok(wasmparser::Payload::CodeSectionStart { size, .. }) => {
                total = total.saturating_add(size as usize);
            }
            Ok(_) => {}
            Err(_) => return total,
        }
    }
    total
}

/// An exported function callable by name.
#[derive(Clone, Debug)]
pub struct ExportedFunc {
    /// The exporting interface (`ns:pkg/iface@version`), or `None` for a
    /// top-level function.
    pub interface: Option<String>,
    pub name: String,
    pub params: Vec<(String, Type)>,
    pub results: Vec<Type>,
    pub signature: String,
    /// Its place in the activation's list, and in each build's export
    /// indices ([`Ready::exports`]).
    position: usize,
}

impl ExportedFunc {
    /// `iface.func` (or `func`), the way calls name it.
    pub fn display_name(&self) -> String {
        match &self.interface {
            Some(interface) => {
                let short = interface
                    .split_once('/')
                    .map_or(interface.as_str(), |(_, rest)| rest);
                let short = short.split_once('@').map_or(short, |(name, _)| name);
                format!("{short}.{}", self.name)
            }
            None => self.name.clone(),
        }
    }

    /// Whether a call's function name (`func`, `iface.func`,
    /// `ns:pkg/iface.func`, optionally with `@version`) designates this one.
    fn matches(&self, wanted: &str) -> bool {
        let (path, version) = match wanted.split_once('@') {
            Some((path, version)) => (path, Some(version)),
            None => (wanted, None),
        };
        match (path.rsplit_once('.'), &self.interface) {
            (None, _) => version.is_none() && path == self.name,
            (Some((iface, func)), Some(full)) if func == self.name => {
                let (full_path, full_version) = match full.split_once('@') {
                    Some((p, v)) => (p, Some(v)),
                    None => (full.as_str(), None),
                };
                let name_ok = if iface.contains('/') {
                    iface == full_path
                } else {
                    full_path.rsplit_once('/').map_or(full_path, |(_, i)| i) == iface
                };
                name_ok && (version.is_none() || version == full_version)
            }
            _ => false,
        }
    }
}

fn exported_functions(component: &Component) -> Vec<ExportedFunc> {
    let engine = component.engine();
    let mut out = Vec::new();
    let mut push =
        |interface: Option<&str>, name: &str, func: &wasmtime::component::types::ComponentFunc| {
            if export_index(component, interface, name).is_some() {
                out.push(ExportedFunc {
                    interface: interface.map(str::to_owned),
                    name: name.to_owned(),
                    params: func.params().map(|(n, t)| (n.to_owned(), t)).collect(),
                    results: func.results().collect(),
                    signature: super::wit::func_text(func),
                    position: out.len(),
                });
            }
        };
    for (name, ext) in component.component_type().exports(engine) {
        match &ext.ty {
            ComponentItem::ComponentFunc(func) => push(None, name, func),
            ComponentItem::ComponentInstance(instance) => {
                for (func_name, inner) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = &inner.ty {
                        push(Some(name), func_name, func);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Where a function is exported in one build of a component.
fn export_index(
    component: &Component,
    interface: Option<&str>,
    name: &str,
) -> Option<ComponentExportIndex> {
    match interface {
        Some(interface) => component
            .get_export_index(None, interface)
            .and_then(|i| component.get_export_index(Some(&i), name)),
        None => component.get_export_index(None, name),
    }
}

/// The outcome of a successful call.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// The results as WAVE text (`()` when there are none).
    pub value: String,
    pub values: Vec<Val>,
    /// Captured stdout/stderr, present only when granted.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub fuel_used: u64,
    pub elapsed: Duration,
    /// What the sandbox refused the guest during the call, each with the
    /// reason (the guest only saw an error code), e.g. an HTTP request to
    /// a URL it was not granted.
    pub refused: Vec<String>,
}

/// Why a call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{0}")]
    BadCall(String),
    #[error("out of fuel: the call used all of its {limit} fuel")]
    OutOfFuel { limit: u64 },
    #[error("deadline exceeded: the call ran longer than its {limit} wall-time limit")]
    Deadline { limit: String },
    #[error(
        "memory limit exceeded: the guest tried to grow its memory to {desired} bytes; the limit is {limit}"
    )]
    Memory { limit: usize, desired: usize },
    #[error("stack overflow: the call recursed deeper than the node's wasm stack allows")]
    StackOverflow,
    #[error("guest trapped: {reason}{}", .detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Trap {
        reason: String,
        detail: Option<String>,
    },
    #[error("{0}")]
    Host(String),
}

impl InvokeError {
    /// A short machine-readable kind: `bad-call`, `out-of-fuel`, `deadline`,
    /// `memory`, `stack-overflow`, `trap`, `host`.
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::BadCall(_) => "bad-call",
            InvokeError::OutOfFuel { .. } => "out-of-fuel",
            InvokeError::Deadline { .. } => "deadline",
            InvokeError::Memory { .. } => "memory",
            InvokeError::StackOverflow => "stack-overflow",
            InvokeError::Trap { .. } => "trap",
            InvokeError::Host(_) => "host",
        }
    }

    /// What a remote caller is told: the kind's plain meaning, and for a
    /// bad call or a trap the reason, but nothing about this host (grant
    /// paths, limits, pool sizes) and none of the guest's output, which may
    /// echo what it read here. The operator's log keeps the full error.
    pub fn public_message(&self) -> String {
        match self {
            InvokeError::BadCall(message) => message.clone(),
            InvokeError::OutOfFuel { .. } => "the call ran out of fuel".into(),
            InvokeError::Deadline { .. } => "the call ran longer than its time limit".into(),
            InvokeError::Memory { .. } => "the call exceeded its memory limit".into(),
            InvokeError::StackOverflow => "the call overflowed its stack".into(),
            InvokeError::Trap { reason, .. } => format!("guest trapped: {reason}"),
            InvokeError::Host(_) => "the provider could not run the call".into(),
        }
    }
}

/// A self-test vector that did not produce its expected result.
#[derive(Debug, thiserror::Error)]
#[error("{call} should return {expected}, but {outcome}")]
pub struct SelfTestFailure {
    pub call: String,
    pub expected: String,
    pub outcome: String,
}

/// Whether two WAVE texts are the same value written the same way, up to
/// spacing: both parse and render alike (`ok( "a" )` is `ok("a")`; `1.0`
/// is not `1`). Text that does not parse is compared as it is.
pub fn same_wave(a: &str, b: &str) -> bool {
    let canonical = |text: &str| {
        wasm_wave::untyped::UntypedValue::parse(text)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| text.to_owned())
    };
    a == b || canonical(a) == canonical(b)
}

/// The tail of captured stderr, where a guest's panic message ends up.
fn stderr_tail(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let start = text.len().saturating_sub(MAX_OUTPUT_IN_ERROR);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    Some(format!(
        "guest stderr: {}",
        text[start..].replace('\n', " | ")
    ))
}

fn classify(error: wasmtime::Error, activation: &Activation, stderr: &[u8]) -> InvokeError {
    let limits = &activation.context.grants().limits;
    if let Some(memory) = error.downcast_ref::<MemoryLimitExceeded>() {
        return InvokeError::Memory {
            limit: memory.limit,
            desired: memory.desired,
        };
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => InvokeError::OutOfFuel {
                limit: limits.fuel_per_call,
            },
            Trap::Interrupt => InvokeError::Deadline {
                limit: format_duration(limits.time_per_call),
            },
            Trap::StackOverflow => InvokeError::StackOverflow,
            Trap::UnreachableCodeReached => InvokeError::Trap {
                reason: "unreachable code reached (the guest panicked or aborted)".into(),
                detail: stderr_tail(stderr),
            },
            other => InvokeError::Trap {
                reason: other.to_string(),
                detail: stderr_tail(stderr),
            },
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Trap {
            reason: format!("the guest called exit({})", exit.0),
            detail: stderr_tail(stderr),
        };
    }
    InvokeError::Host(format!("{error:#}"))
}

/// An instance of a service in a store of its own, with the limits of one
/// call (fuel, epoch deadline, memory). Calls on one instance share those
/// limits and the guest's state. [`Activation::call`] uses a fresh one per
/// call; benchmarks use it to time instantiation and the call apart.
pub struct Instance<'a> {
    activation: &'a Activation,
    ready: Arc<Ready>,
    store: Store<HostState>,
    instance: Option<wasmtime::component::Instance>,
}

impl Instance<'_> {
    /// Instantiates the component (from its `InstancePre`).
    pub async fn instantiate(&mut self) -> Result<(), InvokeError> {
        let result = self.raw_instantiate().await;
        result.map_err(|e| self.classify(e))
    }

    /// Calls `func`, instantiating first if needed.
    pub async fn call(
        &mut self,
        func: &ExportedFunc,
        params: &[Val],
    ) -> Result<Vec<Val>, InvokeError> {
        let result = self.raw_call(func, params).await;
        result.map_err(|e| self.classify(e))
    }

    /// Fuel used in this instance so far.
    pub fn fuel_used(&self) -> u64 {
        let limit = self.activation.context.grants().limits.fuel_per_call;
        limit.saturating_sub(self.store.get_fuel().unwrap_or(0))
    }

    async fn raw_instantiate(&mut self) -> wasmtime::Result<()> {
        if self.instance.is_none() {
            let instance = self.ready.pre.instantiate_async(&mut self.store).await?;
            self.instance = Some(instance);
        }
        Ok(())
    }

    async fn raw_call(
        &mut self,
        func: &ExportedFunc,
        params: &[Val],
    ) -> wasmtime::Result<Vec<Val>> {
        self.raw_instantiate().await?;
        let instance = self.instance.expect("instantiated above");
        let function = self
            .ready
            .exports
            .get(func.position)
            .and_then(|index| instance.get_func(&mut self.store, index))
            .ok_or_else(|| wasmtime::format_err!("export {} disappeared", func.display_name()))?;
        let mut results = vec![Val::Bool(false); func.results.len()];
        function
            .call_async(&mut self.store, params, &mut results)
            .await?;
        Ok(results)
    }

    fn classify(&self, error: wasmtime::Error) -> InvokeError {
        classify(error, self.activation, &self.store.data().output().stderr)
    }
}

/// A service ready to be called: compiled, audited, pre-instantiated. A
/// baseline build is replaced by the optimised one at the first call after
/// the latter is ready; calls under way finish on the build they started on.
pub struct Activation {
    sandbox: Sandbox,
    ready: std::sync::RwLock<Arc<Ready>>,
    /// The optimised build, while this activation runs a baseline one.
    optimising: Option<Optimising>,
    /// The optimised build came but could not be linked: stay on baseline.
    stay_baseline: std::sync::atomic::AtomicBool,
    context: CallContext,
    functions: Vec<ExportedFunc>,
    compiled: Compiled,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("service", self.context.service())
            .finish_non_exhaustive()
    }
}

impl Activation {
    /// The functions this service exports.
    pub fn functions(&self) -> &[ExportedFunc] {
        &self.functions
    }

    /// The grants and limits calls run with.
    pub fn grants(&self) -> &Grants {
        self.context.grants()
    }

    /// How the component was obtained (compiled, disk cache, memory) and how long it took.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Which compiler's code the next call runs on.
    pub fn tier(&self) -> Tier {
        self.current().tier
    }

    /// Waits until calls run on the optimised build, and says when they
    /// never will (baseline-only tiering, or the optimised compile failed).
    pub async fn optimised(&self) -> Result<(), SandboxError> {
        if let Some(optimising) = &self.optimising {
            // The value is kept once sent; an error means it never will be.
            let _ = optimising.clone().wait_for(Option::is_some).await;
        }
        match self.current().tier {
            Tier::Optimised => Ok(()),
            Tier::Baseline => Err(SandboxError::Compile(
                "this service runs on its baseline build: no optimised build is coming".into(),
            )),
        }
    }

    /// The build calls start on now: the optimised one as soon as it is
    /// ready (pre-instantiated here, once).
    fn current(&self) -> Arc<Ready> {
        let ready = self.ready.read().expect("ready lock").clone();
        if ready.tier == Tier::Optimised || self.stay_baseline.load(Ordering::Relaxed) {
            return ready;
        }
        let Some(component) = self
            .optimising
            .as_ref()
            .and_then(|optimising| optimising.borrow().clone())
        else {
            return ready;
        };
        let mut current = self.ready.write().expect("ready lock");
        if current.tier == Tier::Baseline {
            match Ready::new(&self.sandbox, &component, Tier::Optimised, &self.functions) {
                Ok(optimised) => *current = Arc::new(optimised),
                Err(e) => {
                    self.stay_baseline.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        service = %self.context.service().name,
                        error = %e,
                        "cannot switch to the optimised build: staying on the baseline build"
                    );
                }
            }
        }
        current.clone()
    }

    /// Finds the export a call names.
    pub fn resolve(&self, name: &str) -> Result<&ExportedFunc, InvokeError> {
        let matches: Vec<&ExportedFunc> =
            self.functions.iter().filter(|f| f.matches(name)).collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(InvokeError::BadCall(format!(
                "no exported function {name:?}; this service exports: {}",
                self.functions
                    .iter()
                    .map(ExportedFunc::display_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            many => Err(InvokeError::BadCall(format!(
                "{name:?} is ambiguous; use one of: {}",
                many.iter()
                    .map(|f| f.display_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Invokes a function given as WAVE call text, e.g. `greet.greet("sp2a")`.
    pub async fn invoke(&self, call: &str) -> Result<CallOutcome, InvokeError> {
        let parsed = UntypedFuncCall::parse(call)
            .map_err(|e| InvokeError::BadCall(format!("cannot parse call {call:?}: {e}")))?;
        let func = self.resolve(parsed.name())?;
        if let Some((name, ty)) = func
            .params
            .iter()
            .find(|(_, ty)| matches!(ty, Type::Own(_) | Type::Borrow(_)))
        {
            return Err(InvokeError::BadCall(format!(
                "{}: parameter {name} is a resource ({}); resources cannot be passed as WAVE values",
                func.display_name(),
                super::wit::type_text(ty)
            )));
        }
        let params: Vec<Val> = parsed
            .to_wasm_params::<Val>(func.params.iter().map(|(_, ty)| ty))
            .map_err(|e| {
                InvokeError::BadCall(format!(
                    "bad arguments for {}: {e} (signature: {})",
                    func.display_name(),
                    func.signature
                ))
            })?;
        self.call(func, &params).await
    }

    /// A fresh instance for one call: a store of its own with fresh host
    /// state, the call's fuel, epoch deadline and memory limiter. The
    /// component is instantiated on [`Instance::instantiate`] or the first
    /// [`Instance::call`].
    pub fn instance(&self) -> Result<Instance<'_>, InvokeError> {
        let limits = &self.context.grants().limits;
        let state = self
            .context
            .host_state()
            .map_err(|e| InvokeError::Host(e.to_string()))?;
        let ready = self.current();
        let mut store = Store::new(ready.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        let setup = |e: wasmtime::Error| InvokeError::Host(format!("cannot set up the call: {e}"));
        store.set_fuel(limits.fuel_per_call).map_err(setup)?;
        store
            .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
            .map_err(setup)?;
        let ticks = limits
            .time_per_call
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos()) as u64
            + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        Ok(Instance {
            activation: self,
            ready,
            store,
            instance: None,
        })
    }

    /// Calls a resolved function with typed values, in a fresh instance,
    /// within the call's limits (including its wall time while the guest
    /// is blocked in the host, which epochs cannot interrupt).
    pub async fn call(
        &self,
        func: &ExportedFunc,
        params: &[Val],
    ) -> Result<CallOutcome, InvokeError> {
        let mut instance = self.instance()?;
        let limits = &self.context.grants().limits;
        let start = Instant::now();
        let outcome = tokio::time::timeout(
            limits.time_per_call + 2 * EPOCH_TICK,
            instance.raw_call(func, params),
        )
        .await
        .unwrap_or_else(|_| Err(wasmtime::Error::from(Trap::Interrupt)));
        let elapsed = start.elapsed();
        let fuel_used = instance.fuel_used();
        let output = instance.store.data().output();
        let refused = instance.store.data().refused();
        let dropped = instance.store.data().dropped_log_records();
        if dropped > 0 {
            tracing::warn!(service = %self.context.service().name, dropped, "guest exceeded its log budget");
        }
        let values = outcome.map_err(|e| classify(e, self, &output.stderr))?;
        let grants = self.context.grants();
        let value = match values.as_slice() {
            [] => "()".to_owned(),
            [one] => wasm_wave::to_string(one)
                .map_err(|e| InvokeError::Host(format!("cannot print result: {e}")))?,
            many => {
                let parts: Result<Vec<String>, _> = many.iter().map(wasm_wave::to_string).collect();
                format!(
                    "({})",
                    parts
                        .map_err(|e| InvokeError::Host(format!("cannot print result: {e}")))?
                        .join(", ")
                )
            }
        };
        Ok(CallOutcome {
            value,
            values,
            stdout: if grants.stdout {
                output.stdout
            } else {
                Vec::new()
            },
            stderr: if grants.stderr {
                output.stderr
            } else {
                Vec::new()
            },
            fuel_used,
            elapsed,
            refused,
        })
    }

    /// Runs self-test vectors: each call must return exactly the expected
    /// value (compared as typed values). With `as_printed` (a deterministic
    /// service, whose callers check providers' answers against these
    /// vectors as text) the expectation must also be written as the runtime
    /// prints the value, up to spacing ([`same_wave`]).
    pub async fn self_test(
        &self,
        tests: &[SelfTest],
        as_printed: bool,
    ) -> Result<(), SelfTestFailure> {
        for test in tests {
            let fail = |outcome: String| SelfTestFailure {
                call: test.call.clone(),
                expected: test.expect.clone(),
                outcome,
            };
            let parsed = UntypedFuncCall::parse(&test.call)
                .map_err(|e| fail(format!("the call does not parse: {e}")))?;
            let func = self
                .resolve(parsed.name())
                .map_err(|e| fail(e.to_string()))?;
            let expected: Vec<Val> = match func.results.as_slice() {
                [] if matches!(test.expect.trim(), "" | "()") => Vec::new(),
                [ty] => vec![wasm_wave::from_str::<Val>(ty, &test.expect).map_err(|e| {
                    fail(format!(
                        "the expected value is not a {}: {e}",
                        super::wit::type_text(ty)
                    ))
                })?],
                _ => {
                    return Err(fail(
                        "self-tests support functions with at most one result".into(),
                    ));
                }
            };
            let outcome = self
                .invoke(&test.call)
                .await
                .map_err(|e| fail(format!("the call failed: {e}")))?;
            if outcome.values != expected {
                return Err(fail(format!("it returned {}", outcome.value)));
            }
            if as_printed && !same_wave(&outcome.value, &test.expect) {
                return Err(fail(format!(
                    "it returned the same value, but callers compare text: write it as {}",
                    outcome.value
                )));
            }
        }
        Ok(())
    }
}
