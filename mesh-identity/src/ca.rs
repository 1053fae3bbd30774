//! The mesh CA: a signing key and certificate (Istio's `cacerts` files, or a generated root)
//! that issues workload leaves, and the trust anchors leaves are checked against.

use std::{
    fmt,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
    string::Ia5String,
};
use rustls::{
    client::danger::ServerCertVerifier,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
};
use time::OffsetDateTime;

use crate::{
    BoxError, CLOCK_SKEW_ALLOWANCE, IdentityError, SpiffeId, WorkloadCert,
    cacerts::{self, CA_CERT, CA_KEY, CERT_CHAIN, CaFiles, GeneratedCa, ROOT_CERT},
    crypto_provider, pkcs8, spiffe,
    verify::Trust,
    x509,
};

/// How long a generated root is valid.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The identity of the throw-away leaf issued to check a loaded CA end to end.
const SELF_CHECK_NAMESPACE: &str = "mesh-identity";
const SELF_CHECK_ACCOUNT: &str = "self-check";

pub struct CertificateAuthority {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    /// Sent after each leaf: cert-chain.pem less the certificates that are trust anchors
    /// (a peer has those already).
    intermediates: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    trust: Trust,
    /// When the CA's own certificate expires: no leaf is issued beyond it, since a chain
    /// is only valid while every certificate in it is.
    not_after: SystemTime,
}

