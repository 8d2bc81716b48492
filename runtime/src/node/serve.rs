//! Answering peers: adverts, block transfers (with peer exchange and the
//! upload rate limit) and invocations, each request in its own task and
//! always with an explicit answer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use super::{Node, NodeEvent, Provided, shuffle, transfer};
use crate::net::protocol::*;
use crate::net::{InboundRequest, PeerId};
use crate::package::ContentId;

/// Peers' requests answered concurrently.
const MAX_ANSWERING: usize = 256;

/// A peer holds an upload slot until it has not asked for this long.
const UPLOAD_SLOT_IDLE: Duration = Duration::from_secs(2);

/// Which blocks a transfer request asks for.
enum Selection {
    Range(u64, u32),
    /// A wanted-blocks bitmap and the most blocks to send.
    Any(Vec<u8>, u32),
}

/// Where served blocks come from.
enum Source {
    Complete(Arc<Provided>),
    Partial(Arc<Mutex<transfer::Download>>),
}

/// Models an uplink of a fixed rate: each response leaves when the ones
/// before it have been sent (first come, first served).
pub(crate) struct RateLimiter {
    bytes_per_second: f64,
    next_free: Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1) as f64,
            next_free: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// How long until the uplink is free.
    fn backlog(&self) -> Duration {
        let next_free = *self.next_free.lock().expect("limiter lock");
        next_free.saturating_duration_since(tokio::time::Instant::now())
    }

    /// Waits until `bytes` have gone through the uplink.
    async fn transmit(&self, bytes: u64) {
        let done = {
            let mut next_free = self.next_free.lock().expect("limiter lock");
            let start = (*next_free).max(tokio::time::Instant::now());
            let done = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
            *next_free = done;
            done
        };
        tokio::time::sleep_until(done).await;
    }
}

/// Answers peers' requests, each in its own task; the network's inbound
/// queue is bounded, so a flood of requests is answered `Busy` by the event
/// loop rather than piling up here.
pub(crate) async fn serve(node: Node, mut inbound: mpsc::Receiver<InboundRequest>) {
    // At most this many requests are being answered at once; beyond it the
    // network's bounded queue fills and the event loop answers `Busy`.
    let running = Arc::new(tokio::sync::Semaphore::new(MAX_ANSWERING));
    while let Some(request) = inbound.recv().await {
        let Ok(permit) = running.clone().acquire_owned().await else {
            break;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match request {
                InboundRequest::Advert {
                    peer,
                    request,
                    channel,
                } => {
                    let response = node.answer_advert(peer, request);
                    node.inner.client.respond_advert(channel, response).await;
                }
                InboundRequest::Transfer {
                    peer,
                    request,
                    channel,
                } => {
                    let response = node.answer_transfer(peer, request).await;
                    node.inner.client.respond_transfer(channel, response).await;
                }
                InboundRequest::Invoke {
                    peer,
                    request,
                    channel,
                } => {
                    let response = node.answer_invoke(peer, request).await;
                    node.inner.client.respond_invoke(channel, response).await;
                }
            }
        });
    }
}

impl Node {
    fn answer_advert(&self, peer: PeerId, request: AdvertRequest) -> AdvertResponse {
        let adverts: Vec<serde_bytes::ByteBuf> = match &request {
            AdvertRequest::Name(name) if valid_service_name(name) => self
                .services()
                .iter()
                .filter(|p| p.package.manifest().name == *name)
                .take(MAX_ADVERTS)
                .map(|p| serde_bytes::ByteBuf::from(p.package.advert().bytes().to_vec()))
                .collect(),
            AdvertRequest::Name(_) => Vec::new(),
            AdvertRequest::ContentId(id) => self
                .service_by_id(&ContentId(*id))
                .map(|p| {
                    vec![serde_bytes::ByteBuf::from(
                        p.package.advert().bytes().to_vec(),
                    )]
                })
                .unwrap_or_default(),
        };
        tracing::debug!(%peer, ?request, adverts = adverts.len(), "advert request");
        if adverts.is_empty() {
            AdvertResponse::NotFound
        } else {
            AdvertResponse::Adverts(adverts)
        }
    }

