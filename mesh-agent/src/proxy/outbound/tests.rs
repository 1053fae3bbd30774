//! `plan`: what an outbound connection turns into, from YAML users write.
use std::net::SocketAddr;

use mesh_config::Snapshot;
use mesh_identity::SpiffeId;

use super::{Client, Plan, Protocol, plan};
use crate::proxy::{error::ProxyError, lb::Balancer, local::LocalPods};

use crate::test_support::snapshot;

/// A client pod in `default` with no labels.
fn anyone() -> Client<'static> {
    static NO_LABELS: std::collections::BTreeMap<String, String> =
        std::collections::BTreeMap::new();
    Client {
        namespace: "default",
        labels: &NO_LABELS,
    }
}

fn decide(snap: &Snapshot, balancer: &Balancer, dst: &str) -> Result<Plan, ProxyError> {
    let dst: SocketAddr = dst.parse().expect("test address");
    plan(
        snap,
        balancer,
        &LocalPods::default(),
        "cluster.local",
        anyone(),
        dst,
        &[],
    )
}

const REVIEWS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 198.19.0.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 198.19.0.11
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets:
- addresses: [{ip: 198.18.2.11}, {ip: 198.18.2.12}]
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ratings, namespace: default}
subsets:
- addresses: [{ip: 198.18.2.21}, {ip: 198.18.2.22}]
  ports: [{name: http, port: 9080}]
"#;

/// Pods in an ambient namespace are mesh workloads: reached over HBONE with their identity.
const AMBIENT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec:
  serviceAccountName: cart
  containers: [{name: cart, image: cart}]
status: {podIP: 198.18.3.10}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-1, namespace: legacy, labels: {app: legacy}}
spec:
  containers: [{name: legacy, image: legacy}]
status: {podIP: 198.18.3.11}
"#;

#[test]
fn not_a_service_passes_through_in_plain_tcp() {
    let snap = snapshot(REVIEWS);
    let planned = decide(&snap, &Balancer::default(), "198.18.2.11:9000").unwrap();
    assert_eq!(
        planned,
        Plan {
            target: "198.18.2.11:9000".parse().unwrap(),
            service: None,
            protocol: Protocol::Tcp,
        }
    );
}

#[test]
fn service_vip_goes_to_endpoints_round_robin_on_the_target_port() {
    let snap = snapshot(REVIEWS);
    let balancer = Balancer::default();
    let targets: Vec<SocketAddr> = (0..4)
        .map(|_| decide(&snap, &balancer, "198.19.0.10:9080").unwrap().target)
        .collect();
    let a: SocketAddr = "198.18.2.11:8080".parse().unwrap();
    let b: SocketAddr = "198.18.2.12:8080".parse().unwrap();
    assert_eq!(targets, vec![a, b, a, b]);
    let planned = decide(&snap, &balancer, "198.19.0.10:9080").unwrap();
    assert_eq!(
        planned.service.as_deref(),
        Some("reviews.default.svc.cluster.local")
    );
}

#[test]
fn round_robin_is_kept_per_service() {
    // Alternating between two Services must still spread over each one's endpoints.
    let snap = snapshot(REVIEWS);
    let balancer = Balancer::default();
    let mut reviews = Vec::new();
    for _ in 0..4 {
        reviews.push(decide(&snap, &balancer, "198.19.0.10:9080").unwrap().target);
        decide(&snap, &balancer, "198.19.0.11:9080").unwrap();
    }
    let a: SocketAddr = "198.18.2.11:8080".parse().unwrap();
    let b: SocketAddr = "198.18.2.12:8080".parse().unwrap();
    assert_eq!(reviews, vec![a, b, a, b]);
}

#[test]
fn unknown_port_and_no_endpoints_are_refused_with_their_reason() {
    let snap = snapshot(REVIEWS);
    let balancer = Balancer::default();
    let wrong_port = decide(&snap, &balancer, "198.19.0.10:1234").unwrap_err();
    assert_eq!(wrong_port.reason(), "port_not_in_service");
    assert_eq!(wrong_port.response_flag(), "NR");
    assert!(wrong_port.to_string().contains("1234"));

    let empty = snapshot(
        r#"
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 198.19.0.11
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
"#,
    );
    let none = decide(&empty, &balancer, "198.19.0.11:9080").unwrap_err();
    assert_eq!(none.reason(), "no_endpoint");
    assert_eq!(none.response_flag(), "UH");
}

