//! The store swaps snapshots atomically, keeps the last good one on bad input and applies an
//! endpoint change incrementally.

mod common;

use std::sync::Arc;

use common::fixture;
use mesh_config::store::{UnitChange, UnitUpdate};
use mesh_config::{ConfigStore, LoadOptions, yaml};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn unit_from_file(rel: &str) -> UnitUpdate {
    let path = fixture(rel);
    let load = yaml::load_file(&path, &LoadOptions::default());
    assert!(load.errors.is_empty(), "{:?}", load.errors);
    UnitUpdate {
        unit: rel.to_string(),
        change: UnitChange::Set(load.objects),
    }
}

fn unit_from_str(unit: &str, text: &str) -> UnitUpdate {
    let load = yaml::load_str(
        text,
        Some(std::path::Path::new(unit)),
        &LoadOptions::default(),
    );
    UnitUpdate {
        unit: unit.to_string(),
        change: if load.errors.is_empty() {
            UnitChange::Set(load.objects)
        } else {
            UnitChange::Failed(load.errors)
        },
    }
}

fn weights(store: &ConfigStore) -> Vec<Option<i32>> {
    store.snapshot().routes_for(REVIEWS)[0].http[0]
        .route
        .iter()
        .map(|d| d.weight)
        .collect()
}

fn bookinfo_store() -> ConfigStore {
    let store = ConfigStore::default();
    store
        .replace_source(
            "dir:test",
            vec![
                unit_from_file("istio-bookinfo/bookinfo.yaml"),
                unit_from_file("istio-bookinfo/destination-rule-all.yaml"),
                unit_from_file("istio-bookinfo/virtual-service-reviews-80-20.yaml"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    store
}

const VS_50_50: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
";

#[test]
fn a_good_edit_swaps_and_readers_keep_their_snapshot() {
    let store = bookinfo_store();
    assert_eq!(weights(&store), [Some(80), Some(20)]);
    let held = store.snapshot(); // an established connection's view
    let generation = store.generation();
    store
        .apply(
            "dir:test",
            vec![unit_from_str(
                "istio-bookinfo/virtual-service-reviews-80-20.yaml",
                VS_50_50,
            )],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(weights(&store), [Some(50), Some(50)]);
    assert_eq!(store.generation(), generation + 1);
    assert_eq!(
        held.routes_for(REVIEWS)[0].http[0].route[0].weight,
        Some(80)
    );
}

#[test]
fn a_broken_edit_keeps_the_last_good_snapshot_and_is_reported() {
    let store = bookinfo_store();
    let before = store.snapshot();
    let generation = store.generation();

    // Valid YAML, invalid mesh config: weights sum to 90.
    let bad = VS_50_50.replace(
        "weight: 50\n    - destination: {host: reviews, subset: v3}\n      weight: 50",
        "weight: 50\n    - destination: {host: reviews, subset: v3}\n      weight: 40",
    );
    let err = store
        .apply(
            "dir:test",
            vec![unit_from_str(
                "istio-bookinfo/virtual-service-reviews-80-20.yaml",
                &bad,
            )],
        )
        .expect_err("weights of 90 must be refused");
    assert!(err.to_string().contains("weights sum to 90"), "{err}");
    assert!(Arc::ptr_eq(&before, &store.snapshot()));
    assert_eq!(store.generation(), generation);
    assert_eq!(weights(&store), [Some(80), Some(20)]);

    // Not even YAML.
    let err = store
        .apply(
            "dir:test",
            vec![unit_from_str(
                "istio-bookinfo/virtual-service-reviews-80-20.yaml",
                "a: [b\n",
            )],
        )
        .expect_err("syntax error must be refused");
    assert!(err.to_string().contains("YAML syntax"), "{err}");
    assert_eq!(weights(&store), [Some(80), Some(20)]);

    let status = store.status();
    assert_eq!(status.errors_total, 2);
    assert_eq!(status.last_errors.len(), 1, "{:?}", status.last_errors);

    // Fixing the file clears the error.
    store
        .apply(
            "dir:test",
            vec![unit_from_str(
                "istio-bookinfo/virtual-service-reviews-80-20.yaml",
                VS_50_50,
            )],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(store.status().last_errors.is_empty());
    assert_eq!(weights(&store), [Some(50), Some(50)]);
}

#[test]
fn an_endpoint_change_is_applied_incrementally() {
    let store = bookinfo_store();
    let eps = |ip: &str| {
        format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: reviews\nsubsets:\n- addresses:\n  - ip: {ip}\n  ports:\n  - port: 9080\n    name: http\n"
        )
    };
    store
        .apply(
            "dir:test",
            vec![unit_from_str("eps.yaml", &eps("198.18.1.10"))],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let first = store.snapshot();
    assert_eq!(first.services[REVIEWS].endpoints.len(), 1);
    store
        .apply(
            "dir:test",
            vec![unit_from_str("eps.yaml", &eps("198.18.1.11"))],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let second = store.snapshot();
    let addr = second.services[REVIEWS].endpoints[0]
        .address
        .map(|a| a.to_string());
    assert_eq!(addr.as_deref(), Some("198.18.1.11"));
    // Everything else is shared with the previous snapshot, not rebuilt.
    let ratings = "ratings.default.svc.cluster.local";
    assert!(Arc::ptr_eq(
        &first.services[ratings],
        &second.services[ratings]
    ));
    assert!(Arc::ptr_eq(
        &first.routes[REVIEWS][0],
        &second.routes[REVIEWS][0]
    ));

    // Removing the Endpoints object falls back to the selector (off-cluster workloads).
    store
        .apply(
            "dir:test",
            vec![UnitUpdate {
                unit: "eps.yaml".into(),
                change: UnitChange::Remove,
            }],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.snapshot().services[REVIEWS].endpoints.len(), 3);
}
