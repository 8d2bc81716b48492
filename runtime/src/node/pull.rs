//! Pulls (the paper's downloadRPS and activation): find the providers,
//! admit the signed advert *before* downloading anything, download the
//! component with every block verified on arrival ([`super::download`]),
//! then verify, audit, self-test, activate, store and provide it.
//! Concurrent pulls of the same target share one download; peers that sent
//! bad data are remembered per package and never asked for it again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::watch;
use tracing::Instrument;

use super::NodeError;
use super::config::{PullConfig, Strategy};
use super::discovery::{Discovery, Lookup};
use super::download::Fetch;
use super::events::{Events, NodeEvent};
use super::metrics::Metrics;
use super::partial::Partials;
use super::services::Services;
use super::upload::Uploads;
use crate::net::{Client, PeerId, keys};
use crate::package::{Advert, ContentId, Package};
use crate::policy::{Refusal, Refusals};

/// Packages for which banned peers are remembered.
const MAX_BANNED_PACKAGES: usize = 256;
/// Banned peers remembered per package (peer ids cost nothing to make).
const MAX_BANNED_PER_PACKAGE: usize = 4096;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no provider of {0} was found")]
    NotFound(String),
    #[error("{target}: refused before downloading anything: {}", refused_list(.refused))]
    Refused {
        target: String,
        /// Each version found, with why this node would not run it.
        refused: Vec<RefusedVersion>,
    },
    #[error("{target}: gave up after {elapsed:.1?}: {}", .attempts.join("; "))]
    GaveUp {
        target: String,
        elapsed: Duration,
        attempts: Vec<String>,
    },
    #[error("{target}: downloaded but not activated: {error}")]
    Activate {
        target: String,
        error: Box<NodeError>,
    },
}

impl PullError {
    /// A short machine-readable kind: `not-found`, `refused`, `gave-up`,
    /// `activate`.
    pub fn kind(&self) -> &'static str {
        match self {
            PullError::NotFound(_) => "not-found",
            PullError::Refused { .. } => "refused",
            PullError::GaveUp { .. } => "gave-up",
            PullError::Activate { .. } => "activate",
        }
    }
}

/// A version of a service this node would not run.
#[derive(Clone, Debug)]
pub struct RefusedVersion {
    pub name: String,
    pub version: String,
    pub refusals: Refusals,
}

fn refused_list(refused: &[RefusedVersion]) -> String {
    refused
        .iter()
        .map(|r| format!("{} {}: {}", r.name, r.version, r.refusals))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a pull is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullStage {
    Discovering,
    Downloading,
    Activating,
    Done,
    Failed,
}

/// Progress of one pull, observable while it runs.
#[derive(Clone, Debug)]
pub struct PullProgress {
    pub stage: PullStage,
    pub bytes: u64,
    pub total: u64,
    pub provider: Option<PeerId>,
    pub started: Instant,
}

/// A pull in progress, or finished: callers share its result.
pub type PullFuture = Shared<BoxFuture<'static, Result<Pulled, Arc<PullError>>>>;

/// A completed pull, with the paper's measurements.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub name: String,
    pub content_id: ContentId,
    /// Time to find providers and fetch adverts.
    pub discovery: Duration,
    /// Time to download and verify the component.
    pub download: Duration,
    /// Time from the start until this node provides the service.
    pub deploy: Duration,
    pub bytes: u64,
    /// Providers that sent verified blocks.
    pub sources: Vec<PeerId>,
    /// How each source is connected now: `PEER direct ADDRESS` or `PEER
    /// relayed ADDRESS` (a hole-punched connection is direct).
    pub paths: Vec<String>,
    /// From the start until the first verified block arrived.
    pub first_byte: Option<Duration>,
    /// False when the node already had it.
    pub downloaded: bool,
}

/// Peers that sent bad data for a package, bounded; each new ban counted.
#[derive(Debug, Default)]
pub(crate) struct Bans(
    Mutex<HashMap<ContentId, HashSet<PeerId>>>,
    prometheus_client::metrics::counter::Counter,
);

impl Bans {
    pub(crate) fn contains(&self, id: &ContentId, peer: &PeerId) -> bool {
        self.0
            .lock()
            .expect("bans lock")
            .get(id)
            .is_some_and(|b| b.contains(peer))
    }

    pub(crate) fn ban(&self, id: ContentId, peer: PeerId) {
        let mut banned = self.0.lock().expect("bans lock");
        if banned.len() >= MAX_BANNED_PACKAGES && !banned.contains_key(&id) {
            banned.clear();
        }
        let peers = banned.entry(id).or_default();
        if peers.len() < MAX_BANNED_PER_PACKAGE && peers.insert(peer) {
            self.1.inc();
        }
    }
}

