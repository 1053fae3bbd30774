//! The directory source picks up edits while running; a broken edit keeps the old routing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fixture;
use mesh_config::{ConfigStore, DirSource};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn weights(store: &ConfigStore) -> Vec<Option<i32>> {
    store
        .snapshot()
        .routes_for(REVIEWS)
        .first()
        .map(|vs| vs.http[0].route.iter().map(|d| d.weight).collect())
        .unwrap_or_default()
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn watcher_applies_edits_and_refuses_broken_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in [
        "bookinfo.yaml",
        "destination-rule-all.yaml",
        "virtual-service-reviews-80-20.yaml",
    ] {
        std::fs::copy(fixture(&format!("istio-bookinfo/{f}")), dir.path().join(f)).expect("copy");
    }
    let store = Arc::new(ConfigStore::default());
    let _source = DirSource::spawn(dir.path(), store.clone()).expect("spawn");
    assert_eq!(weights(&store), [Some(80), Some(20)]);

    // Routing changes while running: replace 80/20 with jason → v2, else v3.
    let vs = dir.path().join("virtual-service-reviews-80-20.yaml");
    std::fs::copy(
        fixture("istio-bookinfo/virtual-service-reviews-jason-v2-v3.yaml"),
        &vs,
    )
    .expect("copy");
    eventually("the jason route", || weights(&store) == [None]).await;
    // Let the editor's burst of events settle before taking the generation.
    tokio::time::sleep(mesh_config::source::dir::DEBOUNCE * 3).await;
    let generation = store.generation();

    // A broken edit: the old routing stays, the error is visible in status.
    std::fs::write(
        &vs,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\tbad\n",
    )
    .expect("write");
    eventually("the error to be recorded", || store.errors_total() > 0).await;
    assert_eq!(store.generation(), generation);
    assert_eq!(weights(&store), [None]);
    let status = store.status();
    assert!(
        status.last_errors.iter().any(|e| e
            .to_string()
            .contains("virtual-service-reviews-80-20.yaml:3")),
        "{:?}",
        status.last_errors
    );

    // A new file is picked up; a deleted one is removed.
    let extra = dir.path().join("extra.yml");
    std::fs::copy(
        fixture("istio-bookinfo/egress-rule-google-apis.yaml"),
        &extra,
    )
    .expect("copy");
    eventually("the ServiceEntry", || {
        store
            .snapshot()
            .service_entries
            .contains_key("default/googleapis")
    })
    .await;
    std::fs::remove_file(&extra).expect("rm");
    eventually("the ServiceEntry to go", || {
        !store
            .snapshot()
            .service_entries
            .contains_key("default/googleapis")
    })
    .await;
}
