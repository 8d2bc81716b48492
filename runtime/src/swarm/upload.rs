//! The uploader's decisions, as pure functions of its state and the time:
//! which chunk to send for a `Want`, whether a peer gets an upload slot, and
//! when an uplink of a given rate is free again.

use std::collections::HashMap;
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

/// Upload slots: at most `limit` peers are served at a time; a peer keeps
/// its slot while it asked within the last `idle`.
#[derive(Debug)]
pub struct Slots<P> {
    limit: usize,
    idle: Duration,
    last: HashMap<P, Instant>,
}

impl<P: Copy + Eq + Hash> Slots<P> {
    pub fn new(limit: usize, idle: Duration) -> Self {
        Self {
            limit: limit.max(1),
            idle,
            last: HashMap::new(),
        }
    }

    /// Whether `peer` may be served now (and, if so, it holds a slot).
    pub fn admit(&mut self, peer: P, now: Instant) -> bool {
        let idle = self.idle;
        self.last
            .retain(|_, last| now.saturating_duration_since(*last) < idle);
        if !self.last.contains_key(&peer) && self.last.len() >= self.limit {
            return false;
        }
        self.last.insert(peer, now);
        true
    }

    /// Peers holding a slot.
    pub fn holders(&self) -> usize {
        self.last.len()
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
    fn slots_admit_a_limited_set_until_it_idles() {
        let t0 = Instant::now();
        let mut slots = Slots::new(1, Duration::from_secs(2));
        assert!(slots.admit('a', t0));
        assert!(!slots.admit('b', t0 + Duration::from_millis(500)));
        assert!(
            slots.admit('a', t0 + Duration::from_secs(1)),
            "the holder keeps it"
        );
        assert!(!slots.admit('b', t0 + Duration::from_millis(2500)));
        assert!(
            slots.admit('b', t0 + Duration::from_secs(4)),
            "freed after idling"
        );
        assert_eq!(slots.holders(), 1);
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
