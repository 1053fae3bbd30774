//! PeerAuthentication: whether a workload's port accepts plaintext.
//!
//! Three levels, each inheriting from the one above when its mode is `UNSET` (or absent):
//! mesh-wide (no selector, in the root namespace) → namespace-wide (no selector, in the
//! workload's namespace) → workload (a selector matching the workload's labels, in its
//! namespace), whose `portLevelMtls` entry for the port, if any, comes last. Nothing set
//! anywhere is `PERMISSIVE`, Istio's default.
//!
//! As istiod does for ambient: a selector with no labels counts as no selector; a policy
//! with a selector in the root namespace is ignored (it is neither mesh-wide nor in the
//! workload's namespace); `portLevelMtls` counts only on a workload policy (the validator
//! refuses it elsewhere). When several policies compete at one level Istio takes the oldest;
//! a snapshot has no creation times, so the first by `namespace/name` wins here, which is
//! stable across rebuilds.

use serde::Serialize;

use super::{Target, policies_in, selects};
use crate::istio::{self, PeerAuthenticationSpec};
use crate::snapshot::{PolicyInfo, Snapshot};

/// The effective mode: Istio's modes without `UNSET`, which is resolved here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Only mTLS (HBONE) connections; plaintext is refused.
    Strict,
    /// mTLS and plaintext.
    Permissive,
    /// Plaintext wanted. In ambient ztunnel still accepts HBONE (the mesh never downgrades
    /// a tunnel), so for the inbound side this behaves as `Permissive`.
    Disable,
}

impl MtlsMode {
    /// Whether a plaintext connection may reach the port.
    pub fn allows_plaintext(self) -> bool {
        self != MtlsMode::Strict
    }

    fn from_istio(mode: Option<istio::MtlsMode>) -> Option<MtlsMode> {
        match mode? {
            istio::MtlsMode::Unset => None,
            istio::MtlsMode::Strict => Some(MtlsMode::Strict),
            istio::MtlsMode::Permissive => Some(MtlsMode::Permissive),
            istio::MtlsMode::Disable => Some(MtlsMode::Disable),
        }
    }
}

/// The effective mode and the policy that set it (for logs and `config_dump`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MtlsDecision {
    pub mode: MtlsMode,
    /// `namespace/name` of the PeerAuthentication that decided; `None` for the default.
    pub policy: Option<String>,
}

/// The effective mTLS mode for `target` on `port` (the application's port, not a Service
/// port).
pub fn mtls_mode(snap: &Snapshot, root_namespace: &str, target: &Target, port: u16) -> MtlsMode {
    mtls_decision(snap, root_namespace, target, port).mode
}

/// As [`mtls_mode`], also naming the deciding policy.
pub fn mtls_decision(
    snap: &Snapshot,
    root_namespace: &str,
    target: &Target,
    port: u16,
) -> MtlsDecision {
    let mut decision = MtlsDecision {
        mode: MtlsMode::Permissive,
        policy: None,
    };
    let mut apply = |mode: Option<istio::MtlsMode>, policy: &PolicyInfo<PeerAuthenticationSpec>| {
        if let Some(mode) = MtlsMode::from_istio(mode) {
            decision = MtlsDecision {
                mode,
                policy: Some(format!("{}/{}", policy.namespace, policy.name)),
            };
        }
    };

    let mesh = policies_in(&snap.peer_authentications, root_namespace).find(|p| is_wide(&p.spec));
    if let Some(p) = mesh {
        apply(mode_of(p.spec.mtls), p);
    }
    if target.namespace == root_namespace {
        // The mesh-wide policy is also this namespace's; workload policies in the root
        // namespace are ignored (see the module comment).
        return decision;
    }
    let namespace =
        policies_in(&snap.peer_authentications, target.namespace).find(|p| is_wide(&p.spec));
    if let Some(p) = namespace {
        apply(mode_of(p.spec.mtls), p);
    }
    let workload = policies_in(&snap.peer_authentications, target.namespace)
        .find(|p| !is_wide(&p.spec) && selects(p.spec.selector.as_ref(), target.labels));
    if let Some(p) = workload {
        apply(mode_of(p.spec.mtls), p);
        let port_mode = p
            .spec
            .port_level_mtls
            .iter()
            .find(|(k, _)| super::parse_port(k) == Some(port))
            .and_then(|(_, m)| m.mode);
        apply(port_mode, p);
    }
    decision
}

fn mode_of(mtls: Option<istio::MutualTls>) -> Option<istio::MtlsMode> {
    mtls.and_then(|m| m.mode)
}

/// Mesh- or namespace-wide: no selector, or one without labels (istiod reads both alike).
fn is_wide(spec: &PeerAuthenticationSpec) -> bool {
    spec.selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty())
}