    async fn answer_transfer(&self, peer: PeerId, request: TransferRequest) -> TransferResponse {
        self.inner
            .stats
            .transfer_requests
            .fetch_add(1, Ordering::Relaxed);
        match request {
            TransferRequest::Have { content_id } => {
                self.inner
                    .stats
                    .have_requests
                    .fetch_add(1, Ordering::Relaxed);
                let id = ContentId(content_id);
                let peers = self.exchange_peers(&id, peer, MAX_PEX_PEERS);
                self.answer_have(id, peers)
            }
            TransferRequest::Blocks {
                content_id,
                first_block,
                blocks,
            } => {
                let selection = Selection::Range(first_block, blocks);
                self.send_blocks(peer, ContentId(content_id), selection)
                    .await
            }
            TransferRequest::Want {
                content_id,
                wanted,
                blocks,
            } => {
                let selection = Selection::Any(wanted, blocks);
                self.send_blocks(peer, ContentId(content_id), selection)
                    .await
            }
        }
    }

    fn answer_have(&self, id: ContentId, peers: Vec<PeerInfo>) -> TransferResponse {
        if let Some(provided) = self.service_by_id(&id) {
            let size = provided.package.advert().component_len();
            let blocks = transfer::block_count(size) as usize;
            let mut bitmap = vec![0xffu8; blocks.div_ceil(8)];
            if !blocks.is_multiple_of(8) {
                bitmap[blocks / 8] = (1u8 << (blocks % 8)) - 1;
            }
            return TransferResponse::Have {
                size,
                bitmap,
                peers,
            };
        }
        match self.partial(&id) {
            Some(download) => {
                let download = download.lock().expect("download lock");
                TransferResponse::Have {
                    size: download.size(),
                    bitmap: download.bitmap(),
                    peers,
                }
            }
            None => TransferResponse::NotFound,
        }
    }

    /// Peer exchange: remembers `asker` as fetching package `id`, and names
    /// up to `max` other recent askers whose addresses this node knows.
    fn exchange_peers(&self, id: &ContentId, asker: PeerId, max: usize) -> Vec<PeerInfo> {
        // Only packages this node holds (whole or in part): a stranger must
        // not be able to fill the table with made-up content ids.
        if self.service_by_id(id).is_none() && self.partial(id).is_none() {
            return Vec::new();
        }
        let mut recent = self.inner.recent_askers.lock().expect("askers lock");
        if recent.len() >= 64 && !recent.contains_key(id) {
            recent.clear();
        }
        let askers = recent.entry(*id).or_default();
        if !askers.contains(&asker) {
            if askers.len() >= 32 {
                askers.pop_front();
            }
            askers.push_back(asker);
        }
        let mut candidates: Vec<PeerId> = askers.iter().copied().filter(|p| *p != asker).collect();
        drop(recent);
        shuffle(&mut candidates);
        candidates
            .into_iter()
            .filter_map(|peer| {
                let addresses = self.inner.client.known_addresses(&peer);
                (!addresses.is_empty()).then(|| PeerInfo::new(&peer, &addresses))
            })
            .take(max)
            .collect()
    }

