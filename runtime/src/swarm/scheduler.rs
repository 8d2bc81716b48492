//! [`SwarmCore`]: which block to request from whom, when, and what to make
//! of each answer. See the module documentation of [`crate::swarm`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::backoff::Backoff;
use crate::blocks::{Bitmap, MAX_BLOCKS_PER_REQUEST};

/// Provider outcomes kept for the error of a download that gave up.
pub const MAX_OUTCOMES: usize = 64;
/// Dropped providers whose failures are remembered.
const MAX_REMEMBERED_FAILURES: usize = 1024;

/// What the core needs of a peer identity: libp2p's `PeerId` in a node,
/// a small integer in a simulator.
pub trait Peer: Copy + Ord + Hash + fmt::Debug + fmt::Display {}
impl<T: Copy + Ord + Hash + fmt::Debug + fmt::Display> Peer for T {}

/// Settings of one download. [`Params::new`] gives the defaults: 4 blocks
/// per request at first (doubling per provider whose answers take under
/// 20 ms), 8 requests in flight, a budget of 4 failures, request
/// deadlines from 5 s doubling to 320 s, lookups every 1 s to 8 s, `Busy`
/// back-off from 100 ms to 400 ms, 24 providers tracked, `Want` refresh
/// after 1 s, 3 `Want`s in flight, 2 end-game copies, 3 useless answers
/// before a ban, and a 2-minute deadline.
#[derive(Clone, Debug)]
pub struct Params {
    /// Blocks of the component.
    pub blocks: u64,
    /// Blocks per request at first: a chunk (1 to [`MAX_BLOCKS_PER_REQUEST`]).
    pub blocks_per_request: u32,
    /// A provider whose answer of new data took less than this gets
    /// requests twice as large (up to [`MAX_BLOCKS_PER_REQUEST`] blocks);
    /// one that took more than four times this, half as large (down to
    /// `blocks_per_request`). A fast path sends a component in a few
    /// round trips; a slow uplink keeps small chunks, spread over many
    /// providers.
    pub fast_answer: Duration,
    /// Requests in flight at once, one per provider.
    pub parallel: usize,
    /// Failures after which a provider that never delivered is dropped.
    pub attempt_budget: u32,
    /// The deadline of a request to a provider with `n` failures is
    /// `attempt_timeout.delay(n)`, or longer where answers have been taking
    /// longer (see [`AnswerTime`]; at most `attempt_timeout.max`); a failed
    /// provider is left alone for a quarter of
    /// `attempt_timeout.delay(min(n, 4))`.
    pub attempt_timeout: Backoff,
    /// Time between provider lookups: `rediscover.delay(n)` after `n`
    /// lookups in a row that found nobody new.
    pub rediscover: Backoff,
    /// A provider answering `Busy` for the `n`-th time in a row is left
    /// alone for `busy.delay(n - 1)`.
    pub busy: Backoff,
    /// Providers tracked at once (the DHT may know hundreds).
    pub max_providers: usize,
    /// Minimum time between two `Want`s to a provider that had nothing.
    pub have_refresh: Duration,
    /// `Want` requests in flight at once.
    pub max_wants: usize,
    /// Copies of one block requested at once in the end game.
    pub end_game_copies: u8,
    /// `NotFound` answers for claimed blocks, in a row, before a ban.
    pub max_useless: u32,
    /// Give up this long after the start.
    pub deadline: Duration,
}

impl Params {
    pub fn new(blocks: u64) -> Self {
        Self {
            blocks,
            blocks_per_request: 4,
            fast_answer: Duration::from_millis(20),
            parallel: 8,
            attempt_budget: 4,
            attempt_timeout: Backoff::new(Duration::from_secs(5), Duration::from_secs(320)),
            rediscover: Backoff::new(Duration::from_secs(1), Duration::from_secs(8)),
            busy: Backoff::new(Duration::from_millis(100), Duration::from_millis(400)),
            max_providers: 24,
            have_refresh: Duration::from_secs(1),
            max_wants: 3,
            end_game_copies: 2,
            max_useless: 3,
            deadline: Duration::from_secs(120),
        }
    }

