//! The daemon's settings: command-line flags, an optional TOML file, and
//! defaults, in that order of precedence.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::multicast::{self, Interface, MulticastSettings};

/// Flags of `overlay-node` (also accepted by `overlay node`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// TOML file with settings; flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the node's key, node.json and control socket. Created if
    /// missing; the node keeps its identity across restarts with the same one.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// UDP address for QUIC (port 0 picks a free port) [default: 127.0.0.1:7400]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address other nodes should use to reach this one, when it differs
    /// from --listen (required when listening on 0.0.0.0 or ::).
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<SocketAddr>,
    /// Address (host:port) of a running node to enter the overlay through;
    /// repeat for more. Without it, this node starts a new overlay.
    #[arg(long = "bootstrap", value_name = "ADDR")]
    pub bootstrap: Vec<String>,
    /// Most children per group tree on this node; further joins are handed
    /// down to a child [default: 16]
    #[arg(long, value_name = "N")]
    pub max_children: Option<usize>,
    /// Path of the control socket [default: DIR/control.sock]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Largest message accepted, in bytes [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Use IP multicast on this LAN interface (name or IPv4 address): group
    /// members there share one copy of each message, and reach each other
    /// when the tree is out of reach. Off unless given.
    #[arg(long, value_name = "IF")]
    pub multicast_interface: Option<String>,
    /// IPv4 range within 239.0.0.0/8 that groups' multicast addresses are
    /// derived from [default: 239.255.0.0/16]
    #[arg(long, value_name = "CIDR")]
    pub multicast_range: Option<String>,
    /// UDP port of the groups' multicast datagrams [default: 7410]
    #[arg(long, value_name = "PORT")]
    pub multicast_port: Option<u16>,
    /// A group's multicast address, instead of the derived one; repeat for
    /// more groups.
    #[arg(long = "multicast-group", value_name = "MID=ADDR")]
    pub multicast_groups: Vec<String>,
}

/// The `[multicast]` table of the config file: see the `--multicast-*`
/// flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MulticastFile {
    /// See `--multicast-interface`.
    pub interface: Option<String>,
    /// See `--multicast-range`.
    pub range: Option<String>,
    /// See `--multicast-port`.
    pub port: Option<u16>,
    /// Multicast address per group (mid in hex = address).
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
    /// Largest datagram sent, in bytes of UDP payload (default 1200).
    /// Larger messages travel over the overlay only.
    pub max_datagram: Option<usize>,
}

