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
/// first-served queue of at most `max_queue` peers, and the first of them is
/// served the moment a slot frees. A holder frees its slot when it has what
/// it came for ([`Slots::release`]), when it gives up, or after `idle`
/// without a request ([`Slots::expire`]).
#[derive(Debug)]
pub struct Slots<P> {
    limit: usize,
    idle: Duration,
    max_queue: usize,
    /// Holders, with when they last asked.
    holders: HashMap<P, Instant>,
    queue: VecDeque<P>,
}

/// What a request for a slot gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotGrant {
    /// Served now.
    Granted,
    /// Waiting in the queue; [`Slots::release`] or [`Slots::expire`] will
    /// name it when its turn comes.
    Queued,
    /// The queue is full: try later or elsewhere.
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

    /// `peer` asks to be served at `now`.
    pub fn request(&mut self, peer: P, now: Instant) -> SlotGrant {
        if let Some(last) = self.holders.get_mut(&peer) {
            *last = now;
            return SlotGrant::Granted;
        }
        if self.queue.contains(&peer) {
            return SlotGrant::Queued;
        }
        if self.holders.len() < self.limit && self.queue.is_empty() {
            self.holders.insert(peer, now);
            return SlotGrant::Granted;
        }
        if self.queue.len() >= self.max_queue {
            return SlotGrant::Full;
        }
        self.queue.push_back(peer);
        SlotGrant::Queued
    }

    /// Whether `peer` holds a slot.
    pub fn holds(&self, peer: &P) -> bool {
        self.holders.contains_key(peer)
    }

    /// `peer` is done (or gone): its slot, or its place in the queue, is
    /// given up. Returns the peers granted a slot now.
    pub fn release(&mut self, peer: P, now: Instant) -> Vec<P> {
        self.holders.remove(&peer);
        self.queue.retain(|p| *p != peer);
        self.fill(now)
    }

    /// Frees the slots of holders idle for `idle`; returns the peers
    /// granted a slot now.
    pub fn expire(&mut self, now: Instant) -> Vec<P> {
        let idle = self.idle;
        self.holders
            .retain(|_, last| now.saturating_duration_since(*last) < idle);
        self.fill(now)
    }

    /// When the next holder would idle out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.holders.values().map(|last| *last + self.idle).min()
    }

    /// Peers holding a slot, and peers waiting.
    pub fn load(&self) -> (usize, usize) {
        (self.holders.len(), self.queue.len())
    }

    fn fill(&mut self, now: Instant) -> Vec<P> {
        let mut granted = Vec::new();
        while self.holders.len() < self.limit {
            let Some(next) = self.queue.pop_front() else {
                break;
            };
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
        assert_eq!(slots.request('b', ms(1)), SlotGrant::Queued);
        assert_eq!(slots.request('c', ms(2)), SlotGrant::Queued);
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
        assert_eq!(slots.request('d', ms(800)), SlotGrant::Queued);
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
        assert_eq!(slots.request(3, t0), SlotGrant::Queued);
        assert_eq!(slots.release(1, t0), [3]);
        assert_eq!(slots.request(4, t0), SlotGrant::Queued);
        assert_eq!(slots.release(2, t0), [4]);
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
