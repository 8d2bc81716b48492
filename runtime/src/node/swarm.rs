//! The swarming download: different blocks from several providers at once,
//! rarest chunk first, while serving the blocks already verified to others.
//!
//! * The downloader registers its [`Download`] so that its verified blocks
//!   are served at once, and announces itself as a provider of the package
//!   key (partial availability).
//! * Providers come from the DHT (asked again with a growing interval, 1 s
//!   to 8 s, while fewer than half of [`MAX_PROVIDERS`] are useful; lookups
//!   end at [`MAX_PROVIDERS`]) and from peer exchange: answers name other
//!   peers fetching the package, with their addresses. Exchange hints take at
//!   most half the places, only displace other hints, and only bring
//!   addresses as close as the hinting peer's. At most [`MAX_PROVIDERS`] are
//!   tracked at a time.
//! * A provider whose holdings are unknown, or whose last bitmap offered
//!   nothing still needed, gets a `Want`: "any of these blocks", with the
//!   provider choosing the chunk it has uploaded least. Concurrent `Want`s
//!   offer disjoint blocks; a provider with nothing to offer is asked again
//!   after [`HAVE_REFRESH`]. Every block answer carries the provider's
//!   current bitmap.
//! * A provider with a known bitmap is asked for the rarest chunk (an
//!   aligned run of `blocks_per_request` blocks) it can contribute, random
//!   among equally rare ones. At most `parallel` requests are in flight, one
//!   per provider, so no provider carries far more than its share while
//!   others idle; a provider with a long upload queue answers `Busy`, naming
//!   other peers, and is backed off. When every missing block is already
//!   requested, idle providers duplicate slow requests (end game) so one
//!   slow peer cannot hold the download back.
//! * Every block is verified against the advert's component hash on arrival;
//!   a provider that sends a bad block, a wrong size, extra bytes or blocks
//!   outside what was asked is banned for the package. Transport failures
//!   back a provider off with growing timeouts; one that delivered nothing is
//!   dropped after `attempt_budget` failures.
//! * The pull gives up after `total_timeout`, with every provider's outcome.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::Node;
use super::pull::{PullConfig, PullError, PullProgress};
use super::transfer::{BadData, Download};
use crate::net::protocol::{MAX_BLOCKS_PER_REQUEST, PeerInfo, TransferRequest, TransferResponse};
use crate::net::{Multiaddr, PeerId, RequestError, keys};
use crate::package::{Advert, ContentId};

/// Providers tracked at once per download (the DHT may know hundreds).
pub const MAX_PROVIDERS: usize = 24;
/// Minimum time between two `Have` requests to one provider.
pub const HAVE_REFRESH: Duration = Duration::from_secs(1);
const MIN_REDISCOVER: Duration = Duration::from_secs(1);
const MAX_REDISCOVER: Duration = Duration::from_secs(8);
/// Longest sleep of the download loop when nothing happens.
const TICK: Duration = Duration::from_millis(250);
/// Copies of one block requested at once in the end game.
const END_GAME_COPIES: usize = 2;
/// `Want` requests in flight at once per download.
const MAX_WANTS: usize = 3;

/// How a provider became known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Origin {
    /// The DHT or the advert lookup.
    #[default]
    Dht,
    /// Named by another peer (peer exchange): a hint.
    Exchange,
}

/// How far an address reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Loopback,
    Private,
    Global,
}

fn scope(address: &Multiaddr) -> Scope {
    use crate::net::libp2p_protocol::Protocol;
    for part in address.iter() {
        match part {
            Protocol::Ip4(ip) if ip.is_loopback() => return Scope::Loopback,
            Protocol::Ip4(ip) if ip.is_private() || ip.is_link_local() || ip.is_unspecified() => {
                return Scope::Private;
            }
            Protocol::Ip6(ip) if ip.is_loopback() => return Scope::Loopback,
            Protocol::Ip6(ip) if ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00 => {
                return Scope::Private;
            }
            Protocol::Ip6(ip) if (ip.segments()[0] & 0xffc0) == 0xfe80 => return Scope::Private,
            _ => {}
        }
    }
    Scope::Global
}

