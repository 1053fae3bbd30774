//! Which Gateway servers the gateway listens for, from real YAML through the configuration
//! crate.

use super::*;

const GATEWAYS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: web-cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: grpc, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http2, protocol: HTTP2}
    hosts: ["api.example.com"]
  - port: {number: 9090, name: grpc, protocol: GRPC}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: default}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 7070, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

fn snapshot() -> Snapshot {
    let loaded = mesh_config::load_str(GATEWAYS, None).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"))
}

fn ingress() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("istio".to_string(), "ingressgateway".to_string()),
        ("app".to_string(), "gw".to_string()),
    ])
}

#[test]
fn http_servers_of_selecting_gateways_are_served_and_others_are_not() {
    let snap = snapshot();
    let ports = served_ports(&snap, &ingress());
    assert!(ports.values().all(|p| p.tls.is_none()));
    let gateways: BTreeMap<u16, Vec<String>> =
        ports.into_iter().map(|(p, s)| (p, s.gateways)).collect();
    assert_eq!(
        gateways,
        BTreeMap::from([
            (
                8080,
                vec!["default/web".to_string(), "edge/grpc".to_string()]
            ),
            (9090, vec!["edge/grpc".to_string()]),
        ])
    );
    assert_eq!(
        gateways_on_port(&snap, &ingress(), 9090),
        vec!["edge/grpc".to_string()]
    );
    assert!(gateways_on_port(&snap, &ingress(), 8443).is_empty());
    assert_eq!(
        unserved(&snap, &ingress()),
        ["default/web port 8443 (HTTPS)"]
    );
}

#[test]
fn https_from_certificate_files_is_terminated() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}
  - port: {number: 9443, name: passthrough, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
"#;
    let loaded = mesh_config::load_str(yaml, None).unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let ports = served_ports(&snap, &ingress());
    assert_eq!(ports.keys().copied().collect::<Vec<_>>(), [8443]);
    let (key, server) = ports[&8443].tls.clone().expect("TLS terminated on 8443");
    assert_eq!(key, "default/secure");
    // The files do not exist: the error names the Gateway, the port and the field.
    let err = tls::server_config(&key, &server).expect_err("no such files");
    let text = err.to_string();
    assert!(
        text.contains("Gateway default/secure port 8443: tls.serverCertificate"),
        "{text}"
    );
    assert_eq!(
        unserved(&snap, &ingress()),
        ["default/secure port 9443 (TLS)"]
    );
}

#[test]
fn a_gateway_without_the_selected_labels_serves_nothing() {
    let snap = snapshot();
    let labels = BTreeMap::from([("istio".to_string(), "other".to_string())]);
    assert!(served_ports(&snap, &labels).is_empty());
}
