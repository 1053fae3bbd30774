//! `mesh-agent manifest generate`: what a cluster needs to run the node agent, from typed
//! Kubernetes objects (k8s-openapi), as multi-document YAML (`deploy/mesh.yaml` is its
//! output with the defaults; a test keeps the two in sync). Values are changed with
//! `--set key=value`, as with `istioctl manifest generate`.
//!
//! Objects: the CustomResourceDefinitions of the Istio kinds the agent reads (first, so one
//! `kubectl apply` can be followed by Istio objects; `--set crds=false` leaves them out where
//! Istio's own are installed; see `crds.rs`), the Namespace, the agent's ServiceAccount, a
//! ClusterRole limited to what the agent's Kubernetes source watches (read-only) and its
//! binding, the DaemonSet, and the ingress gateway (`gateway.rs`; `--set gateway=false`
//! leaves it out).
//!
//! The DaemonSet's agent runs in the node's network namespace (`hostNetwork`) and
//! `privileged`, as istio-cni's node agent does. The capabilities alone would be `BPF` and
//! `PERFMON` (programs and maps), `NET_ADMIN` (attachments, `SO_MARK`, `IP_TRANSPARENT`,
//! routes and rules inside pods), `SYS_ADMIN` (`setns` into pods' namespaces, cgroups,
//! bpffs pins) and `SYS_RESOURCE` (the open-files limit), but run that way from the image
//! (tests/tests/image.rs) enrolling a pod fails: the agent sets `net.ipv4.tcp_fwmark_accept`
//! and `fwmark_reflect` inside each pod's namespace, and container runtimes mount
//! `/proc/sys` read-only in every container that is not privileged.
//!
//! Host mounts: bpffs (pins survive a restart), the cgroup2 tree (the capture cgroup),
//! `/var/run/netns` (the namespaces CNI names), `/run/mesh-agent` (state and the API socket
//! the CNI plugin calls), and the CNI directories for the plugin's installer, an init
//! container running `mesh-agent cni install` (see `cni/install.rs`). The mesh CA comes
//! from the Secret `caSecret` (Istio's `cacerts` layout), mounted read-only: create it
//! before installing (the agent cannot generate one there).
pub mod crds;
pub mod gateway;
pub mod waypoint;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet},
        core::v1::{
            Capabilities, Container, ContainerPort, HTTPGetAction, HostPathVolumeSource, Namespace,
            PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SecretVolumeSource, SecurityContext, ServiceAccount, Toleration, Volume, VolumeMount,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::LabelSelector, apis::meta::v1::ObjectMeta,
        util::intstr::IntOrString,
    },
};
use mesh_common::{METRICS_PORT, READINESS_PORT};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("--set {0:?}: expected key=value")]
    NotKeyValue(String),
    #[error("--set {key}: unknown key (known: {known})")]
    UnknownKey { key: String, known: &'static str },
    #[error("--set {key}={value}: expected true or false")]
    NotBool { key: String, value: String },
    #[error("the CustomResourceDefinition of {kind}: {message}")]
    Schema { kind: &'static str, message: String },
    #[error("rendering {kind}: {message}")]
    Render { kind: &'static str, message: String },
}

/// What `--set` can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    /// Render the Istio kinds' CustomResourceDefinitions.
    pub crds: bool,
    /// Render the ingress gateway (`gateway.rs`).
    pub gateway: bool,
    pub namespace: String,
    pub image: String,
    pub image_pull_policy: String,
    /// `--capture-cgroup` of the agents; empty: the agent finds kubepods itself.
    pub capture_cgroup: String,
    /// The Secret holding the mesh CA in Istio's `cacerts` layout.
    pub ca_secret: String,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
}

const KNOWN_KEYS: &str = "crds, gateway, namespace, image, imagePullPolicy, captureCgroup, caSecret, \
                          resources.requests.cpu, resources.requests.memory, resources.limits.memory";

impl Default for Values {
    fn default() -> Self {
        Values {
            crds: true,
            gateway: true,
            namespace: "mesh-system".into(),
            image: "localhost/mesh-agent:dev".into(),
            image_pull_policy: "IfNotPresent".into(),
            capture_cgroup: String::new(),
            ca_secret: "cacerts".into(),
            cpu_request: "100m".into(),
            memory_request: "128Mi".into(),
            memory_limit: "1Gi".into(),
        }
    }
}

impl Values {
    /// Applies one `key=value`.
    pub fn set(&mut self, assignment: &str) -> Result<(), ManifestError> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| ManifestError::NotKeyValue(assignment.to_string()))?;
        let flag = match key.trim() {
            "crds" => Some(&mut self.crds),
            "gateway" => Some(&mut self.gateway),
            _ => None,
        };
        if let Some(flag) = flag {
            *flag = match value.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ManifestError::NotBool {
                        key: key.trim().to_string(),
                        value: value.to_string(),
                    });
                }
            };
            return Ok(());
        }
        let value = value.to_string();
        let slot = match key.trim() {
            "namespace" => &mut self.namespace,
            "image" => &mut self.image,
            "imagePullPolicy" => &mut self.image_pull_policy,
            "captureCgroup" => &mut self.capture_cgroup,
            "caSecret" => &mut self.ca_secret,
            "resources.requests.cpu" => &mut self.cpu_request,
            "resources.requests.memory" => &mut self.memory_request,
            "resources.limits.memory" => &mut self.memory_limit,
            other => {
                return Err(ManifestError::UnknownKey {
                    key: other.to_string(),
                    known: KNOWN_KEYS,
                });
            }
        };
        *slot = value;
        Ok(())
    }
}