/// Settings a TOML file may hold. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// See `--listen`.
    pub listen: Option<SocketAddr>,
    /// See `--advertise`.
    pub advertise: Option<SocketAddr>,
    /// See `--bootstrap`.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// See `--max-children`.
    pub max_children: Option<usize>,
    /// See `--control`.
    pub control: Option<PathBuf>,
    /// See `--max-message-size`.
    pub max_message_size: Option<usize>,
    /// Most groups this node's user joins or creates (default 4096).
    pub max_groups: Option<usize>,
    /// Most groups this node forwards for others, not being a member or
    /// the root (default 4096).
    pub max_forwarded_groups: Option<usize>,
    /// Costly requests a second each peer may send (default 1000).
    pub peer_request_rate: Option<u32>,
    /// Costly requests a peer may send at once (default 4000).
    pub peer_request_burst: Option<u32>,
    /// QUIC keep-alive interval in milliseconds (default 500).
    pub keep_alive_ms: Option<u64>,
    /// QUIC idle timeout in milliseconds: a peer connection silent this
    /// long is closed (default 2000). Tree neighbours are watched more
    /// closely by the heartbeat.
    pub idle_timeout_ms: Option<u64>,
    /// Heartbeat interval between tree neighbours in milliseconds
    /// (default 250).
    pub heartbeat_ms: Option<u64>,
    /// Silence after which a tree neighbour (parent, child, root, replica)
    /// is taken for dead, in milliseconds (default 1000). A crash is
    /// detected within this plus one heartbeat.
    pub failure_timeout_ms: Option<u64>,
    /// How long a publish waits for the root's answer before it is sent
    /// again, in milliseconds (default 1000).
    pub publish_retry_ms: Option<u64>,
    /// Most leaf-set places nodes of one other host may hold (default 2).
    pub leaf_set_per_host: Option<usize>,
    /// Most leaf-set places nodes of one other subnet, /24 or /48, may
    /// hold (default 4).
    pub leaf_set_per_subnet: Option<usize>,
    /// A member whose stream has not moved for this long asks the root
    /// past its parent whether there is more (default 2000).
    pub stall_probe_min_ms: Option<u64>,
    /// The longest wait between two such questions (default 60000).
    pub stall_probe_max_ms: Option<u64>,
    /// How long a publish may take in all before it fails, in milliseconds
    /// (default 10000).
    pub publish_timeout_ms: Option<u64>,
    /// Join retry interval in milliseconds; it doubles on each retry
    /// (default 750).
    pub join_retry_ms: Option<u64>,
    /// Longest wait between two rounds of routing-table maintenance, in
    /// milliseconds (default 20000). Each round also asks a lost
    /// neighbour whether it is back, which is what heals a partition.
    pub maintenance_interval_ms: Option<u64>,
    /// Nodes that keep a copy of the state of each group rooted here
    /// (default 2; 0 turns replication off, and with it root takeover).
    pub replicas: Option<usize>,
    /// Messages the root of a group retains for replay and repair
    /// (default 10000).
    pub retain_messages: Option<usize>,
    /// Bytes the root of a group retains (default 8388608, 8 MiB).
    pub retain_bytes: Option<usize>,
    /// Recent messages every tree node keeps per group to serve children
    /// that re-attach (default 2048).
    pub buffer_messages: Option<usize>,
    /// Bytes of that buffer (default 2097152, 2 MiB).
    pub buffer_bytes: Option<usize>,
    /// Bytes queued per peer connection before the peer counts as too slow
    /// and is disconnected (default: `retain_bytes`, so that a child dropped
    /// this way can repair what it missed from the root's retention when it
    /// joins again).
    pub peer_queue_bytes: Option<usize>,
    /// Frames queued per peer connection before the peer counts as too slow
    /// (default: `retain_messages` for the same reason, and at least 8192).
    pub peer_queue_frames: Option<usize>,
    /// Messages buffered per control connection for subscribers before
    /// they are dropped and reported as missed (default 8192).
    pub subscriber_buffer: Option<usize>,
    /// Payload bytes buffered per control connection for subscribers
    /// (default 8388608, 8 MiB).
    pub subscriber_buffer_bytes: Option<usize>,
    /// Most applications connected to the control socket at once (default 64).
    pub max_control_clients: Option<usize>,
    /// Most peer connections at once (default 1024).
    pub max_connections: Option<usize>,
    /// Most connections and handshakes peers at one IP address may have
    /// open to this node at once (default 256: room for every daemon of a
    /// large test or bench on one host, which all share 127.0.0.1, while
    /// one host alone cannot take all of `max_connections`).
    pub max_conns_per_ip: Option<usize>,
    /// Most connections and handshakes from one subnet (IPv4 /24, IPv6
    /// /48) at once (default 1024, as `max_connections`: a subnet may
    /// hold many honest nodes, and the per-address cap already stops one
    /// host; this stops one site with many addresses).
    pub max_conns_per_subnet: Option<usize>,
    /// Bytes that all frames being read from peers may hold at once, over
    /// every connection (default 268435456, 256 MiB: several maximal frames
    /// at once, and a bound on what peers that start frames and never
    /// finish them can make the node hold). A frame that finds no room
    /// waits a moment, then its connection is closed. At least the largest
    /// frame (`max_message_size` and its header).
    pub frame_read_budget: Option<usize>,
    /// Seconds a join through the control socket may take (default 30).
    pub join_timeout_secs: Option<u64>,
    /// Rounds of dialing the bootstrap addresses before the node gives up
    /// and exits (default 6).
    pub bootstrap_attempts: Option<u32>,
    /// Wait after the first bootstrap round in milliseconds; it doubles each
    /// round, up to 16 times (default 500).
    pub bootstrap_backoff_ms: Option<u64>,
    /// Network-level multicast on a LAN.
    pub multicast: Option<MulticastFile>,
}

