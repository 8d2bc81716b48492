//! The node: the paper's RPSManager. It shares services (activates them and
//! announces them in the DHT), finds them on other peers, pulls them
//! (check before download, verified transfer with retries across providers,
//! activation, then providing them itself), and answers peers' requests for
//! adverts, blocks and invocations within its policy.
//!
//! This is where [`crate::sandbox`] and [`crate::net`] meet; neither knows
//! the other.
//!
//! * [`activate`]: verify, policy, compile, audit, self-test.
//! * [`report`]: the audit report of a package.
//! * [`store`]: the crash-safe package store.
//! * [`transfer`]: verified block transfer (bao).
//! * [`pull`]: find, check, download (sequential, the paper's way), activate.
//! * [`swarm`]: the swarming download (rarest first, partial sharing).
//! * [`control`]: the operator's local control socket.

pub mod activate;
pub mod control;
pub mod pull;
pub mod report;
mod serve;
pub mod store;
pub mod swarm;
pub mod transfer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bao_tree::io::outboard::PreOrderMemOutboard;
use futures::stream::StreamExt;
use tokio::sync::{Semaphore, broadcast};

pub use activate::{ActivateError, LocalService, activate};
pub use pull::{PullConfig, PullError, PullProgress, PullStage, Pulled, Strategy};
pub use report::{PackageReport, audit_package};

use crate::net::protocol::*;
use crate::net::{self, Client, NetConfig, PeerId, RequestError, keys};
use crate::package::{Advert, ContentId, Package, VerifiedPackage};
use crate::policy::Policy;
use crate::sandbox::{Activation, InvokeError, Sandbox};
use store::Store;

/// Node settings besides the network and the policy.
///
/// Defaults: at most 8 concurrent invocations per service (the paper's
/// limit L), 32 concurrent block uploads, unlimited upload rate (with a
/// rate, `Busy` beyond 1 s of queued uploads), partial downloads served,
/// pulled services provided, every service open to every peer, and the
/// [`PullConfig`] defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Identity, store, compile cache and control socket live here.
    pub data_dir: PathBuf,
    pub net: NetConfig,
    pub max_invocations_per_service: usize,
    pub max_concurrent_uploads: usize,
    pub pull: PullConfig,
    /// Services open only to these peers (others get an explicit refusal).
    pub allow: HashMap<String, HashSet<PeerId>>,
    /// Upload rate of this node in bytes per second (`None`: unlimited).
    pub upload_rate: Option<u64>,
    /// Serve (and announce) the verified blocks of a download in progress.
    pub share_partial: bool,
    /// Provide what this node pulled (off: it only uses it, as a client).
    pub reshare: bool,
    /// With an upload rate, answer `Busy` when the queue is longer than this.
    pub max_upload_backlog: Duration,
    /// Peers served blocks at the same time (a peer counts while it asked
    /// in the last two seconds); others are answered `Busy`. `None`:
    /// unlimited. The paper's server served one download at a time.
    pub upload_slots: Option<usize>,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            net: NetConfig::default(),
            max_invocations_per_service: 8,
            max_concurrent_uploads: 32,
            pull: PullConfig::default(),
            allow: HashMap::new(),
            upload_rate: None,
            share_partial: true,
            reshare: true,
            max_upload_backlog: Duration::from_secs(1),
            upload_slots: None,
        }
    }
}

/// Node failures.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Activate(#[from] ActivateError),
    #[error(transparent)]
    Pull(#[from] Arc<PullError>),
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("no provider of service {0:?} answered")]
    NoProvider(String),
    #[error("{service} on {peer}: {reason}")]
    Remote {
        service: String,
        peer: String,
        reason: String,
    },
    #[error("every provider of {service} declined: {}", .reasons.join("; "))]
    AllDeclined {
        service: String,
        reasons: Vec<String>,
    },
    #[error("this node does not run service {0:?}")]
    NotRunning(String),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
}

