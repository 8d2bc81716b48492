//! Keeping this node's provider records findable: the pure decision core
//! behind announcements.
//!
//! A provider record lives on the peers closest to its key *that the
//! announcement could reach*. When the node's view of the network changes,
//! those may no longer be the closest peers, and lookups converge on peers
//! that never heard of it. This core decides when to announce:
//!
//! * a new key at once; a failed announcement again after a back-off
//!   (5 s, doubling to 5 min);
//! * every key again when the routing table has doubled since the last
//!   announcement, until it holds k peers (a seed that shared before anyone
//!   joined), and after that when a quarter of the table is new (at most
//!   once a minute);
//! * every key again, after refreshing the routing table, when a peer that
//!   was unreachable is reached again: connectivity returned, e.g. after a
//!   network partition healed (at most once per 20 s; while it keeps
//!   happening, as on a flapping link or an overloaded host, the gap doubles
//!   up to 10 minutes; the first reconnection after 10 quiet minutes is
//!   announced at once again).
//!
//! To notice that connectivity returned, unreachable peers (connections
//! lost with an error, unanswered pings, and failed dials to the operator's
//! bootstrap peers; not dials to peers others named, which anyone can
//! invent) are probed: 2 s after
//! the loss, then at doubling intervals up to 20 s. A probe is one dial.
//! At most 32 peers are watched (the longest lost make room), each for at
//! most 10 minutes, except the operator's bootstrap peers, which are
//! watched until reached: they bridge partitions of any length.
//!
//! Facts go in with the time they happened ([`Upkeep::provide`],
//! [`Upkeep::outcome`], [`Upkeep::routing_added`], [`Upkeep::unreachable`],
//! [`Upkeep::reached`]); decisions come out of [`Upkeep::poll`]. The event
//! loop owns the clock and the swarm; the same code runs in unit tests and
//! in a simulator.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::client::AnnouncementState;

/// The core's timings and bounds; [`Default`] gives the values in the
/// module documentation.
#[derive(Clone, Debug)]
pub struct UpkeepConfig {
    /// Kademlia's k: below this many peers, the table doubling triggers a
    /// re-announcement.
    pub k: usize,
    /// First retry of a failed announcement; doubles up to `max_retry`.
    pub retry: Duration,
    pub max_retry: Duration,
    /// Between two re-announcements because the table changed.
    pub table_change_gap: Duration,
    /// After a lost peer is reached: wait this long (the refresh fills the
    /// routing table meanwhile) before announcing ...
    pub settle: Duration,
    /// ... and at most once per this, doubling up to `max_reconnect_gap`
    /// while reconnections keep coming (back to the start after that long
    /// without one).
    pub reconnect_gap: Duration,
    pub max_reconnect_gap: Duration,
    /// First probe of a lost peer; doubles up to `max_probe`.
    pub probe: Duration,
    pub max_probe: Duration,
    /// A lost peer that is not a bootstrap peer is given up after this.
    pub forget_after: Duration,
    /// Lost peers watched at once; at most 4 addresses each.
    pub max_lost: usize,
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        Self {
            k: 20,
            retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(300),
            table_change_gap: Duration::from_secs(60),
            settle: Duration::from_secs(2),
            reconnect_gap: Duration::from_secs(20),
            max_reconnect_gap: Duration::from_secs(600),
            probe: Duration::from_secs(2),
            max_probe: Duration::from_secs(20),
            forget_after: Duration::from_secs(600),
            max_lost: 32,
        }
    }
}

const MAX_PROBE_ADDRESSES: usize = 4;

/// What the driver should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<K, P, A> {
    /// Store the record and announce it to the peers closest to the key.
    Announce(K),
    /// Look up the peers closest to this node (Kademlia's bootstrap), so the
    /// routing table learns the peers that came back.
    Refresh,
    /// Dial a lost peer, at these addresses (and any the driver knows).
    Probe(P, Vec<A>),
}

/// Why a key is being announced again (for the driver's log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    TableGrew,
    TableChanged,
    Reconnected,
    /// The addresses this node advertises changed (confirmed, withdrawn,
    /// relayed): records carry them, so they go out again.
    AddressesChanged,
}

