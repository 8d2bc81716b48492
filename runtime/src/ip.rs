//! How far an IP address reaches (this host, a private network, the
//! internet), and the network it belongs to for limits that must not
//! multiply with made-up peer ids. Shared by the network layer (which
//! addresses a peer may make us dial) and the sandbox (which addresses a
//! granted host name may lead a guest's HTTP request to).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How far an address reaches, nearest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    Loopback,
    /// Private, link-local, carrier-grade NAT, unspecified, multicast,
    /// reserved: not a host on the internet.
    Private,
    Global,
}

/// The reach of `ip`. An IPv4 address written as IPv6 (mapped,
/// compatible, or NAT64's `64:ff9b::/96`) reaches what it embeds.
pub fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(ip) => reach4(ip),
        IpAddr::V6(ip) => reach6(ip),
    }
}

fn reach4(ip: Ipv4Addr) -> Reach {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Reach::Loopback
    } else if ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // "This network" (0.0.0.0/8) and reserved (240.0.0.0/4).
        || a == 0
        || a >= 240
        // Carrier-grade NAT (100.64.0.0/10) and benchmarking (198.18.0.0/15).
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 198 && (b & 0xfe) == 18)
    {
        Reach::Private
    } else {
        Reach::Global
    }
}

fn reach6(ip: Ipv6Addr) -> Reach {
    if let Some(v4) = embedded_v4(ip) {
        return reach4(v4);
    }
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Reach::Loopback
    } else if ip.is_unspecified()
        || ip.is_multicast()
        // Unique local (fc00::/7), link-local (fe80::/10), site-local (fec0::/10).
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
    {
        Reach::Private
    } else {
        Reach::Global
    }
}

/// The IPv4 address an IPv6 one stands for: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`, not `::` or `::1`) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6] == [0; 6] && u32::from(tail) > 1;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compatible || nat64).then_some(tail)
}

/// The network an address is in, for limits per network: an IPv4 /24 or an
/// IPv6 /48 (what one site is usually given), with IPv4 written as IPv6
/// counted as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetGroup {
    V4([u8; 3]),
    V6([u16; 3]),
}

impl NetGroup {
    pub fn of(ip: IpAddr) -> Self {
        let v4 = match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => embedded_v4(ip),
        };
        match (v4, ip) {
            (Some(ip), _) => {
                let [a, b, c, _] = ip.octets();
                NetGroup::V4([a, b, c])
            }
            (None, IpAddr::V6(ip)) => {
                let s = ip.segments();
                NetGroup::V6([s[0], s[1], s[2]])
            }
            (None, IpAddr::V4(_)) => unreachable!("an IPv4 address has its own group"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> Reach {
        reach(text.parse().unwrap())
    }

    #[test]
    fn reaches() {
        assert_eq!(r("127.0.0.1"), Reach::Loopback);
        assert_eq!(r("127.5.6.7"), Reach::Loopback);
        assert_eq!(r("::1"), Reach::Loopback);
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.9",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "198.18.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "fec0::1",
            "fd00::1",
            "ff02::1",
            "::",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::10.0.0.1",
        ] {
            assert_eq!(r(private), Reach::Private, "{private}");
        }
        assert_eq!(r("::ffff:127.0.0.1"), Reach::Loopback);
        assert_eq!(r("64:ff9b::7f00:1"), Reach::Loopback);
        for global in [
            "8.8.8.8",
            "100.128.0.1",
            "198.20.0.1",
            "203.0.113.7",
            "2001:db8::1",
            "2a00:1450::1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(r(global), Reach::Global, "{global}");
        }
    }

    #[test]
    fn groups_are_slash_24s_and_slash_48s() {
        let g = |text: &str| NetGroup::of(text.parse().unwrap());
        assert_eq!(g("203.0.113.7"), g("203.0.113.200"));
        assert_ne!(g("203.0.113.7"), g("203.0.114.7"));
        assert_eq!(g("::ffff:203.0.113.9"), g("203.0.113.7"));
        assert_eq!(g("2001:db8:1:2::1"), g("2001:db8:1:ffff::2"));
        assert_ne!(g("2001:db8:1::1"), g("2001:db8:2::1"));
    }
}
