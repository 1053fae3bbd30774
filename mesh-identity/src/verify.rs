//! What each end of an HBONE handshake checks about the other: the chain up to the mesh
//! roots (webpki: signatures, validity at the handshake's time, key usage), then that the
//! leaf names exactly one SPIFFE ID in our trust domain.
//!
//! Server names play no part. Workload certificates carry a URI SAN and no DNS name, so
//! rustls's usual server check (the name the client dialled) would refuse every one of them;
//! the client's real question, "is this the workload I meant?", needs the SPIFFE ID and is
//! answered after the handshake with [`crate::peer_identity`].

use std::sync::Arc;

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{
        CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        ParsedCertificate, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use crate::{IdentityError, x509};

/// The trust anchors of one trust domain and the two verifiers built on them. Built once per
/// CA: every TLS configuration of a [`crate::CertManager`] shares them.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    /// Used by clients, to check servers.
    pub servers: Arc<SpiffeServerVerifier>,
    /// Used by servers, to check clients.
    pub clients: Arc<SpiffeClientVerifier>,
}

impl Trust {
    pub(crate) fn new(
        trust_domain: &str,
        roots: &[CertificateDer<'_>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, IdentityError> {
        let mut store = RootCertStore::empty();
        for (index, root) in roots.iter().enumerate() {
            store
                .add(root.clone())
                .map_err(|e| IdentityError::BadTrustAnchor {
                    index,
                    reason: e.to_string(),
                })?;
        }
        let store = Arc::new(store);
        // Mandatory client authentication is the builder's default. Without CRLs the only
        // way to fail is an empty store.
        let webpki_clients =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
                .build()
                .map_err(|_| IdentityError::NoTrustAnchors)?;
        Ok(Trust {
            servers: Arc::new(SpiffeServerVerifier {
                roots: store,
                algorithms: provider.signature_verification_algorithms,
                trust_domain: trust_domain.to_string(),
            }),
            clients: Arc::new(SpiffeClientVerifier {
                webpki: webpki_clients,
                trust_domain: trust_domain.to_string(),
            }),
        })
    }
}

/// A refused identity as a certificate error: the handshake fails with a `bad_certificate`
/// alert and the message says why.
fn refused(error: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// Checks a server: chain and validity against the roots, any server name, a SPIFFE ID in
/// the trust domain.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    trust_domain: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        x509::identity_in(end_entity, &self.trust_domain).map_err(refused)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Never reached (the configurations are TLS 1.3 only); kept correct regardless.
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks a client: webpki's client verifier (certificate required, chain, validity,
/// clientAuth usage), then a SPIFFE ID in the trust domain.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        x509::identity_in(end_entity, &self.trust_domain).map_err(refused)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
