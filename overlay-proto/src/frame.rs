//! Framing: how a [`Message`] becomes bytes on a stream and back.
//!
//! ```text
//! frame := length: u32 (big endian, bytes after this field)
//!          version: u8 (PROTOCOL_VERSION)
//!          header: postcard(Message)
//!          payload: the rest of the frame (Publish and Data only)
//! ```
//!
//! The length is checked against a maximum before any buffer is allocated,
//! and decoding is checked throughout: bytes from the network never panic
//! and never allocate more than the frame they came in.

use bytes::{BufMut, Bytes, BytesMut};

use crate::lineage::{Lineage, MAX_EPOCHS};
use crate::message::{Heartbeat, JoinAck, Neighbours, NotRoot, ReplicaSync};
use crate::message::{
    Message, MAX_HEARTBEAT_GROUPS, MAX_NEIGHBOURS_PER_MESSAGE, MAX_PATH, MAX_REPLICAS,
    PROTOCOL_VERSION,
};

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Why a frame could not be decoded. The connection it came on is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The frame is shorter than its fixed header.
    #[error("frame is truncated")]
    Truncated,
    /// The frame carries a protocol version this node does not speak.
    #[error("peer speaks protocol version {0}, this node speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion(u8),
    /// The postcard header does not decode as a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message without payload has trailing bytes.
    #[error("{0} bytes of trailing garbage after a message without payload")]
    TrailingBytes(usize),
    /// A list in the message is longer than the protocol allows.
    #[error("message lists {len} entries, more than the {max} allowed")]
    TooManyEntries {
        /// Entries listed.
        len: usize,
        /// The protocol's limit.
        max: usize,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the maximum frame size.
    #[error("message of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Serialization failed (not expected for well-formed messages).
    #[error("could not serialize message: {0}")]
    Serialize(String),
}

/// An encoded frame as one or two chunks. Writing `head` then `payload` puts
/// the whole frame on the stream; the payload is shared, never copied.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// Length prefix, version and postcard header (for forwarded data
    /// messages: the whole received frame).
    pub head: Bytes,
    /// The payload, possibly empty.
    pub payload: Bytes,
}

impl EncodedFrame {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len()
    }

    /// Whether the frame is empty (never true for an encoded message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes `msg` into a frame no longer than `max_frame` bytes.
///
/// A [`Message::Data`] that was received or encoded before is not encoded
/// again: its frame is handed out as it is.
pub fn encode(msg: &Message, max_frame: usize) -> Result<EncodedFrame, EncodeError> {
    if let Message::Data(d) = msg {
        if !d.frame.is_empty() {
            return Ok(EncodedFrame {
                head: d.frame.clone(),
                payload: Bytes::new(),
            });
        }
    }
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(&[0, 0, 0, 0, PROTOCOL_VERSION]);
    let mut head =
        postcard::to_extend(msg, head).map_err(|e| EncodeError::Serialize(e.to_string()))?;
    let payload = msg.payload().cloned().unwrap_or_default();
    let total = head.len() + payload.len();
    if total > max_frame {
        return Err(EncodeError::TooLarge {
            len: total,
            max: max_frame,
        });
    }
    let body_len = (total - LENGTH_PREFIX) as u32;
    head[..LENGTH_PREFIX].copy_from_slice(&body_len.to_be_bytes());
    Ok(EncodedFrame {
        head: Bytes::from(head),
        payload,
    })
}

/// Encodes a data message once, into a single buffer that every child is
/// then sent (one copy of the payload, at the root).
pub fn seal_data(
    mut data: crate::message::Data,
    max_frame: usize,
) -> Result<crate::message::Data, EncodeError> {
    let msg = Message::Data(data.clone());
    let frame = encode(&msg, max_frame)?;
    let mut buf = BytesMut::with_capacity(frame.len());
    buf.put_slice(&frame.head);
    buf.put_slice(&frame.payload);
    let frame = buf.freeze();
    data.payload = frame.slice(frame.len() - data.payload.len()..);
    data.frame = frame;
    Ok(data)
}

