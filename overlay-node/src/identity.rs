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

use overlay_proto::NodeId;
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
                let key = rcgen::KeyPair::generate()
                    .map_err(|e| IdentityError::Certificate(e.to_string()))?;
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
        let key =
            rcgen::KeyPair::generate().map_err(|e| IdentityError::Certificate(e.to_string()))?;
        Self::from_pkcs8(key.serialize_der()).map_err(IdentityError::Certificate)
    }

    fn from_pkcs8(der: Vec<u8>) -> Result<Self, String> {
        let pkcs8 = PrivatePkcs8KeyDer::from(der);
        let key = rcgen::KeyPair::try_from(&pkcs8).map_err(|e| e.to_string())?;
        let params = rcgen::CertificateParams::new(vec!["overlay-node".to_string()])
            .map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let cert = cert.der().clone();
        let id = crate::tls::node_id_of(&cert).map_err(|e| e.to_string())?;
        Ok(Identity {
            id,
            cert,
            key: pkcs8,
        })
    }

    /// The private key, for the TLS configuration.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
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
