//! Per-route actions, delegation, refusals, and L7 authorization.

use super::*;

const REVIEWS_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: api
    match:
    - uri: {prefix: /api/v1}
      method: {exact: GET}
      queryParams: {debug: {exact: "1"}}
    rewrite: {uri: /v2, authority: reviews-internal}
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,409,unavailable"}
    headers:
      request: {set: {x-route: api}, remove: [x-debug]}
      response: {add: {x-served-by: mesh}}
    route:
    - destination: {host: reviews, subset: v2}
      headers: {request: {set: {x-subset: v2}}}
  - match:
    - uri: {regex: "/old/[0-9]+"}
    redirect: {uri: /new, authority: new.example.com, redirectCode: 308}
  - match:
    - uri: {exact: /teapot}
      withoutHeaders: {x-brew: {exact: "no"}}
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match:
    - uri: {prefix: /Admin}
      ignoreUriCase: true
      sourceLabels: {app: productpage}
    route: [{destination: {host: reviews, subset: v3}}]
  - match:
    - uri: {prefix: /rx}
    rewrite:
      uriRegexRewrite: {match: "^/rx/([^/]+)/(.*)$", rewrite: "/\\2/\\1"}
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}, {regex: "https://.*\\.trusted\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      maxAge: 1h
      allowCredentials: true
    mirror: {host: ratings}
    mirrorPercentage: {value: 50}
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#;

#[test]
fn retries_timeout_rewrite_and_headers_of_a_matched_rule() {
    let table = bookinfo_with_yaml(&format!("{}\n---\n{REVIEWS_VS}", destination_rule_all()));
    let (state, mut rng) = (LbState::new(), rng());
    let h = headers(&[("x-debug", "1")]);
    let req = get("reviews", "/api/v1/items?debug=1", &h);
    let d = table.decide(&req, &state, &mut rng, Instant::now());
    let f = d.forward().expect("forward");
    assert_eq!(f.route.rule.name.as_deref(), Some("api"));
    assert_eq!(f.cluster.subset.as_deref(), Some("v2"));
    assert_eq!(f.timeout, Some(Duration::from_secs(10)));
    assert_eq!(f.retry.attempts, 3);
    assert_eq!(f.retry.per_try_timeout, Some(Duration::from_secs(2)));
    assert!(f.retry.retry_on.contains(RetryCondition::Http5xx));
    assert!(f.retry.retry_on.contains(RetryCondition::ConnectFailure));
    assert!(f.retry.retry_on.contains(RetryCondition::GrpcUnavailable));
    assert!(!f.retry.retry_on.contains(RetryCondition::Reset));
    assert_eq!(f.retry.retry_on.status_codes(), [409]);
    let resp = |status| AttemptOutcome::Response {
        status,
        grpc_status: None,
    };
    assert!(f.retry.should_retry(1, resp(503)));
    assert!(f.retry.should_retry(3, AttemptOutcome::ConnectFailure));
    assert!(
        !f.retry.should_retry(4, resp(503)),
        "3 retries, then no more"
    );
    assert!(f.retry.should_retry(1, resp(409)));
    assert!(!f.retry.should_retry(1, resp(404)));
    assert!(f.retry.should_retry(
        1,
        AttemptOutcome::Response {
            status: 200,
            grpc_status: Some(14)
        }
    ));
    // Envoy's `5xx` covers an upstream that reset without answering.
    assert!(f.retry.should_retry(1, AttemptOutcome::Reset));
    let gateway_only = RetryOn::parse("gateway-error").expect("parses");
    let policy = RetryPolicy {
        retry_on: gateway_only,
        ..f.retry.clone()
    };
    assert!(!policy.retriable(AttemptOutcome::Reset));
    assert!(!policy.retriable(resp(500)));
    assert!(policy.retriable(resp(504)));
    assert!(policy.retriable(AttemptOutcome::PerTryTimeout));
    assert_eq!(f.path.as_deref(), Some("/v2/items?debug=1"));
    assert_eq!(f.authority, Some("reviews-internal"));
    let mut upstream_headers = h.clone();
    f.apply_request_headers(&mut upstream_headers);
    assert_eq!(
        upstream_headers.get("x-route").map(|v| v.as_bytes()),
        Some(&b"api"[..])
    );
    assert_eq!(
        upstream_headers.get("x-subset").map(|v| v.as_bytes()),
        Some(&b"v2"[..])
    );
    assert!(upstream_headers.get("x-debug").is_none());
    let mut response_headers = HeaderMap::new();
    f.apply_response_headers(&mut response_headers);
    assert_eq!(
        response_headers.get("x-served-by").map(|v| v.as_bytes()),
        Some(&b"mesh"[..])
    );

    // Without the query parameter, or as a POST, the first rule does not match.
    for (method, path) in [("GET", "/api/v1/items"), ("POST", "/api/v1/items?debug=1")] {
        let mut r = get("reviews", path, &h);
        r.method = method;
        assert_eq!(
            table.route(&r).map(|r| r.rule.index),
            Ok(5),
            "{method} {path}"
        );
    }
    // A rule without `retries` gets Istio's default policy.
    let none = HeaderMap::new();
    let route = table.route(&get("reviews", "/", &none)).expect("route");
    assert_eq!(route.rule.retry, RetryPolicy::istio_default());
    assert_eq!(route.rule.timeout, None);
}

#[test]
fn redirect_direct_response_match_conditions_cors_and_mirror() {
    let table = bookinfo_with_yaml(&format!("{}\n---\n{REVIEWS_VS}", destination_rule_all()));
    let (state, mut rng) = (LbState::new(), rng());
    let none = HeaderMap::new();
    let decide =
        |req: &Request, rng: &mut fastrand::Rng| table.decide(req, &state, rng, Instant::now());

    let d = decide(&get("reviews:9080", "/old/42?x=1", &none), &mut rng);
    let r = d.reply().expect("redirect");
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers,
        [(
            http::header::LOCATION,
            HeaderValue::from_static("http://new.example.com/new")
        )]
    );
    // Regex is a full match.
    assert_eq!(
        table
            .route(&get("reviews", "/old/42/x", &none))
            .map(|r| r.rule.index),
        Ok(5)
    );

    let d = decide(&get("reviews", "/teapot", &none), &mut rng);
    let r = d.reply().expect("direct response");
    assert_eq!(
        (r.status.as_u16(), r.body.as_slice()),
        (418, &b"short and stout"[..])
    );
    let brew_no = headers(&[("x-brew", "no")]);
    assert_eq!(
        table
            .route(&get("reviews", "/teapot", &brew_no))
            .map(|r| r.rule.index),
        Ok(5)
    );

    // ignoreUriCase and sourceLabels.
    let labels = std::collections::BTreeMap::from([("app".to_string(), "productpage".to_string())]);
    let mut from_productpage = get("reviews", "/ADMIN/users", &none);
    from_productpage.source.labels = Some(&labels);
    assert_eq!(table.route(&from_productpage).map(|r| r.rule.index), Ok(3));
    assert_eq!(
        table
            .route(&get("reviews", "/ADMIN/users", &none))
            .map(|r| r.rule.index),
        Ok(5)
    );

    // CORS: a preflight from an allowed origin is answered here.
    let preflight_headers = headers(&[
        ("origin", "https://app.trusted.example"),
        ("access-control-request-method", "POST"),
    ]);
    let mut preflight = get("reviews", "/rx/a/b", &preflight_headers);
    preflight.method = "OPTIONS";
    let d = decide(&preflight, &mut rng);
    let r = d.reply().expect("preflight answered");
    assert_eq!(r.status, StatusCode::OK);
    let get_header = |name: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap_or_default())
    };
    assert_eq!(
        get_header("access-control-allow-origin"),
        Some("https://app.trusted.example")
    );
    assert_eq!(get_header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(get_header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(get_header("access-control-max-age"), Some("3600"));
    assert_eq!(get_header("access-control-allow-credentials"), Some("true"));
    // An origin not allowed: the preflight is forwarded, untouched.
    let evil = headers(&[
        ("origin", "https://evil.example"),
        ("access-control-request-method", "POST"),
    ]);
    let mut preflight = get("reviews", "/rx/a/b", &evil);
    preflight.method = "OPTIONS";
    assert!(decide(&preflight, &mut rng).forward().is_some());

    // The regex rewrite and the 50% mirror on an actual request from the allowed origin.
    let origin = headers(&[("origin", "https://shop.example")]);
    let mut mirrored = 0;
    for _ in 0..2000 {
        let d = decide(&get("reviews", "/rx/a/b?q", &origin), &mut rng);
        let f = d.forward().expect("forward");
        assert_eq!(f.path.as_deref(), Some("/b/a?q"));
        assert_eq!(f.cors_headers[0].1, "https://shop.example");
        if let Some(m) = f.mirrors.first() {
            assert_eq!(m.host, "ratings.default.svc.cluster.local");
            mirrored += 1;
        }
    }
    assert!(
        (900..=1100).contains(&mirrored),
        "{mirrored} of 2000 mirrored"
    );
}

#[test]
fn delegate_rules_apply_under_the_root_rule() {
    let table = bookinfo_with_yaml(&format!(
        "{}\n---\n{}",
        destination_rule_all(),
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /team}}]
    delegate: {name: team-routes, namespace: default}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: team-routes, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /team/beta}}]
    route: [{destination: {host: reviews, subset: v3}}]
