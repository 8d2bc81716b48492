//! The upload server: answers peers' block requests from the packages this
//! node runs and from downloads in progress, within its limits (concurrent
//! uploads, upload slots, the uplink rate), and passes on other peers
//! fetching the same package (peer exchange). It owns everything the upload
//! side keeps: slots, the uplink, per-block upload counts, recent askers,
//! the downloads it serves from, and its counters.
//!
//! Memory is bounded by the upload limits: an answer with data keeps its
//! upload permit until the network has written it to the peer, and one peer
//! may have at most [`MAX_UNWRITTEN_PER_PEER`] such answers unwritten. So at
//! most `max-concurrent` answers of at most `MAX_TRANSFER_RESPONSE`
//! (1.2 MiB) are held in all, and 4 per peer, however slowly peers read.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument;

use super::config::UploadConfig;
use super::events::{Events, NodeEvent};
use super::per_peer::{Held, PerPeer};
use super::services::Services;
use crate::blocks::{self, Bitmap, Download, MAX_BLOCKS_PER_REQUEST, block_count};
use crate::net::protocol::{
    MAX_PEX_PEERS, MAX_QUEUE_HOLD, PeerInfo, TransferRequest, TransferResponse,
};
use crate::net::{Client, PeerId};
use crate::package::ContentId;
use crate::swarm::{SlotGrant, Slots, Uplink, choose_for_want};

/// A peer holds an upload slot until it leaves, or has not asked for this long.
const UPLOAD_SLOT_IDLE: Duration = Duration::from_secs(2);
/// Peers in line for an upload slot.
const MAX_QUEUED: usize = 1024;
/// Requests held while their senders wait in line: fewer than the requests
/// answered at once, so waiting never keeps other requests from an answer.
const MAX_HELD: usize = 128;
/// When a peer in line whose request was not held should ask again (well
/// within [`UPLOAD_SLOT_IDLE`], so that it keeps its place).
const UNHELD_RETRY: Duration = Duration::from_secs(1);
/// How often waiters look for holders that went idle.
const SLOT_POLL: Duration = Duration::from_millis(250);
/// Packages whose uploads and askers are remembered.
const MAX_TRACKED_PACKAGES: usize = 64;
/// Recent askers remembered per package.
const MAX_ASKERS: usize = 32;
/// Peers named in an answer that carries data.
const PEX_WITH_DATA: usize = 2;
/// Answers with data on their way to one peer at once (not yet written).
pub const MAX_UNWRITTEN_PER_PEER: usize = 4;

/// What an answer with data holds until it is written to the peer: an
/// upload permit and one of the peer's unwritten places.
pub(crate) struct Unwritten {
    _place: Held,
    _permit: OwnedSemaphorePermit,
}

/// Counters of what a node served, since it started.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub transfer_requests: u64,
    pub have_requests: u64,
    pub blocks_served: u64,
    pub bytes_uploaded: u64,
    /// Requests answered `Busy` (upload slots or queue full).
    pub busy: u64,
    /// Requests answered `Queued` (waiting in line for an upload slot).
    #[serde(default)]
    pub queued: u64,
    /// Requests answered with blocks.
    #[serde(default)]
    pub answers_with_data: u64,
    /// Block requests refused because they came through a relay for a
    /// package larger than this node serves that way.
    #[serde(default)]
    pub relayed_refused: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, other: Self) {
        self.transfer_requests += other.transfer_requests;
        self.have_requests += other.have_requests;
        self.blocks_served += other.blocks_served;
        self.bytes_uploaded += other.bytes_uploaded;
        self.busy += other.busy;
        self.queued += other.queued;
        self.answers_with_data += other.answers_with_data;
        self.relayed_refused += other.relayed_refused;
    }
}

#[derive(Debug, Default)]
struct Stats {
    transfer_requests: AtomicU64,
    have_requests: AtomicU64,
    blocks_served: AtomicU64,
    bytes_uploaded: AtomicU64,
    busy: AtomicU64,
    queued: AtomicU64,
    answers_with_data: AtomicU64,
    relayed_refused: AtomicU64,
}