/// The daemon's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Advertised address (`None`: the bound address).
    pub advertise: Option<SocketAddr>,
    /// Bootstrap addresses, resolved.
    pub bootstrap: Vec<SocketAddr>,
    /// Control socket path.
    pub control: PathBuf,
    /// Protocol settings.
    pub proto: overlay_proto::Config,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Bytes queued per peer before it counts as too slow.
    pub peer_queue_bytes: usize,
    /// Frames queued per peer before it counts as too slow.
    pub peer_queue_frames: usize,
    /// Messages buffered per control connection for subscribers.
    pub subscriber_buffer: usize,
    /// Payload bytes buffered per control connection for subscribers.
    pub subscriber_buffer_bytes: usize,
    /// Most control connections at once.
    pub max_control_clients: usize,
    /// Most peer connections at once.
    pub max_connections: usize,
    /// Most incoming connections and handshakes from one IP address.
    pub max_conns_per_ip: usize,
    /// Most incoming connections and handshakes from one subnet.
    pub max_conns_per_subnet: usize,
    /// Bytes all frames being read may hold at once.
    pub frame_read_budget: usize,
    /// How long a join through the control socket may take.
    pub join_timeout: Duration,
    /// IP multicast on a LAN, if configured.
    pub multicast: Option<MulticastSettings>,
}

