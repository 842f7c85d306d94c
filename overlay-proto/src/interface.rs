//! The node's interface with its driver: what goes in ([`Input`], with
//! the user's [`Command`]s), what comes out
//! ([`Output`], with the [`Event`]s for the user), and the errors those
//! events carry. The daemon and the simulator speak to a
//! [`Node`](crate::Node) in these types only.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::id::{Mid, NodeId};
use crate::lan::GroupKey;
use crate::message::{Message, NodeInfo, RejectReason, TreeEntry};

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
    /// The deadline of [`Node::poll_timeout`](crate::Node::poll_timeout)
    /// has passed: the node fires every timer due by the input's time.
    Timeout,
    /// A local command.
    Command(Command),
    /// A datagram arrived on the multicast socket (see
    /// [`Command::LanUp`]), from anyone: it is checked here.
    LanDatagram(Vec<u8>),
    /// The driver has handled every input it had at hand. Messages the node
    /// deferred to send once per batch rather than once per input (a
    /// replica's acknowledgements, a root's proofs of what it committed)
    /// go out now. Drivers should hand this in after each batch of inputs:
    /// members deliver a message only once its proof is in. A node that
    /// never gets it still sends them at its next heartbeat.
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
            Input::Timeout => "timeout",
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
    /// No group was created: the node holds the most groups its config
    /// allows.
    CreateFailed {
        /// The request.
        request: u64,
        /// Why.
        reason: RejectReason,
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
