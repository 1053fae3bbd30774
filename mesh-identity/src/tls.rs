//! rustls configurations for the two ends of an HBONE tunnel: TLS 1.3 only, ALPN `h2`,
//! mutual authentication with the workload's certificate, the peer checked by
//! [`crate::verify`].
//!
//! Session resumption is off at both ends. Tunnels are pooled and long-lived, so it would
//! save little; and a resumed session skips certificate verification, which would let a
//! client whose certificate has since expired (or whose pod was forgotten) back in on a
//! ticket.

use std::sync::Arc;

use rustls::{
    ClientConfig, ServerConfig, client::Resumption, crypto::CryptoProvider,
    pki_types::CertificateDer, server::NoServerSessionStorage, version::TLS13,
};

use crate::{IdentityError, WorkloadCert, crypto_provider, verify::Trust};

/// HBONE is HTTP/2 CONNECT; ztunnel offers and expects exactly this protocol.
pub const ALPN_H2: &[u8] = b"h2";

/// The server end for `cert`'s workload, checking clients with `trust`.
pub(crate) fn server_config(
    cert: &WorkloadCert,
    trust: &Trust,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, IdentityError> {
    let failed = |source| IdentityError::Tls {
        id: cert.id.clone(),
        source: Box::new(source),
    };
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS13])
        .map_err(failed)?
        .with_client_cert_verifier(trust.clients.clone())
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(failed)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client end for `cert`'s workload, checking servers with `trust`.
pub(crate) fn client_config(
    cert: &WorkloadCert,
    trust: &Trust,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let failed = |source| IdentityError::Tls {
        id: cert.id.clone(),
        source: Box::new(source),
    };
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS13])
        .map_err(failed)?
        .dangerous()
        .with_custom_certificate_verifier(trust.servers.clone())
        .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(failed)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    // The server name is not an identity here (see `verify`); sending it would only leak
    // whatever name the caller passed.
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// A client configuration presenting any certificate (an expired one, one from another CA)
/// and trusting `roots` for servers of `cert`'s trust domain: what
/// [`crate::CertManager::client_config`] builds, for certificates it would not hand out.
pub fn client_config_for(
    cert: &WorkloadCert,
    roots: &[CertificateDer<'_>],
) -> Result<Arc<ClientConfig>, IdentityError> {
    let provider = crypto_provider();
    let trust = Trust::new(&cert.id.trust_domain, roots, &provider)?;
    client_config(cert, &trust, &provider)
}

/// The server-side counterpart of [`client_config_for`].
pub fn server_config_for(
    cert: &WorkloadCert,
    roots: &[CertificateDer<'_>],
) -> Result<Arc<ServerConfig>, IdentityError> {
    let provider = crypto_provider();
    let trust = Trust::new(&cert.id.trust_domain, roots, &provider)?;
    server_config(cert, &trust, &provider)
}
