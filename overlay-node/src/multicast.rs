//! Network-level multicast on one LAN interface: the settings that turn it
//! on, the group addresses, and the UDP socket.
//!
//! Off unless an interface is configured. Each group gets an IPv4
//! multicast address in the configured range (by default 239.255.0.0/16,
//! the IPv4 local scope of RFC 2365), derived from its mid or set per
//! group; all groups share one UDP port, and the datagram header names the
//! group (see [`overlay_proto::lan`]). Datagrams go out with a TTL of 1:
//! they stay on the LAN, which is the point.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use anyhow::{bail, Context};
use ipnet::Ipv4Net;
use overlay_proto::Mid;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

/// The default group address range: IPv4 local scope (RFC 2365, 6.1).
pub const DEFAULT_RANGE: &str = "239.255.0.0/16";
/// The default UDP port of group datagrams.
pub const DEFAULT_PORT: u16 = 7410;
/// The administratively scoped block every group address must lie in.
const ADMIN_SCOPED: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(239, 0, 0, 0), 8) {
    Ok(n) => n,
    Err(_) => unreachable!(),
};
/// Addresses of the local scope that other protocols listen on (SSDP,
/// SLPv2): a derived address never lands on them.
const TAKEN: [Ipv4Addr; 2] = [
    Ipv4Addr::new(239, 255, 255, 250),
    Ipv4Addr::new(239, 255, 255, 253),
];

/// A network interface, as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`eth1`).
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its first IPv4 address: where datagrams are sent from.
    pub addr: Ipv4Addr,
}

impl Interface {
    /// The interface named `spec`, or the one that holds address `spec`.
    pub fn find(spec: &str) -> anyhow::Result<Interface> {
        let by_addr: Option<Ipv4Addr> = spec.parse().ok();
        let mut seen = Vec::new();
        for a in nix::ifaddrs::getifaddrs().context("cannot list the network interfaces")? {
            let Some(v4) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) else {
                continue;
            };
            let ip = v4.ip();
            if a.interface_name == spec || by_addr == Some(ip) {
                let index = nix::net::if_::if_nametoindex(a.interface_name.as_str())
                    .with_context(|| format!("interface {} has no index", a.interface_name))?;
                return Ok(Interface {
                    name: a.interface_name,
                    index,
                    addr: ip,
                });
            }
            seen.push(format!("{} ({ip})", a.interface_name));
        }
        bail!(
            "no network interface named or holding `{spec}` with an IPv4 address; \
             interfaces here: {}",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        )
    }
}

/// Where and how a node uses IP multicast.
#[derive(Debug, Clone)]
pub struct MulticastSettings {
    /// The interface datagrams go out and come in on.
    pub interface: Interface,
    /// Group addresses are derived within this range.
    pub range: Ipv4Net,
    /// The UDP port of every group.
    pub port: u16,
    /// Addresses set per group, over the derived ones.
    pub groups: HashMap<Mid, Ipv4Addr>,
    /// Largest datagram sent, in bytes of UDP payload.
    pub max_datagram: usize,
}

impl MulticastSettings {
    /// Checks a range given by the user.
    pub fn parse_range(text: &str) -> anyhow::Result<Ipv4Net> {
        let range: Ipv4Net = text.parse().with_context(|| {
            format!("multicast range `{text}` is not an IPv4 prefix such as {DEFAULT_RANGE}")
        })?;
        if !ADMIN_SCOPED.contains(&range) {
            bail!("multicast range {range} must lie within 239.0.0.0/8, the administratively scoped block (RFC 2365)");
        }
        Ok(range.trunc())
    }

    /// Checks a group address given by the user.
    pub fn check_group_addr(addr: Ipv4Addr) -> anyhow::Result<Ipv4Addr> {
        if !addr.is_multicast() || Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 24)?.contains(&addr) {
            bail!("{addr} is not a usable multicast group address (use one of 239.0.0.0/8)");
        }
        Ok(addr)
    }

    /// The multicast address of group `mid`.
    pub fn group_addr(&self, mid: Mid) -> Ipv4Addr {
        if let Some(a) = self.groups.get(&mid) {
            return *a;
        }
        derive_addr(self.range, mid)
    }
}

