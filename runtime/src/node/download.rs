//! Downloading one component over the network, every block verified as it
//! arrives: the swarm strategy carries out the decisions of the pure
//! [`SwarmCore`] (requests, cancellations, lookups, bans) and turns peers'
//! answers into its events; the sequential strategy is the paper's
//! approach, one provider at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{AbortHandle, BoxFuture, abortable};
use futures::stream::{FuturesUnordered, StreamExt};
use rand::seq::SliceRandom;
use tokio::sync::watch;
use tracing::Instrument;

use super::config::PullConfig;
use super::events::{Events, NodeEvent};
use super::partial::Partials;
use super::pull::{Bans, PullError, PullProgress};
use crate::blocks::{BadData, Bitmap, Download, MAX_BLOCKS_PER_REQUEST};
use crate::net::protocol::{MAX_PEX_PEERS, PeerInfo, TransferRequest, TransferResponse};
use crate::net::{Client, Multiaddr, PeerId, RequestError, keys};
use crate::package::ContentId;
use crate::swarm::{Action, Answer, Ask, Event, Holdings, RequestId, SwarmCore};

/// How the swarm core reaches a peer: addresses to dial if not connected.
type Contact = Vec<Multiaddr>;

type Reply = (
    RequestId,
    PeerId,
    Ask,
    Result<TransferResponse, RequestError>,
);

/// One component being downloaded by one pull.
pub(crate) struct Fetch<'a> {
    pub(crate) target: &'a str,
    pub(crate) id: ContentId,
    pub(crate) download: &'a Arc<Mutex<Download>>,
    /// Where the verified blocks are saved as they arrive.
    pub(crate) partials: &'a Partials,
    pub(crate) client: &'a Client,
    pub(crate) config: &'a PullConfig,
    pub(crate) bans: &'a Bans,
    pub(crate) metrics: &'a super::metrics::Metrics,
    pub(crate) events: &'a Events,
    pub(crate) progress: &'a watch::Sender<PullProgress>,
    /// When the pull started (its deadline counts from here).
    pub(crate) start: Instant,
    /// When the first verified block arrived.
    pub(crate) first_byte: std::sync::OnceLock<Instant>,
}

