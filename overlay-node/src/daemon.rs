//! The daemon's main loop: one actor that owns the protocol state machine,
//! the peer connections, the timers and the control clients.
//!
//! Everything reaches the actor through one bounded inbox: frames and
//! connection ends from the transport's reader tasks, finished dials and
//! accepted connections, requests from control clients, and the shutdown
//! signal. The actor feeds each into the [`overlay_proto::Node`] and carries
//! out what it asks: frames go to per-connection writer queues without
//! waiting (a full queue disconnects that peer), dials run as their own
//! tasks, and the actor sleeps until the node's next timer
//! ([`Node::poll_timeout`]) or one of its own. The actor never awaits
//! anything but its inbox and its next timer.
//!
//! IP multicast, when configured: a reader task hands every datagram of the
//! multicast socket to the actor, which passes it to the node; the node's
//! datagrams go out from the actor without waiting (UDP is best effort,
//! and the overlay repairs what the LAN loses).
//!
//! Connections: a peer may end up with two connections (both sides dialed at
//! once, or a restarted peer dialed again before the old connection timed
//! out). The newest is used for sending, the other is kept for reading until
//! it closes, so no frame in flight is lost to the switch.
//!
//! Untrusted peers: the accept loop runs in its own task and asks
//! [`Admission`] about each incoming connection's address before its
//! handshake starts (caps per address and per subnet, refusals counted in
//! the status), and every frame being read on any connection holds its
//! bytes from one [`FrameBudget`].

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use overlay_proto::frame::{self, EncodedFrame};
use overlay_proto::{
    Command, Event, Input, Message, Mid, Node, NodeId, NodeInfo, Output, PublishError,
    RejectReason, TreeError,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smol::channel::{Receiver, Sender};

use crate::admission::Admission;
use crate::api::{
    self, ApiError, Delivery, ErrorKind, GroupStatus, Neighbour, ReplicaStatus, Request, Response,
    ServerFrame, Status,
};
use crate::config::Settings;
use crate::identity::Identity;
use crate::multicast::{LanSocket, MulticastSettings};
use crate::subscribers::{ClientConn, Subscribers};
use crate::transport::{self, codes, ConnEvent, FrameBudget, Transport};

/// What the node writes to `DIR/node.json` once it is up, for scripts and
/// the CLI to find it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeFile {
    /// The node's id.
    pub id: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its control socket.
    pub control: std::path::PathBuf,
    /// Its process id.
    pub pid: u32,
}

/// Name of the file in the data directory that describes the running node.
pub const NODE_FILE: &str = "node.json";

/// Name of the file in the data directory that keeps the node's group
/// memberships across restarts.
pub const GROUPS_FILE: &str = "groups.json";

/// A membership as kept in [`GROUPS_FILE`]: a restarted node joins the
/// group again and catches up from `next` on (from the root's retention).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedGroup {
    /// The group.
    pub mid: Mid,
    /// The first sequence number the node had not passed on.
    pub next: u64,
    /// The group's multicast key (hex), so that a restarted node takes
    /// part in its LAN island before it reaches the tree. The file is
    /// written readable by its owner only, like the node's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How often a node that could not enter the overlay, but has a LAN island
/// to serve, tries its bootstrap addresses again.
/// How often the actor tidies up (see `Actor::housekeeping`).
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const LAN_ONLY_REBOOTSTRAP: Duration = Duration::from_secs(5);

/// Everything that reaches the actor.
#[derive(Debug)]
pub(crate) enum Msg {
    Conn(ConnEvent),
    Incoming(quinn::Connection),
    Dialed {
        addr: SocketAddr,
        expect: Option<NodeInfo>,
        result: Result<quinn::Connection, String>,
    },
    ClientUp {
        client: u64,
        conn: ClientConn,
    },
    ClientRequest {
        client: u64,
        frame: api::ClientFrame,
    },
    ClientGone {
        client: u64,
    },
    /// A datagram on the multicast socket.
    Lan(Vec<u8>),
    /// A probe's answer for a peer we were already connected to.
    Rtt {
        peer: NodeInfo,
        rtt: Duration,
    },
    Shutdown,
}

impl From<ConnEvent> for Msg {
    fn from(e: ConnEvent) -> Self {
        Msg::Conn(e)
    }
}

struct Link {
    conn: quinn::Connection,
    conn_id: u64,
    queue: transport::PeerQueue,
    writer: smol::Task<()>,
}

struct Peer {
    active: Link,
    standby: Option<Link>,
}

