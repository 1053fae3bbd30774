use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::*;

/// The first object of `kind`.
fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// The strings of a JSON array (a container's `args`).
fn strings(array: &Value) -> Vec<&str> {
    array
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

/// `doc` reads as a `T` and back unchanged: no field `T` lacks (one would be dropped).
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(&serde_json::to_value(typed).unwrap(), doc);
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
            "DaemonSet",
            "ServiceAccount",
            "Deployment",
            "Service"
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
    round_trip::<ServiceAccount>(&objects[crds + 5]);
    round_trip::<k8s_openapi::api::apps::v1::Deployment>(&objects[crds + 6]);
    round_trip::<k8s_openapi::api::core::v1::Service>(&objects[crds + 7]);
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

/// The ingress gateway is Istio's: what Bookinfo's Gateway selects, on Istio's ports, in
/// the mesh (ambient), unprivileged, reading the API with the agent's role.
#[test]
fn the_ingress_gateway_is_selected_by_bookinfos_gateway_and_runs_unprivileged() {
    let objects = objects(&Values::default()).unwrap();
    let deployment = find(&objects, "Deployment");
    let template = &deployment["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["istio"], "ingressgateway");
    assert_eq!(
        template["metadata"]["labels"]["istio.io/dataplane-mode"],
        "ambient"
    );
    let pod = &template["spec"];
    assert_eq!(pod["serviceAccountName"], "istio-ingressgateway");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert!(container["securityContext"].get("privileged").is_none());
    let args = strings(&container["args"]);
    assert_eq!(args[..2], ["gateway", "--kubernetes"]);
    assert!(args.contains(&"istio=ingressgateway,app=istio-ingressgateway"));
    // The Service carries the port bookinfo-gateway.yaml's server listens on to that port.
    assert_eq!(
        pod["securityContext"]["sysctls"][0]["name"],
        "net.ipv4.ip_unprivileged_port_start"
    );
    let service = find(&objects, "Service");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(service["spec"]["selector"]["istio"], "ingressgateway");
    let bookinfo_gateway = crate::demo::config::BOOKINFO[1].1;
    assert!(
        bookinfo_gateway.contains("number: 80\n"),
        "{bookinfo_gateway}"
    );
    assert!(bookinfo_gateway.contains("istio: ingressgateway"));
    // Bound to the role the agent reads with.
    let binding = find(&objects, "ClusterRoleBinding");
    let subjects: Vec<&str> = binding["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(subjects, ["mesh-agent", "istio-ingressgateway"]);

    let mut values = Values::default();
    values.set("gateway=false").unwrap();
    let objects = super::objects(&values).unwrap();
    assert!(objects.iter().all(|o| o["kind"] != "Deployment"));
}

/// A waypoint from `manifest waypoint` is what the mesh recognises as one: its Gateway is
/// read as class istio-waypoint, and its pods carry the Gateway's name, are enrolled, and
/// run `mesh-agent waypoint --kubernetes` unprivileged under the waypoint's own identity.
#[test]
fn a_generated_waypoint_is_read_as_the_namespaces_waypoint() {
    let text = generate_waypoint(&Values::default(), "reviews-wp", "bookinfo").unwrap();
    let loaded = mesh_config::load_str(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let kinds: Vec<String> = loaded
        .objects
        .iter()
        .map(|o| o.object.kind().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k.contains("Gateway")), "{kinds:?}");
    // The snapshot knows the waypoint, and its Deployment's pods are that waypoint's.
    let snap = mesh_config::Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let waypoint = mesh_config::snapshot::WaypointRef {
        namespace: "bookinfo".into(),
        name: "reviews-wp".into(),
    };
    assert!(snap.waypoints.contains_key(&waypoint.key()));
    let pod = &snap.workloads["bookinfo/reviews-wp-0"];
    assert!(waypoint.runs_on(&pod.namespace, &pod.labels));
    assert!(pod.ambient);
    assert_eq!(pod.service_account, "reviews-wp");
    let objects = waypoint::objects(&Values::default(), "reviews-wp", "bookinfo").unwrap();
    assert_eq!(objects[0]["spec"]["gatewayClassName"], "istio-waypoint");
    let deployment = find(&objects, "Deployment");
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
        "reviews-wp"
    );
    assert_eq!(
        template["metadata"]["labels"]["istio.io/dataplane-mode"],
        "ambient"
    );
    assert_eq!(template["spec"]["serviceAccountName"], "reviews-wp");
    let container = &template["spec"]["containers"][0];
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    let args = strings(&container["args"]);
    assert_eq!(
        args[..6],
        [
            "waypoint",
            "--kubernetes",
            "--name",
            "reviews-wp",
            "--namespace",
            "bookinfo"
        ]
    );
    let binding = find(&objects, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "mesh-agent");
    assert_eq!(binding["subjects"][0]["namespace"], "bookinfo");
    round_trip::<ServiceAccount>(&objects[1]);
    round_trip::<ClusterRoleBinding>(&objects[2]);
    round_trip::<k8s_openapi::api::apps::v1::Deployment>(&objects[3]);
}
