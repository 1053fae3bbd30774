use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::*;

/// The first object of `kind`.
fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

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
    // The CRDs first: a single `kubectl apply` creates them before anything could use them.
    let crds = crds::KINDS.len();
    assert_eq!(kinds[..crds], ["CustomResourceDefinition"; 7]);
    assert_eq!(
        kinds[crds..],
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    for crd in &objects[..crds] {
        round_trip::<CustomResourceDefinition>(crd);
    }
    round_trip::<Namespace>(&objects[crds]);
    round_trip::<ServiceAccount>(&objects[crds + 1]);
    round_trip::<ClusterRole>(&objects[crds + 2]);
    round_trip::<ClusterRoleBinding>(&objects[crds + 3]);
    round_trip::<DaemonSet>(&objects[crds + 4]);
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
    let rendered = objects(&values).unwrap();
    let ds = find(&rendered, "DaemonSet");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/mesh:1");
    let args = container["args"].to_string();
    assert!(
        args.contains("\"--capture-cgroup\",\"/sys/fs/cgroup/kubepods\""),
        "{args}"
    );
    values.set("crds=false").unwrap();
    let without = objects(&values).unwrap();
    assert!(
        without
            .iter()
            .all(|o| o["kind"] != "CustomResourceDefinition"),
        "crds=false still renders CRDs"
    );
    assert_eq!(without.len(), rendered.len() - crds::KINDS.len());
    values.set("crds=true").unwrap();
    assert_eq!(objects(&values).unwrap().len(), rendered.len());
    assert!(matches!(
        values.set("crds=maybe"),
        Err(ManifestError::NotBool { .. })
    ));
    assert!(matches!(
        values.set("nope"),
        Err(ManifestError::NotKeyValue(_))
    ));
    assert!(matches!(
        values.set("colour=blue"),
        Err(ManifestError::UnknownKey { .. })
    ));
}

/// The agent may read every kind it is given a CRD for.
#[test]
fn the_cluster_role_reads_every_kind_with_a_crd() {
    let rules = reader_rules();
    for kind in crds::KINDS {
        let readable = rules.iter().any(|rule| {
            rule.api_groups.as_deref() == Some(&[kind.group.to_string()][..])
                && rule
                    .resources
                    .as_ref()
                    .is_some_and(|r| r.iter().any(|r| r == kind.plural))
                && ["get", "list", "watch"]
                    .iter()
                    .all(|verb| rule.verbs.iter().any(|v| v == verb))
        });
        assert!(readable, "the ClusterRole cannot watch {}", kind.crd_name());
    }
}