struct Actor {
    node: Node<StdRng>,
    settings: Settings,
    transport: Transport,
    inbox: Sender<Msg>,
    max_frame: usize,
    /// Shared by the reader tasks of every connection.
    read_budget: FrameBudget,
    /// Shared with the accept loop; read for the status.
    admission: Admission,
    peers: HashMap<NodeId, Peer>,
    dialing: HashMap<NodeId, Vec<EncodedFrame>>,
    /// The actor's own timers; the protocol's are the node's
    /// ([`Node::poll_timeout`]).
    housekeeping_at: Instant,
    /// Enter the overlay again then (see [`LAN_ONLY_REBOOTSTRAP`]).
    rebootstrap_at: Option<Instant>,
    next_conn: u64,
    next_request: u64,
    clients: HashMap<u64, ClientConn>,
    subscribers: Subscribers,
    /// Memberships as last written to `groups.json`.
    saved_groups: Vec<SavedGroup>,
    joins: HashMap<Mid, Vec<(u64, u64, Instant)>>,
    creates: HashMap<u64, (u64, u64)>,
    publishes: HashMap<u64, (u64, u64)>,
    trees: HashMap<u64, (u64, u64)>,
    shutting_down: bool,
    bootstrap_error: Option<String>,
    lan: Option<Lan>,
}

/// The multicast socket and the groups' addresses on it.
struct Lan {
    socket: std::sync::Arc<LanSocket>,
    settings: MulticastSettings,
    /// Datagrams the socket would not send.
    send_errors: u64,
}

/// Frames queued for a peer while it is being dialed.
const DIAL_QUEUE: usize = 1024;
/// Subscriptions one control connection may hold.
const MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 256;
/// Dials under way at once; frames for further new peers are dropped (the
/// protocol's retries cover them).
const MAX_DIALS: usize = 256;
/// Inbox capacity: readers wait (and QUIC flow control pushes back on the
/// peer) when the actor falls this far behind.
const INBOX: usize = 4096;

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let identity = Identity::load_or_create(&settings.data_dir)?;
    let transport = Transport::bind(&settings, &identity)?;
    let bound = transport.local_addr()?;
    let me = NodeInfo {
        id: identity.id,
        addr: settings.advertise.unwrap_or(bound),
    };
    let listener = crate::control::bind(&settings.control)?;
    let (inbox, rx) = smol::channel::bounded(INBOX);
    let lan = match &settings.multicast {
        Some(m) => Some(open_lan(m, inbox.clone())?),
        None => None,
    };

    let admission = Admission::new(settings.max_conns_per_ip, settings.max_conns_per_subnet);
    smol::spawn(accept_loop(
        transport.endpoint.clone(),
        admission.clone(),
        inbox.clone(),
    ))
    .detach();
    smol::spawn(crate::control::serve(
        listener,
        inbox.clone(),
        api::max_control_frame(settings.proto.max_message_size),
        settings.subscriber_buffer + 1024,
        settings.max_control_clients,
    ))
    .detach();
    spawn_signal_watch(inbox.clone())?;

    let node_file = NodeFile {
        id: me.id,
        addr: me.addr,
        control: settings.control.clone(),
        pid: std::process::id(),
    };
    write_node_file(&settings.data_dir, &node_file)?;
    println!(
        "overlay-node {} listening on {} (control socket {})",
        me.id,
        me.addr,
        settings.control.display()
    );
    tracing::info!(id = %me.id, addr = %me.addr, "node started");

    let now = Instant::now();
    let mut seed_rng = rand::rng();
    let node = Node::new(
        me,
        identity.signer(),
        settings.proto.clone(),
        StdRng::from_rng(&mut seed_rng),
        now,
    );
    let mut actor = Actor {
        node,
        max_frame: settings.proto.max_frame_size(),
        read_budget: FrameBudget::new(settings.frame_read_budget),
        admission,
        settings: settings.clone(),
        transport,
        inbox,
        peers: HashMap::new(),
        dialing: HashMap::new(),
        housekeeping_at: Instant::now() + HOUSEKEEPING,
        rebootstrap_at: None,
        next_conn: 0,
        // Request numbers double as publish ids: start at a random point so
        // a restarted node does not reuse its earlier ids.
        next_request: (seed_rng.random::<u32>() as u64) << 32,
        clients: HashMap::new(),
        subscribers: Subscribers::new(settings.subscriber_buffer, settings.subscriber_buffer_bytes),
        saved_groups: Vec::new(),
        joins: HashMap::new(),
        creates: HashMap::new(),
        publishes: HashMap::new(),
        trees: HashMap::new(),
        shutting_down: false,
        bootstrap_error: None,
        lan,
    };
    let bootstrap = settings.bootstrap.clone();
    actor.input(Input::Command(Command::Bootstrap { addrs: bootstrap }));
    actor.saved_groups = load_groups(&settings.data_dir);
    for g in actor.saved_groups.clone() {
        tracing::info!(mid = %g.mid, next = g.next, "rejoining a group this node was a member of");
        let key = g.key.as_deref().and_then(|k| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(k, &mut bytes).ok()?;
            Some(overlay_proto::lan::GroupKey::from_bytes(bytes))
        });
        actor.input(Input::Command(Command::Resume {
            mid: g.mid,
            next: g.next,
            key,
        }));
    }
    // After the memberships, so that their islands open at once.
    if actor.lan.is_some() {
        // Sessions must grow from one start to the next, so that no
        // datagram of an earlier run can be replayed: the start time does.
        let session = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        actor.input(Input::Command(Command::LanUp { session }));
    }
    let result = actor.run(rx).await;
    actor.close().await;
    let _ = fs::remove_file(settings.data_dir.join(NODE_FILE));
    let _ = fs::remove_file(&settings.control);
    result
}

