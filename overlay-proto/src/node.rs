//! The state machine of one overlay node: its inputs, its outputs and the
//! dispatch between the parts that handle them ([`crate::overlay`],
//! [`crate::tree`], [`crate::stream`], [`crate::publish`], [`crate::root`],
//! [`crate::replica`], [`crate::liveness`], [`crate::query`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use rand::Rng;
use rustc_hash::FxSeededState;

use crate::config::Config;
use crate::id::{Mid, NodeId};
use crate::lan::GroupKey;
use crate::message::{Detour, Message, NodeInfo, RejectReason, TreeEntry};
use crate::publish::PendingPublish;
use crate::replica::Replica;
use crate::routing::RoutingTable;
use crate::stream::Replay;
use crate::tree::Group;

/// A local request from the node's user (the daemon's control socket).
/// Requests that get an answer carry a `request` number chosen by the caller,
/// which comes back in the matching [`Event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// Enter the overlay through any of these addresses; an empty list makes
    /// this node the first of a new overlay.
    Bootstrap {
        /// Addresses of running nodes.
        addrs: Vec<SocketAddr>,
    },
    /// Create a group rooted here.
    CreateGroup {
        /// Caller's number for the request.
        request: u64,
    },
    /// Become a member of a group; answered by [`Event::Joined`] once
    /// attached to the tree.
    Join {
        /// The group.
        mid: Mid,
    },
    /// Stop being a member of a group.
    Leave {
        /// The group.
        mid: Mid,
    },
    /// Send a message to a group; answered by [`Event::PublishAccepted`] or
    /// [`Event::PublishFailed`]. The request number must be unique.
    Publish {
        /// Caller's number for the request.
        request: u64,
        /// The group.
        mid: Mid,
        /// The message.
        payload: Bytes,
    },
    /// Leave every group and tell the parents, children and leaf set that
    /// this node is going away.
    Shutdown,
    /// Ask the root for the group's whole tree; answered by [`Event::Tree`].
    QueryTree {
        /// Caller's number for the request.
        request: u64,
        /// The group.
        mid: Mid,
    },
    /// Report messages `from..to` of a group again, from this node's buffer
    /// or the root's retention: answered by [`Event::Replayed`] for each,
    /// [`Event::ReplayLost`] for those no longer retained, then
    /// [`Event::ReplayDone`].
    Replay {
        /// Caller's number for the request.
        request: u64,
        /// The group.
        mid: Mid,
        /// First sequence number.
        from: u64,
        /// One past the last.
        to: u64,
    },
    /// The driver has a socket for IP multicast on the node's LAN: from now
    /// on the node joins its groups' multicast addresses
    /// ([`Output::LanJoin`]) and shares their messages with the members
    /// there (see [`crate::lan`]).
    LanUp {
        /// Grows from one start of the node to the next (the daemon takes
        /// its start time in microseconds since the Unix epoch): the
        /// datagrams of an earlier run can then never be replayed.
        session: u64,
    },
    /// Become a member of a group again after a restart, and catch up from
    /// `next` on (what the node had passed on before it stopped).
    Resume {
        /// The group.
        mid: Mid,
        /// The first sequence number the node did not have.
        next: u64,
        /// The group's multicast key as the node had it: with it the node
        /// reads and sends the group's LAN datagrams before it reaches the
        /// tree again, even when it cannot reach the overlay at all.
        key: Option<GroupKey>,
    },
}

