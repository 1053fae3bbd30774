//! `resolve`: what a pod asking a name gets, from YAML users write.
use std::net::IpAddr;

use mesh_config::Snapshot;

use super::{Answer, resolve};

use crate::test_support::snapshot;

const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 198.19.0.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: db, namespace: data}
subsets:
- addresses: [{ip: 198.18.2.12}, {ip: 198.18.1.11}]
  notReadyAddresses: [{ip: 198.18.3.13}]
  ports: [{name: tcp, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: weixin, namespace: default}
spec:
  hosts: [api.weixin.qq.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fixed, namespace: default}
spec:
  hosts: [fixed.example.org]
  addresses: [198.18.200.7]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 198.18.200.70}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [opaque.example.org]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: data}
spec:
  hosts: [private.example.org]
  exportTo: ["."]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn ask(snap: &Snapshot, name: &str, namespace: &str) -> Answer {
    resolve(name, namespace, "cluster.local", snap)
}

#[test]
fn every_form_of_a_service_name_is_its_vip() {
    let snap = snapshot(YAML);
    let vip = Answer::Addresses(vec![ip("198.19.0.10")]);
    for name in [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
    ] {
        assert_eq!(ask(&snap, name, "default"), vip, "{name}");
    }
    // From another namespace the short name means that namespace's Service.
    assert_eq!(ask(&snap, "reviews", "data"), Answer::Forward);
    assert_eq!(ask(&snap, "reviews.default", "data"), vip);
}

#[test]
fn search_list_expansions_that_are_not_services_are_nxdomain() {
    let snap = snapshot(YAML);
    for name in [
        "example.com.default.svc.cluster.local",
        "example.com.svc.cluster.local",
        "example.com.cluster.local",
        "ratings.default.svc.cluster.local",
        "cluster.local",
    ] {
        assert_eq!(ask(&snap, name, "default"), Answer::NxDomain, "{name}");
    }
}

#[test]
fn other_names_go_upstream() {
    let snap = snapshot(YAML);
    for name in [
        "example.com",
        "www.example.com",
        "ratings",
        "opaque.example.org",
    ] {
        assert_eq!(ask(&snap, name, "default"), Answer::Forward, "{name}");
    }
}

#[test]
fn headless_services_answer_their_ready_endpoints() {
    let snap = snapshot(YAML);
    assert_eq!(
        ask(&snap, "db", "data"),
        Answer::Addresses(vec![ip("198.18.1.11"), ip("198.18.2.12")])
    );
}

#[test]
fn service_entry_hosts_get_their_vip_or_addresses() {
    let snap = snapshot(YAML);
    let vip = snap.service_entries["default/weixin"].vip;
    assert!(
        mesh_config::snapshot::allocate_vips(["x"], &Default::default())["x"].is_ipv4(),
        "VIPs are IPv4"
    );
    assert_eq!(
        ask(&snap, "api.weixin.qq.com", "default"),
        Answer::Addresses(vec![vip])
    );
    assert_eq!(
        ask(&snap, "fixed.example.org", "default"),
        Answer::Addresses(vec![ip("198.18.200.7")])
    );
}

#[test]
fn service_entries_respect_export_to() {
    let snap = snapshot(YAML);
    assert!(matches!(
        ask(&snap, "private.example.org", "data"),
        Answer::Addresses(_)
    ));
    assert_eq!(
        ask(&snap, "private.example.org", "default"),
        Answer::Forward
    );
}
