//! Every message that travels between overlay nodes.
//!
//! Messages are serialized with postcard. Two of them, [`Publish`] and
//! [`Data`], carry an application payload; the payload is not part of the
//! postcard encoding but follows it to the end of the frame, so a node can
//! hand the received bytes on to each child without copying them (see
//! [`crate::frame`]).

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::coord::Coord;
use crate::id::{Mid, NodeId};
use crate::lan::GroupKey;
use crate::lineage::Lineage;
use std::sync::Arc;

/// Version of the wire protocol, carried in every frame header and in the
/// QUIC ALPN (`overlay/3`). A frame with another version is rejected.
///
/// Version 2 added [`Message::Proof`]: version 1 nodes deliver unsigned
/// messages, which version 2 nodes refuse, so the two cannot share a
/// group. Version 3 added [`Lineage`]s to root claims
/// ([`ReplicaSync`], [`NotRoot`]) and [`Message::Lineage`].
pub const PROTOCOL_VERSION: u8 = 4;

/// Most node entries one [`Message::Neighbours`] may carry: a full leaf set
/// and the populated rows of a routing table fit with room to spare.
pub const MAX_NEIGHBOURS_PER_MESSAGE: usize = 512;

/// Deepest tree a node takes part in: the longest root path a
/// [`Message::JoinAck`] may carry. Trees of a million members with fan-out 2
/// are 20 deep; this leaves room for the hand-downs of a churning tree.
pub const MAX_PATH: usize = 128;

/// Most groups one [`Message::Heartbeat`] may report on per list.
pub const MAX_HEARTBEAT_GROUPS: usize = 4096;

/// Most replicas a group may have.
pub const MAX_REPLICAS: usize = 8;

/// A node's id and the address it accepts QUIC connections on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (hash of its public key).
    pub id: NodeId,
    /// Where the node listens.
    pub addr: SocketAddr,
}

impl fmt::Debug for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.addr)
    }
}

/// Why a node turned down a join, publish or tree query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The node responsible for the mid holds no group with that mid.
    #[error(
        "no group with this mid exists: check the mid printed by `overlay create` on the root node"
    )]
    UnknownGroup,
    /// The node already takes part in as many groups as its config allows.
    #[error("a node on the path holds the most groups its config allows (max_groups)")]
    TooManyGroups,
    /// The payload is larger than the root accepts.
    #[error("the message is larger than the group's limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u32,
    },
    /// The root has too many publishes from this node in flight.
    #[error("the root is overloaded; retry later")]
    Overloaded,
}

/// What a re-join, or a forwarder's join on its behalf, must steer clear
/// of (see [`Message::Join`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detour {
    /// A node the joiner found dead (its lost parent): nodes on the way
    /// route around it, since they may not have noticed yet.
    pub around: Option<NodeId>,
    /// The node whose re-join this join carries on, when the joiner is a
    /// forwarder it made (`None`: the joiner's own). A node whose way to
    /// the root runs through it passes the join on: adopting the forwarder
    /// would hang the origin's tree below itself.
    pub origin: Option<NodeId>,
}

impl Detour {
    /// The detour a join carries: none when there is nothing to steer
    /// clear of, as for most joins.
    pub fn boxed(around: Option<NodeId>, origin: Option<NodeId>) -> Option<Box<Detour>> {
        (around.is_some() || origin.is_some()).then(|| Box::new(Detour { around, origin }))
    }
}

/// One node of a group tree, as reported by [`Message::Collected`]. The tree
/// travels as a flat list with parent links, never nested, so decoding a
/// report from a peer cannot recurse without bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// The node.
    pub node: NodeInfo,
    /// Its parent in the tree (`None` at the root).
    pub parent: Option<NodeId>,
    /// Whether the node's application is a member, not only a forwarder.
    pub member: bool,
    /// Whether the node answered the query (a child that did not answer in
    /// time is listed by its parent with `responded: false`).
    pub responded: bool,
    /// The leader of the node's LAN island in this group, if it is in one
    /// (see [`crate::lan`]).
    #[serde(default)]
    pub island: Option<NodeId>,
    /// Whether the node takes the group's messages from its island's
    /// leader rather than from its parent.
    #[serde(default)]
    pub fed: bool,
}

