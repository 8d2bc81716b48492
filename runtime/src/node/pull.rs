//! Pull (the paper's downloadRPS + activation): find the providers, check
//! the signed advert against this node *before* downloading anything, fetch
//! the component block by block with every block verified on arrival,
//! retrying across providers, then verify, audit, self-test, activate,
//! store and provide it.
//!
//! Retry policy, the paper's made precise. With `n` providers in the result
//! vector each gets `ceil(attempt_budget / n)` attempts (at least 1, at most
//! `attempt_budget`), the k-th with a timeout of `base_timeout * 2^k`: few
//! providers, more and longer attempts each. A provider that answers `Busy`
//! or `NotFound` is skipped at once; one that sends a block that does not
//! verify, declares another size or sends extra data is banned for that
//! package for the life of the node. The download resumes from the first
//! missing verified block with the next provider. When the vector is
//! exhausted the node discovers again, after `rediscover_delay`, doubled
//! (up to 8 s) after each round that brought no data, and gives up after
//! `total_timeout` with every provider's outcome in the error.
//! Concurrent pulls of the same target share one download.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::watch;

use super::transfer::{BadData, Download};
use super::{Found, Node, NodeEvent};
use crate::net::PeerId;
use crate::net::protocol::{MAX_BLOCKS_PER_REQUEST, TransferRequest, TransferResponse};
use crate::package::{Advert, ContentId, Package};

/// How a component is downloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Blocks from several providers at once, rarest first, serving verified
    /// blocks before the download completes ([`super::swarm`]).
    Swarm,
    /// The paper's approach: the whole file from one provider at a time,
    /// with its retry and rediscovery policy (this module).
    Sequential,
}

/// Longest wait between two rounds of the sequential download.
const MAX_REDISCOVER_DELAY: Duration = Duration::from_secs(8);

/// Packages for which banned peers are remembered.
const MAX_BANNED_PACKAGES: usize = 256;
/// Banned peers remembered per package.
const MAX_BANNED_PER_PACKAGE: usize = 4096;

/// Pull settings. Defaults: swarm strategy with up to 8 requests in flight,
/// 4 blocks (64 KiB) per request, a 4-attempt budget per result vector, 5 s
/// base timeout per request, 5 s advert timeout, 500 ms before
/// rediscovery, give up after 2 minutes.
#[derive(Clone, Debug)]
pub struct PullConfig {
    pub strategy: Strategy,
    /// Requests in flight at once (swarm strategy), one per provider.
    pub parallel: usize,
    pub blocks_per_request: u32,
    pub attempt_budget: u32,
    pub base_timeout: Duration,
    pub advert_timeout: Duration,
    pub rediscover_delay: Duration,
    pub total_timeout: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Swarm,
            parallel: 8,
            blocks_per_request: 4,
            attempt_budget: 4,
            base_timeout: Duration::from_secs(5),
            advert_timeout: Duration::from_secs(5),
            rediscover_delay: Duration::from_millis(500),
            total_timeout: Duration::from_secs(120),
        }
    }
}

impl PullConfig {
    /// Attempts per provider for a result vector of `providers` entries.
    pub fn attempts_per_provider(&self, providers: usize) -> u32 {
        let budget = self.attempt_budget.max(1);
        (budget as usize)
            .div_ceil(providers.max(1))
            .clamp(1, budget as usize) as u32
    }

    /// Timeout of the `attempt`-th (0-based) attempt with one provider.
    pub fn attempt_timeout(&self, attempt: u32) -> Duration {
        self.base_timeout.saturating_mul(1u32 << attempt.min(6))
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no provider of {0} was found")]
    NotFound(String),
    #[error("{target}: refused before downloading anything: {}", .reasons.join("; "))]
    Refused {
        target: String,
        reasons: Vec<String>,
    },
    #[error("{target}: gave up after {elapsed:.1?}: {}", .attempts.join("; "))]
    GaveUp {
        target: String,
        elapsed: Duration,
        attempts: Vec<String>,
    },
    #[error("{target}: downloaded but not activated: {reason}")]
    Activate { target: String, reason: String },
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

/// A pull in progress that later callers join.
#[derive(Clone)]
pub(crate) struct SharedPull {
    pub(crate) future: Shared<BoxFuture<'static, Result<Pulled, Arc<PullError>>>>,
    pub(crate) progress: watch::Receiver<PullProgress>,
}

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
    /// False when the node already had it.
    pub downloaded: bool,
}

impl Node {
    /// Pulls a service by name (its newest acceptable version) or a package
    /// by content id (64 hex digits); joins an identical pull in progress.
    pub async fn pull(&self, target: &str) -> Result<Pulled, Arc<PullError>> {
        self.pull_with_progress(target).0.await
    }

