use super::*;
use crate::app::reviews::Stars;
use crate::demo::config::BOOKINFO;

fn load(text: &str) -> Vec<LoadedObject> {
    mesh_config::load_str(text, None)
        .expect("valid YAML")
        .objects
}

fn bookinfo() -> Vec<LoadedObject> {
    BOOKINFO.iter().flat_map(|(_, text)| load(text)).collect()
}

#[test]
fn bookinfo_runs_six_pods_named_as_kubernetes_names_them_over_two_nodes() {
    let plan = plan(&bookinfo(), 2, &mut fastrand::Rng::with_seed(7));
    let names: Vec<&str> = plan.workloads.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for (pod, deployment) in plan.workloads.iter().zip([
        "details-v1",
        "ratings-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
        "productpage-v1",
    ]) {
        // <deployment>-<template hash>-<5 chars>, from Kubernetes' safe alphabet.
        let rest = pod.name.strip_prefix(&format!("{deployment}-")).unwrap();
        let (hash, suffix) = rest.split_once('-').unwrap();
        assert!(!hash.is_empty() && hash.len() <= 10, "{}", pod.name);
        assert_eq!(suffix.len(), 5, "{}", pod.name);
        assert!(
            rest.bytes()
                .all(|b| b == b'-' || SAFE_ALPHABET.contains(&b))
        );
        assert_eq!(pod.owner, format!("Deployment/{deployment}"));
        assert_eq!(pod.namespace, "default");
        // Labelled and owned as a Deployment's ReplicaSet does it; one workload in metrics.
        assert_eq!(pod.labels[POD_TEMPLATE_HASH], hash);
        assert_eq!(
            pod.controller(),
            Some(("ReplicaSet", format!("{deployment}-{hash}")))
        );
        assert_eq!(pod.workload_name(), deployment);
    }
    assert_eq!(plan.gateway.workload_name(), "istio-ingressgateway");
    let reviews_v2 = &plan.workloads[3];
    assert_eq!(reviews_v2.labels["app"], "reviews");
    assert_eq!(reviews_v2.labels["version"], "v2");
    assert_eq!(reviews_v2.service_account, "bookinfo-reviews");
    assert_eq!(reviews_v2.containers[0].role, Role::Reviews(Stars::Black));
    assert_eq!(reviews_v2.containers[0].ports[0].number, 9080);
    assert!(
        reviews_v2.containers[0]
            .env
            .contains(&("LOG_DIR".into(), "/tmp/logs".into()))
    );
    assert_eq!(plan.workloads[5].containers[0].role, Role::Productpage);

    // The gateway first, then round robin: 7 pods, 4 on node 1, 3 on node 2, no slot twice.
    assert_eq!((plan.gateway.node, plan.gateway.slot), (1, 1));
    assert_eq!(plan.gateway.labels["istio"], "ingressgateway");
    assert_eq!(plan.pods_per_node, 4);
    let slots: BTreeSet<(usize, usize)> = plan.all_pods().map(|p| (p.node, p.slot)).collect();
    assert_eq!(slots.len(), 7);
    assert!(
        plan.all_pods()
            .all(|p| (1..=2).contains(&p.node) && p.slot >= 1)
    );

    // The template hash is the template's: the same on every run, different per version.
    let again = super::plan(&bookinfo(), 2, &mut fastrand::Rng::with_seed(8));
    let hash = |p: &PodPlan| p.name.rsplit_once('-').unwrap().0.to_string();
    assert_eq!(hash(&plan.workloads[3]), hash(&again.workloads[3]));
    assert_ne!(hash(&plan.workloads[2]), hash(&plan.workloads[3]));
}

#[test]
fn replicas_stateful_sets_replica_sets_bare_pods_and_other_images() {
    let objects = load(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v2}}
    spec:
      containers:
      - name: site
        image: example.com/acme/website:2.0
        ports: [{containerPort: 8080, name: http}, {containerPort: 5353, protocol: UDP}]
        env: [{name: MODE, value: fast}, {name: SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: postgres, ports: [{containerPort: 5432}]}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: car-rs}
