//! The swarm core driven with no sockets: hand-made situations for single
//! decisions, and a small discrete-event model of peers (honest, partial,
//! dying, stalling, busy, empty, corrupting, lying) for properties that
//! must hold in every run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::backoff::Backoff;
use crate::blocks::{BLOCK_SIZE, Bitmap};

fn params(blocks: u64) -> Params {
    let mut params = Params::new(blocks);
    params.attempt_timeout = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    params.deadline = Duration::from_secs(60);
    // Answers here come at once: keep chunks fixed unless a test is about them.
    params.fast_answer = Duration::ZERO;
    params
}

fn drain(core: &mut SwarmCore<u32, ()>, now: Instant) -> Vec<Action<u32, ()>> {
    std::iter::from_fn(|| core.poll_action(now)).collect()
}

fn requests(actions: &[Action<u32, ()>]) -> Vec<(RequestId, u32, Ask)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request { id, peer, ask, .. } => Some((*id, *peer, ask.clone())),
            _ => None,
        })
        .collect()
}

fn blocks_answer(first: u64, count: u32, holdings: Holdings) -> Answer<u32, ()> {
    Answer::Blocks {
        first,
        verified: count,
        new_bytes: u64::from(count) * BLOCK_SIZE,
        bad: None,
        holdings,
        hints: Vec::new(),
    }
}

#[test]
fn unknown_providers_get_disjoint_wants_covering_what_is_needed() {
    let t0 = Instant::now();
    let mut core = SwarmCore::new(params(24), (1..=5).map(|p| (p, ())), t0, 1);
    let asked = requests(&drain(&mut core, t0));
    assert_eq!(asked.len(), 3, "at most max_wants Wants: {asked:?}");
    let mut seen = Bitmap::empty(24);
    for (_, _, ask) in &asked {
        let Ask::Want { wanted, max } = ask else {
            panic!("{ask:?}")
        };
        assert_eq!(*max, 4);
        assert!(!seen.intersects(wanted), "Wants overlap");
        for block in wanted.iter() {
            seen.insert(block);
        }
    }
    assert!(seen.is_full(), "together they offer every needed block");
}

#[test]
fn the_rarest_chunk_goes_first() {
    let t0 = Instant::now();
    let mut core = SwarmCore::new(params(16), [(1, ()), (2, ())], t0, 2);
    let wants = requests(&drain(&mut core, t0));
    assert_eq!(wants.len(), 2);
    // Peer 1 sends blocks 0..4 and holds 0..8; peer 2 sends 12..16 and holds all.
    for (id, peer, _) in wants {
        let answer = match peer {
            1 => blocks_answer(0, 4, Holdings::Some(Bitmap::from_range(16, 0..8))),
            _ => blocks_answer(12, 4, Holdings::All),
        };
        core.handle(t0, Event::Answered { id, answer });
    }
    // Missing: 4..12. Blocks 4..8 are held by both, 8..12 by peer 2 only.
    let mut asked: Vec<(u32, Ask)> = requests(&drain(&mut core, t0))
        .into_iter()
        .map(|(_, peer, ask)| (peer, ask))
        .collect();
    asked.sort_by_key(|(peer, _)| *peer);
    assert_eq!(
        asked,
        [
            (1, Ask::Blocks { first: 4, count: 4 }),
            (2, Ask::Blocks { first: 8, count: 4 }),
        ]
    );
}

/// Serves every request of a single provider holding everything, each
/// answer arriving `took` after its request (or per `took_for(n)`), and
/// returns the block counts asked, in order.
fn sizes_asked_of_one_provider(blocks: u64, took_for: impl Fn(usize) -> Duration) -> Vec<u32> {
    let t0 = Instant::now();
    let mut params = params(blocks);
    params.fast_answer = Duration::from_millis(20);
    let mut core = SwarmCore::new(params, [(1, ())], t0, 4);
    let mut now = t0;
    let mut sizes = Vec::new();
    let mut pending = requests(&drain(&mut core, now));
    while let Some((id, _, ask)) = pending.pop() {
        now += took_for(sizes.len());
        let (first, count) = match ask {
            Ask::Want { wanted, max } => (wanted.iter().next().unwrap(), max),
            Ask::Blocks { first, count } => (first, count),
        };
        let count = count.min((blocks - first) as u32);
        sizes.push(count);
        let answer = blocks_answer(first, count, Holdings::All);
        core.handle(now, Event::Answered { id, answer });
        pending = requests(&drain(&mut core, now));
        assert!(pending.len() <= 1, "one request in flight per provider");
    }
    assert!(core.is_complete(), "asked {sizes:?}");
    sizes
}

