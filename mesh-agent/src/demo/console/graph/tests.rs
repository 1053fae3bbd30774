use super::*;

fn samples(text: &str) -> Vec<Sample> {
    let lines = text.lines().map(|l| Ok(l.trim().to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap().samples
}

fn workload(name: &str) -> NodeId {
    NodeId::Workload {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn service(name: &str) -> NodeId {
    NodeId::Service {
        host: format!("{name}.default.svc.cluster.local"),
    }
}

/// What a waypoint serves for productpage's calls to reviews v2 (OpenMetrics, as the
/// proxies encode it), at some moment.
fn waypoint_scrape(ok: u64, failed: u64, fast: u64, slow: u64) -> String {
    let series = |code: u16| {
        format!(
            "reporter=\"waypoint\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",\
             source_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-productpage\",\
             destination_workload=\"reviews-v2\",destination_workload_namespace=\"default\",\
             destination_principal=\"spiffe://cluster.local/ns/default/sa/bookinfo-reviews\",\
             destination_service=\"reviews.default.svc.cluster.local\",destination_service_name=\"reviews\",\
             destination_service_namespace=\"default\",request_protocol=\"http\",response_code=\"{code}\",\
             response_flags=\"-\""
        )
    };
    let ok_series = series(200);
    let total = fast + slow;
    format!(
        "# TYPE istio_requests counter\n\
         istio_requests_total{{{ok_series}}} {ok}\n\
         istio_requests_total{{{}}} {failed}\n\
         # TYPE istio_request_duration_milliseconds histogram\n\
         istio_request_duration_milliseconds_bucket{{{ok_series},le=\"5.0\"}} {fast}\n\
         istio_request_duration_milliseconds_bucket{{{ok_series},le=\"10.0\"}} {fast}\n\
         istio_request_duration_milliseconds_bucket{{{ok_series},le=\"100.0\"}} {total}\n\
         istio_request_duration_milliseconds_bucket{{{ok_series},le=\"+Inf\"}} {total}\n\
         istio_request_duration_milliseconds_sum{{{ok_series}}} 1\n\
         istio_request_duration_milliseconds_count{{{ok_series}}} {total}\n\
         # EOF\n",
        series(503)
    )
}

#[test]
fn a_waypoint_series_is_two_hops_through_the_service() {
    let mut totals = Totals::default();
    totals.add(
        &samples(&waypoint_scrape(9, 1, 10, 0)),
        None,
        &BTreeSet::new(),
    );
    let keys: Vec<(NodeId, NodeId)> = totals
        .edges
        .keys()
        .map(|k| (k.from.clone(), k.to.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (workload("productpage-v1"), service("reviews")),
            (service("reviews"), workload("reviews-v2")),
        ]
    );
    for edge in totals.edges.values() {
        assert_eq!(edge.requests, 10.0);
        assert_eq!(edge.errors, 1.0);
    }
    let [client_hop, endpoint_hop] = [0, 1].map(|i| totals.edges.values().nth(i).unwrap());
    assert!(
        totals.mutual_tls(client_hop),
        "the waypoint verified the client"
    );
    assert!(
        !totals.mutual_tls(endpoint_hop),
        "nothing said how the endpoint was reached"
    );
}

#[test]
fn a_proxy_hop_is_mutual_tls_when_the_proxy_s_agent_says_so() {
    let tcp = |policy: &str| {
        format!(
            "# TYPE istio_tcp_connections_opened counter\n\
             istio_tcp_connections_opened_total{{reporter=\"source\",source_workload=\"waypoint-x\",\
             source_workload_namespace=\"default\",destination_workload=\"reviews-v2\",\
             destination_workload_namespace=\"default\",connection_security_policy=\"{policy}\",\
             response_flags=\"-\"}} 3\n# EOF\n"
        )
    };
    let proxies = BTreeSet::from(["waypoint-x".to_string()]);
    for (policy, expected) in [("mutual_tls", true), ("none", false)] {
        let mut totals = Totals::default();
        totals.add(
            &samples(&waypoint_scrape(9, 1, 10, 0)),
            Some("waypoint-x"),
            &proxies,
        );
        totals.add(&samples(&tcp(policy)), None, &proxies);
        // The proxy's own TCP hop is not an edge of its own.
        assert_eq!(totals.edges.len(), 2);
        let endpoint_hop = totals.edges.values().nth(1).unwrap();
        assert_eq!(totals.mutual_tls(endpoint_hop), expected, "{policy}");
    }
}

#[test]
fn rates_errors_and_p99_are_over_the_window() {
    let proxies = BTreeSet::new();
    let mut before = Totals::default();
    before.add(&samples(&waypoint_scrape(10, 0, 10, 0)), None, &proxies);
    let mut after = Totals::default();
    // 20 more requests in 10 s, 5 of them 503, 10 of them between 10 and 100 ms.
    after.add(&samples(&waypoint_scrape(25, 5, 20, 10)), None, &proxies);
    let graph = Graph::between(&before, &after, 10.0);
    assert_eq!(graph.nodes.len(), 3);
    let edge = &graph.edges[0];
    assert_eq!(edge.total_requests, 30.0);
    assert!((edge.requests_per_second - 2.0).abs() < 1e-9, "{edge:?}");
    assert!((edge.error_rate - 0.25).abs() < 1e-9, "{edge:?}");
    // Rank 0.99 × 20 = 19.8 of the window's 20: inside (10, 100], 9.8 of its 10.
    let p99 = edge.p99_ms.unwrap();
    assert!((p99 - 98.2).abs() < 1e-9, "{p99}");
    // An idle window keeps the p99 since the start and a zero rate.
    let idle = Graph::between(&after, &after, 10.0);
    assert_eq!(idle.edges[0].requests_per_second, 0.0);
    assert_eq!(idle.edges[0].error_rate, 0.0);
    assert!(idle.edges[0].p99_ms.is_some());
}

#[test]
fn tcp_edges_come_from_the_source_agents_and_skip_proxies() {
    let text = "# TYPE istio_tcp_connections_opened counter\n\
        istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",destination_workload=\"details-v1\",destination_workload_namespace=\"default\",destination_service=\"details.default.svc.cluster.local\",connection_security_policy=\"mutual_tls\",response_flags=\"-\"} 4\n\
        istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",destination_workload=\"details-v1\",destination_workload_namespace=\"default\",destination_service=\"details.default.svc.cluster.local\",connection_security_policy=\"mutual_tls\",response_flags=\"-\"} 4\n\
        istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",destination_workload=\"waypoint-x\",destination_workload_namespace=\"default\",destination_service=\"reviews.default.svc.cluster.local\",connection_security_policy=\"mutual_tls\",response_flags=\"-\"} 7\n\
        # TYPE istio_tcp_sent_bytes counter\n\
        istio_tcp_sent_bytes_total{reporter=\"source\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",destination_workload=\"details-v1\",destination_workload_namespace=\"default\",destination_service=\"details.default.svc.cluster.local\",connection_security_policy=\"mutual_tls\",response_flags=\"-\"} 1000\n\
        # EOF\n";
    let proxies = BTreeSet::from(["waypoint-x".to_string()]);
    let mut totals = Totals::default();
    totals.add(&samples(text), None, &proxies);
    assert_eq!(totals.edges.len(), 2, "{totals:?}");
    let first = totals.edges.iter().next().unwrap();
    assert_eq!(first.0.from, workload("productpage-v1"));
    assert_eq!(first.0.to, service("details"));
    assert_eq!(first.0.protocol, Protocol::Tcp);
    // Counted once: the destination's report of the same connections is not added.
    assert_eq!(first.1.requests, 4.0);
    assert_eq!(first.1.bytes, 1000.0);
    assert!(first.1.mutual_tls);
}

#[test]
fn quantile_interpolates_as_prometheus_does() {
    let buckets = BTreeMap::from([
        (Le(1.0), 50.0),
        (Le(2.0), 100.0),
        (Le(f64::INFINITY), 100.0),
    ]);
    assert_eq!(quantile(0.5, &buckets), Some(1.0));
    assert_eq!(quantile(0.75, &buckets), Some(1.5));
    assert_eq!(quantile(0.99, &BTreeMap::new()), None);
    // Past the last finite bound: that bound.
    let tail = BTreeMap::from([(Le(1.0), 1.0), (Le(f64::INFINITY), 10.0)]);
    assert_eq!(quantile(0.99, &tail), Some(1.0));
}

#[test]
fn service_labels_are_short_names() {
    assert_eq!(service("reviews").label(), "reviews");
    assert_eq!(
        NodeId::Service {
            host: "api.weixin.qq.com".into()
        }
        .label(),
        "api.weixin.qq.com"
    );
}