struct Lost<A> {
    since: Instant,
    next_probe: Instant,
    interval: Duration,
    addresses: Vec<A>,
    bootstrap: bool,
}

/// The decision core; see the module documentation.
pub struct Upkeep<K, P, A> {
    config: UpkeepConfig,
    keys: HashMap<K, AnnouncementState>,
    actions: VecDeque<Action<K, P, A>>,
    lost: HashMap<P, Lost<A>>,
    /// Routing-table size at the last announcement of every key, and the
    /// peers added to it since.
    table_at_announce: usize,
    added_since: usize,
    table_changed_at: Option<Instant>,
    /// A re-announcement waiting for its time, and why.
    pending: Option<(Instant, Reason)>,
    reconnected_at: Option<Instant>,
    /// The gap after `reconnected_at` before the next reconnection counts
    /// (zero: none, the next one is announced at once).
    reconnect_gap: Duration,
    /// When a lost peer was last reached again.
    last_reached: Option<Instant>,
    last_reason: Option<Reason>,
}

impl<K, P, A> Upkeep<K, P, A>
where
    K: Clone + Eq + Hash,
    P: Clone + Eq + Hash,
    A: Clone + PartialEq,
{
    pub fn new(mut config: UpkeepConfig) -> Self {
        // Zero intervals would make `poll` repeat itself without end.
        let at_least = Duration::from_millis(100);
        for interval in [
            &mut config.retry,
            &mut config.probe,
            &mut config.reconnect_gap,
        ] {
            *interval = (*interval).max(at_least);
        }
        config.max_retry = config.max_retry.max(config.retry);
        config.max_probe = config.max_probe.max(config.probe);
        config.max_reconnect_gap = config.max_reconnect_gap.max(config.reconnect_gap);
        Self {
            config,
            keys: HashMap::new(),
            actions: VecDeque::new(),
            lost: HashMap::new(),
            table_at_announce: 0,
            added_since: 0,
            table_changed_at: None,
            pending: None,
            reconnected_at: None,
            reconnect_gap: Duration::ZERO,
            last_reached: None,
            last_reason: None,
        }
    }

    /// This node provides `key` from now on: announce it.
    pub fn provide(&mut self, key: K) {
        self.keys
            .insert(key.clone(), AnnouncementState::Pending { failures: 0 });
        self.actions.push_back(Action::Announce(key));
    }

    /// This node no longer provides `key`.
    pub fn withdraw(&mut self, key: &K) {
        self.keys.remove(key);
        self.actions
            .retain(|a| !matches!(a, Action::Announce(k) if k == key));
    }

    /// How an announcement of `key` went: `Some(peers)` reached, or `None`
    /// (the query timed out). Returns the key's new state, or `None` for a
    /// key withdrawn meanwhile.
    pub fn outcome(
        &mut self,
        now: Instant,
        key: &K,
        reached: Option<u32>,
    ) -> Option<&AnnouncementState> {
        let state = self.keys.get_mut(key)?;
        let failures = match state {
            AnnouncementState::Pending { failures }
            | AnnouncementState::Failed { failures, .. } => *failures,
            AnnouncementState::Announced { .. } => 0,
        };
        let failed = |error: &str| {
            let failures = failures + 1;
            let backoff = self
                .config
                .retry
                .saturating_mul(1 << (failures - 1).min(16))
                .min(self.config.max_retry);
            AnnouncementState::Failed {
                failures,
                error: error.into(),
                retry_at: now + backoff,
            }
        };
        *state = match reached {
            Some(peers) if peers > 0 => AnnouncementState::Announced { peers, at: now },
            Some(_) => failed("no DHT peer reached"),
            None => failed("the DHT query timed out"),
        };
        Some(state)
    }

    /// A peer that was not in the routing table was added; the table now
    /// holds `table` peers.
    pub fn routing_added(&mut self, now: Instant, table: usize) {
        self.added_since += 1;
        if self.keys.is_empty() {
            return;
        }
        let at = self.table_at_announce;
        if at < self.config.k {
            if table >= (at * 2).max(1) {
                self.announce_all(now, table, Reason::TableGrew);
            }
        } else if self.added_since * 4 >= at {
            let when = self
                .table_changed_at
                .map_or(now, |t| (t + self.config.table_change_gap).max(now));
            self.schedule(when, Reason::TableChanged);
        }
    }

    /// The addresses this node advertises changed: announce every key again
    /// at once, so records name where this node can be reached now.
    pub fn addresses_changed(&mut self, now: Instant, table: usize) {
        if !self.keys.is_empty() {
            self.announce_all(now, table, Reason::AddressesChanged);
        }
    }

    /// `peer` could not be reached (a dial failed, a connection was lost,
    /// a ping went unanswered); `addresses` are where to probe it (none:
    /// only notice when it comes back by itself). `bootstrap`: one of the
    /// operator's bootstrap peers.
    pub fn unreachable(&mut self, now: Instant, peer: P, addresses: Vec<A>, bootstrap: bool) {
        if let Some(lost) = self.lost.get_mut(&peer) {
            for address in addresses {
                if lost.addresses.len() < MAX_PROBE_ADDRESSES && !lost.addresses.contains(&address)
                {
                    lost.addresses.push(address);
                }
            }
            lost.bootstrap |= bootstrap;
            return;
        }
        if self.lost.len() >= self.config.max_lost.max(1) {
            // Make room: the peer lost longest ago, bootstrap peers last.
            let oldest = self
                .lost
                .iter()
                .min_by_key(|(_, l)| (l.bootstrap, l.since))
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                self.lost.remove(&oldest);
            }
        }
        self.lost.insert(
            peer.clone(),
            Lost {
                since: now,
                next_probe: now + self.config.probe,
                interval: self.config.probe,
                addresses: Vec::new(),
                bootstrap,
            },
        );
        self.unreachable(now, peer, addresses, bootstrap);
    }

    /// This node is connected to `peer` (a connection opened, a ping was
    /// answered). A peer that was lost counts as connectivity returning.
    pub fn reached(&mut self, now: Instant, peer: &P) {
        if self.lost.remove(peer).is_none() {
            return;
        }
        // Quiet for the longest gap before this: the first reconnection
        // after a long while is announced at once, however the gap grew.
        let quiet = self
            .last_reached
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.max_reconnect_gap);
        self.last_reached = Some(now);
        if quiet {
            self.reconnect_gap = Duration::ZERO;
        }
        let earliest = now + self.config.settle;
        let when = self
            .reconnected_at
            .map_or(earliest, |t| (t + self.reconnect_gap).max(earliest));
        self.schedule(when, Reason::Reconnected);
    }

    /// The earliest of the pending re-announcement and this one; a
    /// reconnection wins the reason, so its routing-table refresh is not
    /// lost to a table change due sooner.
    fn schedule(&mut self, when: Instant, reason: Reason) {
        match &mut self.pending {
            Some((at, pending_reason)) => {
                *at = (*at).min(when);
                if reason == Reason::Reconnected {
                    *pending_reason = Reason::Reconnected;
                }
            }
            pending => *pending = Some((when, reason)),
        }
    }

    fn announce_all(&mut self, now: Instant, table: usize, reason: Reason) {
        self.table_at_announce = table;
        self.added_since = 0;
        self.last_reason = Some(reason);
        match reason {
            Reason::Reconnected => {
                self.reconnect_gap = if self.reconnect_gap.is_zero() {
                    self.config.reconnect_gap
                } else {
                    (self.reconnect_gap * 2).min(self.config.max_reconnect_gap)
                };
                self.reconnected_at = Some(now);
                self.actions.push_back(Action::Refresh);
            }
            Reason::TableChanged => self.table_changed_at = Some(now),
            Reason::TableGrew | Reason::AddressesChanged => {}
        }
        for (key, state) in &mut self.keys {
            let failures = match state {
                AnnouncementState::Failed { failures, .. } => *failures,
                _ => 0,
            };
            *state = AnnouncementState::Pending { failures };
            self.actions.push_back(Action::Announce(key.clone()));
        }
    }

    /// The next thing to do at `now`, if any; `table` is the routing
    /// table's size. Call until it returns `None`.
    pub fn poll(&mut self, now: Instant, table: usize) -> Option<Action<K, P, A>> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if let Some((at, reason)) = self.pending
            && at <= now
        {
            self.pending = None;
            self.announce_all(now, table, reason);
            if let Some(action) = self.actions.pop_front() {
                return Some(action);
            }
        }
        let retry = self.keys.iter_mut().find_map(|(key, state)| match state {
            AnnouncementState::Failed {
                failures, retry_at, ..
            } if *retry_at <= now => {
                let failures = *failures;
                *state = AnnouncementState::Pending { failures };
                Some(key.clone())
            }
            _ => None,
        });
        if let Some(key) = retry {
            return Some(Action::Announce(key));
        }
        let forget_after = self.config.forget_after;
        self.lost
            .retain(|_, l| l.bootstrap || now.duration_since(l.since) < forget_after);
        let max_probe = self.config.max_probe;
        self.lost.iter_mut().find_map(|(peer, lost)| {
            (lost.next_probe <= now).then(|| {
                lost.interval = (lost.interval * 2).min(max_probe);
                lost.next_probe = now + lost.interval;
                Action::Probe(peer.clone(), lost.addresses.clone())
            })
        })
    }

    /// When [`poll`](Self::poll) next has something to do (`None`: only
    /// after a new fact).
    pub fn next_timeout(&self) -> Option<Instant> {
        if !self.actions.is_empty() {
            return Some(Instant::now());
        }
        let retries = self.keys.values().filter_map(|s| match s {
            AnnouncementState::Failed { retry_at, .. } => Some(*retry_at),
            _ => None,
        });
        let probes = self.lost.values().map(|l| l.next_probe);
        let pending = self.pending.map(|(at, _)| at);
        retries.chain(probes).chain(pending).min()
    }

    /// The state of each key provided.
    pub fn states(&self) -> impl Iterator<Item = (&K, &AnnouncementState)> {
        self.keys.iter()
    }

    /// Why every key was last announced again, if it was.
    pub fn last_reason(&self) -> Option<Reason> {
        self.last_reason
    }

    /// Peers watched as unreachable.
    pub fn lost(&self) -> usize {
        self.lost.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Core = Upkeep<&'static str, u32, &'static str>;

    fn core() -> Core {
        Upkeep::new(UpkeepConfig {
            k: 4,
            ..UpkeepConfig::default()
        })
    }

    fn drain(
        core: &mut Core,
        now: Instant,
        table: usize,
    ) -> Vec<Action<&'static str, u32, &'static str>> {
        std::iter::from_fn(|| core.poll(now, table)).collect()
    }

    fn announced(actions: &[Action<&'static str, u32, &'static str>]) -> Vec<&'static str> {
        let mut keys: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Announce(k) => Some(*k),
                _ => None,
            })
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_new_key_is_announced_and_a_failure_retried_with_back_off() {
        let t0 = Instant::now();
        let mut core = core();
        core.provide("a");
        assert_eq!(drain(&mut core, t0, 0), vec![Action::Announce("a")]);
        let state = core.outcome(t0, &"a", Some(0)).unwrap().clone();
        assert!(matches!(
            state,
            AnnouncementState::Failed { failures: 1, .. }
        ));
        assert_eq!(core.next_timeout(), Some(t0 + Duration::from_secs(5)));
        assert!(drain(&mut core, t0 + Duration::from_secs(4), 0).is_empty());
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(drain(&mut core, t1, 0), vec![Action::Announce("a")]);
        // The second failure waits twice as long.
        core.outcome(t1, &"a", None);
        assert_eq!(core.next_timeout(), Some(t1 + Duration::from_secs(10)));
        // A success resets the count; a withdrawn key is forgotten.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(drain(&mut core, t2, 0), vec![Action::Announce("a")]);
        let state = core.outcome(t2, &"a", Some(3)).unwrap().clone();
        assert_eq!(state, AnnouncementState::Announced { peers: 3, at: t2 });
        core.withdraw(&"a");
        assert!(core.outcome(t2, &"a", Some(3)).is_none());
        assert_eq!(core.next_timeout(), None);
    }

    #[test]
    fn a_growing_table_triggers_announcements_until_k_then_only_a_quarter_new_does() {
        let t0 = Instant::now();
        let mut core = core();
        core.provide("a");
        drain(&mut core, t0, 0);
        // Doubling while below k = 4: at 1, 2 and 4 peers.
        let mut grew = Vec::new();
        for table in 1..=8 {
            core.routing_added(t0, table);
            if !announced(&drain(&mut core, t0, table)).is_empty() {
                grew.push(table);
            }
        }
        // Doubling up to k = 4; from then on when a quarter of the table is
        // new: at once the first time (5), then at most once a minute.
        assert_eq!(grew, vec![1, 2, 4, 5]);
        assert_eq!(core.last_reason(), Some(Reason::TableChanged));
        assert_eq!(
            core.pending,
            Some((t0 + Duration::from_secs(60), Reason::TableChanged))
        );
        assert!(announced(&drain(&mut core, t0 + Duration::from_secs(30), 8)).is_empty());
        assert_eq!(
            announced(&drain(&mut core, t0 + Duration::from_secs(60), 8)),
            vec!["a"]
        );
    }

    #[test]
    fn a_lost_peer_is_probed_with_back_off_and_reaching_it_again_reannounces_everything() {
        let t0 = Instant::now();
        let mut core = core();
        core.provide("a");
        core.provide("b");
        drain(&mut core, t0, 10);
        core.outcome(t0, &"a", Some(2));
        core.outcome(t0, &"b", Some(2));
        core.unreachable(t0, 7, vec!["addr7"], false);
        // Probes at 2, 6 (2 + 4), 14 (+ 8), 30 (+ 16), then every 20 s.
        let mut probes = Vec::new();
        for s in 0..=80 {
            let now = t0 + Duration::from_secs(s);
            for action in drain(&mut core, now, 10) {
                assert_eq!(action, Action::Probe(7, vec!["addr7"]));
                probes.push(s);
            }
        }
        assert_eq!(probes, vec![2, 6, 14, 30, 50, 70]);
        // Reached again: a refresh, then every key, after the settle time.
        let t1 = t0 + Duration::from_secs(75);
        core.reached(t1, &7);
        assert_eq!(core.lost(), 0);
        assert!(drain(&mut core, t1 + Duration::from_secs(1), 10).is_empty());
        let actions = drain(&mut core, t1 + Duration::from_secs(2), 10);
        assert_eq!(actions[0], Action::Refresh);
        assert_eq!(announced(&actions), vec!["a", "b"]);
        assert_eq!(core.last_reason(), Some(Reason::Reconnected));
        // Another peer back soon after: once the gap has passed.
        core.unreachable(t1, 8, vec![], false);
        core.reached(t1 + Duration::from_secs(5), &8);
        assert!(announced(&drain(&mut core, t1 + Duration::from_secs(10), 10)).is_empty());
        assert_eq!(
            announced(&drain(&mut core, t1 + Duration::from_secs(22), 10)),
            vec!["a", "b"]
        );
        // A peer that was never lost changes nothing.
        core.reached(t1 + Duration::from_secs(60), &9);
        assert_eq!(core.next_timeout(), None);
        // Reconnections that keep coming (t1 + 22 was the second, 20 s
        // after the first): the gap doubles, to 40 s.
        core.unreachable(t1, 10, vec![], false);
        core.reached(t1 + Duration::from_secs(30), &10);
        assert!(announced(&drain(&mut core, t1 + Duration::from_secs(61), 10)).is_empty());
        assert_eq!(
            announced(&drain(&mut core, t1 + Duration::from_secs(62), 10)),
            vec!["a", "b"]
        );
        // After ten quiet minutes it is 20 s again: 2 s after the reconnection.
        let t2 = t1 + Duration::from_secs(62 + 600);
        core.unreachable(t2, 11, vec![], false);
        core.reached(t2, &11);
        assert_eq!(
            announced(&drain(&mut core, t2 + Duration::from_secs(2), 10)),
            vec!["a", "b"]
        );
    }

    #[test]
    fn a_flapping_peer_gets_the_longest_gap_and_keeps_it() {
        let t0 = Instant::now();
        let mut core = core();
        core.provide("a");
        drain(&mut core, t0, 10);
        // The peer drops and comes back every 30 s for two hours.
        let mut announced_at = Vec::new();
        for s in 0..7200u64 {
            let now = t0 + Duration::from_secs(s);
            if s % 30 == 0 {
                core.unreachable(now, 7, vec![], false);
                core.reached(now, &7);
            }
            if !announced(&drain(&mut core, now, 10)).is_empty() {
                announced_at.push(s);
            }
        }
        // At 2 s, then after the next drop (30 s on), then gaps of 40, 80,
        // ... up to 600 s, and 600 s from then on.
        let gaps: Vec<u64> = announced_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(announced_at[0], 2);
        assert_eq!(&gaps[..5], [30, 40, 80, 160, 320]);
        assert!(
            gaps[5..].iter().all(|g| (600..=630).contains(g)),
            "{gaps:?}"
        );
    }

    #[test]
    fn a_table_change_due_sooner_does_not_drop_a_reconnections_refresh() {
        let t0 = Instant::now();
        let mut core = core();
        core.provide("a");
        drain(&mut core, t0, 0);
        for table in 1..=4 {
            core.routing_added(t0, table);
        }
        drain(&mut core, t0, 4);
        // A reconnection (due at +2 s), then a table change due at once.
        core.unreachable(t0, 7, vec![], false);
        core.reached(t0, &7);
        core.routing_added(t0, 5);
        let actions = drain(&mut core, t0, 5);
        assert_eq!(actions[0], Action::Refresh);
        assert_eq!(announced(&actions), vec!["a"]);
        assert_eq!(core.last_reason(), Some(Reason::Reconnected));
    }

    #[test]
    fn lost_peers_are_bounded_forgotten_but_bootstrap_peers_are_kept() {
        let t0 = Instant::now();
        let mut core = core();
        core.unreachable(t0, 0, vec!["boot"], true);
        for peer in 1..100 {
            core.unreachable(
                t0 + Duration::from_millis(peer as u64),
                peer,
                vec!["x"; 10],
                false,
            );
        }
        assert_eq!(core.lost(), 32);
        assert!(core.lost.contains_key(&0), "the bootstrap peer stays");
        assert!(core.lost.values().all(|l| l.addresses.len() <= 1));
        // After ten minutes only the bootstrap peer is still probed.
        let later = t0 + Duration::from_secs(601);
        let probed: Vec<u32> = drain(&mut core, later, 0)
            .into_iter()
            .filter_map(|a| match a {
                Action::Probe(p, _) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(probed, vec![0]);
        assert_eq!(core.lost(), 1);
    }

    #[test]
    fn nothing_is_announced_again_for_a_node_that_provides_nothing() {
        let t0 = Instant::now();
        let mut core = core();
        core.unreachable(t0, 1, vec![], false);
        core.reached(t0, &1);
        for table in 1..50 {
            core.routing_added(t0, table);
        }
        let actions = drain(&mut core, t0 + Duration::from_secs(5), 50);
        assert_eq!(actions, vec![Action::Refresh]);
    }

    #[test]
    fn new_addresses_announce_every_key_again_at_once() {
        let t0 = Instant::now();
        let mut core = core();
        // Nothing to announce: nothing happens.
        core.addresses_changed(t0, 4);
        assert!(drain(&mut core, t0, 4).is_empty());
        core.provide("a");
        core.provide("b");
        drain(&mut core, t0, 4);
        core.outcome(t0, &"a", Some(3));
        core.outcome(t0, &"b", Some(3));
        core.addresses_changed(t0, 4);
        let mut again = announced(&drain(&mut core, t0, 4));
        again.sort();
        assert_eq!(again, vec!["a", "b"]);
        assert_eq!(core.last_reason(), Some(Reason::AddressesChanged));
        assert!(
            core.states()
                .all(|(_, s)| *s == AnnouncementState::Pending { failures: 0 })
        );
    }
}