impl fmt::Debug for CertificateAuthority {
    // The certificates in full would drown a log line; the key is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.roots.len())
            .field("intermediates", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Istio's `cacerts` layout in `dir`: ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem. If the directory has none of these files, generates a self-signed root
    /// (ECDSA P-256, 10 years), writes the four files (ca-cert = root, cert-chain = ca-cert,
    /// ca-key.pem with mode 0600, the directory created with 0700), then loads them.
    ///
    /// Safe to call from several processes (or threads) at once on one directory: exactly
    /// one generates, all load the same CA. Fails, naming the file, on a partial layout, a
    /// PEM that does not decode, a key that does not match ca-cert.pem, a ca-cert.pem that
    /// is not a CA or has expired, a cert-chain.pem that does not start with ca-cert.pem, or
    /// files that together would issue leaves not verifying against root-cert.pem.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, IdentityError> {
        check_trust_domain(trust_domain)?;
        let files = cacerts::load_or_create(dir, || {
            let (cert, key) = self_signed_root(trust_domain)?;
            Ok(GeneratedCa {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        })?;
        Self::from_files(dir, trust_domain, files)
    }

    /// An in-memory CA with a new self-signed root (tests: "a certificate from another CA").
    pub fn generate(trust_domain: &str) -> Result<Self, IdentityError> {
        check_trust_domain(trust_domain)?;
        let (cert, key) = self_signed_root(trust_domain)?;
        let issuer =
            Issuer::from_ca_cert_der(cert.der(), key).map_err(|e| issue_error("the root", e))?;
        let root = cert.der().clone();
        let not_after = x509::read(&root)
            .map_err(|reason| IdentityError::Issue {
                what: "the root".to_string(),
                source: reason.into(),
            })?
            .not_after;
        Self::assemble(
            trust_domain,
            issuer,
            vec![root.clone()],
            vec![root],
            not_after,
        )
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The trust anchors (root-cert.pem; may hold several roots) as DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The certificates sent after each leaf (empty when the CA is the root).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    pub(crate) fn trust(&self) -> &Trust {
        &self.trust
    }

    /// A leaf for `id` valid from now (less [`CLOCK_SKEW_ALLOWANCE`], for peers whose clock
    /// is a little behind) until now + `lifetime`, rounded out to whole seconds, and never
    /// beyond the CA certificate's own expiry.
    pub fn issue(&self, id: &SpiffeId, lifetime: Duration) -> Result<WorkloadCert, IdentityError> {
        let invalid = |reason| IdentityError::InvalidValidity {
            id: id.clone(),
            reason,
        };
        if lifetime.is_zero() {
            return Err(invalid("the lifetime is zero"));
        }
        let now = SystemTime::now();
        let not_before = now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(UNIX_EPOCH);
        let not_after = lifetime
            .checked_add(Duration::from_millis(999))
            .and_then(|rounded_up| now.checked_add(rounded_up))
            .ok_or_else(|| invalid("the lifetime is too long"))?
            .min(self.not_after);
        if not_after <= now {
            return Err(invalid("the CA certificate has expired"));
        }
        self.issue_with_validity(id, not_before, not_after)
    }

    /// A leaf with explicit validity (tests: an expired certificate). Times are truncated to
    /// whole seconds, as X.509 stores them.
    pub fn issue_with_validity(
        &self,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCert, IdentityError> {
        id.validate().map_err(|source| IdentityError::InvalidId {
            input: id.to_string(),
            source,
        })?;
        if id.trust_domain != self.trust_domain {
            return Err(IdentityError::ForeignTrustDomain {
                id: id.clone(),
                expected: self.trust_domain.clone(),
            });
        }
        let (not_before, start) = x509_time(id, not_before)?;
        let (not_after, end) = x509_time(id, not_after)?;
        if not_after <= not_before {
            return Err(IdentityError::InvalidValidity {
                id: id.clone(),
                reason: "not_after is not later than not_before",
            });
        }
        let what = || id.to_string();
        let uri = Ia5String::try_from(id.to_string()).map_err(|e| issue_error(what(), e))?;
        let mut params = CertificateParams::default();
        // Istio's leaves have an empty subject; rcgen then marks the SAN critical (RFC 5280).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = start;
        params.not_after = end;
        // No serial given: rcgen derives it from the hash of the new public key, unique per
        // leaf since every leaf gets a fresh key.
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| issue_error(what(), e))?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| issue_error(what(), e))?;
        let mut chain = Vec::with_capacity(1 + self.intermediates.len());
        chain.push(leaf.der().clone());
        chain.extend(self.intermediates.iter().cloned());
        Ok(WorkloadCert {
            id: id.clone(),
            chain,
            key: PrivateKeyDer::from(key),
            not_before,
            not_after,
        })
    }

    /// Checks the four files against each other and builds the CA.
    fn from_files(dir: &Path, trust_domain: &str, files: CaFiles) -> Result<Self, IdentityError> {
        let bad = |name: &str, index, reason: String| IdentityError::BadCertificate {
            path: dir.join(name),
            index,
            reason,
        };
        let ca = x509::read(&files.ca_cert).map_err(|reason| bad(CA_CERT, 0, reason))?;
        if !ca.is_ca {
            return Err(bad(
                CA_CERT,
                0,
                "not a CA certificate (no basicConstraints CA:TRUE)".into(),
            ));
        }
        let now = SystemTime::now();
        if ca.not_before > now + CLOCK_SKEW_ALLOWANCE {
            let when = display_time(ca.not_before);
            return Err(bad(CA_CERT, 0, format!("not valid before {when}")));
        }
        if ca.not_after < now {
            return Err(bad(
                CA_CERT,
                0,
                format!("expired at {}", display_time(ca.not_after)),
            ));
        }
        for (index, root) in files.roots.iter().enumerate() {
            x509::read(root).map_err(|reason| bad(ROOT_CERT, index, reason))?;
        }
        for (index, cert) in files.chain.iter().enumerate() {
            x509::read(cert).map_err(|reason| bad(CERT_CHAIN, index, reason))?;
        }
        if files.chain.first() != Some(&files.ca_cert) {
            return Err(bad(
                CERT_CHAIN,
                0,
                format!("is not {CA_CERT} (cert-chain.pem is ca-cert.pem followed by its issuers)"),
            ));
        }
        let key_path = dir.join(CA_KEY);
        let bad_key = |source: BoxError| IdentityError::BadKey {
            path: key_path.clone(),
            source,
        };
        let pkcs8 = pkcs8::to_pkcs8(&files.ca_key, &ca.spki).map_err(|e| bad_key(e.into()))?;
        let key = KeyPair::try_from(&pkcs8).map_err(|e| bad_key(Box::new(e)))?;
        if key.subject_public_key_info() != ca.spki {
            return Err(IdentityError::KeyMismatch {
                key: key_path,
                cert: dir.join(CA_CERT),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&files.ca_cert, key)
            .map_err(|e| bad(CA_CERT, 0, format!("cannot issue as this CA: {e}")))?;
        let authority =
            Self::assemble(trust_domain, issuer, files.chain, files.roots, ca.not_after)?;
        authority
            .self_check(&ca.subject)
            .map_err(|reason| IdentityError::ChainDoesNotVerify {
                dir: dir.to_path_buf(),
                reason,
            })?;
        Ok(authority)
    }

    fn assemble(
        trust_domain: &str,
        issuer: Issuer<'static, KeyPair>,
        chain: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
        not_after: SystemTime,
    ) -> Result<Self, IdentityError> {
        let trust = Trust::new(trust_domain, &roots, &crypto_provider())?;
        let intermediates = chain
            .into_iter()
            .filter(|cert| !roots.contains(cert))
            .collect();
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_string(),
            issuer,
            intermediates,
            roots,
            trust,
            not_after,
        })
    }

    /// Issues a leaf and verifies it as a peer would: files that are each well-formed can
    /// still not fit together (a root-cert.pem from another CA, an intermediate missing from
    /// cert-chain.pem), and that is better found at start-up than at the first handshake.
    fn self_check(&self, ca_subject: &[u8]) -> Result<(), String> {
        let id = SpiffeId::new(&self.trust_domain, SELF_CHECK_NAMESPACE, SELF_CHECK_ACCOUNT);
        let leaf = self
            .issue(&id, Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        let issuer = x509::read(&leaf.chain[0])?.issuer;
        if issuer != ca_subject {
            return Err(format!(
                "{CA_CERT}'s subject cannot be reproduced exactly when signing (a name with repeated or multi-valued attributes)"
            ));
        }
        // Any name: the verifier ignores it.
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        self.trust
            .servers
            .verify_server_cert(
                &leaf.chain[0],
                &leaf.chain[1..],
                &name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn check_trust_domain(trust_domain: &str) -> Result<(), IdentityError> {
    spiffe::validate_trust_domain(trust_domain).map_err(|source| {
        IdentityError::InvalidTrustDomain {
            trust_domain: trust_domain.to_string(),
            source,
        }
    })
}

/// A new ECDSA P-256 root named after the trust domain, as Istio's self-signed CA is
/// (`O=<trust domain>`).
fn self_signed_root(trust_domain: &str) -> Result<(rcgen::Certificate, KeyPair), IdentityError> {
    let what = || format!("a root for trust domain {trust_domain}");
    let now = SystemTime::now();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| issue_error(what(), e))?;
    let mut params = CertificateParams::default();
    // The key's identifier in the common name tells two generated roots apart: a leaf of
    // one then fails against the other as "unknown issuer", not as a bad signature of a
    // same-named issuer, and an operator can see which root a file holds.
    let key_id: String = params.key_identifier(&key)[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain);
    name.push(DnType::CommonName, format!("mesh root CA {key_id}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before =
        OffsetDateTime::from(now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(UNIX_EPOCH));
    params.not_after = OffsetDateTime::from(now + ROOT_LIFETIME);
    let cert = params
        .self_signed(&key)
        .map_err(|e| issue_error(what(), e))?;
    Ok((cert, key))
}

/// `t` truncated to whole seconds, as a `SystemTime` and as rcgen's time type.
fn x509_time(id: &SpiffeId, t: SystemTime) -> Result<(SystemTime, OffsetDateTime), IdentityError> {
    let invalid = |reason| IdentityError::InvalidValidity {
        id: id.clone(),
        reason,
    };
    let seconds = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid("a validity bound is before 1970"))?
        .as_secs();
    let stamp = i64::try_from(seconds).map_err(|_| invalid("a validity bound is out of range"))?;
    let time = OffsetDateTime::from_unix_timestamp(stamp)
        .map_err(|_| invalid("a validity bound is out of range"))?;
    Ok((UNIX_EPOCH + Duration::from_secs(seconds), time))
}

fn display_time(t: SystemTime) -> String {
    match t
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
    {
        Some(secs) => OffsetDateTime::from_unix_timestamp(secs)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| format!("{secs} s after the epoch")),
        None => "before 1970".to_string(),
    }
}

fn issue_error(what: impl Into<String>, source: rcgen::Error) -> IdentityError {
    IdentityError::Issue {
        what: what.into(),
        source: Box::new(source),
    }
}

/// The CA is shared between tasks behind an `Arc`.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<CertificateAuthority>();
    shareable::<Arc<CertificateAuthority>>();
};