impl Settings {
    /// Resolves flags, the config file they name (if any) and defaults.
    pub fn resolve(args: &NodeArgs) -> anyhow::Result<Settings> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let Some(data_dir) = args.data_dir.clone().or(file.data_dir.clone()) else {
            bail!("no data directory given: pass --data-dir DIR (or set data_dir in the --config file)");
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7400)));
        let advertise = args.advertise.or(file.advertise);
        if listen.ip().is_unspecified() && advertise.is_none() {
            bail!("--listen {listen} does not say which address peers should use: also pass --advertise ADDR");
        }
        let bootstrap_names = if args.bootstrap.is_empty() {
            file.bootstrap.clone()
        } else {
            args.bootstrap.clone()
        };
        let mut bootstrap = Vec::new();
        for name in &bootstrap_names {
            let addrs = name
                .to_socket_addrs()
                .with_context(|| format!("bootstrap address `{name}` is not a valid host:port"))?;
            bootstrap.extend(addrs.take(1));
        }
        let mut proto = overlay_proto::Config::default();
        if let Some(n) = args.max_children.or(file.max_children) {
            if n == 0 {
                bail!("--max-children must be at least 1");
            }
            proto.max_children = n;
        }
        if let Some(n) = args.max_message_size.or(file.max_message_size) {
            if n == 0 || n > 64 << 20 {
                bail!("--max-message-size must be between 1 and 67108864 bytes");
            }
            proto.max_message_size = n;
        }
        if let Some(n) = file.max_groups {
            proto.max_groups = n;
        }
        if let Some(n) = file.max_forwarded_groups {
            proto.max_forwarded_groups = n;
        }
        if let Some(n) = file.peer_request_rate {
            proto.peer_request_rate = n;
        }
        if let Some(n) = file.peer_request_burst {
            proto.peer_request_burst = n;
        }
        if let Some(n) = file.leaf_set_per_host {
            proto.leaf_set_per_host = n;
        }
        if let Some(n) = file.leaf_set_per_subnet {
            proto.leaf_set_per_subnet = n;
        }
        if proto.leaf_set_per_host == 0 || proto.leaf_set_per_subnet < proto.leaf_set_per_host {
            bail!("leaf_set_per_host must be at least 1 and leaf_set_per_subnet at least leaf_set_per_host: a network's share of the leaf set holds at least its closest node");
        }
        if let Some(n) = file.bootstrap_attempts {
            proto.bootstrap_attempts = n.max(1);
        }
        if let Some(ms) = file.bootstrap_backoff_ms {
            proto.bootstrap_backoff = Duration::from_millis(ms);
        }
        let ms = |v: Option<u64>, field: &mut Duration| {
            if let Some(v) = v {
                *field = Duration::from_millis(v.max(1));
            }
        };
        ms(file.heartbeat_ms, &mut proto.heartbeat_interval);
        ms(file.failure_timeout_ms, &mut proto.failure_timeout);
        ms(file.publish_retry_ms, &mut proto.publish_retry);
        ms(file.stall_probe_min_ms, &mut proto.stall_probe_min);
        ms(file.stall_probe_max_ms, &mut proto.stall_probe_max);
        ms(file.publish_timeout_ms, &mut proto.publish_timeout);
        ms(file.join_retry_ms, &mut proto.join_retry);
        ms(
            file.maintenance_interval_ms,
            &mut proto.maintenance_interval,
        );
        if proto.failure_timeout < 2 * proto.heartbeat_interval {
            bail!("failure_timeout_ms must be at least twice heartbeat_ms, or live neighbours would be taken for dead");
        }
        if let Some(n) = file.replicas {
            if n > overlay_proto::message::MAX_REPLICAS {
                bail!(
                    "replicas must be at most {}",
                    overlay_proto::message::MAX_REPLICAS
                );
            }
            proto.replicas = n;
        }
        let at_least = |v: Option<usize>, min: usize, field: &mut usize| {
            if let Some(v) = v {
                *field = v.max(min);
            }
        };
        at_least(file.retain_messages, 1, &mut proto.retain_messages);
        at_least(file.retain_bytes, 1, &mut proto.retain_bytes);
        at_least(file.buffer_messages, 1, &mut proto.buffer_messages);
        at_least(file.buffer_bytes, 1, &mut proto.buffer_bytes);
        let control = args
            .control
            .clone()
            .or(file.control.clone())
            .unwrap_or_else(|| data_dir.join("control.sock"));
        // At least two maximal frames, so one large message always fits.
        let peer_queue_bytes = file
            .peer_queue_bytes
            .unwrap_or(proto.retain_bytes)
            .max(2 * proto.max_frame_size());
        // Bursts of small frames (acknowledgements, heartbeats) must fit
        // whatever the retention, hence the floor.
        let peer_queue_frames = file
            .peer_queue_frames
            .unwrap_or(proto.retain_messages.max(8192))
            .max(16);
        let max_message = proto.max_message_size;
        let (max_conns_per_ip, max_conns_per_subnet) = resolve_conn_caps(&file)?;
        let frame_read_budget = file.frame_read_budget.unwrap_or(DEFAULT_FRAME_READ_BUDGET);
        if frame_read_budget < proto.max_frame_size() {
            bail!(
                "frame_read_budget = {frame_read_budget} is less than the largest frame ({} bytes, from max_message_size = {max_message}), which could then never be read: raise frame_read_budget to at least {} or lower max_message_size",
                proto.max_frame_size(),
                proto.max_frame_size()
            );
        }
        let multicast = resolve_multicast(args, file.multicast.clone().unwrap_or_default())?;
        if let Some(m) = &multicast {
            proto.lan_max_datagram = m.max_datagram;
        }
        Ok(Settings {
            data_dir,
            listen,
            advertise,
            bootstrap,
            control,
            proto,
            keep_alive: Duration::from_millis(file.keep_alive_ms.unwrap_or(500)),
            idle_timeout: Duration::from_millis(file.idle_timeout_ms.unwrap_or(2000)),
            peer_queue_bytes,
            peer_queue_frames,
            subscriber_buffer: file.subscriber_buffer.unwrap_or(8192).max(16),
            subscriber_buffer_bytes: file
                .subscriber_buffer_bytes
                .unwrap_or(8 << 20)
                .max(max_message + 1024),
            max_control_clients: file.max_control_clients.unwrap_or(64).max(1),
            max_connections: file.max_connections.unwrap_or(1024).max(8),
            max_conns_per_ip,
            max_conns_per_subnet,
            frame_read_budget,
            join_timeout: Duration::from_secs(file.join_timeout_secs.unwrap_or(30)),
            multicast,
        })
    }
}

/// Default of `max_conns_per_ip`; see [`FileConfig::max_conns_per_ip`].
pub const DEFAULT_MAX_CONNS_PER_IP: usize = 256;
/// Default of `max_conns_per_subnet`; see
/// [`FileConfig::max_conns_per_subnet`].
pub const DEFAULT_MAX_CONNS_PER_SUBNET: usize = 1024;
/// Default of `frame_read_budget`; see [`FileConfig::frame_read_budget`].
pub const DEFAULT_FRAME_READ_BUDGET: usize = 256 << 20;

