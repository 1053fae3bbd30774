//! Reading certificates: the few facts this crate needs (URI SANs, validity, public key,
//! names, CA flag), taken with x509-parser because webpki exposes DNS and IP names only.
//! Verifying chains and signatures is webpki's job (through rustls), never this module's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::{IdentityError, SpiffeId};

/// What this crate reads out of one certificate.
#[derive(Debug, Clone)]
pub(crate) struct CertFacts {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    /// The DER SubjectPublicKeyInfo, to match a private key against.
    pub spki: Vec<u8>,
    /// DER names, compared byte for byte as webpki does when it builds a chain.
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    /// Every URI in the subjectAltName extension, in order.
    pub uris: Vec<String>,
}

/// Reads `der`; the error is a human-readable reason for the caller to put in context.
pub(crate) fn read(der: &[u8]) -> Result<CertFacts, String> {
    let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName extension: {e}"))?;
    let uris = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let validity = cert.validity();
    Ok(CertFacts {
        not_before: system_time(validity.not_before.timestamp()),
        not_after: system_time(validity.not_after.timestamp()),
        is_ca: cert.is_ca(),
        spki: cert.public_key().raw.to_vec(),
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        uris,
    })
}

/// Certificates can name times before 1970; clamp them to the epoch, which is just as far
/// in the past for every check made here.
fn system_time(unix_seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0))
}

/// The SPIFFE identity a workload certificate carries: its one and only URI SAN.
pub(crate) fn identity_of(leaf: &CertificateDer<'_>) -> Result<SpiffeId, IdentityError> {
    let facts = read(leaf).map_err(|reason| IdentityError::PeerCertificate { reason })?;
    let uri = match facts.uris.as_slice() {
        [] => return Err(IdentityError::NoSpiffeUri),
        [uri] => uri,
        several => {
            return Err(IdentityError::SeveralUris {
                count: several.len(),
            });
        }
    };
    uri.parse().map_err(|source| IdentityError::InvalidId {
        input: uri.clone(),
        source,
    })
}

/// The SPIFFE identity in a peer's leaf certificate (from `conn.peer_certificates()`), for
/// both `rustls::ServerConnection` and `ClientConnection`.
///
/// The verifiers of this crate's TLS configurations already refused peers without a valid
/// identity of the trust domain; this reads the identity for the caller's own decision
/// (the expected destination, or policy).
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, IdentityError> {
    let leaf = certs
        .and_then(|certs| certs.first())
        .ok_or(IdentityError::NoPeerCertificate)?;
    identity_of(leaf)
}

/// [`identity_of`], then insists on `trust_domain`.
pub(crate) fn identity_in(
    leaf: &CertificateDer<'_>,
    trust_domain: &str,
) -> Result<SpiffeId, IdentityError> {
    let id = identity_of(leaf)?;
    if id.trust_domain != trust_domain {
        return Err(IdentityError::ForeignTrustDomain {
            id,
            expected: trust_domain.to_string(),
        });
    }
    Ok(id)
}
