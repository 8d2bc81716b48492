//! The Kademlia record store of an sp2a node, built so that other peers
//! cannot silence this node's own announcements or lock a key.
//!
//! * **Own provider records** (the keys this node shares, pulls or partly
//!   holds) live apart from everyone else's and are never refused.
//! * **Others' provider records** expire on a local TTL (whatever expiry the
//!   record claims, never later) and are swept, so a record nobody looks up
//!   still goes away.
//! * **Quotas**: at most `per_peer` records from one provider, `per_key`
//!   providers per key and `total` records in all. A record that would break a
//!   quota evicts the record of the peer that holds the most; between equals
//!   the one with the highest *draw* goes, a keyed hash of key and provider
//!   under a secret this store picked at random. A flood from a few ids
//!   therefore only displaces the flooders' own records.
//! * **A fair sample of a crowded key.** The draw ranks a key's providers in
//!   an order nobody else can predict, so the `per_key` providers a store
//!   keeps are a uniform sample of all that announced, whenever they came:
//!   Sybil ids hold places only in proportion to their number (grinding ids
//!   is useless against a secret), and the stores that replicate a key each
//!   keep a different sample. Lookups that ask several of them, from several
//!   nodes, therefore name many more of a popular service's providers than
//!   `per_key`, which is what spreads a swarm's load. (Ranking by XOR
//!   distance to the key, as before, made every store keep the same
//!   `per_key` providers and let ids ground close to the key hold it.)
//! * Lookups answer with this node's own record first and the others in a
//!   random order, so records that arrived first do not always win the k
//!   places of an answer.
//!
//! Value records (`put`) are not used by sp2a; the store keeps a small,
//! bounded map so the trait stays honest.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use rand::seq::SliceRandom;

const MAX_VALUE_RECORDS: usize = 256;
const MAX_VALUE_BYTES: usize = 16 * 1024;

/// How many provider records from others the store holds, and how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderLimits {
    /// Records from one provider.
    pub per_peer: usize,
    /// Providers of one key (besides this node).
    pub per_key: usize,
    /// Records from others in all.
    pub total: usize,
    /// The longest a record from another peer is kept after it arrived.
    pub ttl: Duration,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            per_peer: 512,
            per_key: 64,
            total: 16384,
            ttl: Duration::from_secs(2 * 3600),
        }
    }
}

/// What happened to a record from another peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new record.
    Added,
    /// The provider's existing record for the key, refreshed.
    Refreshed,
    /// Added in place of another peer's record.
    Replaced { evicted: PeerId },
    /// Not stored: the newcomer ranks lowest of those competing for the place.
    Refused,
}

/// The record store (see the module documentation).
pub struct NodeStore {
    local: PeerId,
    limits: ProviderLimits,
    /// The secret under which providers are drawn.
    salt: [u8; 32],
    own: HashMap<RecordKey, ProviderRecord>,
    others: HashMap<RecordKey, Vec<ProviderRecord>>,
    per_peer: HashMap<PeerId, usize>,
    total: usize,
    values: HashMap<RecordKey, Record>,
}

impl NodeStore {
    pub fn new(local: PeerId, limits: ProviderLimits) -> Self {
        Self {
            local,
            limits,
            salt: rand::random(),
            own: HashMap::new(),
            others: HashMap::new(),
            per_peer: HashMap::new(),
            total: 0,
            values: HashMap::new(),
        }
    }