    fn chunk(&self) -> u32 {
        self.blocks_per_request.clamp(1, MAX_BLOCKS_PER_REQUEST)
    }
}

/// Identifies one request from the core to the driver and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// How a provider became known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A DHT lookup (or the advert lookup that started the pull).
    Dht,
    /// Named by another peer (peer exchange): a hint.
    Exchange,
}

/// What a request asks a provider for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Exactly blocks `first .. first + count`.
    Blocks { first: u64, count: u32 },
    /// A run of at most `max` of the `wanted` blocks, of the provider's choosing.
    Want { wanted: Bitmap, max: u32 },
}

impl Ask {
    /// Whether an answer carrying blocks `first .. first + count` answers
    /// this request; anything else is a protocol violation.
    pub fn admits(&self, first: u64, count: u32) -> bool {
        match self {
            Ask::Blocks {
                first: asked,
                count: asked_count,
            } => first == *asked && count == *asked_count,
            Ask::Want { wanted, max } => {
                (1..=*max).contains(&count)
                    && first
                        .checked_add(u64::from(count))
                        .is_some_and(|end| (first..end).all(|b| wanted.contains(b)))
            }
        }
    }
}

/// A provider's holdings, as an answer reported them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holdings {
    /// Every block (a complete package).
    All,
    /// These blocks (a download in progress).
    Some(Bitmap),
    /// Not said, or said in a form that does not parse.
    Unknown,
}

/// How a provider answered a request.
#[derive(Clone, Debug)]
pub enum Answer<P, A> {
    /// Blocks arrived and were checked against the component hash:
    /// `verified` blocks from `first` checked out, adding `new_bytes` bytes
    /// of data; `bad` says what was wrong with the rest, if anything.
    Blocks {
        first: u64,
        verified: u32,
        new_bytes: u64,
        bad: Option<String>,
        holdings: Holdings,
        hints: Vec<(P, A)>,
    },
    /// At its upload limit; `hints` are other peers fetching the package.
    Busy { hints: Vec<(P, A)> },
    /// It does not hold (all of) what was asked.
    NotFound,
    /// The request failed in transport (unreachable, connection closed, ...).
    Failed(String),
    /// An answer of the wrong kind.
    Unexpected(String),
}

/// Something that happened, reported to the core with the time it happened.
#[derive(Clone, Debug)]
pub enum Event<P, A> {
    /// A provider lookup asked for with [`Action::Discover`] ended.
    Discovered(Vec<(P, A)>),
    /// The answer to a request. Answers to requests the core cancelled
    /// (or never made) are ignored.
    Answered { id: RequestId, answer: Answer<P, A> },
}

/// What the driver is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P, A> {
    /// Send `ask` to `peer` (reachable through `contact`) and report the
    /// answer as [`Event::Answered`] with `id`.
    Request {
        id: RequestId,
        peer: P,
        contact: A,
        ask: Ask,
    },
    /// Drop request `id`: its deadline passed or it is no longer needed.
    Cancel { id: RequestId },
    /// Look up at most `limit` providers; report them as [`Event::Discovered`].
    Discover { limit: usize },
    /// `peer` sent bad data or lied about its holdings: never use it for
    /// this package again.
    Ban { peer: P, reason: String },
    /// Every block is verified. The last action.
    Complete,
    /// The deadline passed. The last action; see [`SwarmCore::outcomes`].
    GiveUp,
}

#[derive(Debug)]
struct Provider<A> {
    origin: Origin,
    contact: A,
    /// Blocks it holds, as last reported.
    have: Option<Bitmap>,
    /// Every block it ever said it holds (holdings only grow).
    claimed: Option<Bitmap>,
    /// When a `Want` last found it with nothing we needed.
    have_at: Option<Instant>,
    in_flight: Option<RequestId>,
    /// Blocks per request to it now (see [`Params::fast_answer`]).
    chunk: u32,
    failures: u32,
    not_before: Option<Instant>,
    /// Verified bytes received from it.
    served: u64,
    /// `Busy` answers in a row.
    busy_streak: u32,
    /// Answers in a row that added nothing (`NotFound`, or only blocks we
    /// already had): each backs the provider off longer.
    useless_streak: u32,
    /// Of those, the ones that contradicted its earlier claims (`NotFound`
    /// for blocks it said it holds): [`Params::max_useless`] of them ban it.
    contradictions: u32,
    /// Sent bad data: never asked again (kept to credit its good blocks).
    banned: bool,
    /// How long its answers with new data take.
    answer_time: Option<AnswerTime>,
}