#[derive(Default)]
struct Provider {
    origin: Origin,
    addresses: Vec<Multiaddr>,
    /// Blocks the provider holds, as last reported.
    have: Option<Vec<bool>>,
    have_at: Option<Instant>,
    /// A request to it is in flight.
    busy: bool,
    failures: u32,
    not_before: Option<Instant>,
    /// Verified bytes received from it.
    served: u64,
    /// `Busy` answers in a row.
    busy_streak: u32,
    /// Sent bad data: never asked again (kept to credit its good blocks).
    banned: bool,
}

impl Provider {
    fn ready(&self, now: Instant) -> bool {
        !self.banned && self.not_before.is_none_or(|t| now >= t)
    }
}

/// What a request in flight asked for.
enum Asked {
    /// Any of these blocks (a `Want`).
    Any(Vec<u64>),
    /// Exactly `count` blocks from `first`.
    Range(u64, u32),
}

type Pending = BoxFuture<'static, (PeerId, Asked, Result<TransferResponse, RequestError>)>;

fn bits(bitmap: &[u8], blocks: u64) -> Vec<bool> {
    (0..blocks as usize)
        .map(|i| bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect()
}

/// The state of one swarming download.
struct Swarm<'a> {
    node: &'a Node,
    id: ContentId,
    me: PeerId,
    download: &'a Arc<Mutex<Download>>,
    config: &'a PullConfig,
    blocks: u64,
    providers: HashMap<PeerId, Provider>,
    /// Per block: requests in flight for it.
    requested: Vec<u8>,
    /// Per block: offered in a `Want` request in flight.
    offered: Vec<bool>,
    in_flight: FuturesUnordered<Pending>,
    outcomes: Vec<String>,
    rng: StdRng,
}