"#
    ));
    let none = HeaderMap::new();
    let route = table
        .route(&get("reviews", "/team/beta/x", &none))
        .expect("route");
    assert_eq!(route.virtual_service, Some("default/team-routes"));
    // Nothing in the delegate matched: the root's next rule.
    let route = table
        .route(&get("reviews", "/team/alpha", &none))
        .expect("route");
    assert_eq!(
        (route.virtual_service, route.rule.index),
        (Some("default/reviews-root"), 1)
    );
}

#[test]
fn bad_regex_and_missing_delegate_refuse_the_table_naming_the_field() {
    let err = try_bookinfo_with_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
  - match: [{headers: {x-user: {regex: "(unclosed"}}}]
    route: [{destination: {host: reviews}}]
"#,
    )
    .expect_err("bad regex refused");
    let text = err.to_string();
    assert!(matches!(err, L7ConfigError::Regex { .. }), "{text}");
    assert!(text.contains("default/bad"), "{text}");
    assert!(
        text.contains("spec.http[1].match[0].headers.x-user.regex"),
        "{text}"
    );

    let err = try_bookinfo_with_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - delegate: {name: nowhere}
"#,
    )
    .expect_err("missing delegate refused");
    assert!(
        err.to_string()
            .contains("delegate default/nowhere does not exist"),
        "{err}"
    );

    let err = try_bookinfo_with_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: retry, namespace: default}
