//! How long one routing decision takes: `cargo run --release -p mesh-l7 --example
//! bench_decide`. Bookinfo with its DestinationRules and the 80/20 and jason rules, one
//! mesh request per decision (route, weights, round robin), and one through the gateway.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use mesh_l7::{Decision, Entry, LbState, Request, RouteTable, Source, TableOptions};

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/istio-bookinfo");
    let files = [
        "bookinfo.yaml",
        "destination-rule-all.yaml",
        "bookinfo-gateway.yaml",
        "virtual-service-reviews-jason-v2-v3.yaml",
        "virtual-service-ratings-test-delay.yaml",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    let loaded = mesh_config::load_paths(&paths)?;
    let snapshot = Arc::new(mesh_config::Snapshot::build(&loaded)?);
    let started = Instant::now();
    let table = RouteTable::build(snapshot, TableOptions::default())?;
    println!("table built in {:?}", started.elapsed());

    let state = LbState::new();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut headers = HeaderMap::new();
    headers.insert("end-user", HeaderValue::from_static("jason"));
    let mesh = Request {
        method: "GET",
        scheme: "http",
        authority: "reviews:9080",
        path: "/reviews/0",
        headers: &headers,
        port: 9080,
        service: None,
        source: Source {
            namespace: Some("default"),
            ..Source::default()
        },
        entry: Entry::Mesh,
    };
    let gateway = Request {
        authority: "bookinfo.example.com",
        path: "/productpage?u=normal",
        port: 80,
        entry: Entry::Gateway("default/bookinfo-gateway"),
        ..mesh
    };
    for (name, req) in [("mesh", &mesh), ("gateway", &gateway)] {
        let n = 1_000_000u32;
        let started = Instant::now();
        let mut forwarded = 0u32;
        for _ in 0..n {
            if let Decision::Forward(_) = table.decide(req, &state, &mut rng, Instant::now()) {
                forwarded += 1;
            }
        }
        let per = started.elapsed() / n;
        println!("{name}: {per:?} per decision ({forwarded} of {n} forwarded)");
    }
    Ok(())
}