/// A message routed toward the root of a group to be sequenced and
/// multicast. The payload follows the header on the wire.
#[derive(Clone, Serialize, Deserialize)]
pub struct Publish {
    /// The group.
    pub mid: Mid,
    /// Who publishes; the root answers it directly.
    pub publisher: NodeInfo,
    /// The publisher's own number for this publish, echoed in the answer.
    pub pub_id: u64,
    /// The application's bytes.
    #[serde(skip)]
    pub payload: Bytes,
}

/// A group message on its way down the tree. The payload follows the header
/// on the wire.
#[derive(Clone, Serialize, Deserialize)]
pub struct Data {
    /// The group.
    pub mid: Mid,
    /// The root's epoch; a new root starts a new epoch.
    pub epoch: u32,
    /// Position in the root's order, from 1.
    pub seq: u64,
    /// The node that published it.
    pub publisher: NodeId,
    /// The publisher's own number for it; with `publisher`, what the root
    /// de-duplicates retried publishes by.
    pub pub_id: u64,
    /// The application's bytes.
    #[serde(skip)]
    pub payload: Bytes,
    /// The whole encoded frame, kept so that forwarding to each child hands
    /// on the same bytes instead of encoding again. Empty until encoded or
    /// decoded.
    #[serde(skip)]
    pub(crate) frame: Bytes,
}

/// A node asks to enter the overlay. Routed hop by hop toward the
/// joiner's own id; every node on the way sends the joiner its
/// [`Message::Neighbours`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinOverlay {
    /// The node that enters.
    pub joiner: NodeInfo,
}

/// Nodes the receiver may add to its routing state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    /// The nodes (at most [`MAX_NEIGHBOURS_PER_MESSAGE`]).
    pub nodes: Vec<NodeInfo>,
    /// Whether the receiver should answer with its own neighbours.
    pub reply: bool,
    /// The sender's network coordinate: with the connection's measured
    /// round-trip time, a sample for the receiver's own.
    pub coord: Coord,
}

/// A request to join the tree of `mid`, sent one overlay hop toward the
/// root, or handed down to a child by a node at its fan-out bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// The group.
    pub mid: Mid,
    /// The node that becomes the receiver's child.
    pub joiner: NodeInfo,
    /// The first sequence number the joiner still needs, if it has
    /// received any before (a re-join); `None` for a new member, which
    /// starts with the live messages.
    pub want: Option<u64>,
    /// What a re-join steers clear of; `None` for most joins (boxed so
    /// that they do not carry its room, nor does every message).
    pub detour: Option<Box<Detour>>,
    /// The joiner's network coordinate, by which a node at its fan-out
    /// bound picks the child to hand the join to.
    pub coord: Coord,
    /// The joiner is attached elsewhere and moves here because a
    /// [`Message::PlaceOffer`] promised a shorter path from the root, or
    /// a [`Message::Splice`] from its parent asked it to.
    /// Such a join never creates forwarders or travels further up: a
    /// node that cannot take it answers [`Message::MoveRefused`].
    pub moving: bool,
    /// The joiner's number for this join, which the acknowledgement
    /// echoes: a joiner takes a [`Message::JoinAck`] only from a node its
    /// join reached (it may be passed on, or handed down), never from a
    /// node that merely claims to be its parent.
    pub nonce: u64,
}

/// From a child to its parent: hold back (`fed`) or send again the
/// group's messages, which the child takes from its LAN island's
/// leader instead (see [`crate::lan`]). Everything else on the link,
/// fetches and heartbeats included, goes on as before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LanFed {
    /// The group.
    pub mid: Mid,
    /// Whether the child is fed by the LAN.
    pub fed: bool,
}