    /// Like [`Node::pull`], also returning a progress receiver.
    pub fn pull_with_progress(
        &self,
        target: &str,
    ) -> (
        Shared<BoxFuture<'static, Result<Pulled, Arc<PullError>>>>,
        watch::Receiver<PullProgress>,
    ) {
        let mut pulls = self.inner.pulls.lock().expect("pulls lock");
        if let Some(shared) = pulls.get(target) {
            return (shared.future.clone(), shared.progress.clone());
        }
        let (progress_tx, progress_rx) = watch::channel(PullProgress {
            stage: PullStage::Discovering,
            bytes: 0,
            total: 0,
            provider: None,
            started: Instant::now(),
        });
        let node = self.clone();
        let key = target.to_owned();
        let future = async move {
            let result = node.run_pull(&key, &progress_tx).await.map_err(Arc::new);
            progress_tx.send_modify(|p| {
                p.stage = if result.is_ok() {
                    PullStage::Done
                } else {
                    PullStage::Failed
                }
            });
            node.inner.pulls.lock().expect("pulls lock").remove(&key);
            result
        }
        .boxed()
        .shared();
        pulls.insert(
            target.to_owned(),
            SharedPull {
                future: future.clone(),
                progress: progress_rx.clone(),
            },
        );
        // Drive it even if every caller goes away.
        tokio::spawn(future.clone());
        (future, progress_rx)
    }

