//! AuthorizationPolicy at L4.

use super::*;

#[test]
fn no_policy_allows_everything() {
    let snap = snapshot("");
    assert_eq!(
        decide(&snap, "default/reviews", &conn(None, "10.1.0.1")),
        allowed()
    );
}

#[test]
fn an_allow_policy_without_rules_denies_all() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec: {}
"#,
    );
    let d = decide(&snap, "default/reviews", &conn(Some(RATINGS), "10.1.0.1"));
    assert_eq!(d, denied("default/deny-all", DenyReason::NotAllowed));
    assert!(!d.is_allowed());
    // The other namespace has no policy.
    assert_eq!(
        decide(&snap, "other/ratings", &conn(None, "10.1.0.1")),
        allowed()
    );
}

#[test]
fn an_empty_rule_allows_all() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: default}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec: {action: ALLOW, rules: [{}]}
"#,
    );
    assert_eq!(
        decide(&snap, "default/reviews", &conn(None, "10.1.0.1")),
        allowed()
    );
}

#[test]
fn allow_from_one_principal_denies_the_others() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-only, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/other/sa/ratings"]}}]
"#,
    );
    let w = "default/reviews";
    assert_eq!(
        decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")),
        allowed()
    );
    let no = denied("default/ratings-only", DenyReason::NotAllowed);
    assert_eq!(decide(&snap, w, &conn(Some(PRODUCTPAGE), "10.1.0.1")), no);
    assert_eq!(decide(&snap, w, &conn(None, "10.1.0.1")), no);
    // The selector leaves `details` alone.
    assert_eq!(
        decide(&snap, "default/details", &conn(None, "10.1.0.1")),
        allowed()
    );
}

#[test]
fn principal_wildcards() {
    let policy = |principals: &str| {
        snapshot(&format!(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p, namespace: default}}
spec:
  rules: [{{from: [{{source: {{principals: {principals}}}}}]}}]
"#
        ))
    };
    let cases = [
        // `*`: any authenticated peer, never plaintext.
        (r#"["*"]"#, Some(RATINGS), true),
        (r#"["*"]"#, None, false),
        (r#"["cluster.local/ns/other/*"]"#, Some(RATINGS), true),
        (r#"["cluster.local/ns/other/*"]"#, Some(PRODUCTPAGE), false),
        (r#"["*/sa/productpage"]"#, Some(PRODUCTPAGE), true),
        (r#"["*/sa/productpage"]"#, Some(RATINGS), false),
    ];
    for (principals, peer, allow) in cases {
        let snap = policy(principals);
        let d = decide(&snap, "default/reviews", &conn(peer, "10.1.0.1"));
        assert_eq!(d.is_allowed(), allow, "{principals} for {peer:?}: {d:?}");
    }
}

#[test]
fn deny_on_not_namespaces_also_denies_plaintext() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: same-namespace-only, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {notNamespaces: [default]}}]}]
"#,
    );
    let w = "default/reviews";
    let no = denied("default/same-namespace-only", DenyReason::DenyPolicy);
    assert_eq!(decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")), no);
    assert_eq!(
        decide(&snap, w, &conn(Some(PRODUCTPAGE), "10.1.0.1")),
        allowed()
    );
    // Plaintext has no namespace, so it is "not in default" (Istio: DENY with a negative
    // source field catches plaintext).
    assert_eq!(decide(&snap, w, &conn(None, "10.1.0.1")), no);
}

#[test]
fn ip_blocks_v4_and_v6() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-nets, namespace: default}
spec:
  rules:
  - from: [{source: {ipBlocks: ["10.1.0.0/16", "192.168.1.7", "2001:db8::/32"], notIpBlocks: ["10.1.9.0/24"]}}]
"#,
    );
    let cases = [
        ("10.1.2.3", true),
        ("10.2.0.1", false),
        ("10.1.9.9", false),
        ("192.168.1.7", true),
        ("192.168.1.8", false),
        ("2001:db8:1::5", true),
        ("2001:db9::5", false),
        // A dual-stack socket's view of an IPv4 peer.
        ("::ffff:10.1.2.3", true),
    ];
    for (src, allow) in cases {
        let d = decide(&snap, "default/reviews", &conn(Some(RATINGS), src));
        assert_eq!(d.is_allowed(), allow, "{src}: {d:?}");
    }
}