#[test]
fn a_fast_provider_gets_ever_larger_requests_and_a_slow_one_small_ones() {
    let max = crate::blocks::MAX_BLOCKS_PER_REQUEST;
    // Loopback-fast answers: the size doubles up to the largest requests.
    // (Chunks are aligned runs chosen at random, so a run can be shorter
    // than the size where earlier requests took part of it.)
    let fast = sizes_asked_of_one_provider(256, |_| Duration::from_millis(1));
    assert_eq!(fast[0], 4, "{fast:?}");
    assert!(fast.contains(&max), "{fast:?}");
    assert!(
        fast.len() <= 12,
        "{} requests for 256 blocks: {fast:?}",
        fast.len()
    );
    // 64 KiB at 512 KiB/s takes 125 ms: chunks stay small.
    let slow = sizes_asked_of_one_provider(64, |_| Duration::from_millis(125));
    assert!(slow.iter().all(|n| *n == 4), "{slow:?}");
    // Between the two thresholds the size holds.
    let steady = sizes_asked_of_one_provider(64, |_| Duration::from_millis(50));
    assert!(steady.iter().all(|n| *n == 4), "{steady:?}");
    // Fast, then slow: back down to the first size within four answers,
    // never below it.
    let slowing =
        sizes_asked_of_one_provider(512, |n| Duration::from_millis(if n < 5 { 1 } else { 500 }));
    assert!(slowing[..6].iter().any(|n| *n >= 32), "{slowing:?}");
    assert!(slowing[10..].iter().all(|n| *n == 4), "{slowing:?}");
}

#[test]
fn slow_blocks_are_duplicated_in_the_end_game_but_never_more_than_twice() {
    let t0 = Instant::now();
    let mut core = SwarmCore::new(params(8), [(1, ()), (2, ()), (3, ())], t0, 3);
    let wants = requests(&drain(&mut core, t0));
    assert_eq!(wants.len(), 2, "two Wants of one chunk each cover 8 blocks");
    // Everything but block 7 arrives; both senders hold everything.
    let (first, second) = (wants[0].0, wants[1].0);
    core.handle(
        t0,
        Event::Answered {
            id: first,
            answer: blocks_answer(0, 4, Holdings::All),
        },
    );
    core.handle(
        t0,
        Event::Answered {
            id: second,
            answer: blocks_answer(4, 3, Holdings::All),
        },
    );
    let asked = requests(&drain(&mut core, t0));
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|(_, _, ask)| *ask == Ask::Blocks { first: 7, count: 1 })
    );
    assert_ne!(asked[0].1, asked[1].1, "two copies from two providers");
    // Time passes without an answer: still two copies at most.
    let later = t0 + Duration::from_millis(100);
    assert!(requests(&drain(&mut core, later)).is_empty());
    // The first copy completes the download; the other is cancelled.
    core.handle(
        later,
        Event::Answered {
            id: asked[0].0,
            answer: blocks_answer(7, 1, Holdings::All),
        },
    );
    assert_eq!(
        drain(&mut core, later),
        [Action::Cancel { id: asked[1].0 }, Action::Complete]
    );
}

#[test]
fn a_verified_block_is_never_asked_again_and_completion_ends_it() {
    let t0 = Instant::now();
    let mut core = SwarmCore::new(params(2), [(1, ()), (2, ())], t0, 4);
    let asked = requests(&drain(&mut core, t0));
    assert_eq!(asked.len(), 1, "one Want covers both blocks");
    let (id, peer, _) = asked[0].clone();
    core.handle(
        t0,
        Event::Answered {
            id,
            answer: blocks_answer(0, 2, Holdings::All),
        },
    );
    assert_eq!(drain(&mut core, t0), [Action::Complete]);
    assert!(core.is_complete());
    assert_eq!(core.sources(), vec![peer]);
    assert_eq!(core.next_timeout(), None);
    assert_eq!(core.poll_action(t0 + Duration::from_secs(1)), None);
}