/// The sender is now the receiver's parent and is attached to the root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinAck {
    /// The group.
    pub mid: Mid,
    /// The sequence number of the first message the sender will send on
    /// this link; anything the receiver wants before it comes from the
    /// root's retention.
    pub next: u64,
    /// The root's epoch as the sender knows it.
    pub epoch: u32,
    /// The sender's path from the root: the root first, the sender last
    /// (at most [`MAX_PATH`]). A receiver that finds itself on it would
    /// close a cycle, and refuses.
    pub path: Vec<NodeId>,
    /// The sender's delay from the root along the tree, in µs, as it
    /// estimates it; the receiver adds its own link's.
    pub delay_us: u32,
    /// The sender's network coordinate.
    pub coord: Coord,
    /// The group's multicast key (see [`crate::lan`]): tree nodes
    /// hand it down with their acknowledgements, over the overlay's
    /// TLS, so that members can read and seal datagrams on their LAN.
    pub key: Option<Box<GroupKey>>,
    /// The nonce of the join this acknowledges.
    pub nonce: u64,
}

/// Asks the tree for a better place for `node`: it climbs parent links
/// to the root, which sets the delay budget, then descends toward the
/// tree node nearest `node` within that budget, which answers with a
/// [`Message::PlaceOffer`]. See [`crate::placement`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// The group.
    pub mid: Mid,
    /// The node looking for a better parent.
    pub node: NodeInfo,
    /// Its network coordinate.
    pub coord: Coord,
    /// `None` while climbing toward the root; then the most delay from
    /// the root, in µs, the placement allows `node`.
    pub budget_us: Option<u32>,
    /// `node`'s number for this look, which offers echo: it takes an offer
    /// only in answer to a look of its own.
    pub nonce: u64,
}

/// The sender has room for the receiver; the receiver moves there with
/// a [`Message::Join`] (`moving`) if that is better enough.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// The group.
    pub mid: Mid,
    /// The receiver's delay from the root through the sender, in µs.
    pub delay_us: u32,
    /// The delay of the link from the sender to the receiver, in µs.
    pub edge_us: u32,
    /// The budget the root set for the receiver's delay, in µs, on an
    /// offer that ends the receiver's placement from the root; `None`
    /// on the answer to a direct ask, which carries no news of it (the
    /// asker knows its budget, and may have asked with a higher limit).
    pub budget_us: Option<u32>,
    /// The nonce of the [`Place`] this answers.
    pub nonce: u64,
}

/// The join cannot succeed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinReject {
    /// The group.
    pub mid: Mid,
    /// Why.
    pub reason: RejectReason,
}

/// The sender, the receiver's parent, forwards for no one else: the
/// receiver should move (a join marked `moving`) to `parent`, the
/// sender's parent, and the sender, left with no child, leaves the
/// tree. The link straight from `parent` is no longer than the two
/// through the sender, and one node fewer relays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Splice {
    /// The group.
    pub mid: Mid,
    /// The sender's parent.
    pub parent: NodeInfo,
}

/// The root accepted a publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishAck {
    /// The group.
    pub mid: Mid,
    /// The publisher's number for it.
    pub pub_id: u64,
    /// The sequence number the root gave it.
    pub seq: u64,
}

/// From a group's root to a node whose request reached it through other
/// nodes: the root orders publishes, serves fetches of its retention and
/// answers tree queries only when they come straight from the node they
/// are for (the connection's handshake proves who that is), so the node
/// sends its requests of the group straight to the root from now on (see
/// [`crate::roots`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Direct {
    /// The group.
    pub mid: Mid,
    /// The request that came through others.
    pub asked: Asked,
}

/// A request a [`Direct`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Asked {
    /// A publish, by the publisher's number for it.
    Publish {
        /// The publish's `pub_id`.
        pub_id: u64,
    },
    /// A fetch, by the asker's number for it (0: the repair of its
    /// stream).
    Fetch {
        /// The fetch's `request`.
        request: u64,
    },
    /// A tree query, by the asker's number for it.
    Tree {
        /// The query's `query`.
        query: u64,
    },
}

/// The root, or a node on the way, refused a publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishReject {
    /// The group.
    pub mid: Mid,
    /// The publisher's number for it.
    pub pub_id: u64,
    /// Why.
    pub reason: RejectReason,
}

/// Asks the root for the whole tree; routed toward the mid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeQuery {
    /// The group.
    pub mid: Mid,
    /// The asker's number for the query.
    pub query: u64,
    /// Who to answer.
    pub reply_to: NodeInfo,
}

/// A parent asks a child for its subtree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collect {
    /// The group.
    pub mid: Mid,
    /// The parent's number for this collection.
    pub query: u64,
    /// How long the child may take, in milliseconds.
    pub budget_ms: u32,
}