spec:
  replicas: 1
  selector: {matchLabels: {app: car}}
  template:
    metadata: {labels: {app: car}}
    spec: {containers: [{name: car, image: car:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: lonely, labels: {app: lonely}}
spec: {serviceAccountName: solo, containers: [{name: c, image: busybox}]}
"#,
    );
    let plan = plan(&objects, 3, &mut fastrand::Rng::with_seed(1));
    let names: Vec<&str> = plan.workloads.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names[..3].iter().all(|n| n.starts_with("web-")));
    assert_eq!(names[..3].iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(&names[3..5], ["db-0", "db-1"]);
    let rs = names[5].strip_prefix("car-rs-").unwrap();
    assert_eq!(rs.len(), 5);
    assert_eq!(names[6], "lonely");
    let workloads: Vec<String> = plan.workloads.iter().map(PodPlan::workload_name).collect();
    assert_eq!(
        workloads,
        ["web", "web", "web", "db", "db", "car-rs", "lonely"]
    );
    assert_eq!(
        plan.workloads[3].controller(),
        Some(("StatefulSet", "db".into()))
    );
    assert_eq!(plan.workloads[6].controller(), None);

    let web = &plan.workloads[0];
    assert_eq!(web.namespace, "shop");
    assert_eq!(web.service_account, "default");
    let site = &web.containers[0];
    assert_eq!(site.role, Role::Generic);
    assert_eq!(
        site.ports,
        [Port {
            number: 8080,
            name: Some("http".into())
        }],
        "UDP ports are not served"
    );
    assert_eq!(site.env, [("MODE".to_string(), "fast".to_string())]);
    assert_eq!(plan.workloads[6].service_account, "solo");
    assert_eq!(plan.workloads[6].namespace, "default");

    // 8 pods over 3 nodes: 3, 3, 2; the three web replicas on three different nodes.
    assert_eq!(plan.pods_per_node, 3);
    let web_nodes: BTreeSet<usize> = plan.workloads[..3].iter().map(|p| p.node).collect();
    assert_eq!(web_nodes.len(), 3);
}

#[test]
fn a_waypoint_gateway_gets_a_pod_of_its_own_labelled_with_its_name() {
    let mut objects = bookinfo();
    objects.extend(load(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: default}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n",
    ));
    let plan = plan(&objects, 2, &mut fastrand::Rng::with_seed(1));
    assert_eq!(plan.waypoints.len(), 1);
    let waypoint = &plan.waypoints[0];
    assert!(waypoint.name.starts_with("waypoint-"), "{}", waypoint.name);
    assert_eq!(waypoint.workload_name(), "waypoint");
    assert_eq!(waypoint.service_account, "waypoint");
    assert_eq!(
        waypoint
            .labels
            .get("gateway.networking.k8s.io/gateway-name"),
        Some(&"waypoint".to_string())
    );
    assert!(waypoint.containers.is_empty());
    // Not a workload: nothing of Bookinfo's changes.
    assert_eq!(plan.workloads.len(), 6);
    assert!(plan.all_pods().any(|p| p.name == waypoint.name));
}

fn website(version: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: website-{version}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: website
      version: {version}
  template:
    metadata:
      labels:
        app: website
        version: {version}
    spec:
      containers:
      - name: website
        image: example/website:{version}
        ports:
        - containerPort: 80
"
    )
}

/// What a demo runs after `changes`: `running` without the stopped, with the started.
fn after(running: &[PodPlan], changes: &Changes) -> Vec<PodPlan> {
    let mut pods: Vec<PodPlan> = running
        .iter()
        .filter(|p| !changes.stop.contains(p))
        .cloned()
        .collect();
    pods.extend(changes.start.iter().cloned());
    pods
}

fn running(plan: &Plan) -> Vec<PodPlan> {
    plan.all_pods().cloned().collect()
}