/// A bounded map from package to something, forgotten wholesale when too
/// many packages are tracked (a stranger cannot grow it without bound).
#[derive(Debug)]
struct PerPackage<T>(HashMap<ContentId, T>);

impl<T: Default> PerPackage<T> {
    fn entry(&mut self, id: ContentId) -> &mut T {
        if self.0.len() >= MAX_TRACKED_PACKAGES && !self.0.contains_key(&id) {
            self.0.clear();
        }
        self.0.entry(id).or_default()
    }
}

/// Where served blocks come from.
enum Source {
    Complete(Arc<super::Provided>),
    Partial(Arc<Mutex<Download>>),
}

/// Bytes put on the uplink in the current and the last whole second.
struct SentPerSecond {
    start: Instant,
    second: u64,
    current: u64,
    last: u64,
}

impl SentPerSecond {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            second: 0,
            current: 0,
            last: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        if second != self.second {
            self.last = if second == self.second + 1 {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.second = second;
        }
    }

    fn add(&mut self, now: Instant, bytes: u64) {
        self.roll(now);
        self.current = self.current.saturating_add(bytes);
    }

    /// Bytes of the last whole second.
    fn last(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.last
    }
}

pub(crate) struct Uploads {
    config: UploadConfig,
    /// The largest package served through relays (`[net] max-relayed-download`).
    max_relayed: u64,
    client: Client,
    services: Arc<Services>,
    events: Events,
    permits: Arc<Semaphore>,
    /// Answers with data not yet written, per peer.
    unwritten: PerPeer,
    slots: Option<SlotQueue>,
    uplink: Option<Mutex<Uplink>>,
    /// Bytes put on the uplink, per second (for its utilisation).
    sent: Mutex<SentPerSecond>,
    /// Times each block of a package was uploaded (for `Want` answers).
    uploads_per_block: Mutex<PerPackage<Vec<u32>>>,
    /// Peers that recently asked for blocks of a package (peer exchange).
    askers: Mutex<PerPackage<VecDeque<PeerId>>>,
    /// Downloads in progress whose verified blocks are served.
    partials: Mutex<HashMap<ContentId, Arc<Mutex<Download>>>>,
    stats: Stats,
}

/// Serves a download in progress until dropped.
pub(crate) struct PartialOffer {
    uploads: Arc<Uploads>,
    id: ContentId,
    download: Arc<Mutex<Download>>,
}

impl Drop for PartialOffer {
    fn drop(&mut self) {
        let mut partials = self.uploads.partials.lock().expect("partials lock");
        // Another pull of the same package may have replaced it.
        if partials
            .get(&self.id)
            .is_some_and(|d| Arc::ptr_eq(d, &self.download))
        {
            partials.remove(&self.id);
        }
    }
}

impl Uploads {
    pub(crate) fn new(
        config: UploadConfig,
        max_relayed: u64,
        client: Client,
        services: Arc<Services>,
        events: Events,
    ) -> Self {
        let now = Instant::now();
        Self {
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            unwritten: PerPeer::default(),
            slots: config.slots.map(SlotQueue::new),
            uplink: config.rate.map(|rate| Mutex::new(Uplink::new(rate, now))),
            sent: Mutex::new(SentPerSecond::new(now)),
            config,
            max_relayed,
            client,
            services,
            events,
            uploads_per_block: Mutex::new(PerPackage(HashMap::new())),
            askers: Mutex::new(PerPackage(HashMap::new())),
            partials: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        }
    }

    /// Whether downloads in progress are served.
    pub(crate) fn shares_partial(&self) -> bool {
        self.config.share_partial
    }

    /// Serves the verified blocks of `download` (of package `id`) until the
    /// returned offer is dropped.
    pub(crate) fn offer_partial(
        self: &Arc<Self>,
        id: ContentId,
        download: Arc<Mutex<Download>>,
    ) -> PartialOffer {
        self.partials
            .lock()
            .expect("partials lock")
            .insert(id, download.clone());
        PartialOffer {
            uploads: self.clone(),
            id,
            download,
        }
    }

    fn partial(&self, id: &ContentId) -> Option<Arc<Mutex<Download>>> {
        self.partials
            .lock()
            .expect("partials lock")
            .get(id)
            .cloned()
    }

