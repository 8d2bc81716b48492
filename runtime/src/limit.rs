//! Token buckets: how often something may happen, with a burst, and keyed
//! sets of them bounded in size. Pure: the time is an input.
//!
//! A limit that only counts per peer id multiplies with every id an
//! attacker makes up (they cost nothing), so what a peer may ask is
//! limited per id, per network it comes from ([`crate::ip::NetGroup`]) and
//! in all ([`Tiered`]): fresh ids from one network share that network's
//! bucket, and many networks together still share the global one.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// A rate with a burst: `burst` at once, then `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// Tokens left at a time.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket with its whole burst.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    /// The tokens there are at `now`.
    pub fn level(&self, now: Instant, rate: Rate) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }

    /// The bucket at `now` with `amount` fewer tokens (it may go below
    /// zero only if the caller spends more than [`Bucket::level`]).
    pub fn spent(&self, now: Instant, rate: Rate, amount: f64) -> Self {
        Self {
            tokens: self.level(now, rate) - amount,
            at: now,
        }
    }
}

/// One bucket per key, at most `max` of them: when a new key finds no
/// room, the bucket that has been idle longest goes (it is the one most
/// likely full again).
pub struct Buckets<K> {
    rate: Rate,
    max: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Clone + Eq + Hash> Buckets<K> {
    pub fn new(rate: Rate, max: usize) -> Self {
        Self {
            rate,
            max: max.max(1),
            buckets: HashMap::new(),
        }
    }

    /// The tokens `key` has at `now`.
    pub fn level(&self, now: Instant, key: &K) -> f64 {
        self.buckets
            .get(key)
            .map_or(self.rate.burst, |b| b.level(now, self.rate))
    }

    /// Spends `amount` of `key`'s tokens.
    pub fn spend(&mut self, now: Instant, key: &K, amount: f64) {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max {
            let idlest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone());
            if let Some(idlest) = idlest {
                self.buckets.remove(&idlest);
            }
        }
        let bucket = self
            .buckets
            .get(key)
            .copied()
            .unwrap_or_else(|| Bucket::full(self.rate, now));
        self.buckets
            .insert(key.clone(), bucket.spent(now, self.rate, amount));
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The rates of a [`Tiered`] limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TieredRates {
    pub per_peer: Rate,
    pub per_group: Rate,
    pub global: Rate,
    /// Peers and groups tracked, each.
    pub max_tracked: usize,
}

/// Which tier turned a request away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    Peer,
    Group,
    Global,
}

/// A limit per peer, per group of peers (their network) and over all: a
/// request is admitted only if each of the three has a token, and then
/// spends one of each.
pub struct Tiered<P, G> {
    rates: TieredRates,
    peers: Buckets<P>,
    groups: Buckets<G>,
    global: Bucket,
}

impl<P: Clone + Eq + Hash, G: Clone + Eq + Hash> Tiered<P, G> {
    pub fn new(rates: TieredRates, now: Instant) -> Self {
        Self {
            rates,
            peers: Buckets::new(rates.per_peer, rates.max_tracked),
            groups: Buckets::new(rates.per_group, rates.max_tracked),
            global: Bucket::full(rates.global, now),
        }
    }

    /// Admits one request of `peer`, from `group`, at `now`, or says which
    /// limit it is beyond (spending nothing then).
    pub fn admit(&mut self, now: Instant, peer: &P, group: &G) -> Result<(), Limited> {
        if self.peers.level(now, peer) < 1.0 {
            return Err(Limited::Peer);
        }
        if self.groups.level(now, group) < 1.0 {
            return Err(Limited::Group);
        }
        if self.global.level(now, self.rates.global) < 1.0 {
            return Err(Limited::Global);
        }
        self.peers.spend(now, peer, 1.0);
        self.groups.spend(now, group, 1.0);
        self.global = self.global.spent(now, self.rates.global, 1.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATES: TieredRates = TieredRates {
        per_peer: Rate {
            per_second: 2.0,
            burst: 4.0,
        },
        per_group: Rate {
            per_second: 4.0,
            burst: 8.0,
        },
        global: Rate {
            per_second: 8.0,
            burst: 16.0,
        },
        max_tracked: 64,
    };

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let rate = Rate {
            per_second: 2.0,
            burst: 4.0,
        };
        let t0 = Instant::now();
        let b = Bucket::full(rate, t0).spent(t0, rate, 4.0);
        assert_eq!(b.level(t0, rate), 0.0);
        assert_eq!(b.level(t0 + Duration::from_millis(500), rate), 1.0);
        assert_eq!(b.level(t0 + Duration::from_secs(60), rate), 4.0);
    }

    #[test]
    fn fresh_ids_from_one_network_share_its_bucket_and_all_share_the_global_one() {
        let t0 = Instant::now();
        let mut limit = Tiered::new(RATES, t0);
        let admitted =
            |limit: &mut Tiered<u32, String>, at, ids: std::ops::Range<u32>, group: &str| {
                ids.filter(|id| limit.admit(at, id, &group.to_owned()).is_ok())
                    .count()
            };
        // One id: its own burst.
        assert_eq!(
            admitted(&mut limit, t0, 0..1, "a") + admitted(&mut limit, t0, 0..1, "a"),
            2
        );
        assert_eq!(
            admitted(&mut limit, t0, 0..1, "a") + admitted(&mut limit, t0, 0..1, "a"),
            2
        );
        assert_eq!(limit.admit(t0, &0, &"a".to_owned()), Err(Limited::Peer));
        // A hundred fresh ids from the same network: the rest of its burst.
        assert_eq!(admitted(&mut limit, t0, 1..101, "a"), 4);
        assert_eq!(limit.admit(t0, &1000, &"a".to_owned()), Err(Limited::Group));
        // Other networks: until the global burst is spent.
        assert_eq!(admitted(&mut limit, t0, 2000..2100, "b"), 8);
        assert_eq!(
            limit.admit(t0, &5000, &"c".to_owned()),
            Err(Limited::Global)
        );
        // A second later all networks together get the global rate.
        let later = t0 + Duration::from_secs(1);
        let spread: usize = (0..100u32)
            .map(|i| admitted(&mut limit, later, 6000 + i..6001 + i, &format!("g{i}")))
            .sum();
        assert_eq!(spread, 8);
    }

    #[test]
    fn a_refused_request_spends_nothing() {
        let t0 = Instant::now();
        let mut limit = Tiered::new(RATES, t0);
        for id in 0..8u32 {
            limit.admit(t0, &id, &"a").unwrap();
        }
        for id in 100..200u32 {
            assert_eq!(limit.admit(t0, &id, &"a"), Err(Limited::Group));
        }
        // The other network still has the global burst's rest.
        let admitted = (0..20u32)
            .filter(|id| limit.admit(t0, &(1000 + id), &"b").is_ok())
            .count();
        assert_eq!(admitted, 8);
    }

    #[test]
    fn buckets_stay_within_their_bound() {
        let t0 = Instant::now();
        let mut buckets = Buckets::new(RATES.per_peer, 16);
        for i in 0..1000u32 {
            buckets.spend(t0 + Duration::from_millis(i as u64), &i, 1.0);
        }
        assert_eq!(buckets.len(), 16);
        // The newest are kept; the oldest went.
        assert!(buckets.level(t0 + Duration::from_millis(999), &999) < 3.5);
        assert_eq!(buckets.level(t0 + Duration::from_millis(999), &0), 4.0);
    }
}