impl Fetch<'_> {
    /// Downloads from the swarm of the package's providers; returns the
    /// providers that sent verified blocks, most first.
    pub(crate) async fn swarm(&self, initial: Vec<PeerId>) -> Result<Vec<PeerId>, PullError> {
        let span = tracing::debug_span!("download", package = %self.id.short(), strategy = "swarm");
        self.run_swarm(initial).instrument(span).await
    }

    async fn run_swarm(&self, initial: Vec<PeerId>) -> Result<Vec<PeerId>, PullError> {
        let blocks = self.download.lock().expect("download lock").blocks();
        let config = self.config;
        let mut params = config.swarm_params(blocks);
        params.deadline = config.total_timeout.saturating_sub(self.start.elapsed());
        let providers = self.usable(initial);
        tracing::debug!(blocks, providers = providers.len(), "downloading");
        let mut core = SwarmCore::new(params, providers, Instant::now(), rand::random());
        core.already_have(self.download.lock().expect("download lock").bitmap());
        let mut replies: FuturesUnordered<BoxFuture<'static, Option<Reply>>> =
            FuturesUnordered::new();
        let mut cancel: HashMap<RequestId, AbortHandle> = HashMap::new();
        let mut lookup: Option<BoxFuture<'static, Vec<PeerId>>> = None;
        loop {
            while let Some(action) = core.poll_action(Instant::now()) {
                match action {
                    Action::Request {
                        id,
                        peer,
                        contact,
                        ask,
                    } => {
                        if let Ask::Blocks { .. } = ask {
                            self.progress.send_modify(|p| p.provider = Some(peer));
                        }
                        let request = self.request(&ask);
                        let span = tracing::debug_span!("request", %peer, ?ask);
                        let client = self.client.clone();
                        let size = self.size();
                        let (reply, handle) = abortable(
                            async move {
                                let reply = client
                                    .request_transfer_at(peer, contact, request, size)
                                    .await;
                                let answer = reply.as_ref().map_or("failed", |r| r.kind());
                                tracing::debug!(answer, "answered");
                                reply
                            }
                            .instrument(span),
                        );
                        cancel.insert(id, handle);
                        replies.push(
                            async move { reply.await.ok().map(|r| (id, peer, ask, r)) }.boxed(),
                        );
                    }
                    Action::Cancel { id } => {
                        if let Some(handle) = cancel.remove(&id) {
                            handle.abort();
                        }
                    }
                    Action::Discover { limit } => {
                        let client = self.client.clone();
                        let key = keys::package_key(&self.id.0);
                        lookup = Some(
                            async move {
                                let found = client.get_providers_limited(key, limit).await;
                                found.into_iter().collect()
                            }
                            .boxed(),
                        );
                    }
                    Action::Ban { peer, reason } => self.ban(peer, reason),
                    Action::Complete => {
                        tracing::debug!(sources = core.sources().len(), "downloaded");
                        return Ok(core.sources());
                    }
                    Action::GiveUp => {
                        let mut attempts = core.outcomes();
                        attempts.push(self.verified_summary());
                        return Err(self.gave_up(attempts));
                    }
                }
            }
            let received = self.download.lock().expect("download lock").received();
            self.progress.send_modify(|p| p.bytes = received);
            let wake = core.next_timeout().unwrap_or_else(Instant::now);
            let found = async {
                match lookup.as_mut() {
                    Some(future) => future.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(reply) = replies.next() => {
                    if let Some((id, peer, ask, response)) = reply {
                        cancel.remove(&id);
                        let answer = self.answer(peer, &ask, response);
                        core.handle(Instant::now(), Event::Answered { id, answer });
                    }
                }
                found = found => {
                    lookup = None;
                    let found = self.usable(found);
                    core.handle(Instant::now(), Event::Discovered(found));
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Peers worth asking, with the addresses this node knows for them.
    fn usable(&self, peers: Vec<PeerId>) -> Vec<(PeerId, Contact)> {
        let me = self.client.peer_id();
        peers
            .into_iter()
            .filter(|p| *p != me && !self.bans.contains(&self.id, p))
            .map(|p| (p, self.client.known_addresses(&p)))
            .collect()
    }

    /// Verifies blocks `first .. first + count` from a peer into the
    /// download and saves the ones that checked out (to resume from).
    fn accept(
        &self,
        download: &mut Download,
        first: u64,
        count: u32,
        size: u64,
        encoded: &[u8],
    ) -> Result<crate::blocks::Accepted, crate::blocks::Rejected> {
        let accepted = download.accept(first, count, size, encoded);
        let kept = match &accepted {
            Ok(accepted) => accepted,
            Err(rejected) => &rejected.kept,
        };
        self.metrics.blocks(kept.verified, accepted.is_err());
        if kept.new_bytes > 0 {
            self.first_byte.get_or_init(Instant::now);
            self.partials.save(&self.id, download, first, kept.verified);
        }
        accepted
    }

    fn request(&self, ask: &Ask) -> TransferRequest {
        match ask {
            Ask::Blocks { first, count } => TransferRequest::Blocks {
                content_id: self.id.0,
                first_block: *first,
                blocks: *count,
                // A swarm does not wait in anyone's line: it asks others.
                queue_ms: 0,
            },
            Ask::Want { wanted, max } => TransferRequest::Want {
                content_id: self.id.0,
                wanted: wanted.encode(),
                blocks: *max,
            },
        }
    }

    /// A peer's response as the swarm core's [`Answer`]: data is verified
    /// here, block by block, against the advert's component hash.
    fn answer(
        &self,
        from: PeerId,
        ask: &Ask,
        response: Result<TransferResponse, RequestError>,
    ) -> Answer<PeerId, Contact> {
        match response {
            Ok(TransferResponse::Data {
                size,
                first_block,
                blocks,
                encoded,
                bitmap,
                peers,
            }) => {
                let mut download = self.download.lock().expect("download lock");
                let accepted = if ask.admits(first_block, blocks) {
                    self.accept(&mut download, first_block, blocks, size, &encoded)
                } else {
                    Err(crate::blocks::Rejected {
                        reason: BadData::OutOfRange,
                        kept: Default::default(),
                    })
                };
                let holdings = if bitmap.is_empty() {
                    Holdings::All
                } else {
                    Bitmap::decode(&bitmap, download.blocks())
                        .map_or(Holdings::Unknown, Holdings::Some)
                };
                drop(download);
                let (accepted, bad) = match accepted {
                    Ok(accepted) => (accepted, None),
                    Err(rejected) => (rejected.kept, Some(rejected.reason.to_string())),
                };
                Answer::Blocks {
                    first: first_block,
                    verified: accepted.verified,
                    new_bytes: accepted.new_bytes,
                    bad,
                    holdings,
                    hints: self.hints(from, &peers),
                }
            }
            Ok(TransferResponse::Busy { peers }) => Answer::Busy {
                hints: self.hints(from, &peers),
            },
            Ok(TransferResponse::Queued { .. }) => Answer::Busy { hints: Vec::new() },
            Ok(TransferResponse::NotFound) => Answer::NotFound,
            Ok(TransferResponse::Have { .. } | TransferResponse::Left) => {
                Answer::Unexpected("answered with Have or Left".into())
            }
            Err(RequestError::Timeout) => Answer::Failed("stalled: no answer in time".into()),
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    /// Peers named in `from`'s answer (peer exchange), with the addresses
    /// this node may dial (global ones, unless in local mode).
    fn hints(&self, from: PeerId, peers: &[PeerInfo]) -> Vec<(PeerId, Contact)> {
        let me = self.client.peer_id();
        peers
            .iter()
            .take(MAX_PEX_PEERS)
            .filter_map(PeerInfo::decode)
            .filter(|(peer, _)| *peer != me && *peer != from && !self.bans.contains(&self.id, peer))
            .filter_map(|(peer, addresses)| {
                let addresses = self.client.dialable_hints(addresses);
                (!addresses.is_empty()).then_some((peer, addresses))
            })
            .collect()
    }

    fn ban(&self, peer: PeerId, reason: String) {
        tracing::warn!(%peer, package = %self.id.short(), %reason, "banning provider for this package");
        self.bans.ban(self.id, peer);
        self.events.emit(NodeEvent::PeerBanned {
            peer,
            content_id: self.id,
            reason,
        });
    }

    fn verified_summary(&self) -> String {
        let download = self.download.lock().expect("download lock");
        format!(
            "{} of {} bytes verified",
            download.received(),
            download.size()
        )
    }

    /// The component's size: how much the download moves in all.
    fn size(&self) -> u64 {
        self.download.lock().expect("download lock").size()
    }

    fn gave_up(&self, attempts: Vec<String>) -> PullError {
        PullError::GaveUp {
            target: self.target.to_owned(),
            elapsed: self.start.elapsed(),
            attempts,
        }
    }

    /// The paper's approach: the whole file from one provider at a time.
    /// With `n` providers in the result vector each gets
    /// [`PullConfig::attempts_per_provider`] attempts, the k-th with a
    /// timeout of `attempt_timeout().delay(k)`. A provider that answers
    /// `Busy` or `NotFound` is skipped at once; one that sends a block that
    /// does not verify is banned. The download resumes from the first
    /// missing verified block with the next provider. When the vector is
    /// exhausted the node discovers again after `rediscover().delay(k)`, `k`
    /// counting the rounds in a row that brought no data, less one.
    pub(crate) async fn sequential(&self, vector: Vec<PeerId>) -> Result<Vec<PeerId>, PullError> {
        let span =
            tracing::debug_span!("download", package = %self.id.short(), strategy = "sequential");
        self.run_sequential(vector).instrument(span).await
    }

    async fn run_sequential(&self, mut vector: Vec<PeerId>) -> Result<Vec<PeerId>, PullError> {
        let config = self.config;
        let me = self.client.peer_id();
        let mut attempts_log = Vec::new();
        let mut sources = Vec::new();
        let mut fruitless_rounds: u32 = 0;
        loop {
            let received_before = self.download.lock().expect("download lock").received();
            vector.retain(|p| *p != me && !self.bans.contains(&self.id, p));
            vector.shuffle(&mut rand::thread_rng());
            let attempts = config.attempts_per_provider(vector.len());
            for peer in vector.drain(..) {
                self.progress.send_modify(|p| p.provider = Some(peer));
                let outcome = self
                    .fetch_from(peer, attempts)
                    .instrument(tracing::debug_span!("provider", %peer))
                    .await;
                // Done with this provider, one way or another: its upload
                // slot, or our place in its queue, goes to the next peer.
                self.leave(peer);
                match outcome {
                    Attempt::Complete { verified } => {
                        if verified > 0 {
                            sources.push(peer);
                        }
                        return Ok(sources);
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
                        attempts_log.push(format!("{peer}: {reason} (banned)"));
                        self.ban(peer, reason.to_string());
                    }
                    Attempt::OutOfTime => return Err(self.gave_up(attempts_log)),
                }
            }
            // Every provider declined or failed: wait longer after each
            // round without data, so that a crowd of waiting downloaders
            // does not flood the few providers.
            let received = self.download.lock().expect("download lock").received();
            if received > received_before {
                fruitless_rounds = 0;
            } else {
                fruitless_rounds += 1;
            }
            let delay = config
                .rediscover()
                .delay(fruitless_rounds.saturating_sub(1));
            if self.start.elapsed() + delay >= config.total_timeout {
                attempts_log.push(self.verified_summary());
                return Err(self.gave_up(attempts_log));
            }
            tokio::time::sleep(delay).await;
            vector = self
                .client
                .get_providers(keys::package_key(&self.id.0))
                .await
                .into_iter()
                .collect();
            tracing::debug!(providers = vector.len(), "rediscovered");
        }
    }

    /// Tells `peer` this node is done with the package there (best effort:
    /// an unanswered `Leave` only means the slot idles out).
    fn leave(&self, peer: PeerId) {
        let client = self.client.clone();
        let request = TransferRequest::Leave {
            content_id: self.id.0,
        };
        let timeout = self.config.base_timeout;
        let size = self.size();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(timeout, client.request_transfer(peer, request, size)).await;
        });
    }

    /// Fetches the missing blocks from `peer`, in order, as one transfer:
    /// once the provider sends data, two requests are in flight to it (the
    /// next is waiting at the provider while one answer travels, so the
    /// round-trip time does not bound the rate); while it does not, one.
    /// More would only queue behind the provider's uplink and time out.
    ///
    /// A provider with upload slots may put this node in line: the request
    /// then waits there for up to half its timeout and comes back `Queued`,
    /// and is sent again at once (or when the provider says). Waiting in
    /// line is not a failed attempt, but it is bounded like the attempts: a
    /// line that does not reach this node within the time its attempts
    /// would take (the sum of their timeouts) is left for other providers.
    async fn fetch_from(&self, peer: PeerId, attempts: u32) -> Attempt {
        let config = self.config;
        let per_request = config.blocks_per_request.clamp(1, MAX_BLOCKS_PER_REQUEST);
        let timeouts = config.attempt_timeout();
        let patience: Duration = (0..attempts).map(|k| timeouts.delay(k)).sum();
        // When this node started waiting in the provider's line.
        let mut in_line: Option<Instant> = None;
        let mut attempt = 0;
        let mut verified = 0u64;
        let mut window = 1;
        let mut retry_at: Option<Instant> = None;
        // The ranges asked for and not answered yet, and their answers.
        let mut asked: Vec<(u64, u32)> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        loop {
            let remaining = config.total_timeout.saturating_sub(self.start.elapsed());
            if remaining.is_zero() {
                return Attempt::OutOfTime;
            }
            if retry_at.is_some_and(|t| Instant::now() >= t) {
                retry_at = None;
            }
            while asked.len() < window && retry_at.is_none() {
                let next = self
                    .download
                    .lock()
                    .expect("download lock")
                    .next_missing_except(per_request, |b| {
                        asked
                            .iter()
                            .any(|(first, n)| (*first..first + u64::from(*n)).contains(&b))
                    });
                let Some((first, blocks)) = next else { break };
                let timeout = timeouts.delay(attempt).min(remaining);
                let request = TransferRequest::Blocks {
                    content_id: self.id.0,
                    first_block: first,
                    blocks,
                    queue_ms: u32::try_from((timeout / 2).as_millis()).unwrap_or(u32::MAX),
                };
                asked.push((first, blocks));
                let client = self.client.clone();
                let size = self.size();
                in_flight.push(async move {
                    let response =
                        tokio::time::timeout(timeout, client.request_transfer(peer, request, size))
                            .await;
                    (first, blocks, timeout, response)
                });
            }
            if asked.is_empty() {
                match retry_at {
                    Some(t) => {
                        tokio::time::sleep_until(t.into()).await;
                        continue;
                    }
                    None => return Attempt::Complete { verified },
                }
            }
            let Some((first, blocks, timeout, response)) = in_flight.next().await else {
                continue;
            };
            asked.retain(|(f, _)| *f != first);
            let failure = match response {
                Ok(Ok(TransferResponse::Data { size, encoded, .. })) => {
                    let mut download = self.download.lock().expect("download lock");
                    match self.accept(&mut download, first, blocks, size, &encoded) {
                        Ok(accepted) => {
                            verified += accepted.new_bytes;
                            let received = download.received();
                            self.progress.send_modify(|p| p.bytes = received);
                            window = SEQUENTIAL_WINDOW;
                            in_line = None;
                            continue;
                        }
                        Err(rejected) => {
                            return Attempt::Bad {
                                verified: verified + rejected.kept.new_bytes,
                                reason: rejected.reason,
                            };
                        }
                    }
                }
                Ok(Ok(TransferResponse::Busy { .. })) => {
                    return Attempt::Moved {
                        verified,
                        reason: "busy".into(),
                    };
                }
                Ok(Ok(TransferResponse::Queued { ahead, retry_ms })) => {
                    let since = *in_line.get_or_insert_with(Instant::now);
                    if since.elapsed() >= patience {
                        return Attempt::Moved {
                            verified,
                            reason: format!(
                                "still {ahead} peers ahead in line after {patience:.1?}"
                            ),
                        };
                    }
                    // In line (again): one request at a time until served.
                    window = 1;
                    let retry = Duration::from_millis(retry_ms.into()).min(MAX_QUEUED_RETRY);
                    retry_at = Some(Instant::now() + retry);
                    continue;
                }
                Ok(Ok(
                    TransferResponse::NotFound
                    | TransferResponse::Have { .. }
                    | TransferResponse::Left,
                )) => {
                    return Attempt::Moved {
                        verified,
                        reason: "does not have the blocks".into(),
                    };
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("stalled for {timeout:.1?}"),
            };
            window = 1;
            attempt += 1;
            if attempt >= attempts {
                return Attempt::Moved {
                    verified,
                    reason: format!("{failure} ({attempt} attempts)"),
                };
            }
        }
    }
}

/// Requests in flight to the one provider of a sequential download.
const SEQUENTIAL_WINDOW: usize = 2;

/// Longest a sequential download waits before asking a provider it is in
/// line at again (whatever the provider says).
const MAX_QUEUED_RETRY: Duration = Duration::from_secs(1);

/// How one provider's turn in a sequential download ended.
enum Attempt {
    Complete {
        verified: u64,
    },
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
