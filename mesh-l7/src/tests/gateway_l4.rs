//! A Gateway's TCP and TLS passthrough servers: `tcp` rules by port, `tls` rules by SNI.

use super::*;

const GATEWAY_L4: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9001, name: tcp-other, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [a.example.com, "*.b.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge-tcp, namespace: default}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp:
  - match: [{port: 9000}]
    route:
    - {destination: {host: ratings, subset: v1}, weight: 50}
    - {destination: {host: ratings, subset: v2}, weight: 50}
  tls:
  - match: [{port: 9443, sniHosts: [a.example.com]}]
    route: [{destination: {host: details}}]
  - match: [{port: 9443, sniHosts: ["*.b.example.com"]}]
    route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: default}
spec:
  hosts: ["*"]
  tcp:
  - route: [{destination: {host: productpage}}]
"#;

fn table() -> RouteTable {
    bookinfo_with_yaml(&format!(
        "{}\n---\n{GATEWAY_L4}",
        super::rules::destination_rule_all()
    ))
}

fn conn<'a>(port: u16, sni: Option<&'a str>) -> GatewayConnection<'a> {
    GatewayConnection {
        gateway: "default/edge",
        port,
        sni,
        source: Source::default(),
    }
}

#[test]
fn tcp_server_routes_by_port_and_weight() {
    let table = table();
    let mut rng = rng();
    let v1 = (0..1000)
        .filter(|_| {
            let c = table
                .route_gateway_tcp(&conn(9000, None), &mut rng)
                .expect("routed");
            assert_eq!(
                (c.host.as_str(), c.port),
                ("ratings.default.svc.cluster.local", 9080)
            );
            c.subset.as_deref() == Some("v1")
        })
        .count();
    assert!((430..=570).contains(&v1), "{v1}");
    // No rule for port 9001; the VirtualService bound to the mesh is not looked at.
    assert_eq!(
        table.route_gateway_tcp(&conn(9001, None), &mut rng).err(),
        Some(ResponseFlag::NoRoute)
    );
    // Another Gateway: nothing bound to it.
    let mut other = conn(9000, None);
    other.gateway = "default/other";
    assert_eq!(
        table.route_gateway_tcp(&other, &mut rng).err(),
        Some(ResponseFlag::NoRoute)
    );
}

#[test]
fn tls_passthrough_routes_by_sni() {
    let table = table();
    let mut rng = rng();
    let route = |sni: Option<&str>, rng: &mut fastrand::Rng| {
        table
            .route_tls(&conn(9443, sni), rng)
            .map(|c| (c.host.clone(), c.subset.clone(), c.port))
    };
    assert_eq!(
        route(Some("a.example.com"), &mut rng),
        Ok(("details.default.svc.cluster.local".into(), None, 9080))
    );
    // Case does not matter; a wildcard sniHost matches below its suffix.
    assert_eq!(
        route(Some("A.Example.COM"), &mut rng).map(|r| r.0),
        Ok("details.default.svc.cluster.local".into())
    );
    assert_eq!(
        route(Some("x.b.example.com"), &mut rng),
        Ok((
            "reviews.default.svc.cluster.local".into(),
            Some("v2".into()),
            9080
        ))
    );
    // An SNI the server's hosts do not admit, no SNI at all, and the wrong port: NR.
    for (sni, port) in [
        (Some("c.example.com"), 9443),
        (None, 9443),
        (Some("a.example.com"), 9000),
    ] {
        assert_eq!(
            table.route_tls(&conn(port, sni), &mut rng).err(),
            Some(ResponseFlag::NoRoute),
            "{sni:?} {port}"
        );
    }
}

#[test]
fn rule_level_gateways_bind_and_unknown_destinations_are_uh() {
    let table = bookinfo_with_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: [tcp.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: by-match, namespace: default}
spec:
  hosts: [tcp.example.com]
  tcp:
  - match: [{port: 9000, gateways: [edge]}]
    route: [{destination: {host: nowhere}}]
"#,
    );
    let mut rng = rng();
    assert_eq!(
        table.route_gateway_tcp(&conn(9000, None), &mut rng).err(),
        Some(ResponseFlag::NoHealthyUpstream)
    );
}