/// `Busy` answers in a row after which a provider no longer counts as
/// one that will serve soon (so lookups for others continue).
const BUSY_STREAK_UNPROMISING: u32 = 3;

impl<A> Provider<A> {
    fn ready(&self, now: Instant) -> bool {
        !self.banned && self.in_flight.is_none() && self.not_before.is_none_or(|t| now >= t)
    }

    /// Whether it can be expected to serve: not banned, not failing, not
    /// answering uselessly and not persistently busy.
    fn promising(&self) -> bool {
        !self.banned
            && self.failures == 0
            && self.useless_streak == 0
            && self.busy_streak < BUSY_STREAK_UNPROMISING
    }
}

/// How long answers take, smoothed as TCP smooths round trips (RFC 6298):
/// a mean and a mean deviation. On a link whose queue holds answers for
/// seconds (a home uplink shared by acknowledgements, requests and other
/// answers), a fixed deadline shorter than that throws away every answer
/// that was on its way and asks again elsewhere; a request's deadline is
/// therefore at least the mean plus four deviations.
#[derive(Clone, Copy, Debug)]
struct AnswerTime {
    mean: Duration,
    deviation: Duration,
}

impl AnswerTime {
    fn new(took: Duration) -> Self {
        Self {
            mean: took,
            deviation: took / 2,
        }
    }

    fn sample(estimate: &mut Option<AnswerTime>, took: Duration) {
        match estimate {
            None => *estimate = Some(AnswerTime::new(took)),
            Some(e) => {
                let error = took.abs_diff(e.mean);
                e.deviation = (e.deviation * 3 + error) / 4;
                e.mean = (e.mean * 7 + took) / 8;
            }
        }
    }

    /// The time within which an answer can be expected.
    fn expected(&self) -> Duration {
        self.mean + self.deviation * 4
    }
}

#[derive(Debug)]
struct InFlight<P> {
    peer: P,
    ask: Ask,
    sent: Instant,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Finished,
}

/// The decisions of one swarming download (see [`crate::swarm`]).
#[derive(Debug)]
pub struct SwarmCore<P: Peer, A> {
    params: Params,
    started: Instant,
    /// The latest time the core was told.
    now: Instant,
    /// Verified blocks.
    have: Bitmap,
    providers: BTreeMap<P, Provider<A>>,
    /// Per block: `Blocks` requests in flight for it.
    requested: Vec<u8>,
    /// Blocks offered in a `Want` in flight.
    offered: Bitmap,
    requests: BTreeMap<RequestId, InFlight<P>>,
    next_id: u64,
    /// Peers banned for this package: never tracked again.
    banned: BTreeSet<P>,
    /// Failures of providers dropped for failing: found again, they start
    /// where they left off (long deadlines), not afresh.
    dropped: BTreeMap<P, u32>,
    discovering: bool,
    /// Lookups in a row that found nobody new.
    fruitless_lookups: u32,
    next_lookup: Instant,
    actions: VecDeque<Action<P, A>>,
    outcomes: Vec<String>,
    /// Outcomes beyond [`MAX_OUTCOMES`], counted.
    more_outcomes: usize,
    state: State,
    rng: StdRng,
    /// How long answers with new data take, from any provider: the
    /// estimate for providers that have not answered yet (at most
    /// [`PRIOR_TIMEOUTS`] first deadlines, so that one provider that
    /// trickles its answers cannot make every silent provider hold a
    /// request for minutes).
    answer_time: Option<AnswerTime>,
}

