//! The Kademlia record store of an sp2a node, built so that other peers
//! cannot silence this node's own announcements or lock a key.
//!
//! * **Own provider records** (the keys this node shares, pulls or partly
//!   holds) live apart from everyone else's and are never refused.
//! * **Others' provider records** expire on a local TTL (whatever expiry the
//!   record claims, never later) and are swept, so a record nobody looks up
//!   still goes away.
//! * **Quotas**: at most `per_peer` records from one provider and `total`
//!   records in all. A record that would break the provider's quota evicts
//!   one of that provider's own records. Between equals the one with the
//!   highest *draw* goes, a keyed hash of key and provider under a secret
//!   this store picked at random.
//! * **Room by popularity.** A key takes as many providers as the store has
//!   room for, so a popular service's key can hold thousands. When the store
//!   is full, room is taken from the key that holds the most (counting the
//!   newcomer's key with the newcomer), as long as that key holds more than
//!   `per_key`: every key keeps `per_key` places, and a crowd on one key
//!   takes only the room others leave. A newcomer to the largest key
//!   competes within that key. When no key holds more than `per_key`, the
//!   record of the peer that holds the most records goes, so ids that flood
//!   many keys with one record each displace their own records, never a
//!   peer's only one.
//! * **A fair sample of a crowded key.** The draw ranks a key's providers in
//!   an order nobody else can predict, so the providers a full store keeps
//!   are a uniform sample of all that announced, whenever they came: Sybil
//!   ids hold places only in proportion to their number (grinding ids is
//!   useless against a secret), and the stores that replicate a key each
//!   keep a different sample. Lookups that ask several of them, from several
//!   nodes, therefore name many more of a popular service's providers than
//!   one store keeps, which is what spreads a swarm's load. (Ranking by XOR
//!   distance to the key made every store keep the same providers and let
//!   ids ground close to the key hold it.)
//! * Lookups answer with this node's own record first and a random sample of
//!   the others (a few more than Kademlia's answer takes, `answer`), so
//!   records that arrived first do not always win the k places of an answer
//!   and a key of thousands of providers costs an answer no more than one of
//!   twenty.
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
    /// Providers of one key (besides this node) that a full store keeps
    /// for it; a key takes more while the store has room, and gives back
    /// what is above this first when another key needs room.
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

/// A record from another peer, with its draw under the store's secret.
struct Held {
    record: ProviderRecord,
    draw: [u8; 32],
}

/// The record store (see the module documentation).
pub struct NodeStore {
    local: PeerId,
    limits: ProviderLimits,
    /// Other providers an answer names at most.
    answer: usize,
    /// The secret under which providers are drawn.
    salt: [u8; 32],
    own: HashMap<RecordKey, ProviderRecord>,
    others: HashMap<RecordKey, Vec<Held>>,
    per_peer: HashMap<PeerId, usize>,
    total: usize,
    values: HashMap<RecordKey, Record>,
}

impl NodeStore {
    /// A store for `local`'s node whose answers name up to `answer` other
    /// providers of a key (Kademlia's replication factor, and one more for
    /// the asker, whom Kademlia leaves out).
    pub fn new(local: PeerId, limits: ProviderLimits, answer: usize) -> Self {
        Self {
            local,
            limits,
            answer: answer.max(1),
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
                .find(|existing| existing.record.provider == record.provider)
        }) {
            slot.record = record;
            return Stored::Refreshed;
        }
        let newcomer = Held {
            draw: self.draw(&record.key, &record.provider),
            record,
        };
        // Competing for a place: the provider's own records when it has its
        // quota; when the store is full, the largest key's records if it
        // holds more than its `per_key`, else the whole store's. Each round
        // evicts one record, so this ends.
        let mut evicted = None;
        loop {
            let provider = newcomer.record.provider;
            let key = &newcomer.record.key;
            let victim = if self.held(Some(&provider)) >= self.limits.per_peer {
                self.pick_victim(&newcomer, |r| r.provider == provider)
            } else if self.total >= self.limits.total {
                match self.crowded_key(key) {
                    Some(crowded) => self.pick_victim(&newcomer, |r| r.key == crowded),
                    None => self.pick_victim(&newcomer, |_| true),
                }
            } else {
                break;
            };
            if victim == (key.clone(), provider) {
                return Stored::Refused;
            }
            self.remove_other(&victim.0, &victim.1);
            evicted = Some(victim.1);
        }
        *self.per_peer.entry(newcomer.record.provider).or_default() += 1;
        self.total += 1;
        self.others
            .entry(newcomer.record.key.clone())
            .or_default()
            .push(newcomer);
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

