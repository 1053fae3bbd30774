//! What the demo runs, decided from the configuration before anything is created: one pod
//! per replica of each Deployment, ReplicaSet and StatefulSet, one per node of each
//! DaemonSet, each bare Pod, and the ingress gateway's pod; named as Kubernetes names them,
//! spread over the nodes, each container with the built-in workload its image runs as
//! ([`super::role`]). Pure (randomness injected), so it is unit-tested from real YAML.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_config::canonical::{self, Owner, POD_TEMPLATE_HASH};
use mesh_config::{LoadedObject, Object};

use mesh_config::istio::gateway_api::WAYPOINT_CLASS;
use mesh_config::snapshot::GATEWAY_NAME_LABEL;

use super::role::Role;

/// The alphabet of Kubernetes' generated names (`rand.SafeEncodeString`: no vowels, no
/// look-alike digits).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
pub const GATEWAY_NAMESPACE: &str = "istio-system";
pub const GATEWAY_SERVICE_ACCOUNT: &str = "istio-ingressgateway";
pub const GATEWAY_LABELS: [(&str, &str); 2] =
    [("istio", "ingressgateway"), ("app", "istio-ingressgateway")];

/// One container of a planned pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub role: Role,
    /// Declared TCP container ports.
    pub ports: Vec<Port>,
    /// Literal `env` values (`valueFrom` is not resolved off-cluster).
    pub env: Vec<(String, String)>,
}

/// A container port: number, and the name a Service's `targetPort` may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub number: u16,
    pub name: Option<String>,
}

/// One pod to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub containers: Vec<ContainerPlan>,
    /// `Deployment/reviews-v1`, `Pod/x`, or `ingress gateway`.
    pub owner: String,
    /// Lab node and pod slot (both 1-based).
    pub node: usize,
    pub slot: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// The ingress gateway's pod (no containers: the demo starts `mesh-agent gateway`).
    pub gateway: PodPlan,
    /// One pod per waypoint the configuration asks for (no containers: the demo starts
    /// `mesh-agent waypoint`), labelled with its Gateway's name as Istio labels them.
    pub waypoints: Vec<PodPlan>,
    pub workloads: Vec<PodPlan>,
    pub nodes: usize,
    /// Lab slots per node: enough for the fullest node.
    pub pods_per_node: usize,
}

impl PodPlan {
    /// The controller that made the pod, as its `ownerReferences` name it (`kind`,
    /// `name`): a Deployment's pods belong to its ReplicaSet `<deployment>-<hash>`; bare
    /// pods, the gateway's and the waypoints' have none (their `pod-template-hash` label and
    /// name still tell their Deployment).
    pub fn controller(&self) -> Option<(&'static str, String)> {
        let (kind, name) = self.owner.split_once('/')?;
        match kind {
            "Deployment" => {
                let hash = self.labels.get(POD_TEMPLATE_HASH)?;
                Some(("ReplicaSet", format!("{name}-{hash}")))
            }
            "ReplicaSet" => Some(("ReplicaSet", name.to_string())),
            "StatefulSet" => Some(("StatefulSet", name.to_string())),
            "DaemonSet" => Some(("DaemonSet", name.to_string())),
            _ => None,
        }
    }

    /// What Istio's telemetry calls the pod's workload (the agents' metrics say the same,
    /// from the Pod object the demo writes).
    pub fn workload_name(&self) -> String {
        let controller = self.controller();
        let owner = controller.as_ref().map(|(kind, name)| Owner {
            kind,
            name: name.as_str(),
        });
        canonical::workload_name(&self.name, &self.labels, owner)
    }
}

impl Plan {
    pub fn all_pods(&self) -> impl Iterator<Item = &PodPlan> {
        std::iter::once(&self.gateway)
            .chain(&self.waypoints)
            .chain(&self.workloads)
    }
}

/// Plans the pods of `objects` over `nodes` nodes: the gateway first, then the workloads
/// in the configuration's order, each on the next node round robin.
pub fn plan(objects: &[LoadedObject], nodes: usize, rng: &mut fastrand::Rng) -> Plan {
    let nodes = nodes.max(1);
    let mut names = BTreeSet::new();
    let mut pods = vec![gateway_pod(rng, &mut names)];
    pods.extend(configured_pods(objects, nodes, rng, &mut names));
    // Round robin over the nodes; a DaemonSet's pods are consecutive, so one per node.
    let mut used = vec![0usize; nodes];
    for (i, pod) in pods.iter_mut().enumerate() {
        let node = i % nodes;
        used[node] += 1;
        pod.node = node + 1;
        pod.slot = used[node];
    }
    let pods_per_node = used.iter().copied().max().unwrap_or(1);
    let gateway = pods.remove(0);
    let (waypoints, workloads) = pods.into_iter().partition(|p| p.owner == WAYPOINT_OWNER);
    Plan {
        gateway,
        waypoints,
        workloads,
        nodes,
        pods_per_node,
    }
}