#[test]
fn a_peer_that_claims_blocks_and_never_sends_them_is_banned() {
    let t0 = Instant::now();
    let mut params = params(8);
    params.rediscover = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
    let mut core = SwarmCore::new(params, [(1, ())], t0, 9);
    let mut now = t0;
    let (id, _, _) = requests(&drain(&mut core, now))[0].clone();
    core.handle(
        now,
        Event::Answered {
            id,
            answer: blocks_answer(0, 1, Holdings::All),
        },
    );
    let mut useless = 0;
    loop {
        let actions = drain(&mut core, now);
        if let Some(Action::Ban { peer, reason }) =
            actions.iter().find(|a| matches!(a, Action::Ban { .. }))
        {
            assert_eq!(*peer, 1);
            assert!(reason.contains("claimed blocks"), "{reason}");
            break;
        }
        let asked = requests(&actions);
        for (id, _, _) in &asked {
            useless += 1;
            core.handle(
                now,
                Event::Answered {
                    id: *id,
                    answer: Answer::NotFound,
                },
            );
        }
        if asked.is_empty() {
            now = core.next_timeout().unwrap();
        }
    }
    assert_eq!(useless, 3);
    assert_eq!(core.sources(), vec![1], "its good block still counts");
}

#[test]
fn a_liar_that_sends_old_blocks_between_denials_is_still_banned() {
    let t0 = Instant::now();
    let mut params = params(8);
    params.rediscover = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
    let mut core = SwarmCore::new(params, [(1, ())], t0, 10);
    let mut now = t0;
    let (id, _, _) = requests(&drain(&mut core, now))[0].clone();
    // One real block, and a claim to hold everything.
    core.handle(
        now,
        Event::Answered {
            id,
            answer: blocks_answer(0, 1, Holdings::All),
        },
    );
    let mut answers = 0;
    let banned = loop {
        let actions = drain(&mut core, now);
        if let Some(Action::Ban { reason, .. }) =
            actions.iter().find(|a| matches!(a, Action::Ban { .. }))
        {
            break reason.clone();
        }
        for (id, _, _) in requests(&actions) {
            // Block 0 again (valid, nothing new), then a denial, and so on.
            let answer = if answers % 2 == 0 {
                Answer::Blocks {
                    first: 0,
                    verified: 1,
                    new_bytes: 0,
                    bad: None,
                    holdings: Holdings::All,
                    hints: Vec::new(),
                }
            } else {
                Answer::NotFound
            };
            answers += 1;
            core.handle(now, Event::Answered { id, answer });
        }
        now = core.next_timeout().unwrap();
        assert!(answers < 20, "never banned");
    };
    assert!(banned.contains("claimed blocks"), "{banned}");
    assert_eq!(
        answers, 6,
        "three denials, the old blocks between them earn nothing back"
    );
}

#[test]
fn useless_answers_back_off_and_do_not_stop_lookups_for_others() {
    let t0 = Instant::now();
    let mut params = params(48);
    params.max_wants = 12;
    params.parallel = 12;
    params.rediscover = Backoff::new(Duration::from_millis(500), Duration::from_millis(500));
    // Twelve providers (half of the 24 places) that never have anything.
    let mut core = SwarmCore::new(params, (1..=12).map(|p| (p, ())), t0, 11);
    let mut now = t0;
    let mut asked_at: BTreeMap<u32, Vec<Instant>> = BTreeMap::new();
    let mut lookups = 0;
    while now < t0 + Duration::from_secs(10) {
        for action in drain(&mut core, now) {
            match action {
                Action::Request { id, peer, .. } => {
                    asked_at.entry(peer).or_default().push(now);
                    core.handle(
                        now,
                        Event::Answered {
                            id,
                            answer: Answer::NotFound,
                        },
                    );
                }
                Action::Discover { .. } => {
                    lookups += 1;
                    core.handle(now, Event::Discovered(Vec::new()));
                }
                _ => {}
            }
        }
        now = core.next_timeout().unwrap();
    }
    assert!(lookups >= 10, "lookups went on: {lookups}");
    // Each is asked again after 1 s, 2 s, 4 s, 4 s: not every second.
    let gaps: Vec<u64> = asked_at[&1]
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    assert_eq!(gaps, [1000, 2000, 4000], "{gaps:?}");
}

