//! Budgets on hostile input: an alias bomb, a deep nesting, an oversized input and a flood of
//! documents are each refused with an error naming the file and the limit, quickly and
//! without the memory their expansion would take; the store keeps its last good snapshot
//! and counts the refusal per limit.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fixture;
use mesh_config::store::{UnitChange, UnitUpdate};
use mesh_config::yaml::{self, FileLoad, limits::Limit, limits::Limits};
use mesh_config::{ConfigStore, ErrorKind, LoadOptions};

fn load(text: &str, file: &str, limits: Limits) -> FileLoad {
    let opts = LoadOptions {
        limits,
        ..LoadOptions::default()
    };
    yaml::load_str(text, Some(Path::new(file)), &opts)
}

/// The only error of `load` must be a refusal over `limit`, naming `file` and the limit
/// with its value.
fn assert_refused(load: &FileLoad, file: &str, limit: Limit, max: usize) {
    assert!(load.objects.is_empty(), "objects kept: {:?}", load.objects);
    assert_eq!(load.errors.len(), 1, "{:?}", load.errors);
    let e = &load.errors[0];
    assert_eq!(e.kind, ErrorKind::LimitExceeded { limit, max }, "{e}");
    let text = e.to_string();
    assert!(text.starts_with(file), "{text}");
    assert!(
        text.contains(limit.as_str()) && text.contains(&max.to_string()),
        "{text}"
    );
}

/// Peak resident memory of this test process so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn billion_laughs_is_refused_by_the_alias_budget_quickly_and_small() {
    let path = fixture("hostile/billion-laughs.yaml");
    let started = Instant::now();
    let load = yaml::load_file(&path, &LoadOptions::default());
    let took = started.elapsed();
    let max = Limits::default().aliased_nodes;
    assert!(load.objects.is_empty());
    assert_eq!(load.errors.len(), 1, "{:?}", load.errors);
    let e = &load.errors[0];
    assert_eq!(
        e.kind,
        ErrorKind::LimitExceeded {
            limit: Limit::AliasedNodes,
            max
        }
    );
    assert_eq!(e.place.file.as_deref(), Some(path.as_path()));
    // The alias that would cross the budget: the first `*e` of line 13 (74 718 nodes
    // copied by then, 66 430 more asked for).
    assert_eq!(e.place.line, Some(13), "{e}");
    assert!(
        e.to_string().contains("aliased_nodes limit of 100000"),
        "{e}"
    );
    // Expanded, the document is ~4e8 nodes (tens of GB); refused, a few tens of MB at most.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let peak = peak_rss_kib();
    assert!(peak < 512 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_small_budget_stops_a_small_bomb_and_one_large_scalar_alias_hits_expanded_bytes() {
    let bomb = "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n";
    let limits = Limits {
        nodes: 50,
        ..Limits::default()
    };
    assert_refused(
        &load(bomb, "bomb.yaml", limits),
        "bomb.yaml",
        Limit::Nodes,
        50,
    );

    // Few nodes, many bytes: a 1 KiB scalar aliased a thousand times.
    let big = "x".repeat(1024);
    let aliases = vec!["*s"; 1000].join(", ");
    let text = format!("s: &s {big}\nl: [{aliases}]\n");
    let limits = Limits {
        expanded_bytes: 100 * 1024,
        ..Limits::default()
    };
    assert_refused(
        &load(&text, "wide.yaml", limits),
        "wide.yaml",
        Limit::ExpandedBytes,
        100 * 1024,
    );
}

#[test]
fn ordinary_anchors_and_aliases_still_load() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: &l {app: web}\nspec:\n  selector: *l\n  ports: [{name: http, port: 80}]\n";
    let load = load(text, "ok.yaml", Limits::default());
    assert!(load.errors.is_empty(), "{:?}", load.errors);
    assert_eq!(load.objects.len(), 1);
}