/// Hands the actor each incoming connection whose address and subnet are
/// under their caps, once its handshake is done; refuses the others before
/// their handshake costs anything.
async fn accept_loop(endpoint: quinn::Endpoint, admission: Admission, inbox: Sender<Msg>) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let slot = match admission.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "connection refused before its handshake");
                incoming.refuse();
                continue;
            }
        };
        let inbox = inbox.clone();
        // Dropping the slot on any failure here gives it back; a
        // connection that is up keeps it until it ends.
        smol::spawn(async move {
            match incoming.await {
                Ok(conn) => {
                    slot.hold_until_closed(conn.clone());
                    if let Err(smol::channel::SendError(Msg::Incoming(conn))) =
                        inbox.send(Msg::Incoming(conn)).await
                    {
                        // The actor is gone: no one else will close it.
                        conn.close(codes::SHUTDOWN.into(), b"shutdown");
                    }
                }
                Err(e) => tracing::debug!(%remote, error = %e, "incoming connection failed"),
            }
        })
        .detach();
    }
}

/// Opens the multicast socket and starts handing its datagrams to the
/// actor.
fn open_lan(m: &MulticastSettings, inbox: Sender<Msg>) -> anyhow::Result<Lan> {
    let socket = LanSocket::bind(&m.interface, m.port).with_context(|| {
        format!(
            "cannot open the multicast socket on {} ({}) port {}: check --multicast-interface and --multicast-port",
            m.interface.name, m.interface.addr, m.port
        )
    })?;
    let socket = std::sync::Arc::new(socket);
    let reader = socket.clone();
    // One byte more than a datagram may have, to tell the longer ones.
    let room = m.max_datagram + 1;
    smol::spawn(async move {
        let mut buf = vec![0u8; room];
        loop {
            match reader.recv(&mut buf).await {
                Ok((n, _)) => {
                    if inbox.send(Msg::Lan(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "multicast socket failed; no more datagrams");
                    return;
                }
            }
        }
    })
    .detach();
    tracing::info!(
        interface = %m.interface.name,
        addr = %m.interface.addr,
        port = m.port,
        range = %m.range,
        "IP multicast on"
    );
    Ok(Lan {
        socket,
        settings: m.clone(),
        send_errors: 0,
    })
}

fn write_node_file(dir: &Path, file: &NodeFile) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{NODE_FILE}.tmp"));
    let path = dir.join(NODE_FILE);
    fs::write(&tmp, serde_json::to_vec_pretty(file)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The memberships saved by an earlier run; none if there is no file. A
/// damaged file is reported and ignored: the node then starts with no
/// memberships rather than not at all.
fn load_groups(dir: &Path) -> Vec<SavedGroup> {
    let path = dir.join(GROUPS_FILE);
    let Ok(text) = fs::read(&path) else {
        return Vec::new();
    };
    match serde_json::from_slice(&text) {
        Ok(groups) => groups,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged group file");
            Vec::new()
        }
    }
}

/// Replaces `path` with `bytes` at once, readable by its owner only (the
/// group file holds groups' keys).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(&tmp)?.write_all(bytes)?;
    fs::rename(&tmp, path)
}

fn spawn_signal_watch(inbox: Sender<Msg>) -> anyhow::Result<()> {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let mut signals =
        Signals::new([Signal::Term, Signal::Int]).context("cannot watch for SIGINT/SIGTERM")?;
    smol::spawn(async move {
        if signals.next().await.is_some() {
            let _ = inbox.send(Msg::Shutdown).await;
        }
    })
    .detach();
    Ok(())
}