/// A child's subtree, answering [`Message::Collect`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collected {
    /// The group.
    pub mid: Mid,
    /// The parent's number for this collection.
    pub query: u64,
    /// The subtree, the child first.
    pub entries: Vec<TreeEntry>,
}

/// The root's answer to a [`Message::TreeQuery`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeReply {
    /// The group.
    pub mid: Mid,
    /// The asker's number for the query.
    pub query: u64,
    /// The tree, root first, or why there is none.
    pub result: Result<Vec<TreeEntry>, RejectReason>,
}

/// Sent to every tree neighbour a few times a second: the sender is
/// alive, and this is where it stands in each group the two share.
/// A list that leaves out a group the receiver thinks they share tells
/// the receiver the relation is gone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `(mid, next)` for each group where the receiver is the sender's
    /// parent: the next sequence number the sender expects.
    pub up: Vec<(Mid, u64)>,
    /// The same for each group where the receiver is the sender's
    /// child. Kept apart from `up` so that each end can tell that the
    /// other sees the link the same way round: two nodes that both
    /// take the other for their parent (or child) after crossing moves
    /// would otherwise both find the group listed and stay that way.
    pub down: Vec<(Mid, u64)>,
    /// `(mid, seq)` for each group where the receiver is the sender's
    /// root or replica: the last sequence number the sender holds
    /// (root: committed; replica: received).
    pub replica: Vec<(Mid, u64)>,
    /// The sender's network coordinate: keeps the receiver's view of its
    /// tree neighbours current, and is a sample for its own.
    pub coord: Coord,
}

/// Asks for messages `from..to` of a group, to fill a gap. Routed toward
/// the root, which answers with [`Message::Fetched`] and
/// [`Message::Lost`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fetch {
    /// The group.
    pub mid: Mid,
    /// First sequence number wanted.
    pub from: u64,
    /// One past the last sequence number wanted.
    pub to: u64,
    /// Who to answer.
    pub reply_to: NodeInfo,
    /// The asker's number for a replay; 0 for the repair of its own
    /// stream.
    pub request: u64,
}

/// Messages `from..to` are no longer retained: the asker will never get
/// them, and tells its application so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lost {
    /// The group.
    pub mid: Mid,
    /// The asker's number from the fetch.
    pub request: u64,
    /// First lost sequence number.
    pub from: u64,
    /// One past the last lost one.
    pub to: u64,
}

/// The root makes the receiver a replica of the group's state, starting
/// a log at `first`: the [`Message::Replicate`]s that follow fill it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSync {
    /// The group.
    pub mid: Mid,
    /// The root's epoch.
    pub epoch: u32,
    /// The root.
    pub root: NodeInfo,
    /// Sequence number of the first message that follows.
    pub first: u64,
    /// The root's proof that it leads `epoch`; its last mandate names the
    /// root's replica set, closest to the mid first: the order in which
    /// replicas take over.
    pub lineage: Arc<Lineage>,
    /// The group's multicast key, which a replica keeps when it takes
    /// over.
    pub key: Option<Box<GroupKey>>,
}

/// A replica holds the root's log up to `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaAck {
    /// The group.
    pub mid: Mid,
    /// The epoch the replica follows.
    pub epoch: u32,
    /// The last sequence number it holds.
    pub seq: u64,
}

/// The receiver is not, or no longer, this group's root: the sender
/// follows a newer root. A root that gets this steps down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotRoot {
    /// The group.
    pub mid: Mid,
    /// The epoch the sender follows.
    pub epoch: u32,
    /// The root the sender follows.
    pub root: NodeInfo,
    /// That root's proof that it leads `epoch`.
    pub lineage: Arc<Lineage>,
}

