//! The ingress gateway as Istio installs it: a Deployment `istio-ingressgateway` whose
//! pods carry `istio: ingressgateway` (what Bookinfo's `Gateway` selects), its
//! ServiceAccount, and a `LoadBalancer` Service. The gateway listens on the port numbers
//! its `Gateway` servers name, so the Service forwards each port to the same number: 80
//! (Bookinfo's `bookinfo-gateway.yaml` up to Istio 1.19), 8080 (later Bookinfo files) and
//! 443.
//!
//! The pods run `mesh-agent gateway --kubernetes`: they read the Gateways and
//! VirtualServices from the API, as the node agent does, through the same ClusterRole.
//! They are labelled `istio.io/dataplane-mode: ambient`, so the node agent captures their
//! upstream connections and carries them into the mesh over HBONE with the gateway's own
//! identity (`spiffe://<trust domain>/ns/<namespace>/sa/istio-ingressgateway`). They run
//! unprivileged and as a non-root user (Istio's 1337); the pod's
//! `net.ipv4.ip_unprivileged_port_start=0` (a safe sysctl, as Istio's gateway chart sets)
//! lets that user listen on 80 and 443.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec,
            Probe, ResourceRequirements, Service, ServiceAccount, ServicePort, ServiceSpec, Sysctl,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::LabelSelector, apis::meta::v1::ObjectMeta,
        util::intstr::IntOrString,
    },
};
use mesh_common::METRICS_PORT;

use super::{Values, meta, proxy_container_security, proxy_pod_security};

pub const NAME: &str = "istio-ingressgateway";
/// The labels Istio's gateway pods carry (what `Gateway.spec.selector` names).
const LABELS: [(&str, &str); 2] = [("istio", "ingressgateway"), ("app", NAME)];
/// (name, port): the Service's and the container's.
const PORTS: [(&str, u16); 3] = [("http2", 80), ("http-alt", 8080), ("https", 443)];

fn labels() -> BTreeMap<String, String> {
    LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn service_account(values: &Values) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(NAME, Some(&values.namespace)),
        ..Default::default()
    }
}

pub fn deployment(values: &Values) -> Deployment {
    let mut pod_labels = labels();
    pod_labels.insert("istio.io/dataplane-mode".into(), "ambient".into());
    let selector: Vec<String> = LABELS.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let args = [
        "gateway",
        "--kubernetes",
        "--namespace",
        &values.namespace,
        "--labels",
        &selector.join(","),
        "--metrics-addr",
        &format!("0.0.0.0:{METRICS_PORT}"),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports: Vec<ContainerPort> = PORTS.iter().map(|(n, p)| port(n, *p)).collect();
    ports.push(port("http-metrics", METRICS_PORT));
    let container = Container {
        name: "istio-proxy".into(),
        image: Some(values.image.clone()),
        image_pull_policy: Some(values.image_pull_policy.clone()),
        args: Some(args),
        ports: Some(ports),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(i32::from(METRICS_PORT)),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("512Mi".into()),
            )])),
            ..Default::default()
        }),
        security_context: Some(proxy_container_security()),
        ..Default::default()
    };
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), METRICS_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    Deployment {
        metadata: meta(NAME, Some(&values.namespace)),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    security_context: Some(PodSecurityContext {
                        sysctls: Some(vec![Sysctl {
                            name: "net.ipv4.ip_unprivileged_port_start".into(),
                            value: "0".into(),
                        }]),
                        ..proxy_pod_security()
                    }),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(values: &Values) -> Service {
    Service {
        metadata: meta(NAME, Some(&values.namespace)),
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(labels()),
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some(name.to_string()),
                        port: i32::from(*port),
                        target_port: Some(IntOrString::Int(i32::from(*port))),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}
