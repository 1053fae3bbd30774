//! `mesh-agent manifest waypoint`: a namespace's waypoint, what `istioctl waypoint apply`
//! asks for and istiod then deploys, in one file for `kubectl apply`: the Gateway of class
//! `istio-waypoint` (listener `mesh`, 15008, HBONE), and the waypoint's pods — a
//! ServiceAccount named after the Gateway (the waypoint's identity), its binding to the
//! agent's read-only ClusterRole (the waypoint reads the API as the agent does), and a
//! Deployment whose pods carry `gateway.networking.k8s.io/gateway-name: <name>` (how the
//! agents find a waypoint's pods) and the ambient label, running
//! `mesh-agent waypoint --kubernetes` as user 1337 without capabilities: it listens only
//! on 127.0.0.1:15088, where its node agent hands over what it terminated on 15008.
//!
//! Services and namespaces use it with `istio.io/use-waypoint: <name>`, as with Istio.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{Container, ContainerPort, PodSpec, PodTemplateSpec, ServiceAccount},
        rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use mesh_common::METRICS_PORT;
use mesh_config::istio::gateway_api::WAYPOINT_CLASS;
use mesh_config::snapshot::GATEWAY_NAME_LABEL;
use serde_json::{Value, json};

use super::{AGENT, ManifestError, Values, meta, proxy_container_security, proxy_pod_security};

/// Every object of the waypoint `name` in `namespace`, in apply order.
pub fn objects(values: &Values, name: &str, namespace: &str) -> Result<Vec<Value>, ManifestError> {
    let render = |kind: &'static str, object: Result<Value, serde_json::Error>| {
        object.map_err(|e| ManifestError::Render {
            kind,
            message: e.to_string(),
        })
    };
    let gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"istio.io/waypoint-for": "service"},
        },
        "spec": {
            "gatewayClassName": WAYPOINT_CLASS,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    });
    let service_account = ServiceAccount {
        metadata: meta(name, Some(namespace)),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta(&format!("{AGENT}-waypoint-{namespace}-{name}"), None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: AGENT.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    };
    Ok(vec![
        gateway,
        render("ServiceAccount", serde_json::to_value(service_account))?,
        render("ClusterRoleBinding", serde_json::to_value(binding))?,
        render(
            "Deployment",
            serde_json::to_value(deployment(values, name, namespace)),
        )?,
    ])
}

fn deployment(values: &Values, name: &str, namespace: &str) -> Deployment {
    let selector = BTreeMap::from([(GATEWAY_NAME_LABEL.to_string(), name.to_string())]);
    let mut labels = selector.clone();
    labels.insert("istio.io/dataplane-mode".into(), "ambient".into());
    let args = [
        "waypoint",
        "--kubernetes",
        "--name",
        name,
        "--namespace",
        namespace,
        "--metrics-addr",
        &format!("0.0.0.0:{METRICS_PORT}"),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let container = Container {
        name: "istio-proxy".into(),
        image: Some(values.image.clone()),
        image_pull_policy: Some(values.image_pull_policy.clone()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("http-metrics".into()),
            container_port: i32::from(METRICS_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        security_context: Some(proxy_container_security()),
        ..Default::default()
    };
    Deployment {
        metadata: meta(name, Some(namespace)),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.into()),
                    security_context: Some(proxy_pod_security()),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