impl Actor {
    async fn run(&mut self, rx: Receiver<Msg>) -> anyhow::Result<()> {
        loop {
            let next = [
                Some(self.housekeeping_at),
                self.rebootstrap_at,
                self.node.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let msg = match next {
                Some(at) => {
                    smol::future::or(async { Some(rx.recv().await) }, async {
                        smol::Timer::at(at).await;
                        None
                    })
                    .await
                }
                None => Some(rx.recv().await),
            };
            match msg {
                Some(Ok(Msg::Shutdown)) => return Ok(()),
                Some(Ok(m)) => {
                    self.handle(m);
                    // Take what else is waiting before going back to sleep.
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(Msg::Shutdown) => return Ok(()),
                            Ok(m) => self.handle(m),
                            Err(_) => break,
                        }
                    }
                }
                Some(Err(_)) => return Ok(()),
                None => {}
            }
            // Also after a batch of messages: an inbox that is never empty
            // must not starve the timers.
            self.fire_timers();
            // The batch is done: what the node deferred per batch goes out.
            self.input(Input::Flush);
            if let Some(e) = self.bootstrap_error.take() {
                anyhow::bail!(e);
            }
        }
    }

    /// Leaves the groups, tells the neighbours, flushes and closes.
    async fn close(&mut self) {
        self.shutting_down = true;
        // Before the shutdown, which leaves every group: a node stopped
        // on purpose joins its groups again when it starts.
        self.save_groups();
        self.input(Input::Command(Command::Shutdown));
        for (client, id) in self.subscribers.drain() {
            if let Some(conn) = self.clients.get(&client) {
                let frame = ServerFrame {
                    id,
                    response: Response::Error(ApiError {
                        kind: ErrorKind::ShuttingDown,
                        message: "the node is shutting down".into(),
                    }),
                };
                conn.try_send(frame, usize::MAX);
            }
        }
        let mut writers = Vec::new();
        for (_, p) in self.peers.drain() {
            for link in std::iter::once(p.active).chain(p.standby) {
                link.queue.close();
                writers.push((link.conn, link.writer));
            }
        }
        let conns: Vec<quinn::Connection> = writers.iter().map(|(c, _)| c.clone()).collect();
        let flushed = async {
            for (_, w) in writers {
                w.await;
            }
        };
        smol::future::or(
            flushed,
            smol::Timer::after(Duration::from_millis(1500)).map_unit(),
        )
        .await;
        for c in conns {
            c.close(codes::SHUTDOWN.into(), b"shutdown");
        }
        self.transport
            .endpoint
            .close(codes::SHUTDOWN.into(), b"shutdown");
        smol::future::or(
            self.transport.endpoint.wait_idle(),
            smol::Timer::after(Duration::from_secs(1)).map_unit(),
        )
        .await;
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Conn(ConnEvent::Frame {
                conn_id: _,
                from,
                msg,
            }) => self.input(Input::Message { from, msg }),
            Msg::Conn(ConnEvent::Closed {
                conn_id,
                peer,
                reason,
            }) => self.on_closed(peer, conn_id, &reason),
            Msg::Incoming(conn) if self.peers.len() >= self.settings.max_connections => {
                tracing::debug!(
                    peers = self.peers.len(),
                    "connection refused: max_connections reached"
                );
                conn.close(codes::OVERLOADED.into(), b"too many connections");
            }
            Msg::Incoming(conn) => match crate::tls::peer_id(&conn) {
                Some(id) => {
                    let info = NodeInfo {
                        id,
                        addr: conn.remote_address(),
                    };
                    self.register(conn, info);
                }
                None => conn.close(codes::PROTOCOL_VIOLATION.into(), b"no peer identity"),
            },
            Msg::Dialed {
                addr,
                expect,
                result,
            } => self.on_dialed(addr, expect, result),
            Msg::ClientUp { client, conn } => {
                self.clients.insert(client, conn);
            }
            Msg::ClientRequest { client, frame } => {
                self.on_request(client, frame.id, frame.request)
            }
            Msg::ClientGone { client } => {
                self.clients.remove(&client);
                self.subscribers.remove_client(client);
            }
            Msg::Rtt { peer, rtt } => self.input(Input::Rtt { peer, rtt }),
            Msg::Lan(d) => self.input(Input::LanDatagram(d)),
            Msg::Shutdown => {}
        }
    }

    /// Runs whatever is due: the node's timers, housekeeping, a new
    /// bootstrap.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.input(Input::Timeout);
        }
        if self.housekeeping_at <= now {
            self.housekeeping();
            self.housekeeping_at = now + HOUSEKEEPING;
        }
        if self.rebootstrap_at.is_some_and(|at| at <= now) {
            self.rebootstrap_at = None;
            let addrs = self.settings.bootstrap.clone();
            self.input(Input::Command(Command::Bootstrap { addrs }));
        }
    }

    /// Feeds the state machine and carries out what it asks.
    fn input(&mut self, input: Input) {
        self.node.handle(Instant::now(), input);
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { to, msg } => self.send(to, msg),
                Output::Dial(addr) => self.dial(addr, None),
                Output::Probe(peer) => self.probe(peer),
                Output::Event(e) => self.on_event(e),
                Output::LanJoin(mid) => self.lan_membership(mid, true),
                Output::LanLeave(mid) => self.lan_membership(mid, false),
                Output::LanSend { mid, datagram } => self.lan_send(mid, &datagram),
            }
        }
    }

    /// Whether a group of ours has a LAN island here (multicast on, and the
    /// group's key known).
    fn serves_an_island(&self) -> bool {
        self.lan.is_some()
            && self
                .node
                .groups()
                .iter()
                .any(|g| g.member && self.node.group_key(g.mid).is_some())
    }

    /// Joins or leaves a group's multicast address on the LAN interface.
    fn lan_membership(&mut self, mid: Mid, join: bool) {
        let Some(lan) = &self.lan else { return };
        let addr = lan.settings.group_addr(mid);
        let result = if join {
            lan.socket.join(addr)
        } else {
            lan.socket.leave(addr)
        };
        match result {
            Ok(()) => tracing::debug!(mid = %mid, %addr, join, "multicast membership"),
            Err(e) => {
                tracing::warn!(mid = %mid, %addr, error = %e, join, "multicast membership failed; the group's members here will use the tree only")
            }
        }
    }

    fn lan_send(&mut self, mid: Mid, datagram: &[u8]) {
        let Some(lan) = &mut self.lan else { return };
        let addr = lan.settings.group_addr(mid);
        if let Err(e) = lan.socket.send(addr, datagram) {
            lan.send_errors += 1;
            tracing::debug!(mid = %mid, %addr, error = %e, "multicast datagram not sent");
        }
    }

    fn send(&mut self, to: NodeInfo, msg: Message) {
        let frame = match frame::encode(&msg, self.max_frame) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(kind = msg.kind(), error = %e, "message not sent");
                return;
            }
        };
        if let Some(p) = self.peers.get(&to.id) {
            if let Err(e) = p.active.queue.push(frame) {
                // The peer takes our frames more slowly than we produce them
                // for it, or not at all: drop it rather than hold more, and
                // let the protocol route and re-join around it.
                tracing::warn!(peer = %to.id.short(), error = %e, "peer is not keeping up; disconnecting it");
                p.active.conn.close(codes::SLOW_PEER.into(), b"too slow");
            }
            return;
        }
        if self.shutting_down {
            return;
        }
        let crowded = self.crowded();
        match self.dialing.get_mut(&to.id) {
            Some(queue) if queue.len() < DIAL_QUEUE => queue.push(frame),
            Some(_) => tracing::debug!(peer = %to.id.short(), "dial queue full; frame dropped"),
            None if crowded => {
                tracing::debug!(peer = %to.id.short(), "too many connections or dials; frame dropped")
            }
            None => {
                self.dialing.insert(to.id, vec![frame]);
                self.dial(to.addr, Some(to));
            }
        }
    }

    /// Measures the round-trip time to a peer: QUIC's estimate on the open
    /// connection, or on a new one once its handshake is done (see
    /// [`Actor::register`]).
    fn probe(&mut self, peer: NodeInfo) {
        if let Some(p) = self.peers.get(&peer.id) {
            let rtt = p.active.conn.rtt();
            // Answered through the inbox: we are inside the node's output
            // loop here.
            let _ = self.inbox.try_send(Msg::Rtt { peer, rtt });
            return;
        }
        if self.shutting_down || self.crowded() || self.dialing.contains_key(&peer.id) {
            return;
        }
        self.dialing.insert(peer.id, Vec::new());
        self.dial(peer.addr, Some(peer));
    }

    /// Whether the dials under way or the open connections are at their
    /// bound, so no new dial may start.
    fn crowded(&self) -> bool {
        self.dialing.len() >= MAX_DIALS || self.peers.len() >= self.settings.max_connections
    }

    fn dial(&mut self, addr: SocketAddr, expect: Option<NodeInfo>) {
        let transport = self.transport.clone();
        let inbox = self.inbox.clone();
        smol::spawn(async move {
            let result = transport
                .dial(addr, expect.map(|n| n.id))
                .await
                .map_err(|e| format!("{e:#}"));
            let _ = inbox
                .send(Msg::Dialed {
                    addr,
                    expect,
                    result,
                })
                .await;
        })
        .detach();
    }

    fn on_dialed(
        &mut self,
        addr: SocketAddr,
        expect: Option<NodeInfo>,
        result: Result<quinn::Connection, String>,
    ) {
        match (expect, result) {
            (Some(info), Ok(conn)) => self.register(conn, info),
            (Some(info), Err(e)) => {
                tracing::debug!(peer = %info.id.short(), %addr, error = %e, "dial failed");
                self.dialing.remove(&info.id);
                if !self.peers.contains_key(&info.id) {
                    self.input(Input::PeerDown(info.id));
                }
            }
            (None, Ok(conn)) => {
                let peer = crate::tls::peer_id(&conn).map(|id| NodeInfo { id, addr });
                if let Some(info) = peer {
                    self.register(conn, info);
                }
                self.input(Input::Dialed { addr, peer });
            }
            (None, Err(e)) => {
                tracing::info!(%addr, error = %e, "bootstrap node not reachable yet");
                self.input(Input::Dialed { addr, peer: None });
            }
        }
    }

    /// Takes a new connection into use for `info`.
    fn register(&mut self, conn: quinn::Connection, info: NodeInfo) {
        if info.id == self.node.me().id {
            conn.close(codes::DUPLICATE.into(), b"connected to self");
            return;
        }
        let conn_id = self.next_conn;
        self.next_conn += 1;
        transport::spawn_reader(
            conn.clone(),
            conn_id,
            info,
            self.max_frame,
            self.read_budget.clone(),
            self.inbox.clone(),
        );
        let (queue, writer) = transport::spawn_writer(
            conn.clone(),
            self.settings.peer_queue_bytes,
            self.settings.peer_queue_frames,
        );
        let link = Link {
            conn,
            conn_id,
            queue,
            writer,
        };
        tracing::debug!(peer = %info.id.short(), addr = %info.addr, conn_id, "connection up");
        let queued = self.dialing.remove(&info.id).unwrap_or_default();
        for f in queued {
            let _ = link.queue.push(f);
        }
        match self.peers.get_mut(&info.id) {
            Some(p) => {
                let old = std::mem::replace(&mut p.active, link);
                if let Some(stale) = p.standby.replace(old) {
                    stale
                        .conn
                        .close(codes::DUPLICATE.into(), b"duplicate connection");
                }
            }
            None => {
                // The handshake gave QUIC its first round-trip samples.
                let rtt = link.conn.rtt();
                self.peers.insert(
                    info.id,
                    Peer {
                        active: link,
                        standby: None,
                    },
                );
                self.input(Input::PeerUp(info));
                self.input(Input::Rtt { peer: info, rtt });
            }
        }
    }

    fn on_closed(&mut self, peer: NodeInfo, conn_id: u64, reason: &str) {
        let Some(p) = self.peers.get_mut(&peer.id) else {
            return;
        };
        if p.standby.as_ref().is_some_and(|l| l.conn_id == conn_id) {
            p.standby = None;
            return;
        }
        if p.active.conn_id != conn_id {
            return;
        }
        if let Some(standby) = p.standby.take() {
            p.active = standby;
            return;
        }
        tracing::debug!(peer = %peer.id.short(), reason, "connection lost");
        self.peers.remove(&peer.id);
        self.input(Input::PeerDown(peer.id));
    }

    /// Writes the memberships to [`GROUPS_FILE`] if they changed.
    fn save_groups(&mut self) {
        let groups: Vec<SavedGroup> = self
            .node
            .groups()
            .into_iter()
            .filter(|g| g.member)
            .map(|g| SavedGroup {
                mid: g.mid,
                next: g.last_seq + 1,
                key: self
                    .node
                    .group_key(g.mid)
                    .map(|k| hex::encode(k.to_bytes())),
            })
            .collect();
        if groups == self.saved_groups {
            return;
        }
        let path = self.settings.data_dir.join(GROUPS_FILE);
        let bytes = serde_json::to_vec_pretty(&groups).unwrap_or_default();
        match write_atomically(&path, &bytes) {
            Ok(()) => self.saved_groups = groups,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot save the group memberships")
            }
        }
    }

    fn housekeeping(&mut self) {
        self.save_groups();
        let now = Instant::now();
        let mut expired = Vec::new();
        for (mid, waiting) in self.joins.iter_mut() {
            waiting.retain(|&(client, id, deadline)| {
                let keep = deadline > now;
                if !keep {
                    expired.push((client, id, *mid));
                }
                keep
            });
        }
        self.joins.retain(|_, w| !w.is_empty());
        for (client, id, mid) in expired {
            self.error(client, id, ErrorKind::Timeout, format!(
                "not attached to the tree of {mid} within {:?}: check that the group's root is running and that this node reaches the overlay (overlay status)",
                self.settings.join_timeout
            ));
        }
    }

    fn reply(&mut self, client: u64, id: u64, response: Response) {
        if let Some(conn) = self.clients.get(&client) {
            // Answers are small and not subject to the subscribers' byte
            // bound; only a full queue of frames counts.
            if !conn.try_send(ServerFrame { id, response }, usize::MAX) {
                tracing::warn!(
                    client,
                    "control client is not reading its answers; disconnecting it"
                );
                self.clients.remove(&client);
            }
        }
    }

    fn error(&mut self, client: u64, id: u64, kind: ErrorKind, message: String) {
        self.reply(client, id, Response::Error(ApiError { kind, message }));
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    fn on_request(&mut self, client: u64, id: u64, request: Request) {
        if self.shutting_down {
            return self.error(
                client,
                id,
                ErrorKind::ShuttingDown,
                "the node is shutting down".into(),
            );
        }
        match request {
            Request::Status => {
                let status = self.status();
                self.reply(client, id, Response::Status(status));
            }
            Request::Create => {
                let request = self.request_id();
                self.creates.insert(request, (client, id));
                self.input(Input::Command(Command::CreateGroup { request }));
            }
            Request::Join { mid } => self.start_join(client, id, mid),
            Request::Subscribe { mid, from } => {
                if self.subscribers.count_for(client) >= MAX_SUBSCRIPTIONS_PER_CLIENT {
                    return self.error(client, id, ErrorKind::Overloaded, format!(
                        "this connection already holds {MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions; open another connection"
                    ));
                }
                self.subscribers.add(mid, client, id, from);
                if let Some(g) = self
                    .node
                    .group(mid)
                    .filter(|g| g.member && !g.attached && self.node.island(mid).is_some())
                {
                    // A member cut off from its tree that hears its LAN
                    // island: the subscription starts now, with what the
                    // island brings; the node goes on joining.
                    self.reply(
                        client,
                        id,
                        Response::Joined {
                            depth: g.depth,
                            next: g.last_seq + 1,
                        },
                    );
                    self.subscribers.start_live(mid, client, id);
                    return;
                }
                self.start_join(client, id, mid);
            }
            Request::Leave { mid } => {
                self.input(Input::Command(Command::Leave { mid }));
                self.reply(client, id, Response::Left);
            }
            Request::Publish { mid, payload } => {
                let request = self.request_id();
                self.publishes.insert(request, (client, id));
                self.input(Input::Command(Command::Publish {
                    request,
                    mid,
                    payload,
                }));
            }
            Request::Tree { mid } => {
                let request = self.request_id();
                self.trees.insert(request, (client, id));
                self.input(Input::Command(Command::QueryTree { request, mid }));
            }
        }
    }

    fn start_join(&mut self, client: u64, id: u64, mid: Mid) {
        let pending: usize = self.joins.values().map(Vec::len).sum();
        if pending >= self.settings.proto.max_groups {
            return self.error(
                client,
                id,
                ErrorKind::Overloaded,
                "too many joins are under way; retry later".into(),
            );
        }
        let deadline = Instant::now() + self.settings.join_timeout;
        self.joins
            .entry(mid)
            .or_default()
            .push((client, id, deadline));
        self.input(Input::Command(Command::Join { mid }));
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::OverlayJoined { known } => tracing::info!(known, "entered the overlay"),
            Event::BootstrapFailed { addrs, attempts } if self.serves_an_island() => {
                // Cut off from the overlay, but members on the LAN still
                // reach us: serve them, and try again now and then.
                tracing::warn!(
                    ?addrs,
                    attempts,
                    "no bootstrap node answers; carrying on with the LAN only, retrying every {}s",
                    LAN_ONLY_REBOOTSTRAP.as_secs()
                );
                self.rebootstrap_at = Some(Instant::now() + LAN_ONLY_REBOOTSTRAP);
            }
            Event::BootstrapFailed { addrs, attempts } => {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                self.bootstrap_error = Some(format!(
                    "could not reach any bootstrap node at {} after {attempts} attempts: check that a node runs there and that the address and port are right",
                    list.join(", ")
                ));
            }
            Event::GroupCreated { request, mid } => {
                if let Some((client, id)) = self.creates.remove(&request) {
                    self.reply(client, id, Response::Created { mid });
                }
            }
            Event::CreateFailed { request, reason } => {
                if let Some((client, id)) = self.creates.remove(&request) {
                    let message = format!("cannot create a group: {reason}");
                    self.error(client, id, api_kind(reason), message);
                }
            }
            Event::Joined { mid, depth, next } => {
                for (client, id, _) in self.joins.remove(&mid).unwrap_or_default() {
                    self.reply(client, id, Response::Joined { depth, next });
                }
                let mut request_id = self.next_request;
                let starts = self.subscribers.joined(mid, next, || {
                    request_id += 1;
                    request_id
                });
                self.next_request = request_id;
                for r in starts {
                    self.input(Input::Command(Command::Replay {
                        request: r.request,
                        mid: r.mid,
                        from: r.from,
                        to: r.to,
                    }));
                }
            }
            Event::Lost { mid, from, to } => self.subscribers.lost(&self.clients, mid, from, to),
            Event::Replayed {
                request,
                mid,
                epoch,
                seq,
                publisher,
                payload,
            } => {
                let d = Delivery {
                    mid,
                    epoch,
                    seq,
                    publisher,
                    payload,
                    lan_fallback: false,
                };
                self.subscribers
                    .replayed(&self.clients, request, Response::Message(d));
            }
            Event::ReplayLost {
                request, from, to, ..
            } => self
                .subscribers
                .replayed(&self.clients, request, Response::Lost { from, to }),
            Event::ReplayDone { request, result } => {
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "replay did not complete");
                }
                self.subscribers
                    .replay_done(&self.clients, request, result.is_err());
            }
            Event::JoinFailed { mid, reason } => {
                let kind = api_kind(reason);
                for (client, id, _) in self.joins.remove(&mid).unwrap_or_default() {
                    self.error(client, id, kind, format!("cannot join {mid}: {reason}"));
                }
                self.subscribers.remove_group(mid);
            }
            Event::Delivered {
                mid,
                epoch,
                seq,
                publisher,
                payload,
            } => {
                let d = Delivery {
                    mid,
                    epoch,
                    seq,
                    publisher,
                    payload,
                    lan_fallback: false,
                };
                self.subscribers.deliver(&self.clients, &d);
            }
            Event::LanDelivered {
                mid,
                publisher,
                payload,
                ..
            } => {
                let d = Delivery {
                    mid,
                    epoch: 0,
                    seq: 0,
                    publisher,
                    payload,
                    lan_fallback: true,
                };
                self.subscribers.deliver(&self.clients, &d);
            }
            Event::PublishAccepted { request, seq, .. } => {
                if let Some((client, id)) = self.publishes.remove(&request) {
                    self.reply(client, id, Response::Published { seq });
                }
            }
            Event::PublishFailed {
                request,
                mid,
                error,
            } => {
                if let Some((client, id)) = self.publishes.remove(&request) {
                    let kind = match &error {
                        PublishError::Rejected(r) => api_kind(*r),
                        PublishError::Timeout => ErrorKind::Timeout,
                        _ => ErrorKind::Overloaded,
                    };
                    self.error(
                        client,
                        id,
                        kind,
                        format!("publish to {mid} failed: {error}"),
                    );
                }
            }
            Event::Tree {
                request,
                mid,
                result,
            } => {
                if let Some((client, id)) = self.trees.remove(&request) {
                    match result {
                        Ok(entries) => self.reply(client, id, Response::Tree(entries)),
                        Err(e) => {
                            let kind = match e {
                                TreeError::Rejected(r) => api_kind(r),
                                _ => ErrorKind::Timeout,
                            };
                            self.error(
                                client,
                                id,
                                kind,
                                format!("cannot show the tree of {mid}: {e}"),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn status(&self) -> Status {
        let leaves: Vec<NodeId> = self.node.routing().leaves().iter().map(|n| n.id).collect();
        let neighbours = self
            .node
            .routing()
            .iter()
            .map(|n| Neighbour {
                id: n.id,
                addr: n.addr.to_string(),
                connected: self.peers.contains_key(&n.id),
                leaf: leaves.contains(&n.id),
            })
            .collect();
        let show = |n: &NodeInfo| format!("{}@{}", n.id, n.addr);
        let groups = self
            .node
            .groups()
            .into_iter()
            .map(|g| GroupStatus {
                mid: g.mid,
                role: if g.root {
                    "root".into()
                } else if g.member {
                    "member".into()
                } else {
                    "forwarder".into()
                },
                member: g.member,
                attached: g.attached,
                depth: g.depth,
                parent: g.parent.as_ref().map(show),
                children: g.children.iter().map(show).collect(),
                epoch: g.epoch,
                last_seq: g.last_seq,
                held: g.held,
                held_bytes: g.held_bytes,
                pending: g.pending,
                lost: g.lost,
                replicas: g.replicas.iter().map(show).collect(),
                from_tree: g.from_tree,
                from_lan: g.from_lan,
                island: self.island_status(g.mid),
            })
            .collect();
        let replicas = self
            .node
            .replicas()
            .into_iter()
            .map(|r| ReplicaStatus {
                mid: r.mid,
                root: show(&r.root),
                epoch: r.epoch,
                first: r.first,
                last: r.last,
                orphaned: r.orphaned,
            })
            .collect();
        Status {
            id: self.node.me().id,
            addr: self.node.me().addr.to_string(),
            joined_overlay: self.node.is_joined(),
            neighbours,
            groups,
            replicas,
            lan: self.lan_status(),
            refused_connections: self.admission.refused(),
            dropped: self
                .node
                .dropped()
                .iter()
                .map(|(kind, n)| (kind.to_string(), n))
                .collect(),
        }
    }

    fn island_status(&self, mid: Mid) -> Option<api::IslandStatus> {
        let lan = self.lan.as_ref()?;
        let i = self.node.island(mid)?;
        Some(api::IslandStatus {
            address: format!("{}:{}", lan.settings.group_addr(mid), lan.socket.port()),
            leading: i.leader == Some(self.node.me().id),
            leader: i.leader,
            fed: i.fed,
            peers: i.peers,
        })
    }

    fn lan_status(&self) -> Option<api::LanStatus> {
        let lan = self.lan.as_ref()?;
        let s = self.node.lan_stats().unwrap_or_default();
        let iface = &lan.settings.interface;
        Some(api::LanStatus {
            interface: format!("{} ({})", iface.name, iface.addr),
            port: lan.socket.port(),
            sent: s.sent,
            send_errors: lan.send_errors,
            too_large: s.too_large,
            fallback_publishes: s.fallback_publishes,
            received: s.received,
            accepted: s.accepted,
            forged: s.forged,
            replayed: s.replayed,
            malformed: s.malformed,
            foreign: s.foreign,
            own: s.own,
        })
    }
}

fn api_kind(reason: RejectReason) -> ErrorKind {
    match reason {
        RejectReason::UnknownGroup => ErrorKind::UnknownGroup,
        RejectReason::PayloadTooLarge { .. } => ErrorKind::TooLarge,
        _ => ErrorKind::Overloaded,
    }
}

trait MapUnit {
    fn map_unit(self) -> impl std::future::Future<Output = ()>;
}

impl<F: std::future::Future> MapUnit for F {
    async fn map_unit(self) {
        self.await;
    }
}