#[test]
fn remote_ip_blocks_match_the_remote_address() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: block-remote, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {remoteIpBlocks: ["203.0.113.0/24"]}}]}]
"#,
    );
    let mut c = conn(None, "10.1.0.1");
    assert_eq!(decide(&snap, "default/reviews", &c), allowed());
    c.remote_ip = ip("203.0.113.9");
    assert_eq!(
        decide(&snap, "default/reviews", &c),
        denied("default/block-remote", DenyReason::DenyPolicy)
    );
}

#[test]
fn ports_and_not_ports() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ports, namespace: default}
spec:
  rules:
  - to: [{operation: {ports: ["8080", "9080"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-admin, namespace: other}
spec:
  rules:
  - to: [{operation: {notPorts: ["15000"]}}]
"#,
    );
    let ok = |w: &str, port| decide(&snap, w, &conn_to(None, "10.1.0.1", port)).is_allowed();
    assert!(ok("default/reviews", 8080));
    assert!(ok("default/reviews", 9080));
    assert!(!ok("default/reviews", 9090));
    assert!(ok("other/ratings", 9090));
    assert!(!ok("other/ratings", 15000));
}

#[test]
fn when_source_namespace_and_other_l4_conditions() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-other, namespace: default}
spec:
  rules:
  - when:
    - {key: source.namespace, values: [other]}
    - {key: destination.port, notValues: ["9999"]}
    - {key: destination.ip, values: ["10.0.0.0/24"]}
    - {key: source.principal, values: ["*/sa/ratings"]}
    - {key: source.ip, values: ["10.1.0.0/16"]}
    - {key: remote.ip, notValues: ["10.1.7.7"]}
"#,
    );
    let w = "default/reviews";
    assert!(decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")).is_allowed());
    assert!(!decide(&snap, w, &conn(Some(PRODUCTPAGE), "10.1.0.1")).is_allowed());
    assert!(!decide(&snap, w, &conn(None, "10.1.0.1")).is_allowed());
    assert!(!decide(&snap, w, &conn_to(Some(RATINGS), "10.1.0.1", 9999)).is_allowed());
    assert!(!decide(&snap, w, &conn(Some(RATINGS), "10.2.0.1")).is_allowed());
    assert!(!decide(&snap, w, &conn(Some(RATINGS), "10.1.7.7")).is_allowed());
}

#[test]
fn service_accounts_default_to_the_policy_namespace() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sa, namespace: default}
spec:
  rules: [{from: [{source: {serviceAccounts: [productpage, other/ratings]}}]}]
"#,
    );
    let w = "default/reviews";
    assert!(decide(&snap, w, &conn(Some(PRODUCTPAGE), "10.1.0.1")).is_allowed());
    assert!(decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")).is_allowed());
    let stranger = Some("cluster.local/ns/other/sa/productpage");
    assert!(!decide(&snap, w, &conn(stranger, "10.1.0.1")).is_allowed());
}

#[test]
fn audit_is_recorded_and_changes_nothing() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-ratings, namespace: default}
spec:
  action: AUDIT
  rules: [{from: [{source: {namespaces: [other]}}]}]
"#,
    );
    let w = "default/reviews";
    assert_eq!(
        decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")),
        Decision::Allow {
            audit: Some("default/audit-ratings".into())
        }
    );
    assert_eq!(
        decide(&snap, w, &conn(Some(PRODUCTPAGE), "10.1.0.1")),
        allowed()
    );
}

#[test]
fn allow_with_http_methods_never_matches_at_l4() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: default}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
"#,
    );
    let d = decide(&snap, "default/reviews", &conn(Some(RATINGS), "10.1.0.1"));
    assert_eq!(d, denied("default/get-only", DenyReason::L7OnlyRule));
}

#[test]
fn an_l4_rule_still_allows_beside_a_skipped_http_rule() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mixed, namespace: default}
spec:
  rules:
  - when: [{key: "request.headers[x-user]", values: [admin]}]
  - from: [{source: {namespaces: [other]}}]
