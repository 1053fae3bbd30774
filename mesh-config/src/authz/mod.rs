//! Istio security policy for one inbound connection, as a pure function of the snapshot: the
//! node agent asks [`mtls_mode`] whether the destination port takes plaintext, then
//! [`authorize`] whether the connection may proceed; a waypoint or gateway asks
//! [`authorize_request`] for each HTTP request. Nothing here does I/O or keeps state,
//! so every rule is unit-tested from YAML (`tests/`).
//!
//! Modules, one job each: [`peer_authentication`] (effective mTLS mode), [`authorization`]
//! (AuthorizationPolicy at L4, with ztunnel's fail-closed handling of HTTP attributes),
//! [`ip_block`] (addresses and CIDRs, shared with the validator), `matcher` (principals,
//! namespaces, ports).
//!
//! The root namespace (Istio's `meshConfig.rootNamespace`) is a parameter: policies there are
//! mesh-wide. Istio's default is [`DEFAULT_ROOT_NAMESPACE`].

pub mod authorization;
pub mod ip_block;
mod matcher;
pub mod peer_authentication;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use authorization::{
    Connection, Decision, DenyReason, HttpRequest, PolicyScope, RequestHeaders, authorize,
    authorize_request,
};
pub use ip_block::{IpBlock, IpBlockError};
pub use matcher::parse_port;
pub use peer_authentication::{MtlsDecision, MtlsMode, mtls_decision, mtls_mode};

use crate::istio::WorkloadSelector;
use crate::snapshot::PolicyInfo;

/// Istio's default root namespace (`meshConfig.rootNamespace`).
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// The workload a connection is for (the destination pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> Target<'a> {
    /// The target for a workload of the snapshot.
    pub fn of(workload: &'a crate::snapshot::Workload) -> Target<'a> {
        Target {
            namespace: &workload.namespace,
            labels: &workload.labels,
        }
    }
}

/// Whether a selector picks a workload with `labels`: no selector picks every workload (of
/// the namespaces the policy reaches), otherwise every `matchLabels` pair must be present.
fn selects(selector: Option<&WorkloadSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The policies of one namespace, in name order: snapshot keys are `namespace/name`, so they
/// sit together in the map and a range finds them without a scan over the mesh.
fn policies_in<'s, S>(
    policies: &'s BTreeMap<String, Arc<PolicyInfo<S>>>,
    namespace: &str,
) -> impl Iterator<Item = &'s PolicyInfo<S>> {
    let prefix = format!("{namespace}/");
    policies
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
        .map(|(_, p)| p.as_ref())
        .filter(move |p| p.namespace == namespace)
}

#[cfg(test)]
mod tests;
