//! Whether this node can be reached from the internet, and which of its
//! addresses say so: a pure core fed with what AutoNAT, UPnP, the relay
//! client and the operator report, deciding the Kademlia mode, whether to
//! hold relay reservations and what to advertise.
//!
//! - An address is *confirmed* when an AutoNAT server dialled it back, the
//!   router mapped it (UPnP), or the operator declared it (until a test
//!   refutes it). In local mode, and for a node listening only on loopback,
//!   the listen addresses are what every peer that can see the node dials:
//!   they count as confirmed.
//! - *Refuted*: a server tried to dial it back and could not. A refuted
//!   address is withdrawn (no longer confirmed, no longer advertised).
//! - The node is `public` with at least one confirmed direct address,
//!   `private` when none is and a test failed, `unknown` before any test.
//!   Only a public node answers Kademlia requests and relays for others; a
//!   private one holds relay reservations and advertises relayed addresses.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::Multiaddr;

use super::paths::is_relayed;

/// What this node knows of its reachability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reachability {
    /// No address confirmed, none refuted yet.
    Unknown,
    /// At least one direct address is confirmed.
    Public,
    /// Every tested address was refuted: reachable only through relays.
    Private,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        })
    }
}

/// How an address came to be confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An AutoNAT server dialled it back.
    AutoNat,
    /// The router mapped it (UPnP).
    Upnp,
    /// The operator declared it; AutoNAT still tests it.
    Declared,
    /// Local mode, or a node on loopback only: the listen addresses.
    Local,
}

/// Refuted addresses remembered: they come from what peers say they see
/// this node at, so a peer could make up any number. The oldest go first.
pub const MAX_REFUTED: usize = 32;
/// Longest reason kept with a refuted address.
const MAX_REASON: usize = 256;

/// The reachability core.
#[derive(Debug, Default)]
pub struct Reach {
    confirmed: BTreeMap<Multiaddr, Source>,
    /// Address, and when (a sequence number) and why (the server's answer).
    refuted: BTreeMap<Multiaddr, (u64, String)>,
    refutations: u64,
    /// This node's relayed addresses (reservations accepted).
    relayed: BTreeSet<Multiaddr>,
}

/// What changed, for the driver to act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// The reachability before, when it changed.
    pub was: Option<Reachability>,
    /// An address to remove from the swarm's external addresses.
    pub withdraw: Option<Multiaddr>,
    /// The addresses this node advertises changed.
    pub advertised: bool,
}

impl Reach {
    pub fn reachability(&self) -> Reachability {
        if !self.confirmed.is_empty() {
            Reachability::Public
        } else if !self.refuted.is_empty() {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    /// Direct addresses confirmed, with how.
    pub fn confirmed(&self) -> impl Iterator<Item = (&Multiaddr, Source)> {
        self.confirmed.iter().map(|(a, s)| (a, *s))
    }

    /// How `address` was confirmed, if it is.
    pub fn source(&self, address: &Multiaddr) -> Option<Source> {
        self.confirmed.get(address).copied()
    }

    /// The newest [`MAX_REFUTED`] refuted addresses, with why.
    pub fn refuted(&self) -> impl Iterator<Item = (&Multiaddr, &str)> {
        self.refuted.iter().map(|(a, (_, why))| (a, why.as_str()))
    }

    pub fn relayed(&self) -> impl Iterator<Item = &Multiaddr> {
        self.relayed.iter()
    }

    /// Whether this node should hold relay reservations.
    pub fn wants_relays(&self) -> bool {
        self.reachability() == Reachability::Private
    }

    /// An address was confirmed (the swarm's `ExternalAddrConfirmed`):
    /// relayed addresses are reservations, not reachability.
    pub fn confirm(&mut self, address: Multiaddr, source: Source) -> Change {
        let was = self.reachability();
        let new = if is_relayed(&address) {
            self.relayed.insert(address)
        } else {
            self.refuted.remove(&address);
            // The first source to confirm an address names it; the operator's
            // word gives way to a test's.
            let new = !self.confirmed.contains_key(&address);
            let entry = self.confirmed.entry(address).or_insert(source);
            if *entry == Source::Declared {
                *entry = source;
            }
            new
        };
        self.changed(was, None, new)
    }

    /// An address is no longer valid (a mapping or reservation ended).
    pub fn expire(&mut self, address: &Multiaddr) -> Change {
        let was = self.reachability();
        let relayed = self.relayed.remove(address);
        let direct = self.confirmed.remove(address).is_some();
        self.changed(was, None, relayed || direct)
    }

    /// A server could not dial `address` back. A confirmed address is
    /// withdrawn, unless the router mapped it or it is local: those are
    /// facts about this node's own network, not a remote server's view. A
    /// declared address that is not on the internet (a LAN address, a host
    /// name) stands too: servers outside local mode do not dial those, so
    /// their failure says nothing.
    pub fn refute(&mut self, address: Multiaddr, why: String) -> Change {
        let was = self.reachability();
        if is_relayed(&address) {
            return Change::default();
        }
        let global = super::address::scope(&address) == super::address::Scope::Global;
        let withdraw = match self.confirmed.get(&address) {
            Some(Source::Upnp | Source::Local) => return Change::default(),
            Some(Source::Declared) if !global => return Change::default(),
            Some(_) => {
                self.confirmed.remove(&address);
                Some(address.clone())
            }
            None => None,
        };
        self.refutations += 1;
        let mut why = why;
        if why.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
        }
        self.refuted.insert(address, (self.refutations, why));
        if self.refuted.len() > MAX_REFUTED {
            let oldest = self
                .refuted
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(a, _)| a.clone());
            if let Some(oldest) = oldest {
                self.refuted.remove(&oldest);
            }
        }
        let advertised = withdraw.is_some();
        self.changed(was, withdraw, advertised)
    }