    /// Stores a provider record at time `now`.
    pub fn add_at(&mut self, mut record: ProviderRecord, now: Instant) -> Stored {
        if record.provider == self.local {
            self.own.insert(record.key.clone(), record);
            return Stored::Refreshed;
        }
        let deadline = now + self.limits.ttl;
        record.expires = Some(record.expires.map_or(deadline, |e| e.min(deadline)));
        if let Some(slot) = self.others.get_mut(&record.key).and_then(|list| {
            list.iter_mut()
                .find(|existing| existing.provider == record.provider)
        }) {
            *slot = record;
            return Stored::Refreshed;
        }
        // Competing for a place: the provider's own records when it has its
        // quota, the key's list when it is full, the whole store when it is
        // full. Each round evicts one record, so this ends.
        let mut evicted = None;
        loop {
            let provider = record.provider;
            let key = record.key.clone();
            let victim = if self.held(Some(&provider)) >= self.limits.per_peer {
                self.pick_victim(&record, |r| r.provider == provider)
            } else if self
                .others
                .get(&key)
                .is_some_and(|list| list.len() >= self.limits.per_key)
            {
                self.pick_victim(&record, |r| r.key == key)
            } else if self.total >= self.limits.total {
                self.pick_victim(&record, |_| true)
            } else {
                break;
            };
            if victim == (key.clone(), provider) {
                return Stored::Refused;
            }
            self.remove_other(&victim.0, &victim.1);
            evicted = Some(victim.1);
        }
        *self.per_peer.entry(record.provider).or_default() += 1;
        self.total += 1;
        self.others
            .entry(record.key.clone())
            .or_default()
            .push(record);
        match evicted {
            Some(evicted) => Stored::Replaced { evicted },
            None => Stored::Added,
        }
    }

    /// `provider`'s draw for `key`: its rank among the key's providers.
    fn draw(&self, key: &RecordKey, provider: &PeerId) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.salt);
        let key = key.as_ref();
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update(&provider.to_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The record that should make room for `newcomer` among those matching
    /// `competing` (the newcomer itself included): the one whose provider
    /// holds the most records, then the one with the highest draw. It is the
    /// newcomer's own key and provider when the newcomer ranks lowest.
    fn pick_victim(
        &self,
        newcomer: &ProviderRecord,
        competing: impl Fn(&ProviderRecord) -> bool,
    ) -> (RecordKey, PeerId) {
        let rank = |record: &ProviderRecord, extra: usize| {
            let held = self.per_peer.get(&record.provider).copied().unwrap_or(0) + extra;
            (held, self.draw(&record.key, &record.provider))
        };
        let stored = self
            .others
            .values()
            .flatten()
            .filter(|r| competing(r))
            .map(|r| (rank(r, 0), r.key.clone(), r.provider));
        // The newcomer counts with the record it would add.
        let newcomer = (rank(newcomer, 1), newcomer.key.clone(), newcomer.provider);
        let (_, key, provider) = stored
            .chain(std::iter::once(newcomer.clone()))
            .max_by(|a, b| a.0.cmp(&b.0))
            .unwrap_or(newcomer);
        (key, provider)
    }

    fn remove_other(&mut self, key: &RecordKey, provider: &PeerId) {
        let Some(list) = self.others.get_mut(key) else {
            return;
        };
        let Some(index) = list.iter().position(|r| &r.provider == provider) else {
            return;
        };
        list.swap_remove(index);
        if list.is_empty() {
            self.others.remove(key);
        }
        self.total -= 1;
        if let Some(count) = self.per_peer.get_mut(provider) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(provider);
            }
        }
    }

    /// Drops every record from others that expired by `now`. Returns how
    /// many went.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<(RecordKey, PeerId)> = self
            .others
            .values()
            .flatten()
            .filter(|r| r.is_expired(now))
            .map(|r| (r.key.clone(), r.provider))
            .collect();
        for (key, provider) in &expired {
            self.remove_other(key, provider);
        }
        self.values.retain(|_, r| !r.is_expired(now));
        expired.len()
    }

    /// Records from others held, in all and from `peer`.
    pub fn held(&self, peer: Option<&PeerId>) -> usize {
        match peer {
            Some(peer) => self.per_peer.get(peer).copied().unwrap_or(0),
            None => self.total,
        }
    }

    /// The keys this node provides.
    pub fn own_keys(&self) -> impl Iterator<Item = &RecordKey> {
        self.own.keys()
    }
}

