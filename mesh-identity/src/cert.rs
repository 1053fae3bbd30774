//! A workload's certificate and key, as issued by [`crate::CertificateAuthority::issue`].

use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{SpiffeId, pemfile};

/// A workload's leaf: its only SAN is the SPIFFE URI; key ECDSA P-256; EKU
/// serverAuth+clientAuth; `chain` = the leaf followed by the CA chain (cert-chain.pem's
/// certificates, less those that are trust anchors themselves).
///
/// `not_before` and `not_after` are the times written in the certificate (whole seconds).
#[derive(Debug)]
pub struct WorkloadCert {
    pub id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Clone for WorkloadCert {
    // `PrivateKeyDer` is not `Clone` so that copies of a secret are deliberate; this is one.
    fn clone(&self) -> Self {
        WorkloadCert {
            id: self.id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl WorkloadCert {
    /// The chain as PEM, leaf first (openssl's `-cert`/`-cert_chain` input).
    pub fn chain_pem(&self) -> String {
        pemfile::encode_certificates(&self.chain)
    }

    /// The private key as PEM (PKCS#8 `PRIVATE KEY` for keys issued here).
    pub fn key_pem(&self) -> String {
        pemfile::encode_key(&self.key)
    }

    /// Whether `at` falls within the certificate's validity.
    pub fn is_valid_at(&self, at: SystemTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}