    fn changed(&self, was: Reachability, withdraw: Option<Multiaddr>, advertised: bool) -> Change {
        Change {
            was: (self.reachability() != was).then_some(was),
            withdraw,
            advertised,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    const RELAYED: &str = "/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit";

    #[test]
    fn refuted_addresses_peers_make_up_are_bounded() {
        let mut reach = Reach::default();
        for port in 1..=10_000u16 {
            let address = a(&format!("/ip4/203.0.113.2/tcp/{port}"));
            reach.refute(address, "x".repeat(10_000));
        }
        assert_eq!(reach.refuted().count(), MAX_REFUTED);
        assert!(reach.refuted().all(|(_, why)| why.len() <= MAX_REASON));
        // The newest are kept.
        let newest = a("/ip4/203.0.113.2/tcp/10000");
        assert!(reach.refuted().any(|(address, _)| *address == newest));
        assert_eq!(reach.reachability(), Reachability::Private);
    }

    #[test]
    fn a_refuted_test_makes_a_node_private_and_a_confirmed_one_public() {
        let mut reach = Reach::default();
        assert_eq!(reach.reachability(), Reachability::Unknown);
        assert!(!reach.wants_relays());
        let change = reach.refute(a("/ip4/203.0.113.2/tcp/4001"), "dial back failed".into());
        assert_eq!(change.was, Some(Reachability::Unknown));
        assert_eq!(change.withdraw, None, "never advertised");
        assert_eq!(reach.reachability(), Reachability::Private);
        assert!(reach.wants_relays());
        // A relay reservation is not reachability, but it is advertised.
        let change = reach.confirm(a(RELAYED), Source::AutoNat);
        assert_eq!(change.was, None);
        assert!(change.advertised);
        assert_eq!(reach.reachability(), Reachability::Private);
        assert_eq!(reach.relayed().count(), 1);
        // A mapped port is.
        let change = reach.confirm(a("/ip4/203.0.113.2/tcp/4001"), Source::Upnp);
        assert_eq!(change.was, Some(Reachability::Private));
        assert_eq!(reach.reachability(), Reachability::Public);
        assert_eq!(reach.refuted().count(), 0);
        assert!(!reach.wants_relays());
    }

    #[test]
    fn a_declared_address_a_test_refutes_is_withdrawn() {
        let mut reach = Reach::default();
        let declared = a("/ip4/203.0.113.2/tcp/4001");
        reach.confirm(declared.clone(), Source::Declared);
        assert_eq!(reach.reachability(), Reachability::Public);
        let change = reach.refute(declared.clone(), "no dial back".into());
        assert_eq!(change.was, Some(Reachability::Public));
        assert_eq!(change.withdraw, Some(declared.clone()));
        assert!(change.advertised);
        assert_eq!(reach.reachability(), Reachability::Private);
        assert_eq!(reach.confirmed().count(), 0);
        assert_eq!(reach.refuted().next(), Some((&declared, "no dial back")));
    }

    #[test]
    fn a_declared_lan_address_stands_against_a_failed_test() {
        let mut reach = Reach::default();
        for declared in ["/ip4/192.168.1.7/tcp/4001", "/dns4/boot.lan/tcp/4001"] {
            reach.confirm(a(declared), Source::Declared);
            assert_eq!(reach.refute(a(declared), "x".into()), Change::default());
        }
        assert_eq!(reach.confirmed().count(), 2);
        assert_eq!(reach.reachability(), Reachability::Public);
        // An undeclared LAN address a server could not dial is refuted.
        reach.refute(a("/ip4/192.168.1.8/tcp/4001"), "x".into());
        assert_eq!(reach.refuted().count(), 1);
    }

    #[test]
    fn mapped_and_local_addresses_stand_against_a_failed_test() {
        let mut reach = Reach::default();
        reach.confirm(a("/ip4/127.0.0.1/tcp/4001"), Source::Local);
        reach.confirm(a("/ip4/198.51.100.7/tcp/4001"), Source::Upnp);
        for address in ["/ip4/127.0.0.1/tcp/4001", "/ip4/198.51.100.7/tcp/4001"] {
            assert_eq!(reach.refute(a(address), "x".into()), Change::default());
        }
        assert_eq!(reach.confirmed().count(), 2);
        // A test confirms what the operator declared: the test's word
        // stands after that.
        let declared = a("/ip4/203.0.113.5/tcp/4001");
        reach.confirm(declared.clone(), Source::Declared);
        reach.confirm(declared.clone(), Source::AutoNat);
        assert!(
            reach
                .confirmed()
                .any(|(x, s)| *x == declared && s == Source::AutoNat)
        );
        // Expired addresses go.
        reach.expire(&declared);
        assert_eq!(reach.confirmed().count(), 2);
    }
}
