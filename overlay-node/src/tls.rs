//! TLS 1.3 for the overlay's QUIC connections, with node ids as identities.
//!
//! There is no certificate authority. Each node presents a self-signed
//! certificate; what counts is its public key, whose hash is the node id.
//! Both sides check the handshake signature with rustls's own verification
//! (so the peer proves it holds the key), then derive the peer's id from the
//! key. A dialer that expects a particular node puts the expected id in the
//! server name (`n<32 hex digits>.overlay`), and the handshake fails if the
//! certificate hashes to another id. Dialing a bootstrap address, whose node
//! is not known yet, uses the name `any.overlay` and learns the id from the
//! certificate.

use std::sync::Arc;

use overlay_proto::keys::node_id_of_spki;
use overlay_proto::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::identity::Identity;

/// ALPN protocol name; carries the wire protocol version.
pub const ALPN: &[u8] = b"overlay/4";

/// Server name used when the peer's id is not known in advance.
pub const ANY_PEER: &str = "any.overlay";

/// The TLS server name that makes a handshake succeed only with node `id`.
pub fn server_name_for(id: NodeId) -> String {
    format!("n{id}.overlay")
}

fn expected_id(name: &ServerName<'_>) -> Option<NodeId> {
    let ServerName::DnsName(dns) = name else {
        return None;
    };
    dns.as_ref()
        .strip_prefix('n')?
        .strip_suffix(".overlay")?
        .parse()
        .ok()
}

/// The node id a certificate stands for: the first 16 bytes of the SHA-256
/// of its SubjectPublicKeyInfo.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    Ok(node_id_of_spki(parsed.subject_public_key_info().as_ref()))
}

#[derive(Debug, thiserror::Error)]
#[error("peer's certificate belongs to node {actual}, not to the expected node {expected}")]
struct WrongPeer {
    expected: NodeId,
    actual: NodeId,
}

/// Checks a peer's certificate by its key alone; see the module docs.
#[derive(Debug)]
struct PeerVerifier {
    provider: Arc<CryptoProvider>,
}

impl PeerVerifier {
    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let actual = node_id_of(end_entity)?;
        match expected_id(server_name) {
            Some(expected) if expected != actual => {
                Err(Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(WrongPeer { expected, actual })),
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        node_id_of(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// rustls configurations for both ends of the overlay's connections.
pub fn configs(identity: &Identity) -> Result<(rustls::ServerConfig, rustls::ClientConfig), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PeerVerifier {
        provider: provider.clone(),
    });
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![identity.cert.clone()], identity.private_key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.private_key())?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok((server, client))
}

/// The verified node id of a connection's peer.
pub fn peer_id(conn: &quinn::Connection) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    node_id_of(certs.first()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_carry_the_expected_id() {
        let id = NodeId(0xabc);
        let name = ServerName::try_from(server_name_for(id)).unwrap();
        assert_eq!(expected_id(&name), Some(id));
        assert_eq!(expected_id(&ServerName::try_from(ANY_PEER).unwrap()), None);
    }
}