/// A timer the node asked for with [`Output::SetTimer`]. When it fires, the
/// driver hands it back as [`Input::Timer`]. Timers are never cancelled: a
/// timer that is no longer needed is ignored when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// Next bootstrap round.
    Bootstrap,
    /// Check that a join was acknowledged, or send it again.
    JoinRetry(Mid),
    /// Fail the publishes whose acknowledgement is overdue. One timer serves
    /// all pending publishes, so a fast publisher does not fill the timer
    /// heap with one entry per message.
    PublishSweep,
    /// A tree collection must answer with what it has.
    CollectTimeout(u64),
    /// A tree query's answer is overdue.
    QueryTimeout(u64),
    /// Periodic routing table maintenance.
    Maintenance,
    /// Heartbeats to tree neighbours, and failure detection.
    Heartbeat,
    /// A gap fetch of this group is overdue.
    Repair(Mid),
    /// A replay's fetch is overdue.
    Replay(u64),
    /// Look for a better place in this group's tree.
    Optimize(Mid),
    /// Announcements on the LAN, and its islands' elections.
    Lan,
}

impl Timer {
    /// A short name of the timer's kind, for statistics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Timer::Bootstrap => "timer:bootstrap",
            Timer::JoinRetry(_) => "timer:join-retry",
            Timer::PublishSweep => "timer:publish-sweep",
            Timer::CollectTimeout(_) => "timer:collect-timeout",
            Timer::QueryTimeout(_) => "timer:query-timeout",
            Timer::Maintenance => "timer:maintenance",
            Timer::Heartbeat => "timer:heartbeat",
            Timer::Repair(_) => "timer:repair",
            Timer::Replay(_) => "timer:replay",
            Timer::Optimize(_) => "timer:optimize",
            Timer::Lan => "timer:lan",
        }
    }
}

/// Something that happened to the node, for the driver to act on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// A message arrived from a peer whose identity the transport verified.
    Message {
        /// The peer.
        from: NodeInfo,
        /// The message.
        msg: Message,
    },
    /// A connection to a peer is up (dialed or accepted).
    PeerUp(NodeInfo),
    /// A connection to a peer was lost, or dialing it failed.
    PeerDown(NodeId),
    /// The round-trip time to a connected peer, measured by the transport
    /// (the daemon reports QUIC's estimate once a connection has real
    /// samples). Answers [`Output::Probe`], and may come at any time for
    /// any connection: every measured peer is a candidate for the routing
    /// table's slot (proximity neighbour selection).
    Rtt {
        /// The peer.
        peer: NodeInfo,
        /// Its round-trip time.
        rtt: std::time::Duration,
    },
    /// A dial by address (see [`Output::Dial`]) finished.
    Dialed {
        /// The address dialed.
        addr: SocketAddr,
        /// The node found there, or `None` if the dial failed.
        peer: Option<NodeInfo>,
    },
    /// A timer fired.
    Timer(Timer),
    /// A local command.
    Command(Command),
    /// A datagram arrived on the multicast socket (see
    /// [`Command::LanUp`]), from anyone: it is checked here.
    LanDatagram(Vec<u8>),
    /// The driver has handled every input it had at hand. Messages the node
    /// deferred to send once per batch rather than once per input (a
    /// replica's acknowledgements) go out now. Drivers should hand this in
    /// after each batch of inputs; a node that never gets it still sends
    /// them at its next heartbeat.
    Flush,
}

impl Input {
    /// A short name of the input's kind (a timer's names the timer), for
    /// statistics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Message { .. } => "message",
            Input::PeerUp(_) => "peer-up",
            Input::PeerDown(_) => "peer-down",
            Input::Rtt { .. } => "rtt",
            Input::Dialed { .. } => "dialed",
            Input::Timer(t) => t.kind(),
            Input::Command(_) => "command",
            Input::LanDatagram(_) => "lan-datagram",
            Input::Flush => "flush",
        }
    }
}

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The root or a node on the way refused it.
    #[error(transparent)]
    Rejected(#[from] RejectReason),
    /// No acknowledgement came in time.
    #[error("the root did not acknowledge the message in time; check that the group's root is running and reachable")]
    Timeout,
    /// This node has too many publishes waiting for their acknowledgement.
    #[error("too many publishes are waiting for the root's acknowledgement (max_pending_publishes = {0}); slow down")]
    TooManyInFlight(usize),
}