/// A message between two overlay nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A node asks to enter the overlay. See [`JoinOverlay`].
    JoinOverlay(JoinOverlay),
    /// Nodes the receiver may add to its routing state. See [`Neighbours`].
    Neighbours(Neighbours),
    /// A request to join the tree of `mid`, sent one overlay hop toward the
    /// root, or handed down to a child by a node at its fan-out bound. See
    /// [`Join`].
    Join(Join),
    /// From a child to its parent: hold back (`fed`) or send again the group's
    /// messages, which the child takes from its LAN island's leader instead
    /// (see [`crate::lan`]). See [`LanFed`].
    LanFed(LanFed),
    /// The sender is now the receiver's parent and is attached to the root. See
    /// [`JoinAck`].
    JoinAck(JoinAck),
    /// Asks the tree for a better place for `node`: it climbs parent links to
    /// the root, which sets the delay budget, then descends toward the tree
    /// node nearest `node` within that budget, which answers with a
    /// [`Message::PlaceOffer`]. See [`Place`].
    Place(Place),
    /// The sender has room for the receiver; the receiver moves there with a
    /// [`Message::Join`] (`moving`) if that is better enough. See [`Offer`].
    PlaceOffer(Offer),
    /// The join cannot succeed. See [`JoinReject`].
    JoinReject(JoinReject),
    /// The sender is no longer the receiver's child (nor its parent): it
    /// ends every link the two have in the group.
    Leave {
        /// The group.
        mid: Mid,
    },
    /// The sender does not take the receiver's move (a join marked
    /// `moving`): it is off the tree, or the receiver is above it. Unlike
    /// a [`Message::Leave`], it ends no link: the sender may well be the
    /// receiver's child, having moved there meanwhile.
    MoveRefused {
        /// The group.
        mid: Mid,
    },
    /// The sender, the receiver's parent, forwards for no one else: the
    /// receiver should move (a join marked `moving`) to `parent`, the sender's
    /// parent, and the sender, left with no child, leaves the tree. See
    /// [`Splice`].
    Splice(Splice),
    /// An application message on its way to the root.
    Publish(Publish),
    /// The root accepted a publish. See [`PublishAck`].
    PublishAck(PublishAck),
    /// The root, or a node on the way, refused a publish. See
    /// [`PublishReject`].
    PublishReject(PublishReject),
    /// A group message on its way down the tree.
    Data(Data),
    /// Asks the root for the whole tree; routed toward the mid. See
    /// [`TreeQuery`].
    TreeQuery(TreeQuery),
    /// A parent asks a child for its subtree. See [`Collect`].
    Collect(Collect),
    /// A child's subtree, answering [`Message::Collect`]. See [`Collected`].
    Collected(Collected),
    /// The sender is shutting down: drop it from routing state and trees
    /// now rather than wait for its connection to time out.
    Depart,
    /// The root's answer to a [`Message::TreeQuery`]. See [`TreeReply`].
    TreeReply(TreeReply),
    /// Sent to every tree neighbour a few times a second: the sender is alive,
    /// and this is where it stands in each group the two share. See
    /// [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// Asks for messages `from..to` of a group, to fill a gap. See [`Fetch`].
    Fetch(Fetch),
    /// One retained message, answering [`Message::Fetch`]. The payload
    /// follows the header on the wire. Its fields stay in the variant:
    /// beside the tag they cost no room, in a struct of their own they
    /// would make every message larger (a [`Data`] is the largest
    /// variant, and the request number would pad it).
    Fetched {
        /// The asker's number from the fetch.
        request: u64,
        /// The message.
        data: Data,
    },
    /// Messages `from..to` are no longer retained: the asker will never get
    /// them, and tells its application so. See [`Lost`].
    Lost(Lost),
    /// The root makes the receiver a replica of the group's state, starting a
    /// log at `first`: the [`Message::Replicate`]s that follow fill it. See
    /// [`ReplicaSync`].
    ReplicaSync(ReplicaSync),
    /// One message of the root's log, for a replica. The payload follows
    /// the header on the wire.
    Replicate(Data),
    /// A replica holds the root's log up to `seq`. See [`ReplicaAck`].
    ReplicaAck(ReplicaAck),
    /// The receiver is not, or no longer, this group's root: the sender follows
    /// a newer root. See [`NotRoot`].
    NotRoot(NotRoot),
    /// The root's signature over a run of its messages, which travels
    /// behind them down the tree and ahead of them in repairs. See
    /// [`crate::proof`]. Shared, so that handing it to each child copies
    /// no digests.
    Proof(std::sync::Arc<crate::proof::Proof>),
    /// Who led a group in each epoch, and who leads it now: sent ahead of
    /// the proofs of a group past its first epoch. See [`Lineage`].
    Lineage(Arc<Lineage>),
    /// The root asks a node to send it its requests directly. See
    /// [`Direct`].
    Direct(Direct),
}