/// Reads the length prefix and checks it against `max_frame` (which counts
/// the prefix too). Returns the number of bytes that follow the prefix.
pub fn body_len(prefix: [u8; LENGTH_PREFIX], max_frame: usize) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len + LENGTH_PREFIX > max_frame {
        return Err(DecodeError::FrameTooLarge {
            len: len + LENGTH_PREFIX,
            max: max_frame,
        });
    }
    if len < 2 {
        return Err(DecodeError::Truncated);
    }
    Ok(len)
}

/// Decodes a whole frame, length prefix included. The payload of a
/// [`Message::Publish`] or [`Message::Data`] is a slice of `frame`, and a
/// data message keeps `frame` for forwarding.
pub fn decode(frame: Bytes, max_frame: usize) -> Result<Message, DecodeError> {
    if frame.len() < LENGTH_PREFIX + 1 {
        return Err(DecodeError::Truncated);
    }
    let mut prefix = [0u8; LENGTH_PREFIX];
    prefix.copy_from_slice(&frame[..LENGTH_PREFIX]);
    let len = body_len(prefix, max_frame)?;
    if len != frame.len() - LENGTH_PREFIX {
        return Err(DecodeError::Truncated);
    }
    let version = frame[LENGTH_PREFIX];
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let header = &frame[LENGTH_PREFIX + 1..];
    let (mut msg, rest) = postcard::take_from_bytes::<Message>(header)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let rest_len = rest.len();
    match msg.payload_mut() {
        Some(payload) => *payload = frame.slice(frame.len() - rest_len..),
        None if rest_len > 0 => return Err(DecodeError::TrailingBytes(rest_len)),
        None => {}
    }
    let (len, max) = match &mut msg {
        Message::Data(d) => {
            d.frame = frame;
            (0, 0)
        }
        Message::Neighbours(Neighbours { nodes, .. }) => (nodes.len(), MAX_NEIGHBOURS_PER_MESSAGE),
        Message::JoinAck(JoinAck { path, .. }) => (path.len(), MAX_PATH),
        Message::ReplicaSync(ReplicaSync { lineage, .. })
        | Message::NotRoot(NotRoot { lineage, .. })
        | Message::Lineage(lineage) => lineage_entries(lineage),
        Message::Heartbeat(Heartbeat {
            up, down, replica, ..
        }) => (
            up.len().max(down.len()).max(replica.len()),
            MAX_HEARTBEAT_GROUPS,
        ),
        _ => (0, 0),
    };
    if len > max {
        return Err(DecodeError::TooManyEntries { len, max });
    }
    Ok(msg)
}