#[test]
fn a_stalling_provider_gets_doubling_deadlines_and_the_pull_gives_up() {
    let t0 = Instant::now();
    let mut params = params(4);
    params.deadline = Duration::from_secs(3);
    let mut core = SwarmCore::new(params, [(1, ())], t0, 5);
    let mut now = t0;
    let mut sent = Vec::new();
    let mut cancelled = 0;
    loop {
        let actions = drain(&mut core, now);
        for action in &actions {
            match action {
                Action::Request { peer, .. } => sent.push((now, *peer)),
                Action::Cancel { .. } => cancelled += 1,
                // The lookup finds the staller again.
                Action::Discover { .. } => core.handle(now, Event::Discovered(vec![(1, ())])),
                _ => {}
            }
        }
        if actions.contains(&Action::GiveUp) {
            break;
        }
        now = core.next_timeout().expect("running");
    }
    assert!(now >= t0 + Duration::from_secs(3));
    // 0.2 s, then 0.1 s off, 0.4 s, 0.2 s off, 0.8 s, 0.4 s off, 1.6 s.
    let gaps: Vec<u64> = sent
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis() as u64)
        .collect();
    assert_eq!(&gaps[..2], &[300, 600], "{gaps:?}");
    assert_eq!(cancelled, sent.len(), "every request was cancelled");
    assert!(core.outcomes().iter().all(|o| o.contains("stalled")));
    assert!(core.sources().is_empty());
}

#[test]
fn busy_is_backed_off_longer_each_time_and_is_not_a_failure() {
    let t0 = Instant::now();
    let mut params = params(4);
    params.rediscover = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
    let mut core = SwarmCore::new(params, [(1, ())], t0, 6);
    let mut now = t0;
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let (id, _, _) = requests(&drain(&mut core, now))[0].clone();
        core.handle(
            now,
            Event::Answered {
                id,
                answer: Answer::Busy { hints: Vec::new() },
            },
        );
        let next = core.next_timeout().unwrap();
        gaps.push((next - now).as_millis() as u64);
        now = next;
    }
    assert_eq!(gaps, [100, 200, 400, 400, 400]);
    assert!(core.outcomes().is_empty(), "busy is not a failure");
    assert_eq!(core.providers(), 1);
}

#[test]
fn hints_fill_at_most_half_the_places() {
    let t0 = Instant::now();
    let mut params = params(8);
    params.max_providers = 6;
    params.parallel = 1;
    let mut core = SwarmCore::new(params, [(1, ())], t0, 7);
    let (id, _, _) = requests(&drain(&mut core, t0))[0].clone();
    let hints = (100..120).map(|p| (p, ())).collect();
    core.handle(
        t0,
        Event::Answered {
            id,
            answer: Answer::Blocks {
                first: 0,
                verified: 1,
                new_bytes: BLOCK_SIZE,
                bad: None,
                holdings: Holdings::All,
                hints,
            },
        },
    );
    assert_eq!(core.providers(), 4, "1 from the DHT and 3 hints");
    // DHT providers still find room.
    core.handle(t0, Event::Discovered(vec![(2, ()), (3, ())]));
    assert_eq!(core.providers(), 6);
}

#[test]
fn lookups_back_off_while_they_find_nobody_new() {
    let t0 = Instant::now();
    let mut core = SwarmCore::new(params(4), std::iter::empty(), t0, 8);
    let mut now = t0;
    let mut lookups = Vec::new();
    while lookups.len() < 6 {
        for action in drain(&mut core, now) {
            if let Action::Discover { .. } = action {
                lookups.push(now);
                core.handle(now, Event::Discovered(Vec::new()));
            }
        }
        now = core.next_timeout().unwrap();
    }
    let gaps: Vec<u64> = lookups
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    assert_eq!(gaps, [2000, 4000, 8000, 8000, 8000]);
}

