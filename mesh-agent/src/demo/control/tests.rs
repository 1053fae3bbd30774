use super::*;

fn record(pid: u32) -> DemoRecord {
    DemoRecord {
        pid,
        config_dir: PathBuf::from(format!("/tmp/mesh-demo-{pid}")),
    }
}

#[test]
fn without_a_pid_the_only_running_demo_is_meant() {
    assert_eq!(choose(vec![record(7)], None).unwrap(), record(7));
    assert!(matches!(choose(vec![], None), Err(ControlError::NoDemo)));
    let several = choose(vec![record(7), record(9)], None).unwrap_err();
    assert_eq!(
        several.to_string(),
        "2 demos are running (pids 7, 9): say which with --demo PID"
    );
    assert_eq!(
        choose(vec![record(7), record(9)], Some(9)).unwrap(),
        record(9)
    );
    assert_eq!(
        choose(vec![record(7)], Some(8)).unwrap_err().to_string(),
        "no running demo has pid 8 (running: 7)"
    );
}

const TWO_ROUTES: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings, subset: v1}}]}]
";

#[test]
fn apply_writes_each_object_where_the_demo_watches_and_delete_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let demo = DemoRecord {
        pid: 1,
        config_dir: dir.path().to_path_buf(),
    };
    let file = dir.path().join("routes.in");
    std::fs::write(&file, TWO_ROUTES).unwrap();
    assert_eq!(
        apply(&demo, &file).unwrap(),
        [
            "VirtualService default/reviews created",
            "VirtualService shop/ratings created"
        ]
    );
    let reviews = dir
        .path()
        .join("zz-applied.VirtualService.default.reviews.yaml");
    let text = std::fs::read_to_string(&reviews).unwrap();
    assert!(
        text.contains("name: reviews") && !text.contains("ratings"),
        "{text}"
    );
    // What the agents read back is the object applied.
    let loaded = mesh_config::load_paths(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(loaded.objects.len(), 2);
    assert_eq!(
        apply(&demo, &file).unwrap()[0],
        "VirtualService default/reviews configured"
    );

    let only_reviews = dir.path().join("reviews.in");
    std::fs::write(&only_reviews, TWO_ROUTES.split("---").next().unwrap()).unwrap();
    assert_eq!(
        delete(&demo, &only_reviews).unwrap(),
        ["VirtualService default/reviews deleted"]
    );
    assert!(!reviews.exists());
    assert!(delete(&demo, &only_reviews).unwrap()[0].contains("not deleted"));
}

#[test]
fn a_file_that_does_not_load_is_refused_whole_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let demo = DemoRecord {
        pid: 1,
        config_dir: dir.path().to_path_buf(),
    };
    let file = dir.path().join("bad.in");
    std::fs::write(
        &file,
        format!("{TWO_ROUTES}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: x}}\nspec: {{hostz: [x]}}\n"),
    )
    .unwrap();
    let error = apply(&demo, &file).unwrap_err().to_string();
    assert!(
        error.contains("bad.in") && error.contains("hostz"),
        "{error}"
    );
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("zz-applied"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
