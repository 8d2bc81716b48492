//! The swarming download: different blocks from several providers at once,
//! rarest block first, while serving the blocks already verified to others.
//!
//! * The downloader registers its [`Download`] so that its verified blocks
//!   are served at once, and announces itself as a provider of the package
//!   key (partial availability); peers learn which blocks it holds with a
//!   `Have` request.
//! * It keeps a bitmap per provider (refreshed when stale), counts how many
//!   providers hold each block, and asks each idle provider for the rarest
//!   missing block it holds (random among equally rare ones), extended to a
//!   run of up to `blocks_per_request` blocks that provider holds.
//! * At most `parallel` requests are in flight, one per provider, so no
//!   provider carries far more than its share while others idle; a provider
//!   with a long upload queue answers `Busy` and is backed off.
//! * Every block is verified against the advert's component hash on arrival;
//!   a provider that sends a bad block, a wrong size or extra bytes is banned
//!   for the package. Transport failures back a provider off with growing
//!   timeouts and drop it after `attempt_budget` failures, until rediscovery.
//! * Providers are rediscovered from the DHT with a growing interval
//!   (250 ms to 4 s), at most 24 tracked at a time; block answers carry the
//!   provider's current bitmap, so `Have` is only asked of providers that
//!   had nothing more to offer. The pull gives up after `total_timeout`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::Node;
use super::pull::{PullError, PullProgress};
use super::transfer::Download;
use crate::net::protocol::{MAX_BLOCKS_PER_REQUEST, TransferRequest, TransferResponse};
use crate::net::{PeerId, RequestError, keys};
use crate::package::{Advert, ContentId};

const HAVE_REFRESH: Duration = Duration::from_millis(400);
/// Providers tracked at once per download (the DHT may know hundreds).
const MAX_PROVIDERS: usize = 24;
const MIN_REDISCOVER: Duration = Duration::from_millis(250);
const MAX_REDISCOVER: Duration = Duration::from_secs(4);
const TICK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Provider {
    /// Blocks the provider holds, as last reported.
    have: Option<Vec<bool>>,
    have_at: Option<Instant>,
    asking_have: bool,
    busy_with: Option<(u64, u32)>,
    failures: u32,
    not_before: Option<Instant>,
    served: u64,
    /// Sent bad data: never asked again (kept to credit its good blocks).
    banned: bool,
}

enum Reply {
    Have(Result<TransferResponse, RequestError>),
    Blocks {
        first: u64,
        count: u32,
        response: Result<TransferResponse, RequestError>,
    },
}

type Pending = BoxFuture<'static, (PeerId, Reply)>;

