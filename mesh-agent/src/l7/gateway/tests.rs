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
    assert!(ports.values().all(|p| p.mode == PortMode::Http));
    assert_eq!(
        ports[&8443].tls.as_ref().map(|(k, _)| k.as_str()),
        Some("default/web"),
        "credentialName is terminated"
    );
    let gateways: BTreeMap<u16, Vec<String>> =
        ports.into_iter().map(|(p, s)| (p, s.gateways)).collect();
    assert_eq!(
        gateways,
        BTreeMap::from([
            (
                8080,
                vec!["default/web".to_string(), "edge/grpc".to_string()]
            ),
            (8443, vec!["default/web".to_string()]),
            (9090, vec!["edge/grpc".to_string()]),
        ])
    );
    assert_eq!(
        gateways_on_port(&snap, &ingress(), 9090),
        vec!["edge/grpc".to_string()]
    );
    assert!(unserved(&snap, &ingress()).is_empty());
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
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9444, name: tls-terminated, protocol: TLS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: tcp-cert}
  - port: {number: 9445, name: auto, protocol: TLS}
    hosts: ["*"]
    tls: {mode: AUTO_PASSTHROUGH}
"#;
    let loaded = mesh_config::load_str(yaml, None).unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let ports = served_ports(&snap, &ingress());
    let modes: Vec<(u16, PortMode, bool)> = ports
        .iter()
        .map(|(p, s)| (*p, s.mode, s.tls.is_some()))
        .collect();
    assert_eq!(
        modes,
        [
            (8443, PortMode::Http, true),
            (9000, PortMode::Tcp, false),
            (9443, PortMode::Passthrough, false),
            (9444, PortMode::Tcp, true),
        ]
    );
    let (key, server) = ports[&8443].tls.clone().expect("TLS terminated on 8443");
    assert_eq!(key, "default/secure");
    // The files do not exist: the error names the Gateway, the port and the field.
    let err = tls::server_config(&key, &server, &snap, &[]).expect_err("no such files");
    let text = err.to_string();
    assert!(
        text.contains("Gateway default/secure port 8443: tls.serverCertificate"),
        "{text}"
    );
    assert_eq!(
        unserved(&snap, &ingress()),
        ["default/secure port 9445 (TLS)"]
    );
}

const CREDENTIAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, credentialName: web-cert}
"#;

fn with_secret(secret: &str) -> Snapshot {
    let yaml = format!("{CREDENTIAL}---\n{secret}");
    let loaded = mesh_config::load_str(&yaml, None).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"))
}

fn credential_error(snap: &Snapshot) -> String {
    let ports = served_ports(snap, &ingress());
    let (key, server) = ports[&8443].tls.clone().expect("terminated");
    tls::server_config(&key, &server, snap, &[])
        .expect_err("unusable")
        .to_string()
}

#[test]
fn credential_errors_name_gateway_server_and_secret_never_values() {
    // Not there (a Secret of that name in another namespace does not count).
    let snap = with_secret(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web-cert, namespace: default}\n\
         stringData: {tls.crt: x, tls.key: y}\n",
    );
    let text = credential_error(&snap);
    assert!(
        text.contains("Gateway edge/secure port 8443 (server https)")
            && text.contains("Secret edge/web-cert: not found"),
        "{text}"
    );
    // There, with values that are not PEM: the key is named, the value is not shown.
    let snap = with_secret(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web-cert, namespace: edge}\n\
         stringData: {tls.crt: topsecretcert, tls.key: topsecretkey}\n",
    );
    let text = credential_error(&snap);
    assert!(text.contains("tls.crt is not a PEM certificate"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
    // The generic keys are read too; MUTUAL then wants a CA.
    let snap = with_secret(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web-cert, namespace: edge}\n\
         stringData: {cert: topsecretcert}\n",
    );
    let text = credential_error(&snap);
    assert!(text.contains("has neither tls.key nor key"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
}

#[test]
fn a_secret_change_reopens_the_listener() {
    let secret = |value: &str| {
        with_secret(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: web-cert, namespace: edge}}\n\
             stringData: {{tls.crt: {value}, tls.key: k}}\n"
        ))
    };
    let before = served_ports(&secret("one"), &ingress())
        .remove(&8443)
        .expect("served");
    let same = served_ports(&secret("one"), &ingress())
        .remove(&8443)
        .expect("served");
    let after = served_ports(&secret("two"), &ingress())
        .remove(&8443)
        .expect("served");
    assert_eq!(before.secrets.len(), 1);
    assert!(!before.reopens_for(&same));
    assert!(before.reopens_for(&after));
    // A Secret that appears counts as a change too.
    let missing = served_ports(&with_secret(""), &ingress())
        .remove(&8443)
        .expect("served");
    assert!(missing.secrets.is_empty());
    assert!(missing.reopens_for(&before));
}

#[test]
fn a_gateway_without_the_selected_labels_serves_nothing() {
    let snap = snapshot();
    let labels = BTreeMap::from([("istio".to_string(), "other".to_string())]);
    assert!(served_ports(&snap, &labels).is_empty());
}
