//! A node's identity: its key pair, kept in the data directory, and the
//! self-signed certificate it presents in every TLS handshake.
//!
//! The node id is the first 16 bytes of the SHA-256 of the certificate's
//! SubjectPublicKeyInfo. Peers compute the same hash from the certificate
//! they are shown (see [`crate::tls`]), and TLS proves the key is held, so no
//! node can claim an id it does not hold the key for.

use std::fs;
use std::io::Write;
use std::path::Path;

use std::sync::Arc;

use overlay_proto::keys::{Ed25519Signer, PublicKey, SharedSigner, Signer};
use overlay_proto::NodeId;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File in the data directory that holds the private key (PKCS#8 DER).
pub const KEY_FILE: &str = "node.key";
/// File in the data directory that holds the self-signed certificate (DER).
pub const CERT_FILE: &str = "node.crt";

/// Why the identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("cannot access the key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not hold a usable key.
    #[error("the key file {path} is not a valid PKCS#8 key ({reason}); move it away to make a new identity")]
    BadKey {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot make the node certificate: {0}")]
    Certificate(String),
}

/// A node's key pair and certificate.
pub struct Identity {
    /// The node id derived from the public key.
    pub id: NodeId,
    /// The self-signed certificate.
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    signer: SharedSigner,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the identity kept in `dir`, or makes one and keeps it there.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join(KEY_FILE);
        let shown = path.display().to_string();
        let key_der = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = new_key()?;
                let der = key.serialize_der();
                write_private(&path, &der).map_err(|source| IdentityError::Io {
                    path: shown.clone(),
                    source,
                })?;
                der
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: shown,
                    source,
                })
            }
        };
        let mut identity = Self::from_pkcs8(key_der).map_err(|reason| IdentityError::BadKey {
            path: shown,
            reason,
        })?;
        // Keep the certificate beside the key, and present the kept one as
        // long as it carries this key; a missing or foreign one is replaced.
        let cert_path = dir.join(CERT_FILE);
        match fs::read(&cert_path) {
            Ok(der)
                if crate::tls::node_id_of(&CertificateDer::from(der.clone())).ok()
                    == Some(identity.id) =>
            {
                identity.cert = CertificateDer::from(der);
            }
            _ => {
                let tmp = dir.join(format!("{CERT_FILE}.tmp"));
                fs::write(&tmp, identity.cert.as_ref())
                    .and_then(|()| fs::rename(&tmp, &cert_path))
                    .map_err(|source| IdentityError::Io {
                        path: cert_path.display().to_string(),
                        source,
                    })?;
            }
        }
        Ok(identity)
    }

    /// A fresh identity held only in memory (for tests and tools).
    pub fn ephemeral() -> Result<Self, IdentityError> {
        Self::from_pkcs8(new_key()?.serialize_der()).map_err(IdentityError::Certificate)
    }

    fn from_pkcs8(der: Vec<u8>) -> Result<Self, String> {
        let pkcs8 = PrivatePkcs8KeyDer::from(der);
        let key = rcgen::KeyPair::try_from(&pkcs8).map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec!["overlay-node".to_string()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let cert = cert.der().clone();
        let id = crate::tls::node_id_of(&cert).map_err(|e| e.to_string())?;
        let signer = signer_of(pkcs8.secret_pkcs8_der())?;
        if signer.public_key().id() != id {
            return Err("its public key does not match its certificate".into());
        }
        Ok(Identity {
            id,
            cert,
            key: pkcs8,
            signer,
        })
    }

    /// What signs the node's proofs (see `overlay_proto::proof`) with
    /// this identity's key.
    pub fn signer(&self) -> SharedSigner {
        self.signer.clone()
    }

    /// The private key, for the TLS configuration.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A new node key. Ed25519: the node signs and checks a proof for every
/// few messages, and Ed25519 checks fastest of the kinds TLS takes.
/// Nodes made before keep their ECDSA P-256 keys (and so their ids).
fn new_key() -> Result<rcgen::KeyPair, IdentityError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| IdentityError::Certificate(e.to_string()))
}

/// The signer for a PKCS#8 key of either kind nodes have.
fn signer_of(der: &[u8]) -> Result<SharedSigner, String> {
    if let Some(s) = Ed25519Signer::from_pkcs8(der) {
        return Ok(Arc::new(s));
    }
    P256Signer::from_pkcs8(der)
        .map(|s| Arc::new(s) as SharedSigner)
        .ok_or_else(|| "neither an Ed25519 nor an ECDSA P-256 key".to_string())
}

/// An ECDSA P-256 key pair, as nodes made before proofs existed have.
/// ECDSA signing draws a random nonce, so it needs the system's entropy,
/// which is why this signer lives in the daemon and not in the protocol.
struct P256Signer {
    pair: EcdsaKeyPair,
    public: PublicKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for P256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("P256Signer").field(&self.public).finish()
    }
}

impl P256Signer {
    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng).ok()?;
        let public = PublicKey::P256(pair.public_key().as_ref().to_vec());
        Some(P256Signer { pair, public, rng })
    }
}

impl Signer for P256Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&self.rng, message)
            .expect("ECDSA P-256 signing fails only without entropy")
            .as_ref()
            .to_vec()
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.cert, b.cert, "the kept certificate is presented again");
        assert!(dir.path().join(CERT_FILE).exists());
        assert_ne!(a.id, Identity::ephemeral().unwrap().id);
        assert_eq!(a.signer().public_key().id(), a.id);
    }

    #[test]
    fn a_p256_key_from_before_keeps_its_id_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let old = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        fs::write(dir.path().join(KEY_FILE), old.serialize_der()).unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let signer = a.signer();
        assert!(matches!(signer.public_key(), PublicKey::P256(_)));
        assert_eq!(signer.public_key().id(), a.id);
        assert!(signer.public_key().verify(b"m", &signer.sign(b"m")));
        assert_eq!(Identity::load_or_create(dir.path()).unwrap().id, a.id);
    }

    #[test]
    fn a_corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        let err = Identity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid PKCS#8 key"), "{err}");
    }
}
