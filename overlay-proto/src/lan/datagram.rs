//! The multicast datagram: format, sealing and opening.
//!
//! ```text
//! offset  bytes  field
//!      0      2  magic "OM"
//!      2      1  version (LAN_VERSION)
//!      3      1  reserved, zero
//!      4     16  mid of the group
//!     20     16  sender's node id
//!     36      8  sender's session (big endian; grows with each start)
//!     44      8  counter within the session (big endian; grows by one)
//!     52      n  body: postcard(LanBody), encrypted
//!   52+n     16  Poly1305 tag
//! ```
//!
//! The body is sealed with ChaCha20-Poly1305, the 52-byte header being the
//! associated data, under a key for this sender and session alone:
//! HKDF-SHA256 of the [`GroupKey`] with the mid, the sender and the session
//! as info. Every member holds the group key, so each sender's own key is
//! what keeps nonces (the counter) from ever repeating under one key, and
//! no member can seal in another's name without the group key.
//!
//! A datagram is at most [`MAX_DATAGRAM`] bytes by default (1200 bytes of
//! UDP payload, which crosses any LAN and most tunnels unfragmented). A
//! group message too large for one is not split: it travels over the
//! overlay only, and a member that takes its messages from the LAN fetches
//! it there like any other gap. Opening checks everything it reads: bytes
//! from the network never panic and never allocate beyond the datagram.

use bytes::Bytes;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::replay::ReplayWindow;
use crate::id::{Mid, NodeId};

/// First bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"OM";
/// Version of the datagram format.
pub const LAN_VERSION: u8 = 1;
/// Bytes before the sealed body.
pub const HEADER_LEN: usize = 52;
/// Bytes of the authentication tag after it.
pub const TAG_LEN: usize = 16;
/// Largest datagram sent by default, in bytes of UDP payload.
pub const MAX_DATAGRAM: usize = 1200;

/// HKDF salt: binds the derived keys to this use and version.
const KDF_SALT: &[u8] = b"overlay lan datagram v1";

/// A group's multicast key: 32 random bytes the root draws when it creates
/// the group, handed to the tree's nodes over the overlay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey([u8; 32]);

impl GroupKey {
    /// A key drawn from `rng`.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        GroupKey(k)
    }

    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        GroupKey(bytes)
    }

    /// The key's bytes, to keep it with a membership across restarts.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The AEAD key of one sender's session in group `mid`.
    fn sender_key(&self, mid: Mid, sender: NodeId, session: u64) -> LessSafeKey {
        let mut info = [0u8; 40];
        info[..16].copy_from_slice(&mid.to_bytes());
        info[16..32].copy_from_slice(&sender.to_bytes());
        info[32..].copy_from_slice(&session.to_be_bytes());
        let info = [&info[..]];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(&self.0);
        let okm = prk
            .expand(&info, &CHACHA20_POLY1305)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.write_str("GroupKey(..)")
    }
}

/// What a datagram carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LanBody {
    /// A group message as the root sequenced it.
    Data {
        /// The root's epoch.
        epoch: u32,
        /// Its position in the root's order.
        seq: u64,
        /// The node that published it.
        publisher: NodeId,
        /// The publisher's number for it.
        pub_id: u64,
        /// The application's bytes.
        payload: Bytes,
    },
    /// A message published by the sender while it had no working way to
    /// the root; the sender also publishes it through the overlay once it
    /// has one, and `pub_id` is what tells the two apart from new ones.
    Publish {
        /// The sender's number for this publish.
        pub_id: u64,
        /// The application's bytes.
        payload: Bytes,
    },
    /// The sender is a member of the group on this LAN: sent every
    /// `lan_announce_interval`, for the island to elect its leader.
    Announce {
        /// The sender's depth in the tree, `None` while it is not attached.
        depth: Option<u16>,
    },
}

/// The fixed fields of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    mid: Mid,
    sender: NodeId,
    session: u64,
    counter: u64,
}