    /// Sends blocks of a complete or partial package: the requested range,
    /// or (for `Want`) the run this node has uploaded least, so that a seed
    /// hands out different chunks to different peers.
    async fn send_blocks(
        &self,
        peer: PeerId,
        id: ContentId,
        selection: Selection,
    ) -> TransferResponse {
        let count = match &selection {
            Selection::Range(_, count) | Selection::Any(_, count) => *count,
        };
        if count == 0 || count > MAX_BLOCKS_PER_REQUEST {
            return TransferResponse::NotFound;
        }
        let stats = &self.inner.stats;
        // At the upload limit, or with a queue that would make the answer
        // slow: send the peer to others fetching the same package instead.
        let busy = |node: &Node| {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            TransferResponse::Busy {
                peers: node.exchange_peers(&id, peer, MAX_PEX_PEERS),
            }
        };
        let Ok(_permit) = self.inner.uploads.clone().try_acquire_owned() else {
            return busy(self);
        };
        if let Some(slots) = self.inner.config.upload_slots {
            let now = std::time::Instant::now();
            let mut downloaders = self.inner.downloaders.lock().expect("downloaders lock");
            downloaders.retain(|_, last| now.duration_since(*last) < UPLOAD_SLOT_IDLE);
            if !downloaders.contains_key(&peer) && downloaders.len() >= slots.max(1) {
                drop(downloaders);
                return busy(self);
            }
            downloaders.insert(peer, now);
        }
        if let Some(limiter) = &self.inner.upload_limiter
            && limiter.backlog() > self.inner.config.max_upload_backlog
        {
            return busy(self);
        }
        let source = match self.service_by_id(&id) {
            Some(provided) => Source::Complete(provided),
            None => match self.partial(&id) {
                Some(download) => Source::Partial(download),
                None => return TransferResponse::NotFound,
            },
        };
        let encoded = match &source {
            Source::Complete(provided) => {
                let size = provided.package.advert().component_len();
                let blocks = transfer::block_count(size);
                self.select(&id, blocks, |_| true, &selection)
                    .and_then(|(first, count)| {
                        // At most 1 MiB, hashed at GB/s: cheaper inline than a thread hop.
                        transfer::encode(
                            provided.package.component(),
                            &provided.outboard,
                            first,
                            count,
                        )
                        .ok()
                        .map(|encoded| (size, first, count, encoded, Vec::new()))
                    })
            }
            // Blocks of a download in progress: verified when they arrived.
            Source::Partial(download) => {
                let download = download.lock().expect("download lock");
                self.select(&id, download.blocks(), |b| download.has(b), &selection)
                    .and_then(|(first, count)| {
                        download.encode(first, count).map(|encoded| {
                            (download.size(), first, count, encoded, download.bitmap())
                        })
                    })
            }
        };
        let Some((size, first_block, blocks, encoded, bitmap)) = encoded else {
            return TransferResponse::NotFound;
        };
        self.count_upload(&id, first_block, blocks);
        if let Some(limiter) = &self.inner.upload_limiter {
            limiter.transmit(encoded.len() as u64).await;
        }
        stats
            .blocks_served
            .fetch_add(u64::from(blocks), Ordering::Relaxed);
        stats
            .bytes_uploaded
            .fetch_add(encoded.len() as u64, Ordering::Relaxed);
        self.emit(NodeEvent::Served {
            peer,
            content_id: id,
            bytes: encoded.len() as u64,
        });
        TransferResponse::Data {
            size,
            first_block,
            blocks,
            encoded,
            bitmap,
            peers: self.exchange_peers(&id, peer, 2),
        }
    }