/// Something that happened on a node, for demos, logs and progress displays.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    Shared {
        name: String,
        version: String,
        content_id: ContentId,
    },
    PullStarted {
        target: String,
    },
    Found {
        target: String,
        providers: usize,
        elapsed: Duration,
    },
    Downloaded {
        name: String,
        bytes: u64,
        from: Vec<PeerId>,
        elapsed: Duration,
    },
    Pulled {
        name: String,
        content_id: ContentId,
        elapsed: Duration,
    },
    PeerBanned {
        peer: PeerId,
        content_id: ContentId,
        reason: String,
    },
    Served {
        peer: PeerId,
        content_id: ContentId,
        bytes: u64,
    },
    Invoked {
        peer: PeerId,
        service: String,
    },
}

/// A service this node runs and provides.
pub struct Provided {
    pub package: VerifiedPackage,
    pub activation: Activation,
    pub outboard: PreOrderMemOutboard,
    /// The paper's limit L: concurrent invocations served.
    invocations: Arc<Semaphore>,
    pub shared_at: Instant,
}

impl std::fmt::Debug for Provided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provided")
            .field("name", &self.package.manifest().name)
            .field("content_id", &self.package.content_id())
            .finish()
    }
}

/// A provider found for a service, with its verified advert.
#[derive(Clone, Debug)]
pub struct Found {
    pub peer: PeerId,
    pub advert: Advert,
}

/// What a node reports about itself.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub peer_id: String,
    pub listen: Vec<String>,
    pub peers: Vec<String>,
    pub routing_table: usize,
    pub services: Vec<ServiceStatus>,
    pub transfers: Vec<TransferStatus>,
    pub counters: Counters,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub version: String,
    pub content_id: String,
    pub size: u64,
    pub busy_invocations: usize,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TransferStatus {
    pub target: String,
    pub stage: String,
    pub bytes: u64,
    pub total: u64,
    pub provider: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) sandbox: Sandbox,
    pub(crate) policy: Policy,
    pub(crate) config: NodeConfig,
    pub(crate) store: Store,
    services: RwLock<BTreeMap<ContentId, Arc<Provided>>>,
    pub(crate) pulls: Mutex<HashMap<String, pull::SharedPull>>,
    uploads: Arc<Semaphore>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Peers that sent bad data for a package: never asked for it again.
    pub(crate) banned: Mutex<HashMap<ContentId, HashSet<PeerId>>>,
    /// Downloads in progress whose verified blocks this node already serves.
    pub(crate) downloads: Mutex<HashMap<ContentId, Arc<Mutex<transfer::Download>>>>,
    pub(crate) upload_limiter: Option<serve::RateLimiter>,
    /// Providers of services called remotely, the last to answer first.
    remote_providers: Mutex<HashMap<String, (Vec<PeerId>, Instant)>>,
    /// Peers that recently asked for blocks of a package (peer exchange).
    recent_askers: Mutex<HashMap<ContentId, std::collections::VecDeque<PeerId>>>,
    pub(crate) stats: Stats,
    /// Times each block of a package was uploaded (for `Want` answers).
    pub(crate) uploads_per_block: Mutex<HashMap<ContentId, Vec<u32>>>,
    /// Peers being served blocks, with when they last asked (upload slots).
    pub(crate) downloaders: Mutex<HashMap<PeerId, Instant>>,
    started: Instant,
}

/// Counters of what a node served, since it started.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    transfer_requests: AtomicU64,
    have_requests: AtomicU64,
    blocks_served: AtomicU64,
    bytes_uploaded: AtomicU64,
    busy: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub transfer_requests: u64,
    pub have_requests: u64,
    pub blocks_served: u64,
    pub bytes_uploaded: u64,
    /// Requests answered `Busy` (upload slots or queue full).
    pub busy: u64,
}

impl Stats {
    fn snapshot(&self) -> Counters {
        Counters {
            transfer_requests: self.transfer_requests.load(Ordering::Relaxed),
            have_requests: self.have_requests.load(Ordering::Relaxed),
            blocks_served: self.blocks_served.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
        }
    }
}

/// Providers asked for adverts by one lookup.
const MAX_ADVERT_PROVIDERS: usize = 32;

/// How long remote providers found in the DHT are reused for calls.
const REMOTE_PROVIDER_TTL: Duration = Duration::from_secs(30);

/// A running node. Cheap to clone; all clones are the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id())
            .finish()
    }
}