impl Header {
    fn write(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..2].copy_from_slice(&MAGIC);
        h[2] = LAN_VERSION;
        h[4..20].copy_from_slice(&self.mid.to_bytes());
        h[20..36].copy_from_slice(&self.sender.to_bytes());
        h[36..44].copy_from_slice(&self.session.to_be_bytes());
        h[44..52].copy_from_slice(&self.counter.to_be_bytes());
        h
    }

    fn read(d: &[u8]) -> Result<Header, OpenError> {
        if d.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::Truncated);
        }
        if d[..2] != MAGIC {
            return Err(OpenError::NotOurs);
        }
        if d[2] != LAN_VERSION {
            return Err(OpenError::UnsupportedVersion(d[2]));
        }
        if d[3] != 0 {
            return Err(OpenError::NotOurs);
        }
        let bytes16 = |at: usize| -> [u8; 16] { d[at..at + 16].try_into().expect("16 bytes") };
        let u64_at = |at: usize| u64::from_be_bytes(d[at..at + 8].try_into().expect("8 bytes"));
        Ok(Header {
            mid: Mid::from_bytes(bytes16(4)),
            sender: NodeId::from_bytes(bytes16(20)),
            session: u64_at(36),
            counter: u64_at(44),
        })
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The group a datagram says it belongs to, read before anything is
/// checked: to pick the [`Opener`] that checks it.
pub fn peek_mid(datagram: &[u8]) -> Result<Mid, OpenError> {
    Header::read(datagram).map(|h| h.mid)
}

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The sealed datagram would exceed the size allowed.
    #[error("datagram of {len} bytes exceeds the {max} bytes allowed on the LAN")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a datagram was turned away. Each is counted by the receiver; none
/// reaches the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than a header and a tag.
    #[error("datagram is truncated")]
    Truncated,
    /// No magic, or reserved bits set: not an overlay datagram.
    #[error("not an overlay datagram")]
    NotOurs,
    /// A format version this node does not read.
    #[error("datagram format version {0} is not supported")]
    UnsupportedVersion(u8),
    /// For a group this opener is not for.
    #[error("datagram of another group")]
    Foreign,
    /// Sent by this node itself (multicast loops back).
    #[error("datagram sent by this node")]
    Own,
    /// Already accepted, of an older session of its sender, or too late.
    #[error("datagram replayed or too late")]
    Replayed,
    /// Did not authenticate under the group's key.
    #[error("datagram failed authentication")]
    Forged,
    /// Authenticated, but its body does not decode (a sender of another
    /// version, or a bug).
    #[error("datagram body is malformed")]
    Malformed,
}

/// Seals one node's datagrams for one group.
#[derive(Debug)]
pub struct Sealer {
    header: Header,
    key: LessSafeKey,
    max: usize,
}

impl Sealer {
    /// A sealer for `sender` in group `mid`, in the sender's `session`
    /// (which must grow from one start of the node to the next), for
    /// datagrams of at most `max` bytes.
    pub fn new(key: &GroupKey, mid: Mid, sender: NodeId, session: u64, max: usize) -> Self {
        Sealer {
            header: Header {
                mid,
                sender,
                session,
                counter: 0,
            },
            key: key.sender_key(mid, sender, session),
            max,
        }
    }

    /// The next datagram, carrying `body`.
    pub fn seal(&mut self, body: &LanBody) -> Result<Vec<u8>, SealError> {
        let mut d = Vec::with_capacity(self.max.min(HEADER_LEN + 256));
        let header = self.header.write();
        d.extend_from_slice(&header);
        let mut d = postcard::to_extend(body, d).expect("a body always serializes");
        let len = d.len() + TAG_LEN;
        if len > self.max {
            return Err(SealError::TooLarge { len, max: self.max });
        }
        let counter = self.header.counter;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(header), &mut d[HEADER_LEN..])
            .expect("a datagram is far below ChaCha20's length limit");
        d.extend_from_slice(tag.as_ref());
        // A session sends fewer than 2^64 datagrams; wrapping would reuse
        // a nonce, so the counter saturates and receivers drop the rest.
        self.header.counter = counter.saturating_add(1);
        Ok(d)
    }
}

/// What a receiver keeps of one sender.
struct Peer {
    session: u64,
    key: LessSafeKey,
    window: ReplayWindow,
    /// When it was last heard, in datagrams accepted by this opener.
    heard: u64,
}

