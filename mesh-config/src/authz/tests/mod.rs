//! PeerAuthentication and AuthorizationPolicy decisions, from YAML users write: the shared
//! pods and helpers here, one file per concern.

mod authorization;
mod http;
mod peer_authentication;
mod validation;

pub(super) use std::net::IpAddr;

pub(super) use super::*;
pub(super) use crate::Snapshot;

pub(super) fn snapshot(yaml: &str) -> Snapshot {
    let loaded = crate::load_str(&format!("{PODS}\n---\n{yaml}"), None).expect("test YAML loads");
    Snapshot::build(&loaded).expect("test YAML builds")
}

/// `default/reviews` (app=reviews), `default/details` (app=details), `other/ratings`.
pub(super) const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: reviews, namespace: default, labels: {app: reviews, version: v1}}
spec:
  serviceAccountName: reviews
  containers: [{name: app, image: reviews}]
---
apiVersion: v1
kind: Pod
metadata: {name: details, namespace: default, labels: {app: details}}
spec:
  containers: [{name: app, image: details}]
---
apiVersion: v1
kind: Pod
metadata: {name: ratings, namespace: other, labels: {app: ratings}}
spec:
  containers: [{name: app, image: ratings}]
"#;

pub(super) const ROOT: &str = DEFAULT_ROOT_NAMESPACE;
pub(super) const RATINGS: &str = "cluster.local/ns/other/sa/ratings";
pub(super) const PRODUCTPAGE: &str = "cluster.local/ns/default/sa/productpage";

pub(super) fn target<'s>(snap: &'s Snapshot, workload: &str) -> Target<'s> {
    Target::of(&snap.workloads[workload])
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// An mTLS (or, with `None`, plaintext) connection from `src` to port 8080.
pub(super) fn conn(principal: Option<&'static str>, src: &str) -> Connection<'static> {
    conn_to(principal, src, 8080)
}

pub(super) fn conn_to(
    principal: Option<&'static str>,
    src: &str,
    port: u16,
) -> Connection<'static> {
    Connection {
        source_principal: principal,
        source_ip: ip(src),
        remote_ip: ip(src),
        destination_ip: ip("10.0.0.5"),
        destination_port: port,
    }
}

pub(super) fn decide(snap: &Snapshot, workload: &str, c: &Connection) -> Decision {
    authorize(snap, ROOT, &target(snap, workload), c)
}

pub(super) fn allowed() -> Decision {
    Decision::Allow { audit: None }
}

pub(super) fn denied(policy: &str, reason: DenyReason) -> Decision {
    Decision::Deny {
        policy: policy.to_string(),
        reason,
    }
}
