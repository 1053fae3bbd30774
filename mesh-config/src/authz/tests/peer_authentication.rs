//! PeerAuthentication: the effective mTLS mode.

use super::*;

#[test]
fn mtls_defaults_to_permissive() {
    let snap = snapshot("");
    let d = mtls_decision(&snap, ROOT, &target(&snap, "default/reviews"), 8080);
    assert_eq!(
        d,
        MtlsDecision {
            mode: MtlsMode::Permissive,
            policy: None
        }
    );
    assert!(d.mode.allows_plaintext());
}

const LAYERED_MTLS: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: DISABLE}
  portLevelMtls:
    "9080": {mode: STRICT}
    "9090": {mode: UNSET}
"#;

#[test]
fn mesh_strict_then_namespace_permissive_then_workload_disable_with_port_level() {
    let snap = snapshot(LAYERED_MTLS);
    let mode = |w: &str, port| mtls_mode(&snap, ROOT, &target(&snap, w), port);
    // Mesh-wide STRICT reaches a namespace with no policy of its own.
    assert_eq!(mode("other/ratings", 8080), MtlsMode::Strict);
    // The namespace's PERMISSIVE overrides it.
    assert_eq!(mode("default/details", 8080), MtlsMode::Permissive);
    // The workload's DISABLE overrides that, and its port-level STRICT overrides that.
    assert_eq!(mode("default/reviews", 8080), MtlsMode::Disable);
    assert_eq!(mode("default/reviews", 9080), MtlsMode::Strict);
    // A port-level UNSET inherits the workload's mode.
    assert_eq!(mode("default/reviews", 9090), MtlsMode::Disable);
    let d = mtls_decision(&snap, ROOT, &target(&snap, "default/reviews"), 9080);
    assert_eq!(d.policy.as_deref(), Some("default/reviews"));
    let d = mtls_decision(&snap, ROOT, &target(&snap, "other/ratings"), 8080);
    assert_eq!(d.policy.as_deref(), Some("istio-system/mesh"));
}

#[test]
fn unset_inherits_and_port_level_overrides_an_inherited_mode() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: default}
spec: {mtls: {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {"9080": {mode: PERMISSIVE}}
"#,
    );
    let mode = |w: &str, port| mtls_mode(&snap, ROOT, &target(&snap, w), port);
    assert_eq!(mode("default/details", 8080), MtlsMode::Strict);
    assert_eq!(mode("default/reviews", 8080), MtlsMode::Strict);
    assert_eq!(mode("default/reviews", 9080), MtlsMode::Permissive);
}

#[test]
fn first_policy_by_name_wins_a_tie_and_root_selector_policies_are_ignored() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a, namespace: default}
spec: {selector: {matchLabels: {}}, mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: istio-system}
spec: {selector: {matchLabels: {app: ratings}}, mtls: {mode: STRICT}}
"#,
    );
    // `a` (empty matchLabels = namespace-wide) sorts before `b`.
    let d = mtls_decision(&snap, ROOT, &target(&snap, "default/details"), 8080);
    assert_eq!(d.mode, MtlsMode::Strict);
    assert_eq!(d.policy.as_deref(), Some("default/a"));
    assert_eq!(
        mtls_mode(&snap, ROOT, &target(&snap, "other/ratings"), 8080),
        MtlsMode::Permissive
    );
}

#[test]
fn the_root_namespace_is_a_parameter() {
    let snap = snapshot(LAYERED_MTLS);
    let ratings = target(&snap, "other/ratings");
    assert_eq!(
        mtls_mode(&snap, "mesh-root", &ratings, 8080),
        MtlsMode::Permissive
    );
}