/// The most first deadlines (`attempt_timeout.initial`) a request to a
/// provider that has not answered yet waits, however slow other providers'
/// answers were.
const PRIOR_TIMEOUTS: u32 = 4;

impl<P: Peer, A: Clone + Default + PartialEq> SwarmCore<P, A> {
    /// A download of `params.blocks` blocks starting at `now` with the
    /// providers found before it started. `seed` makes the random choices
    /// repeatable.
    pub fn new(
        params: Params,
        providers: impl IntoIterator<Item = (P, A)>,
        now: Instant,
        seed: u64,
    ) -> Self {
        let blocks = params.blocks;
        let mut core = Self {
            next_lookup: now + params.rediscover.delay(0),
            params,
            started: now,
            now,
            have: Bitmap::empty(blocks),
            providers: BTreeMap::new(),
            requested: vec![0; blocks as usize],
            offered: Bitmap::empty(blocks),
            requests: BTreeMap::new(),
            next_id: 0,
            banned: BTreeSet::new(),
            dropped: BTreeMap::new(),
            discovering: false,
            fruitless_lookups: 0,
            actions: VecDeque::new(),
            outcomes: Vec::new(),
            more_outcomes: 0,
            state: State::Running,
            rng: StdRng::seed_from_u64(seed),
            answer_time: None,
        };
        for (peer, contact) in providers {
            core.learn(peer, contact, Origin::Dht);
        }
        core
    }

    /// Blocks verified before this download started (one resumed from
    /// disk): never asked for.
    pub fn already_have(&mut self, held: &Bitmap) {
        for block in held.iter().filter(|b| *b < self.params.blocks) {
            self.have.insert(block);
        }
    }

    /// Takes in something that happened at `now`.
    pub fn handle(&mut self, now: Instant, event: Event<P, A>) {
        self.now = self.now.max(now);
        if self.state == State::Finished {
            return;
        }
        match event {
            Event::Discovered(found) => self.discovered(found),
            Event::Answered { id, answer } => self.answered(id, answer),
        }
    }

