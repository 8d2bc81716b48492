//! Per-call host state: the WASI context built from [`Grants`] (nothing more),
//! captured stdio, the memory/table limiter and the `sp2a:rps` host imports.
//!
//! What an ungranted guest sees: no preopened directories, no environment
//! variables, no arguments, stdin closed, stdout/stderr captured into bounded
//! per-call buffers (not shown unless granted, except that the tail of
//! stderr is quoted in a trap's error, where a panic message ends up), every
//! socket address refused and name lookup disabled, every outgoing HTTP
//! request refused. Every WASI 0.2 interface and `wasi:http`'s outgoing
//! half are linked; an HTTP request goes out only to a URL the manifest
//! declares and the policy grants ([`HttpGate`]), within the call's
//! deadline. Clocks and random reach only components whose manifest
//! declares them (the audit refuses an undeclared import) on nodes whose
//! policy grants them (the policy refuses the package otherwise). A live
//! feed (`sp2a:rps/feed`) reads only the feeds granted, by name; any other
//! name is `not-granted`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::outbound::{self, Route, Unroutable};
use super::{Grants, SandboxError};
use crate::feed::{FeedId, Feeds};
use crate::package::manifest::{Access, Protocol};
use crate::package::url::{HttpUrl, Target};

/// Bytes of stdout (and of stderr) kept per call.
pub const MAX_CAPTURED_OUTPUT: usize = 256 << 10;
/// Log records a guest may emit per call; later ones are counted, not logged.
pub const MAX_LOG_RECORDS: u32 = 1000;
const MAX_LOG_MESSAGE: usize = 4096;
const MAX_LOG_FIELDS: usize = 16;
const MAX_LOG_FIELD: usize = 256;
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Outgoing HTTP requests one call may make.
pub const MAX_HTTP_REQUESTS: u32 = 256;
/// Largest piece of a request body copied out of the guest at once.
const MAX_HTTP_BODY_CHUNK: usize = 256 << 10;
/// Refused requests kept per call, with their reasons, for the caller.
const MAX_REFUSALS_KEPT: usize = 16;
/// How long resolving a granted socket destination may take at activation.
const RESOLVE_WITHIN: Duration = Duration::from_secs(10);

/// Host bindings for the `sp2a:rps/service` world.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sp2a:rps/service",
    });
}

use bindings::Service;
use bindings::sp2a::rps;
use rps::feed::{Error as FeedError, FeedSegment as GuestSegment};
use rps::log::Level;

/// Who a running instance is, as the node verified it.
#[derive(Clone, Debug)]
pub struct ServiceIdentity {
    pub name: String,
    pub version: String,
    pub content_id: String,
}

/// Raised (as a trap) when a guest grows its memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (the guest asked for {desired} bytes)")]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

