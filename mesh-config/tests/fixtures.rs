//! Every Bookinfo and seed file loads unchanged, and the snapshot holds the values users wrote.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{fixture, fixtures};
use mesh_config::istio::{Location, Resolution, StringMatch};
use mesh_config::resolve::Protocol;
use mesh_config::{Snapshot, load_paths, validate_paths};

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fixture(dir))
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_bookinfo_and_seed_file_loads_alone_without_error() {
    let mut count = 0;
    for dir in ["istio-bookinfo", "seeds"] {
        for file in yaml_files(dir) {
            let loaded = load_paths(std::slice::from_ref(&file))
                .unwrap_or_else(|e| panic!("{} failed:\n{e}", file.display()));
            assert!(
                !loaded.objects.is_empty(),
                "{} has no objects",
                file.display()
            );
            count += 1;
        }
    }
    assert_eq!(count, 15);
}

#[test]
fn whole_fixture_directories_validate_without_error() {
    let report = validate_paths(&[fixture("istio-bookinfo"), fixture("seeds")]);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.objects, 40);
}

fn bookinfo_with(files: &[&str]) -> Snapshot {
    let mut paths = vec![
        fixture("istio-bookinfo/bookinfo.yaml"),
        fixture("istio-bookinfo/destination-rule-all.yaml"),
    ];
    paths.extend(
        files
            .iter()
            .map(|f| fixture(&format!("istio-bookinfo/{f}"))),
    );
    let loaded = load_paths(&paths).unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"))
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";

#[test]
fn reviews_80_20_weights() {
    let snap = bookinfo_with(&["virtual-service-reviews-80-20.yaml"]);
    let routes = snap.routes_for(REVIEWS);
    assert_eq!(routes.len(), 1);
    let split: Vec<(String, Option<String>, Option<i32>)> = routes[0].http[0]
        .route
        .iter()
        .map(|d| {
            (
                d.destination.host.clone(),
                d.destination.subset.clone(),
                d.weight,
            )
        })
        .collect();
    assert_eq!(
        split,
        vec![
            (REVIEWS.to_string(), Some("v1".to_string()), Some(80)),
            (REVIEWS.to_string(), Some("v2".to_string()), Some(20)),
        ]
    );
}

#[test]
fn jason_exact_header_match() {
    let snap = bookinfo_with(&["virtual-service-reviews-jason-v2-v3.yaml"]);
    let routes = snap.routes_for(REVIEWS);
    let first = &routes[0].http[0];
    assert_eq!(
        first.matches[0].headers.get("end-user"),
        Some(&StringMatch::Exact("jason".to_string()))
    );
    assert_eq!(first.route[0].destination.subset.as_deref(), Some("v2"));
    assert_eq!(
        routes[0].http[1].route[0].destination.subset.as_deref(),
        Some("v3")
    );
}

#[test]
fn ratings_fixed_delay_7s_at_100_percent() {
    let snap = bookinfo_with(&["virtual-service-ratings-test-delay.yaml"]);
    let fault = snap.routes_for(RATINGS)[0].http[0]
        .fault
        .clone()
        .expect("fault");
    let delay = fault.delay.expect("delay");
    assert_eq!(delay.fixed_delay.map(|d| d.0), Some(Duration::from_secs(7)));
    assert_eq!(delay.percent, Some(100));
    assert_eq!(delay.effective_percent(), 100.0);
}

#[test]
fn ratings_abort_http_500() {
    let snap = bookinfo_with(&["virtual-service-ratings-test-abort.yaml"]);
    let abort = snap.routes_for(RATINGS)[0].http[0]
        .fault
        .clone()
        .and_then(|f| f.abort)
        .expect("abort");
    assert_eq!(abort.http_status, Some(500));
    assert_eq!(abort.effective_percent(), 100.0);
}

#[test]
fn details_abort_with_new_percentage_spelling() {
    let snap = bookinfo_with(&["fault-injection-details-v1.yaml"]);
    let abort = snap.routes_for("details.default.svc.cluster.local")[0].http[0]
        .fault
        .clone()
        .and_then(|f| f.abort)
        .expect("abort");
    assert_eq!(abort.http_status, Some(555));
    assert_eq!(abort.percentage.map(|p| p.value), Some(100.0));
}

#[test]
fn reviews_subsets_v1_v2_v3_select_by_version() {
    let snap = bookinfo_with(&[]);
    for v in ["v1", "v2", "v3"] {
        let subset = snap
            .subset(REVIEWS, v)
            .unwrap_or_else(|| panic!("subset {v}"));
        assert_eq!(subset.labels.get("version").map(String::as_str), Some(v));
    }
    // Off-cluster, the Deployments' pod templates are the endpoints: one per version.
    let svc = &snap.services[REVIEWS];
    let mut versions: Vec<&str> = svc
        .endpoints
        .iter()
        .filter_map(|e| e.labels.get("version").map(String::as_str))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, ["v1", "v2", "v3"]);
    assert_eq!(svc.ports[0].protocol, Protocol::Http);
    assert_eq!(svc.ports[0].port, 9080);
    let vip: IpAddr = svc.vip;
    assert!(vip.to_string().starts_with("198.19."), "{vip}");
    let w = &snap.workloads["default/reviews-v2-0"];
    assert_eq!(w.service_account, "bookinfo-reviews");
    // Telemetry names the Deployment, and Kiali's canonical service and revision.
    assert_eq!(
        (
            w.workload_name.as_str(),
            w.canonical_service.as_str(),
            w.canonical_revision.as_str()
        ),
        ("reviews-v2", "reviews", "v2")
    );
    assert_eq!(
        w.spiffe_id("cluster.local"),
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
}

#[test]
fn bookinfo_gateway_hosts_and_port() {
    let snap = bookinfo_with(&["bookinfo-gateway.yaml"]);
    let gw = &snap.gateways["default/bookinfo-gateway"];
    assert_eq!(
        gw.selector.get("istio").map(String::as_str),
        Some("ingressgateway")
    );
    let server = &gw.servers[0];
    assert_eq!(server.hosts, ["*"]);
    assert_eq!(server.port.number, 80);
    assert_eq!(server.port.protocol.as_deref(), Some("HTTP"));
    let vs = &snap.routes_for("*")[0];
    assert_eq!(vs.gateways, ["default/bookinfo-gateway"]);
    assert_eq!(
        vs.http[0].matches[0].uri,
        Some(StringMatch::Exact("/productpage".into()))
    );
    assert_eq!(
        vs.http[0].matches[1].uri,
        Some(StringMatch::Prefix("/static".into()))
    );
    assert_eq!(
        vs.http[0].route[0].destination.host,
        "productpage.default.svc.cluster.local"
    );
    assert_eq!(
        vs.http[0].route[0].destination.port.map(|p| p.number),
        Some(9080)
    );
}

#[test]
fn google_apis_service_entry() {
    let snap = bookinfo_with(&["egress-rule-google-apis.yaml"]);
    let se = &snap.service_entries["default/googleapis"];
    assert_eq!(se.hosts, ["www.googleapis.com"]);
    assert_eq!(se.ports[0].number, 443);
    assert_eq!(se.ports[0].name.as_deref(), Some("https"));
    assert_eq!(se.ports[0].protocol, Protocol::Http);
    assert_eq!(se.resolution, Resolution::Dns);
    assert_eq!(se.location, Location::MeshExternal);
}

#[test]
fn seeds_service_entry_gateway_and_prefix_route() {
    let loaded = load_paths(&[fixture("seeds")]).unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let se = &snap.service_entries["default/wechat"];
    assert_eq!(se.hosts, ["api.weixin.qq.com"]);
    assert_eq!(
        (se.ports[0].number, se.ports[0].protocol),
        (443, Protocol::Https)
    );
    assert_eq!(
        (se.resolution, se.location),
        (Resolution::Dns, Location::MeshExternal)
    );

    let vs: Vec<_> = snap
        .routes_for("*")
        .into_iter()
        .filter(|v| v.name == "app-gateway")
        .collect();
    assert_eq!(vs[0].gateways, ["default/istio-gateway"]);
    assert_eq!(
        vs[0].http[0].matches[0].uri,
        Some(StringMatch::Prefix("/ws".into()))
    );
    assert_eq!(
        vs[0].http[0].route[0].destination.host,
        "car.default.svc.cluster.local"
    );
    assert_eq!(
        vs[0].http[0].route[0].destination.port.map(|p| p.number),
        Some(8080)
    );

    // The car Service: `grpc` and `http` port names select the protocols.
    let car = &snap.services["car.default.svc.cluster.local"];
    let protocols: Vec<(u16, Protocol)> = car.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(protocols, [(9090, Protocol::Grpc), (8080, Protocol::Http)]);
    assert_eq!(car.endpoints.len(), 1);
    assert_eq!(
        car.endpoints[0].labels.get("version").map(String::as_str),
        Some("v1.3")
    );
    // The truncated ratings-v1 fragment still defines a workload, from its labels.
    assert!(snap.workloads.contains_key("default/ratings-v1-0"));
    assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
}

#[test]
fn ambient_enrollment_follows_namespace_and_pod_labels() {
    let loaded = load_paths(&[fixture("ambient")]).unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    assert!(snap.namespaces["ambient-ns"].ambient);
    assert!(
        snap.namespaces["injected"].ambient,
        "istio-injection=enabled is the same intent"
    );
    assert!(!snap.namespaces["plain"].ambient);
    assert!(snap.workloads["ambient-ns/web-0"].ambient);
    assert!(!snap.workloads["ambient-ns/opted-out"].ambient);
    assert!(snap.workloads["injected/api-0"].ambient);
    assert!(snap.workloads["plain/enrolled-pod"].ambient);
    assert!(!snap.workloads["plain/batch-0"].ambient);
}

#[test]
fn config_dump_is_sorted_json_and_yaml() {
    let snap = bookinfo_with(&["virtual-service-reviews-80-20.yaml"]);
    let json = snap.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(value["services"][REVIEWS]["vip"].is_string());
    let keys: Vec<&String> = value["services"].as_object().expect("map").keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let yaml = snap.to_yaml();
    assert!(yaml.contains("reviews.default.svc.cluster.local"), "{yaml}");
    // Rebuilding gives the same dump (stable VIPs).
    assert_eq!(
        json,
        bookinfo_with(&["virtual-service-reviews-80-20.yaml"]).to_json()
    );
    let _ = fixtures();
}

#[test]
fn a_virtual_service_without_hosts_is_kept_as_a_delegate() {
    let loaded = mesh_config::load_str(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes, namespace: team}
spec:
  http:
  - route: [{destination: {host: reviews}}]
"#,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    assert!(snap.routes.is_empty());
    let delegate = &snap.delegates["team/reviews-routes"];
    assert_eq!(
        delegate.http[0].route[0].destination.host,
        "reviews.team.svc.cluster.local"
    );
}

#[test]
fn a_pods_workload_is_the_controller_its_owner_references_name() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-7d8f9c6b5-x2k4p
  namespace: default
  labels: {app: reviews, version: v1, pod-template-hash: 7d8f9c6b5}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v1-7d8f9c6b5, uid: a1, controller: true}
spec: {containers: [{name: reviews, image: reviews}]}
status: {podIP: 198.18.0.9}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: default
  labels: {app.kubernetes.io/name: postgres}
  ownerReferences:
  - {apiVersion: apps/v1, kind: StatefulSet, name: db, uid: a2, controller: true}
spec: {containers: [{name: db, image: postgres}]}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: default}
spec: {containers: [{name: sleep, image: curl}]}
"#;
    let loaded = mesh_config::load_str(yaml, None).unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let names = |key: &str| {
        let w = &snap.workloads[key];
        (
            w.workload_name.clone(),
            w.canonical_service.clone(),
            w.canonical_revision.clone(),
        )
    };
    assert_eq!(
        names("default/reviews-v1-7d8f9c6b5-x2k4p"),
        ("reviews-v1".into(), "reviews".into(), "v1".into())
    );
    assert_eq!(
        names("default/db-0"),
        ("db".into(), "postgres".into(), "latest".into())
    );
    assert_eq!(
        names("default/sleep"),
        ("sleep".into(), "sleep".into(), "latest".into())
    );
}