#[test]
fn the_agents_own_listener_is_refused() {
    let own = decide(
        &Snapshot::default(),
        &Balancer::default(),
        "127.0.0.1:15001",
    );
    assert!(matches!(own, Err(ProxyError::Loop(_))));
}

#[test]
fn ambient_workloads_are_reached_over_hbone_with_their_identity() {
    let snap = snapshot(AMBIENT);
    let balancer = Balancer::default();
    let cart = decide(&snap, &balancer, "198.18.3.10:8080").unwrap();
    assert_eq!(
        cart.protocol,
        Protocol::Hbone(SpiffeId::new("cluster.local", "shop", "cart"))
    );
    // Same YAML, a namespace without the ambient label: not in the mesh, plain TCP.
    let legacy = decide(&snap, &balancer, "198.18.3.11:8080").unwrap();
    assert_eq!(legacy.protocol, Protocol::Tcp);
}

#[test]
fn pods_enrolled_on_this_node_are_mesh_workloads_without_configuration() {
    let local = LocalPods::default();
    let id = SpiffeId::new("cluster.local", "default", "sleep");
    local.insert(&["198.18.1.10".parse().unwrap()], &id);
    let dst: SocketAddr = "198.18.1.10:80".parse().unwrap();
    let planned = plan(
        &Snapshot::default(),
        &Balancer::default(),
        &local,
        "cluster.local",
        anyone(),
        dst,
        &[],
    )
    .unwrap();
    assert_eq!(planned.protocol, Protocol::Hbone(id));
}

fn targets(
    snap: &Snapshot,
    balancer: &Balancer,
    local: &LocalPods,
    dst: &str,
    tried: &[SocketAddr],
    n: usize,
) -> Vec<String> {
    let dst: SocketAddr = dst.parse().expect("test address");
    (0..n)
        .map(|_| {
            plan(snap, balancer, local, "cluster.local", anyone(), dst, tried)
                .map(|p| p.target.to_string())
                .unwrap_or_else(|e| e.reason().to_string())
        })
        .collect()
}

#[test]
fn failed_endpoints_are_skipped_then_ejected_for_a_while() {
    let snap = snapshot(REVIEWS);
    let balancer = Balancer::default();
    let local = LocalPods::default();
    let bad: SocketAddr = "198.18.2.11:8080".parse().unwrap();
    // The connection that failed on `bad` goes to the other endpoint, whatever the turn.
    assert_eq!(
        targets(&snap, &balancer, &local, "198.19.0.10:9080", &[bad], 3),
        ["198.18.2.12:8080"; 3]
    );
    // Once ejected, nobody is sent there until the ejection ends.
    let now = std::time::Instant::now();
    balancer.eject(bad, now);
    assert_eq!(
        targets(&snap, &balancer, &local, "198.19.0.10:9080", &[], 4),
        ["198.18.2.12:8080"; 4]
    );
    assert!(!balancer.is_ejected(bad, now + crate::proxy::lb::EJECTION));
    // Every endpoint ejected: they are all tried rather than refusing everything.
    balancer.eject("198.18.2.12:8080".parse().unwrap(), now);
    let both = targets(&snap, &balancer, &local, "198.19.0.10:9080", &[], 2);
    assert!(both.contains(&"198.18.2.11:8080".to_string()), "{both:?}");
    // Every endpoint tried: no endpoint left.
    let all = [
        "198.18.2.11:8080".parse().unwrap(),
        "198.18.2.12:8080".parse().unwrap(),
    ];
    assert_eq!(
        targets(&snap, &balancer, &local, "198.19.0.10:9080", &all, 1),
        ["no_endpoint"]
    );
}