impl Swarm<'_> {
    /// Tracks a new provider, if there is room (forgetting useless ones).
    /// Tracks a new provider, if there is room (forgetting useless ones).
    /// Hints from peer exchange get at most half the places and only ever
    /// displace other hints: a peer cannot crowd out providers found in the
    /// DHT or ones that delivered.
    fn learn(&mut self, peer: PeerId, addresses: Vec<Multiaddr>, origin: Origin) {
        if peer == self.me || self.node.is_banned(&self.id, &peer) {
            return;
        }
        if let Some(known) = self.providers.get_mut(&peer) {
            if known.addresses.is_empty() {
                known.addresses = addresses;
            }
            return;
        }
        let hints = self
            .providers
            .values()
            .filter(|p| p.origin == Origin::Exchange)
            .count();
        if origin == Origin::Exchange
            && hints >= MAX_PROVIDERS / 2
            && self.providers.len() >= MAX_PROVIDERS / 2
        {
            return;
        }
        if self.providers.len() >= MAX_PROVIDERS {
            let now = Instant::now();
            let evict = self
                .providers
                .iter()
                .find(|(_, p)| {
                    !p.busy
                        && p.served == 0
                        && (origin == Origin::Dht || p.origin == Origin::Exchange)
                        && (p.failures > 0 || p.banned || !p.ready(now))
                })
                .map(|(peer, _)| *peer);
            match evict {
                Some(evict) => {
                    self.providers.remove(&evict);
                }
                None => return,
            }
        }
        self.providers.insert(
            peer,
            Provider {
                addresses,
                origin,
                ..Provider::default()
            },
        );
    }

    /// Peers named in an answer from `from`: addresses are only taken if
    /// they are as close as one of `from`'s (loopback hints from a loopback
    /// peer, private ones from a private peer, global ones from anyone), so
    /// a remote peer cannot point us at the local network.
    fn learn_exchanged(&mut self, from: PeerId, peers: &[PeerInfo]) {
        let scopes: Vec<Scope> = self
            .providers
            .get(&from)
            .map(|p| p.addresses.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.node.inner.client.known_addresses(&from))
            .iter()
            .map(scope)
            .collect();
        for info in peers.iter().take(crate::net::protocol::MAX_PEX_PEERS) {
            if let Some((peer, addresses)) = info.decode() {
                let addresses: Vec<Multiaddr> = addresses
                    .into_iter()
                    .filter(|a| {
                        let s = scope(a);
                        s == Scope::Global || scopes.contains(&s)
                    })
                    .collect();
                if !addresses.is_empty() {
                    self.learn(peer, addresses, Origin::Exchange);
                }
            }
        }
    }

    fn needed(&self) -> Vec<bool> {
        let download = self.download.lock().expect("download lock");
        (0..self.blocks).map(|b| !download.has(b)).collect()
    }

    /// Sends `Want` requests (any needed chunk of the provider's choosing)
    /// to providers whose holdings are unknown, or whose last bitmap offered
    /// nothing still needed; a few at a time, within the parallel limit.
    fn ask_wants(&mut self, needed: &[bool], now: Instant, slots: &mut usize) {
        let per_request = self
            .config
            .blocks_per_request
            .clamp(1, MAX_BLOCKS_PER_REQUEST);
        // Each Want offers blocks no other request in flight covers, so two
        // providers do not answer with the same chunk.
        let offerable: Vec<u64> = (0..self.blocks)
            .filter(|b| {
                needed[*b as usize]
                    && self.requested[*b as usize] == 0
                    && !self.offered[*b as usize]
            })
            .collect();
        if offerable.is_empty() {
            return;
        }
        let mut in_flight_wants = self
            .providers
            .values()
            .filter(|p| p.busy && p.have.is_none())
            .count();
        let mut candidates: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|(_, state)| {
                let useful = state
                    .have
                    .as_ref()
                    .is_some_and(|have| have.iter().zip(needed).any(|(h, n)| *h && *n));
                let stale = state
                    .have_at
                    .is_none_or(|at| now.duration_since(at) >= HAVE_REFRESH);
                !useful && stale && !state.busy && state.ready(now)
            })
            .map(|(peer, _)| *peer)
            .collect();
        crate::node::shuffle(&mut candidates);
        for peer in candidates {
            if *slots == 0 || in_flight_wants >= MAX_WANTS {
                break;
            }
            // Split what is left between the Wants still allowed.
            let share = offerable.len().div_ceil(MAX_WANTS - in_flight_wants);
            let mine: Vec<u64> = offerable
                .iter()
                .copied()
                .filter(|b| !self.offered[*b as usize])
                .take(share.max(per_request as usize))
                .collect();
            if mine.is_empty() {
                break;
            }
            *slots -= 1;
            in_flight_wants += 1;
            let state = self.providers.get_mut(&peer).expect("listed above");
            state.busy = true;
            state.have = None;
            let mut wanted = vec![0u8; (self.blocks as usize).div_ceil(8)];
            for b in &mine {
                wanted[*b as usize / 8] |= 1 << (*b % 8);
                self.offered[*b as usize] = true;
            }
            let request = TransferRequest::Want {
                content_id: self.id.0,
                wanted,
                blocks: per_request,
            };
            self.send(peer, request, Asked::Any(mine));
        }
    }

    /// Gives every idle provider the rarest missing blocks it holds.
    fn schedule(
        &mut self,
        needed: &[bool],
        now: Instant,
        slots: &mut usize,
        progress: &watch::Sender<PullProgress>,
    ) {
        let per_request = self
            .config
            .blocks_per_request
            .clamp(1, MAX_BLOCKS_PER_REQUEST);
        if *slots == 0 {
            return;
        }
        let mut rarity = vec![0u32; self.blocks as usize];
        for state in self.providers.values() {
            if let Some(have) = &state.have {
                for (count, held) in rarity.iter_mut().zip(have) {
                    *count += u32::from(*held);
                }
            }
        }
        let all_requested = needed
            .iter()
            .enumerate()
            .all(|(b, n)| !n || self.requested[b] > 0 || self.offered[b]);
        let mut idle: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|(_, p)| !p.busy && p.have.is_some() && p.ready(now))
            .map(|(peer, _)| *peer)
            .collect();
        crate::node::shuffle(&mut idle);
        for peer in idle {
            if *slots == 0 {
                break;
            }
            let have = self.providers[&peer].have.as_ref().expect("filtered above");
            let offered = &self.offered;
            let wanted = |b: usize, requested: &[u8]| {
                let copies = usize::from(requested[b]) + usize::from(offered[b]);
                // End game: duplicate what is slow to arrive.
                needed[b] && have[b] && (copies == 0 || all_requested && copies < END_GAME_COPIES)
            };
            // Chunks are aligned runs of `per_request` blocks; a chunk is as
            // rare as its rarest block this provider can give us.
            let chunk = per_request as usize;
            let chunks = (self.blocks as usize).div_ceil(chunk);
            let mut best: Vec<usize> = Vec::new();
            let mut best_rarity = u32::MAX;
            for c in 0..chunks {
                let range = c * chunk..((c + 1) * chunk).min(self.blocks as usize);
                let Some(r) = range
                    .filter(|b| wanted(*b, &self.requested))
                    .map(|b| rarity[b])
                    .min()
                else {
                    continue;
                };
                if r < best_rarity {
                    best_rarity = r;
                    best.clear();
                }
                if r == best_rarity {
                    best.push(c);
                }
            }
            if best.is_empty() {
                continue;
            }
            let c = best[self.rng.gen_range(0..best.len())];
            let end = ((c + 1) * chunk).min(self.blocks as usize);
            let first = (c * chunk..end)
                .find(|b| wanted(*b, &self.requested))
                .expect("the chunk has a wanted block");
            let mut count = 1u32;
            while first + (count as usize) < end && wanted(first + count as usize, &self.requested)
            {
                count += 1;
            }
            for block in first as u64..first as u64 + u64::from(count) {
                self.requested[block as usize] = self.requested[block as usize].saturating_add(1);
            }
            let state = self.providers.get_mut(&peer).expect("listed above");
            state.busy = true;
            *slots -= 1;
            progress.send_modify(|p| p.provider = Some(peer));
            let request = TransferRequest::Blocks {
                content_id: self.id.0,
                first_block: first as u64,
                blocks: count,
            };
            self.send(peer, request, Asked::Range(first as u64, count));
        }
    }

    /// Sends a transfer request to a provider (marked busy by the caller),
    /// with the timeout its failures so far call for.
    fn send(&mut self, peer: PeerId, request: TransferRequest, asked: Asked) {
        let state = &self.providers[&peer];
        let client = self.node.inner.client.clone();
        let addresses = state.addresses.clone();
        let timeout = self.config.attempt_timeout(state.failures);
        self.in_flight.push(
            async move {
                let response = tokio::time::timeout(
                    timeout,
                    client.request_transfer_at(peer, addresses, request),
                )
                .await
                .unwrap_or(Err(RequestError::Timeout));
                (peer, asked, response)
            }
            .boxed(),
        );
    }

    /// A provider failed: back it off, forget its bitmap, drop it after
    /// too many failures.
    fn failed(&mut self, peer: PeerId, why: String) {
        let now = Instant::now();
        let budget = self.config.attempt_budget.max(1);
        let Some(state) = self.providers.get_mut(&peer) else {
            return;
        };
        state.failures += 1;
        state.have = None;
        state.not_before = Some(now + self.config.attempt_timeout(state.failures.min(4)) / 4);
        self.outcomes.push(format!("{peer}: {why}"));
        if state.failures >= budget && state.served == 0 {
            self.providers.remove(&peer);
        }
    }

    fn bad(&mut self, peer: PeerId, reason: BadData) {
        self.node.ban(self.id, peer, &reason);
        self.outcomes.push(format!("{peer}: {reason} (banned)"));
        if let Some(state) = self.providers.get_mut(&peer) {
            if state.served == 0 {
                self.providers.remove(&peer);
            } else {
                state.banned = true;
                state.have = None;
            }
        }
    }

    fn record_holdings(&mut self, peer: PeerId, bitmap: &[u8]) {
        let blocks = self.blocks;
        if let Some(state) = self.providers.get_mut(&peer) {
            state.have = Some(if bitmap.is_empty() {
                vec![true; blocks as usize]
            } else {
                bits(bitmap, blocks)
            });
            state.have_at = Some(Instant::now());
        }
    }

    fn on_reply(
        &mut self,
        peer: PeerId,
        asked: Asked,
        response: Result<TransferResponse, RequestError>,
    ) {
        if let Some(state) = self.providers.get_mut(&peer) {
            state.busy = false;
        }
        let asked = match asked {
            Asked::Any(offered) => {
                for block in offered {
                    self.offered[block as usize] = false;
                }
                None
            }
            Asked::Range(first, count) => {
                for block in first..first + u64::from(count) {
                    if let Some(copies) = self.requested.get_mut(block as usize) {
                        *copies = copies.saturating_sub(1);
                    }
                }
                Some((first, count))
            }
        };
        let per_request = self
            .config
            .blocks_per_request
            .clamp(1, MAX_BLOCKS_PER_REQUEST);
        match response {
            Ok(TransferResponse::Data {
                size,
                first_block,
                blocks,
                encoded,
                bitmap,
                peers,
            }) => {
                // A Blocks answer is what was asked; a Want answer one chunk.
                let in_range = match asked {
                    Some((first, count)) => first_block == first && blocks == count,
                    None => (1..=per_request).contains(&blocks) && first_block < self.blocks,
                };
                if !in_range {
                    self.bad(peer, BadData::OutOfRange);
                    return;
                }
                let accepted = self.download.lock().expect("download lock").accept(
                    first_block,
                    blocks,
                    size,
                    &encoded,
                );
                match accepted {
                    Ok(bytes) => {
                        if let Some(state) = self.providers.get_mut(&peer) {
                            state.served += bytes;
                            state.failures = 0;
                            state.busy_streak = 0;
                        }
                        self.record_holdings(peer, &bitmap);
                        self.learn_exchanged(peer, &peers);
                    }
                    Err(reason) => self.bad(peer, reason),
                }
            }
            Ok(TransferResponse::Busy { peers }) => {
                self.learn_exchanged(peer, &peers);
                // Busy is not a failure: back off, longer each time in a row.
                if let Some(state) = self.providers.get_mut(&peer) {
                    state.busy_streak = state.busy_streak.saturating_add(1).min(5);
                    let backoff = 100 * u64::from(state.busy_streak);
                    state.not_before = Some(Instant::now() + Duration::from_millis(backoff));
                }
            }
            Ok(TransferResponse::NotFound) => {
                if let Some(state) = self.providers.get_mut(&peer) {
                    state.have = None;
                    if asked.is_none() {
                        // Nothing we need yet: ask again later.
                        state.have_at = Some(Instant::now());
                        state.not_before = Some(Instant::now() + HAVE_REFRESH);
                    } else {
                        // Its bitmap was stale: let it choose next time.
                        state.have_at = None;
                    }
                }
            }
            Ok(TransferResponse::Have { .. }) => self.failed(peer, "answered with Have".into()),
            Err(RequestError::Timeout) => self.failed(peer, "stalled: no answer in time".into()),
            Err(e) => self.failed(peer, e.to_string()),
        }
    }

    /// Providers that sent verified blocks, most first.
    fn sources(&self) -> Vec<PeerId> {
        let mut sources: Vec<(PeerId, u64)> = self
            .providers
            .iter()
            .filter(|(_, p)| p.served > 0)
            .map(|(peer, p)| (*peer, p.served))
            .collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1));
        sources.into_iter().map(|(peer, _)| peer).collect()
    }
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
        let id = advert.content_id();
        let download = Arc::new(Mutex::new(Download::new(
            advert.component_hash(),
            advert.component_len(),
        )));
        // A node that will not re-share does not serve partial blocks either.
        let share_partial = self.inner.config.share_partial && self.inner.config.reshare;
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
            .run_swarm(target, id, &download, initial, start, progress)
            .await;
        if share_partial {
            {
                let mut downloads = self.inner.downloads.lock().expect("downloads lock");
                // Another pull of the same package may have replaced it.
                if downloads
                    .get(&id)
                    .is_some_and(|d| Arc::ptr_eq(d, &download))
                {
                    downloads.remove(&id);
                }
            }
            if result.is_err() && self.service_by_id(&id).is_none() {
                self.inner
                    .client
                    .stop_providing(keys::package_key(&id.0))
                    .await;
            }
        }
        let sources = result?;
        let bytes = download.lock().expect("download lock").take_bytes();
        Ok((bytes, sources))
    }

    async fn run_swarm(
        &self,
        target: &str,
        id: ContentId,
        download: &Arc<Mutex<Download>>,
        initial: Vec<PeerId>,
        start: Instant,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<Vec<PeerId>, PullError> {
        let config = self.inner.config.pull.clone();
        let blocks = download.lock().expect("download lock").blocks();
        let mut swarm = Swarm {
            node: self,
            id,
            me: self.peer_id(),
            download,
            config: &config,
            blocks,
            providers: HashMap::new(),
            requested: vec![0; blocks as usize],
            offered: vec![false; blocks as usize],
            in_flight: FuturesUnordered::new(),
            outcomes: Vec::new(),
            rng: StdRng::from_entropy(),
        };
        for peer in initial {
            swarm.learn(peer, Vec::new(), Origin::Dht);
        }
        let mut discovery: Option<BoxFuture<'static, HashSet<PeerId>>> = None;
        let mut rediscover_every = MIN_REDISCOVER;
        let mut next_discovery = Instant::now() + rediscover_every;
        loop {
            let needed = swarm.needed();
            let received = download.lock().expect("download lock").received();
            progress.send_modify(|p| p.bytes = received);
            if needed.iter().all(|n| !n) {
                return Ok(swarm.sources());
            }
            if start.elapsed() >= config.total_timeout {
                let size = download.lock().expect("download lock").size();
                swarm
                    .outcomes
                    .push(format!("{received} of {size} bytes verified"));
                return Err(PullError::GaveUp {
                    target: target.to_owned(),
                    elapsed: start.elapsed(),
                    attempts: swarm.outcomes,
                });
            }
            let now = Instant::now();
            // The DHT is the slow path: asked when peer exchange has not
            // yet filled the provider list.
            let useful = swarm
                .providers
                .values()
                .filter(|p| !p.banned && p.failures == 0)
                .count();
            let few = useful < MAX_PROVIDERS / 2;
            if discovery.is_none() && now >= next_discovery && few {
                let client = self.inner.client.clone();
                discovery = Some(
                    async move {
                        let key = keys::package_key(&id.0);
                        client.get_providers_limited(key, MAX_PROVIDERS).await
                    }
                    .boxed(),
                );
            }
            let busy = swarm.providers.values().filter(|p| p.busy).count();
            let mut slots = config.parallel.max(1).saturating_sub(busy);
            swarm.schedule(&needed, now, &mut slots, progress);
            swarm.ask_wants(&needed, now, &mut slots);

            // Sleep until a backed-off provider may be asked again, the next
            // discovery is due, or at most TICK.
            let mut wake = Instant::now() + TICK;
            for state in swarm.providers.values() {
                if let Some(t) = state.not_before
                    && t > now
                    && t < wake
                {
                    wake = t;
                }
            }
            let discovered = async {
                match discovery.as_mut() {
                    Some(future) => Some(future.await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((peer, asked, response)) = swarm.in_flight.next() => swarm.on_reply(peer, asked, response),
                found = discovered => {
                    discovery = None;
                    let before = swarm.providers.len();
                    let mut found: Vec<PeerId> = found.unwrap_or_default().into_iter().collect();
                    crate::node::shuffle(&mut found);
                    for peer in found {
                        let addresses = self.inner.client.known_addresses(&peer);
                        swarm.learn(peer, addresses, Origin::Dht);
                    }
                    rediscover_every = if swarm.providers.len() > before {
                        MIN_REDISCOVER
                    } else {
                        (rediscover_every * 2).min(MAX_REDISCOVER)
                    };
                    next_discovery = Instant::now() + rediscover_every;
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}