    async fn run_pull(
        &self,
        target: &str,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<Pulled, PullError> {
        let start = Instant::now();
        self.emit(NodeEvent::PullStarted {
            target: target.to_owned(),
        });
        let by_id = target
            .parse::<ContentId>()
            .ok()
            .filter(|_| target.len() == 64);
        if let Some(id) = by_id
            && let Some(have) = self.service_by_id(&id)
        {
            return Ok(already(have.package.manifest().name.clone(), id, start));
        }
        // The paper's rule: an empty result vector means discovering again,
        // until the pull's time is up.
        let mut delay = self.inner.config.pull.rediscover_delay;
        let found = loop {
            let found = match by_id {
                Some(id) => self.find_package(id).await,
                None => self.find(target).await,
            };
            let out_of_time = start.elapsed() + delay >= self.inner.config.pull.total_timeout;
            if !found.is_empty() || out_of_time {
                break found;
            }
            tracing::debug!(target, ?delay, "no provider found yet; discovering again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        };
        let discovery = start.elapsed();
        self.emit(NodeEvent::Found {
            target: target.to_owned(),
            providers: found.len(),
            elapsed: discovery,
        });
        if found.is_empty() {
            return Err(PullError::NotFound(target.to_owned()));
        }
        let advert = self.choose(target, &found)?;
        let id = advert.content_id();
        let name = advert.manifest().name.clone();
        if self.service_by_id(&id).is_some() {
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
        let (component, sources) = self
            .download(target, &advert, providers, start, progress)
            .await?;
        let download = download_start.elapsed();
        let bytes = component.len() as u64;
        self.emit(NodeEvent::Downloaded {
            name: name.clone(),
            bytes,
            from: sources.clone(),
            elapsed: download,
        });
        progress.send_modify(|p| p.stage = PullStage::Activating);
        let package = Package::from_parts(advert, component);
        if let Err(e) = self.adopt(package).await {
            // Partial availability was announced during the download.
            self.inner
                .client
                .stop_providing(crate::net::keys::package_key(&id.0))
                .await;
            return Err(PullError::Activate {
                target: target.to_owned(),
                reason: e.to_string(),
            });
        }
        let deploy = start.elapsed();
        self.emit(NodeEvent::Pulled {
            name: name.clone(),
            content_id: id,
            elapsed: deploy,
        });
        Ok(Pulled {
            name,
            content_id: id,
            discovery,
            download,
            deploy,
            bytes,
            sources,
            downloaded: true,
        })
    }

    /// The paper's check before download: the newest version whose advert
    /// this node would accept (publisher trusted, requirements met,
    /// capabilities grantable). Refuses with every reason otherwise.
    fn choose(&self, target: &str, found: &[Found]) -> Result<Advert, PullError> {
        let policy = &self.inner.policy;
        let mut reasons = Vec::new();
        let mut seen = HashSet::new();
        for candidate in found {
            let advert = &candidate.advert;
            if !seen.insert(advert.content_id()) {
                continue;
            }
            let mut refusals = policy
                .evaluate(advert.manifest(), &advert.publisher())
                .refusals;
            if advert.component_len() > policy.limits.max_component_size {
                refusals.push(format!(
                    "component is {} bytes; this node accepts at most {}",
                    advert.component_len(),
                    policy.limits.max_component_size
                ));
            }
            if refusals.is_empty() {
                return Ok(advert.clone());
            }
            reasons.push(format!(
                "{} {}: {}",
                advert.manifest().name,
                advert.manifest().version,
                refusals.join(", ")
            ));
        }
        Err(PullError::Refused {
            target: target.to_owned(),
            reasons,
        })
    }

    pub(crate) fn is_banned(&self, id: &ContentId, peer: &PeerId) -> bool {
        self.inner
            .banned
            .lock()
            .expect("banned lock")
            .get(id)
            .is_some_and(|b| b.contains(peer))
    }

    pub(crate) fn ban(&self, id: ContentId, peer: PeerId, reason: &BadData) {
        tracing::warn!(%peer, package = %id.short(), %reason, "banning provider for this package");
        {
            let mut banned = self.inner.banned.lock().expect("banned lock");
            if banned.len() >= MAX_BANNED_PACKAGES && !banned.contains_key(&id) {
                banned.clear();
            }
            let peers = banned.entry(id).or_default();
            // Peer ids cost nothing to make: keep the list bounded.
            if peers.len() < MAX_BANNED_PER_PACKAGE {
                peers.insert(peer);
            }
        }
        self.emit(NodeEvent::PeerBanned {
            peer,
            content_id: id,
            reason: reason.to_string(),
        });
    }

    /// Downloads the component with the configured strategy.
    async fn download(
        &self,
        target: &str,
        advert: &Advert,
        vector: Vec<PeerId>,
        start: Instant,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(Vec<u8>, Vec<PeerId>), PullError> {
        match self.inner.config.pull.strategy {
            Strategy::Swarm => {
                self.download_swarm(target, advert, vector, start, progress)
                    .await
            }
            Strategy::Sequential => {
                self.download_sequential(target, advert, vector, start, progress)
                    .await
            }
        }
    }

    /// Downloads the component with the retry policy of this module.
    async fn download_sequential(
        &self,
        target: &str,
        advert: &Advert,
        mut vector: Vec<PeerId>,
        start: Instant,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(Vec<u8>, Vec<PeerId>), PullError> {
        let config = &self.inner.config.pull;
        let id = advert.content_id();
        let mut download = Download::new(advert.component_hash(), advert.component_len());
        let per_request = config.blocks_per_request.clamp(1, MAX_BLOCKS_PER_REQUEST);
        let mut attempts_log = Vec::new();
        let mut sources = Vec::new();
        let mut delay = config.rediscover_delay / 2;
        let mut received_before_round = 0;
        loop {
            vector.retain(|p| !self.is_banned(&id, p) && *p != self.peer_id());
            super::shuffle(&mut vector);
            let attempts = config.attempts_per_provider(vector.len());
            for peer in vector.drain(..) {
                progress.send_modify(|p| p.provider = Some(peer));
                let outcome = self
                    .download_from(
                        peer,
                        &id,
                        &mut download,
                        per_request,
                        attempts,
                        start,
                        progress,
                    )
                    .await;
                match outcome {
                    Attempt::Complete => {
                        sources.push(peer);
                        return Ok((download.into_bytes(), sources));
                    }
                    Attempt::Moved { verified, reason } => {
                        if verified > 0 {
                            sources.push(peer);
                        }
                        attempts_log.push(format!("{peer}: {reason}"));
                    }
                    Attempt::Bad { verified, reason } => {
                        if verified > 0 {
                            sources.push(peer);
                        }
                        self.ban(id, peer, &reason);
                        attempts_log.push(format!("{peer}: {reason} (banned)"));
                    }
                    Attempt::OutOfTime => {
                        return Err(PullError::GaveUp {
                            target: target.to_owned(),
                            elapsed: start.elapsed(),
                            attempts: attempts_log,
                        });
                    }
                }
            }
            // Every provider declined or failed without a byte: wait longer
            // before the next round, so that a crowd of waiting downloaders
            // does not flood the few providers.
            if download.received() > received_before_round {
                delay = config.rediscover_delay;
            } else {
                delay = (delay * 2).min(MAX_REDISCOVER_DELAY);
            }
            received_before_round = download.received();
            if start.elapsed() + delay >= config.total_timeout {
                attempts_log.push(format!(
                    "{} of {} bytes verified",
                    download.received(),
                    download.size()
                ));
                return Err(PullError::GaveUp {
                    target: target.to_owned(),
                    elapsed: start.elapsed(),
                    attempts: attempts_log,
                });
            }
            // The vector is exhausted: discover again.
            tokio::time::sleep(delay).await;
            vector = self
                .inner
                .client
                .get_providers(crate::net::keys::package_key(&id.0))
                .await
                .into_iter()
                .collect();
            tracing::debug!(package = %id.short(), providers = vector.len(), "rediscovered");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn download_from(
        &self,
        peer: PeerId,
        id: &ContentId,
        download: &mut Download,
        per_request: u32,
        attempts: u32,
        start: Instant,
        progress: &watch::Sender<PullProgress>,
    ) -> Attempt {
        let config = &self.inner.config.pull;
        let mut attempt = 0;
        let mut verified = 0u64;
        while let Some((first, blocks)) = download.next_missing(per_request) {
            let remaining = config.total_timeout.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                return Attempt::OutOfTime;
            }
            let timeout = config.attempt_timeout(attempt).min(remaining);
            let request = TransferRequest::Blocks {
                content_id: id.0,
                first_block: first,
                blocks,
            };
            let response =
                tokio::time::timeout(timeout, self.inner.client.request_transfer(peer, request))
                    .await;
            match response {
                Ok(Ok(TransferResponse::Data { size, encoded, .. })) => {
                    match download.accept(first, blocks, size, &encoded) {
                        Ok(added) => {
                            verified += added;
                            let received = download.received();
                            progress.send_modify(|p| p.bytes = received);
                        }
                        Err(reason) => return Attempt::Bad { verified, reason },
                    }
                }
                Ok(Ok(TransferResponse::Busy { .. })) => {
                    return Attempt::Moved {
                        verified,
                        reason: "busy".into(),
                    };
                }
                Ok(Ok(TransferResponse::NotFound | TransferResponse::Have { .. })) => {
                    return Attempt::Moved {
                        verified,
                        reason: "does not have the blocks".into(),
                    };
                }
                Ok(Err(error)) => {
                    attempt += 1;
                    if attempt >= attempts {
                        return Attempt::Moved {
                            verified,
                            reason: format!("{error} ({attempt} attempts)"),
                        };
                    }
                }
                Err(_) => {
                    attempt += 1;
                    if attempt >= attempts {
                        return Attempt::Moved {
                            verified,
                            reason: format!("stalled for {timeout:.1?} ({attempt} attempts)"),
                        };
                    }
                }
            }
        }
        Attempt::Complete
    }
}

enum Attempt {
    Complete,
    /// Try the next provider (keeping every verified block).
    Moved {
        verified: u64,
        reason: String,
    },
    /// The provider sent bad data (after `verified` good bytes).
    Bad {
        verified: u64,
        reason: BadData,
    },
    OutOfTime,
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
        downloaded: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_providers_get_more_and_longer_attempts() {
        let config = PullConfig::default();
        assert_eq!(config.attempts_per_provider(1), 4);
        assert_eq!(config.attempts_per_provider(2), 2);
        assert_eq!(config.attempts_per_provider(3), 2);
        assert_eq!(config.attempts_per_provider(10), 1);
        assert_eq!(config.attempts_per_provider(0), 4);
        assert!(config.attempt_timeout(2) == config.attempt_timeout(0) * 4);
    }
}
