//! Which network a peer's address belongs to, for the limits that keep one
//! host or one network from taking too large a share of a node's state.
//!
//! Node ids cost nothing to make, so a single machine can bring up as many
//! ids as it likes, and choose them near a victim's. Its addresses are
//! harder to come by: the ones our connections prove are where it really
//! is. Limits per address and per subnet are therefore what bound a flood
//! of made-up identities (Douceur, "The Sybil Attack", 2002).

use std::fmt;
use std::net::IpAddr;

/// The prefix length of an IPv4 subnet: what one site or one cloud tenant
/// usually holds.
const V4_PREFIX: u32 = 24;
/// The prefix length of an IPv6 subnet: what one site is usually given.
const V6_PREFIX: u32 = 48;

/// A subnet: an address with its host part masked, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    net: IpAddr,
    prefix: u32,
}

impl Subnet {
    /// The subnet `ip` belongs to: its /24 for IPv4 (IPv4-mapped IPv6
    /// addresses count as IPv4), its /48 for IPv6.
    pub fn of(ip: IpAddr) -> Subnet {
        match host(ip) {
            IpAddr::V4(v4) => Subnet {
                net: IpAddr::V4((u32::from(v4) & (u32::MAX << (32 - V4_PREFIX))).into()),
                prefix: V4_PREFIX,
            },
            IpAddr::V6(v6) => Subnet {
                net: IpAddr::V6((u128::from(v6) & (u128::MAX << (128 - V6_PREFIX))).into()),
                prefix: V6_PREFIX,
            },
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// `ip` with IPv4-mapped IPv6 addresses as the IPv4 address they stand
/// for, so that one host is counted once whichever way it is reached.
pub fn host(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether a peer at `ip` counts against the shares of its network, for a
/// node at `me`: our own subnet and loopback do not (a machine running
/// several nodes, a LAN, the tests), every other network does.
pub fn is_foreign(me: IpAddr, ip: IpAddr) -> bool {
    !ip.is_loopback() && Subnet::of(ip) != Subnet::of(me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_mask_the_host_part() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = ip("203.0.113.7");
        assert_eq!(Subnet::of(a), Subnet::of(ip("203.0.113.200")));
        assert_ne!(Subnet::of(a), Subnet::of(ip("203.0.114.7")));
        assert_eq!(Subnet::of(a).to_string(), "203.0.113.0/24");
        let mapped = ip("::ffff:203.0.113.9");
        assert_eq!(Subnet::of(mapped), Subnet::of(a), "IPv4-mapped is IPv4");
        assert_eq!(host(mapped), ip("203.0.113.9"));
        let x = ip("2001:db8:1:2::1");
        assert_eq!(Subnet::of(x), Subnet::of(ip("2001:db8:1:ffff::9")));
        assert_ne!(Subnet::of(x), Subnet::of(ip("2001:db8:2::1")));
        assert_eq!(Subnet::of(x).to_string(), "2001:db8:1::/48");
        assert!(!is_foreign(a, ip("203.0.113.1")));
        assert!(!is_foreign(a, ip("127.0.0.1")));
        assert!(is_foreign(a, ip("198.51.100.1")));
    }
}
