//! Decisions from the real Bookinfo and seed files, loaded through the configuration
//! crate's normal path, and from small YAML for the rest; one file per concern.

mod balancing;
mod bookinfo;
mod gateway_l4;
mod rules;
mod units;

pub(crate) use std::sync::Arc;
pub(crate) use std::time::{Duration, Instant};

pub(crate) use http::{HeaderMap, HeaderValue, StatusCode};
pub(crate) use mesh_config::{Snapshot, load_paths};

pub(crate) use crate::*;

pub(crate) fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

/// Bookinfo's Services and Deployments, its DestinationRules, and `files` of
/// `istio-bookinfo/`.
pub(crate) fn bookinfo(files: &[&str]) -> RouteTable {
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
    table_of(Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}")))
}

/// Bookinfo's Services and Deployments plus `yaml`.
pub(crate) fn bookinfo_with_yaml(yaml: &str) -> RouteTable {
    try_bookinfo_with_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn try_bookinfo_with_yaml(yaml: &str) -> Result<RouteTable, L7ConfigError> {
    let base =
        std::fs::read_to_string(fixture("istio-bookinfo/bookinfo.yaml")).expect("bookinfo.yaml");
    let loaded = mesh_config::load_str(&format!("{base}\n---\n{yaml}"), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    RouteTable::build(Arc::new(snap), TableOptions::default())
}

pub(crate) fn table_of(snap: Snapshot) -> RouteTable {
    RouteTable::build(Arc::new(snap), TableOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).expect("header value"));
    }
    h
}

/// A GET from a pod of `default` to `authority` (port 9080).
pub(crate) fn get<'a>(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> Request<'a> {
    Request {
        method: "GET",
        scheme: "http",
        authority,
        path,
        headers,
        port: 9080,
        service: None,
        source: Source {
            namespace: Some("default"),
            ..Source::default()
        },
        entry: Entry::Mesh,
    }
}

pub(crate) fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(7)
}

/// The subset and workload a request goes to; panics on a local answer.
pub(crate) fn upstream(
    table: &RouteTable,
    req: &Request,
    state: &LbState,
    rng: &mut fastrand::Rng,
) -> (Option<String>, String) {
    match table.decide(req, state, rng, Instant::now()) {
        Decision::Forward(f) => (
            f.cluster.subset.clone(),
            f.endpoint.endpoint.workload.clone().unwrap_or_default(),
        ),
        Decision::Respond(r) => panic!("answered locally: {r:?}"),
    }
}
