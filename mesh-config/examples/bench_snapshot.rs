//! Benchmark (not a test): build a snapshot of 10,000 Services and 100,000 endpoints, then
//! apply one endpoint change through the store. Reports time and peak memory (VmHWM).
//!
//! `cargo run --release -p mesh-config --example bench_snapshot [services] [endpoints-per-service]`
//! Aim: full build < 1 s, single change < 10 ms.

use std::time::Instant;

use mesh_config::store::{UnitChange, UnitUpdate};
use mesh_config::{ConfigStore, LoadOptions, yaml};

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn service_yaml(i: usize, per: usize, base: u8) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: ns-{}\nspec:\n  selector:\n    app: svc-{i}\n  ports:\n  - name: http\n    port: 80\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: svc-{i}\n  namespace: ns-{}\nsubsets:\n- ports:\n  - name: http\n    port: 8080\n  addresses:\n",
        i % 100,
        i % 100
    );
    for e in 0..per {
        let n = i * per + e;
        s.push_str(&format!(
            "  - ip: 198.{base}.{}.{}\n",
            (n >> 8) & 0xff,
            n & 0xff
        ));
    }
    s
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    let per = args.get(1).copied().unwrap_or(10);
    let opts = LoadOptions::default();

    let t = Instant::now();
    // One unit per object, as the Kubernetes source keeps them.
    let units: Vec<UnitUpdate> = (0..services)
        .flat_map(|i| yaml::load_str(&service_yaml(i, per, 18), None, &opts).objects)
        .map(|o| UnitUpdate {
            unit: o.key().to_string(),
            change: UnitChange::Set(vec![o]),
        })
        .collect();
    let parse = t.elapsed();

    let store = ConfigStore::default();
    let t = Instant::now();
    let snap = match store.replace_source("bench", units) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("build failed: {e}");
            std::process::exit(1);
        }
    };
    let build = t.elapsed();
    println!(
        "parse {services} services + {} endpoints from YAML: {:.0} ms",
        services * per,
        parse.as_secs_f64() * 1e3
    );
    println!(
        "full snapshot build: {:.0} ms ({})",
        build.as_secs_f64() * 1e3,
        snap.summary()
    );

    let change = {
        let load = yaml::load_str(&service_yaml(42, per, 19), None, &opts);
        // A watch event replacing svc-42's Endpoints (new addresses).
        load.objects
            .into_iter()
            .filter(|o| o.object.kind() == mesh_config::Kind::Endpoints)
            .map(|o| UnitUpdate {
                unit: o.key().to_string(),
                change: UnitChange::Set(vec![o]),
            })
            .collect::<Vec<_>>()
    };
    let t = Instant::now();
    let result = store.apply("bench", change);
    let one = t.elapsed();
    match result {
        Ok(snap) => {
            let eps = &snap.services["svc-42.ns-42.svc.cluster.local"].endpoints;
            println!(
                "one endpoint change: {:.2} ms (svc-42 now {} endpoints, first {:?})",
                one.as_secs_f64() * 1e3,
                eps.len(),
                eps.first().and_then(|e| e.address)
            );
        }
        Err(e) => println!("one endpoint change failed: {e}"),
    }
    if let Some(mib) = peak_rss_mib() {
        println!("peak memory (VmHWM): {mib:.0} MiB");
    }
}
