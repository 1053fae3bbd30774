//! The crate's one error type. Every variant says which file, identity or certificate it is
//! about, so an agent log line is enough to fix a broken `cacerts` directory or to tell a
//! refused peer from a bug.

use std::{io, path::PathBuf};

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Boxed so that rcgen's error type does not become part of this crate's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("SPIFFE ID {input:?} {source}")]
    InvalidId {
        input: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("trust domain {trust_domain:?}: {source}")]
    InvalidTrustDomain {
        trust_domain: String,
        #[source]
        source: SpiffeIdError,
    },
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: incomplete CA directory: {} missing but {} present (Istio's layout needs all four of ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem, or none to generate a root)",
        dir.display(), missing.join(", "), present.join(", ")
    )]
    PartialLayout {
        dir: PathBuf,
        missing: Vec<String>,
        present: Vec<String>,
    },
    /// A PEM file that does not decode, or holds no (or too many) objects of the kind expected.
    #[error("{}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    /// A certificate that parses as PEM but not as what it should be (X.509, a CA, in date).
    #[error("{}: certificate {index}: {reason}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{}: unusable private key: {source}", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("{}: the key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    /// Loaded files that are each fine but do not fit together: a leaf issued with them does
    /// not verify against root-cert.pem.
    #[error("{}: certificates issued with this CA would not verify against root-cert.pem: {reason}", dir.display())]
    ChainDoesNotVerify { dir: PathBuf, reason: String },
    #[error("no trust anchors")]
    NoTrustAnchors,
    #[error("trust anchor {index}: {reason}")]
    BadTrustAnchor { index: usize, reason: String },
    #[error("issuing {what}: {source}")]
    Issue {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("certificate for {id}: {reason}")]
    InvalidValidity { id: SpiffeId, reason: &'static str },
    #[error("TLS configuration for {id}: {source}")]
    Tls {
        id: SpiffeId,
        /// Boxed: rustls's error next to an ID would make every `Result` of this crate large.
        #[source]
        source: Box<rustls::Error>,
    },
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate: {reason}")]
    PeerCertificate { reason: String },
    #[error("peer certificate has no SPIFFE URI SAN")]
    NoSpiffeUri,
    #[error("peer certificate has {count} URI SANs, a workload certificate has exactly one")]
    SeveralUris { count: usize },
    #[error("identity {id} is not in trust domain {expected:?}")]
    ForeignTrustDomain { id: SpiffeId, expected: String },
}

impl IdentityError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        IdentityError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