    /// The key that gives room in a full store for a newcomer to `key`: the
    /// one holding the most records, `key` counted with the newcomer and
    /// preferred among equals (moving a place between two keys of the same
    /// size only churns), if it holds more than `per_key`.
    fn crowded_key(&self, key: &RecordKey) -> Option<RecordKey> {
        let own = self.others.get(key).map_or(0, Vec::len) + 1;
        let (largest, held) = self
            .others
            .iter()
            .filter(|(other, _)| *other != key)
            .map(|(other, list)| (other, list.len()))
            .max_by_key(|(_, held)| *held)
            .filter(|(_, held)| *held > own)
            .unwrap_or((key, own));
        (held > self.limits.per_key).then(|| largest.clone())
    }

    /// The record that should make room for `newcomer` among those matching
    /// `competing` (the newcomer too, if it matches): the one whose provider
    /// holds the most records, then the one with the highest draw. It is the
    /// newcomer's own key and provider when the newcomer ranks lowest.
    fn pick_victim(
        &self,
        newcomer: &Held,
        competing: impl Fn(&ProviderRecord) -> bool,
    ) -> (RecordKey, PeerId) {
        let rank = |held: &Held, extra: usize| {
            let record = &held.record;
            let count = self.per_peer.get(&record.provider).copied().unwrap_or(0) + extra;
            (count, held.draw)
        };
        let stored = self
            .others
            .values()
            .flatten()
            .filter(|h| competing(&h.record))
            .map(|h| (rank(h, 0), &h.record));
        // The newcomer counts with the record it would add.
        let entering = competing(&newcomer.record).then(|| (rank(newcomer, 1), &newcomer.record));
        let (_, victim) = stored
            .chain(entering)
            .max_by(|a, b| a.0.cmp(&b.0))
            .unwrap_or((Default::default(), &newcomer.record));
        (victim.key.clone(), victim.provider)
    }