spec:
  hosts: [reviews]
  http:
  - retries: {attempts: 2, retryOn: "5xx,sometimes"}
    route: [{destination: {host: reviews}}]
"#,
    )
    .expect_err("unknown retryOn refused");
    assert!(err.to_string().contains("spec.http[0].retries"), "{err}");
    assert!(err.to_string().contains("sometimes"), "{err}");
}

#[test]
fn l7_authorization_allows_and_denies_by_path_method_and_header() {
    let table = bookinfo_with_yaml(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]
    to: [{operation: {methods: [GET], paths: ["/reviews/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-test-users, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: DENY
  rules:
  - when: [{key: "request.headers[end-user]", values: ["test-*"]}]
"#,
    );
    let scope = mesh_config::authz::PolicyScope::Waypoint {
        namespace: "default",
        name: "waypoint",
        service: Some(("default", "reviews")),
    };
    let destination = ("198.19.0.10".parse().expect("ip"), 9080);
    fn request<'a>(method: &'a str, path: &'a str, h: &'a HeaderMap) -> Request<'a> {
        let mut r = get("reviews", path, h);
        r.method = method;
        r.source.principal = Some("cluster.local/ns/default/sa/bookinfo-productpage");
        r
    }
    let jason = &headers(&[("end-user", "jason")]);
    let tester = &headers(&[("end-user", "test-1")]);
    assert_eq!(
        table.authorize(&scope, &request("GET", "/reviews/0", jason), destination),
        Ok(Allowed { audit: None })
    );
    for (method, path, h, policy) in [
        ("POST", "/reviews/0", jason, "default/reviews-readers"),
        ("GET", "/admin", jason, "default/reviews-readers"),
        ("GET", "/reviews/0", tester, "default/no-test-users"),
    ] {
        let denied = table
            .authorize(&scope, &request(method, path, h), destination)
            .expect_err("denied");
        assert_eq!(denied.policy, policy);
        assert_eq!(denied.reply().status, StatusCode::FORBIDDEN);
        assert_eq!(denied.reply().body, RBAC_DENIED_BODY.as_bytes());
        assert_eq!(RBAC_DENIED_BODY, "RBAC: access denied");
    }
    // Another identity is not among the principals.
    let mut other = request("GET", "/reviews/0", jason);
    other.source.principal = Some("cluster.local/ns/default/sa/bookinfo-ratings");
    assert!(table.authorize(&scope, &other, destination).is_err());
}

pub(crate) fn destination_rule_all() -> String {
    std::fs::read_to_string(fixture("istio-bookinfo/destination-rule-all.yaml")).expect("fixture")
}

#[test]
fn exact_hosts_win_over_wildcards_and_export_to_hides_from_other_namespaces() {
    let table = bookinfo_with_yaml(&format!(
        "{}\n---\n{}",
        destination_rule_all(),
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything, namespace: default}
spec:
  hosts: ["*.default.svc.cluster.local"]
  http:
  - route: [{destination: {host: reviews, subset: v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  exportTo: ["."]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
"#
    ));
    let none = HeaderMap::new();
    let vs_of = |req: &Request| table.route(req).map(|r| r.virtual_service);
    assert_eq!(
        vs_of(&get("reviews", "/", &none)),
        Ok(Some("default/reviews"))
    );
    assert_eq!(
        vs_of(&get("ratings", "/", &none)),
        Ok(Some("default/everything"))
    );
    // From another namespace `reviews` is not exported: the wildcard applies (written as
    // the FQDN, since `reviews` alone would be that namespace's own).
    let mut other = get("reviews.default.svc.cluster.local", "/", &none);
    other.source.namespace = Some("other");
    assert_eq!(vs_of(&other), Ok(Some("default/everything")));
    // A host nothing knows and no wildcard matches.
    assert_eq!(
        table.route(&get("unknown.example.org", "/", &none)).err(),
        Some(ResponseFlag::NoRoute)
    );
}