#[test]
fn what_went_wrong_is_kept_within_bounds() {
    let t0 = Instant::now();
    let mut params = params(4);
    params.attempt_budget = u32::MAX;
    params.attempt_timeout = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
    params.deadline = Duration::from_secs(1);
    let mut core = SwarmCore::new(params, [(1, ())], t0, 10);
    let mut now = t0;
    let mut failures = 0;
    loop {
        let actions = drain(&mut core, now);
        if actions.contains(&Action::GiveUp) {
            break;
        }
        for (id, _, _) in requests(&actions) {
            failures += 1;
            core.handle(
                now,
                Event::Answered {
                    id,
                    answer: Answer::Failed("refused".into()),
                },
            );
        }
        now = core.next_timeout().unwrap();
    }
    let outcomes = core.outcomes();
    assert!(failures > MAX_OUTCOMES, "{failures} failures");
    assert_eq!(outcomes.len(), MAX_OUTCOMES + 1);
    assert_eq!(
        outcomes[MAX_OUTCOMES],
        format!("{} more", failures - MAX_OUTCOMES)
    );
}

#[test]
fn answers_outside_what_was_asked_are_refused() {
    let blocks = Ask::Blocks { first: 4, count: 2 };
    assert!(blocks.admits(4, 2));
    assert!(!blocks.admits(4, 3) && !blocks.admits(5, 2));
    let want = Ask::Want {
        wanted: Bitmap::from_range(16, 8..12),
        max: 4,
    };
    assert!(want.admits(8, 4) && want.admits(9, 2));
    assert!(!want.admits(7, 2), "block 7 was not offered");
    assert!(!want.admits(8, 0) && !want.admits(8, 5));
    assert!(!want.admits(u64::MAX, 2));
}

// ---------------------------------------------------------------------------
// A discrete-event model of a swarm.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Holds everything, answers honestly.
    Seed,
    /// Holds the blocks of a fixed range, says so honestly.
    Partial(u64, u64),
    /// Honest until it dies; then every request fails.
    DiesAt(Duration),
    /// Never answers.
    Stall,
    /// Always busy.
    Busy,
    /// Holds nothing yet.
    Empty,
    /// Sends data that does not verify.
    Corrupt,
    /// Sends one good block claiming to hold everything, then nothing.
    Liar,
}

/// An answer on its way, with what the model learns when it arrives.
struct Delivery {
    event: Event<u32, ()>,
    peer: u32,
    claim: Option<Bitmap>,
    useless: bool,
    data: bool,
}

struct Model {
    core: SwarmCore<u32, ()>,
    kinds: BTreeMap<u32, Kind>,
    latency: HashMap<u32, Duration>,
    t0: Instant,
    now: Instant,
    blocks: u64,
    parallel: usize,
    /// What each peer told the core it holds (in answers the core took).
    claims: HashMap<u32, Bitmap>,
    /// Answers on their way: (due, sequence).
    pending: BinaryHeap<Reverse<(Instant, u64)>>,
    deliveries: HashMap<u64, Delivery>,
    sequence: u64,
    in_flight: BTreeMap<RequestId, u32>,
    /// Per peer, answers the core took: with data, and `NotFound`s that
    /// contradicted an earlier claim.
    data: HashMap<u32, u32>,
    useless: HashMap<u32, u32>,
    asked: HashMap<u32, u32>,
    banned: BTreeSet<u32>,
    uploads: Vec<u32>,
    /// Answers each peer produced (whether or not they arrived in time).
    sent: HashMap<u32, u32>,
    rng: StdRng,
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Complete,
    GaveUp,
}

