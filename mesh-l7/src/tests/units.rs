//! The small pieces: host and port parsing, redirects, gRPC names, `retryOn`, random
//! draws, Gateway server hosts, TCP routes.

use super::*;
use crate::action::grpc_code;
use crate::random::{below, chance};
use crate::request::strip_port;

#[test]
fn authority_ports_are_stripped_and_ipv6_left_whole() {
    assert_eq!(strip_port("reviews:9080"), "reviews");
    assert_eq!(strip_port("reviews"), "reviews");
    assert_eq!(strip_port("[fd00::1]:80"), "[fd00::1]");
    assert_eq!(strip_port("fd00::1"), "fd00::1");
    assert_eq!(strip_port("host:"), "host:");
}

#[test]
fn grpc_status_names_and_numbers() {
    assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
    assert_eq!(grpc_code("unavailable"), Some(14));
    assert_eq!(grpc_code("OK"), Some(0));
    assert_eq!(grpc_code("13"), Some(13));
    assert_eq!(grpc_code("17"), None);
    assert_eq!(grpc_code("SOMETIMES"), None);
}

#[test]
fn retry_on_parses_istio_names_and_codes_and_refuses_others() {
    let on =
        RetryOn::parse("gateway-error, reset,retriable-4xx,503,deadline-exceeded").expect("parses");
    for c in [
        RetryCondition::GatewayError,
        RetryCondition::Reset,
        RetryCondition::Retriable4xx,
        RetryCondition::RetriableStatusCodes,
        RetryCondition::GrpcDeadlineExceeded,
    ] {
        assert!(on.contains(c), "{c:?}");
    }
    assert!(!on.contains(RetryCondition::Http5xx));
    assert_eq!(on.status_codes(), [503]);
    assert!(RetryOn::parse("5xx,teapot").is_err());
    assert!(RetryOn::parse("700").is_err());
}

#[test]
fn random_draws_are_uniform_enough() {
    let mut rng = rng();
    let hits = (0..100_000).filter(|_| chance(&mut rng, 12.5)).count();
    assert!((11_900..=13_100).contains(&hits), "{hits}");
    assert!((0..1000).all(|_| chance(&mut rng, 100.0)));
    assert!((0..1000).all(|_| !chance(&mut rng, 0.0)));
    let mut buckets = [0u32; 4];
    for _ in 0..40_000 {
        buckets[below(&mut rng, 4) as usize] += 1;
    }
    assert!(
        buckets.iter().all(|b| (9_500..=10_500).contains(b)),
        "{buckets:?}"
    );
}

const SHOP: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["default/shop.example.com", "*.shop.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: ["*"]
  gateways: [shop]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {scheme: https, port: 8443}
  - match: [{uri: {prefix: /same}}]
    redirect: {uri: /moved}
  - match: [{uri: {prefix: /here}}]
    redirect: {derivePort: FROM_REQUEST_PORT, authority: other.example.com}
  - route: [{destination: {host: productpage}}]
"#;

#[test]
fn a_gateway_serves_only_its_servers_hosts_and_ports() {
    let table = bookinfo_with_yaml(SHOP);
    let h = HeaderMap::new();
    let at = |authority: &'static str, port: u16| {
        let mut r = get(authority, "/", &h);
        r.entry = Entry::Gateway("default/shop");
        r.port = port;
        r
    };
    assert!(table.route(&at("shop.example.com", 80)).is_ok());
    assert!(table.route(&at("eu.shop.example.com:80", 80)).is_ok());
    assert_eq!(
        table.route(&at("evil.example.com", 80)).err(),
        Some(ResponseFlag::NoRoute)
    );
    assert_eq!(
        table.route(&at("shop.example.com:8080", 8080)).err(),
        Some(ResponseFlag::NoRoute)
    );
}

#[test]
fn redirect_locations_keep_or_replace_scheme_host_port_and_path() {
    let table = bookinfo_with_yaml(SHOP);
    let (state, mut rng, h) = (LbState::new(), rng(), HeaderMap::new());
    let mut location = |authority: &'static str, path: &'static str| {
        let mut r = get(authority, path, &h);
        r.entry = Entry::Gateway("default/shop");
        r.port = 80;
        let d = table.decide(&r, &state, &mut rng, Instant::now());
        let reply = d.reply().expect("redirect").clone();
        assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
        reply.headers[0].1.to_str().expect("text").to_string()
    };
    assert_eq!(
        location("shop.example.com", "/old/a?x=1"),
        "https://shop.example.com:8443/old/a?x=1"
    );
    assert_eq!(
        location("shop.example.com:80", "/same/a"),
        "http://shop.example.com:80/moved"
    );
    assert_eq!(
        location("shop.example.com", "/here"),
        "http://other.example.com:80/here"
    );
}

#[test]
fn tcp_routes_by_port_and_weight_else_the_service_itself() {
    let table = bookinfo_with_yaml(&format!(
        "{}\n---\n{}",
        super::rules::destination_rule_all(),
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-tcp, namespace: default}
spec:
  hosts: [ratings]
  tcp:
  - match: [{port: 9080, sourceLabels: {app: reviews}}]
    route:
    - {destination: {host: ratings, subset: v1}, weight: 50}
    - {destination: {host: ratings, subset: v2}, weight: 50}
"#
    ));
    let labels = std::collections::BTreeMap::from([("app".to_string(), "reviews".to_string())]);
    let mut rng = rng();
    let mut req = TcpRequest {
        service: "ratings.default.svc.cluster.local",
        port: 9080,
        source: Source {
            namespace: Some("default"),
            labels: Some(&labels),
            ..Source::default()
        },
        entry: Entry::Mesh,
    };
    let v1 = (0..1000)
        .filter(|_| {
            let c = table.route_tcp(&req, &mut rng).expect("cluster");
            c.subset.as_deref() == Some("v1")
        })
        .count();
    assert!((430..=570).contains(&v1), "{v1}");
    req.source.labels = None;
    assert_eq!(
        table.route_tcp(&req, &mut rng).err(),
        Some(ResponseFlag::NoRoute)
    );
    req.service = "details.default.svc.cluster.local";
    let c = table.route_tcp(&req, &mut rng).expect("the Service itself");
    assert_eq!((c.subset.as_deref(), c.port), (None, 9080));
}
