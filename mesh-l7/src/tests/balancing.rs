//! Load balancing policies, merged DestinationRules, connection limits, outlier detection.

use super::*;

/// Three reviews endpoints (v1, v2, v3) behind one policy.
fn reviews_with_policy(policy: &str) -> RouteTable {
    bookinfo_with_yaml(&format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy:
{policy}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy:
      loadBalancer: {{simple: RANDOM}}
"#
    ))
}

fn workload_for(
    table: &RouteTable,
    h: &HeaderMap,
    state: &LbState,
    rng: &mut fastrand::Rng,
) -> String {
    upstream(table, &get("reviews", "/", h), state, rng).1
}

#[test]
fn consistent_hash_keeps_a_header_value_on_one_endpoint_and_spreads_values() {
    let table = reviews_with_policy("    loadBalancer: {consistentHash: {httpHeaderName: x-user}}");
    let cluster = table
        .cluster("reviews.default.svc.cluster.local", None, 9080)
        .expect("cluster");
    assert_eq!(cluster.endpoints.len(), 3);
    let (state, mut rng) = (LbState::new(), rng());
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..60 {
        let h = headers(&[("x-user", &format!("user-{user}"))]);
        let first = workload_for(&table, &h, &state, &mut rng);
        for _ in 0..20 {
            assert_eq!(
                workload_for(&table, &h, &state, &mut rng),
                first,
                "user-{user} moved"
            );
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "60 users all land on {seen:?}");
    // The same value lands on the same endpoint in a table built again (another replica,
    // or after a config change).
    let again = reviews_with_policy("    loadBalancer: {consistentHash: {httpHeaderName: x-user}}");
    let h = headers(&[("x-user", "user-7")]);
    assert_eq!(
        workload_for(&table, &h, &state, &mut rng),
        workload_for(&again, &h, &LbState::new(), &mut rng)
    );
    // The subset overrides the top-level policy.
    let v1 = table
        .cluster("reviews.default.svc.cluster.local", Some("v1"), 9080)
        .expect("v1 cluster");
    assert_eq!(v1.policy.lb, policy::LbPolicy::Random);
}

#[test]
fn cookie_source_ip_and_query_parameter_hashes() {
    for (policy, h, req_ip, path) in [
        (
            "{httpCookie: {name: session, ttl: 0s}}",
            headers(&[("cookie", "a=1; session=abc")]),
            None,
            "/",
        ),
        (
            "{useSourceIp: true}",
            HeaderMap::new(),
            Some("198.18.1.7"),
            "/",
        ),
        (
            "{httpQueryParameterName: shard}",
            HeaderMap::new(),
            None,
            "/x?shard=9",
        ),
    ] {
        let table = reviews_with_policy(&format!("    loadBalancer: {{consistentHash: {policy}}}"));
        let (state, mut rng) = (LbState::new(), rng());
        let mut req = get("reviews", path, &h);
        req.source.ip = req_ip.map(|ip| ip.parse().expect("ip"));
        let first = upstream(&table, &req, &state, &mut rng).1;
        for _ in 0..30 {
            assert_eq!(
                upstream(&table, &req, &state, &mut rng).1,
                first,
                "{policy}"
            );
        }
    }
}

#[test]
fn round_robin_by_default_and_least_request_avoids_busy_endpoints() {
    let table = bookinfo(&[]);
    let (state, mut rng, h) = (LbState::new(), rng(), HeaderMap::new());
    let turns: Vec<String> = (0..6)
        .map(|_| workload_for(&table, &h, &state, &mut rng))
        .collect();
    assert_eq!(turns[..3], turns[3..], "round robin repeats");
    let distinct: std::collections::BTreeSet<_> = turns.iter().collect();
    assert_eq!(distinct.len(), 3);

    let table = reviews_with_policy("    loadBalancer: {simple: LEAST_REQUEST}");
    let cluster = table
        .cluster("reviews.default.svc.cluster.local", None, 9080)
        .expect("cluster");
    let busy = &cluster.endpoints[0];
    let _held: Vec<_> = (0..5).map(|_| state.begin(cluster, busy)).collect();
    assert_eq!(state.active(cluster, busy), 5);
    let mut on_busy = 0;
    for _ in 0..300 {
        if workload_for(&table, &h, &state, &mut rng) == busy.key.as_ref() {
            on_busy += 1;
        }
    }
    // Two choices: the busy one wins only when drawn twice (1/9 of the time).
    assert!(on_busy < 60, "{on_busy} of 300 on the busy endpoint");
    drop(_held);
    assert_eq!(state.active(cluster, busy), 0);
}

#[test]
fn destination_rules_merge_and_connection_pool_limits() {
    let table = bookinfo_with_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-subsets, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 5, maxRetries: 3}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-more, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
  subsets:
  - {name: v1, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"#,
    );
    let host = "reviews.default.svc.cluster.local";
    // The first rule's traffic policy and v1; the second rule adds v3.
    let v1 = table.cluster(host, Some("v1"), 9080).expect("v1");
    assert_eq!(v1.endpoints.len(), 1);
    assert_eq!(
        v1.endpoints[0].workload.as_deref(),
        Some("default/reviews-v1-0")
    );
    let v3 = table.cluster(host, Some("v3"), 9080).expect("v3");
    assert_eq!(
        v3.endpoints[0].workload.as_deref(),
        Some("default/reviews-v3-0")
    );
    assert_eq!(
        v3.policy.lb,
        policy::LbPolicy::LeastRequest,
        "port level wins"
    );
    let limits = v3.policy.limits;
    assert_eq!(limits.max_connections, 100);
    assert_eq!(limits.connect_timeout, Duration::from_millis(250));
    assert_eq!(limits.max_pending_requests, 10);
    assert_eq!(limits.max_requests, 1000);
    assert_eq!(limits.max_requests_per_connection, 5);
    assert_eq!(limits.max_retries, 3);
    assert_eq!(
        v1.name.as_ref(),
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
}

#[test]
fn outlier_detection_ejects_after_consecutive_errors_and_brings_back_after_the_time() {
    let table = reviews_with_policy(
        "    outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 30s, maxEjectionPercent: 100}",
    );
    let cluster = table
        .cluster("reviews.default.svc.cluster.local", None, 9080)
        .expect("cluster");
    let (state, mut rng, h) = (LbState::new(), rng(), HeaderMap::new());
    let req = get("reviews", "/", &h);
    let t0 = Instant::now();
    let bad = &cluster.endpoints[1];
    let error = AttemptOutcome::Response {
        status: 500,
        grpc_status: None,
    };
    let ok = AttemptOutcome::Response {
        status: 200,
        grpc_status: None,
    };
    assert_eq!(state.report(cluster, bad, error, t0), None);
    // A success in between resets the count.
    assert_eq!(state.report(cluster, bad, ok, t0), None);
    assert_eq!(state.report(cluster, bad, error, t0), None);
    assert_eq!(
        state.report(cluster, bad, AttemptOutcome::ConnectFailure, t0),
        Some(outlier::OutlierEvent::Ejected {
            until: t0 + Duration::from_secs(30)
        })
    );
    let chosen_within = |at: Instant, rng: &mut fastrand::Rng| {
        (0..30)
            .map(|_| {
                cluster
                    .choose(&req, &state, rng, at, &[])
                    .expect("endpoint")
                    .index
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        chosen_within(t0 + Duration::from_secs(29), &mut rng),
        [0, 2].into()
    );
    assert_eq!(
        chosen_within(t0 + Duration::from_secs(30), &mut rng),
        [0, 1, 2].into()
    );
    // Ejected a second time: twice the base time.
    let t1 = t0 + Duration::from_secs(40);
    state.report(cluster, bad, error, t1);
    assert_eq!(
        state.report(cluster, bad, error, t1),
        Some(outlier::OutlierEvent::Ejected {
            until: t1 + Duration::from_secs(60)
        })
    );
    // Everything ejected: no healthy upstream.
    for e in [&cluster.endpoints[0], &cluster.endpoints[2]] {
        state.report(cluster, e, error, t1);
        state.report(cluster, e, error, t1);
    }
    assert_eq!(
        cluster.choose(&req, &state, &mut rng, t1, &[]).err(),
        Some(ResponseFlag::NoHealthyUpstream)
    );
    let d = table.decide(&req, &state, &mut rng, t1);
    assert_eq!(
        d.reply().map(|r| (r.status.as_u16(), r.flag)),
        Some((503, Some(ResponseFlag::NoHealthyUpstream)))
    );
}

#[test]
fn max_ejection_percent_caps_ejections_but_allows_one() {
    let table = reviews_with_policy(
        "    outlierDetection: {consecutiveGatewayErrors: 1, consecutive5xxErrors: 0}",
    );
    let cluster = table
        .cluster("reviews.default.svc.cluster.local", None, 9080)
        .expect("cluster");
    let state = LbState::new();
    let t0 = Instant::now();
    let gateway_error = AttemptOutcome::Response {
        status: 502,
        grpc_status: None,
    };
    let server_error = AttemptOutcome::Response {
        status: 500,
        grpc_status: None,
    };
    // 500 is not a gateway error, and consecutive5xxErrors is off.
    assert_eq!(
        state.report(cluster, &cluster.endpoints[0], server_error, t0),
        None
    );
    // 10% of 3 endpoints rounds to 0, but one may always be ejected.
    assert!(matches!(
        state.report(cluster, &cluster.endpoints[0], gateway_error, t0),
        Some(outlier::OutlierEvent::Ejected { .. })
    ));
    assert_eq!(
        state.report(cluster, &cluster.endpoints[1], gateway_error, t0),
        Some(outlier::OutlierEvent::EjectionCapped)
    );
    assert!(state.is_ejected(cluster, &cluster.endpoints[0], t0));
    assert!(!state.is_ejected(cluster, &cluster.endpoints[1], t0));
}

#[test]
fn a_retry_goes_to_another_endpoint() {
    let table = bookinfo(&[]);
    let cluster = table
        .cluster("reviews.default.svc.cluster.local", None, 9080)
        .expect("cluster");
    let (state, mut rng, h) = (LbState::new(), rng(), HeaderMap::new());
    let req = get("reviews", "/", &h);
    for _ in 0..20 {
        let first = cluster
            .choose(&req, &state, &mut rng, Instant::now(), &[])
            .expect("first");
        let retry = cluster
            .choose(&req, &state, &mut rng, Instant::now(), &[first.index])
            .expect("retry");
        assert_ne!(first.index, retry.index);
    }
}