impl Model {
    fn new(blocks: u64, kinds: Vec<Kind>, latencies: Vec<u64>, seed: u64) -> Self {
        let t0 = Instant::now();
        let mut params = params(blocks);
        params.parallel = 4;
        let kinds: BTreeMap<u32, Kind> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| (i as u32 + 1, k))
            .collect();
        let latency = kinds
            .keys()
            .zip(latencies.iter().cycle())
            .map(|(p, ms)| (*p, Duration::from_millis(*ms)))
            .collect();
        let parallel = params.parallel;
        let initial: Vec<(u32, ())> = kinds.keys().take(2).map(|p| (*p, ())).collect();
        Self {
            core: SwarmCore::new(params, initial, t0, seed),
            kinds,
            latency,
            t0,
            now: t0,
            blocks,
            parallel,
            claims: HashMap::new(),
            pending: BinaryHeap::new(),
            deliveries: HashMap::new(),
            sequence: 0,
            in_flight: BTreeMap::new(),
            data: HashMap::new(),
            useless: HashMap::new(),
            asked: HashMap::new(),
            banned: BTreeSet::new(),
            uploads: vec![0; blocks as usize],
            sent: HashMap::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        }
    }

    fn holds(&self, peer: u32) -> Bitmap {
        match self.kinds[&peer] {
            Kind::Seed | Kind::DiesAt(_) | Kind::Corrupt | Kind::Liar => Bitmap::full(self.blocks),
            Kind::Partial(from, to) => Bitmap::from_range(self.blocks, from..to),
            Kind::Stall | Kind::Busy | Kind::Empty => Bitmap::empty(self.blocks),
        }
    }

    fn queue(&mut self, after: Duration, delivery: Delivery) {
        self.sequence += 1;
        self.pending
            .push(Reverse((self.now + after, self.sequence)));
        self.deliveries.insert(self.sequence, delivery);
    }

    /// What `peer` answers to `ask`, as it will arrive.
    fn answer(&mut self, peer: u32, ask: &Ask) -> Option<Answer<u32, ()>> {
        let kind = self.kinds[&peer];
        let holds = self.holds(peer);
        let sent = *self.sent.entry(peer).or_default();
        let data = |first: u64, count: u32, holdings: Holdings| Answer::Blocks {
            first,
            verified: count,
            new_bytes: u64::from(count) * BLOCK_SIZE,
            bad: None,
            holdings,
            hints: Vec::new(),
        };
        let holdings = match kind {
            Kind::Partial(..) => Holdings::Some(holds.clone()),
            _ => Holdings::All,
        };
        let range = match ask {
            Ask::Blocks { first, count } => {
                let all = (*first..first + u64::from(*count)).all(|b| holds.contains(b));
                all.then_some((*first, *count))
            }
            Ask::Want { wanted, max } => {
                let uploads = &self.uploads;
                choose_for_want(
                    self.blocks,
                    *max,
                    wanted,
                    |b| holds.contains(b),
                    |b| uploads[b as usize],
                    &mut self.rng,
                )
            }
        };
        let answer = match kind {
            Kind::Stall => return None,
            Kind::Busy => Answer::Busy { hints: Vec::new() },
            Kind::DiesAt(at) if self.now >= self.t0 + at => {
                Answer::Failed("connection closed".into())
            }
            Kind::Liar if sent > 0 => Answer::NotFound,
            Kind::Liar => match range {
                Some((first, _)) => data(first, 1, Holdings::All),
                None => Answer::NotFound,
            },
            Kind::Corrupt => match range {
                Some((first, _)) => Answer::Blocks {
                    first,
                    verified: 0,
                    new_bytes: 0,
                    bad: Some(format!(
                        "sent block {first}, which does not match the component hash"
                    )),
                    holdings: Holdings::All,
                    hints: Vec::new(),
                },
                None => Answer::NotFound,
            },
            _ => match range {
                Some((first, count)) => {
                    for b in first..first + u64::from(count) {
                        self.uploads[b as usize] += 1;
                    }
                    data(first, count, holdings)
                }
                None => Answer::NotFound,
            },
        };
        *self.sent.entry(peer).or_default() += 1;
        Some(answer)
    }

    /// Checks what the core asked against what it knew.
    fn check_request(&self, peer: u32, ask: &Ask) {
        assert!(!self.banned.contains(&peer), "asked banned peer {peer}");
        assert!(
            !self.in_flight.values().any(|p| *p == peer),
            "two requests in flight to {peer}"
        );
        assert!(
            self.in_flight.len() < self.parallel,
            "more than `parallel` in flight"
        );
        let verified = self.core.verified();
        match ask {
            Ask::Blocks { first, count } => {
                assert!(*count >= 1);
                let claimed = self
                    .claims
                    .get(&peer)
                    .unwrap_or_else(|| panic!("asked {peer} for blocks before it claimed any"));
                for block in *first..first + u64::from(*count) {
                    assert!(
                        claimed.contains(block),
                        "asked {peer} for unclaimed block {block}"
                    );
                    assert!(
                        !verified.contains(block),
                        "asked for verified block {block}"
                    );
                }
            }
            Ask::Want { wanted, .. } => {
                assert!(!wanted.is_clear(), "an empty Want");
                assert!(
                    !wanted.intersects(verified),
                    "a Want offers a verified block"
                );
            }
        }
    }

    fn run(&mut self) -> End {
        loop {
            while let Some(action) = self.core.poll_action(self.now) {
                match action {
                    Action::Request { id, peer, ask, .. } => {
                        self.check_request(peer, &ask);
                        *self.asked.entry(peer).or_default() += 1;
                        self.in_flight.insert(id, peer);
                        let Some(answer) = self.answer(peer, &ask) else {
                            continue;
                        };
                        let claim = match &answer {
                            Answer::Blocks {
                                holdings: Holdings::All,
                                ..
                            } => Some(Bitmap::full(self.blocks)),
                            Answer::Blocks {
                                holdings: Holdings::Some(b),
                                ..
                            } => Some(b.clone()),
                            _ => None,
                        };
                        let claimed = self.claims.get(&peer);
                        let useless = matches!(answer, Answer::NotFound)
                            && claimed.is_some_and(|c| match &ask {
                                Ask::Want { wanted, .. } => wanted.intersects(c),
                                Ask::Blocks { first, .. } => c.contains(*first),
                            });
                        let data = matches!(answer, Answer::Blocks { .. });
                        let latency = self.latency[&peer];
                        let event = Event::Answered { id, answer };
                        self.queue(
                            latency,
                            Delivery {
                                event,
                                peer,
                                claim,
                                useless,
                                data,
                            },
                        );
                    }
                    Action::Cancel { id } => {
                        self.in_flight.remove(&id);
                    }
                    Action::Discover { .. } => {
                        let everyone = self.kinds.keys().map(|p| (*p, ())).collect();
                        let event = Event::Discovered(everyone);
                        let delivery = Delivery {
                            event,
                            peer: 0,
                            claim: None,
                            useless: false,
                            data: false,
                        };
                        self.queue(Duration::from_millis(5), delivery);
                    }
                    Action::Ban { peer, .. } => {
                        self.banned.insert(peer);
                    }
                    Action::Complete => return End::Complete,
                    Action::GiveUp => return End::GaveUp,
                }
            }
            let due = self.pending.peek().map(|Reverse((at, _))| *at);
            let next = [due, self.core.next_timeout()].into_iter().flatten().min();
            self.now = next.expect("the core always has a deadline");
            while let Some(Reverse((at, sequence))) = self.pending.peek().copied() {
                if at > self.now {
                    break;
                }
                self.pending.pop();
                let delivery = self.deliveries.remove(&sequence).expect("queued");
                // The core takes an answer only while its request is live.
                let live = match &delivery.event {
                    Event::Answered { id, .. } => self.in_flight.remove(id).is_some(),
                    Event::Discovered(_) => true,
                };
                if live && delivery.peer != 0 {
                    let peer = delivery.peer;
                    if let Some(claim) = delivery.claim {
                        self.claims
                            .entry(peer)
                            .or_insert_with(|| Bitmap::empty(self.blocks))
                            .union_with(&claim);
                    }
                    *self.useless.entry(peer).or_default() += u32::from(delivery.useless);
                    *self.data.entry(peer).or_default() += u32::from(delivery.data);
                }
                self.core.handle(at, delivery.event);
            }
        }
    }
}

