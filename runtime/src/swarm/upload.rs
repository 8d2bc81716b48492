//! The uploader's decisions, as pure functions of its state and the time:
//! which chunk to send for a `Want`, who gets an upload slot and who waits
//! for one, and when an uplink of a given rate is free again.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::blocks::Bitmap;

/// The blocks to send for a `Want`: chunks are aligned runs of `chunk`
/// blocks; among the chunks holding a block that is both wanted and held,
/// the one whose wanted, held blocks were uploaded least (random among
/// ties), cut to its first run of wanted, held blocks. A seed thus hands out
/// different chunks to different downloaders.
pub fn choose_for_want(
    blocks: u64,
    chunk: u32,
    wanted: &Bitmap,
    holds: impl Fn(u64) -> bool,
    uploads: impl Fn(u64) -> u32,
    rng: &mut impl Rng,
) -> Option<(u64, u32)> {
    let chunk = u64::from(chunk.max(1));
    let offer = |b: u64| wanted.contains(b) && holds(b);
    let scored = (0..blocks.div_ceil(chunk)).filter_map(|c| {
        let range = c * chunk..((c + 1) * chunk).min(blocks);
        let mut any = false;
        let mut score = 0u64;
        for b in range.filter(|b| offer(*b)) {
            any = true;
            score += u64::from(uploads(b));
        }
        any.then_some((c, score))
    });
    let c = super::pick::lowest(scored, rng)?;
    let end = ((c + 1) * chunk).min(blocks);
    let first = (c * chunk..end).find(|b| offer(*b))?;
    let count = (first..end).take_while(|b| offer(*b)).count() as u32;
    Some((first, count))
}

/// Upload slots, the paper's server: at most `limit` peers are served at a
/// time, each for its whole download; the others wait in a first-come,
/// first-served line of at most `max_queue` peers.
///
/// A peer in line is *present* while one of its requests is held for it
/// ([`Slots::request`]) and *absent* between requests ([`Slots::absent`]).
/// A freed slot goes at once to the first present peer in line, so a slot
/// never waits for someone who is not asking; an absent peer keeps its place
/// for `idle` after it last asked. A holder frees its slot when it has what
/// it came for ([`Slots::release`]), when it gives up, or after `idle`
/// without a request ([`Slots::expire`]).
#[derive(Debug)]
pub struct Slots<P> {
    limit: usize,
    idle: Duration,
    max_queue: usize,
    /// Holders, with when they last asked.
    holders: HashMap<P, Instant>,
    queue: VecDeque<InLine<P>>,
}

#[derive(Debug)]
struct InLine<P> {
    peer: P,
    /// A request of this peer is waiting for its turn.
    present: bool,
    /// When it last asked, or stopped waiting.
    since: Instant,
}

/// What a request for a slot gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotGrant {
    /// Served now.
    Granted,
    /// In line behind `ahead` peers; [`Slots::release`] or [`Slots::expire`]
    /// will name it when its turn comes, while it is present.
    Queued { ahead: usize },
    /// The line is full: try later or elsewhere.
    Full,
}