const LOCALITY: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: near, namespace: default}
spec:
  clusterIP: 198.19.0.20
  trafficDistribution: PreferClose
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: only-here, namespace: default}
spec:
  clusterIP: 198.19.0.21
  internalTrafficPolicy: Local
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: near, namespace: default}
subsets: [{addresses: [{ip: 198.18.1.10}, {ip: 198.18.2.10}, {ip: 198.18.2.11}], ports: [{port: 80}]}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: only-here, namespace: default}
subsets: [{addresses: [{ip: 198.18.1.10}, {ip: 198.18.2.10}, {ip: 198.18.2.11}], ports: [{port: 80}]}]
"#;

#[test]
fn services_that_ask_for_it_prefer_or_keep_to_this_node() {
    let snap = snapshot(LOCALITY);
    let balancer = Balancer::default();
    let local = LocalPods::default();
    let id = SpiffeId::new("cluster.local", "default", "default");
    // Nothing of either Service on this node yet.
    let spread = targets(&snap, &balancer, &local, "198.19.0.20:80", &[], 3);
    assert_eq!(spread.len(), 3);
    assert_eq!(
        targets(&snap, &balancer, &local, "198.19.0.21:80", &[], 1),
        ["no_endpoint"]
    );
    local.insert(&["198.18.1.10".parse().unwrap()], &id);
    assert_eq!(
        targets(&snap, &balancer, &local, "198.19.0.20:80", &[], 4),
        ["198.18.1.10:80"; 4]
    );
    assert_eq!(
        targets(&snap, &balancer, &local, "198.19.0.21:80", &[], 2),
        ["198.18.1.10:80"; 2]
    );
    // The local endpoint failed: PreferClose falls back to the others.
    let failed: SocketAddr = "198.18.1.10:80".parse().unwrap();
    let fallback = targets(&snap, &balancer, &local, "198.19.0.20:80", &[failed], 2);
    assert!(
        fallback.iter().all(|t| t.starts_with("198.18.2.")),
        "{fallback:?}"
    );
}

/// `reviews` bound to the waypoint `waypoint` in `default`, which runs two pods.
const WAYPOINT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: default, labels: {istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-1
  namespace: default
  labels: {gateway.networking.k8s.io/gateway-name: waypoint}
spec:
  serviceAccountName: waypoint
  containers: [{name: istio-proxy, image: proxy}]
status: {podIP: 198.18.4.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-2
  namespace: default
  labels: {gateway.networking.k8s.io/gateway-name: waypoint}
spec:
  serviceAccountName: waypoint
  containers: [{name: istio-proxy, image: proxy}]
status: {podIP: 198.18.4.2}
"#;

fn with_label(services: &str, label: &str) -> String {
    services.replacen(
        "metadata: {name: reviews, namespace: default}",
        &format!("metadata: {{name: reviews, namespace: default, labels: {{{label}}}}}"),
        1,
    )
}

#[test]
fn a_service_bound_to_a_waypoint_is_reached_through_its_pods() {
    let yaml = with_label(REVIEWS, "istio.io/use-waypoint: waypoint");
    let snap = snapshot(&format!("{yaml}---{WAYPOINT}"));
    let balancer = Balancer::default();
    let first = decide(&snap, &balancer, "198.19.0.10:9080").unwrap();
    let second = decide(&snap, &balancer, "198.19.0.10:9080").unwrap();
    // The CONNECT names the Service's VIP and port: the waypoint chooses the endpoint.
    assert_eq!(first.target, "198.19.0.10:9080".parse().unwrap());
    let identity = SpiffeId::new("cluster.local", "default", "waypoint");
    let mut dialled = vec![first.dialled().to_string(), second.dialled().to_string()];
    dialled.sort();
    assert_eq!(dialled, ["198.18.4.1:15008", "198.18.4.2:15008"]);
    assert!(
        matches!(first.protocol, Protocol::Waypoint { identity: ref id, .. } if *id == identity)
    );
    // Services without the label still go straight to an endpoint.
    let ratings = decide(&snap, &balancer, "198.19.0.11:9080").unwrap();
    assert!(ratings.target.to_string().starts_with("198.18.2.2"));
}

#[test]
fn the_waypoint_itself_goes_to_the_endpoints() {
    let yaml = with_label(REVIEWS, "istio.io/use-waypoint: waypoint");
    let snap = snapshot(&format!("{yaml}---{WAYPOINT}"));
    let labels = [(
        "gateway.networking.k8s.io/gateway-name".to_string(),
        "waypoint".to_string(),
    )]
    .into();
    let waypoint = Client {
        namespace: "default",
        labels: &labels,
    };
    let dst = "198.19.0.10:9080".parse().unwrap();
    let planned = plan(
        &snap,
        &Balancer::default(),
        &LocalPods::default(),
        "cluster.local",
        waypoint,
        dst,
        &[],
    )
    .unwrap();
    assert!(planned.target.to_string().starts_with("198.18.2.1"));
    // A pod of that name in another namespace is not the waypoint.
    let elsewhere = Client {
        namespace: "shop",
        ..waypoint
    };
    let planned = plan(
        &snap,
        &Balancer::default(),
        &LocalPods::default(),
        "cluster.local",
        elsewhere,
        dst,
        &[],
    )
    .unwrap();
    assert!(matches!(planned.protocol, Protocol::Waypoint { .. }));
}

#[test]
fn namespace_labels_bind_and_use_waypoint_none_opts_out() {
    let namespace = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/use-waypoint: waypoint}}
---
"#;
    let snap = snapshot(&format!("{namespace}{REVIEWS}---{WAYPOINT}"));
    let bound = decide(&snap, &Balancer::default(), "198.19.0.11:9080").unwrap();
    assert!(matches!(bound.protocol, Protocol::Waypoint { .. }));
    let opted_out = with_label(REVIEWS, "istio.io/use-waypoint: none");
    let snap = snapshot(&format!("{namespace}{opted_out}---{WAYPOINT}"));
    let direct = decide(&snap, &Balancer::default(), "198.19.0.10:9080").unwrap();
    assert!(direct.target.to_string().starts_with("198.18.2.1"));
}