"#,
    );
    let w = "default/reviews";
    assert!(decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")).is_allowed());
    assert_eq!(
        decide(&snap, w, &conn(Some(PRODUCTPAGE), "10.1.0.1")),
        denied("default/mixed", DenyReason::L7OnlyRule)
    );
}

#[test]
fn connection_sni_needs_a_waypoint() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sni, namespace: default}
spec:
  rules: [{when: [{key: connection.sni, values: [reviews.default]}]}]
"#,
    );
    assert_eq!(
        decide(&snap, "default/reviews", &conn(Some(RATINGS), "10.1.0.1")),
        denied("default/sni", DenyReason::L7OnlyRule)
    );
}

#[test]
fn deny_with_http_paths_denies_everyone() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  action: DENY
  rules:
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {paths: [/admin]}}]
"#,
    );
    let no = denied("default/no-admin", DenyReason::L7OnlyRule);
    for c in [conn(Some(RATINGS), "10.1.0.1"), conn(None, "10.2.0.1")] {
        assert_eq!(decide(&snap, "default/reviews", &c), no);
    }
}

#[test]
fn deny_keeps_the_l4_part_of_an_http_rule() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin-from-other, namespace: default}
spec:
  action: DENY
  rules:
  - from: [{source: {namespaces: [other]}}]
    to: [{operation: {paths: [/admin], ports: ["8080"]}}]
"#,
    );
    let w = "default/reviews";
    let no = denied("default/no-admin-from-other", DenyReason::L7OnlyRule);
    assert_eq!(decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")), no);
    assert!(decide(&snap, w, &conn_to(Some(RATINGS), "10.1.0.1", 9080)).is_allowed());
    assert!(decide(&snap, w, &conn(Some(PRODUCTPAGE), "10.1.0.1")).is_allowed());
}

#[test]
fn deny_wins_over_allow() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-plaintext, namespace: istio-system}
spec:
  action: DENY
  rules: [{from: [{source: {notPrincipals: ["*"]}}]}]
"#,
    );
    let w = "default/reviews";
    assert!(decide(&snap, w, &conn(Some(RATINGS), "10.1.0.1")).is_allowed());
    assert_eq!(
        decide(&snap, w, &conn(None, "10.1.0.1")),
        denied("istio-system/no-plaintext", DenyReason::DenyPolicy)
    );
}

#[test]
fn policies_reach_their_namespace_and_the_root_namespace_only() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: other}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-reviews, namespace: istio-system}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {ports: ["9999"]}}]}]
"#,
    );
    let c = conn(Some(RATINGS), "10.1.0.1");
    assert!(decide(&snap, "default/reviews", &c).is_allowed());
    assert_eq!(
        decide(&snap, "other/ratings", &c),
        denied("other/deny-all", DenyReason::NotAllowed)
    );
    // The root-namespace policy reaches `reviews` in `default` through its selector.
    let c = conn_to(Some(RATINGS), "10.1.0.1", 9999);
    assert_eq!(
        decide(&snap, "default/reviews", &c),
        denied("istio-system/mesh-reviews", DenyReason::DenyPolicy)
    );
    assert!(decide(&snap, "default/details", &c).is_allowed());
}

#[test]
fn target_ref_policies_are_for_waypoints() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint-deny-all, namespace: default}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: service-deny, namespace: default}
spec:
  targetRef: {kind: Service, group: "", name: reviews}
  action: DENY
  rules: [{}]
"#,
    );
    assert!(decide(&snap, "default/reviews", &conn(None, "10.1.0.1")).is_allowed());
}

#[test]
fn custom_fails_closed() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  action: CUSTOM
  provider: {name: my-authz}
  rules: [{to: [{operation: {paths: [/api]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec: {rules: [{}]}
"#,
    );
    let d = decide(&snap, "default/reviews", &conn(Some(RATINGS), "10.1.0.1"));
    assert_eq!(
        d,
        denied("default/ext-authz", DenyReason::CustomUnsupported)
    );
    assert!(DenyReason::CustomUnsupported.to_string().contains("CUSTOM"));
}