/// Caps linear memory per instance and table sizes; a refused memory growth
/// becomes a trap with [`MemoryLimitExceeded`], so the reason is never lost.
pub struct Limiter {
    max_memory: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(MemoryLimitExceeded {
                limit: self.max_memory,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Output captured from one call.
#[derive(Clone, Debug, Default)]
pub struct CapturedOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Everything a store holds for one call.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_gate: HttpGate,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    service: Arc<ServiceIdentity>,
    /// The feeds granted (by name), and where they are read from.
    feeds: Arc<[(String, FeedId)]>,
    feed_source: Feeds,
    log_records: u32,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl HostState {
    /// The captured stdout/stderr of this call.
    pub fn output(&self) -> CapturedOutput {
        CapturedOutput {
            stdout: self.stdout.contents().to_vec(),
            stderr: self.stderr.contents().to_vec(),
        }
    }

    /// What the sandbox refused during this call, with the reason (the
    /// guest itself only sees an error code): the first
    /// [`MAX_REFUSALS_KEPT`].
    pub fn refused(&self) -> Vec<String> {
        self.http_gate
            .refused
            .lock()
            .expect("refusals lock")
            .clone()
    }

    /// Log records dropped because the guest exceeded [`MAX_LOG_RECORDS`].
    pub fn dropped_log_records(&self) -> u32 {
        self.log_records.saturating_sub(MAX_LOG_RECORDS)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<wasmtime_wasi_http::WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

/// The gate of one call's outgoing HTTP requests: each must lie within a
/// granted URL (scheme, host, port and path prefix, see
/// [`crate::package::url`]), the call may make at most [`MAX_HTTP_REQUESTS`],
/// and none may outlive the call's deadline (connecting, waiting for the
/// first byte and between bytes are all bounded by the time left). A
/// granted host name leads only to addresses on the internet, and the
/// request connects to the address that was checked
/// ([`super::outbound`]). A refused request gets `HTTP-request-denied` (or
/// `destination-IP-prohibited` for a name that leads off the internet);
/// the node logs why and the call's outcome lists it.
pub struct HttpGate {
    granted: Arc<[HttpUrl]>,
    service: Arc<ServiceIdentity>,
    deadline: Instant,
    requests: u32,
    body_chunk: usize,
    /// Shared with the requests under way, which may be refused after
    /// their host name is resolved.
    refused: Arc<Mutex<Vec<String>>>,
}

/// Keeps a refusal for the call's outcome (a bounded number of them).
fn note_refusal(refused: &Mutex<Vec<String>>, what: String) {
    let mut refused = refused.lock().expect("refusals lock");
    if refused.len() < MAX_REFUSALS_KEPT {
        refused.push(what);
    }
}

impl HttpGate {
    /// Where the request goes, if it may.
    fn check(
        &mut self,
        request: &http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> Result<Target, String> {
        self.requests = self.requests.saturating_add(1);
        if self.requests > MAX_HTTP_REQUESTS {
            return Err(format!(
                "more than {MAX_HTTP_REQUESTS} requests in one call"
            ));
        }
        let uri = request.uri();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let target = Target::parse(
            uri.scheme_str().unwrap_or(""),
            authority,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        )?;
        // The host names the server sees must be the one checked.
        if request
            .headers()
            .get_all(http::header::HOST)
            .iter()
            .any(|host| host.as_bytes() != authority.as_bytes())
        {
            return Err("a Host header other than the URL's".into());
        }
        if !self.granted.iter().any(|url| url.admits(&target)) {
            return Err(match self.granted.is_empty() {
                true => "this service was granted no HTTP destination".into(),
                false => format!(
                    "not under a granted URL ({})",
                    self.granted
                        .iter()
                        .map(|u| u.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(target)
    }
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        use wasmtime_wasi_http::Error;
        let checked = self.check(&request);
        let service = self.service.name.as_str();
        let target = match checked {
            Ok(target) => target,
            Err(reason) => {
                tracing::warn!(service, url = %request.uri(), "outgoing HTTP request refused: {reason}");
                let what = format!("HTTP {} {}: {reason}", request.method(), request.uri());
                note_refusal(&self.refused, what);
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Box::new(async { Err(Error::ConnectionTimeout) });
        }
        let within = |asked: Option<Duration>| Some(asked.map_or(left, |asked| asked.min(left)));
        let options = options.unwrap_or_default();
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: within(options.connect_timeout),
            first_byte_timeout: within(options.first_byte_timeout),
            between_bytes_timeout: within(options.between_bytes_timeout),
        };
        tracing::debug!(service, url = %target, method = %request.method(), "outgoing HTTP request");
        let refused = self.refused.clone();
        let service = self.service.clone();
        Box::new(async move {
            let lookup_within = options.connect_timeout.unwrap_or(left);
            let addresses = match outbound::destinations(&target.host, target.port, lookup_within)
                .await
            {
                Ok(addresses) => addresses,
                Err(unroutable) => {
                    let reason = unroutable.reason();
                    let url = request.uri();
                    let service = service.name.as_str();
                    return Err(match unroutable {
                        Unroutable::Lookup(_) => {
                            tracing::debug!(service, %url, "outgoing HTTP request: {reason}");
                            Error::DnsError {
                                rcode: None,
                                info_code: None,
                            }
                        }
                        Unroutable::Prohibited(_) => {
                            tracing::warn!(service, %url, "outgoing HTTP request refused: {reason}");
                            let what = format!("HTTP {} {url}: {reason}", request.method());
                            note_refusal(&refused, what);
                            Error::DestinationIpProhibited
                        }
                    });
                }
            };
            outbound::send(request, Route { target, addresses }, options).await
        })
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        self.body_chunk
    }
}

fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl rps::log::Host for HostState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        self.log_records = self.log_records.saturating_add(1);
        if self.log_records > MAX_LOG_RECORDS {
            return;
        }
        let message = clip(&message, MAX_LOG_MESSAGE);
        let fields: Vec<String> = fields
            .iter()
            .take(MAX_LOG_FIELDS)
            .map(|(k, v)| format!("{}={:?}", clip(k, 64), clip(v, MAX_LOG_FIELD)))
            .collect();
        let fields = fields.join(" ");
        let separator = if fields.is_empty() { "" } else { " " };
        let service = self.service.name.as_str();
        match level {
            Level::Trace => {
                tracing::trace!(target: "sp2a::guest", service, "{message}{separator}{fields}")
            }
            Level::Debug => {
                tracing::debug!(target: "sp2a::guest", service, "{message}{separator}{fields}")
            }
            Level::Info => {
                tracing::info!(target: "sp2a::guest", service, "{message}{separator}{fields}")
            }
            Level::Warn => {
                tracing::warn!(target: "sp2a::guest", service, "{message}{separator}{fields}")
            }
            Level::Error => {
                tracing::error!(target: "sp2a::guest", service, "{message}{separator}{fields}")
            }
        }
    }
}

impl rps::host::Host for HostState {
    fn service(&mut self) -> rps::host::ServiceInfo {
        rps::host::ServiceInfo {
            name: self.service.name.clone(),
            version: self.service.version.clone(),
            content_id: self.service.content_id.clone(),
        }
    }
}

impl HostState {
    /// The feed a guest names, if granted.
    fn feed(&self, name: &str) -> Result<&FeedId, FeedError> {
        self.feeds
            .iter()
            .find(|(granted, _)| granted == name)
            .map(|(_, id)| id)
            .ok_or(FeedError::NotGranted)
    }
}

impl rps::feed::Host for HostState {
    fn latest(&mut self, name: String) -> Result<Option<u64>, FeedError> {
        let feed = self.feed(&name)?;
        Ok(self.feed_source.read(feed, |b| b.and_then(|b| b.latest())))
    }

    fn oldest(&mut self, name: String) -> Result<Option<u64>, FeedError> {
        let feed = self.feed(&name)?;
        Ok(self.feed_source.read(feed, |b| b.and_then(|b| b.oldest())))
    }

    fn segment(&mut self, name: String, index: u64) -> Result<Option<GuestSegment>, FeedError> {
        let feed = self.feed(&name)?;
        let segment = self
            .feed_source
            .read(feed, |b| b.and_then(|b| b.get(index)));
        // Copied into the guest's memory, within its memory limit.
        Ok(segment.map(|s| GuestSegment {
            index: s.index,
            published_ms: s.published_ms,
            data: s.data.clone(),
        }))
    }
}

/// Adds the `sp2a:rps` host interfaces to the linker.
pub(crate) fn add_host_imports(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Service::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// The per-activation recipe for building a call's host state: grants with
/// directories created and host names resolved once, at activation.
#[derive(Clone, Debug)]
pub struct CallContext {
    service: Arc<ServiceIdentity>,
    grants: Grants,
    /// Feeds granted, by the name the guest uses.
    feeds: Arc<[(String, FeedId)]>,
    feed_source: Feeds,
    /// Socket addresses granted, per protocol.
    addresses: Arc<HashSet<(Protocol, SocketAddr)>>,
    /// URLs granted for outgoing HTTP.
    http: Arc<[HttpUrl]>,
    max_memory: usize,
}

impl CallContext {
    /// Prepares grants: creates granted directories (through cap-std, so a
    /// relative path cannot leave its root), resolves granted hosts (a host
    /// name to addresses on the internet only, see [`super::outbound`]) and
    /// names the granted feeds, read from `feed_source`.
    pub async fn prepare(
        service: ServiceIdentity,
        grants: Grants,
        feed_source: Feeds,
    ) -> Result<Self, SandboxError> {
        for dir in &grants.dirs {
            let root = cap_std::fs::Dir::open_ambient_dir(&dir.root, cap_std::ambient_authority())
                .map_err(|source| SandboxError::Dir {
                    path: dir.root.display().to_string(),
                    source,
                })?;
            // `<publisher>/<service>/<dir>`; data of `<service>/` from before
            // directories were kept per publisher belongs to whichever
            // publisher wrote it, which only the operator can say.
            let mut parts = dir.relative.components();
            if let (Some(publisher), Some(service)) = (parts.next(), parts.next()) {
                let ours = std::path::Path::new(publisher.as_os_str()).join(service);
                if root.is_dir(service) && !root.exists(&ours) {
                    return Err(SandboxError::LegacyData {
                        legacy: dir.root.join(service).display().to_string(),
                        moved: dir.root.join(&ours).display().to_string(),
                    });
                }
            }
            root.create_dir_all(&dir.relative)
                .map_err(|source| SandboxError::Dir {
                    path: dir.root.join(&dir.relative).display().to_string(),
                    source,
                })?;
        }
        let mut addresses = HashSet::new();
        for net in &grants.net {
            let resolved = outbound::destinations(&net.host, net.port, RESOLVE_WITHIN)
                .await
                .map_err(|e| SandboxError::Resolve {
                    host: net.host.clone(),
                    reason: e.reason().to_owned(),
                })?;
            for address in resolved {
                addresses.insert((net.protocol, address));
            }
        }
        let max_memory = usize::try_from(grants.limits.max_memory).unwrap_or(usize::MAX);
        let http = grants.http.clone().into();
        let feeds = grants
            .feeds
            .iter()
            .map(|f| {
                FeedId::new(&f.name, &f.publisher)
                    .map(|id| (f.name.clone(), id))
                    .ok_or_else(|| {
                        SandboxError::Refused(format!("{:?} is not a feed name", f.name))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
            .into();
        Ok(Self {
            service: Arc::new(service),
            grants,
            feeds,
            feed_source,
            addresses: Arc::new(addresses),
            http,
            max_memory,
        })
    }

    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    pub fn service(&self) -> &ServiceIdentity {
        &self.service
    }

    /// Builds the host state for one call.
    pub fn host_state(&self) -> Result<HostState, SandboxError> {
        let mut builder = WasiCtxBuilder::new();
        let stdout = MemoryOutputPipe::new(MAX_CAPTURED_OUTPUT);
        let stderr = MemoryOutputPipe::new(MAX_CAPTURED_OUTPUT);
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        for (name, value) in &self.grants.env {
            builder.env(name, value);
        }
        for dir in &self.grants.dirs {
            let host = dir.root.join(&dir.relative);
            let perms = match dir.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            builder
                .preopened_dir(&host, &dir.guest_path, perms)
                .map_err(|e| SandboxError::Dir {
                    path: host.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        }
        let tcp = self.grants.net.iter().any(|n| n.protocol == Protocol::Tcp);
        let udp = self.grants.net.iter().any(|n| n.protocol == Protocol::Udp);
        builder
            .allow_tcp(tcp)
            .allow_udp(udp)
            .allow_ip_name_lookup(false);
        let addresses = self.addresses.clone();
        builder.socket_addr_check(move |address, usage| {
            let allowed = match usage {
                // Binding only to an ephemeral port on the wildcard address.
                SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                    address.ip().is_unspecified() && address.port() == 0
                }
                SocketAddrUse::TcpConnect => addresses.contains(&(Protocol::Tcp, address)),
                SocketAddrUse::UdpSend => addresses.contains(&(Protocol::Udp, address)),
                _ => false,
            };
            Box::pin(async move { allowed })
        });
        let http_gate = HttpGate {
            granted: self.http.clone(),
            service: self.service.clone(),
            deadline: Instant::now() + self.grants.limits.time_per_call,
            requests: 0,
            body_chunk: MAX_HTTP_BODY_CHUNK.min(self.max_memory),
            refused: Arc::default(),
        };
        Ok(HostState {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            http_gate,
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory: self.max_memory,
            },
            service: self.service.clone(),
            feeds: self.feeds.clone(),
            feed_source: self.feed_source.clone(),
            log_records: 0,
            stdout,
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Segment;
    use crate::package::SecretKey;
    use crate::sandbox::FeedGrant;

    #[tokio::test]
    async fn a_guest_reads_only_the_feeds_granted_by_name() {
        let source = SecretKey::generate();
        let feeds = Feeds::default();
        for (name, index) in [("live", 5), ("news", 9)] {
            let feed = FeedId::new(name, &source.public()).unwrap();
            let segment = Segment::sign(&source, name, index, 0, vec![1, 2]).unwrap();
            feeds.receive(&feed, segment).unwrap();
        }
        let grants = Grants {
            feeds: vec![FeedGrant {
                name: "live".into(),
                publisher: source.public(),
            }],
            ..Grants::default()
        };
        let identity = ServiceIdentity {
            name: "reader".into(),
            version: "0.1.0".into(),
            content_id: String::new(),
        };
        let context = CallContext::prepare(identity, grants, feeds).await.unwrap();
        let mut state = context.host_state().unwrap();
        use rps::feed::Host;
        assert_eq!(state.latest("live".into()), Ok(Some(5)));
        assert_eq!(state.oldest("live".into()), Ok(Some(5)));
        assert!(matches!(
            state.segment("live".into(), 5),
            Ok(Some(GuestSegment { index: 5, ref data, .. })) if data == &[1, 2]
        ));
        assert_eq!(
            state.segment("live".into(), 6).map(|s| s.is_none()),
            Ok(true)
        );
        // Held on this node, but not granted to this service.
        assert_eq!(state.latest("news".into()), Err(FeedError::NotGranted));
        assert!(matches!(
            state.segment("news".into(), 9),
            Err(FeedError::NotGranted)
        ));
        assert_eq!(state.latest("../live".into()), Err(FeedError::NotGranted));
    }
}