/// The longest list in a lineage, and its limit: its mandates, or the
/// successors one of them names.
fn lineage_entries(l: &Lineage) -> (usize, usize) {
    match l
        .mandates
        .iter()
        .find(|m| m.successors.len() > MAX_REPLICAS)
    {
        Some(m) => (m.successors.len(), MAX_REPLICAS),
        None => (l.mandates.len(), MAX_EPOCHS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Mid, NodeId};
    use crate::message::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    const MAX: usize = 1 << 20;

    fn whole(f: &EncodedFrame) -> Bytes {
        let mut b = BytesMut::new();
        b.put_slice(&f.head);
        b.put_slice(&f.payload);
        b.freeze()
    }

    fn arb_info() -> impl Strategy<Value = NodeInfo> {
        (any::<u128>(), any::<u32>(), any::<u16>()).prop_map(|(id, ip, port)| NodeInfo {
            id: NodeId(id),
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)),
        })
    }

    fn arb_reason() -> impl Strategy<Value = RejectReason> {
        prop_oneof![
            Just(RejectReason::UnknownGroup),
            Just(RejectReason::TooManyGroups),
            Just(RejectReason::Overloaded),
            any::<u32>().prop_map(|limit| RejectReason::PayloadTooLarge { limit }),
        ]
    }

    fn arb_entries() -> impl Strategy<Value = Vec<TreeEntry>> {
        prop::collection::vec(
            (
                arb_info(),
                any::<Option<u128>>(),
                any::<bool>(),
                any::<bool>(),
                any::<Option<u128>>(),
                any::<bool>(),
            )
                .prop_map(|(node, parent, member, responded, island, fed)| TreeEntry {
                    node,
                    parent: parent.map(NodeId),
                    member,
                    responded,
                    island: island.map(NodeId),
                    fed,
                }),
            0..20,
        )
    }

    /// Coordinates as the network may send them, NaN aside (a NaN is
    /// never equal to itself, so a round trip could not be compared).
    fn arb_key() -> impl Strategy<Value = Option<Box<crate::lan::GroupKey>>> {
        prop::option::of(
            any::<[u8; 32]>().prop_map(|b| Box::new(crate::lan::GroupKey::from_bytes(b))),
        )
    }

    /// Lineages of one to three epochs, signed by keys made from small
    /// seeds (their signatures are real, though no decoder checks them).
    fn arb_lineage() -> impl Strategy<Value = std::sync::Arc<Lineage>> {
        (
            any::<u128>(),
            prop::collection::vec(
                (any::<u8>(), prop::collection::vec(any::<u128>(), 0..4)),
                1..4,
            ),
        )
            .prop_map(|(mid, links)| {
                let mandates = links
                    .into_iter()
                    .enumerate()
                    .map(|(i, (seed, successors))| {
                        let key = crate::keys::Ed25519Signer::from_seed(&[seed; 32]);
                        let successors = successors.into_iter().map(NodeId).collect();
                        crate::lineage::Mandate::sign(&key, Mid(mid), i as u32 + 1, 1, successors)
                    })
                    .collect();
                std::sync::Arc::new(Lineage { mandates })
            })
    }

    fn arb_coord() -> impl Strategy<Value = crate::coord::Coord> {
        let f = prop_oneof![
            any::<f32>().prop_filter("not NaN", |v| !v.is_nan()),
            -1e3f32..1e3
        ];
        (prop::array::uniform4(f.clone()), f.clone(), f)
            .prop_map(|(pos, height, error)| crate::coord::Coord { pos, height, error })
    }

    fn arb_data(payload: impl Strategy<Value = Bytes>) -> impl Strategy<Value = Data> {
        (
            any::<u128>(),
            any::<u32>(),
            any::<u64>(),
            any::<u128>(),
            any::<u64>(),
            payload,
        )
            .prop_map(|(mid, epoch, seq, p, pub_id, payload)| {
                Data::new(Mid(mid), epoch, seq, NodeId(p), pub_id, payload)
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let mid = any::<u128>().prop_map(Mid);
        let payload = prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
        prop_oneof![
            arb_info().prop_map(|joiner| Message::JoinOverlay(JoinOverlay { joiner })),
            (
                prop::collection::vec(arb_info(), 0..40),
                any::<bool>(),
                arb_coord()
            )
                .prop_map(|(nodes, reply, coord)| Message::Neighbours(Neighbours {
                    nodes,
                    reply,
                    coord
                })),
            (
                mid.clone(),
                arb_info(),
                any::<Option<u64>>(),
                any::<Option<u128>>(),
                any::<Option<u128>>(),
                arb_coord(),
                any::<bool>(),
                any::<u64>()
            )
                .prop_map(
                    |(mid, joiner, want, around, origin, coord, moving, nonce)| {
                        Message::Join(Join {
                            mid,
                            joiner,
                            want,
                            detour: crate::message::Detour::boxed(
                                around.map(NodeId),
                                origin.map(NodeId),
                            ),
                            coord,
                            moving,
                            nonce,
                        })
                    }
                ),
            (
                mid.clone(),
                arb_info(),
                arb_coord(),
                any::<Option<u32>>(),
                any::<u64>()
            )
                .prop_map(|(mid, node, coord, budget_us, nonce)| Message::Place(
                    Place {
                        mid,
                        node,
                        coord,
                        budget_us,
                        nonce
                    }
                )),
            (
                mid.clone(),
                any::<u32>(),
                any::<u32>(),
                any::<Option<u32>>(),
                any::<u64>()
            )
                .prop_map(|(mid, delay_us, edge_us, budget_us, nonce)| {
                    Message::PlaceOffer(Offer {
                        mid,
                        delay_us,
                        edge_us,
                        budget_us,
                        nonce,
                    })
                }),
            (
                mid.clone(),
                any::<u64>(),
                any::<u32>(),
                prop::collection::vec(any::<u128>().prop_map(NodeId), 0..8),
                any::<u32>(),
                arb_coord(),
                arb_key(),
                any::<u64>()
            )
                .prop_map(|(mid, next, epoch, path, delay_us, coord, key, nonce)| {
                    Message::JoinAck(JoinAck {
                        mid,
                        next,
                        epoch,
                        path,
                        delay_us,
                        coord,
                        key,
                        nonce,
                    })
                }),
            (mid.clone(), arb_reason())
                .prop_map(|(mid, reason)| Message::JoinReject(JoinReject { mid, reason })),
            mid.clone().prop_map(|mid| Message::Leave { mid }),
            (mid.clone(), any::<bool>())
                .prop_map(|(mid, fed)| Message::LanFed(LanFed { mid, fed })),
            mid.clone().prop_map(|mid| Message::MoveRefused { mid }),
            (mid.clone(), arb_info())
                .prop_map(|(mid, parent)| Message::Splice(Splice { mid, parent })),
            Just(Message::Depart),
            (mid.clone(), arb_info(), any::<u64>(), payload.clone()).prop_map(
                |(mid, publisher, pub_id, payload)| {
                    Message::Publish(Publish {
                        mid,
                        publisher,
                        pub_id,
                        payload,
                    })
                }
            ),
            (mid.clone(), any::<u64>(), any::<u64>()).prop_map(|(mid, pub_id, seq)| {
                Message::PublishAck(PublishAck { mid, pub_id, seq })
            }),
            (mid.clone(), any::<u64>(), arb_reason()).prop_map(|(mid, pub_id, reason)| {
                Message::PublishReject(PublishReject {
                    mid,
                    pub_id,
                    reason,
                })
            }),
            (mid.clone(), any::<u64>(), 0u8..3).prop_map(|(mid, n, kind)| {
                use crate::message::{Asked, Direct};
                let asked = match kind {
                    0 => Asked::Publish { pub_id: n },
                    1 => Asked::Fetch { request: n },
                    _ => Asked::Tree { query: n },
                };
                Message::Direct(Direct { mid, asked })
            }),
            arb_data(payload.clone()).prop_map(Message::Data),
            arb_data(payload.clone()).prop_map(Message::Replicate),
            (any::<u64>(), arb_data(payload))
                .prop_map(|(request, data)| Message::Fetched { request, data }),
            (
                prop::collection::vec((mid.clone(), any::<u64>()), 0..5),
                prop::collection::vec((mid.clone(), any::<u64>()), 0..5),
                prop::collection::vec((mid.clone(), any::<u64>()), 0..5),
                arb_coord()
            )
                .prop_map(|(up, down, replica, coord)| Message::Heartbeat(Heartbeat {
                    up,
                    down,
                    replica,
                    coord
                })),
            (
                mid.clone(),
                any::<u64>(),
                any::<u64>(),
                arb_info(),
                any::<u64>()
            )
                .prop_map(|(mid, from, to, reply_to, request)| Message::Fetch(Fetch {
                    mid,
                    from,
                    to,
                    reply_to,
                    request
                })),
            (mid.clone(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(mid, request, from, to)| Message::Lost(Lost {
                    mid,
                    request,
                    from,
                    to
                })
            ),
            (
                mid.clone(),
                any::<u32>(),
                arb_info(),
                any::<u64>(),
                arb_lineage(),
                arb_key()
            )
                .prop_map(|(mid, epoch, root, first, lineage, key)| {
                    Message::ReplicaSync(ReplicaSync {
                        mid,
                        epoch,
                        root,
                        first,
                        lineage,
                        key,
                    })
                }),
            (mid.clone(), any::<u32>(), any::<u64>())
                .prop_map(|(mid, epoch, seq)| Message::ReplicaAck(ReplicaAck { mid, epoch, seq })),
            (mid.clone(), any::<u32>(), arb_info(), arb_lineage()).prop_map(
                |(mid, epoch, root, lineage)| Message::NotRoot(NotRoot {
                    mid,
                    epoch,
                    root,
                    lineage
                })
            ),
            arb_lineage().prop_map(Message::Lineage),
            (mid.clone(), any::<u64>(), arb_info()).prop_map(|(mid, query, reply_to)| {
                Message::TreeQuery(TreeQuery {
                    mid,
                    query,
                    reply_to,
                })
            }),
            (mid.clone(), any::<u64>(), any::<u32>()).prop_map(|(mid, query, budget_ms)| {
                Message::Collect(Collect {
                    mid,
                    query,
                    budget_ms,
                })
            }),
            (mid.clone(), any::<u64>(), arb_entries()).prop_map(|(mid, query, entries)| {
                Message::Collected(Collected {
                    mid,
                    query,
                    entries,
                })
            }),
            (
                mid,
                any::<u64>(),
                prop_oneof![arb_entries().prop_map(Ok), arb_reason().prop_map(Err)]
            )
                .prop_map(|(mid, query, result)| Message::TreeReply(TreeReply {
                    mid,
                    query,
                    result
                })),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in arb_message()) {
            let frame = encode(&msg, MAX).unwrap();
            let decoded = decode(whole(&frame), MAX).unwrap();
            prop_assert_eq!(&decoded, &msg);
            // A decoded data message is forwarded as the very same bytes.
            if let Message::Data(_) = &decoded {
                let again = encode(&decoded, MAX).unwrap();
                prop_assert_eq!(whole(&again), whole(&frame));
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(Bytes::from(bytes), MAX);
        }

        #[test]
        fn truncated_frames_are_rejected(msg in arb_message(), cut in 1usize..50) {
            let frame = whole(&encode(&msg, MAX).unwrap());
            let cut = cut.min(frame.len());
            prop_assert!(decode(frame.slice(..frame.len() - cut), MAX).is_err());
        }
    }

    #[test]
    fn sealed_data_shares_one_buffer() {
        let payload = Bytes::from_static(b"hello tree");
        let d = seal_data(Data::new(Mid(1), 1, 7, NodeId(2), 9, payload.clone()), MAX).unwrap();
        assert_eq!(d.payload, payload);
        let f = encode(&Message::Data(d.clone()), MAX).unwrap();
        assert!(f.payload.is_empty());
        assert_eq!(
            f.head.as_ptr(),
            d.frame.as_ptr(),
            "forwarding must not copy"
        );
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let err = body_len((MAX as u32).to_be_bytes(), MAX).unwrap_err();
        assert!(matches!(err, DecodeError::FrameTooLarge { .. }));
        let msg = Message::Publish(Publish {
            mid: Mid(1),
            publisher: NodeInfo {
                id: NodeId(1),
                addr: "127.0.0.1:1".parse().unwrap(),
            },
            pub_id: 1,
            payload: Bytes::from(vec![0u8; 2000]),
        });
        assert!(matches!(
            encode(&msg, 1000),
            Err(EncodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn wrong_version_is_named() {
        let mut frame = whole(&encode(&Message::Leave { mid: Mid(3) }, MAX).unwrap()).to_vec();
        frame[LENGTH_PREFIX] = 9;
        assert_eq!(
            decode(Bytes::from(frame), MAX),
            Err(DecodeError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn too_many_neighbours_is_malformed() {
        let info = NodeInfo {
            id: NodeId(1),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let msg = Message::Neighbours(Neighbours {
            nodes: vec![info; MAX_NEIGHBOURS_PER_MESSAGE + 1],
            reply: false,
            coord: Default::default(),
        });
        let frame = whole(&encode(&msg, MAX).unwrap());
        assert!(matches!(
            decode(frame, MAX),
            Err(DecodeError::TooManyEntries { .. })
        ));
    }
}
