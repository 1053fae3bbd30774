use super::*;

/// `deploy/mesh.yaml` is what the command renders with the defaults.
#[test]
fn deploy_is_in_sync_with_the_command() {
    let rendered = generate(&Values::default()).unwrap();
    let committed = include_str!("../../../deploy/mesh.yaml");
    assert!(
        rendered == committed,
        "deploy/mesh.yaml drifted: run `cargo run -p mesh-agent -- manifest generate > deploy/mesh.yaml`"
    );
}

/// Each rendered document reads back as its typed object and says nothing that object
/// does not hold (a misspelled or unknown field would be dropped on the way back).
#[test]
fn every_document_parses_back_as_its_typed_object() {
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
        let typed: T = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(&serde_json::to_value(typed).unwrap(), doc);
    }
    let objects = objects(&Values::default()).unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    round_trip::<Namespace>(&objects[0]);
    round_trip::<ServiceAccount>(&objects[1]);
    round_trip::<ClusterRole>(&objects[2]);
    round_trip::<ClusterRoleBinding>(&objects[3]);
    round_trip::<DaemonSet>(&objects[4]);
    // And the YAML text reads back to the same documents.
    let text = generate(&Values::default()).unwrap();
    let docs: Vec<Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|doc| serde_saphyr::from_str(doc).unwrap())
        .collect();
    assert_eq!(docs, objects);
}

#[test]
fn set_changes_values_and_refuses_unknown_keys() {
    let mut values = Values::default();
    values.set("image=registry.example/mesh:1").unwrap();
    values.set("captureCgroup=/sys/fs/cgroup/kubepods").unwrap();
    let ds = &objects(&values).unwrap()[4];
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/mesh:1");
    let args = container["args"].to_string();
    assert!(
        args.contains("\"--capture-cgroup\",\"/sys/fs/cgroup/kubepods\""),
        "{args}"
    );
    assert!(matches!(
        values.set("nope"),
        Err(ManifestError::NotKeyValue(_))
    ));
    assert!(matches!(
        values.set("colour=blue"),
        Err(ManifestError::UnknownKey { .. })
    ));
}