/// `max_conns_per_ip` and `max_conns_per_subnet`, checked against each
/// other.
fn resolve_conn_caps(file: &FileConfig) -> anyhow::Result<(usize, usize)> {
    let per_ip = file.max_conns_per_ip.unwrap_or(DEFAULT_MAX_CONNS_PER_IP);
    let per_subnet = file
        .max_conns_per_subnet
        .unwrap_or(DEFAULT_MAX_CONNS_PER_SUBNET);
    if per_ip == 0 {
        bail!("max_conns_per_ip = 0 would refuse every peer: set it to at least 1 (default {DEFAULT_MAX_CONNS_PER_IP})");
    }
    if per_subnet < per_ip {
        bail!("max_conns_per_subnet = {per_subnet} is less than max_conns_per_ip = {per_ip}, so one address could never reach its own cap: raise max_conns_per_subnet to at least {per_ip} or lower max_conns_per_ip");
    }
    Ok((per_ip, per_subnet))
}

/// The multicast settings from the flags and the `[multicast]` table: none
/// without an interface.
fn resolve_multicast(
    args: &NodeArgs,
    file: MulticastFile,
) -> anyhow::Result<Option<MulticastSettings>> {
    let Some(spec) = args.multicast_interface.clone().or(file.interface) else {
        if args.multicast_range.is_some()
            || args.multicast_port.is_some()
            || !args.multicast_groups.is_empty()
        {
            bail!("--multicast-range, --multicast-port and --multicast-group need --multicast-interface IF");
        }
        return Ok(None);
    };
    let interface = Interface::find(&spec)?;
    let range = args
        .multicast_range
        .clone()
        .or(file.range)
        .unwrap_or_else(|| multicast::DEFAULT_RANGE.to_string());
    let range = MulticastSettings::parse_range(&range)?;
    let port = args
        .multicast_port
        .or(file.port)
        .unwrap_or(multicast::DEFAULT_PORT);
    if port == 0 {
        bail!("--multicast-port must not be 0: every node of a LAN must use the same port");
    }
    let mut groups = std::collections::HashMap::new();
    let given = file.groups.into_iter().map(|(m, a)| (m, a.to_string()));
    let flags = args.multicast_groups.iter().map(|s| {
        let (m, a) = s.split_once('=').unwrap_or((s, ""));
        (m.to_string(), a.to_string())
    });
    for (mid, addr) in given.chain(flags) {
        let m: overlay_proto::Mid = mid
            .parse()
            .with_context(|| format!("multicast group `{mid}={addr}`: not a mid"))?;
        let a = addr.parse().with_context(|| {
            format!("multicast group `{mid}={addr}`: not an IPv4 address (MID=ADDR)")
        })?;
        groups.insert(m, MulticastSettings::check_group_addr(a)?);
    }
    let max_datagram = file
        .max_datagram
        .unwrap_or(overlay_proto::lan::MAX_DATAGRAM);
    if !(256..=65_507).contains(&max_datagram) {
        bail!("multicast max_datagram must be between 256 and 65507 bytes");
    }
    Ok(Some(MulticastSettings {
        interface,
        range,
        port,
        groups,
        max_datagram,
    }))
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "data_dir = \"/tmp/x\"\nmax_children = 5\nlisten = \"127.0.0.1:9000\"\nkeep_alive_ms = 300\n").unwrap();
        let args = NodeArgs {
            config: Some(file),
            max_children: Some(3),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.proto.max_children, 3);
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.keep_alive, Duration::from_millis(300));
        assert_eq!(s.control, PathBuf::from("/tmp/x/control.sock"));
    }

    #[test]
    fn multicast_comes_from_the_table_and_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        let mid = "0123456789abcdef0123456789abcdef";
        std::fs::write(
            &file,
            format!(
                "data_dir = \"/tmp/x\"\n[multicast]\ninterface = \"lo\"\nport = 7411\n\
                 max_datagram = 1000\n[multicast.groups]\n\"{mid}\" = \"239.1.2.3\"\n"
            ),
        )
        .unwrap();
        let args = NodeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        let m = s.multicast.expect("configured");
        assert_eq!((m.interface.name.as_str(), m.port), ("lo", 7411));
        assert_eq!(m.range.to_string(), crate::multicast::DEFAULT_RANGE);
        assert_eq!(
            m.group_addr(mid.parse().unwrap()),
            std::net::Ipv4Addr::new(239, 1, 2, 3)
        );
        assert_eq!(s.proto.lan_max_datagram, 1000);
        let args = NodeArgs {
            config: Some(file),
            multicast_port: Some(7500),
            multicast_range: Some("239.7.0.0/16".into()),
            ..Default::default()
        };
        let m = Settings::resolve(&args).unwrap().multicast.unwrap();
        assert_eq!(
            (m.port, m.range.to_string().as_str()),
            (7500, "239.7.0.0/16")
        );
        // Off unless an interface is given.
        let plain = NodeArgs {
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(&plain).unwrap().multicast.is_none());
    }

    #[test]
    fn multicast_mistakes_are_clear_errors() {
        let base = || NodeArgs {
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let err = |args: NodeArgs| format!("{:#}", Settings::resolve(&args).unwrap_err());
        let e = err(NodeArgs {
            multicast_port: Some(7000),
            ..base()
        });
        assert!(e.contains("--multicast-interface"), "{e}");
        let e = err(NodeArgs {
            multicast_interface: Some("nosuchif9".into()),
            ..base()
        });
        assert!(e.contains("nosuchif9"), "{e}");
        let e = err(NodeArgs {
            multicast_interface: Some("lo".into()),
            multicast_range: Some("224.0.0.0/24".into()),
            ..base()
        });
        assert!(e.contains("239.0.0.0/8"), "{e}");
        let e = err(NodeArgs {
            multicast_interface: Some("lo".into()),
            multicast_groups: vec!["nonsense".into()],
            ..base()
        });
        assert!(e.contains("not a mid"), "{e}");
    }

    #[test]
    fn connection_caps_and_the_read_budget_have_defaults_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        let resolve = |text: &str| {
            std::fs::write(&file, format!("data_dir = \"/tmp/x\"\n{text}")).unwrap();
            Settings::resolve(&NodeArgs {
                config: Some(file.clone()),
                ..Default::default()
            })
        };
        let s = resolve("").unwrap();
        assert_eq!(
            (
                s.max_conns_per_ip,
                s.max_conns_per_subnet,
                s.frame_read_budget
            ),
            (256, 1024, 256 << 20)
        );
        let s = resolve(
            "max_conns_per_ip = 4\nmax_conns_per_subnet = 4\nframe_read_budget = 2000000\n",
        )
        .unwrap();
        assert_eq!(
            (
                s.max_conns_per_ip,
                s.max_conns_per_subnet,
                s.frame_read_budget
            ),
            (4, 4, 2_000_000)
        );
        let err = |text: &str| format!("{:#}", resolve(text).unwrap_err());
        let e = err("max_conns_per_ip = 0\n");
        assert!(
            e.contains("max_conns_per_ip") && e.contains("at least 1"),
            "{e}"
        );
        let e = err("max_conns_per_ip = 8\nmax_conns_per_subnet = 4\n");
        assert!(
            e.contains("raise max_conns_per_subnet to at least 8"),
            "{e}"
        );
        let e = err("frame_read_budget = 1000\n");
        assert!(e.contains("raise frame_read_budget to at least"), "{e}");
        // A smaller message size makes room for a smaller budget.
        let s = resolve("max_message_size = 1000\nframe_read_budget = 70000\n").unwrap();
        assert_eq!(s.frame_read_budget, 70_000);
    }

    #[test]
    fn unknown_keys_and_missing_dirs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "max_childern = 5\n").unwrap();
        let args = NodeArgs {
            config: Some(file),
            ..Default::default()
        };
        let err = format!("{:#}", Settings::resolve(&args).unwrap_err());
        assert!(err.contains("max_childern"), "{err}");
        let err = Settings::resolve(&NodeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--data-dir"), "{err}");
    }
}