/// What a pull ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Activates and provides the service.
    Activate,
    /// Keeps the verified package, not running (a standby's prefetch).
    Keep,
}

pub(crate) struct Pulls {
    config: PullConfig,
    reshare: bool,
    client: Client,
    services: Arc<Services>,
    discovery: Arc<Discovery>,
    uploads: Arc<Uploads>,
    events: Events,
    running: Mutex<HashMap<String, (PullFuture, watch::Receiver<PullProgress>)>>,
    bans: Bans,
    metrics: Arc<Metrics>,
    /// Downloads in progress, saved to resume after a restart.
    partials: Partials,
}

impl Pulls {
    // The roles a pull works with, each passed in by the node that owns them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: PullConfig,
        reshare: bool,
        client: Client,
        services: Arc<Services>,
        discovery: Arc<Discovery>,
        uploads: Arc<Uploads>,
        events: Events,
        partials: Partials,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            reshare,
            client,
            services,
            discovery,
            uploads,
            events,
            running: Mutex::new(HashMap::new()),
            bans: Bans(Mutex::default(), metrics.bans()),
            metrics,
            partials,
        }
    }

    /// Starts pulling `target` (a service name, or a content id as 64 hex
    /// digits), or joins the pull of it already running. The pull runs to
    /// its end even if every caller goes away.
    pub(crate) fn start(
        self: &Arc<Self>,
        target: &str,
    ) -> (PullFuture, watch::Receiver<PullProgress>) {
        let mut running = self.running.lock().expect("pulls lock");
        if let Some((future, progress)) = running.get(target) {
            return (future.clone(), progress.clone());
        }
        let (progress_tx, progress_rx) = watch::channel(PullProgress {
            stage: PullStage::Discovering,
            bytes: 0,
            total: 0,
            provider: None,
            started: Instant::now(),
        });
        let pulls = self.clone();
        let key = target.to_owned();
        let span = tracing::info_span!("pull", target);
        let future = async move {
            let result = pulls
                .run(&key, &progress_tx, Mode::Activate)
                .await
                .map_err(Arc::new);
            progress_tx.send_modify(|p| {
                p.stage = if result.is_ok() {
                    PullStage::Done
                } else {
                    PullStage::Failed
                }
            });
            match &result {
                Ok(pulled) => {
                    tracing::info!(deploy = ?pulled.deploy, "pulled");
                    let stages = [
                        ("discovery", pulled.discovery),
                        ("download", pulled.download),
                        ("deploy", pulled.deploy),
                    ];
                    let stages = if pulled.downloaded { &stages[..] } else { &[] };
                    let bytes = if pulled.downloaded { pulled.bytes } else { 0 };
                    pulls.metrics.pull("ok", stages, bytes);
                }
                Err(e) => {
                    tracing::info!(error = %e, "pull failed");
                    pulls.metrics.pull(e.kind(), &[], 0);
                }
            }
            pulls.running.lock().expect("pulls lock").remove(&key);
            result
        }
        .instrument(span)
        .boxed()
        .shared();
        running.insert(target.to_owned(), (future.clone(), progress_rx.clone()));
        tokio::spawn(future.clone());
        (future, progress_rx)
    }

    /// Prefetches `target` for a standby: discovery, the admission check
    /// and the verified download of a pull, then the package is verified
    /// and kept, not activated (see `Store::keep`). Asked later to provide
    /// it, the node activates it without a download. Nothing is done when
    /// the newest admissible version already runs or is kept here.
    pub(crate) async fn prefetch(&self, target: &str) -> Result<Pulled, PullError> {
        let (progress, _) = watch::channel(PullProgress {
            stage: PullStage::Discovering,
            bytes: 0,
            total: 0,
            provider: None,
            started: Instant::now(),
        });
        let span = tracing::info_span!("prefetch", target);
        self.run(target, &progress, Mode::Keep)
            .instrument(span)
            .await
    }

    /// Pulls in progress: target and progress.
    pub(crate) fn in_progress(&self) -> Vec<(String, PullProgress)> {
        self.running
            .lock()
            .expect("pulls lock")
            .iter()
            .map(|(target, (_, progress))| (target.clone(), progress.borrow().clone()))
            .collect()
    }

    async fn run(
        &self,
        target: &str,
        progress: &watch::Sender<PullProgress>,
        mode: Mode,
    ) -> Result<Pulled, PullError> {
        let start = Instant::now();
        self.events.emit(NodeEvent::PullStarted {
            target: target.to_owned(),
        });
        let by_id = target
            .parse::<ContentId>()
            .ok()
            .filter(|_| target.len() == 64);
        if let Some(id) = by_id
            && let Some(have) = self.services.by_id(&id)
        {
            return Ok(already(have.package.manifest().name.clone(), id, start));
        }
        let lookup = self.discover(target, by_id, start).await;
        let discovery = start.elapsed();
        self.events.emit(NodeEvent::Found {
            target: target.to_owned(),
            providers: lookup.found.len() + lookup.untrusted.len(),
            elapsed: discovery,
        });
        if lookup.found.is_empty() && lookup.untrusted.is_empty() {
            return Err(PullError::NotFound(target.to_owned()));
        }
        let advert = self.choose(target, &lookup)?;
        let found = lookup.found;
        let id = advert.content_id();
        let name = advert.manifest().name.clone();
        if self.services.by_id(&id).is_some() {
            return Ok(already(name, id, start));
        }
        if mode == Mode::Keep && self.services.retired(&id).is_some() {
            return Ok(already(name, id, start));
        }
        // Retired here before: the kept package, verified again, without a
        // download.
        if let Some(kept) = self.services.retired(&id) {
            progress.send_modify(|p| p.stage = PullStage::Activating);
            self.services
                .run(kept.into_inner(), self.reshare)
                .await
                .map_err(|error| PullError::Activate {
                    target: target.to_owned(),
                    error: Box::new(error),
                })?;
            self.events.emit(NodeEvent::Pulled {
                name: name.clone(),
                content_id: id,
                elapsed: start.elapsed(),
            });
            return Ok(already(name, id, start));
        }
        let providers: Vec<PeerId> = found
            .iter()
            .filter(|f| f.advert.content_id() == id)
            .map(|f| f.peer)
            .collect();
        progress.send_modify(|p| {
            p.stage = PullStage::Downloading;
            p.total = advert.component_len();
        });
        let download_start = Instant::now();
        // Resumed from the blocks a previous run saved, if any.
        let download = Arc::new(Mutex::new(self.partials.resume(
            &id,
            advert.component_hash(),
            advert.component_len(),
        )));
        progress.send_modify(|p| p.bytes = download.lock().expect("download lock").received());
        // A node that will not re-share does not serve partial blocks
        // either, nor does a prefetch (it provides nothing).
        let offer = (self.config.strategy == Strategy::Swarm
            && mode == Mode::Activate
            && self.uploads.shares_partial()
            && self.reshare)
            .then(|| self.uploads.offer_partial(id, download.clone()));
        if offer.is_some() {
            self.client.start_providing(keys::package_key(&id.0)).await;
        }
        let fetch = Fetch {
            target,
            id,
            download: &download,
            partials: &self.partials,
            client: &self.client,
            config: &self.config,
            bans: &self.bans,
            metrics: &self.metrics,
            events: &self.events,
            progress,
            start,
            first_byte: std::sync::OnceLock::new(),
        };
        let downloaded = match self.config.strategy {
            Strategy::Swarm => fetch.swarm(providers).await,
            Strategy::Sequential => fetch.sequential(providers).await,
        };
        let sources = match downloaded {
            Ok(sources) => sources,
            Err(e) => {
                drop(offer);
                self.withdraw_partial(&id).await;
                return Err(e);
            }
        };
        let download_time = download_start.elapsed();
        let first_byte = fetch.first_byte.get().map(|t| t.duration_since(start));
        let paths = self.paths(&sources).await;
        let component = download
            .lock()
            .expect("download lock")
            .bytes()
            .expect("a finished download holds every block")
            .to_vec();
        let bytes = component.len() as u64;
        self.events.emit(NodeEvent::Downloaded {
            name: name.clone(),
            bytes,
            from: sources.clone(),
            elapsed: download_time,
        });
        if mode == Mode::Keep {
            self.partials.remove(&id);
            let verified = Package::from_parts(advert, component)
                .verify()
                .map_err(|e| PullError::Activate {
                    target: target.to_owned(),
                    error: Box::new(NodeError::Activate(e.into())),
                })?;
            self.services
                .keep(&verified)
                .map_err(|error| PullError::Activate {
                    target: target.to_owned(),
                    error: Box::new(error),
                })?;
            tracing::info!(package = %id.short(), bytes, "prefetched: verified and kept, not running");
            self.events.emit(NodeEvent::Prefetched {
                name: name.clone(),
                content_id: id,
                bytes,
            });
            return Ok(Pulled {
                name,
                content_id: id,
                discovery,
                download: download_time,
                deploy: start.elapsed(),
                bytes,
                sources,
                paths,
                first_byte,
                downloaded: true,
            });
        }
        progress.send_modify(|p| p.stage = PullStage::Activating);
        // The blocks stay served until the service itself is.
        let activated = self
            .services
            .run(Package::from_parts(advert, component), self.reshare)
            .await;
        drop(offer);
        self.partials.remove(&id);
        if let Err(error) = activated {
            self.withdraw_partial(&id).await;
            return Err(PullError::Activate {
                target: target.to_owned(),
                error: Box::new(error),
            });
        }
        let deploy = start.elapsed();
        self.events.emit(NodeEvent::Pulled {
            name: name.clone(),
            content_id: id,
            elapsed: deploy,
        });
        Ok(Pulled {
            name,
            content_id: id,
            discovery,
            download: download_time,
            deploy,
            bytes,
            sources,
            paths,
            first_byte,
            downloaded: true,
        })
    }

    /// How this node is connected to each of `sources`.
    async fn paths(&self, sources: &[PeerId]) -> Vec<String> {
        let connections = self
            .client
            .info()
            .await
            .map(|i| i.connections)
            .unwrap_or_default();
        sources
            .iter()
            .map(|peer| {
                let mine: Vec<_> = connections.iter().filter(|c| c.peer == *peer).collect();
                let path = mine
                    .iter()
                    .find(|c| !c.relayed)
                    .or(mine.first())
                    .map(|c| {
                        let kind = if c.relayed { "relayed" } else { "direct" };
                        format!("{kind} {}", c.remote)
                    })
                    .unwrap_or_else(|| "disconnected".into());
                format!("{peer} {path}")
            })
            .collect()
    }

    /// The paper's rule: an empty result vector means discovering again
    /// (waiting longer each time), until the pull's time is up.
    async fn discover(&self, target: &str, by_id: Option<ContentId>, start: Instant) -> Lookup {
        let rediscover = self.config.rediscover();
        let mut round = 0;
        loop {
            let found = match by_id {
                Some(id) => self.discovery.find_package(id).await,
                None => self.discovery.find(target, false).await,
            };
            let delay = rediscover.delay(round);
            let any = !found.found.is_empty() || !found.untrusted.is_empty();
            if any || start.elapsed() + delay >= self.config.total_timeout {
                return found;
            }
            tracing::debug!(?delay, "no provider found yet; discovering again");
            tokio::time::sleep(delay).await;
            round += 1;
        }
    }

    /// Withdraws the partial-availability record of a failed download,
    /// unless the package runs here anyway.
    async fn withdraw_partial(&self, id: &ContentId) {
        if self.services.by_id(id).is_none() {
            self.client.stop_providing(keys::package_key(&id.0)).await;
        }
    }

    /// The paper's check before download: the newest version this node
    /// admits ([`crate::policy::Policy::admit`]); every refusal otherwise.
    fn choose(&self, target: &str, lookup: &Lookup) -> Result<Advert, PullError> {
        let mut refused = Vec::new();
        let mut seen = HashSet::new();
        for candidate in &lookup.found {
            let advert = &candidate.advert;
            if !seen.insert(advert.content_id()) {
                continue;
            }
            match self.services.policy().admit(advert) {
                Ok(_) => return Ok(advert.clone()),
                Err(refusals) => refused.push(RefusedVersion {
                    name: advert.manifest().name.clone(),
                    version: advert.manifest().version.to_string(),
                    refusals,
                }),
            }
        }
        // Adverts of untrusted publishers were not read: one refusal per
        // publisher, without a version.
        let mut publishers = HashSet::new();
        for untrusted in &lookup.untrusted {
            if publishers.insert(untrusted.publisher) {
                refused.push(RefusedVersion {
                    name: target.to_owned(),
                    version: "(advert not read)".into(),
                    refusals: Refusals(vec![Refusal::UntrustedPublisher(untrusted.publisher)]),
                });
            }
        }
        Err(PullError::Refused {
            target: target.to_owned(),
            refused,
        })
    }
}

fn already(name: String, content_id: ContentId, start: Instant) -> Pulled {
    Pulled {
        name,
        content_id,
        discovery: start.elapsed(),
        download: Duration::ZERO,
        deploy: start.elapsed(),
        bytes: 0,
        sources: Vec::new(),
        paths: Vec::new(),
        first_byte: None,
        downloaded: false,
    }
}

/// How often saved unfinished downloads are swept (also at start).
const SWEEP_SAVED_EVERY: Duration = Duration::from_secs(3600);

/// Sweeps the saved unfinished downloads at start and then hourly, for as
/// long as the node lives.
pub(crate) async fn sweep_saved_downloads(pulls: std::sync::Weak<Pulls>) {
    loop {
        let Some(pulls) = pulls.upgrade() else {
            return;
        };
        let swept =
            tokio::task::spawn_blocking(move || pulls.partials.sweep(std::time::SystemTime::now()))
                .await;
        if let Ok(swept) = swept
            && swept.removed > 0
        {
            tracing::info!(
                removed = swept.removed,
                bytes = swept.bytes,
                "saved downloads swept"
            );
        }
        tokio::time::sleep(SWEEP_SAVED_EVERY).await;
    }
}
