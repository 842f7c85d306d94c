//! Admission of incoming connections: caps per remote IP address and per
//! subnet, checked before a handshake does any cryptographic work.
//!
//! Any peer that completes a QUIC handshake may be malicious, and one host
//! can open as many connections as it likes, each with a fresh key. The
//! accept loop therefore asks [`Admission::admit`] about the remote address
//! of every [`quinn::Incoming`] before accepting it, and refuses it when
//! that address already has `max_conns_per_ip` connections, or its subnet
//! (IPv4 /24, IPv6 /48; an IPv4-mapped IPv6 address counts as IPv4) has
//! `max_conns_per_subnet`. A handshake counts from the moment it is
//! admitted, so a flood of half-open handshakes from one address is held
//! to the same cap as finished connections.
//!
//! Only connections peers open to us count. A dial is this node's own
//! choice, already bounded by `max_connections` and the daemon's dial
//! limit; counting it too would let a peer that names some address in its
//! routing entries make us spend that address's quota ourselves, and then
//! refuse the honest nodes behind it.
//!
//! The source address of a handshake that has not been validated could be
//! spoofed, so a flood of forged first packets can take an address's slots
//! for the length of a handshake (the idle timeout). It cannot go beyond
//! the cap, and the slots come back as those handshakes time out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use overlay_proto::subnet::{host, Subnet};

/// Why an incoming connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Refused {
    /// The remote address is at its cap.
    #[error("{ip} already has {count} connections or handshakes with this node (max_conns_per_ip = {cap}); if these are honest nodes, raise max_conns_per_ip in the config file")]
    PerIp {
        /// The remote address.
        ip: IpAddr,
        /// Its connections and handshakes.
        count: usize,
        /// The cap.
        cap: usize,
    },
    /// The remote address's subnet is at its cap.
    #[error("subnet {subnet} already has {count} connections or handshakes with this node (max_conns_per_subnet = {cap}); if these are honest nodes, raise max_conns_per_subnet in the config file")]
    PerSubnet {
        /// The subnet.
        subnet: Subnet,
        /// Its connections and handshakes.
        count: usize,
        /// The cap.
        cap: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    ips: HashMap<IpAddr, usize>,
    subnets: HashMap<Subnet, usize>,
}

#[derive(Debug)]
struct Inner {
    max_per_ip: usize,
    max_per_subnet: usize,
    counts: Mutex<Counts>,
    refused: AtomicU64,
}

/// The live incoming connections and handshakes per address and subnet,
/// shared by the accept loop (which admits) and the connections' slots
/// (which leave when their connection ends).
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    inner: Arc<Inner>,
}

impl Admission {
    /// Caps of `max_per_ip` connections per address and `max_per_subnet`
    /// per subnet.
    pub(crate) fn new(max_per_ip: usize, max_per_subnet: usize) -> Admission {
        Admission {
            inner: Arc::new(Inner {
                max_per_ip,
                max_per_subnet,
                counts: Mutex::default(),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Takes a slot for a connection from `ip`, or refuses it (and counts
    /// the refusal) when its address or its subnet is at its cap.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let ip = host(ip);
        let subnet = Subnet::of(ip);
        let mut counts = self
            .inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let by_ip = counts.ips.get(&ip).copied().unwrap_or(0);
        let by_subnet = counts.subnets.get(&subnet).copied().unwrap_or(0);
        let refusal = if by_ip >= self.inner.max_per_ip {
            Some(Refused::PerIp {
                ip,
                count: by_ip,
                cap: self.inner.max_per_ip,
            })
        } else if by_subnet >= self.inner.max_per_subnet {
            Some(Refused::PerSubnet {
                subnet,
                count: by_subnet,
                cap: self.inner.max_per_subnet,
            })
        } else {
            None
        };
        if let Some(r) = refusal {
            drop(counts);
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        counts.ips.insert(ip, by_ip.saturating_add(1));
        counts.subnets.insert(subnet, by_subnet.saturating_add(1));
        Ok(Slot {
            inner: self.inner.clone(),
            ip,
            subnet,
        })
    }

    /// Connections refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Live connections and handshakes from `ip`.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        let counts = self
            .inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.ips.get(&host(ip)).copied().unwrap_or(0)
    }
}

/// One admitted connection or handshake; its address and subnet count it
/// until the slot is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    inner: Arc<Inner>,
    ip: IpAddr,
    subnet: Subnet,
}

impl Slot {
    /// Keeps the slot until `conn` has ended, however it ends.
    ///
    /// The watcher holds a handle of `conn`, so the connection no longer
    /// closes when the daemon drops its own handles: the daemon closes
    /// every connection it does not keep explicitly, as it must anyway,
    /// since its reader task holds a handle too.
    pub(crate) fn hold_until_closed(self, conn: quinn::Connection) {
        smol::spawn(async move {
            conn.closed().await;
            drop(self);
        })
        .detach();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        release(&mut counts.ips, &self.ip);
        release(&mut counts.subnets, &self.subnet);
    }
}

/// Counts one off `key`, forgetting it at zero so that the maps hold only
/// live addresses.
fn release<K: Eq + std::hash::Hash>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_at_its_cap_is_refused_until_a_slot_is_dropped() {
        let a = Admission::new(2, 100);
        let first = a.admit(ip("127.0.0.1")).unwrap();
        let _second = a.admit(ip("127.0.0.1")).unwrap();
        let e = a.admit(ip("127.0.0.1")).unwrap_err();
        assert!(
            matches!(
                e,
                Refused::PerIp {
                    count: 2,
                    cap: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("max_conns_per_ip"), "{e}");
        // Another address is not affected.
        let _other = a.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(a.refused(), 1);
        drop(first);
        assert_eq!(a.count(ip("127.0.0.1")), 1);
        let _third = a.admit(ip("127.0.0.1")).unwrap();
    }

    #[test]
    fn a_subnet_at_its_cap_is_refused_whatever_the_address() {
        let a = Admission::new(10, 3);
        let slots: Vec<Slot> = (1..=3)
            .map(|k| a.admit(ip(&format!("10.1.2.{k}"))).unwrap())
            .collect();
        let e = a.admit(ip("10.1.2.200")).unwrap_err();
        assert!(e.to_string().contains("10.1.2.0/24"), "{e}");
        assert!(e.to_string().contains("max_conns_per_subnet"), "{e}");
        // The next /24 is another subnet.
        let _next = a.admit(ip("10.1.3.1")).unwrap();
        let e = Admission::new(10, 1);
        let _v6 = e.admit(ip("2001:db8:1:ffff::1")).unwrap();
        let refused = e.admit(ip("2001:db8:1:1::2")).unwrap_err();
        assert!(refused.to_string().contains("2001:db8:1::/48"), "{refused}");
        let _other48 = e.admit(ip("2001:db8:2::1")).unwrap();
        drop(slots);
        assert_eq!(a.refused(), 1);
        let _again = a.admit(ip("10.1.2.200")).unwrap();
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_ipv4() {
        let a = Admission::new(1, 10);
        let _v4 = a.admit(ip("192.0.2.7")).unwrap();
        let e = a.admit(ip("::ffff:192.0.2.7")).unwrap_err();
        assert!(
            matches!(
                e,
                Refused::PerIp {
                    ip: IpAddr::V4(_),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn dropped_slots_leave_no_entries_behind() {
        let a = Admission::new(4, 4);
        let slots: Vec<Slot> = (0..4).map(|_| a.admit(ip("::1")).unwrap()).collect();
        drop(slots);
        let counts = a.inner.counts.lock().unwrap();
        assert!(counts.ips.is_empty() && counts.subnets.is_empty());
    }
}