/// Why a tree query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The root refused.
    #[error(transparent)]
    Rejected(#[from] RejectReason),
    /// The root did not answer in time.
    #[error("the group's root did not answer in time; check that it is running and reachable")]
    Timeout,
    /// Too many such requests are under way at this node.
    #[error("too many requests of this kind are under way at this node; retry later")]
    Busy,
}

/// What the node tells its user.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The node entered the overlay.
    OverlayJoined {
        /// Nodes known after the join.
        known: usize,
    },
    /// No bootstrap address answered after every round.
    BootstrapFailed {
        /// The addresses tried.
        addrs: Vec<SocketAddr>,
        /// Rounds tried.
        attempts: u32,
    },
    /// A group was created here.
    GroupCreated {
        /// The request.
        request: u64,
        /// Its mid.
        mid: Mid,
    },
    /// This node is a member attached to the group's tree.
    Joined {
        /// The group.
        mid: Mid,
        /// Depth in the tree (root = 0).
        depth: u16,
        /// Sequence number of the first message that will be delivered.
        next: u64,
    },
    /// A join cannot succeed.
    JoinFailed {
        /// The group.
        mid: Mid,
        /// Why.
        reason: RejectReason,
    },
    /// A group message for the application.
    Delivered {
        /// The group.
        mid: Mid,
        /// The root's epoch.
        epoch: u32,
        /// Position in the root's order.
        seq: u64,
        /// Who published it.
        publisher: NodeId,
        /// The bytes.
        payload: Bytes,
    },
    /// A group message published by a member on this node's LAN that had
    /// no working way to the root, delivered before the root ordered it
    /// (see [`crate::lan`]). Its sequenced copy, when it comes, is not
    /// delivered again.
    LanDelivered {
        /// The group.
        mid: Mid,
        /// Who published it.
        publisher: NodeId,
        /// The publisher's number for it.
        pub_id: u64,
        /// The bytes.
        payload: Bytes,
    },
    /// Messages `from..to` of a group will never be delivered here: they
    /// were no longer retained when this node asked for them.
    Lost {
        /// The group.
        mid: Mid,
        /// First lost sequence number.
        from: u64,
        /// One past the last.
        to: u64,
    },
    /// A message of a replay.
    Replayed {
        /// The request.
        request: u64,
        /// The group.
        mid: Mid,
        /// The root's epoch.
        epoch: u32,
        /// Position in the root's order.
        seq: u64,
        /// Who published it.
        publisher: NodeId,
        /// The bytes.
        payload: Bytes,
    },
    /// Messages `from..to` of a replay are no longer retained.
    ReplayLost {
        /// The request.
        request: u64,
        /// The group.
        mid: Mid,
        /// First lost sequence number.
        from: u64,
        /// One past the last.
        to: u64,
    },
    /// A replay is over.
    ReplayDone {
        /// The request.
        request: u64,
        /// Whether all of it was reported (or reported lost).
        result: Result<(), TreeError>,
    },
    /// The root accepted a publish.
    PublishAccepted {
        /// The request.
        request: u64,
        /// The group.
        mid: Mid,
        /// Its sequence number.
        seq: u64,
    },
    /// A publish failed.
    PublishFailed {
        /// The request.
        request: u64,
        /// The group.
        mid: Mid,
        /// Why.
        error: PublishError,
    },
    /// The answer to a tree query.
    Tree {
        /// The request.
        request: u64,
        /// The group.
        mid: Mid,
        /// The tree, root first, as a flat list with parent links.
        result: Result<Vec<TreeEntry>, TreeError>,
    },
}