const AGENT: &str = "mesh-agent";

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/part-of".to_string(),
            "mesh".to_string(),
        )])),
        ..Default::default()
    }
}

/// Istio's proxy user, which the gateway's and the waypoints' pods run as.
const PROXY_UID: i64 = 1337;

/// The gateway's and the waypoints' container: no capability, no privilege escalation, a
/// read-only root (they write nothing).
fn proxy_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Their pods: as the proxy user, never root.
fn proxy_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(PROXY_UID),
        run_as_group: Some(PROXY_UID),
        ..Default::default()
    }
}

/// Every object, in the order `kubectl apply` should create them.
pub fn objects(values: &Values) -> Result<Vec<Value>, ManifestError> {
    let ns = values.namespace.as_str();
    let render = |kind: &'static str, object: Result<Value, serde_json::Error>| {
        object.map_err(|e| ManifestError::Render {
            kind,
            message: e.to_string(),
        })
    };
    let namespace = Namespace {
        metadata: meta(ns, None),
        ..Default::default()
    };
    let service_account = ServiceAccount {
        metadata: meta(AGENT, Some(ns)),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: meta(AGENT, None),
        rules: Some(reader_rules()),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta(AGENT, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: AGENT.into(),
        },
        // The gateway reads what the agent reads.
        subjects: Some(
            std::iter::once(AGENT)
                .chain(values.gateway.then_some(gateway::NAME))
                .map(|name| Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some(ns.into()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    let mut out = Vec::new();
    if values.crds {
        for crd in crds::definitions()? {
            out.push(render(
                "CustomResourceDefinition",
                serde_json::to_value(crd),
            )?);
        }
    }
    out.extend([
        render("Namespace", serde_json::to_value(namespace))?,
        render("ServiceAccount", serde_json::to_value(service_account))?,
        render("ClusterRole", serde_json::to_value(role))?,
        render("ClusterRoleBinding", serde_json::to_value(binding))?,
        render("DaemonSet", serde_json::to_value(daemon_set(values)))?,
    ]);
    if values.gateway {
        out.extend([
            render(
                "ServiceAccount",
                serde_json::to_value(gateway::service_account(values)),
            )?,
            render(
                "Deployment",
                serde_json::to_value(gateway::deployment(values)),
            )?,
            render("Service", serde_json::to_value(gateway::service(values)))?,
        ]);
    }
    Ok(out)
}

/// Read-only access to what the configuration source watches (`mesh-config`'s
/// `source/kube.rs`): core workload and service objects, and the Istio kinds.
fn reader_rules() -> Vec<PolicyRule> {
    let read = || Some(vec!["get".into(), "list".into(), "watch".into()]);
    let rule = |group: &str, resources: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: read().unwrap_or_default(),
        ..Default::default()
    };
    vec![
        rule(
            "",
            &[
                "namespaces",
                "pods",
                "services",
                "endpoints",
                "serviceaccounts",
            ],
        ),
        rule("discovery.k8s.io", &["endpointslices"]),
        rule("apps", &["deployments", "statefulsets", "daemonsets"]),
        rule(
            "networking.istio.io",
            &[
                "virtualservices",
                "destinationrules",
                "gateways",
                "serviceentries",
                "workloadentries",
                "sidecars",
            ],
        ),
        rule(
            "security.istio.io",
            &["peerauthentications", "authorizationpolicies"],
        ),
        rule("gateway.networking.k8s.io", &["gateways"]),
    ]
}

/// (volume name, host path, mount path, hostPath type, propagation).
const HOST_MOUNTS: [(&str, &str, &str, &str, Option<&str>); 6] = [
    // The agent pins into the host's bpffs through this bind mount (same file system), so
    // no propagation back is needed (Bidirectional would require a privileged container).
    ("bpffs", "/sys/fs/bpf", "/sys/fs/bpf", "Directory", None),
    (
        "cgroup",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup",
        "Directory",
        None,
    ),
    (
        "netns",
        "/var/run/netns",
        "/var/run/netns",
        "DirectoryOrCreate",
        Some("HostToContainer"),
    ),
    (
        "state",
        "/run/mesh-agent",
        "/run/mesh-agent",
        "DirectoryOrCreate",
        None,
    ),
    (
        "cni-bin",
        "/opt/cni/bin",
        "/host/opt/cni/bin",
        "DirectoryOrCreate",
        None,
    ),
    (
        "cni-conf",
        "/etc/cni/net.d",
        "/host/etc/cni/net.d",
        "DirectoryOrCreate",
        None,
    ),
];

/// The node agent's DaemonSet (also what the image test runs the agent container like).
pub fn daemon_set(values: &Values) -> DaemonSet {
    let labels = BTreeMap::from([("app".to_string(), AGENT.to_string())]);
    let mut args: Vec<String> = [
        "run",
        "--name",
        "node",
        "--kubernetes",
        "--state-dir",
        "/run/mesh-agent/node",
        "--ca-dir",
        "/etc/cacerts",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.push("--metrics-addr".into());
    args.push(format!("0.0.0.0:{METRICS_PORT}"));
    args.push("--readiness-addr".into());
    args.push(format!("0.0.0.0:{READINESS_PORT}"));
    if !values.capture_cgroup.is_empty() {
        args.push("--capture-cgroup".into());
        args.push(values.capture_cgroup.clone());
    }
    let mut volumes: Vec<Volume> = HOST_MOUNTS
        .iter()
        .map(|(name, host, _, kind, _)| Volume {
            name: name.to_string(),
            host_path: Some(HostPathVolumeSource {
                path: host.to_string(),
                type_: Some(kind.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    volumes.push(Volume {
        name: "cacerts".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(values.ca_secret.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut mounts: Vec<VolumeMount> = HOST_MOUNTS
        .iter()
        .map(|(name, _, path, _, propagation)| VolumeMount {
            name: name.to_string(),
            mount_path: path.to_string(),
            mount_propagation: propagation.map(ToString::to_string),
            ..Default::default()
        })
        .collect();
    mounts.push(VolumeMount {
        name: "cacerts".into(),
        mount_path: "/etc/cacerts".into(),
        read_only: Some(true),
        ..Default::default()
    });
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    // The CNI installer: mesh-cni into the node's plugin directory and the primary
    // network's chain, before the agent starts (`mesh-agent cni install`). It needs only
    // the two CNI directories, and no capability: they are host directories it writes.
    let cni_mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .unwrap_or_default()
    };
    let install_cni = Container {
        name: "install-cni".into(),
        image: Some(values.image.clone()),
        image_pull_policy: Some(values.image_pull_policy.clone()),
        args: Some(
            [
                "cni",
                "install",
                "--agent-socket",
                "/run/mesh-agent/node/agent.sock",
            ]
            .iter()
            .map(ToString::to_string)
            .collect(),
        ),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![cni_mount("cni-bin"), cni_mount("cni-conf")]),
        ..Default::default()
    };
    let container = Container {
        name: AGENT.into(),
        image: Some(values.image.clone()),
        image_pull_policy: Some(values.image_pull_policy.clone()),
        args: Some(args),
        ports: Some(vec![
            port("http-metrics", METRICS_PORT),
            port("http-ready", READINESS_PORT),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(i32::from(READINESS_PORT)),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(values.cpu_request.clone())),
                (
                    "memory".to_string(),
                    Quantity(values.memory_request.clone()),
                ),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(values.memory_limit.clone()),
            )])),
            ..Default::default()
        }),
        // Privileged for a writable /proc/sys (see the module's documentation).
        security_context: Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), METRICS_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    DaemonSet {
        metadata: meta(AGENT, Some(&values.namespace)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(AGENT.into()),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    priority_class_name: Some("system-node-critical".into()),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    termination_grace_period_seconds: Some(30),
                    init_containers: Some(vec![install_cni]),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The objects as multi-document YAML.
pub fn generate(values: &Values) -> Result<String, ManifestError> {
    to_yaml("generate", objects(values)?)
}

/// `mesh-agent manifest waypoint`: the waypoint `name` of `namespace` (`waypoint.rs`).
pub fn generate_waypoint(
    values: &Values,
    name: &str,
    namespace: &str,
) -> Result<String, ManifestError> {
    to_yaml("waypoint", waypoint::objects(values, name, namespace)?)
}

fn to_yaml(command: &str, objects: Vec<Value>) -> Result<String, ManifestError> {
    let mut out = format!("# Generated by `mesh-agent manifest {command}`; do not edit.\n");
    for object in objects {
        let yaml = serde_saphyr::to_string(&object).map_err(|e| ManifestError::Render {
            kind: "YAML",
            message: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