/// What a change of the configuration does to a running demo's pods, as the controllers
/// would: pods still wanted keep running (same owner and template; a StatefulSet's or a
/// bare Pod's by name, a DaemonSet's on its node); pods no longer wanted stop (a deleted
/// Deployment, fewer replicas, a changed template); missing ones start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Placed on a node (`node` set, the fewest pods first; a DaemonSet's on the node that
    /// lacks one), `slot` 0: the caller gives each a lab pod.
    pub start: Vec<PodPlan>,
    pub stop: Vec<PodPlan>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.stop.is_empty()
    }
}

/// The [`Changes`] that take `running` (every pod the demo runs, the gateway's included,
/// which stays) to what `objects` declare over `nodes` nodes.
pub fn reconcile(
    running: &[PodPlan],
    objects: &[LoadedObject],
    nodes: usize,
    rng: &mut fastrand::Rng,
) -> Changes {
    let nodes = nodes.max(1);
    let mut names: BTreeSet<String> = running.iter().map(|p| p.name.clone()).collect();
    let mut wanted = configured_pods(objects, nodes, rng, &mut names);
    // A DaemonSet's pods are consecutive: the k-th goes on node k.
    let mut daemon_index = BTreeMap::<String, usize>::new();
    for pod in wanted
        .iter_mut()
        .filter(|p| p.owner.starts_with("DaemonSet/"))
    {
        let k = daemon_index.entry(pod.owner.clone()).or_default();
        pod.node = *k % nodes + 1;
        *k += 1;
    }
    let mut unmatched: Vec<&PodPlan> = running
        .iter()
        .filter(|p| p.owner != GATEWAY_OWNER)
        .collect();
    let mut start = Vec::new();
    for pod in wanted {
        match unmatched.iter().position(|r| same_pod(r, &pod)) {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => start.push(pod),
        }
    }
    let stop: Vec<PodPlan> = unmatched.into_iter().cloned().collect();
    let mut load = vec![0usize; nodes];
    for pod in running.iter().filter(|p| !stop.contains(p)) {
        if let Some(n) = pod.node.checked_sub(1).and_then(|i| load.get_mut(i)) {
            *n += 1;
        }
    }
    for pod in start.iter_mut().filter(|p| p.node == 0) {
        let (fewest, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(i, n)| (*n, i))
            .unwrap_or((0, &0));
        load[fewest] += 1;
        pod.node = fewest + 1;
    }
    Changes { start, stop }
}

/// Whether `running` is the pod `wanted` stands for: same owner, namespace and template
/// (labels, service account, containers; a Deployment's template hash is a label, a
/// waypoint's Gateway name too); named alike where the controller fixes names; on the same
/// node for a DaemonSet.
fn same_pod(running: &PodPlan, wanted: &PodPlan) -> bool {
    let kind = wanted.owner.split_once('/').map(|(kind, _)| kind);
    running.owner == wanted.owner
        && running.namespace == wanted.namespace
        && running.labels == wanted.labels
        && running.service_account == wanted.service_account
        && running.containers == wanted.containers
        && match kind {
            Some("Pod" | "StatefulSet") => running.name == wanted.name,
            Some("DaemonSet") => running.node == wanted.node,
            // A waypoint by its Gateway's name, which its labels carry.
            _ => true,
        }
}

/// The pods `objects` declare, in their order, unplaced (`node`, `slot` 0); names are
/// drawn so none is in `names`, and added to it.
fn configured_pods(
    objects: &[LoadedObject],
    nodes: usize,
    rng: &mut fastrand::Rng,
    names: &mut BTreeSet<String>,
) -> Vec<PodPlan> {
    let mut pods = Vec::new();
    for loaded in objects {
        let object = &loaded.object;
        let meta = object.meta();
        let owner_name = meta.name.clone().unwrap_or_default();
        let owner = format!("{}/{owner_name}", object.kind());
        match object {
            Object::Pod(pod) => {
                let template = PodTemplateSpec {
                    metadata: Some(pod.metadata.clone()),
                    spec: pod.spec.clone(),
                };
                pods.push(pod_from(&template, meta, owner_name, owner));
            }
            Object::Deployment(d) => {
                let Some(spec) = &d.spec else { continue };
                let hash = template_hash(&spec.template);
                for _ in 0..spec.replicas.unwrap_or(1).max(0) {
                    let name = unique(names, || format!("{owner_name}-{hash}-{}", suffix(rng)));
                    let mut pod = pod_from(&spec.template, meta, name, owner.clone());
                    // As the Deployment's ReplicaSet labels its pods.
                    pod.labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
                    pods.push(pod);
                }
            }
            Object::ReplicaSet(r) => {
                let Some(template) = r.spec.as_ref().and_then(|s| s.template.as_ref()) else {
                    continue;
                };
                let replicas = r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                for _ in 0..replicas.max(0) {
                    let name = unique(names, || format!("{owner_name}-{}", suffix(rng)));
                    pods.push(pod_from(template, meta, name, owner.clone()));
                }
            }
            Object::StatefulSet(s) => {
                let Some(spec) = &s.spec else { continue };
                for ordinal in 0..spec.replicas.unwrap_or(1).max(0) {
                    let name = format!("{owner_name}-{ordinal}");
                    names.insert(name.clone());
                    pods.push(pod_from(&spec.template, meta, name, owner.clone()));
                }
            }
            Object::DaemonSet(d) => {
                let Some(spec) = &d.spec else { continue };
                for _ in 0..nodes {
                    let name = unique(names, || format!("{owner_name}-{}", suffix(rng)));
                    pods.push(pod_from(&spec.template, meta, name, owner.clone()));
                }
            }
            Object::K8sGateway(g) if g.spec.gateway_class_name == WAYPOINT_CLASS => {
                let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
                pods.push(waypoint_pod(rng, names, &owner_name, namespace));
            }
            _ => {}
        }
    }
    pods
}