/// What the node asks its driver to do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send a message to a peer, connecting to it first if needed.
    Send {
        /// The peer.
        to: NodeInfo,
        /// The message.
        msg: Message,
    },
    /// Connect to an address whose node id is not known yet; answered by
    /// [`Input::Dialed`].
    Dial(SocketAddr),
    /// Measure the round-trip time to a node (connecting to it if needed);
    /// answered by [`Input::Rtt`], or [`Input::PeerDown`] if it cannot be
    /// reached.
    Probe(NodeInfo),
    /// Hand `timer` back as [`Input::Timer`] at `at`.
    SetTimer {
        /// When.
        at: Instant,
        /// Which.
        timer: Timer,
    },
    /// Tell the user.
    Event(Event),
    /// Receive the datagrams sent to this group's multicast address on
    /// the LAN, and hand them in as [`Input::LanDatagram`].
    LanJoin(Mid),
    /// Stop receiving this group's datagrams.
    LanLeave(Mid),
    /// Send a datagram to this group's multicast address on the LAN.
    LanSend {
        /// The group.
        mid: Mid,
        /// The sealed datagram.
        datagram: Bytes,
    },
}

/// Most nodes remembered as dead; the oldest are forgotten first.
pub(crate) const MAX_DEAD: usize = 1024;

/// Where this node stands in entering the overlay.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Not bootstrapped yet.
    Idle,
    /// Dialing bootstrap addresses, waiting for a node to answer our join.
    /// Joins that reach us meanwhile wait in `deferred` (sender, joiner).
    Bootstrapping {
        addrs: Vec<SocketAddr>,
        round: u32,
        deferred: Vec<(NodeInfo, NodeInfo)>,
    },
    /// In the overlay (possibly alone).
    Joined,
}

/// A map keyed by node id, for the maps looked up on every message. The
/// hash is fast (ids are already random), and seeded from the node's own
/// randomness: peers choose their ids, and must not be able to choose ids
/// that collide in our tables. A seeded run of the simulator stays the
/// same run.
pub(crate) type IdMap<V> = std::collections::HashMap<NodeId, V, FxSeededState>;

/// Room for outputs a node keeps between inputs.
const OUT_KEEP: usize = 32;

/// One overlay node's protocol state. Feed it [`Input`]s with
/// [`Node::handle`], then drain [`Output`]s with [`Node::poll_output`].
///
/// The node never reads a clock or an entropy source: `now` comes with every
/// input and randomness from the `R` it was built with, so a seeded run is
/// reproducible.
#[derive(Debug)]
pub struct Node<R> {
    pub(crate) cfg: Config,
    pub(crate) rng: R,
    pub(crate) table: RoutingTable,
    pub(crate) phase: Phase,
    /// Maintenance rounds since the node entered the overlay.
    pub(crate) maintenance_round: u32,
    /// Whether the maintenance timer runs (a second bootstrap must not
    /// start a second one).
    pub(crate) maintenance_armed: bool,
    /// Whether a [`Timer::Heartbeat`] is pending.
    pub(crate) heartbeat_armed: bool,
    pub(crate) groups: BTreeMap<Mid, Group>,
    pub(crate) replicas: BTreeMap<Mid, Replica>,
    pub(crate) publishes: BTreeMap<u64, PendingPublish>,
    pub(crate) publish_bytes: usize,
    pub(crate) publish_sweep_armed: bool,
    pub(crate) replays: BTreeMap<u64, Replay>,
    /// When each watched tree neighbour was last heard from, and where it
    /// is. A hash map: it is looked up for every message that arrives, and
    /// a tree of 16-byte random keys costs a cache miss per level.
    pub(crate) heard: IdMap<(Instant, NodeInfo)>,
    /// Candidates for a routing-table slot whose round-trip time we asked
    /// the driver to measure, and since when (at most `max_probes`); looked
    /// up for every round-trip time that arrives.
    pub(crate) probing: IdMap<Instant>,
    /// Nodes found dead, and when (at most [`MAX_DEAD`]).
    pub(crate) dead: BTreeMap<NodeId, Instant>,
    /// Routing-table neighbours lost, and when, tried again one per
    /// maintenance round (at most `lost_peers`; see [`crate::overlay`]).
    pub(crate) lost: VecDeque<(NodeInfo, Instant)>,
    /// Roots this node learned of without holding their replica (at most
    /// `max_groups`).
    pub(crate) known_roots: BTreeMap<Mid, (NodeInfo, u32)>,
    /// Replicas whose root is owed an acknowledgement at the next flush.
    pub(crate) acks_due: std::collections::BTreeSet<Mid>,
    pub(crate) collections: BTreeMap<u64, crate::query::Collection>,
    pub(crate) next_collection: u64,
    pub(crate) queries: BTreeMap<u64, Mid>,
    /// This node's network coordinate (see [`crate::coord`]).
    pub(crate) coord: crate::coord::Coord,
    /// Round-trip times of recently connected peers that the routing table
    /// does not hold (at most [`crate::placement::RTT_MEMORY`]): samples
    /// for the coordinate, and tree links' delays.
    pub(crate) rtts: crate::placement::RttMemory,
    /// LAN islands, once the driver has a multicast socket.
    pub(crate) lan: Option<Box<crate::lan::Lan>>,
    pub(crate) out: VecDeque<Output>,
    pub(crate) now: Instant,
}