    fn remove_other(&mut self, key: &RecordKey, provider: &PeerId) {
        let Some(list) = self.others.get_mut(key) else {
            return;
        };
        let Some(index) = list.iter().position(|h| &h.record.provider == provider) else {
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
            .map(|h| &h.record)
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

    /// This node's own record first, then a random sample of the others,
    /// in random order.
    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let others = self.others.get(key).map_or(&[][..], Vec::as_slice);
        let sample = others
            .choose_multiple(&mut rand::thread_rng(), self.answer + 1)
            .map(|h| h.record.clone());
        self.own
            .get(key)
            .cloned()
            .into_iter()
            .chain(sample)
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

    /// Kademlia's answer size.
    const ANSWER: usize = 20;

    fn limits() -> ProviderLimits {
        ProviderLimits {
            per_peer: 8,
            per_key: 4,
            total: 32,
            ttl: Duration::from_secs(60),
        }
    }

    /// A store that holds `places` records, as many as a key keeps for sure:
    /// one key fills it.
    fn crowded(places: usize) -> ProviderLimits {
        ProviderLimits {
            per_key: places,
            total: places,
            ..ProviderLimits::default()
        }
    }

    /// The providers `store` keeps for `key`.
    fn kept(store: &NodeStore, key: &RecordKey) -> std::collections::HashSet<PeerId> {
        store
            .others
            .get(key)
            .into_iter()
            .flatten()
            .map(|h| h.record.provider)
            .collect()
    }

    #[test]
    fn own_records_are_never_refused_however_full_the_store() {
        let local = PeerId::random();
        let mut store = NodeStore::new(local, limits(), ANSWER);
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
        let mut store = NodeStore::new(PeerId::random(), limits(), ANSWER);
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
        let mut store = NodeStore::new(PeerId::random(), limits(), ANSWER);
        let now = Instant::now();
        let service = key(42);
        let mut taken = 0;
        for _ in 0..50 {
            // Sybils fill the key; a later honest provider (one record, like
            // each Sybil) gets in unless its draw is the highest of all.
            let mut store_round = NodeStore::new(PeerId::random(), crowded(4), ANSWER);
            for _ in 0..4 {
                store_round.add_at(record(&service, PeerId::random()), now);
            }
            let honest = PeerId::random();
            if store_round.add_at(record(&service, honest), now) != Stored::Refused {
                taken += 1;
                assert_eq!(kept(&store_round, &service).len(), 4);
            }
        }
        // The highest of five draws by chance: 1 in 5.
        assert!(taken >= 25, "taken in {taken} of 50 rounds");
        // Refreshing an existing record never evicts anyone.
        let peer = PeerId::random();
        store.add_at(record(&service, peer), now);
        assert_eq!(store.add_at(record(&service, peer), now), Stored::Refreshed);
    }

    #[test]
    fn a_popular_key_takes_the_room_others_leave() {
        let mut store = NodeStore::new(PeerId::random(), limits(), ANSWER);
        let now = Instant::now();
        let (popular, later) = (key(1), key(2));
        for _ in 0..30 {
            assert_eq!(
                store.add_at(record(&popular, PeerId::random()), now),
                Stored::Added
            );
        }
        assert_eq!(kept(&store, &popular).len(), 30, "far beyond per_key (4)");
        // A second popular key takes room from the first until they hold
        // the same, then competes within itself (where a newcomer whose
        // draw ranks last is refused).
        for arrival in 0..40 {
            let stored = store.add_at(record(&later, PeerId::random()), now);
            if arrival < 16 {
                assert_ne!(stored, Stored::Refused, "arrival {arrival}");
            }
        }
        assert_eq!(kept(&store, &popular).len(), 16);
        assert_eq!(kept(&store, &later).len(), 16);
        assert_eq!(store.held(None), 32);
    }

    #[test]
    fn a_crowd_on_one_key_leaves_every_other_key_its_places() {
        let mut store = NodeStore::new(PeerId::random(), limits(), ANSWER);
        let now = Instant::now();
        let honest: Vec<(RecordKey, Vec<PeerId>)> = (10..14)
            .map(|n| (key(n), (0..4).map(|_| PeerId::random()).collect()))
            .collect();
        for (key, providers) in &honest {
            for provider in providers {
                store.add_at(record(key, *provider), now);
            }
        }
        // A thousand Sybil ids announce one key.
        let flooded = key(99);
        for _ in 0..1000 {
            store.add_at(record(&flooded, PeerId::random()), now);
        }
        for (key, providers) in &honest {
            let kept = kept(&store, key);
            assert!(providers.iter().all(|p| kept.contains(p)), "{kept:?}");
        }
        assert_eq!(kept(&store, &flooded).len(), 16, "only the room left");
        // A new key still gets its places, from the crowd's.
        let fresh = key(20);
        for _ in 0..4 {
            let crowd = kept(&store, &flooded);
            match store.add_at(record(&fresh, PeerId::random()), now) {
                Stored::Replaced { evicted } => assert!(crowd.contains(&evicted)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(kept(&store, &fresh).len(), 4);
        assert_eq!(kept(&store, &flooded).len(), 12);
    }

    #[test]
    fn answers_name_a_random_sample_of_a_large_key() {
        let local = PeerId::random();
        let mut store = NodeStore::new(local, ProviderLimits::default(), ANSWER);
        let now = Instant::now();
        let service = key(42);
        for _ in 0..500 {
            store.add_at(record(&service, PeerId::random()), now);
        }
        store.add_at(record(&service, local), now);
        let first = store.providers(&service);
        let second = store.providers(&service);
        // Our own record, then the answer's k and one for the asker.
        assert_eq!(first.len(), 1 + ANSWER + 1);
        assert_eq!(first[0].provider, local);
        let named = |answer: &[ProviderRecord]| -> std::collections::HashSet<PeerId> {
            answer[1..].iter().map(|r| r.provider).collect()
        };
        assert_eq!(named(&first).len(), ANSWER + 1, "no repeats");
        assert!(named(&first).is_subset(&kept(&store, &service)));
        assert_ne!(named(&first), named(&second), "a fresh sample each time");
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
            let mut store = NodeStore::new(PeerId::random(), crowded(4), ANSWER);
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
        let providers: Vec<PeerId> = (0..400).map(|_| PeerId::random()).collect();
        let mut samples = Vec::new();
        for _ in 0..20 {
            let mut store = NodeStore::new(PeerId::random(), crowded(16), ANSWER);
            for provider in &providers {
                store.add_at(record(&service, *provider), now);
            }
            let kept = kept(&store, &service);
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
        let mut store = NodeStore::new(local, limits(), ANSWER);
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
        let mut store = NodeStore::new(PeerId::random(), limits(), ANSWER);
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