    /// The next thing to do at `now`, if any. Call until it returns `None`
    /// after every [`SwarmCore::handle`] and whenever
    /// [`SwarmCore::next_timeout`] passes.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action<P, A>> {
        self.now = self.now.max(now);
        if self.actions.is_empty() && self.state == State::Running {
            self.decide();
        }
        self.actions.pop_front()
    }

    /// When the core next wants [`SwarmCore::poll_action`] called if nothing
    /// else happens: a request deadline, a provider whose back-off ends, a
    /// lookup that is due, or the download's deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.state == State::Finished {
            return None;
        }
        let now = self.now;
        let refresh = self.params.have_refresh;
        let providers = self.providers.values().flat_map(|p| {
            [p.not_before, p.have_at.map(|at| at + refresh)]
                .into_iter()
                .flatten()
        });
        let lookup = (!self.discovering && self.needs_providers()).then_some(self.next_lookup);
        self.requests
            .values()
            .map(|r| r.deadline)
            .chain(providers)
            .chain(lookup)
            .filter(|t| *t > now)
            .chain([self.started + self.params.deadline])
            .min()
    }

    /// Whether every block is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// The verified blocks.
    pub fn verified(&self) -> &Bitmap {
        &self.have
    }

    /// Providers that sent verified blocks, most bytes first.
    pub fn sources(&self) -> Vec<P> {
        let mut sources: Vec<(P, u64)> = self
            .providers
            .iter()
            .filter(|(_, p)| p.served > 0)
            .map(|(peer, p)| (*peer, p.served))
            .collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sources.into_iter().map(|(peer, _)| peer).collect()
    }

    /// What went wrong with providers so far, in order: the first
    /// [`MAX_OUTCOMES`], then how many more there were.
    pub fn outcomes(&self) -> Vec<String> {
        let mut outcomes = self.outcomes.clone();
        if self.more_outcomes > 0 {
            outcomes.push(format!("{} more", self.more_outcomes));
        }
        outcomes
    }

    fn note(&mut self, outcome: String) {
        if self.outcomes.len() < MAX_OUTCOMES {
            self.outcomes.push(outcome);
        } else {
            self.more_outcomes += 1;
        }
    }

    /// Providers tracked now.
    pub fn providers(&self) -> usize {
        self.providers.len()
    }

    /// Tracks a new provider, if there is room (forgetting useless ones).
    /// Hints from peer exchange get at most half the places and only ever
    /// displace other hints.
    fn learn(&mut self, peer: P, contact: A, origin: Origin) {
        if self.banned.contains(&peer) {
            return;
        }
        if let Some(known) = self.providers.get_mut(&peer) {
            if known.contact == A::default() {
                known.contact = contact;
            }
            return;
        }
        let max = self.params.max_providers.max(2);
        let hints = self
            .providers
            .values()
            .filter(|p| p.origin == Origin::Exchange)
            .count();
        if origin == Origin::Exchange && hints >= max / 2 && self.providers.len() >= max / 2 {
            return;
        }
        if self.providers.len() >= max {
            let now = self.now;
            let evict = self
                .providers
                .iter()
                .find(|(_, p)| {
                    p.in_flight.is_none()
                        && p.served == 0
                        && (origin == Origin::Dht || p.origin == Origin::Exchange)
                        && (!p.promising() || !p.ready(now))
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
                origin,
                contact,
                have: None,
                claimed: None,
                have_at: None,
                in_flight: None,
                chunk: self.params.chunk(),
                failures: self.dropped.remove(&peer).unwrap_or(0),
                not_before: None,
                served: 0,
                busy_streak: 0,
                useless_streak: 0,
                contradictions: 0,
                banned: false,
                answer_time: None,
            },
        );
    }

    fn discovered(&mut self, mut found: Vec<(P, A)>) {
        self.discovering = false;
        found.shuffle(&mut self.rng);
        let before = self.providers.len();
        for (peer, contact) in found {
            self.learn(peer, contact, Origin::Dht);
        }
        self.fruitless_lookups = if self.providers.len() > before {
            0
        } else {
            self.fruitless_lookups.saturating_add(1)
        };
        self.next_lookup = self.now + self.params.rediscover.delay(self.fruitless_lookups);
    }

    fn answered(&mut self, id: RequestId, answer: Answer<P, A>) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        self.release(&request);
        let peer = request.peer;
        if let Some(state) = self.providers.get_mut(&peer) {
            state.in_flight = None;
        }
        match answer {
            Answer::Blocks {
                first,
                verified,
                new_bytes,
                bad,
                holdings,
                hints,
            } => {
                let end = first
                    .saturating_add(u64::from(verified))
                    .min(self.params.blocks);
                for block in first..end {
                    self.have.insert(block);
                }
                let took = self.now.saturating_duration_since(request.sent);
                let fast = self.params.fast_answer;
                let smallest = self.params.chunk();
                if new_bytes > 0 && bad.is_none() {
                    AnswerTime::sample(&mut self.answer_time, took);
                }
                if let Some(state) = self.providers.get_mut(&peer) {
                    state.served += new_bytes;
                    if new_bytes > 0 && bad.is_none() {
                        AnswerTime::sample(&mut state.answer_time, took);
                        if took < fast {
                            state.chunk = (state.chunk * 2).min(MAX_BLOCKS_PER_REQUEST);
                        } else if took > fast * 4 {
                            state.chunk = (state.chunk / 2).max(smallest);
                        }
                    }
                    // Only new data earns trust back: valid blocks we
                    // already had are no better than no answer.
                    if new_bytes > 0 {
                        state.failures = 0;
                        state.busy_streak = 0;
                        state.useless_streak = 0;
                        state.contradictions = 0;
                    }
                }
                if let Some(reason) = bad {
                    self.bad(peer, reason);
                    return;
                }
                if new_bytes == 0 {
                    self.useless(peer, false);
                }
                self.record_holdings(peer, holdings);
                self.learn_hints(hints);
            }
            Answer::Busy { hints } => {
                self.learn_hints(hints);
                let now = self.now;
                let busy = self.params.busy;
                if let Some(state) = self.providers.get_mut(&peer) {
                    state.busy_streak = state.busy_streak.saturating_add(1).min(8);
                    state.not_before = Some(now + busy.delay(state.busy_streak - 1));
                }
            }
            Answer::NotFound => {
                let now = self.now;
                let Some(state) = self.providers.get_mut(&peer) else {
                    return;
                };
                state.have = None;
                // Holdings only grow: a peer that claimed some of what was
                // asked and now has none of it is stale at best, lying at worst.
                let contradicts =
                    state
                        .claimed
                        .as_ref()
                        .is_some_and(|claimed| match &request.ask {
                            Ask::Want { wanted, .. } => wanted.intersects(claimed),
                            Ask::Blocks { first, count } => {
                                (*first..first + u64::from(*count)).any(|b| claimed.contains(b))
                            }
                        });
                match request.ask {
                    // Nothing we need yet: ask again later.
                    Ask::Want { .. } => state.have_at = Some(now),
                    // Its bitmap was stale: let it choose next time.
                    Ask::Blocks { .. } => state.have_at = None,
                }
                self.useless(peer, contradicts);
            }
            Answer::Failed(why) => self.failed(peer, why),
            Answer::Unexpected(what) => self.failed(peer, what),
        }
    }

    /// An answer from `peer` added nothing. It is left alone for
    /// `have_refresh` doubling with each such answer in a row (at most 4x),
    /// no longer counts as a provider that will serve (lookups go on), and
    /// is banned after [`Params::max_useless`] answers in a row that
    /// contradicted what it claimed to hold.
    fn useless(&mut self, peer: P, contradicts: bool) {
        let now = self.now;
        let refresh = self.params.have_refresh;
        let max_useless = self.params.max_useless.max(1);
        let Some(state) = self.providers.get_mut(&peer) else {
            return;
        };
        state.useless_streak = state.useless_streak.saturating_add(1);
        state.not_before = Some(now + refresh * (1 << (state.useless_streak - 1).min(2)));
        if contradicts {
            state.contradictions += 1;
            if state.contradictions >= max_useless {
                let reason = format!(
                    "claimed blocks it did not send ({} times since its last new data)",
                    state.contradictions
                );
                self.bad(peer, reason);
            }
        }
    }

    /// Undoes a request's bookkeeping of blocks in flight.
    fn release(&mut self, request: &InFlight<P>) {
        match &request.ask {
            Ask::Want { wanted, .. } => {
                for block in wanted.iter() {
                    self.offered.remove(block);
                }
            }
            Ask::Blocks { first, count } => {
                for block in *first..first + u64::from(*count) {
                    if let Some(copies) = self.requested.get_mut(block as usize) {
                        *copies = copies.saturating_sub(1);
                    }
                }
            }
        }
    }

    fn record_holdings(&mut self, peer: P, holdings: Holdings) {
        let blocks = self.params.blocks;
        let Some(state) = self.providers.get_mut(&peer) else {
            return;
        };
        state.have = match holdings {
            Holdings::All => Some(Bitmap::full(blocks)),
            Holdings::Some(bitmap) if bitmap.len() == blocks => Some(bitmap),
            Holdings::Some(_) | Holdings::Unknown => None,
        };
        if let Some(have) = &state.have {
            state
                .claimed
                .get_or_insert_with(|| Bitmap::empty(blocks))
                .union_with(have);
        }
    }

    fn learn_hints(&mut self, hints: Vec<(P, A)>) {
        for (peer, contact) in hints {
            self.learn(peer, contact, Origin::Exchange);
        }
    }

    /// A provider failed: back it off, drop it after too many failures if it
    /// never delivered. What it holds is kept: a failed request says
    /// nothing about that, and forgetting it would leave the provider to
    /// wait for a `Want` slot.
    fn failed(&mut self, peer: P, why: String) {
        let now = self.now;
        let budget = self.params.attempt_budget.max(1);
        let timeout = self.params.attempt_timeout;
        let Some(state) = self.providers.get_mut(&peer) else {
            return;
        };
        state.failures += 1;
        state.not_before = Some(now + timeout.delay(state.failures.min(4)) / 4);
        let (failures, served) = (state.failures, state.served);
        self.note(format!("{peer}: {why}"));
        if failures >= budget && served == 0 {
            self.providers.remove(&peer);
            if self.dropped.len() >= MAX_REMEMBERED_FAILURES {
                self.dropped.clear();
            }
            self.dropped.insert(peer, failures);
        }
    }

    fn bad(&mut self, peer: P, reason: String) {
        self.banned.insert(peer);
        self.note(format!("{peer}: {reason} (banned)"));
        self.actions.push_back(Action::Ban { peer, reason });
        if let Some(state) = self.providers.get_mut(&peer) {
            if state.served == 0 {
                self.providers.remove(&peer);
            } else {
                state.banned = true;
                state.have = None;
            }
        }
    }

    fn needs_providers(&self) -> bool {
        let promising = self.providers.values().filter(|p| p.promising()).count();
        promising < self.params.max_providers / 2
    }

    fn decide(&mut self) {
        let now = self.now;
        self.expire(now);
        if self.have.is_full() {
            self.finish(Action::Complete);
            return;
        }
        if now >= self.started + self.params.deadline {
            self.finish(Action::GiveUp);
            return;
        }
        if !self.discovering && now >= self.next_lookup && self.needs_providers() {
            self.discovering = true;
            self.actions.push_back(Action::Discover {
                limit: self.params.max_providers,
            });
        }
        let mut slots = self
            .params
            .parallel
            .max(1)
            .saturating_sub(self.requests.len());
        self.schedule(now, &mut slots);
        self.ask_wants(now, &mut slots);
    }

    /// Requests past their deadline fail.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let request = self.requests.remove(&id).expect("listed above");
            self.release(&request);
            if let Some(state) = self.providers.get_mut(&request.peer) {
                state.in_flight = None;
            }
            self.actions.push_back(Action::Cancel { id });
            self.failed(request.peer, "stalled: no answer in time".into());
        }
    }

    fn finish(&mut self, last: Action<P, A>) {
        self.state = State::Finished;
        for id in std::mem::take(&mut self.requests).into_keys() {
            self.actions.push_back(Action::Cancel { id });
        }
        self.actions.push_back(last);
    }

    fn request(&mut self, peer: P, ask: Ask) {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let state = self
            .providers
            .get_mut(&peer)
            .expect("requests go to providers");
        state.in_flight = Some(id);
        let timeout = self.params.attempt_timeout;
        // A provider's own answers bound only its own requests; others'
        // answers are a prior, capped.
        let expected = match (state.answer_time, self.answer_time) {
            (Some(own), _) => own.expected(),
            (None, Some(prior)) => prior
                .expected()
                .min(timeout.initial.saturating_mul(PRIOR_TIMEOUTS)),
            (None, None) => Duration::ZERO,
        }
        .min(timeout.max);
        let deadline = self.now + timeout.delay(state.failures).max(expected);
        let contact = state.contact.clone();
        self.requests.insert(
            id,
            InFlight {
                peer,
                ask: ask.clone(),
                sent: self.now,
                deadline,
            },
        );
        self.actions.push_back(Action::Request {
            id,
            peer,
            contact,
            ask,
        });
    }

    /// Gives every idle provider with a known bitmap the rarest missing
    /// chunk it holds.
    fn schedule(&mut self, now: Instant, slots: &mut usize) {
        if *slots == 0 {
            return;
        }
        let blocks = self.params.blocks as usize;
        let mut rarity = vec![0u64; blocks];
        for have in self.providers.values().filter_map(|p| p.have.as_ref()) {
            for block in have.iter() {
                rarity[block as usize] += 1;
            }
        }
        let all_requested = (0..blocks).all(|b| {
            self.have.contains(b as u64) || self.requested[b] > 0 || self.offered.contains(b as u64)
        });
        let mut idle: Vec<P> = self
            .providers
            .iter()
            .filter(|(_, p)| p.have.is_some() && p.ready(now))
            .map(|(peer, _)| *peer)
            .collect();
        idle.shuffle(&mut self.rng);
        let copies_allowed = self.params.end_game_copies.max(1);
        for peer in idle {
            if *slots == 0 {
                break;
            }
            let provider = &self.providers[&peer];
            let chunk = provider.chunk as usize;
            let holds = provider.have.as_ref().expect("filtered above");
            let wanted = |b: usize| {
                let copies = self.requested[b] + u8::from(self.offered.contains(b as u64));
                !self.have.contains(b as u64)
                    && holds.contains(b as u64)
                    // End game: duplicate what is slow to arrive.
                    && (copies == 0 || all_requested && copies < copies_allowed)
            };
            // A chunk is as rare as its rarest block this provider can give
            // us; among equally rare ones, the longest run we would get
            // wins (so growing chunks do not break what is left into
            // fragments), random among ties.
            let chunks = (0..blocks.div_ceil(chunk)).filter_map(|c| {
                let end = ((c + 1) * chunk).min(blocks);
                let first = (c * chunk..end).find(|b| wanted(*b))?;
                let run = (first..end).take_while(|b| wanted(*b)).count();
                let rarest = (first..end)
                    .filter(|b| wanted(*b))
                    .map(|b| rarity[b])
                    .min()?;
                let shortfall = (chunk - run) as u64;
                Some(((first, run), rarest * (chunk as u64 + 1) + shortfall))
            });
            let Some((first, count)) = super::pick::lowest(chunks, &mut self.rng) else {
                continue;
            };
            for block in first..first + count {
                self.requested[block] = self.requested[block].saturating_add(1);
            }
            *slots -= 1;
            self.request(
                peer,
                Ask::Blocks {
                    first: first as u64,
                    count: count as u32,
                },
            );
        }
    }

    /// Sends `Want`s (any needed chunk of the provider's choosing) to
    /// providers whose holdings are unknown or offered nothing still needed.
    fn ask_wants(&mut self, now: Instant, slots: &mut usize) {
        let blocks = self.params.blocks;
        // Each Want offers blocks no other request in flight covers, so two
        // providers do not answer with the same chunk.
        let mut offerable: Vec<u64> = (0..blocks)
            .filter(|b| {
                !self.have.contains(*b)
                    && self.requested[*b as usize] == 0
                    && !self.offered.contains(*b)
            })
            .collect();
        if offerable.is_empty() {
            return;
        }
        let max_wants = self.params.max_wants.max(1);
        let wants = self
            .requests
            .values()
            .filter(|r| matches!(r.ask, Ask::Want { .. }))
            .count();
        let refresh = self.params.have_refresh;
        let needed = self.have.complement();
        let mut candidates: Vec<P> = self
            .providers
            .iter()
            .filter(|(_, p)| {
                let useful = p.have.as_ref().is_some_and(|have| have.intersects(&needed));
                let stale = p
                    .have_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= refresh);
                !useful && stale && p.ready(now)
            })
            .map(|(peer, _)| *peer)
            .collect();
        // Random order, but providers that failed least first, so that a
        // few stallers cannot keep the Want slots from fresh providers.
        candidates.shuffle(&mut self.rng);
        candidates.sort_by_key(|peer| self.providers[peer].failures);
        let allowed = max_wants.saturating_sub(wants).min(*slots);
        for (peer, wants) in candidates.into_iter().take(allowed).zip(wants..) {
            if offerable.is_empty() {
                break;
            }
            let per_request = self.providers[&peer].chunk as usize;
            // Split what is left between the Wants still allowed.
            let share = offerable.len().div_ceil(max_wants - wants).max(per_request);
            let mut wanted = Bitmap::empty(blocks);
            for block in offerable.drain(..share.min(offerable.len())) {
                wanted.insert(block);
                self.offered.insert(block);
            }
            *slots -= 1;
            self.providers.get_mut(&peer).expect("listed above").have = None;
            self.request(
                peer,
                Ask::Want {
                    wanted,
                    max: per_request as u32,
                },
            );
        }
    }
}