/// A provider whose answers take longer than the first deadline (a home
/// uplink with a full queue): after its first answer, requests wait for it
/// instead of timing out and throwing away what was on its way.
#[test]
fn deadlines_follow_how_long_answers_take() {
    for seed in 0..20 {
        let mut model = Model::new(24, vec![Kind::Seed], vec![300], seed);
        assert_eq!(model.run(), End::Complete);
        let asked = model.asked[&1];
        let answered = model.data[&1];
        assert!(
            asked - answered <= 1,
            "seed {seed}: {asked} requests, {answered} answered in time"
        );
    }
}

/// A provider that trickles its answers cannot stretch the deadlines of
/// providers that have not answered: after answers that took 50 times the
/// first deadline, a silent newcomer's request still times out within
/// four first deadlines.
#[test]
fn slow_answers_stretch_a_new_providers_deadline_only_so_far() {
    let t0 = Instant::now();
    let mut params = params(64);
    params.parallel = 2;
    let first_deadline = params.attempt_timeout.initial;
    let mut core = SwarmCore::new(params, [(1, ())], t0, 7);
    let mut now = t0;
    for _ in 0..4 {
        let asked = requests(&drain(&mut core, now));
        let (id, peer, ask) = asked
            .first()
            .cloned()
            .expect("a request to the slow provider");
        assert_eq!(peer, 1);
        let (first, count) = match ask {
            Ask::Want { wanted, max } => (wanted.iter().next().unwrap(), max.min(4)),
            Ask::Blocks { first, count } => (first, count),
        };
        now += first_deadline * 50;
        core.handle(
            now,
            Event::Answered {
                id,
                answer: blocks_answer(first, count, Holdings::All),
            },
        );
    }
    core.handle(now, Event::Discovered(vec![(2, ())]));
    let asked = requests(&drain(&mut core, now));
    let (id, _, _) = asked
        .iter()
        .find(|(_, peer, _)| *peer == 2)
        .cloned()
        .expect("the newcomer is asked");
    let sent = now;
    loop {
        now = core.next_timeout().expect("running");
        let cancelled = drain(&mut core, now)
            .iter()
            .any(|a| matches!(a, Action::Cancel { id: c } if *c == id));
        if cancelled {
            break;
        }
        assert!(now - sent < first_deadline * 100, "never timed out");
    }
    assert!(
        now - sent <= first_deadline * 4,
        "a silent newcomer's request waited {:?}",
        now - sent
    );
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Seed),
        2 => (0u64..24, 1u64..24).prop_map(|(a, n)| Kind::Partial(a, (a + n).min(24))),
        2 => (0u64..3000).prop_map(|ms| Kind::DiesAt(Duration::from_millis(ms))),
        1 => Just(Kind::Stall),
        1 => Just(Kind::Busy),
        1 => Just(Kind::Empty),
        1 => Just(Kind::Corrupt),
        1 => Just(Kind::Liar),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// With one honest seed that stays, every swarm completes, whatever the
    /// others do, and the core never asks for an unclaimed or a verified
    /// block (checked on every request).
    #[test]
    fn completes_under_provider_loss_and_liars(
        others in prop::collection::vec(kind(), 0..10),
        latencies in prop::collection::vec(1u64..400, 1..8),
        seed in any::<u64>(),
        stays_at in 0usize..10,
    ) {
        let mut kinds = others;
        kinds.insert(stays_at.min(kinds.len()), Kind::Seed);
        let mut model = Model::new(24, kinds, latencies, seed);
        prop_assert_eq!(model.run(), End::Complete);
        prop_assert!(model.core.is_complete());
        // Only peers that sent bad data or lied were banned; a liar after
        // at most `max_useless` useless answers.
        for peer in &model.banned {
            let kind = model.kinds[peer];
            prop_assert!(matches!(kind, Kind::Corrupt | Kind::Liar), "banned {:?}", kind);
        }
        for (peer, kind) in &model.kinds {
            let useless = model.useless.get(peer).copied().unwrap_or(0);
            match kind {
                Kind::Liar => prop_assert!(useless <= 3, "liar {} answered {} useless", peer, useless),
                Kind::Corrupt => prop_assert!(
                    model.banned.contains(peer) || model.data.get(peer).is_none_or(|n| *n == 0),
                    "corrupter {} sent data and was not banned", peer
                ),
                _ => {}
            }
        }
        for source in model.core.sources() {
            prop_assert!(!matches!(model.kinds[&source], Kind::Stall | Kind::Busy | Kind::Empty | Kind::Corrupt));
        }
    }

    /// Without any provider that can deliver, the download gives up at its
    /// deadline, and a staller is asked a bounded number of times.
    #[test]
    fn gives_up_at_the_deadline_without_an_honest_provider(
        kinds in prop::collection::vec(prop_oneof![Just(Kind::Stall), Just(Kind::Busy), Just(Kind::Empty), Just(Kind::Corrupt)], 1..6),
        seed in any::<u64>(),
    ) {
        let mut model = Model::new(8, kinds, vec![10], seed);
        prop_assert_eq!(model.run(), End::GaveUp);
        prop_assert!(model.now >= model.t0 + Duration::from_secs(60));
        for (peer, kind) in &model.kinds {
            let asked = model.asked.get(peer).copied().unwrap_or(0);
            if *kind == Kind::Stall {
                // Doubling deadlines: 0.2 s .. 10 s within 60 s.
                prop_assert!(asked <= 16, "staller {} asked {} times", peer, asked);
            }
        }
    }
}