    /// Whether package `id` is larger than this node serves through relays
    /// (or unknown here, so that nothing is served for it anyway).
    fn too_large_to_relay(&self, id: &ContentId) -> bool {
        let size = match self.source(id) {
            Some(Source::Complete(provided)) => provided.package.advert().component_len(),
            Some(Source::Partial(download)) => download.lock().expect("download lock").size(),
            None => return false,
        };
        size > self.max_relayed
    }

    /// What this node has served since it started.
    pub(crate) fn counters(&self) -> Counters {
        let s = &self.stats;
        Counters {
            transfer_requests: s.transfer_requests.load(Ordering::Relaxed),
            have_requests: s.have_requests.load(Ordering::Relaxed),
            blocks_served: s.blocks_served.load(Ordering::Relaxed),
            bytes_uploaded: s.bytes_uploaded.load(Ordering::Relaxed),
            busy: s.busy.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
            answers_with_data: s.answers_with_data.load(Ordering::Relaxed),
            relayed_refused: s.relayed_refused.load(Ordering::Relaxed),
        }
    }

    /// Answers a peer's transfer request (`relayed`: it came through a
    /// relay). An answer with data comes with what it holds until it is
    /// written ([`Unwritten`]). Through a relay, blocks are served only of
    /// packages of at most `max_relayed` bytes (`[net]
    /// max-relayed-download`), whatever the asker would take: bulk
    /// transfer goes over direct connections, so a relay (perhaps the
    /// asker's own, without limits) never carries whole components.
    pub(crate) async fn answer(
        &self,
        peer: PeerId,
        relayed: bool,
        request: TransferRequest,
    ) -> (TransferResponse, Option<Unwritten>) {
        self.stats.transfer_requests.fetch_add(1, Ordering::Relaxed);
        let id = match &request {
            TransferRequest::Have { content_id }
            | TransferRequest::Blocks { content_id, .. }
            | TransferRequest::Want { content_id, .. }
            | TransferRequest::Leave { content_id } => ContentId(*content_id),
        };
        let span = tracing::debug_span!("upload", package = %id.short(), %peer);
        async {
            let (response, unwritten) = match request {
                TransferRequest::Have { .. } => {
                    self.stats.have_requests.fetch_add(1, Ordering::Relaxed);
                    let peers = self.exchange_peers(&id, peer, MAX_PEX_PEERS);
                    (self.answer_have(&id, peers), None)
                }
                TransferRequest::Blocks { .. } | TransferRequest::Want { .. }
                    if relayed && self.too_large_to_relay(&id) =>
                {
                    self.stats.relayed_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("blocks asked through a relay, of a package larger than this node serves that way");
                    (TransferResponse::NotFound, None)
                }
                TransferRequest::Blocks {
                    first_block,
                    blocks,
                    queue_ms,
                    ..
                } => {
                    let hold = Duration::from_millis(queue_ms.into()).min(MAX_QUEUE_HOLD);
                    self.send_blocks(peer, id, Selection::Range(first_block, blocks), hold)
                        .await
                }
                TransferRequest::Want { wanted, blocks, .. } => {
                    self.send_blocks(peer, id, Selection::Any(wanted, blocks), Duration::ZERO)
                        .await
                }
                TransferRequest::Leave { .. } => {
                    if let Some(slots) = &self.slots {
                        slots.leave(peer);
                    }
                    (TransferResponse::Left, None)
                }
            };
            tracing::debug!(answer = response.kind(), "answered");
            (response, unwritten)
        }
        .instrument(span)
        .await
    }

    fn source(&self, id: &ContentId) -> Option<Source> {
        match self.services.by_id(id) {
            Some(provided) => Some(Source::Complete(provided)),
            None => self.partial(id).map(Source::Partial),
        }
    }