/// The address of `mid` in `range`: mids are random, so their low bits
/// spread groups over the range.
pub fn derive_addr(range: Ipv4Net, mid: Mid) -> Ipv4Addr {
    let size = 1u64 << (32 - range.prefix_len());
    let base = u32::from(range.network()) as u64;
    let mut offset = (mid.0 as u64) % size;
    loop {
        let addr = Ipv4Addr::from((base + offset) as u32);
        if !TAKEN.contains(&addr) || size <= TAKEN.len() as u64 {
            return addr;
        }
        offset = (offset + 1) % size;
    }
}

/// The UDP socket all of a node's groups send and receive on.
#[derive(Debug)]
pub struct LanSocket {
    socket: smol::Async<UdpSocket>,
    interface: Interface,
    port: u16,
}

impl LanSocket {
    /// Binds the group port on every address (a socket bound to one
    /// address does not receive multicast), listening on `interface` only.
    pub fn bind(interface: &Interface, port: u16) -> io::Result<LanSocket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Several nodes on one host share the port; each hears every group
        // datagram and keeps those of its own groups.
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // Without this Linux hands the socket every group any socket on the
        // host joined on this port.
        s.set_multicast_all_v4(false)?;
        if let Err(e) = s.bind_device(Some(interface.name.as_bytes())) {
            // Needs CAP_NET_RAW on older kernels; the memberships and the
            // outgoing interface below keep the socket on the LAN anyway.
            tracing::debug!(interface = %interface.name, error = %e, "cannot bind the multicast socket to its interface");
        }
        s.set_multicast_if_v4(&interface.addr)?;
        s.set_multicast_ttl_v4(1)?;
        // Other nodes on this host are on the LAN too; our own datagrams
        // come back and are dropped by sender id.
        s.set_multicast_loop_v4(true)?;
        let _ = s.set_recv_buffer_size(1 << 20);
        s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
        let udp: UdpSocket = s.into();
        let port = udp.local_addr()?.port();
        Ok(LanSocket {
            socket: smol::Async::new(udp)?,
            interface: interface.clone(),
            port,
        })
    }

    /// The port bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts receiving the datagrams sent to `group` on the interface
    /// (named by index: its address may be on other interfaces too).
    pub fn join(&self, group: Ipv4Addr) -> io::Result<()> {
        socket2::SockRef::from(self.socket.get_ref()).join_multicast_v4_n(&group, &self.index())
    }

    /// Stops receiving `group`.
    pub fn leave(&self, group: Ipv4Addr) -> io::Result<()> {
        socket2::SockRef::from(self.socket.get_ref()).leave_multicast_v4_n(&group, &self.index())
    }

    fn index(&self) -> InterfaceIndexOrAddress {
        InterfaceIndexOrAddress::Index(self.interface.index)
    }

    /// Sends one datagram to `group` without waiting: UDP is best effort,
    /// and a datagram the socket buffer has no room for is lost like one
    /// the network drops (the overlay repairs the gap).
    pub fn send(&self, group: Ipv4Addr, datagram: &[u8]) -> io::Result<()> {
        self.socket
            .get_ref()
            .send_to(datagram, SocketAddrV4::new(group, self.port))
            .map(|_| ())
    }

    /// The next datagram, into `buf`: its length and sender. A datagram
    /// longer than `buf` is cut to it (callers give room for one byte more
    /// than they accept, to tell).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(n: u128) -> Mid {
        Mid(n)
    }

    #[test]
    fn group_addresses_come_from_the_range_or_the_overrides() {
        let range = MulticastSettings::parse_range(DEFAULT_RANGE).unwrap();
        let a = derive_addr(range, mid(0x1234_0000_0000_0000_0000_0000_0000_0102));
        assert_eq!(a, Ipv4Addr::new(239, 255, 1, 2));
        // Landing on SSDP's address moves one on.
        assert_eq!(
            derive_addr(range, mid(0xfffa)),
            Ipv4Addr::new(239, 255, 255, 251)
        );
        let small = MulticastSettings::parse_range("239.1.2.0/30").unwrap();
        for n in 0..20 {
            assert!(small.contains(&derive_addr(small, mid(n))));
        }
        let mut s = MulticastSettings {
            interface: Interface {
                name: "lo".into(),
                index: 1,
                addr: Ipv4Addr::LOCALHOST,
            },
            range,
            port: DEFAULT_PORT,
            groups: HashMap::new(),
            max_datagram: 1200,
        };
        s.groups.insert(mid(5), Ipv4Addr::new(239, 9, 9, 9));
        assert_eq!(s.group_addr(mid(5)), Ipv4Addr::new(239, 9, 9, 9));
        assert_eq!(s.group_addr(mid(6)), Ipv4Addr::new(239, 255, 0, 6));
    }

    #[test]
    fn ranges_and_addresses_outside_the_scoped_block_are_refused() {
        for bad in ["224.0.0.0/24", "10.0.0.0/8", "239.0.0.0/7", "nonsense"] {
            assert!(MulticastSettings::parse_range(bad).is_err(), "{bad}");
        }
        assert_eq!(
            MulticastSettings::parse_range("239.255.7.9/24")
                .unwrap()
                .to_string(),
            "239.255.7.0/24"
        );
        assert!(MulticastSettings::check_group_addr(Ipv4Addr::new(224, 0, 0, 5)).is_err());
        assert!(MulticastSettings::check_group_addr(Ipv4Addr::new(10, 0, 0, 5)).is_err());
        assert!(MulticastSettings::check_group_addr(Ipv4Addr::new(239, 1, 1, 1)).is_ok());
    }

    /// Runs `f` on a thread of its own, in a network namespace of its own
    /// with multicast on loopback, so that nothing reaches a real interface.
    /// `None`, with the reason printed, where namespaces cannot be made
    /// (not root); under `CI=true` that is a failure instead.
    fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        std::thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                let why = format!("cannot make a network namespace ({e}): run as root");
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                eprintln!("skipped: {why}");
                return None;
            }
            // Commands started from this thread run in its namespace.
            for args in [
                &["link", "set", "lo", "up", "multicast", "on"][..],
                &["route", "add", "224.0.0.0/4", "dev", "lo"],
            ] {
                let st = std::process::Command::new("ip").args(args).status();
                assert!(
                    st.is_ok_and(|s| s.success()),
                    "ip {args:?} failed (is iproute2 installed?)"
                );
            }
            Some(f())
        })
        .join()
        .expect("the namespace thread panicked")
    }

    /// The next datagram on `s`, if one comes within `wait`.
    fn recv_within(s: &LanSocket, wait: std::time::Duration) -> Option<Vec<u8>> {
        smol::block_on(async {
            let mut buf = [0u8; 2048];
            smol::future::or(
                async { s.recv(&mut buf).await.ok().map(|(n, _)| buf[..n].to_vec()) },
                async {
                    smol::Timer::after(wait).await;
                    None
                },
            )
            .await
        })
    }

    #[test]
    fn datagrams_reach_the_sockets_that_joined_their_group_only() {
        use std::time::Duration;
        in_private_netns(|| {
            let lo = Interface::find("lo").unwrap();
            let sender = LanSocket::bind(&lo, 0).unwrap();
            let port = sender.port();
            let member = LanSocket::bind(&lo, port).unwrap();
            let other = LanSocket::bind(&lo, port).unwrap();
            let group = Ipv4Addr::new(239, 255, 0, 7);
            member.join(group).unwrap();
            other.join(Ipv4Addr::new(239, 255, 0, 8)).unwrap();
            sender.send(group, b"one").unwrap();
            assert_eq!(
                recv_within(&member, Duration::from_secs(5)).as_deref(),
                Some(&b"one"[..])
            );
            let short = Duration::from_millis(300);
            assert_eq!(recv_within(&other, short), None, "another group's datagram");
            assert_eq!(
                recv_within(&sender, short),
                None,
                "the sender joined nothing"
            );
            member.leave(group).unwrap();
            sender.send(group, b"two").unwrap();
            assert_eq!(recv_within(&member, short), None, "after leaving");
        });
    }

    #[test]
    fn interfaces_are_found_by_name_or_address() {
        let lo = Interface::find("lo").unwrap();
        assert_eq!(lo.addr, Ipv4Addr::LOCALHOST);
        assert_eq!(Interface::find("127.0.0.1").unwrap(), lo);
        let err = format!("{:#}", Interface::find("no-such-if0").unwrap_err());
        assert!(
            err.contains("no-such-if0") && err.contains("lo (127.0.0.1)"),
            "{err}"
        );
    }
}