impl<P: Copy + Eq + Hash> Slots<P> {
    pub fn new(limit: usize, idle: Duration, max_queue: usize) -> Self {
        Self {
            limit: limit.max(1),
            idle,
            max_queue,
            holders: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// `peer` asks to be served at `now`, and is present until
    /// [`Slots::absent`].
    pub fn request(&mut self, peer: P, now: Instant) -> SlotGrant {
        if let Some(last) = self.holders.get_mut(&peer) {
            *last = now;
            return SlotGrant::Granted;
        }
        let full = self.queue.len() >= self.max_queue;
        match self.queue.iter_mut().find(|w| w.peer == peer) {
            Some(waiting) => {
                waiting.present = true;
                waiting.since = now;
            }
            None if full => return SlotGrant::Full,
            None => self.queue.push_back(InLine {
                peer,
                present: true,
                since: now,
            }),
        }
        // A slot may be free while only absent peers are ahead.
        let granted = self.fill(now);
        debug_assert!(granted.iter().all(|p| *p == peer), "others were absent");
        match self.position(&peer) {
            None => SlotGrant::Granted,
            Some(ahead) => SlotGrant::Queued { ahead },
        }
    }

    /// `peer`'s request stopped waiting at `now` without its turn: it keeps
    /// its place for `idle`, but a freed slot does not wait for it.
    pub fn absent(&mut self, peer: P, now: Instant) {
        if let Some(waiting) = self.queue.iter_mut().find(|w| w.peer == peer) {
            waiting.present = false;
            waiting.since = now;
        }
    }

    /// Whether `peer` holds a slot.
    pub fn holds(&self, peer: &P) -> bool {
        self.holders.contains_key(peer)
    }

    /// Peers ahead of `peer` in line (`None`: not in line).
    pub fn position(&self, peer: &P) -> Option<usize> {
        self.queue.iter().position(|w| w.peer == *peer)
    }

    /// `peer` is done (or gone): its slot, or its place in line, is given
    /// up. Returns the peers granted a slot now.
    pub fn release(&mut self, peer: P, now: Instant) -> Vec<P> {
        self.holders.remove(&peer);
        self.queue.retain(|w| w.peer != peer);
        self.fill(now)
    }

    /// Frees the slots of holders idle for `idle`, and the places of peers
    /// absent for as long; returns the peers granted a slot now.
    pub fn expire(&mut self, now: Instant) -> Vec<P> {
        let idle = self.idle;
        let fresh = |t: Instant| now.saturating_duration_since(t) < idle;
        self.holders.retain(|_, last| fresh(*last));
        self.queue.retain(|w| w.present || fresh(w.since));
        self.fill(now)
    }

    /// When the next holder or absent peer would idle out.
    pub fn next_expiry(&self) -> Option<Instant> {
        let absent = self.queue.iter().filter(|w| !w.present).map(|w| w.since);
        self.holders
            .values()
            .copied()
            .chain(absent)
            .min()
            .map(|t| t + self.idle)
    }

    /// Peers holding a slot, and peers in line.
    pub fn load(&self) -> (usize, usize) {
        (self.holders.len(), self.queue.len())
    }

    fn fill(&mut self, now: Instant) -> Vec<P> {
        let mut granted = Vec::new();
        while self.holders.len() < self.limit {
            let Some(i) = self.queue.iter().position(|w| w.present) else {
                break;
            };
            let next = self.queue.remove(i).expect("index in range").peer;
            self.holders.insert(next, now);
            granted.push(next);
        }
        granted
    }
}

/// An uplink of a fixed rate: each response leaves when the ones before it
/// have been sent (first come, first served).
#[derive(Debug)]
pub struct Uplink {
    bytes_per_second: f64,
    next_free: Instant,
}

impl Uplink {
    pub fn new(bytes_per_second: u64, now: Instant) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1) as f64,
            next_free: now,
        }
    }

    /// How long until the uplink is free.
    pub fn backlog(&self, now: Instant) -> Duration {
        self.next_free.saturating_duration_since(now)
    }

    /// Queues `bytes`; returns when they will have been sent.
    pub fn reserve(&mut self, bytes: u64, now: Instant) -> Instant {
        let start = self.next_free.max(now);
        self.next_free = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
        self.next_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn a_want_gets_the_least_uploaded_chunk_and_only_wanted_held_blocks() {
        let mut rng = StdRng::seed_from_u64(1);
        let all = Bitmap::full(16);
        // Chunks of 4: chunk 0 uploaded a lot, chunk 2 never.
        let uploads = |b: u64| match b / 4 {
            0 => 9,
            1 => 3,
            2 => 0,
            _ => 5,
        };
        assert_eq!(
            choose_for_want(16, 4, &all, |_| true, uploads, &mut rng),
            Some((8, 4))
        );
        // Only blocks 9 and 10 of chunk 2 are wanted: the run is cut to them.
        let wanted = Bitmap::from_range(16, 9..11);
        assert_eq!(
            choose_for_want(16, 4, &wanted, |_| true, uploads, &mut rng),
            Some((9, 2))
        );
        // Wanted but not held: nothing to send.
        assert_eq!(
            choose_for_want(16, 4, &wanted, |b| b < 8, uploads, &mut rng),
            None
        );
        // A run stops at the first block not held.
        assert_eq!(
            choose_for_want(
                16,
                4,
                &all,
                |b| b != 10,
                |_| 0,
                &mut StdRng::seed_from_u64(3)
            )
            .map(|(first, count)| first + u64::from(count) <= 16),
            Some(true)
        );
    }

    #[test]
    fn ties_spread_wants_over_chunks() {
        let mut rng = StdRng::seed_from_u64(9);
        let all = Bitmap::full(64);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            firsts.insert(
                choose_for_want(64, 4, &all, |_| true, |_| 0, &mut rng)
                    .unwrap()
                    .0,
            );
        }
        assert_eq!(firsts.len(), 16, "every chunk is handed out: {firsts:?}");
    }

    #[test]
    fn slots_serve_one_download_at_a_time_and_the_next_in_line_at_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut slots = Slots::new(1, Duration::from_secs(2), 2);
        assert_eq!(slots.request('a', t0), SlotGrant::Granted);
        assert_eq!(slots.request('b', ms(1)), SlotGrant::Queued { ahead: 0 });
        assert_eq!(slots.request('c', ms(2)), SlotGrant::Queued { ahead: 1 });
        assert_eq!(slots.request('d', ms(3)), SlotGrant::Full);
        assert_eq!(
            slots.request('a', ms(500)),
            SlotGrant::Granted,
            "the holder keeps it"
        );
        // The holder finishes: the first in line is served at once, in order.
        assert_eq!(slots.release('a', ms(600)), ['b']);
        assert!(slots.holds(&'b') && !slots.holds(&'c'));
        // A waiter that gives up leaves the line.
        assert!(slots.release('c', ms(700)).is_empty());
        assert_eq!(slots.load(), (1, 0));
        // A holder that vanishes is freed after `idle`.
        assert_eq!(slots.request('d', ms(800)), SlotGrant::Queued { ahead: 0 });
        assert_eq!(slots.next_expiry(), Some(ms(2600)));
        assert!(slots.expire(ms(2599)).is_empty());
        assert_eq!(slots.expire(ms(2600)), ['d']);
    }

    #[test]
    fn a_newcomer_never_jumps_the_queue() {
        let t0 = Instant::now();
        let mut slots = Slots::new(2, Duration::from_secs(2), 8);
        assert_eq!(slots.request(1, t0), SlotGrant::Granted);
        assert_eq!(slots.request(2, t0), SlotGrant::Granted);
        assert_eq!(slots.request(3, t0), SlotGrant::Queued { ahead: 0 });
        assert_eq!(slots.release(1, t0), [3]);
        assert_eq!(slots.request(4, t0), SlotGrant::Queued { ahead: 0 });
        assert_eq!(slots.release(2, t0), [4]);
    }

    #[test]
    fn a_freed_slot_goes_to_the_first_peer_still_asking() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut slots = Slots::new(1, Duration::from_secs(2), 8);
        assert_eq!(slots.request('a', t0), SlotGrant::Granted);
        assert_eq!(slots.request('b', t0), SlotGrant::Queued { ahead: 0 });
        assert_eq!(slots.request('c', t0), SlotGrant::Queued { ahead: 1 });
        // b's request stops waiting (its hold ended); it keeps its place...
        slots.absent('b', ms(100));
        assert_eq!(slots.position(&'b'), Some(0));
        // ...but the freed slot goes to c, who is asking, at once.
        assert_eq!(slots.release('a', ms(200)), ['c']);
        // b asks again: first in line, and the next slot is its.
        assert_eq!(slots.request('b', ms(300)), SlotGrant::Queued { ahead: 0 });
        assert_eq!(slots.release('c', ms(400)), ['b']);
        // A peer in line that stops asking loses its place after `idle`,
        // and a slot free with only absent peers in line goes to a newcomer.
        assert_eq!(slots.request('d', ms(500)), SlotGrant::Queued { ahead: 0 });
        slots.absent('d', ms(600));
        assert_eq!(slots.next_expiry(), Some(ms(2400)), "b idles out first");
        assert_eq!(slots.release('b', ms(700)), Vec::<char>::new());
        assert_eq!(slots.request('e', ms(800)), SlotGrant::Granted);
        assert_eq!(slots.load(), (1, 1));
        assert_eq!(slots.expire(ms(2599)), Vec::<char>::new());
        assert_eq!(slots.position(&'d'), Some(0));
        slots.expire(ms(2600));
        assert_eq!(slots.position(&'d'), None);
        assert_eq!(slots.load(), (1, 0));
    }

    #[test]
    fn the_uplink_queues_at_its_rate() {
        let t0 = Instant::now();
        let mut uplink = Uplink::new(1000, t0);
        assert_eq!(uplink.backlog(t0), Duration::ZERO);
        assert_eq!(uplink.reserve(500, t0), t0 + Duration::from_millis(500));
        assert_eq!(uplink.reserve(1000, t0), t0 + Duration::from_millis(1500));
        assert_eq!(
            uplink.backlog(t0 + Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        // An idle uplink starts from now, not from the past.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(uplink.reserve(1000, later), later + Duration::from_secs(1));
    }
}