impl RecordStore for NodeStore {
    type RecordsIter<'a> = std::iter::Map<
        std::collections::hash_map::Values<'a, RecordKey, Record>,
        fn(&'a Record) -> Cow<'a, Record>,
    >;
    type ProvidedIter<'a> = std::iter::Map<
        std::collections::hash_map::Values<'a, RecordKey, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, key: &RecordKey) -> Option<Cow<'_, Record>> {
        self.values.get(key).map(Cow::Borrowed)
    }

    fn put(&mut self, record: Record) -> Result<()> {
        if record.value.len() > MAX_VALUE_BYTES {
            return Err(Error::ValueTooLarge);
        }
        if self.values.len() >= MAX_VALUE_RECORDS && !self.values.contains_key(&record.key) {
            return Err(Error::MaxRecords);
        }
        self.values.insert(record.key.clone(), record);
        Ok(())
    }

    fn remove(&mut self, key: &RecordKey) {
        self.values.remove(key);
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.values.values().map(Cow::Borrowed)
    }

    /// Never fails: a record that does not fit is dropped, and this node's
    /// own records always fit.
    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let provider = record.provider;
        if self.add_at(record, Instant::now()) == Stored::Refused {
            tracing::debug!(%provider, "provider record not stored: quota");
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let mut others = self.others.get(key).cloned().unwrap_or_default();
        others.shuffle(&mut rand::thread_rng());
        self.own
            .get(key)
            .cloned()
            .into_iter()
            .chain(others)
            .collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.own.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if provider == &self.local {
            self.own.remove(key);
        } else {
            self.remove_other(key, provider);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &RecordKey, provider: PeerId) -> ProviderRecord {
        ProviderRecord::new(key.clone(), provider, Vec::new())
    }

    fn key(n: u32) -> RecordKey {
        RecordKey::new(&n.to_be_bytes())
    }

    fn limits() -> ProviderLimits {
        ProviderLimits {
            per_peer: 8,
            per_key: 4,
            total: 32,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn own_records_are_never_refused_however_full_the_store() {
        let local = PeerId::random();
        let mut store = NodeStore::new(local, limits());
        let now = Instant::now();
        for n in 0..64 {
            store.add_at(record(&key(100 + n), PeerId::random()), now);
        }
        assert_eq!(store.held(None), 32, "the store is full");
        let mine = key(7);
        assert_eq!(store.add_at(record(&mine, local), now), Stored::Refreshed);
        assert!(store.add_provider(record(&mine, local)).is_ok());
        assert_eq!(store.provided().count(), 1);
        assert_eq!(store.providers(&mine)[0].provider, local);
    }

    #[test]
    fn a_flooding_peer_only_displaces_its_own_records() {
        let mut store = NodeStore::new(PeerId::random(), limits());
        let now = Instant::now();
        let honest = PeerId::random();
        store.add_at(record(&key(1), honest), now);
        let flooder = PeerId::random();
        for n in 100..1100 {
            store.add_at(record(&key(n), flooder), now);
        }
        assert_eq!(store.held(Some(&flooder)), 8, "the per-peer quota");
        assert_eq!(store.held(Some(&honest)), 1);
        // Many flooding ids fill the store; each new one then displaces
        // the heaviest holder, never the peer with one record.
        for _ in 0..20 {
            let sybil = PeerId::random();
            for n in 0..8u32 {
                store.add_at(record(&key(5000 + n), sybil), now);
            }
        }
        assert!(store.held(None) <= 32);
        assert_eq!(store.held(Some(&honest)), 1, "the honest record stays");
    }

    #[test]
    fn a_key_full_of_sybils_still_takes_a_later_provider() {
        let mut store = NodeStore::new(PeerId::random(), limits());
        let now = Instant::now();
        let service = key(42);
        let mut taken = 0;
        for _ in 0..50 {
            // Sybils fill the key; a later honest provider (one record, like
            // each Sybil) gets in unless its draw is the highest of all.
            let mut store_round = NodeStore::new(PeerId::random(), limits());
            for _ in 0..4 {
                store_round.add_at(record(&service, PeerId::random()), now);
            }
            let honest = PeerId::random();
            if store_round.add_at(record(&service, honest), now) != Stored::Refused {
                taken += 1;
                assert_eq!(store_round.providers(&service).len(), 4);
            }
        }
        // The highest of five draws by chance: 1 in 5.
        assert!(taken >= 25, "taken in {taken} of 50 rounds");
        // Refreshing an existing record never evicts anyone.
        let peer = PeerId::random();
        store.add_at(record(&service, peer), now);
        assert_eq!(store.add_at(record(&service, peer), now), Stored::Refreshed);
    }

    /// The `count` of `tries` random ids closest (XOR) to `key`: what an
    /// attacker grinding ids for a key would hold.
    fn ground_ids(key: &RecordKey, count: usize, tries: usize) -> Vec<PeerId> {
        use libp2p::kad::KBucketKey;
        let target = KBucketKey::new(key.clone());
        let mut ids: Vec<PeerId> = (0..tries).map(|_| PeerId::random()).collect();
        ids.sort_by_key(|id| target.distance(&KBucketKey::from(*id)));
        ids.truncate(count);
        ids
    }

    #[test]
    fn ids_ground_close_to_a_key_do_not_hold_it() {
        let service = key(42);
        let now = Instant::now();
        let mut taken = 0;
        for _ in 0..50 {
            // The 4 closest of 500 ids fill the key; an honest provider
            // comes later. Ranked by distance it would be refused (it is
            // closer than all four only about once in a hundred tries).
            let mut store = NodeStore::new(PeerId::random(), limits());
            for sybil in ground_ids(&service, 4, 500) {
                assert_ne!(store.add_at(record(&service, sybil), now), Stored::Refused);
            }
            if store.add_at(record(&service, PeerId::random()), now) != Stored::Refused {
                taken += 1;
            }
        }
        // Drawn under a secret, the grinding buys nothing: 4 in 5.
        assert!(taken >= 30, "taken in {taken} of 50 rounds");
    }

    #[test]
    fn stores_keep_different_fair_samples_of_a_crowded_key() {
        let service = key(42);
        let now = Instant::now();
        let limits = ProviderLimits {
            per_key: 16,
            ..ProviderLimits::default()
        };
        let providers: Vec<PeerId> = (0..400).map(|_| PeerId::random()).collect();
        let kept_by = |store: &NodeStore| -> std::collections::HashSet<PeerId> {
            store
                .providers(&service)
                .iter()
                .map(|r| r.provider)
                .collect()
        };
        let mut samples = Vec::new();
        for _ in 0..20 {
            let mut store = NodeStore::new(PeerId::random(), limits);
            for provider in &providers {
                store.add_at(record(&service, *provider), now);
            }
            let kept = kept_by(&store);
            assert_eq!(kept.len(), 16);
            samples.push(kept);
        }
        // Two stores share about 16 * 16 / 400 < 1 provider, not all 16.
        let shared = samples[0].intersection(&samples[1]).count();
        assert!(shared <= 6, "{shared} of 16 shared");
        // Twenty stores together name most of what 20 x 16 places can
        // (about 320 places over 400 providers: some 220 distinct) ...
        let named: std::collections::HashSet<&PeerId> = samples.iter().flatten().collect();
        assert!(named.len() >= 180, "{} named", named.len());
        // ... and late arrivals as often as early ones (about 160 each).
        let early: std::collections::HashSet<&PeerId> = providers[..200].iter().collect();
        let kept_early = samples
            .iter()
            .flatten()
            .filter(|p| early.contains(p))
            .count();
        let kept_late = 320 - kept_early;
        assert!(
            (110..=210).contains(&kept_early),
            "{kept_early} early, {kept_late} late"
        );
    }

    #[test]
    fn records_from_others_expire_on_the_local_ttl_whatever_they_claim() {
        let local = PeerId::random();
        let mut store = NodeStore::new(local, limits());
        let now = Instant::now();
        let mut long_lived = record(&key(1), PeerId::random());
        long_lived.expires = Some(now + Duration::from_secs(48 * 3600));
        store.add_at(long_lived, now);
        store.add_at(record(&key(2), PeerId::random()), now);
        store.add_at(record(&key(3), local), now);
        assert_eq!(store.sweep(now + Duration::from_secs(59)), 0);
        assert_eq!(store.sweep(now + Duration::from_secs(61)), 2);
        assert_eq!(store.held(None), 0);
        assert!(store.providers(&key(1)).is_empty());
        assert_eq!(
            store.providers(&key(3)).len(),
            1,
            "own records do not expire"
        );
    }

    #[test]
    fn removing_keeps_the_counts_right() {
        let mut store = NodeStore::new(PeerId::random(), limits());
        let now = Instant::now();
        let peer = PeerId::random();
        for n in 0..5 {
            store.add_at(record(&key(n), peer), now);
        }
        store.remove_provider(&key(0), &peer);
        store.remove_provider(&key(0), &peer);
        assert_eq!(store.held(Some(&peer)), 4);
        assert_eq!(store.held(None), 4);
    }
}
