//! `plan`: what an outbound connection turns into, from YAML users write.
use std::net::SocketAddr;

use mesh_config::Snapshot;

use super::{Plan, plan};

fn snapshot(yaml: &str) -> Snapshot {
    let loaded = mesh_config::load_str(yaml, None).expect("test YAML loads");
    Snapshot::build(&loaded).expect("test YAML builds")
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
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets:
- addresses: [{ip: 198.18.2.11}, {ip: 198.18.2.12}]
  ports: [{name: http, port: 8080}]
"#;

#[test]
fn not_a_service_passes_through() {
    let snap = snapshot(REVIEWS);
    let dst: SocketAddr = "198.18.2.11:9000".parse().unwrap();
    assert_eq!(plan(&snap, dst, 0), Plan::Passthrough(dst));
}

#[test]
fn service_vip_goes_to_endpoints_round_robin_on_the_target_port() {
    let snap = snapshot(REVIEWS);
    let vip: SocketAddr = "198.19.0.10:9080".parse().unwrap();
    let picked: Vec<Plan> = (0..4).map(|i| plan(&snap, vip, i)).collect();
    let host = "reviews.default.svc.cluster.local".to_string();
    let a: SocketAddr = "198.18.2.11:8080".parse().unwrap();
    let b: SocketAddr = "198.18.2.12:8080".parse().unwrap();
    assert_eq!(
        picked[0],
        Plan::Service {
            host: host.clone(),
            endpoint: a
        }
    );
    assert_eq!(
        picked[1],
        Plan::Service {
            host: host.clone(),
            endpoint: b
        }
    );
    assert_eq!(picked[2], picked[0]);
    assert_eq!(picked[3], picked[1]);
}

#[test]
fn unknown_port_and_no_endpoints_are_refused() {
    let snap = snapshot(REVIEWS);
    let wrong_port: SocketAddr = "198.19.0.10:1234".parse().unwrap();
    assert!(matches!(plan(&snap, wrong_port, 0), Plan::Refuse(why) if why.contains("1234")));

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
    let vip: SocketAddr = "198.19.0.11:9080".parse().unwrap();
    assert!(matches!(plan(&empty, vip, 0), Plan::Refuse(why) if why.contains("no ready endpoint")));
}

#[test]
fn the_agents_own_listener_is_refused() {
    let own: SocketAddr = "127.0.0.1:15001".parse().unwrap();
    assert!(matches!(
        plan(&Snapshot::default(), own, 0),
        Plan::Refuse(_)
    ));
}
