//! Node ids, multicast ids and the XOR key space they live in.
//!
//! Ids are 128-bit numbers, read as 32 hexadecimal digits. A [`NodeId`] is
//! derived by the daemon from the node's public key (the first 16 bytes of the
//! SHA-256 of its certificate's public key), so a node cannot claim an id
//! without holding the matching private key. A [`Mid`] names a multicast
//! group; it is issued by the group's root so that it lies XOR-closer to the
//! root than to any other node, which is what makes routing toward the mid end
//! at the root.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Bits per routing digit: the overlay routes in base 16 (Pastry's `b = 4`).
pub const DIGIT_BITS: u32 = 4;
/// Number of base-16 digits in a 128-bit id.
pub const DIGITS: usize = 128 / DIGIT_BITS as usize;

/// How many low bits of a [`Mid`] are random. The remaining high bits equal the
/// root's id, so the mid is within XOR distance 2^48 of the root; another node
/// could only be closer by sharing the root's first 80 bits, which takes about
/// 2^80 key generations to achieve on purpose and never happens by chance.
pub(crate) const MID_RANDOM_BITS: u32 = 48;

/// A point in the 128-bit key space: node ids and mids both map here.
pub type Key = u128;

/// XOR distance between two keys (Kademlia's metric).
///
/// Two keys that share a longer prefix are always closer, which is why prefix
/// routing steps and closeness never disagree in this overlay.
pub fn distance(a: Key, b: Key) -> u128 {
    a ^ b
}

/// Number of leading base-16 digits that `a` and `b` share (32 when equal).
pub fn shared_digits(a: Key, b: Key) -> usize {
    ((a ^ b).leading_zeros() / DIGIT_BITS) as usize
}

/// The base-16 digit of `key` at position `index` (0 = most significant).
pub fn digit(key: Key, index: usize) -> usize {
    debug_assert!(index < DIGITS);
    ((key >> (128 - DIGIT_BITS * (index as u32 + 1))) & 0xF) as usize
}

/// Error returned when text is not a well-formed id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {what}: expected 32 hexadecimal digits, as printed by `overlay create` or `overlay status`")]
pub struct ParseIdError {
    what: &'static str,
    text: String,
}

fn parse_hex_u128(s: &str, what: &'static str) -> Result<u128, ParseIdError> {
    let err = || ParseIdError {
        what,
        text: s.chars().take(80).collect(),
    };
    let s = s.trim();
    if s.len() != 32 {
        return Err(err());
    }
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(s, &mut bytes).map_err(|_| err())?;
    Ok(u128::from_be_bytes(bytes))
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u128);

        // Hex text in human-readable formats (JSON), 16 fixed bytes in
        // binary ones (postcard): a random id would take 19 as a varint.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.to_bytes().serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    text.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 16]>::deserialize(d).map(Self::from_bytes)
                }
            }
        }

        impl $name {
            /// The id as a point in the key space.
            pub fn key(self) -> Key {
                self.0
            }

            /// The id as 16 big-endian bytes.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_be_bytes()
            }

            /// The id from 16 big-endian bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(u128::from_be_bytes(bytes))
            }

            /// The first 8 hex digits, for logs and compact displays.
            pub fn short(self) -> String {
                format!("{:08x}", (self.0 >> 96) as u32)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex_u128(s, $what).map(Self)
            }
        }
    };
}

id_type!(
    /// The id of an overlay node: the hash of its public key.
    NodeId,
    "node id"
);
id_type!(
    /// A multicast id: names one group and routes to that group's root.
    Mid,
    "multicast id (mid)"
);

impl Mid {
    /// Issues a fresh mid for a group rooted at `root`.
    ///
    /// The high 80 bits are the root's, the low 48 are random, so routing
    /// toward the mid ends at `root` (see the module docs) while one root can
    /// issue many distinct groups.
    pub fn issue<R: Rng + ?Sized>(root: NodeId, rng: &mut R) -> Mid {
        let mask: u128 = (1u128 << MID_RANDOM_BITS) - 1;
        let low: u128 = rng.random::<u64>() as u128 & mask;
        Mid((root.0 & !mask) | low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn digits_and_prefixes() {
        let a: Key = 0xABCD_0000_0000_0000_0000_0000_0000_0000;
        let b: Key = 0xABCE_0000_0000_0000_0000_0000_0000_0000;
        assert_eq!(digit(a, 0), 0xA);
        assert_eq!(digit(a, 3), 0xD);
        assert_eq!(digit(a, 31), 0);
        assert_eq!(shared_digits(a, b), 3);
        assert_eq!(shared_digits(a, a), 32);
    }

    #[test]
    fn parse_round_trip_and_errors() {
        let id = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("xyz".parse::<Mid>().is_err());
        assert!("0123456789abcdef0011223344556677ff".parse::<Mid>().is_err());
        let err = "zz23456789abcdef0011223344556677"
            .parse::<Mid>()
            .unwrap_err();
        assert!(err.to_string().contains("32 hexadecimal digits"));
    }

    #[test]
    fn ids_are_hex_in_json_and_16_bytes_in_postcard() {
        let id = NodeId(0xabc);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        let bin = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bin.len(), 16);
        assert_eq!(postcard::from_bytes::<NodeId>(&bin).unwrap(), id);
    }

    #[test]
    fn issued_mid_is_closest_to_its_root() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let root = NodeId(rng.random());
            let other = NodeId(rng.random());
            let mid = Mid::issue(root, &mut rng);
            assert!(distance(mid.key(), root.key()) < distance(mid.key(), other.key()));
        }
    }
}