#[test]
fn the_same_configuration_changes_nothing() {
    let objects = bookinfo();
    let mut rng = fastrand::Rng::with_seed(3);
    let plan = plan(&objects, 2, &mut rng);
    let changes = reconcile(&running(&plan), &objects, 2, &mut rng);
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn an_applied_deployment_starts_its_replicas_on_the_emptiest_nodes_and_a_deleted_one_stops_them() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut objects = bookinfo();
    let plan = plan(&objects, 2, &mut rng);
    let before = running(&plan);
    objects.extend(load(&website("v1", 3)));
    let changes = reconcile(&before, &objects, 2, &mut rng);
    assert!(changes.stop.is_empty(), "{changes:?}");
    assert_eq!(changes.start.len(), 3);
    for pod in &changes.start {
        assert!(pod.name.starts_with("website-v1-"), "{}", pod.name);
        assert_eq!(pod.owner, "Deployment/website-v1");
        assert_eq!(pod.slot, 0, "the caller gives it a lab pod");
        assert!(!before.iter().any(|p| p.name == pod.name));
    }
    // Bookinfo's 7 pods sit 4 on node 1 and 3 on node 2: node 2 first, then alternately.
    let nodes: Vec<usize> = changes.start.iter().map(|p| p.node).collect();
    assert_eq!(nodes, [2, 1, 2]);

    let with_website = after(&before, &changes);
    assert!(reconcile(&with_website, &objects, 2, &mut rng).is_empty());

    // Scaled down to one: two stop, one stays.
    let mut scaled = bookinfo();
    scaled.extend(load(&website("v1", 1)));
    let changes = reconcile(&with_website, &scaled, 2, &mut rng);
    assert!(changes.start.is_empty(), "{changes:?}");
    assert_eq!(changes.stop.len(), 2);

    // Deleted: every website pod stops, Bookinfo's stay.
    let changes = reconcile(&with_website, &bookinfo(), 2, &mut rng);
    assert!(changes.start.is_empty());
    assert_eq!(changes.stop.len(), 3);
    assert!(
        changes
            .stop
            .iter()
            .all(|p| p.owner == "Deployment/website-v1")
    );
}

#[test]
fn a_changed_template_replaces_the_pods_and_a_statefulset_keeps_its_ordinals() {
    let mut rng = fastrand::Rng::with_seed(9);
    let objects = load(&website("v1", 2));
    let plan = plan(&objects, 1, &mut rng);
    let before = running(&plan);
    let changed = load(&website("v1", 2).replace("image: example/website:v1", "image: other"));
    let changes = reconcile(&before, &changed, 1, &mut rng);
    assert_eq!(changes.stop.len(), 2, "{changes:?}");
    assert_eq!(changes.start.len(), 2);
    let hash = |p: &PodPlan| p.labels[POD_TEMPLATE_HASH].clone();
    assert_ne!(hash(&changes.stop[0]), hash(&changes.start[0]));

    let db = |replicas: u32| {
        load(&format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers: [{{name: db, image: example/db}}]
"
        ))
    };
    let plan = super::plan(&db(3), 2, &mut rng);
    let changes = reconcile(&running(&plan), &db(1), 2, &mut rng);
    let mut stopped: Vec<&str> = changes.stop.iter().map(|p| p.name.as_str()).collect();
    stopped.sort();
    assert_eq!(stopped, ["db-1", "db-2"]);
    let plan = super::plan(&db(1), 2, &mut rng);
    let changes = reconcile(&running(&plan), &db(2), 2, &mut rng);
    let started: Vec<&str> = changes.start.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(started, ["db-1"]);
}

#[test]
fn a_daemonset_applied_later_gets_one_pod_per_node() {
    let mut rng = fastrand::Rng::with_seed(11);
    let plan = plan(&bookinfo(), 3, &mut rng);
    let mut objects = bookinfo();
    objects.extend(load(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logger, namespace: kube-system}
spec:
  selector: {matchLabels: {app: logger}}
  template:
    metadata: {labels: {app: logger}}
    spec:
      containers: [{name: logger, image: example/logger}]
",
    ));
    let changes = reconcile(&running(&plan), &objects, 3, &mut rng);
    let mut nodes: Vec<usize> = changes.start.iter().map(|p| p.node).collect();
    nodes.sort();
    assert_eq!(nodes, [1, 2, 3]);
}
