//! How far a peer's address reaches: loopback, a private network, or the
//! internet. Addresses another peer passes on are only dialled when they are
//! global (unless the node is in local mode), so a remote peer cannot point
//! us at our own host or network; and a peer's claimed addresses are only
//! kept (and passed on) on the host it was seen connecting from.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::ip::Reach;

/// How far an address reaches, nearest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Loopback,
    Private,
    /// A host name (`/dns`, `/dns4`, `/dns6`, `/dnsaddr`): it resolves
    /// wherever its owner points it, this host or its network included, so
    /// it is dialled only when this node was given it (bootstrap peers).
    Named,
    Global,
}

/// The reach of the first IP component of `address` ([`crate::ip::reach`]),
/// or [`Scope::Named`] when a host name comes first (`Global` when it has
/// neither).
pub fn scope(address: &Multiaddr) -> Scope {
    for part in address.iter() {
        let ip: std::net::IpAddr = match part {
            Protocol::Ip4(ip) => ip.into(),
            Protocol::Ip6(ip) => ip.into(),
            Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_) => {
                return Scope::Named;
            }
            _ => continue,
        };
        return match crate::ip::reach(ip) {
            Reach::Loopback => Scope::Loopback,
            Reach::Private => Scope::Private,
            Reach::Global => Scope::Global,
        };
    }
    Scope::Global
}

/// The IP address `address` starts with, if any.
pub fn ip_of(address: &Multiaddr) -> Option<std::net::IpAddr> {
    address.iter().find_map(|part| match part {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// Whether `a` and `b` start with the same IP address (the same host). An
/// address without one (a DNS name) is on no host we have seen.
pub fn same_host(a: &Multiaddr, b: &Multiaddr) -> bool {
    ip_of(a).is_some_and(|ip_a| Some(ip_a) == ip_of(b))
}

/// Whether to keep (and pass on) an address a peer claims, seen connected
/// from `remotes`: one on a host it connects from, or a relayed address
/// through a relay on the internet (any relay in local mode). A relayed
/// address makes others dial the relay, which checks the peer's identity.
pub fn kept_claim(claimed: &Multiaddr, remotes: &[&Multiaddr], local_addresses: bool) -> bool {
    if remotes.iter().any(|remote| same_host(claimed, remote)) {
        return true;
    }
    let relayed = claimed.iter().any(|p| p == Protocol::P2pCircuit);
    relayed && (local_addresses || scope(claimed) == Scope::Global)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    #[test]
    fn scopes() {
        assert_eq!(scope(&a("/ip4/127.0.0.1/tcp/1")), Scope::Loopback);
        assert_eq!(scope(&a("/ip4/10.1.2.3/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/192.168.0.9/udp/1/quic-v1")), Scope::Private);
        assert_eq!(scope(&a("/ip6/fe80::1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/8.8.8.8/tcp/1")), Scope::Global);
        // A name may resolve to this host: not dialled on a peer's word.
        for named in [
            "/dns4/example.org/tcp/1",
            "/dns4/localhost/tcp/22",
            "/dns/example.org/udp/1/quic-v1",
            "/dnsaddr/example.org",
        ] {
            assert_eq!(scope(&a(named)), Scope::Named, "{named}");
        }
        assert_eq!(scope(&a("/ip4/100.64.0.1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/100.127.255.254/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/100.128.0.1/tcp/1")), Scope::Global);
        assert_eq!(scope(&a("/ip4/198.18.0.1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/198.19.255.1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip4/198.20.0.1/tcp/1")), Scope::Global);
        assert_eq!(scope(&a("/ip6/fec0::1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip6/fd00::1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip6/::ffff:127.0.0.1/tcp/1")), Scope::Loopback);
        assert_eq!(scope(&a("/ip6/::ffff:10.0.0.1/tcp/1")), Scope::Private);
        assert_eq!(scope(&a("/ip6/2001:db8::1/tcp/1")), Scope::Global);
    }

    #[test]
    fn claimed_addresses_are_kept_on_the_host_seen() {
        let seen = a("/ip4/203.0.113.7/tcp/51234");
        assert!(same_host(&a("/ip4/203.0.113.7/udp/4001/quic-v1"), &seen));
        assert!(!same_host(&a("/ip4/127.0.0.1/tcp/4001"), &seen));
        assert!(!same_host(&a("/ip4/10.0.0.1/tcp/4001"), &seen));
        assert!(!same_host(&a("/dns4/example.org/tcp/4001"), &seen));
    }

    #[test]
    fn relayed_claims_are_kept_through_relays_on_the_internet() {
        let seen = a("/ip4/203.0.113.2/tcp/4001");
        let relay = "p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit";
        let public = a(&format!("/ip4/203.0.113.10/tcp/4001/{relay}"));
        let private = a(&format!("/ip4/10.0.0.1/tcp/4001/{relay}"));
        assert!(kept_claim(&public, &[&seen], false));
        assert!(!kept_claim(&private, &[&seen], false));
        assert!(kept_claim(&private, &[&seen], true));
        assert!(kept_claim(
            &a("/ip4/203.0.113.2/udp/4001/quic-v1"),
            &[&seen],
            false
        ));
        assert!(!kept_claim(
            &a("/ip4/203.0.113.9/tcp/4001"),
            &[&seen],
            false
        ));
        assert!(!kept_claim(&a("/ip4/203.0.113.9/tcp/4001"), &[], true));
    }
}
