use super::*;
use crate::demo::console::graph::{EdgeKey, Protocol};

fn workload(name: &str) -> NodeId {
    NodeId::Workload {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn edge(from: NodeId, to: NodeId, protocol: Protocol) -> Edge {
    Edge {
        key: EdgeKey { from, to, protocol },
        total_requests: 10.0,
        requests_per_second: 1.5,
        error_rate: 0.0,
        p99_ms: Some(12.0),
        bytes_per_second: 0.0,
        mutual_tls: true,
    }
}

#[test]
fn the_svg_has_one_group_per_node_and_one_per_pair_of_nodes() {
    let reviews = NodeId::Service {
        host: "reviews.default.svc.cluster.local".into(),
    };
    let mut graph = Graph::default();
    let edges = [
        edge(workload("productpage-v1"), reviews.clone(), Protocol::Http),
        // A second protocol between the same two nodes is drawn on the same arrow.
        edge(workload("productpage-v1"), reviews.clone(), Protocol::Tcp),
        edge(reviews.clone(), workload("reviews-v1"), Protocol::Http),
        edge(reviews.clone(), workload("reviews-v2"), Protocol::Http),
    ];
    for e in &edges {
        graph.nodes.insert(e.key.from.clone());
        graph.nodes.insert(e.key.to.clone());
    }
    graph.edges = edges.to_vec();
    let svg = graph_svg(&graph).expect("a picture");
    assert_eq!(svg.matches("class=\"node\"").count(), 4, "{svg}");
    assert_eq!(svg.matches("class=\"edge\"").count(), 3, "{svg}");
    assert!(svg.contains("data-from=\"workload:default/productpage-v1\" data-to=\"service:reviews.default.svc.cluster.local\" data-protocols=\"http,tcp\""), "{svg}");
    assert!(svg.contains(">reviews-v2<"), "{svg}");
    let page = graph_page(&graph, &["connecting to 198.18.0.1:15020: refused".into()]);
    assert!(page.contains("\u{1F512} mutual TLS"));
    assert!(page.contains("Scrape errors"));
    assert!(graph_svg(&Graph::default()).is_none());
}

#[test]
fn names_from_metrics_are_escaped() {
    let hostile = workload("<script>alert(1)</script>\"");
    let mut graph = Graph::default();
    graph.nodes.insert(hostile.clone());
    graph.nodes.insert(workload("b"));
    graph.edges = vec![edge(hostile, workload("b"), Protocol::Http)];
    let page = graph_page(&graph, &[]);
    assert!(!page.contains("<script>"), "{page}");
}

#[test]
fn a_trace_is_drawn_parents_first_with_bars_inside_its_extent() {
    let span = |id: &str, parent: &str, start: u64, end: u64| {
        serde_json::json!({"span_id": id, "parent_span_id": parent, "name": format!("span {id}"),
            "service": "svc", "kind": "server", "start_unix_nano": start, "end_unix_nano": end,
            "attributes": {"http.status_code": "200"}})
    };
    let trace = serde_json::json!({"trace_id": "abc", "spans": [
        span("a", "", 0, 10_000_000),
        span("c", "a", 5_000_000, 9_000_000),
        span("b", "a", 1_000_000, 4_000_000),
        span("d", "b", 2_000_000, 3_000_000),
    ]});
    let spans = trace["spans"].as_array().unwrap();
    let order: Vec<(usize, &str)> = tree_order(spans)
        .into_iter()
        .map(|(depth, s)| (depth, s["span_id"].as_str().unwrap()))
        .collect();
    assert_eq!(order, [(0, "a"), (1, "b"), (2, "d"), (1, "c")]);
    let page = trace_page(&trace);
    assert!(page.contains("left:50.00%;width:40.00%"), "{page}");
    let list = traces_page(std::slice::from_ref(&trace), None);
    assert!(
        list.contains("span a") && list.contains("10.00 ms"),
        "{list}"
    );
}
