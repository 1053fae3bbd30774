//! SPIFFE IDs in Istio's form, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`:
//! the only identity a workload certificate carries and the principal that policy names.
//!
//! Parsing is strict on purpose: the ID comes out of a peer's certificate and is then compared
//! with policy principals as a string, so two spellings of one identity (upper case trust
//! domain, `%2F`, a trailing slash, a port) must not both be accepted.

use std::{fmt, str::FromStr};

/// The scheme every SPIFFE ID starts with.
const SCHEME: &str = "spiffe://";
/// Longest SPIFFE ID the SPIFFE standard allows (bytes, URI included).
const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name the SPIFFE standard allows.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// What is wrong with a SPIFFE ID (or with one of its parts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("does not start with `spiffe://`")]
    MissingScheme,
    #[error("is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("has an empty trust domain")]
    EmptyTrustDomain,
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error(
        "trust domain {trust_domain:?} contains {character:?} (allowed: lower-case letters, digits, `.`, `-`, `_`)"
    )]
    TrustDomainCharacter {
        trust_domain: String,
        character: char,
    },
    #[error("path {path:?} is not `/ns/<namespace>/sa/<service-account>`")]
    Path { path: String },
    #[error("{part} is empty")]
    EmptyPart { part: IdPart },
    #[error("{part} {value:?} contains {character:?} (allowed: letters, digits, `.`, `-`, `_`)")]
    PartCharacter {
        part: IdPart,
        value: String,
        character: char,
    },
    #[error("{part} may not be `.` or `..`")]
    DotPart { part: IdPart },
}

/// Which part of the path a [`SpiffeIdError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdPart {
    Namespace,
    ServiceAccount,
}

impl fmt::Display for IdPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdPart::Namespace => "namespace",
            IdPart::ServiceAccount => "service account",
        })
    }
}

impl SpiffeId {
    /// Builds an ID from its parts without checking them (Kubernetes already did for the
    /// names it hands out); [`SpiffeId::validate`] checks, and issuing a certificate does.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Self {
        SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Istio's principal form used in AuthorizationPolicy: `<td>/ns/<ns>/sa/<sa>` (no scheme).
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The same checks as parsing: an ID that passes prints as a URI that parses back to it.
    pub fn validate(&self) -> Result<(), SpiffeIdError> {
        validate_trust_domain(&self.trust_domain)?;
        validate_part(IdPart::Namespace, &self.namespace)?;
        validate_part(IdPart::ServiceAccount, &self.service_account)?;
        if self.to_string().len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        Ok(())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::MissingScheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        // `path` keeps its leading slash: "/ns/<ns>/sa/<sa>" splits into five pieces, the
        // first empty. A trailing slash, a query or extra segments make it something else.
        let pieces: Vec<&str> = path.split('/').collect();
        let [first, "ns", namespace, "sa", service_account] = pieces.as_slice() else {
            return Err(SpiffeIdError::Path {
                path: path.to_string(),
            });
        };
        if !first.is_empty() {
            return Err(SpiffeIdError::Path {
                path: path.to_string(),
            });
        }
        validate_part(IdPart::Namespace, namespace)?;
        validate_part(IdPart::ServiceAccount, service_account)?;
        Ok(SpiffeId::new(trust_domain, *namespace, *service_account))
    }
}

/// SPIFFE trust domain names: lower-case letters, digits, dots, dashes and underscores; this
/// rules out ports, user info, upper case and percent-encoding in one check.
pub(crate) fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if let Some(character) = trust_domain.chars().find(|c| !allowed(*c)) {
        return Err(SpiffeIdError::TrustDomainCharacter {
            trust_domain: trust_domain.to_string(),
            character,
        });
    }
    Ok(())
}

/// SPIFFE path segments: letters, digits, dots, dashes and underscores, never `.` or `..`.
/// Kubernetes namespaces and service account names always fit.
fn validate_part(part: IdPart, value: &str) -> Result<(), SpiffeIdError> {
    if value.is_empty() {
        return Err(SpiffeIdError::EmptyPart { part });
    }
    if value == "." || value == ".." {
        return Err(SpiffeIdError::DotPart { part });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if let Some(character) = value.chars().find(|c| !allowed(*c)) {
        return Err(SpiffeIdError::PartCharacter {
            part,
            value: value.to_string(),
            character,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
