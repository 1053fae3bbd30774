//! Policy at the destination, as the node agent applies it: `PeerAuthentication` for
//! plaintext, `AuthorizationPolicy` for every connection. The decisions themselves are
//! pure functions of the snapshot (`mesh_config::authz`); this file feeds them the
//! connection and logs why a connection was refused.
use std::net::SocketAddr;

use mesh_config::{
    Snapshot,
    authz::{self, Connection, Decision, MtlsMode, Target},
};
use mesh_identity::SpiffeId;

use super::{PodProxy, error::ProxyError};

/// Whether plaintext (no mesh identity) may reach `port` of the pod.
pub fn plaintext_allowed(snapshot: &Snapshot, pod: &PodProxy, port: u16) -> Result<(), ProxyError> {
    match authz::mtls_mode(snapshot, &pod.node.root_namespace, &workload(pod), port) {
        MtlsMode::Strict => Err(ProxyError::PlaintextRefused { port }),
        MtlsMode::Permissive | MtlsMode::Disable => Ok(()),
    }
}

/// `AuthorizationPolicy` for a connection from `peer` (with `client` identity, if it has
/// one) to `target` in the pod.
pub fn check(
    snapshot: &Snapshot,
    pod: &PodProxy,
    client: Option<&SpiffeId>,
    peer: SocketAddr,
    target: SocketAddr,
) -> Result<(), ProxyError> {
    let principal = client.map(SpiffeId::principal);
    let connection = Connection {
        source_principal: principal.as_deref(),
        source_ip: peer.ip(),
        remote_ip: peer.ip(),
        destination_ip: target.ip(),
        destination_port: target.port(),
    };
    match authz::authorize(
        snapshot,
        &pod.node.root_namespace,
        &workload(pod),
        &connection,
    ) {
        Decision::Allow { audit } => {
            if let Some(policy) = audit {
                tracing::info!(target: "audit", pod = %pod.pod, %peer, principal = principal.as_deref().unwrap_or("-"), policy, "AUDIT policy matched");
            }
            Ok(())
        }
        Decision::Deny { policy, reason } => Err(ProxyError::Denied {
            policy,
            why: reason.to_string(),
        }),
    }
}

/// The pod as the policies select it.
fn workload(pod: &PodProxy) -> Target<'_> {
    Target {
        namespace: &pod.namespace,
        labels: &pod.labels,
    }
}