    /// The blocks to send: a requested range must be held in full; for a
    /// `Want`, the aligned chunk with the fewest uploads so far among those
    /// holding a wanted block (random among ties), cut to its wanted, held run.
    fn select(
        &self,
        id: &ContentId,
        blocks: u64,
        holds: impl Fn(u64) -> bool,
        selection: &Selection,
    ) -> Option<(u64, u32)> {
        match selection {
            Selection::Range(first, count) => {
                let end = first.checked_add(u64::from(*count))?;
                (end <= blocks && (*first..end).all(&holds)).then_some((*first, *count))
            }
            Selection::Any(wanted, count) => {
                let wanted = |b: u64| {
                    wanted
                        .get((b / 8) as usize)
                        .is_some_and(|byte| byte & (1 << (b % 8)) != 0)
                        && holds(b)
                };
                let chunk = u64::from(*count);
                let uploads = self.inner.uploads_per_block.lock().expect("uploads lock");
                let counts = uploads.get(id);
                let uploaded =
                    |b: u64| counts.and_then(|c| c.get(b as usize)).copied().unwrap_or(0);
                let mut best: Vec<u64> = Vec::new();
                let mut best_score = u64::MAX;
                for c in 0..blocks.div_ceil(chunk) {
                    let range = c * chunk..((c + 1) * chunk).min(blocks);
                    let mut any = false;
                    let mut score = 0u64;
                    for b in range {
                        if wanted(b) {
                            any = true;
                            score += u64::from(uploaded(b));
                        }
                    }
                    if !any {
                        continue;
                    }
                    if score < best_score {
                        best_score = score;
                        best.clear();
                    }
                    if score == best_score {
                        best.push(c);
                    }
                }
                drop(uploads);
                let c = *best.get(rand::thread_rng().gen_range(0..best.len().max(1)))?;
                let end = ((c + 1) * chunk).min(blocks);
                let first = (c * chunk..end).find(|b| wanted(*b))?;
                let count = (first..end).take_while(|b| wanted(*b)).count() as u32;
                Some((first, count))
            }
        }
    }

    fn count_upload(&self, id: &ContentId, first: u64, count: u32) {
        let mut uploads = self.inner.uploads_per_block.lock().expect("uploads lock");
        if uploads.len() >= 64 && !uploads.contains_key(id) {
            uploads.clear();
        }
        let counts = uploads.entry(*id).or_default();
        let end = (first + u64::from(count)) as usize;
        if counts.len() < end {
            counts.resize(end, 0);
        }
        for c in &mut counts[first as usize..end] {
            *c = c.saturating_add(1);
        }
    }

    /// A download in progress whose blocks this node serves.
    pub(crate) fn partial(&self, id: &ContentId) -> Option<Arc<Mutex<transfer::Download>>> {
        self.inner
            .downloads
            .lock()
            .expect("downloads lock")
            .get(id)
            .cloned()
    }

    async fn answer_invoke(&self, peer: PeerId, request: InvokeRequest) -> InvokeResponse {
        if !valid_service_name(&request.service) {
            return InvokeResponse::NotFound;
        }
        let provided = match request.content_id {
            Some(id) => self
                .service_by_id(&ContentId(id))
                .filter(|p| p.package.manifest().name == request.service),
            None => self.service(&request.service),
        };
        let Some(provided) = provided else {
            return InvokeResponse::NotFound;
        };
        if let Some(allowed) = self.inner.config.allow.get(&request.service)
            && !allowed.contains(&peer)
        {
            return InvokeResponse::Denied(format!(
                "peer {peer} is not on the allow-list of service {}",
                request.service
            ));
        }
        let Ok(_permit) = provided.invocations.clone().try_acquire_owned() else {
            return InvokeResponse::Busy;
        };
        self.emit(NodeEvent::Invoked {
            peer,
            service: request.service.clone(),
        });
        match provided.activation.invoke(&request.call).await {
            // An answer the caller's codec would refuse is an explicit error.
            Ok(outcome) if outcome.value.len() as u64 > MAX_INVOKE_RESPONSE - 1024 => {
                InvokeResponse::Failed {
                    kind: "host".into(),
                    message: format!(
                        "the result is {} bytes of WAVE text; remote results are limited to {} bytes",
                        outcome.value.len(),
                        MAX_INVOKE_RESPONSE - 1024
                    ),
                }
            }
            Ok(outcome) => InvokeResponse::Ok {
                value: outcome.value,
                fuel: outcome.fuel_used,
                micros: outcome.elapsed.as_micros() as u64,
                content_id: provided.package.content_id().0,
            },
            Err(e) => InvokeResponse::Failed {
                kind: e.kind().to_owned(),
                message: clip(&e.to_string()),
            },
        }
    }
}