fn create_private_dir(path: &std::path::Path) -> Result<(), NodeError> {
    let err = |source| NodeError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

impl Node {
    /// Starts a node: identity and store from the data directory, network,
    /// request handling; then re-activates and re-announces every stored
    /// package (those the policy no longer accepts are skipped and logged).
    pub async fn start(
        config: NodeConfig,
        policy: Policy,
        sandbox: Sandbox,
    ) -> Result<Node, NodeError> {
        create_private_dir(&config.data_dir)?;
        let keypair = net::load_or_create_identity(&config.data_dir.join("identity.key"))?;
        let store = Store::open(&config.data_dir.join("store"))?;
        let (client, inbound) = net::event_loop::start(keypair, config.net.clone()).await?;
        let (events, _) = broadcast::channel(1024);
        let node = Node {
            inner: Arc::new(Inner {
                client,
                sandbox,
                policy,
                store,
                services: RwLock::new(BTreeMap::new()),
                pulls: Mutex::new(HashMap::new()),
                uploads: Arc::new(Semaphore::new(config.max_concurrent_uploads.max(1))),
                events,
                banned: Mutex::new(HashMap::new()),
                downloads: Mutex::new(HashMap::new()),
                upload_limiter: config.upload_rate.map(serve::RateLimiter::new),
                remote_providers: Mutex::new(HashMap::new()),
                recent_askers: Mutex::new(HashMap::new()),
                stats: Stats::default(),
                uploads_per_block: Mutex::new(HashMap::new()),
                downloaders: Mutex::new(HashMap::new()),
                started: Instant::now(),
                config,
            }),
        };
        tokio::spawn(serve::serve(node.clone(), inbound));
        for stored in node.inner.store.load_all()? {
            match stored {
                Ok(package) => {
                    let name = package.manifest().name.clone();
                    if let Err(e) = node.share(package.into_inner()).await {
                        tracing::warn!(service = %name, error = %e, "not re-sharing a stored package");
                    }
                }
                Err((path, e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged stored package")
                }
            }
        }
        Ok(node)
    }

    pub fn peer_id(&self) -> PeerId {
        self.inner.client.peer_id()
    }

    /// The network client (for addresses and diagnostics).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Subscribes to this node's events.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn emit(&self, event: NodeEvent) {
        let _ = self.inner.events.send(event);
    }

    /// Addresses other nodes can dial (`.../p2p/<peer id>`).
    pub async fn addresses(&self) -> Vec<net::Multiaddr> {
        let peer = self.peer_id();
        self.inner
            .client
            .info()
            .await
            .map(|info| {
                info.listen_addrs
                    .iter()
                    .map(|a| net::event_loop::dialable(a, peer))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Connects to a peer (`/ip4/.../tcp/.../p2p/<id>`).
    pub async fn dial(&self, address: net::Multiaddr) -> Result<PeerId, String> {
        self.inner.client.dial(address).await
    }

    /// shareRPS: activates a package (verify, policy, audit, self-test),
    /// stores it and announces this node as its provider.
    pub async fn share(&self, package: Package) -> Result<ContentId, NodeError> {
        let id = package.content_id();
        if self
            .inner
            .services
            .read()
            .expect("services lock")
            .contains_key(&id)
        {
            return Ok(id);
        }
        let service = activate(&self.inner.sandbox, &self.inner.policy, package).await?;
        self.provide(service, true).await
    }

    /// Activates a pulled package; it is announced unless this node was
    /// configured not to re-share what it pulls.
    pub(crate) async fn adopt(&self, package: Package) -> Result<ContentId, NodeError> {
        let service = activate(&self.inner.sandbox, &self.inner.policy, package).await?;
        self.provide(service, self.inner.config.reshare).await
    }

    /// Stores an activated service and, if `announce`, announces it.
    pub(crate) async fn provide(
        &self,
        service: LocalService,
        announce: bool,
    ) -> Result<ContentId, NodeError> {
        let LocalService {
            package,
            activation,
            ..
        } = service;
        let id = package.content_id();
        self.inner.store.save(&package)?;
        let component = package.component_bytes();
        let outboard = tokio::task::spawn_blocking(move || transfer::outboard(&component))
            .await
            .map_err(|e| NodeError::DataDir {
                path: "outboard".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let name = package.manifest().name.clone();
        let version = package.manifest().version.to_string();
        let provided = Arc::new(Provided {
            package,
            activation,
            outboard,
            invocations: Arc::new(Semaphore::new(
                self.inner.config.max_invocations_per_service.max(1),
            )),
            shared_at: Instant::now(),
        });
        self.inner
            .services
            .write()
            .expect("services lock")
            .insert(id, provided);
        if !announce {
            tracing::info!(service = %name, %version, package = %id.short(), "active (not re-shared)");
            return Ok(id);
        }
        self.inner
            .client
            .start_providing(keys::service_key(&name))
            .await;
        self.inner
            .client
            .start_providing(keys::package_key(&id.0))
            .await;
        tracing::info!(service = %name, %version, package = %id.short(), "providing");
        self.emit(NodeEvent::Shared {
            name,
            version,
            content_id: id,
        });
        Ok(id)
    }

    /// The services this node runs.
    pub fn services(&self) -> Vec<Arc<Provided>> {
        self.inner
            .services
            .read()
            .expect("services lock")
            .values()
            .cloned()
            .collect()
    }

    /// The newest version of `name` this node runs.
    pub fn service(&self, name: &str) -> Option<Arc<Provided>> {
        self.inner
            .services
            .read()
            .expect("services lock")
            .values()
            .filter(|p| p.package.manifest().name == name)
            .max_by(|a, b| {
                a.package
                    .manifest()
                    .version
                    .cmp(&b.package.manifest().version)
            })
            .cloned()
    }

    fn service_by_id(&self, id: &ContentId) -> Option<Arc<Provided>> {
        self.inner
            .services
            .read()
            .expect("services lock")
            .get(id)
            .cloned()
    }

    /// findRPS: the providers of a service and their verified adverts (the
    /// paper's result vector). Adverts that do not parse, do not verify or
    /// name another service are dropped.
    pub async fn find(&self, name: &str) -> Vec<Found> {
        self.find_providers(name, false).await
    }

    /// Like [`Node::find`], with a DHT query that runs to the end: every
    /// provider the network can name, at the cost of more time.
    pub async fn find_all(&self, name: &str) -> Vec<Found> {
        self.find_providers(name, true).await
    }

    async fn find_providers(&self, name: &str, exhaustive: bool) -> Vec<Found> {
        let start = Instant::now();
        let key = keys::service_key(name);
        let providers = if exhaustive {
            self.inner.client.get_all_providers(key).await
        } else {
            self.inner.client.get_providers(key).await
        };
        let lookup = start.elapsed();
        let found = self
            .fetch_adverts(providers, AdvertRequest::Name(name.to_owned()), |advert| {
                advert.manifest().name == name
            })
            .await;
        tracing::debug!(service = name, ?lookup, adverts = ?start.elapsed() - lookup, found = found.len(), "find");
        found
    }

    /// The providers of one package, with its advert.
    pub async fn find_package(&self, id: ContentId) -> Vec<Found> {
        let providers = self
            .inner
            .client
            .get_providers(keys::package_key(&id.0))
            .await;
        self.fetch_adverts(providers, AdvertRequest::ContentId(id.0), |advert| {
            advert.content_id() == id
        })
        .await
    }

    async fn fetch_adverts(
        &self,
        providers: HashSet<PeerId>,
        request: AdvertRequest,
        wanted: impl Fn(&Advert) -> bool,
    ) -> Vec<Found> {
        let timeout = self.inner.config.pull.advert_timeout;
        // Anyone can put provider records in the DHT: ask a bounded number
        // of providers, a few at a time.
        let mut providers: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| *p != self.peer_id())
            .collect();
        shuffle(&mut providers);
        providers.truncate(MAX_ADVERT_PROVIDERS);
        let mut requests = futures::stream::iter(providers.into_iter().map(|peer| {
            let client = self.inner.client.clone();
            let request = request.clone();
            async move {
                let response =
                    tokio::time::timeout(timeout, client.request_advert(peer, request)).await;
                (peer, response)
            }
        }))
        .buffer_unordered(8);
        let mut found = Vec::new();
        while let Some((peer, response)) = requests.next().await {
            let adverts = match response {
                Ok(Ok(AdvertResponse::Adverts(adverts))) => adverts,
                Ok(Ok(other)) => {
                    tracing::debug!(%peer, ?other, "no advert");
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "advert request failed");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%peer, "advert request timed out");
                    continue;
                }
            };
            for bytes in adverts.into_iter().take(MAX_ADVERTS) {
                match Advert::parse(&bytes).and_then(|a| a.check_signature().map(|()| a)) {
                    Ok(advert) if wanted(&advert) => found.push(Found { peer, advert }),
                    Ok(_) => tracing::debug!(%peer, "advert for something else"),
                    Err(e) => tracing::debug!(%peer, error = %e, "invalid advert"),
                }
            }
        }
        found.sort_by(|a, b| {
            b.advert
                .manifest()
                .version
                .cmp(&a.advert.manifest().version)
        });
        found
    }

    /// Calls a function of a service this node runs.
    pub async fn invoke_local(
        &self,
        name: &str,
        call: &str,
    ) -> Result<crate::sandbox::CallOutcome, NodeError> {
        let service = self
            .service(name)
            .ok_or_else(|| NodeError::NotRunning(name.to_owned()))?;
        let _permit = service
            .invocations
            .acquire()
            .await
            .expect("semaphore never closed");
        Ok(service.activation.invoke(call).await?)
    }

    /// Calls a function of a service on a remote provider without
    /// downloading it. Providers at their limit (`Busy`), refusing this peer
    /// or unreachable are skipped; a call that ran and failed is returned.
    pub async fn invoke_remote(&self, name: &str, call: &str) -> Result<RemoteOutcome, NodeError> {
        // The provider that answered last time first, then the others in
        // random order; the DHT is asked again when the cache is cold or
        // every cached provider declined.
        let mut reasons = Vec::new();
        let cached = self
            .inner
            .remote_providers
            .lock()
            .expect("providers lock")
            .get(name)
            .filter(|(_, at)| at.elapsed() < REMOTE_PROVIDER_TTL)
            .map(|(providers, _)| providers.clone());
        if let Some(providers) = cached
            && let Some(result) = self.invoke_on(name, call, &providers, &mut reasons).await
        {
            return self.remember_provider(name, &providers, result);
        }
        // A quick lookup, then (if every provider it found declined) one
        // that asks all the peers closest to the key.
        let mut tried: HashSet<PeerId> = HashSet::new();
        for exhaustive in [false, true] {
            let key = keys::service_key(name);
            let found = if exhaustive {
                self.inner.client.get_all_providers(key).await
            } else {
                self.inner.client.get_providers(key).await
            };
            let mut found: Vec<PeerId> = found
                .into_iter()
                .filter(|p| *p != self.peer_id() && !tried.contains(p))
                .collect();
            shuffle(&mut found);
            tried.extend(found.iter().copied());
            if let Some(result) = self.invoke_on(name, call, &found, &mut reasons).await {
                return self.remember_provider(name, &found, result);
            }
        }
        if reasons.is_empty() {
            return Err(NodeError::NoProvider(name.to_owned()));
        }
        Err(NodeError::AllDeclined {
            service: name.to_owned(),
            reasons,
        })
    }

    /// Caches the providers of `name` with the one that answered first.
    fn remember_provider(
        &self,
        name: &str,
        providers: &[PeerId],
        result: Result<RemoteOutcome, NodeError>,
    ) -> Result<RemoteOutcome, NodeError> {
        if let Ok(outcome) = &result {
            let mut order = providers.to_vec();
            order.retain(|p| *p != outcome.peer);
            order.insert(0, outcome.peer);
            self.inner
                .remote_providers
                .lock()
                .expect("providers lock")
                .insert(name.to_owned(), (order, Instant::now()));
        }
        result
    }

    /// Tries `providers` in order; `None` if every one declined.
    async fn invoke_on(
        &self,
        name: &str,
        call: &str,
        providers: &[PeerId],
        reasons: &mut Vec<String>,
    ) -> Option<Result<RemoteOutcome, NodeError>> {
        for &peer in providers {
            let request = InvokeRequest {
                service: name.to_owned(),
                content_id: None,
                call: call.to_owned(),
            };
            let start = Instant::now();
            match self.inner.client.request_invoke(peer, request).await {
                Ok(InvokeResponse::Ok {
                    value,
                    fuel,
                    micros,
                    content_id,
                }) => {
                    return Some(Ok(RemoteOutcome {
                        peer,
                        value: clip(&value),
                        fuel,
                        remote_time: Duration::from_micros(micros),
                        round_trip: start.elapsed(),
                        content_id: ContentId(content_id),
                    }));
                }
                Ok(InvokeResponse::Failed { kind, message }) => {
                    return Some(Err(NodeError::Remote {
                        service: name.to_owned(),
                        peer: peer.to_string(),
                        reason: format!("{} ({})", clip(&message), clip(&kind)),
                    }));
                }
                Ok(InvokeResponse::Busy) => reasons.push(format!("{peer}: busy")),
                Ok(InvokeResponse::Denied(why)) => {
                    reasons.push(format!("{peer}: denied: {}", clip(&why)))
                }
                Ok(InvokeResponse::NotFound) => {
                    reasons.push(format!("{peer}: does not provide it"))
                }
                // The request never reached the peer: safe to try another.
                Err(e @ (RequestError::Dial | RequestError::Unsupported)) => {
                    reasons.push(format!("{peer}: {e}"))
                }
                // It may have run there: do not run it again elsewhere.
                Err(e) => {
                    return Some(Err(NodeError::Remote {
                        service: name.to_owned(),
                        peer: peer.to_string(),
                        reason: format!("no answer ({e}); the call may or may not have run"),
                    }));
                }
            }
        }
        None
    }

    /// Peers, services, transfers.
    pub async fn status(&self) -> Status {
        let info = self.inner.client.info().await;
        let services = self
            .services()
            .iter()
            .map(|p| ServiceStatus {
                name: p.package.manifest().name.clone(),
                version: p.package.manifest().version.to_string(),
                content_id: p.package.content_id().to_string(),
                size: p.package.advert().component_len(),
                busy_invocations: self
                    .inner
                    .config
                    .max_invocations_per_service
                    .max(1)
                    .saturating_sub(p.invocations.available_permits()),
            })
            .collect();
        let transfers = self
            .inner
            .pulls
            .lock()
            .expect("pulls lock")
            .iter()
            .map(|(target, shared)| {
                let progress = shared.progress.borrow().clone();
                TransferStatus {
                    target: target.clone(),
                    stage: format!("{:?}", progress.stage),
                    bytes: progress.bytes,
                    total: progress.total,
                    provider: progress.provider.map(|p| p.to_string()),
                }
            })
            .collect();
        Status {
            peer_id: self.peer_id().to_string(),
            listen: self
                .addresses()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect(),
            peers: info
                .as_ref()
                .map(|i| i.connected.iter().map(|p| p.to_string()).collect())
                .unwrap_or_default(),
            routing_table: info.map(|i| i.routing_table).unwrap_or(0),
            services,
            transfers,
            counters: self.counters(),
        }
    }

    /// What this node has served since it started.
    pub fn counters(&self) -> Counters {
        self.inner.stats.snapshot()
    }

    /// How long this node has been running.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Withdraws every provider record and stops the network. Packages are
    /// already complete on disk (atomic writes), so nothing is half-written.
    pub async fn shutdown(&self) {
        let services = self.services();
        let mut names = HashSet::new();
        for provided in &services {
            names.insert(provided.package.manifest().name.clone());
            self.inner
                .client
                .stop_providing(keys::package_key(&provided.package.content_id().0))
                .await;
        }
        for name in names {
            self.inner
                .client
                .stop_providing(keys::service_key(&name))
                .await;
        }
        self.inner.client.shutdown().await;
    }
}

/// The result of a remote invocation.
#[derive(Clone, Debug)]
pub struct RemoteOutcome {
    pub peer: PeerId,
    pub value: String,
    pub fuel: u64,
    pub remote_time: Duration,
    pub round_trip: Duration,
    pub content_id: ContentId,
}

pub(crate) fn shuffle<T>(items: &mut [T]) {
    use rand::seq::SliceRandom;
    items.shuffle(&mut rand::thread_rng());
}