fn bits(bitmap: &[u8], blocks: u64) -> Vec<bool> {
    (0..blocks as usize)
        .map(|i| bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect()
}

impl Node {
    /// Downloads `advert`'s component from the swarm of its providers.
    pub(crate) async fn download_swarm(
        &self,
        target: &str,
        advert: &Advert,
        initial: Vec<PeerId>,
        start: Instant,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(Vec<u8>, Vec<PeerId>), PullError> {
        let config = self.inner.config.pull.clone();
        let id = advert.content_id();
        let download = Arc::new(Mutex::new(Download::new(
            advert.component_hash(),
            advert.component_len(),
        )));
        let share_partial = self.inner.config.share_partial;
        if share_partial {
            self.inner
                .downloads
                .lock()
                .expect("downloads lock")
                .insert(id, download.clone());
            self.inner
                .client
                .start_providing(keys::package_key(&id.0))
                .await;
        }
        let result = self
            .run_swarm(target, id, &download, initial, start, progress, &config)
            .await;
        if share_partial {
            self.inner
                .downloads
                .lock()
                .expect("downloads lock")
                .remove(&id);
        }
        let sources = result?;
        let bytes = download.lock().expect("download lock").take_bytes();
        Ok((bytes, sources))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_swarm(
        &self,
        target: &str,
        id: ContentId,
        download: &Arc<Mutex<Download>>,
        initial: Vec<PeerId>,
        start: Instant,
        progress: &watch::Sender<PullProgress>,
        config: &super::PullConfig,
    ) -> Result<Vec<PeerId>, PullError> {
        let me = self.peer_id();
        let blocks = download.lock().expect("download lock").blocks();
        let per_request = config.blocks_per_request.clamp(1, MAX_BLOCKS_PER_REQUEST);
        let parallel = config.parallel.max(1);
        let mut providers: HashMap<PeerId, Provider> = initial
            .into_iter()
            .filter(|p| *p != me && !self.is_banned(&id, p))
            .map(|p| (p, Provider::default()))
            .collect();
        let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
        let mut requested: HashSet<u64> = HashSet::new();
        let mut outcomes: Vec<String> = Vec::new();
        let mut discovery: Option<BoxFuture<'static, HashSet<PeerId>>> = None;
        let mut rediscover_every = MIN_REDISCOVER;
        let mut next_discovery = Instant::now() + rediscover_every;
        let mut rng = rand::rngs::StdRng::from_entropy();

        loop {
            let (complete, received) = {
                let d = download.lock().expect("download lock");
                (d.is_complete(), d.received())
            };
            progress.send_modify(|p| p.bytes = received);
            if complete {
                let mut sources: Vec<(PeerId, u64)> = providers
                    .iter()
                    .filter(|(_, p)| p.served > 0)
                    .map(|(peer, p)| (*peer, p.served))
                    .collect();
                sources.sort_by(|a, b| b.1.cmp(&a.1));
                return Ok(sources.into_iter().map(|(peer, _)| peer).collect());
            }
            if start.elapsed() >= config.total_timeout {
                outcomes.push(format!(
                    "{received} of {} bytes verified",
                    download.lock().expect("download lock").size()
                ));
                return Err(PullError::GaveUp {
                    target: target.to_owned(),
                    elapsed: start.elapsed(),
                    attempts: outcomes,
                });
            }
            let now = Instant::now();

            // Rediscover providers (including peers still downloading).
            if discovery.is_none() && now >= next_discovery {
                let client = self.inner.client.clone();
                discovery = Some(
                    async move {
                        let key = keys::package_key(&id.0);
                        client.get_providers_limited(key, MAX_PROVIDERS).await
                    }
                    .boxed(),
                );
            }

            // Learn what providers hold: unknown ones, and ones whose last
            // bitmap offers nothing we still need (it may have grown).
            let needed: Vec<bool> = {
                let d = download.lock().expect("download lock");
                (0..blocks).map(|b| !d.has(b)).collect()
            };
            for (peer, state) in providers.iter_mut() {
                let useful = state
                    .have
                    .as_ref()
                    .is_some_and(|have| have.iter().zip(&needed).any(|(h, n)| *h && *n));
                let stale = state
                    .have_at
                    .is_none_or(|at| now.duration_since(at) >= HAVE_REFRESH);
                if !useful
                    && stale
                    && !state.banned
                    && !state.asking_have
                    && state.busy_with.is_none()
                    && state.not_before.is_none_or(|t| now >= t)
                {
                    state.asking_have = true;
                    let client = self.inner.client.clone();
                    let peer = *peer;
                    let timeout = config.attempt_timeout(state.failures);
                    in_flight.push(
                        async move {
                            let request = TransferRequest::Have { content_id: id.0 };
                            let response = tokio::time::timeout(
                                timeout,
                                client.request_transfer(peer, request),
                            )
                            .await
                            .unwrap_or(Err(RequestError::Timeout));
                            (peer, Reply::Have(response))
                        }
                        .boxed(),
                    );
                }
            }

            // Ask idle providers for the rarest blocks they hold.
            let busy = providers.values().filter(|p| p.busy_with.is_some()).count();
            if busy < parallel {
                let missing: Vec<u64> = {
                    let d = download.lock().expect("download lock");
                    (0..blocks)
                        .filter(|b| !d.has(*b) && !requested.contains(b))
                        .collect()
                };
                let mut rarity = vec![0u32; blocks as usize];
                for state in providers.values() {
                    if let Some(have) = &state.have {
                        for (block, held) in have.iter().enumerate() {
                            if *held {
                                rarity[block] += 1;
                            }
                        }
                    }
                }
                let mut idle: Vec<PeerId> = providers
                    .iter()
                    .filter(|(_, s)| {
                        !s.banned
                            && s.busy_with.is_none()
                            && s.have.is_some()
                            && s.not_before.is_none_or(|t| now >= t)
                    })
                    .map(|(peer, _)| *peer)
                    .collect();
                super::shuffle(&mut idle);
                let mut slots = parallel - busy;
                for peer in idle {
                    if slots == 0 {
                        break;
                    }
                    let state = providers.get_mut(&peer).expect("listed above");
                    let have = state.have.as_ref().expect("filtered above");
                    let candidates: Vec<u64> = missing
                        .iter()
                        .copied()
                        .filter(|b| have[*b as usize] && !requested.contains(b))
                        .collect();
                    let Some(rarest) = candidates.iter().map(|b| rarity[*b as usize]).min() else {
                        continue;
                    };
                    let rarest_blocks: Vec<u64> = candidates
                        .iter()
                        .copied()
                        .filter(|b| rarity[*b as usize] == rarest)
                        .collect();
                    let first = rarest_blocks[rng.gen_range(0..rarest_blocks.len())];
                    let mut count = 1u32;
                    while count < per_request {
                        let next = first + u64::from(count);
                        if next >= blocks
                            || !have[next as usize]
                            || requested.contains(&next)
                            || !missing.contains(&next)
                        {
                            break;
                        }
                        count += 1;
                    }
                    for block in first..first + u64::from(count) {
                        requested.insert(block);
                    }
                    state.busy_with = Some((first, count));
                    slots -= 1;
                    let client = self.inner.client.clone();
                    let timeout = config.attempt_timeout(state.failures);
                    progress.send_modify(|p| p.provider = Some(peer));
                    in_flight.push(
                        async move {
                            let request = TransferRequest::Blocks {
                                content_id: id.0,
                                first_block: first,
                                blocks: count,
                            };
                            let response = tokio::time::timeout(
                                timeout,
                                client.request_transfer(peer, request),
                            )
                            .await
                            .unwrap_or(Err(RequestError::Timeout));
                            (
                                peer,
                                Reply::Blocks {
                                    first,
                                    count,
                                    response,
                                },
                            )
                        }
                        .boxed(),
                    );
                }
            }

            // Wait for something to happen.
            let discovered = async {
                match discovery.as_mut() {
                    Some(future) => Some(future.await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((peer, reply)) = in_flight.next() => {
                    self.swarm_reply(id, peer, reply, download, &mut providers, &mut requested, &mut outcomes, config);
                }
                found = discovered => {
                    discovery = None;
                    let found = found.unwrap_or_default();
                    let mut new = 0;
                    let mut found: Vec<PeerId> = found
                        .into_iter()
                        .filter(|peer| *peer != me && !self.is_banned(&id, peer) && !providers.contains_key(peer))
                        .collect();
                    super::shuffle(&mut found);
                    // Make room by forgetting providers that failed or have nothing for us.
                    if providers.len() + found.len() > MAX_PROVIDERS {
                        providers.retain(|_, p| p.busy_with.is_some() || p.asking_have || (p.failures == 0 && p.have.is_some()));
                    }
                    for peer in found {
                        if providers.len() >= MAX_PROVIDERS {
                            break;
                        }
                        providers.insert(peer, Provider::default());
                        new += 1;
                    }
                    rediscover_every = if new > 0 { MIN_REDISCOVER } else { (rediscover_every * 2).min(MAX_REDISCOVER) };
                    next_discovery = Instant::now() + rediscover_every;
                }
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn swarm_reply(
        &self,
        id: ContentId,
        peer: PeerId,
        reply: Reply,
        download: &Arc<Mutex<Download>>,
        providers: &mut HashMap<PeerId, Provider>,
        requested: &mut HashSet<u64>,
        outcomes: &mut Vec<String>,
        config: &super::PullConfig,
    ) {
        let now = Instant::now();
        let Some(state) = providers.get_mut(&peer) else {
            return;
        };
        let failed = |state: &mut Provider, outcomes: &mut Vec<String>, why: String| {
            state.failures += 1;
            state.have = None;
            state.not_before = Some(now + config.attempt_timeout(state.failures.min(4)) / 4);
            outcomes.push(format!("{peer}: {why}"));
        };
        match reply {
            Reply::Have(response) => {
                state.asking_have = false;
                match response {
                    Ok(TransferResponse::Have { size, bitmap }) => {
                        let d = download.lock().expect("download lock");
                        if size != d.size() {
                            drop(d);
                            let reason = super::transfer::BadData::SizeMismatch {
                                declared: size,
                                expected: download.lock().expect("download lock").size(),
                            };
                            self.ban(id, peer, &reason);
                            outcomes.push(format!("{peer}: {reason} (banned)"));
                            providers.remove(&peer);
                            return;
                        }
                        state.have = Some(bits(&bitmap, d.blocks()));
                        state.have_at = Some(now);
                    }
                    Ok(TransferResponse::Busy) => {
                        state.not_before = Some(now + Duration::from_millis(200));
                    }
                    Ok(TransferResponse::NotFound) => {
                        failed(state, outcomes, "does not have the package".into())
                    }
                    Ok(TransferResponse::Data { .. }) => {
                        failed(state, outcomes, "answered Have with data".into())
                    }
                    Err(RequestError::Timeout) => {
                        failed(state, outcomes, "stalled: no answer in time".into())
                    }
                    Err(e) => failed(state, outcomes, e.to_string()),
                }
            }
            Reply::Blocks {
                first,
                count,
                response,
            } => {
                state.busy_with = None;
                for block in first..first + u64::from(count) {
                    requested.remove(&block);
                }
                match response {
                    Ok(TransferResponse::Data {
                        size,
                        encoded,
                        bitmap,
                    }) => {
                        let accepted = download
                            .lock()
                            .expect("download lock")
                            .accept(first, count, size, &encoded);
                        match accepted {
                            Ok(bytes) => {
                                state.served += bytes;
                                state.failures = 0;
                                // The answer says what the provider holds now.
                                let blocks = download.lock().expect("download lock").blocks();
                                state.have = Some(if bitmap.is_empty() {
                                    vec![true; blocks as usize]
                                } else {
                                    bits(&bitmap, blocks)
                                });
                                state.have_at = Some(now);
                            }
                            Err(reason) => {
                                if state.served > 0 {
                                    outcomes.push(format!(
                                        "{peer}: sent {} verified bytes first",
                                        state.served
                                    ));
                                }
                                self.ban(id, peer, &reason);
                                outcomes.push(format!("{peer}: {reason} (banned)"));
                                // Keep its record for the sources list if it helped.
                                if state.served == 0 {
                                    providers.remove(&peer);
                                } else {
                                    state.banned = true;
                                    state.have = None;
                                }
                            }
                        }
                    }
                    Ok(TransferResponse::Busy) => {
                        state.not_before = Some(
                            now + Duration::from_millis(
                                100 + 100 * u64::from(state.failures.min(10)),
                            ),
                        );
                        state.failures = state.failures.saturating_add(1).min(3);
                    }
                    Ok(TransferResponse::NotFound) => {
                        // Its bitmap was stale: ask again before using it.
                        state.have = None;
                        state.have_at = None;
                    }
                    Ok(TransferResponse::Have { .. }) => {
                        failed(state, outcomes, "answered Blocks with Have".into())
                    }
                    Err(RequestError::Timeout) => {
                        failed(state, outcomes, "stalled: no answer in time".into());
                        if state.failures >= config.attempt_budget.max(1) {
                            providers.remove(&peer);
                        }
                    }
                    Err(e) => {
                        failed(state, outcomes, format!("{e}"));
                        if state.failures >= config.attempt_budget.max(1) {
                            providers.remove(&peer);
                        }
                    }
                }
            }
        }
    }
}