#[test]
fn deep_nesting_is_refused_by_the_depth_budget() {
    let max = Limits::default().depth;
    // Block mappings 1000 deep (the parser cannot scan ahead of these).
    let block = |levels: usize| {
        (0..levels)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect::<String>()
    };
    assert_refused(
        &load(&block(1000), "deep.yaml", Limits::default()),
        "deep.yaml",
        Limit::Depth,
        max,
    );
    // Flow sequences 100 000 deep (200 KB of brackets): the parser's own bound meets
    // these first; the refusal is the same.
    let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_refused(
        &load(&flow, "flow.yaml", Limits::default()),
        "flow.yaml",
        Limit::Depth,
        max,
    );
    // Within the budget, the same shapes parse.
    for fine in [
        block(max),
        format!("k: {}{}", "[".repeat(max - 1), "]".repeat(max - 1)),
    ] {
        let l = load(&fine, "fine.yaml", Limits::default());
        assert!(
            l.errors.iter().all(|e| e.kind.limit().is_none()),
            "{:?}",
            l.errors
        );
    }

    // Depth through an alias: a 40-deep anchored value used 40 levels down.
    let nested = |n: usize, inner: &str| format!("{}{inner}{}", "[".repeat(n), "]".repeat(n));
    let text = format!("a: &a {}\nb: {}\n", nested(40, "x"), nested(40, "*a"));
    assert_refused(
        &load(&text, "via-alias.yaml", Limits::default()),
        "via-alias.yaml",
        Limit::Depth,
        max,
    );
}

#[test]
fn oversized_input_is_refused_by_the_input_bytes_budget() {
    let max = Limits::default().input_bytes;
    let text = format!("a: {}\n", "x".repeat(max));
    assert_refused(
        &load(&text, "big.yaml", Limits::default()),
        "big.yaml",
        Limit::InputBytes,
        max,
    );

    // A 100 MB file is refused from its size, without being read (a sparse file: no disk).
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(100 * 1000 * 1000).expect("set_len");
    let started = Instant::now();
    let load = yaml::load_file(&path, &LoadOptions::default());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_refused(&load, &path.display().to_string(), Limit::InputBytes, max);
}

#[test]
fn too_many_documents_are_refused_by_the_documents_budget() {
    let text = "---\na: 1\n".repeat(11);
    let limits = Limits {
        documents: 10,
        ..Limits::default()
    };
    assert_refused(
        &load(&text, "many.yaml", limits),
        "many.yaml",
        Limit::Documents,
        10,
    );
    let ten = "---\na: 1\n".repeat(10);
    assert!(
        load(&ten, "ten.yaml", limits)
            .errors
            .iter()
            .all(|e| e.kind.limit().is_none())
    );
}

#[test]
fn the_store_keeps_the_last_good_snapshot_and_counts_each_limit() {
    let store = ConfigStore::default();
    let good = yaml::load_file(
        &fixture("istio-bookinfo/bookinfo.yaml"),
        &LoadOptions::default(),
    );
    assert!(good.errors.is_empty(), "{:?}", good.errors);
    store
        .apply(
            "dir",
            vec![UnitUpdate {
                unit: "bookinfo.yaml".into(),
                change: UnitChange::Set(good.objects),
            }],
        )
        .expect("bookinfo applies");
    let before = store.snapshot();
    let generation = store.generation();

    // The bomb replaces the same unit: refused, the unit keeps its objects.
    let bomb = yaml::load_file(
        &fixture("hostile/billion-laughs.yaml"),
        &LoadOptions::default(),
    );
    let refused = store.apply(
        "dir",
        vec![UnitUpdate {
            unit: "bookinfo.yaml".into(),
            change: UnitChange::Failed(bomb.errors.clone()),
        }],
    );
    assert!(refused.is_err());
    assert_eq!(store.generation(), generation);
    assert!(std::sync::Arc::ptr_eq(&before, &store.snapshot()));
    assert!(
        store
            .snapshot()
            .services
            .contains_key("reviews.default.svc.cluster.local")
    );

    // Refused before the store (the API's path): counted too, snapshot untouched.
    store.reject(&bomb.errors);
    let status = store.status();
    assert_eq!(status.limits_exceeded.get("aliased_nodes"), Some(&2));
    assert_eq!(status.limits_exceeded.get("nodes"), Some(&0));
    assert_eq!(status.limits_exceeded.get("depth"), Some(&0));
    assert_eq!(status.errors_total, 2);
    assert!(std::sync::Arc::ptr_eq(&before, &store.snapshot()));
}
