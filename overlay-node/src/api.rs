//! The control protocol between the daemon and local applications, spoken on
//! the daemon's Unix-domain control socket.
//!
//! Frames use the same layout as the overlay's (a big-endian `u32` length,
//! then postcard), carrying a [`ClientFrame`] from the application or a
//! [`ServerFrame`] from the daemon. Every request has a number chosen by the
//! application; the answer, and for a subscription every message after it,
//! carry the same number, so one connection can have many requests in
//! flight (a publisher pipelines its publishes this way).

use bytes::Bytes;
use overlay_proto::{Mid, NodeId, TreeEntry};
use serde::{Deserialize, Serialize};

/// Largest control frame accepted from an application: a maximal message
/// plus room for the header.
pub const fn max_control_frame(max_message_size: usize) -> usize {
    max_message_size + 64 * 1024
}

/// A request from an application.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// The node's id, address, neighbours and groups.
    Status,
    /// Create a group rooted at this node.
    Create,
    /// Become a member of a group; answered once attached to its tree.
    Join {
        /// The group.
        mid: Mid,
    },
    /// Stop being a member.
    Leave {
        /// The group.
        mid: Mid,
    },
    /// Receive the group's messages on this connection, joining if needed.
    Subscribe {
        /// The group.
        mid: Mid,
        /// Start at this sequence number: the retained messages from it on
        /// come first, then the live ones, with no gap and no duplicate.
        /// `None`: live messages only.
        from: Option<u64>,
    },
    /// Send a message to the group; answered once the root accepted it.
    Publish {
        /// The group.
        mid: Mid,
        /// The message.
        payload: Bytes,
    },
    /// The group's whole tree, as its root sees it.
    Tree {
        /// The group.
        mid: Mid,
    },
}

/// A frame from the application.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientFrame {
    /// The application's number for this request.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// One group message delivered to a subscriber.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The group.
    pub mid: Mid,
    /// The root's epoch.
    pub epoch: u32,
    /// Position in the root's order; 0 for a fallback delivery.
    pub seq: u64,
    /// The node that published it.
    pub publisher: NodeId,
    /// The message.
    pub payload: Bytes,
    /// Delivered from a LAN member's multicast publish while the root did
    /// not answer it, before the root ordered it (`seq` and `epoch` are 0).
    /// Its ordered copy, when it comes, is not delivered again.
    #[serde(default)]
    pub lan_fallback: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("mid", &self.mid)
            .field("seq", &self.seq)
            .field("lan_fallback", &self.lan_fallback)
            .field("publisher", &self.publisher)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A peer in the overlay, as shown by `overlay status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Neighbour {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// Whether a QUIC connection to it is open.
    pub connected: bool,
    /// Whether it is in the leaf set.
    pub leaf: bool,
}

/// This node's part in one group, as shown by `overlay status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group.
    pub mid: Mid,
    /// `root`, `forwarder` or `member` (a member may also forward).
    pub role: String,
    /// Whether the local application is a member.
    pub member: bool,
    /// Whether connected to the root.
    pub attached: bool,
    /// Depth in the tree.
    pub depth: u16,
    /// The parent, as `id@addr`.
    pub parent: Option<String>,
    /// The children, as `id@addr`.
    pub children: Vec<String>,
    /// The root's epoch (it grows each time a new root takes over).
    pub epoch: u32,
    /// Root: the last sequence number committed. Others: the last one
    /// received in order.
    pub last_seq: u64,
    /// Messages held for repair (root: retained for replay).
    pub held: usize,
    /// Bytes of those.
    pub held_bytes: usize,
    /// Messages received ahead of a gap being repaired.
    pub pending: usize,
    /// Messages this node will never deliver (no longer retained).
    pub lost: u64,
    /// Root: the nodes holding a copy of the group's state, as `id@addr`.
    pub replicas: Vec<String>,
    /// Messages the parent passed on as it got them (fetches not counted).
    #[serde(default)]
    pub from_tree: u64,
    /// Messages taken from the LAN island's leader.
    #[serde(default)]
    pub from_lan: u64,
    /// The group's LAN island, if this node is in one.
    #[serde(default)]
    pub island: Option<IslandStatus>,
}

/// A group's island on the LAN, as this member sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IslandStatus {
    /// The group's multicast address and port.
    pub address: String,
    /// The member that re-sends each message on the LAN.
    pub leader: Option<NodeId>,
    /// Whether that is this node.
    pub leading: bool,
    /// Whether this node takes the messages from the LAN (its parent
    /// holds them back).
    pub fed: bool,
    /// The other members heard, with their depth in the tree (`None`: not
    /// attached).
    pub peers: Vec<(NodeId, Option<u16>)>,
}

