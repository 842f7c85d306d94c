//! Node keys and signatures: what lets a message be checked against the
//! node that made it, wherever it came from.
//!
//! A node id is the first 16 bytes of the SHA-256 of the node's public key
//! in its DER SubjectPublicKeyInfo form, the key its TLS certificate
//! carries. So a public key proves which id it belongs to, and a signature
//! by that key proves the id's holder said it, whichever peer passed the
//! message on. Only the transport knows a *connection*'s peer; signatures
//! carry proof across hops (a root's stream down the tree, see
//! [`crate::seal`]).
//!
//! Two key types are accepted: Ed25519 (what new nodes make) and ECDSA
//! P-256 (what nodes made before signatures existed, whose ids must not
//! change). Verification is pure computation and lives here; signing needs
//! the private key, which the driver holds and lends the node as a
//! [`Signer`].

use std::fmt;
use std::sync::Arc;

use ring::signature::{self as sig, KeyPair};
use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// SubjectPublicKeyInfo DER prefix of an Ed25519 key (RFC 8410); the raw
/// 32-byte key follows.
const ED25519_SPKI: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// SubjectPublicKeyInfo DER prefix of an uncompressed ECDSA P-256 key
/// (RFC 5480); the 65-byte point follows.
const P256_SPKI: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Length of a raw Ed25519 public key.
const ED25519_LEN: usize = 32;
/// Length of an uncompressed P-256 point.
const P256_LEN: usize = 65;
/// Longest signature of either kind (a DER ECDSA P-256 signature).
pub const MAX_SIGNATURE: usize = 72;

/// A node's public key, as it travels in messages.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublicKey {
    /// A raw Ed25519 key (32 bytes).
    Ed25519([u8; ED25519_LEN]),
    /// An uncompressed ECDSA P-256 point (65 bytes; checked on use, since
    /// serde has no arrays that long).
    P256(Vec<u8>),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Ed25519(_) => write!(f, "Ed25519({})", self.id().short()),
            PublicKey::P256(_) => write!(f, "P256({})", self.id().short()),
        }
    }
}

impl PublicKey {
    /// The key from a certificate's SubjectPublicKeyInfo (DER), if it is
    /// of a kind nodes use.
    pub fn from_spki(spki: &[u8]) -> Option<PublicKey> {
        if let Some(raw) = spki.strip_prefix(&ED25519_SPKI[..]) {
            return Some(PublicKey::Ed25519(raw.try_into().ok()?));
        }
        let raw = spki.strip_prefix(&P256_SPKI[..])?;
        (raw.len() == P256_LEN).then(|| PublicKey::P256(raw.to_vec()))
    }

    /// The key's SubjectPublicKeyInfo (DER), as a certificate carries it.
    pub fn spki(&self) -> Vec<u8> {
        let (prefix, raw): (&[u8], &[u8]) = match self {
            PublicKey::Ed25519(k) => (&ED25519_SPKI, k),
            PublicKey::P256(k) => (&P256_SPKI, k),
        };
        [prefix, raw].concat()
    }

    /// The id of the node that holds this key.
    pub fn id(&self) -> NodeId {
        node_id_of_spki(&self.spki())
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(k) => sig::UnparsedPublicKey::new(&sig::ED25519, k)
                .verify(message, signature)
                .is_ok(),
            PublicKey::P256(k) => {
                k.len() == P256_LEN
                    && sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_ASN1, k)
                        .verify(message, signature)
                        .is_ok()
            }
        }
    }
}

/// The id of the node whose key has SubjectPublicKeyInfo `spki` (DER): the
/// first 16 bytes of its SHA-256. The transport derives peers' ids from
/// their certificates with the same function.
pub fn node_id_of_spki(spki: &[u8]) -> NodeId {
    let hash = ring::digest::digest(&ring::digest::SHA256, spki);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_ref()[..16]);
    NodeId::from_bytes(id)
}

/// Signs on behalf of a node: the driver holds the private key and lends
/// the node this. Signing must not fail for a well-formed key.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The public key, whose id is the node's.
    fn public_key(&self) -> &PublicKey;
    /// The signature of `message`.
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// A node's signer, shared by the node and its driver.
pub type SharedSigner = Arc<dyn Signer>;

/// An Ed25519 key pair: deterministic signatures, so it needs no entropy
/// once made, and serves the daemon and the simulator alike.
pub struct Ed25519Signer {
    pair: sig::Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Ed25519Signer").field(&self.public).finish()
    }
}

impl Ed25519Signer {
    /// The key pair made from a 32-byte seed (a simulator derives it from
    /// its own seed, so runs repeat).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let pair = sig::Ed25519KeyPair::from_seed_unchecked(seed)
            .expect("any 32 bytes are an Ed25519 seed");
        Self::from_pair(pair)
    }

    /// The key pair in a PKCS#8 document (v1 or v2), as a node keeps it.
    pub fn from_pkcs8(der: &[u8]) -> Option<Self> {
        sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .ok()
            .map(Self::from_pair)
    }

    fn from_pair(pair: sig::Ed25519KeyPair) -> Self {
        let raw: [u8; ED25519_LEN] = pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes");
        Ed25519Signer {
            pair,
            public: PublicKey::Ed25519(raw),
        }
    }
}

impl Signer for Ed25519Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_signs_and_verifies_and_names_its_id() {
        let s = Ed25519Signer::from_seed(&[7; 32]);
        let sig = s.sign(b"hello");
        assert!(s.public_key().verify(b"hello", &sig));
        assert!(!s.public_key().verify(b"hellp", &sig));
        let other = Ed25519Signer::from_seed(&[8; 32]);
        assert!(!other.public_key().verify(b"hello", &sig));
        let spki = s.public_key().spki();
        assert_eq!(PublicKey::from_spki(&spki).as_ref(), Some(s.public_key()));
        assert_eq!(s.public_key().id(), node_id_of_spki(&spki));
        assert_ne!(s.public_key().id(), other.public_key().id());
    }

    #[test]
    fn p256_keys_verify_and_bad_lengths_fail() {
        let rng = ring::rand::SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_ASN1_SIGNING;
        let doc = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        let key = PublicKey::P256(pair.public_key().as_ref().to_vec());
        let signature = pair.sign(&rng, b"m").unwrap();
        assert!(key.verify(b"m", signature.as_ref()));
        assert_eq!(PublicKey::from_spki(&key.spki()), Some(key));
        let short = PublicKey::P256(vec![4; 10]);
        assert!(!short.verify(b"m", signature.as_ref()));
        assert_eq!(PublicKey::from_spki(&short.spki()), None);
    }
}