#[test]
fn a_waypoint_that_does_not_exist_fails_closed_and_tried_pods_are_skipped() {
    // Bound, but no Gateway of class istio-waypoint: nothing to send it to.
    let yaml = with_label(REVIEWS, "istio.io/use-waypoint: missing");
    let snap = snapshot(&format!("{yaml}---{WAYPOINT}"));
    let err = decide(&snap, &Balancer::default(), "198.19.0.10:9080").unwrap_err();
    assert_eq!(err.reason(), "no_waypoint");
    assert_eq!(err.response_flag(), "UH");

    let yaml = with_label(REVIEWS, "istio.io/use-waypoint: waypoint");
    let snap = snapshot(&format!("{yaml}---{WAYPOINT}"));
    let tried = ["198.18.4.1:15008".parse().unwrap()];
    let balancer = Balancer::default();
    let local = LocalPods::default();
    let dst = "198.19.0.10:9080".parse().unwrap();
    for _ in 0..3 {
        let planned = plan(
            &snap,
            &balancer,
            &local,
            "cluster.local",
            anyone(),
            dst,
            &tried,
        )
        .unwrap();
        assert_eq!(planned.dialled().to_string(), "198.18.4.2:15008");
    }
}

#[test]
fn registry_only_refuses_what_the_mesh_does_not_know() {
    let mesh = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
"#;
    let open = snapshot(&format!("{REVIEWS}---{AMBIENT}"));
    assert!(decide(&open, &Balancer::default(), "198.51.100.7:443").is_ok());
    let closed = snapshot(&format!("{REVIEWS}---{AMBIENT}---{mesh}"));
    let err = decide(&closed, &Balancer::default(), "198.51.100.7:443").unwrap_err();
    assert_eq!((err.reason(), err.response_flag()), ("registry_only", "NR"));
    // Services and workloads the configuration knows stay reachable.
    assert!(decide(&closed, &Balancer::default(), "198.19.0.10:9080").is_ok());
    assert!(decide(&closed, &Balancer::default(), "198.18.3.11:80").is_ok());
}