/// The node's multicast socket and what it counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LanStatus {
    /// The interface, as `name (address)`.
    pub interface: String,
    /// The UDP port.
    pub port: u16,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams the socket would not send.
    pub send_errors: u64,
    /// Messages too large for one datagram (carried by the overlay only).
    pub too_large: u64,
    /// Publishes sent on the LAN because the root did not answer.
    pub fallback_publishes: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams taken.
    pub accepted: u64,
    /// Dropped: failed authentication.
    pub forged: u64,
    /// Dropped: seen before, or from an earlier run of their sender.
    pub replayed: u64,
    /// Dropped: garbage, truncated, too long, or of another version.
    pub malformed: u64,
    /// Dropped: of a group this node has no island in.
    pub foreign: u64,
    /// Dropped: our own, looped back.
    pub own: u64,
}

/// A copy of a group's root state held by this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The group.
    pub mid: Mid,
    /// The root it copies, as `id@addr`.
    pub root: String,
    /// The root's epoch.
    pub epoch: u32,
    /// Oldest sequence number held.
    pub first: u64,
    /// Newest sequence number held.
    pub last: u64,
    /// Whether the root was lost and another replica should have taken over.
    pub orphaned: bool,
}

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its QUIC address.
    pub addr: String,
    /// Whether it has entered the overlay.
    pub joined_overlay: bool,
    /// The nodes in its routing state.
    pub neighbours: Vec<Neighbour>,
    /// Its groups.
    pub groups: Vec<GroupStatus>,
    /// The root states it keeps a copy of.
    pub replicas: Vec<ReplicaStatus>,
    /// IP multicast on a LAN, if configured.
    #[serde(default)]
    pub lan: Option<LanStatus>,
    /// Incoming connections refused before their handshake because their
    /// address or its subnet already had as many connections as
    /// `max_conns_per_ip` or `max_conns_per_subnet` allow.
    #[serde(default)]
    pub refused_connections: u64,
    /// Messages from peers dropped because their sender may not send them
    /// (a forged or unsolicited answer, or a late one), by message kind.
    #[serde(default)]
    pub dropped: std::collections::BTreeMap<String, u64>,
}

/// What kind of failure an [`ApiError`] reports, for programs to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The group does not exist.
    UnknownGroup,
    /// The message is over the size limit.
    TooLarge,
    /// The node is overloaded or at a configured limit.
    Overloaded,
    /// No answer came in time.
    Timeout,
    /// The request is malformed.
    BadRequest,
    /// The daemon is shutting down.
    ShuttingDown,
}

/// A failed request, with a message meant for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// For programs.
    pub kind: ErrorKind,
    /// For people: what went wrong and what to do.
    pub message: String,
}

/// A response from the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Status),
    /// Answer to [`Request::Create`].
    Created {
        /// The new group's mid.
        mid: Mid,
    },
    /// Answer to [`Request::Join`], and the first answer to
    /// [`Request::Subscribe`]: attached at this depth.
    Joined {
        /// Depth in the tree.
        depth: u16,
        /// Sequence number of the first live message that follows.
        next: u64,
    },
    /// Answer to [`Request::Leave`].
    Left,
    /// Answer to [`Request::Publish`].
    Published {
        /// The sequence number the root gave the message.
        seq: u64,
    },
    /// A message for a subscription.
    Message(Delivery),
    /// The subscription's buffer was full and this many messages were
    /// dropped for it (the application read too slowly).
    Lagged {
        /// Messages dropped.
        missed: u64,
    },
    /// Messages `from..to` of a subscription will never come: they were no
    /// longer retained by the root when this node asked for them.
    Lost {
        /// First lost sequence number.
        from: u64,
        /// One past the last.
        to: u64,
    },
    /// Answer to [`Request::Tree`]: the tree, root first, as a flat list.
    Tree(Vec<TreeEntry>),
    /// The request failed.
    Error(ApiError),
}

/// A frame from the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerFrame {
    /// The request this answers.
    pub id: u64,
    /// The answer.
    pub response: Response,
}

/// Encodes a control frame: length prefix, then postcard.
pub fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut buf = postcard::to_extend(frame, vec![0, 0, 0, 0])?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Reads one control frame of at most `max` bytes from `r`. `Ok(None)` at a
/// clean end of stream.
pub async fn read_frame<T, R>(r: &mut R, max: usize) -> std::io::Result<Option<T>>
where
    T: for<'de> Deserialize<'de>,
    R: smol::io::AsyncRead + Unpin,
{
    use smol::io::AsyncReadExt;
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes exceeds the limit of {max} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    postcard::from_bytes(&buf).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed control frame: {e}"),
        )
    })
}
