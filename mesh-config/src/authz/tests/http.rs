//! AuthorizationPolicy for one HTTP request (waypoints and gateways).

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::*;

struct Headers(BTreeMap<&'static str, &'static str>);

impl RequestHeaders for Headers {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0.get(name).map(|v| Cow::Borrowed(*v))
    }
}

const WAYPOINT: PolicyScope<'static> = PolicyScope::Waypoint {
    namespace: "default",
    name: "waypoint",
    service: Some(("default", "reviews")),
};

fn request<'a>(method: &'a str, path: &'a str, headers: &'a Headers) -> HttpRequest<'a> {
    HttpRequest {
        method,
        path,
        host: "reviews.default.svc.cluster.local:9080",
        headers,
    }
}

fn decide_http(snap: &Snapshot, scope: &PolicyScope, req: &HttpRequest) -> Decision {
    authorize_request(snap, ROOT, scope, &conn(Some(PRODUCTPAGE), "10.1.0.1"), req)
}

const GET_ONLY_FOR_REVIEWS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: ALLOW
  rules:
  - to:
    - operation: {methods: [GET], paths: ["/reviews/*", /health], notPaths: [/reviews/secret]}
"#;

#[test]
fn methods_and_paths_of_a_service_policy_decide_at_the_waypoint() {
    let snap = snapshot(GET_ONLY_FOR_REVIEWS);
    let none = Headers(BTreeMap::new());
    assert_eq!(
        decide_http(&snap, &WAYPOINT, &request("GET", "/reviews/1", &none)),
        allowed()
    );
    assert_eq!(
        decide_http(&snap, &WAYPOINT, &request("GET", "/health", &none)),
        allowed()
    );
    let not_allowed = denied("default/get-only", DenyReason::NotAllowed);
    for (method, path) in [
        ("POST", "/reviews/1"),
        ("GET", "/ratings/1"),
        ("GET", "/reviews/secret"),
    ] {
        assert_eq!(
            decide_http(&snap, &WAYPOINT, &request(method, path, &none)),
            not_allowed,
            "{method} {path}"
        );
    }
    // Another Service behind the same waypoint is not covered by the policy.
    let details = PolicyScope::Waypoint {
        namespace: "default",
        name: "waypoint",
        service: Some(("default", "details")),
    };
    assert_eq!(
        decide_http(&snap, &details, &request("POST", "/x", &none)),
        allowed()
    );
    // At L4 the same policy is the waypoint's business, not the workload's.
    assert_eq!(
        decide(
            &snap,
            "default/reviews",
            &conn(Some(PRODUCTPAGE), "10.1.0.1")
        ),
        allowed()
    );
}

#[test]
fn deny_on_a_request_header_and_hosts_of_a_waypoint_policy() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-bots, namespace: default}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - to: [{operation: {hosts: ["REVIEWS.default.svc.cluster.local"]}}]
    when:
    - key: request.headers[user-agent]
      values: ["bot-*"]
"#,
    );
    let bot = Headers(BTreeMap::from([("user-agent", "bot-crawler")]));
    let human = Headers(BTreeMap::from([("user-agent", "curl/8")]));
    assert_eq!(
        decide_http(&snap, &WAYPOINT, &request("GET", "/", &bot)),
        denied("default/no-bots", DenyReason::DenyPolicy)
    );
    assert_eq!(
        decide_http(&snap, &WAYPOINT, &request("GET", "/", &human)),
        allowed()
    );
    let mut other_host = request("GET", "/", &bot);
    other_host.host = "details";
    assert_eq!(decide_http(&snap, &WAYPOINT, &other_host), allowed());
}

#[test]
fn a_gateway_pod_is_chosen_by_selector_and_jwt_principals_never_match() {
    let snap = snapshot(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: jwt-only, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {requestPrincipals: ["*"]}}]
  - to: [{operation: {paths: [/public]}}]
"#,
    );
    let none = Headers(BTreeMap::new());
    let pod = PolicyScope::Workload(target(&snap, "default/reviews"));
    assert_eq!(
        decide_http(&snap, &pod, &request("GET", "/private", &none)),
        denied("default/jwt-only", DenyReason::NotAllowed)
    );
    assert_eq!(
        decide_http(&snap, &pod, &request("GET", "/public", &none)),
        allowed()
    );
}
