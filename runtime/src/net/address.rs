//! How far a peer's address reaches: loopback, a private network, or the
//! internet. Addresses another peer passes on are only used when they reach
//! no closer than that peer's own, so a remote peer cannot point us at our
//! local network.

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// How far an address reaches, nearest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Loopback,
    Private,
    Global,
}

/// The reach of the first IP component of `address` (`Global` when it has
/// none, e.g. a DNS name).
pub fn scope(address: &Multiaddr) -> Scope {
    for part in address.iter() {
        match part {
            Protocol::Ip4(ip) if ip.is_loopback() => return Scope::Loopback,
            Protocol::Ip4(ip) if ip.is_private() || ip.is_link_local() || ip.is_unspecified() => {
                return Scope::Private;
            }
            Protocol::Ip6(ip) if ip.is_loopback() => return Scope::Loopback,
            Protocol::Ip6(ip) if ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00 => {
                return Scope::Private;
            }
            Protocol::Ip6(ip) if (ip.segments()[0] & 0xffc0) == 0xfe80 => return Scope::Private,
            _ => {}
        }
    }
    Scope::Global
}

/// The addresses in `hinted` that reach no closer than one of `from`'s
/// (the hinting peer's own addresses): global ones always, private ones
/// from a private peer, loopback ones from a loopback peer.
pub fn as_far_as(hinted: Vec<Multiaddr>, from: &[Multiaddr]) -> Vec<Multiaddr> {
    let scopes: Vec<Scope> = from.iter().map(scope).collect();
    hinted
        .into_iter()
        .filter(|a| {
            let s = scope(a);
            s == Scope::Global || scopes.contains(&s)
        })
        .collect()
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
        assert_eq!(scope(&a("/dns4/example.org/tcp/1")), Scope::Global);
    }

    #[test]
    fn a_remote_peer_cannot_point_us_home() {
        let hinted = vec![
            a("/ip4/127.0.0.1/tcp/1"),
            a("/ip4/10.0.0.1/tcp/1"),
            a("/ip4/8.8.4.4/tcp/1"),
        ];
        assert_eq!(
            as_far_as(hinted.clone(), &[a("/ip4/8.8.8.8/tcp/9")]),
            [a("/ip4/8.8.4.4/tcp/1")]
        );
        assert_eq!(as_far_as(hinted.clone(), &[]), [a("/ip4/8.8.4.4/tcp/1")]);
        assert_eq!(as_far_as(hinted, &[a("/ip4/127.0.0.1/tcp/9")]).len(), 2);
    }
}