/// Opens a group's datagrams: checks where they come from, authenticates
/// them, and turns away replays. Keeps at most `max_senders` senders; the
/// one heard least recently makes room for a new one (its replay window
/// goes with it: what it sent is still told apart by sequence numbers and
/// publish ids above this layer).
pub struct Opener {
    mid: Mid,
    me: NodeId,
    key: GroupKey,
    peers: FxHashMap<NodeId, Peer>,
    max_senders: usize,
    accepted: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("mid", &self.mid)
            .field("senders", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for group `mid` at node `me`.
    pub fn new(key: GroupKey, mid: Mid, me: NodeId, max_senders: usize) -> Self {
        Opener {
            mid,
            me,
            key,
            peers: FxHashMap::default(),
            max_senders: max_senders.max(1),
            accepted: 0,
        }
    }

    /// Senders remembered.
    pub fn senders(&self) -> usize {
        self.peers.len()
    }

    /// Checks and decrypts `datagram` in place: its sender and body.
    pub fn open(&mut self, datagram: &mut [u8]) -> Result<(NodeId, LanBody), OpenError> {
        let h = Header::read(datagram)?;
        if h.mid != self.mid {
            return Err(OpenError::Foreign);
        }
        if h.sender == self.me {
            return Err(OpenError::Own);
        }
        let known = self.peers.get(&h.sender);
        // Replays are turned away before any cryptography is spent on them.
        if known.is_some_and(|p| !p.window.is_fresh(h.session, h.counter)) {
            return Err(OpenError::Replayed);
        }
        let derived;
        let key = match known {
            Some(p) if p.session == h.session => &p.key,
            _ => {
                derived = self.key.sender_key(self.mid, h.sender, h.session);
                &derived
            }
        };
        let (header, sealed) = datagram.split_at_mut(HEADER_LEN);
        let aad = Aad::from(&*header);
        let plain = key
            .open_in_place(nonce(h.counter), aad, sealed)
            .map_err(|_| OpenError::Forged)?;
        let body: LanBody = match postcard::take_from_bytes(plain) {
            Ok((body, [])) => body,
            _ => return Err(OpenError::Malformed),
        };
        self.accepted += 1;
        let heard = self.accepted;
        match self.peers.get_mut(&h.sender) {
            Some(p) => {
                if p.session != h.session {
                    p.key = self.key.sender_key(self.mid, h.sender, h.session);
                    p.session = h.session;
                }
                p.window.accept(h.session, h.counter);
                p.heard = heard;
            }
            None => {
                if self.peers.len() >= self.max_senders {
                    let oldest = self
                        .peers
                        .iter()
                        .min_by_key(|(_, p)| p.heard)
                        .map(|(id, _)| *id);
                    if let Some(id) = oldest {
                        self.peers.remove(&id);
                    }
                }
                let key = self.key.sender_key(self.mid, h.sender, h.session);
                self.peers.insert(
                    h.sender,
                    Peer {
                        session: h.session,
                        key,
                        window: ReplayWindow::new(h.session, h.counter),
                        heard,
                    },
                );
            }
        }
        Ok((h.sender, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    const MID: Mid = Mid(0x1234);
    const A: NodeId = NodeId(0xa);
    const B: NodeId = NodeId(0xb);

    fn key() -> GroupKey {
        GroupKey::random(&mut rand::rngs::StdRng::seed_from_u64(1))
    }

    fn data(seq: u64, len: usize) -> LanBody {
        LanBody::Data {
            epoch: 1,
            seq,
            publisher: A,
            pub_id: 77,
            payload: Bytes::from(vec![seq as u8; len]),
        }
    }

    #[test]
    fn a_sealed_datagram_opens_to_what_was_sealed() {
        let mut s = Sealer::new(&key(), MID, A, 5, MAX_DATAGRAM);
        let mut o = Opener::new(key(), MID, B, 8);
        for seq in 1..=3 {
            let mut d = s.seal(&data(seq, 100)).unwrap();
            assert!(d.len() <= MAX_DATAGRAM);
            assert_eq!(peek_mid(&d), Ok(MID));
            assert_eq!(o.open(&mut d), Ok((A, data(seq, 100))));
        }
        let mut d = s
            .seal(&LanBody::Publish {
                pub_id: 9,
                payload: Bytes::from_static(b"hi"),
            })
            .unwrap();
        assert_eq!(
            o.open(&mut d),
            Ok((
                A,
                LanBody::Publish {
                    pub_id: 9,
                    payload: Bytes::from_static(b"hi")
                }
            ))
        );
        for depth in [None, Some(0), Some(7)] {
            let mut d = s.seal(&LanBody::Announce { depth }).unwrap();
            assert_eq!(o.open(&mut d), Ok((A, LanBody::Announce { depth })));
        }
    }

    #[test]
    fn a_body_too_large_for_one_datagram_is_not_sealed() {
        let mut s = Sealer::new(&key(), MID, A, 5, MAX_DATAGRAM);
        let room = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
        // The body's own fields and length prefix take some of the room.
        assert!(s.seal(&data(1, room - 40)).is_ok());
        assert!(matches!(
            s.seal(&data(2, room)),
            Err(SealError::TooLarge {
                max: MAX_DATAGRAM,
                ..
            })
        ));
    }

    #[test]
    fn replays_and_older_sessions_are_turned_away() {
        let mut s = Sealer::new(&key(), MID, A, 5, MAX_DATAGRAM);
        let mut o = Opener::new(key(), MID, B, 8);
        let d1 = s.seal(&data(1, 10)).unwrap();
        let d2 = s.seal(&data(2, 10)).unwrap();
        assert!(o.open(&mut d2.clone()).is_ok());
        assert!(
            o.open(&mut d1.clone()).is_ok(),
            "reordered, within the window"
        );
        assert_eq!(o.open(&mut d1.clone()), Err(OpenError::Replayed));
        assert_eq!(o.open(&mut d2.clone()), Err(OpenError::Replayed));
        // The sender restarts: a later session, its counter from 0 again.
        let mut s2 = Sealer::new(&key(), MID, A, 6, MAX_DATAGRAM);
        assert!(o.open(&mut s2.seal(&data(3, 10)).unwrap()).is_ok());
        let d3 = s.seal(&data(4, 10)).unwrap();
        assert_eq!(
            o.open(&mut d3.clone()),
            Err(OpenError::Replayed),
            "the old run"
        );
    }

    #[test]
    fn wrong_key_changed_bytes_and_stolen_names_do_not_authenticate() {
        let mut o = Opener::new(key(), MID, B, 8);
        let other = GroupKey::from_bytes([7; 32]);
        let mut forged = Sealer::new(&other, MID, A, 5, MAX_DATAGRAM)
            .seal(&data(1, 10))
            .unwrap();
        assert_eq!(o.open(&mut forged), Err(OpenError::Forged));
        let d = Sealer::new(&key(), MID, A, 5, MAX_DATAGRAM)
            .seal(&data(1, 10))
            .unwrap();
        for at in [4, 20, 36, 44, HEADER_LEN, d.len() - 1] {
            let mut bad = d.clone();
            bad[at] ^= 1;
            let r = o.open(&mut bad);
            assert!(
                matches!(r, Err(OpenError::Forged | OpenError::Foreign)),
                "byte {at}: {r:?}"
            );
        }
        // A failed forgery does not move the window: the real one still opens.
        assert!(o.open(&mut d.clone()).is_ok());
    }

    #[test]
    fn own_foreign_and_garbage_datagrams_are_told_apart() {
        let mut o = Opener::new(key(), MID, A, 8);
        let mut own = Sealer::new(&key(), MID, A, 5, MAX_DATAGRAM)
            .seal(&data(1, 1))
            .unwrap();
        assert_eq!(o.open(&mut own), Err(OpenError::Own));
        let mut foreign = Sealer::new(&key(), Mid(9), B, 5, MAX_DATAGRAM)
            .seal(&data(1, 1))
            .unwrap();
        assert_eq!(o.open(&mut foreign), Err(OpenError::Foreign));
        assert_eq!(o.open(&mut [0u8; 10]), Err(OpenError::Truncated));
        assert_eq!(o.open(&mut [0u8; 100]), Err(OpenError::NotOurs));
        let mut v2 = own.clone();
        v2[2] = 2;
        assert_eq!(o.open(&mut v2), Err(OpenError::UnsupportedVersion(2)));
    }

    #[test]
    fn the_sender_heard_least_recently_makes_room() {
        let mut o = Opener::new(key(), MID, NodeId(0), 2);
        let mut sealers: Vec<Sealer> = (1..=3)
            .map(|i| Sealer::new(&key(), MID, NodeId(i), 1, MAX_DATAGRAM))
            .collect();
        let first = sealers[0].seal(&data(1, 1)).unwrap();
        assert!(o.open(&mut first.clone()).is_ok());
        assert!(o.open(&mut sealers[1].seal(&data(1, 1)).unwrap()).is_ok());
        assert!(o.open(&mut sealers[2].seal(&data(1, 1)).unwrap()).is_ok());
        assert_eq!(o.senders(), 2);
        // Sender 1 was dropped, and with it its window: the bound holds,
        // and its datagram authenticates again (sequence numbers above
        // this layer catch it).
        assert!(o.open(&mut first.clone()).is_ok());
        assert_eq!(o.senders(), 2);
    }

    proptest! {
        /// No input panics the opener, and nothing but a datagram sealed
        /// with the group's key opens.
        #[test]
        fn garbage_never_opens(mut bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let mut o = Opener::new(key(), MID, B, 8);
            prop_assert!(o.open(&mut bytes).is_err());
        }

        /// A sealed datagram with any one byte changed, or cut short, does
        /// not open.
        #[test]
        fn tampering_is_caught(at in 0usize..400, flip in 1u8..=255, cut in 0usize..400) {
            let mut s = Sealer::new(&key(), MID, A, 3, MAX_DATAGRAM);
            let d = s.seal(&data(1, 300)).unwrap();
            let mut o = Opener::new(key(), MID, B, 8);
            let mut bad = d.clone();
            let at = at % d.len();
            bad[at] ^= flip;
            prop_assert!(o.open(&mut bad).is_err());
            let mut short = d[..cut.min(d.len() - 1)].to_vec();
            prop_assert!(o.open(&mut short).is_err());
            prop_assert!(o.open(&mut d.clone()).is_ok());
        }
    }
}