    fn answer_have(&self, id: &ContentId, peers: Vec<PeerInfo>) -> TransferResponse {
        match self.source(id) {
            Some(Source::Complete(provided)) => {
                let size = provided.package.advert().component_len();
                TransferResponse::Have {
                    size,
                    bitmap: Bitmap::full(block_count(size)).encode(),
                    peers,
                }
            }
            Some(Source::Partial(download)) => {
                let download = download.lock().expect("download lock");
                TransferResponse::Have {
                    size: download.size(),
                    bitmap: download.bitmap().encode(),
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
        if self.services.by_id(id).is_none() && self.partial(id).is_none() {
            return Vec::new();
        }
        let mut candidates: Vec<PeerId> = {
            let mut askers = self.askers.lock().expect("askers lock");
            let askers = askers.entry(*id);
            if !askers.contains(&asker) {
                if askers.len() >= MAX_ASKERS {
                    askers.pop_front();
                }
                askers.push_back(asker);
            }
            askers.iter().copied().filter(|p| *p != asker).collect()
        };
        rand::seq::SliceRandom::shuffle(&mut candidates[..], &mut rand::thread_rng());
        candidates
            .into_iter()
            .filter_map(|peer| {
                let addresses = self.client.known_addresses(&peer);
                (!addresses.is_empty()).then(|| PeerInfo::new(&peer, &addresses))
            })
            .take(max)
            .collect()
    }

    /// The `Busy` answer, naming other peers fetching the package.
    fn busy(&self, peer: PeerId, id: &ContentId) -> TransferResponse {
        self.stats.busy.fetch_add(1, Ordering::Relaxed);
        TransferResponse::Busy {
            peers: self.exchange_peers(id, peer, MAX_PEX_PEERS),
        }
    }

    /// Sends blocks of a complete or partial package: the requested range,
    /// or (for `Want`) the run [`choose_for_want`] picks. With upload slots,
    /// a peer without one waits in line, its request held for up to `hold`.
    async fn send_blocks(
        &self,
        peer: PeerId,
        id: ContentId,
        selection: Selection,
        hold: Duration,
    ) -> (TransferResponse, Option<Unwritten>) {
        if !(1..=MAX_BLOCKS_PER_REQUEST).contains(&selection.count()) {
            return (TransferResponse::NotFound, None);
        }
        // With upload slots, wait for this peer's turn (the paper's server:
        // one download at a time, the others in line).
        if let Some(slots) = &self.slots {
            match slots.take(peer, hold).await {
                Turn::Served => {}
                Turn::QueueFull => return (self.busy(peer, &id), None),
                Turn::InLine { ahead, retry } => {
                    self.stats.queued.fetch_add(1, Ordering::Relaxed);
                    let queued = TransferResponse::Queued {
                        ahead: u32::try_from(ahead).unwrap_or(u32::MAX),
                        retry_ms: retry.as_millis() as u32,
                    };
                    return (queued, None);
                }
                // The asker has left, or asked again: nobody waits for this answer.
                Turn::Withdrawn => return (TransferResponse::Busy { peers: Vec::new() }, None),
            }
        }
        let Some(unwritten) = self.reserve(peer) else {
            return (self.busy(peer, &id), None);
        };
        // With an uplink rate: a queue that would make the answer slow.
        let backlog = self
            .uplink
            .as_ref()
            .map(|uplink| uplink.lock().expect("uplink lock").backlog(Instant::now()));
        if backlog.is_some_and(|b| b > self.config.max_backlog) {
            return (self.busy(peer, &id), None);
        }
        let encoded = match self.source(&id) {
            None => None,
            Some(Source::Complete(provided)) => {
                let size = provided.package.advert().component_len();
                self.select(&id, block_count(size), |_| true, &selection)
                    .and_then(|(first, count)| {
                        // At most 1 MiB, hashed at GB/s: cheaper inline than a thread hop.
                        blocks::encode(
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
            Some(Source::Partial(download)) => {
                let download = download.lock().expect("download lock");
                self.select(&id, download.blocks(), |b| download.has(b), &selection)
                    .and_then(|(first, count)| {
                        download.encode(first, count).map(|encoded| {
                            let bitmap = download.bitmap().encode();
                            (download.size(), first, count, encoded, bitmap)
                        })
                    })
            }
        };
        let Some((size, first_block, blocks, encoded, bitmap)) = encoded else {
            return (TransferResponse::NotFound, None);
        };
        self.count_upload(&id, first_block, blocks);
        self.sent
            .lock()
            .expect("sent lock")
            .add(Instant::now(), encoded.len() as u64);
        if let Some(uplink) = &self.uplink {
            let done = uplink
                .lock()
                .expect("uplink lock")
                .reserve(encoded.len() as u64, Instant::now());
            tokio::time::sleep_until(done.into()).await;
        }
        let s = &self.stats;
        s.blocks_served
            .fetch_add(u64::from(blocks), Ordering::Relaxed);
        s.answers_with_data.fetch_add(1, Ordering::Relaxed);
        s.bytes_uploaded
            .fetch_add(encoded.len() as u64, Ordering::Relaxed);
        self.events.emit(NodeEvent::Served {
            peer,
            content_id: id,
            bytes: encoded.len() as u64,
        });
        let data = TransferResponse::Data {
            size,
            first_block,
            blocks,
            encoded,
            bitmap,
            peers: self.exchange_peers(&id, peer, PEX_WITH_DATA),
        };
        (data, Some(unwritten))
    }

    /// Waits until `bytes` more fit the uplink (at once without a rate):
    /// call results are uploads too (they are not counted as blocks).
    pub(crate) async fn pace(&self, bytes: u64) {
        let now = Instant::now();
        self.sent.lock().expect("sent lock").add(now, bytes);
        if let Some(uplink) = &self.uplink {
            let done = uplink.lock().expect("uplink lock").reserve(bytes, now);
            tokio::time::sleep_until(done.into()).await;
        }
    }

    /// The fraction of the uplink rate used over the last whole second (0
    /// without a rate).
    pub(crate) fn utilisation(&self) -> f64 {
        let Some(rate) = self.config.rate.filter(|r| *r > 0) else {
            return 0.0;
        };
        let bytes = self.sent.lock().expect("sent lock").last(Instant::now());
        (bytes as f64 / rate as f64).clamp(0.0, 1.0)
    }

    /// An upload permit and one of `peer`'s unwritten places, if both are free.
    fn reserve(&self, peer: PeerId) -> Option<Unwritten> {
        let permits = &self.permits;
        let (place, permit) = self.unwritten.take(peer, MAX_UNWRITTEN_PER_PEER, || {
            permits.clone().try_acquire_owned().ok()
        })?;
        Some(Unwritten {
            _place: place,
            _permit: permit,
        })
    }

    /// The blocks to send: a requested range must be held in full; for a
    /// `Want`, the swarm core's choice.
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
                let wanted = Bitmap::decode(wanted, blocks)?;
                let mut uploads = self.uploads_per_block.lock().expect("uploads lock");
                let counts = uploads.entry(*id);
                choose_for_want(
                    blocks,
                    *count,
                    &wanted,
                    holds,
                    |b| counts.get(b as usize).copied().unwrap_or(0),
                    &mut rand::thread_rng(),
                )
            }
        }
    }

    fn count_upload(&self, id: &ContentId, first: u64, count: u32) {
        let mut uploads = self.uploads_per_block.lock().expect("uploads lock");
        let counts = uploads.entry(*id);
        let end = (first + u64::from(count)) as usize;
        if counts.len() < end {
            counts.resize(end, 0);
        }
        for c in &mut counts[first as usize..end] {
            *c = c.saturating_add(1);
        }
    }
}

/// How a wait for an upload slot ended.
enum Turn {
    Served,
    QueueFull,
    /// Still in line (behind `ahead` peers) when the hold ended, or not held
    /// at all: the peer asks again within `retry` to stay in line.
    InLine {
        ahead: usize,
        retry: Duration,
    },
    /// The peer left the line, or asked again (a newer request replaces a
    /// waiting one, whose asker has given up on it).
    Withdrawn,
}

/// Upload slots with the requests waiting for them: the pure [`Slots`]
/// decides who is served; this holds the waiting requests and wakes them
/// when it does. Lock order: `slots`, then `waiters`.
struct SlotQueue {
    slots: Mutex<Slots<PeerId>>,
    /// The held request of each peer in line, to wake when its turn comes.
    waiters: Mutex<HashMap<PeerId, oneshot::Sender<()>>>,
}

impl SlotQueue {
    fn new(limit: usize) -> Self {
        Self {
            slots: Mutex::new(Slots::new(limit, UPLOAD_SLOT_IDLE, MAX_QUEUED)),
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Waits up to `hold` for `peer`'s turn.
    async fn take(&self, peer: PeerId, hold: Duration) -> Turn {
        let deadline = Instant::now() + hold;
        let mut turn = {
            let mut slots = self.slots.lock().expect("slots lock");
            match slots.request(peer, Instant::now()) {
                SlotGrant::Granted => return Turn::Served,
                SlotGrant::Full => return Turn::QueueFull,
                SlotGrant::Queued { ahead } => {
                    let mut waiters = self.waiters.lock().expect("waiters lock");
                    let room = waiters.len() < MAX_HELD || waiters.contains_key(&peer);
                    if hold.is_zero() || !room {
                        slots.absent(peer, Instant::now());
                        return Turn::InLine {
                            ahead,
                            retry: UNHELD_RETRY,
                        };
                    }
                    let (tx, rx) = oneshot::channel();
                    // Replaces (and so withdraws) an older request's wait.
                    waiters.insert(peer, tx);
                    rx
                }
            }
        };
        loop {
            let now = Instant::now();
            let poll = (now + SLOT_POLL).min(deadline);
            let wake = self
                .slots
                .lock()
                .expect("slots lock")
                .next_expiry()
                .map_or(poll, |t| t.clamp(now, poll));
            tokio::select! {
                granted = &mut turn => {
                    return if granted.is_ok() { Turn::Served } else { Turn::Withdrawn };
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if Instant::now() >= deadline {
                        return self.stop_waiting(peer, &mut turn);
                    }
                    let granted = self.slots.lock().expect("slots lock").expire(Instant::now());
                    self.wake(granted);
                }
            }
        }
    }

    /// The hold of `peer`'s request ended: it stays in line, absent until it
    /// asks again, unless its turn came meanwhile.
    fn stop_waiting(&self, peer: PeerId, turn: &mut oneshot::Receiver<()>) -> Turn {
        let mut slots = self.slots.lock().expect("slots lock");
        match turn.try_recv() {
            Ok(()) => return Turn::Served,
            Err(oneshot::error::TryRecvError::Closed) => return Turn::Withdrawn,
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        // Granted, with the wake-up still on its way.
        if slots.holds(&peer) {
            return Turn::Served;
        }
        self.waiters.lock().expect("waiters lock").remove(&peer);
        slots.absent(peer, Instant::now());
        match slots.position(&peer) {
            Some(ahead) => Turn::InLine {
                ahead,
                retry: Duration::ZERO,
            },
            // Not in line any more (it left meanwhile).
            None => Turn::Withdrawn,
        }
    }

    /// `peer` is done: its slot, or its place in line, goes to the next.
    fn leave(&self, peer: PeerId) {
        let granted = self
            .slots
            .lock()
            .expect("slots lock")
            .release(peer, Instant::now());
        // A request still waiting for the peer's turn ends.
        self.waiters.lock().expect("waiters lock").remove(&peer);
        self.wake(granted);
    }

    fn wake(&self, granted: Vec<PeerId>) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        for peer in granted {
            if let Some(waiter) = waiters.remove(&peer) {
                let _ = waiter.send(());
            }
        }
    }
}

/// Which blocks a transfer request asks for.
enum Selection {
    Range(u64, u32),
    /// A wanted-blocks bitmap (wire form) and the most blocks to send.
    Any(Vec<u8>, u32),
}

impl Selection {
    fn count(&self) -> u32 {
        match self {
            Selection::Range(_, count) | Selection::Any(_, count) => *count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uplinks_use_is_the_last_whole_seconds_bytes() {
        let t0 = Instant::now();
        let mut sent = SentPerSecond::new(t0);
        sent.add(t0, 100);
        sent.add(t0 + Duration::from_millis(900), 50);
        // The current second does not count yet.
        assert_eq!(sent.last(t0 + Duration::from_millis(950)), 0);
        assert_eq!(sent.last(t0 + Duration::from_millis(1500)), 150);
        sent.add(t0 + Duration::from_millis(1600), 7);
        assert_eq!(sent.last(t0 + Duration::from_millis(2100)), 7);
        // A quiet second in between: nothing.
        assert_eq!(sent.last(t0 + Duration::from_millis(4000)), 0);
    }
}