impl<R: Rng> Node<R> {
    /// A node with identity `me`, not yet in any overlay.
    pub fn new(me: NodeInfo, cfg: Config, mut rng: R, now: Instant) -> Self {
        let hasher = FxSeededState::with_seed(rng.random::<u64>() as usize);
        Node {
            table: RoutingTable::new(me, cfg.leaf_set_size),
            cfg,
            rng,
            phase: Phase::Idle,
            maintenance_round: 0,
            maintenance_armed: false,
            heartbeat_armed: false,
            groups: BTreeMap::new(),
            replicas: BTreeMap::new(),
            publishes: BTreeMap::new(),
            publish_bytes: 0,
            publish_sweep_armed: false,
            replays: BTreeMap::new(),
            heard: IdMap::with_hasher(hasher.clone()),
            probing: IdMap::with_hasher(hasher),
            dead: BTreeMap::new(),
            lost: VecDeque::new(),
            known_roots: BTreeMap::new(),
            acks_due: Default::default(),
            collections: BTreeMap::new(),
            next_collection: 1,
            queries: BTreeMap::new(),
            coord: Default::default(),
            rtts: Default::default(),
            lan: None,
            out: VecDeque::new(),
            now,
        }
    }

    /// This node's id and address.
    pub fn me(&self) -> NodeInfo {
        self.table.me()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node's network coordinate.
    pub fn coord(&self) -> crate::coord::Coord {
        self.coord
    }

    /// The routing state.
    pub fn routing(&self) -> &RoutingTable {
        &self.table
    }

    /// Whether the node has entered the overlay.
    pub fn is_joined(&self) -> bool {
        matches!(self.phase, Phase::Joined)
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.out.pop_front();
        if out.is_none() && self.out.capacity() > OUT_KEEP {
            // A burst (a neighbour list that fills the table) can queue a
            // hundred outputs; a node should not hold that room for good,
            // when a simulation runs a hundred thousand of them.
            self.out = VecDeque::new();
        }
        out
    }

    /// Handles one input at time `now`. Outputs queue up for
    /// [`Node::poll_output`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        match input {
            Input::Message { from, msg } => self.on_message(from, msg),
            Input::PeerUp(peer) => self.on_peer_up(peer),
            Input::PeerDown(peer) => self.on_peer_down(peer),
            Input::Rtt { peer, rtt } => self.on_rtt(peer, rtt),
            Input::Dialed { addr, peer } => self.on_dialed(addr, peer),
            Input::Timer(t) => self.on_timer(t),
            Input::Command(c) => self.on_command(c),
            Input::LanDatagram(d) => self.on_lan_datagram(d),
            Input::Flush => self.flush_acks(),
        }
        self.keep_heartbeat();
    }

    fn on_message(&mut self, from: NodeInfo, msg: Message) {
        tracing::trace!(from = %from.id.short(), kind = msg.kind(), "message");
        self.heard_from(from.id);
        let mut back = false;
        if !self.lost.is_empty() {
            let before = self.lost.len();
            self.lost.retain(|(n, _)| n.id != from.id);
            back = self.lost.len() < before;
        }
        if !self.dead.is_empty() && self.dead.remove(&from.id).is_some() {
            // Taken for dead, but it speaks: it is back in our table.
            self.table.insert(from);
            back = true;
        }
        if back {
            self.alive_again(from.id);
        }
        match msg {
            Message::JoinOverlay { joiner } => self.on_join_overlay(from, joiner),
            Message::Neighbours {
                nodes,
                reply,
                coord,
            } => {
                self.learn_coord(from.id, &coord);
                self.on_neighbours(from, nodes, reply)
            }
            Message::Join {
                mid,
                joiner,
                want,
                detour,
                coord,
                moving,
            } => {
                if joiner.id == from.id {
                    self.learn_coord(from.id, &coord);
                }
                let Detour { around, origin } = detour.map(|d| *d).unwrap_or_default();
                let join = crate::tree::JoinRequest {
                    joiner,
                    want,
                    around,
                    origin,
                    coord,
                    moving,
                };
                self.on_join(from, mid, join)
            }
            Message::Place {
                mid,
                node,
                coord,
                budget_us,
            } => self.on_place(from, mid, node, coord, budget_us),
            Message::PlaceOffer {
                mid,
                delay_us,
                edge_us,
                budget_us,
            } => {
                let offer = crate::placement::Offer {
                    delay_us,
                    edge_us,
                    budget_us,
                };
                self.on_place_offer(from, mid, offer)
            }
            Message::JoinAck {
                mid,
                next,
                epoch,
                path,
                delay_us,
                coord,
                key,
            } => {
                self.learn_coord(from.id, &coord);
                let ack = crate::tree::JoinAck {
                    next,
                    epoch,
                    path,
                    delay_us,
                    coord,
                    key,
                };
                self.on_join_ack(from, mid, ack)
            }
            Message::JoinReject { mid, reason } => self.on_join_reject(from, mid, reason),
            Message::LanFed { mid, fed } => self.on_lan_fed(from.id, mid, fed),
            Message::Leave { mid } => self.on_leave(from, mid),
            Message::MoveRefused { mid } => self.on_move_refused(from, mid),
            Message::Splice { mid, parent } => self.on_splice(from, mid, parent),
            Message::Publish(p) => self.on_publish(p),
            Message::PublishAck { mid, pub_id, seq } => self.publish_answered(mid, pub_id, Ok(seq)),
            Message::PublishReject {
                mid,
                pub_id,
                reason,
            } => self.publish_answered(mid, pub_id, Err(reason)),
            Message::Data(d) => self.on_data(from, d),
            Message::Depart => self.peer_lost(from.id),
            Message::TreeQuery {
                mid,
                query,
                reply_to,
            } => self.on_tree_query(mid, query, reply_to),
            Message::Collect {
                mid,
                query,
                budget_ms,
            } => self.on_collect(from, mid, query, budget_ms),
            Message::Collected {
                mid,
                query,
                entries,
            } => self.on_collected(from, mid, query, entries),
            Message::TreeReply { mid, query, result } => {
                if self.queries.remove(&query) == Some(mid) {
                    self.emit(Event::Tree {
                        request: query,
                        mid,
                        result: result.map_err(TreeError::from),
                    });
                }
            }
            Message::Heartbeat {
                up,
                down,
                replica,
                coord,
            } => {
                self.learn_coord(from.id, &coord);
                self.on_heartbeat(from, up, down, replica, coord)
            }
            Message::Fetch {
                mid,
                from: first,
                to,
                reply_to,
                request,
            } => self.on_fetch(mid, first, to, reply_to, request),
            Message::Fetched { request, data } => self.on_fetched(request, data),
            Message::Lost {
                mid,
                request,
                from: first,
                to,
            } => self.on_lost(mid, request, first, to),
            sync @ Message::ReplicaSync { .. } => self.on_replica_sync(from, sync),
            Message::Replicate(d) => self.on_replicate(from, d),
            Message::ReplicaAck { mid, epoch, seq } => self.on_replica_ack(from, mid, epoch, seq),
            Message::NotRoot { mid, epoch, root } => self.on_not_root(mid, epoch, root),
        }
    }

    fn on_peer_up(&mut self, peer: NodeInfo) {
        self.dead.remove(&peer.id);
        self.table.insert(peer);
    }

    fn on_peer_down(&mut self, peer: NodeId) {
        self.probing.remove(&peer);
        self.rtts.remove(peer);
        self.connection_lost(peer);
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Bootstrap => self.on_bootstrap_timer(),
            Timer::Maintenance => self.on_maintenance(),
            Timer::JoinRetry(mid) => self.on_join_retry(mid),
            Timer::PublishSweep => self.sweep_publishes(),
            Timer::CollectTimeout(id) => self.on_collect_timeout(id),
            Timer::Heartbeat => self.on_heartbeat_timer(),
            Timer::Repair(mid) => self.on_repair_timer(mid),
            Timer::Replay(request) => self.on_replay_timer(request),
            Timer::Optimize(mid) => self.on_optimize_timer(mid),
            Timer::Lan => self.on_lan_timer(),
            Timer::QueryTimeout(id) => {
                if let Some(mid) = self.queries.remove(&id) {
                    self.emit(Event::Tree {
                        request: id,
                        mid,
                        result: Err(TreeError::Timeout),
                    });
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Bootstrap { addrs } => self.bootstrap(addrs),
            Command::CreateGroup { request } => {
                let mid = self.create_group();
                self.emit(Event::GroupCreated { request, mid });
            }
            Command::Join { mid } => self.join(mid),
            Command::Leave { mid } => self.leave(mid),
            Command::Publish {
                request,
                mid,
                payload,
            } => self.publish(request, mid, payload),
            Command::QueryTree { request, mid } => self.query_tree(request, mid),
            Command::Replay {
                request,
                mid,
                from,
                to,
            } => self.replay(request, mid, from, to),
            Command::Resume { mid, next, key } => self.resume(mid, next, key),
            Command::LanUp { session } => self.lan_up(session),
            Command::Shutdown => self.shutdown(),
        }
    }

    fn shutdown(&mut self) {
        let mut told = std::collections::HashSet::new();
        let groups = std::mem::take(&mut self.groups);
        let replicas = std::mem::take(&mut self.replicas);
        let neighbours = groups
            .values()
            .flat_map(|g| {
                g.parent
                    .into_iter()
                    .chain(g.children.values().map(|c| c.info))
                    .chain(
                        g.root
                            .iter()
                            .flat_map(|r| r.replicas.iter().map(|x| x.info)),
                    )
            })
            .chain(replicas.values().map(|r| r.root))
            .chain(self.table.leaves().iter().copied())
            .collect::<Vec<_>>();
        for n in neighbours {
            if told.insert(n.id) {
                self.send(n, Message::Depart);
            }
        }
        self.phase = Phase::Idle;
    }

    pub(crate) fn send(&mut self, to: NodeInfo, msg: Message) {
        debug_assert_ne!(to.id, self.me().id, "a node never sends to itself");
        self.out.push_back(Output::Send { to, msg });
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    pub(crate) fn set_timer(&mut self, after: std::time::Duration, timer: Timer) {
        self.out.push_back(Output::SetTimer {
            at: self.now + after,
            timer,
        });
    }
}