fn gateway_pod(rng: &mut fastrand::Rng, names: &mut BTreeSet<String>) -> PodPlan {
    let hash = safe_encode(0x1d5e_a7e5);
    let name = unique(names, || {
        format!("istio-ingressgateway-{hash}-{}", suffix(rng))
    });
    PodPlan {
        name,
        namespace: GATEWAY_NAMESPACE.into(),
        labels: GATEWAY_LABELS
            .iter()
            .copied()
            .chain([(POD_TEMPLATE_HASH, hash.as_str())])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: GATEWAY_SERVICE_ACCOUNT.into(),
        containers: Vec::new(),
        owner: GATEWAY_OWNER.into(),
        node: 0,
        slot: 0,
    }
}

/// What the ingress gateway's pod's `owner` says.
pub const GATEWAY_OWNER: &str = "ingress gateway";
/// What a waypoint pod's `owner` says.
pub const WAYPOINT_OWNER: &str = "waypoint";

/// The pod istiod would deploy for the waypoint `name`: the Gateway's name, its service
/// account, the label naming the Gateway.
fn waypoint_pod(
    rng: &mut fastrand::Rng,
    names: &mut BTreeSet<String>,
    name: &str,
    namespace: String,
) -> PodPlan {
    let hash = safe_encode(0x3a79_01e7);
    let pod = unique(names, || format!("{name}-{hash}-{}", suffix(rng)));
    PodPlan {
        name: pod,
        namespace,
        labels: BTreeMap::from([
            (GATEWAY_NAME_LABEL.to_string(), name.to_string()),
            (POD_TEMPLATE_HASH.to_string(), hash),
        ]),
        service_account: name.to_string(),
        containers: Vec::new(),
        owner: WAYPOINT_OWNER.into(),
        node: 0,
        slot: 0,
    }
}

/// A pod from a template; its namespace is its owner's (or `default`).
fn pod_from(template: &PodTemplateSpec, owner: &ObjectMeta, name: String, kind: String) -> PodPlan {
    let spec: Option<&PodSpec> = template.spec.as_ref();
    PodPlan {
        name,
        namespace: owner.namespace.clone().unwrap_or_else(|| "default".into()),
        labels: template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        service_account: spec
            .and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            })
            .unwrap_or_else(|| "default".into()),
        containers: spec
            .map(|s| s.containers.iter().map(container).collect())
            .unwrap_or_default(),
        owner: kind,
        node: 0,
        slot: 0,
    }
}

fn container(c: &Container) -> ContainerPlan {
    let image = c.image.clone().unwrap_or_default();
    ContainerPlan {
        name: c.name.clone(),
        role: Role::for_image(&image),
        image,
        ports: c
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
            .filter_map(|p| {
                Some(Port {
                    number: u16::try_from(p.container_port).ok()?,
                    name: p.name.clone(),
                })
            })
            .collect(),
        env: c
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect(),
    }
}

/// The `pod-template-hash` part of a Deployment's pod names: FNV-1a (32 bits) of the
/// template, its decimal digits in the safe alphabet, as Kubernetes spells it (its hash
/// input is Go's object dump, ours the JSON: same template, same name, run after run).
fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in json {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    safe_encode(hash)
}

fn safe_encode(value: u32) -> String {
    value
        .to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// Five random characters, as a ReplicaSet's pods end.
fn suffix(rng: &mut fastrand::Rng) -> String {
    (0..5)
        .map(|_| char::from(SAFE_ALPHABET[rng.usize(..SAFE_ALPHABET.len())]))
        .collect()
}

fn unique(names: &mut BTreeSet<String>, mut make: impl FnMut() -> String) -> String {
    loop {
        let name = make();
        if names.insert(name.clone()) {
            return name;
        }
    }
}

#[cfg(test)]
mod tests;