impl Message {
    /// The payload that follows the postcard header on the wire, if any.
    pub fn payload(&self) -> Option<&Bytes> {
        match self {
            Message::Publish(p) => Some(&p.payload),
            Message::Data(d) | Message::Replicate(d) | Message::Fetched { data: d, .. } => {
                Some(&d.payload)
            }
            _ => None,
        }
    }

    pub(crate) fn payload_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            Message::Publish(p) => Some(&mut p.payload),
            Message::Data(d) | Message::Replicate(d) | Message::Fetched { data: d, .. } => {
                Some(&mut d.payload)
            }
            _ => None,
        }
    }

    /// A short name of the message kind, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::JoinOverlay(_) => "join-overlay",
            Message::Neighbours(_) => "neighbours",
            Message::Join(_) => "join",
            Message::JoinAck(_) => "join-ack",
            Message::LanFed(_) => "lan-fed",
            Message::JoinReject(_) => "join-reject",
            Message::Place(_) => "place",
            Message::PlaceOffer(_) => "place-offer",
            Message::Leave { .. } => "leave",
            Message::MoveRefused { .. } => "move-refused",
            Message::Splice(_) => "splice",
            Message::Publish(_) => "publish",
            Message::PublishAck(_) => "publish-ack",
            Message::PublishReject(_) => "publish-reject",
            Message::Direct(_) => "direct",
            Message::Data(_) => "data",
            Message::TreeQuery(_) => "tree-query",
            Message::Collect(_) => "collect",
            Message::Collected(_) => "collected",
            Message::Depart => "depart",
            Message::TreeReply(_) => "tree-reply",
            Message::Heartbeat(_) => "heartbeat",
            Message::Fetch(_) => "fetch",
            Message::Fetched { .. } => "fetched",
            Message::Lost(_) => "lost",
            Message::ReplicaSync(_) => "replica-sync",
            Message::Replicate(_) => "replicate",
            Message::ReplicaAck(_) => "replica-ack",
            Message::NotRoot(_) => "not-root",
            Message::Proof(_) => "proof",
            Message::Lineage(_) => "lineage",
        }
    }
}

impl Join {
    /// The node this join routes around (see [`Detour::around`]).
    pub fn around(&self) -> Option<NodeId> {
        self.detour.as_ref().and_then(|d| d.around)
    }

    /// The node whose re-join this join carries on (see [`Detour::origin`]).
    pub fn origin(&self) -> Option<NodeId> {
        self.detour.as_ref().and_then(|d| d.origin)
    }
}

impl Data {
    /// A data message that has not been encoded yet.
    pub fn new(
        mid: Mid,
        epoch: u32,
        seq: u64,
        publisher: NodeId,
        pub_id: u64,
        payload: Bytes,
    ) -> Self {
        Data {
            mid,
            epoch,
            seq,
            publisher,
            pub_id,
            payload,
            frame: Bytes::new(),
        }
    }

    /// Bytes this message holds on to: its frame, or its payload before it
    /// was encoded. What bounded buffers count.
    pub fn size(&self) -> usize {
        if self.frame.is_empty() {
            self.payload.len() + 64
        } else {
            self.frame.len()
        }
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.mid == other.mid
            && self.epoch == other.epoch
            && self.seq == other.seq
            && self.publisher == other.publisher
            && self.pub_id == other.pub_id
            && self.payload == other.payload
    }
}

impl PartialEq for Publish {
    fn eq(&self, other: &Self) -> bool {
        self.mid == other.mid
            && self.publisher == other.publisher
            && self.pub_id == other.pub_id
            && self.payload == other.payload
    }
}

// Debug prints the payload's length, never its bytes: payloads can be large
// and are the application's business.
impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("mid", &self.mid)
            .field("epoch", &self.epoch)
            .field("seq", &self.seq)
            .field("publisher", &self.publisher)
            .field("pub_id", &self.pub_id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("mid", &self.mid)
            .field("publisher", &self.publisher)
            .field("pub_id", &self.pub_id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}
