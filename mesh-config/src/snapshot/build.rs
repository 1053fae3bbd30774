//! `Snapshot::build`: objects → validated, resolved, plain data.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::canonical;
use crate::error::{ConfigErrors, ConfigWarning};
use crate::object::{LoadedObject, Object, latest_by_key};
use crate::resolve::MeshOptions;
use crate::{LoadedConfig, istio, validate};

/// Label enrolling a namespace or pod in the mesh (Istio ambient).
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// Sidecar-era namespace label, accepted as the same intent.
pub const ISTIO_INJECTION: &str = "istio-injection";
/// Label binding a Service or namespace to a waypoint.
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// Label naming the waypoint's namespace when it is not the Service's.
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
/// Label Istio puts on the pods of a Gateway API Gateway (waypoints included): its name.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// EndpointSlice label naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub mesh: MeshOptions,
}

/// The input was refused: every error found (the last good snapshot stays in use).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{errors}")]
pub struct BuildError {
    pub errors: ConfigErrors,
}

impl Snapshot {
    /// Validates and builds from loaded files.
    pub fn build(config: &LoadedConfig) -> Result<Snapshot, BuildError> {
        Snapshot::build_with(&config.objects, &BuildOptions::default()).map(|(s, _)| s)
    }

    /// Validates and builds; also returns the warnings (duplicates, assumptions).
    pub fn build_with(
        objects: &[LoadedObject],
        opts: &BuildOptions,
    ) -> Result<(Snapshot, Vec<ConfigWarning>), BuildError> {
        let refs: Vec<&LoadedObject> = objects.iter().collect();
        Snapshot::build_from_refs(&refs, opts)
    }

    /// As [`Snapshot::build_with`], over borrowed objects (no copy of the inputs).
    pub fn build_from_refs(
        objects: &[&LoadedObject],
        opts: &BuildOptions,
    ) -> Result<(Snapshot, Vec<ConfigWarning>), BuildError> {
        let (objects, mut warnings) = latest_by_key(objects.iter().copied());
        let (errors, more) = validate::analyze(&objects, &opts.mesh);
        warnings.extend(more);
        if !errors.is_empty() {
            return Err(BuildError {
                errors: ConfigErrors(errors),
            });
        }
        Ok((build_valid(&objects, &opts.mesh), warnings))
    }
}

fn ns_name(o: &Object) -> (String, String) {
    let m = o.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn labels_of(o: &Object) -> BTreeMap<String, String> {
    o.meta().labels.clone().unwrap_or_default()
}

fn build_valid(objects: &[&LoadedObject], mesh: &MeshOptions) -> Snapshot {
    let mut snap = Snapshot::default();

    // Namespaces: declared ones with their labels, then every namespace an object names.
    for o in objects {
        if let Object::Namespace(_) = &o.object {
            let (_, name) = ns_name(&o.object);
            let labels = labels_of(&o.object);
            let ambient = namespace_enrolled(&name, &labels);
            snap.namespaces
                .insert(name, NamespaceInfo { labels, ambient });
        }
    }
    for o in objects {
        let (ns, _) = ns_name(&o.object);
        if !ns.is_empty() {
            snap.namespaces.entry(ns).or_insert_with(|| NamespaceInfo {
                labels: BTreeMap::new(),
                ambient: false,
            });
        }
    }

    build_workloads(objects, &mut snap);
    build_services(objects, mesh, &mut snap);
    build_routing(objects, mesh, &mut snap);
    snap.services_by_vip = snap
        .services
        .iter()
        .map(|(fqdn, svc)| (svc.vip, fqdn.clone()))
        .collect();
    snap.workloads_by_ip = snap
        .workloads
        .iter()
        .filter_map(|(key, w)| Some((w.address?, key.clone())))
        .collect();
    snap
}

fn namespace_enrolled(name: &str, labels: &BTreeMap<String, String>) -> bool {
    match labels.get(DATAPLANE_MODE).map(String::as_str) {
        Some("ambient") => true,
        Some(_) => false,
        None if labels.get(ISTIO_INJECTION).map(String::as_str) == Some("enabled") => {
            tracing::info!(
                namespace = name,
                "namespace label istio-injection=enabled taken as istio.io/dataplane-mode=ambient"
            );
            true
        }
        None => false,
    }
}

fn pod_enrolled(pod_labels: &BTreeMap<String, String>, ns: Option<&NamespaceInfo>) -> bool {
    match pod_labels.get(DATAPLANE_MODE).map(String::as_str) {
        Some("none") => false,
        Some("ambient") => true,
        _ => ns.is_some_and(|n| n.ambient),
    }
}

fn build_workloads(objects: &[&LoadedObject], snap: &mut Snapshot) {
    // In a cluster the Pods are the workloads; a workload's pod template stands in for its
    // Pods only when no Pod matches its selector (off-cluster YAML).
    let pods: Vec<(String, BTreeMap<String, String>)> = objects
        .iter()
        .filter(|o| matches!(o.object, Object::Pod(_)))
        .map(|o| (ns_name(&o.object).0, labels_of(&o.object)))
        .collect();
    let has_pods = |ns: &str, selector: Option<&LabelSelector>| {
        let Some(match_labels) = selector.and_then(|s| s.match_labels.as_ref()) else {
            return false;
        };
        pods.iter().any(|(pns, labels)| {
            pns == ns && match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    };
    for o in objects {
        let (ns, name) = ns_name(&o.object);
        let (template, replicas, source, selector) = match &o.object {
            Object::Pod(pod) => {
                let labels = labels_of(&o.object);
                let spec = pod.spec.as_ref();
                let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
                let owner = owners
                    .iter()
                    .find(|r| r.controller == Some(true))
                    .or(owners.first())
                    .map(|r| canonical::Owner {
                        kind: &r.kind,
                        name: &r.name,
                    });
                let workload_name = canonical::workload_name(&name, &labels, owner);
                let workload = Workload {
                    name: name.clone(),
                    namespace: ns.clone(),
                    canonical_service: canonical::canonical_service(&labels, &workload_name),
                    canonical_revision: canonical::canonical_revision(&labels),
                    workload_name,
                    service_account: service_account(spec),
                    ambient: pod_enrolled(&labels, snap.namespaces.get(&ns)),
                    labels,
                    address: pod
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|ip| ip.parse().ok()),
                    source: "Pod",
                    container_ports: container_ports(spec),
                };
                snap.workloads
                    .insert(format!("{ns}/{name}"), Arc::new(workload));
                continue;
            }
            Object::Deployment(d) => match &d.spec {
                Some(s) => (
                    &s.template,
                    s.replicas.unwrap_or(1),
                    "Deployment",
                    &s.selector,
                ),
                None => continue,
            },
            Object::StatefulSet(d) => match &d.spec {
                Some(s) => (
                    &s.template,
                    s.replicas.unwrap_or(1),
                    "StatefulSet",
                    &s.selector,
                ),
                None => continue,
            },
            Object::ReplicaSet(d) => match &d.spec {
                Some(s) => match &s.template {
                    Some(template) => {
                        (template, s.replicas.unwrap_or(1), "ReplicaSet", &s.selector)
                    }
                    None => continue,
                },
                None => continue,
            },
            Object::DaemonSet(d) => match &d.spec {
                Some(s) => (&s.template, 1, "DaemonSet", &s.selector),
                None => continue,
            },
            _ => continue,
        };
        if has_pods(&ns, Some(selector)) {
            continue;
        }
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let spec = template.spec.as_ref();
        for i in 0..replicas.max(0) {
            let wname = format!("{name}-{i}");
            let workload = Workload {
                name: wname.clone(),
                namespace: ns.clone(),
                workload_name: name.clone(),
                canonical_service: canonical::canonical_service(&labels, &name),
                canonical_revision: canonical::canonical_revision(&labels),
                service_account: service_account(spec),
                ambient: pod_enrolled(&labels, snap.namespaces.get(&ns)),
                labels: labels.clone(),
                address: None,
                source,
                container_ports: container_ports(spec),
            };
            snap.workloads
                .insert(format!("{ns}/{wname}"), Arc::new(workload));
        }
    }
}

fn service_account(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> String {
    spec.and_then(|s| {
        s.service_account_name
            .clone()
            .or_else(|| s.service_account.clone())
    })
    .unwrap_or_else(|| "default".to_string())
}

fn container_ports(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Vec<ContainerPort> {
    spec.map(|s| {
        s.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(ContainerPort {
                    name: p.name.clone(),
                    port: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

fn build_services(objects: &[&LoadedObject], mesh: &MeshOptions, snap: &mut Snapshot) {
    let mut endpoints: BTreeMap<(String, String), Vec<&Endpoints>> = BTreeMap::new();
    let mut slices: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for o in objects {
        let (ns, name) = ns_name(&o.object);
        match &o.object {
            Object::Endpoints(e) => endpoints.entry((ns, name)).or_default().push(e),
            Object::EndpointSlice(s) => {
                if let Some(svc) = labels_of(&o.object).get(SERVICE_NAME_LABEL) {
                    slices.entry((ns, svc.clone())).or_default().push(s);
                }
            }
            _ => {}
        }
    }

    let services: Vec<(&Service, String, String)> = objects
        .iter()
        .filter_map(|o| match &o.object {
            Object::Service(s) => {
                let (ns, name) = ns_name(&o.object);
                Some((s, ns, name))
            }
            _ => None,
        })
        .collect();
    let cluster_ips: HashSet<IpAddr> = services
        .iter()
        .filter_map(|(s, _, _)| cluster_ip(s))
        .collect();
    let fqdns: Vec<String> = services
        .iter()
        .filter(|(s, _, _)| cluster_ip(s).is_none())
        .map(|(_, ns, name)| mesh.service_fqdn(name, ns))
        .collect();
    let vips = allocate_vips(fqdns.iter().map(String::as_str), &cluster_ips);

    for (svc, ns, name) in services {
        let hostname = mesh.service_fqdn(&name, &ns);
        let Some(vip) = cluster_ip(svc).or_else(|| vips.get(&hostname).copied()) else {
            tracing::warn!(service = %hostname, "no VIP left in 198.19.0.0/16");
            continue;
        };
        let spec = svc.spec.as_ref();
        let selector = spec.and_then(|s| s.selector.clone()).unwrap_or_default();
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| {
                        Some(ServicePortInfo {
                            name: p.name.clone(),
                            port: u16::try_from(p.port).ok()?,
                            target_port: p.target_port.as_ref().map(|t| match t {
                                IntOrString::Int(i) => i.to_string(),
                                IntOrString::String(s) => s.clone(),
                            }),
                            protocol: Protocol::of_service_port(
                                p.name.as_deref(),
                                p.app_protocol.as_deref(),
                            ),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = (ns.clone(), name.clone());
        let eps = service_endpoints(
            &ns,
            &selector,
            endpoints.get(&key).map(Vec::as_slice).unwrap_or_default(),
            slices.get(&key).map(Vec::as_slice).unwrap_or_default(),
            &snap.workloads,
        );
        let namespace_labels = snap.namespaces.get(&ns).map(|n| &n.labels);
        let waypoint = waypoint_binding(svc.metadata.labels.as_ref(), namespace_labels, &ns);
        let info = ServiceInfo {
            name,
            namespace: ns,
            hostname: hostname.clone(),
            vip,
            headless: is_headless(svc),
            ports,
            selector,
            endpoints: eps,
            waypoint,
            locality: spec.map(Locality::of).unwrap_or_default(),
        };
        snap.services.insert(hostname, Arc::new(info));
    }
}

/// The waypoint a Service is bound to: its own `istio.io/use-waypoint` label, else its
/// namespace's; `none` on the Service opts it out of a namespace's waypoint. The
/// waypoint's namespace is `istio.io/use-waypoint-namespace` next to the label used, else
/// the Service's.
fn waypoint_binding(
    service_labels: Option<&BTreeMap<String, String>>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    service_namespace: &str,
) -> Option<WaypointRef> {
    let labels = [service_labels, namespace_labels]
        .into_iter()
        .flatten()
        .find(|l| l.contains_key(USE_WAYPOINT))?;
    let name = labels.get(USE_WAYPOINT)?;
    if name == "none" || name.is_empty() {
        return None;
    }
    let namespace = labels
        .get(USE_WAYPOINT_NAMESPACE)
        .cloned()
        .unwrap_or_else(|| service_namespace.to_string());
    Some(WaypointRef {
        namespace,
        name: name.clone(),
    })
}

/// The ConfigMap istiod reads the mesh configuration from.
pub fn is_mesh_config(namespace: &str, name: &str) -> bool {
    (namespace, name) == istio::mesh_config::MESH_CONFIG_MAP
}

/// `clusterIP: None` (Kubernetes' spelling of a headless Service).
fn is_headless(s: &Service) -> bool {
    s.spec.as_ref().and_then(|spec| spec.cluster_ip.as_deref()) == Some("None")
}

fn cluster_ip(s: &Service) -> Option<IpAddr> {
    s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()
}

/// A Service's endpoints: from its Endpoints/EndpointSlices when any exist, otherwise from
/// the workloads its selector matches (off-cluster).
pub fn service_endpoints(
    namespace: &str,
    selector: &BTreeMap<String, String>,
    endpoints: &[&Endpoints],
    slices: &[&EndpointSlice],
    workloads: &BTreeMap<String, Arc<Workload>>,
) -> Vec<Endpoint> {
    let labels_for = |target: Option<&k8s_openapi::api::core::v1::ObjectReference>| {
        let t = target?;
        let key = format!(
            "{}/{}",
            t.namespace.as_deref().unwrap_or(namespace),
            t.name.as_deref()?
        );
        let w = workloads.get(&key)?;
        Some((key, w.labels.clone()))
    };
    let mut out = Vec::new();
    if !endpoints.is_empty() || !slices.is_empty() {
        for e in endpoints {
            for subset in e.subsets.iter().flatten() {
                let ready = subset.addresses.iter().flatten().map(|a| (a, true));
                let not_ready = subset
                    .not_ready_addresses
                    .iter()
                    .flatten()
                    .map(|a| (a, false));
                for (a, is_ready) in ready.chain(not_ready) {
                    let (workload, labels) = labels_for(a.target_ref.as_ref()).unzip();
                    out.push(Endpoint {
                        address: a.ip.parse().ok(),
                        workload,
                        labels: labels.unwrap_or_default(),
                        ready: is_ready,
                    });
                }
            }
        }
        for s in slices {
            for e in &s.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let (workload, labels) = labels_for(e.target_ref.as_ref()).unzip();
                for a in &e.addresses {
                    out.push(Endpoint {
                        address: a.parse().ok(),
                        workload: workload.clone(),
                        labels: labels.clone().unwrap_or_default(),
                        ready,
                    });
                }
            }
        }
        return out;
    }
    if selector.is_empty() {
        return out;
    }
    let prefix = format!("{namespace}/");
    for (key, w) in workloads.range(prefix.clone()..) {
        if !key.starts_with(&prefix) {
            break;
        }
        if selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)) {
            out.push(Endpoint {
                address: w.address,
                workload: Some(key.clone()),
                labels: w.labels.clone(),
                ready: true,
            });
        }
    }
    out
}

fn build_routing(objects: &[&LoadedObject], mesh: &MeshOptions, snap: &mut Snapshot) {
    let mut se_names = Vec::new();
    for o in objects {
        let (ns, name) = ns_name(&o.object);
        let key = format!("{ns}/{name}");
        match &o.object {
            Object::VirtualService(vs) => {
                let routes = Arc::new(resolve_virtual_service(&vs.spec, &ns, &name, mesh));
                if routes.hosts.is_empty() {
                    snap.delegates.insert(key, routes);
                    continue;
                }
                for host in &routes.hosts {
                    snap.routes
                        .entry(host.clone())
                        .or_default()
                        .push(routes.clone());
                }
            }
            Object::DestinationRule(dr) => {
                let host = mesh.fqdn(&dr.spec.host, &ns);
                let info = DestinationRuleInfo {
                    name,
                    namespace: ns,
                    host: host.clone(),
                    traffic_policy: dr.spec.traffic_policy.clone(),
                    subsets: dr
                        .spec
                        .subsets
                        .iter()
                        .map(|s| (s.name.clone(), s.clone()))
                        .collect(),
                    export_to: dr.spec.export_to.clone(),
                };
                snap.destination_rules
                    .entry(host)
                    .or_default()
                    .push(Arc::new(info));
            }
            Object::Gateway(gw) => {
                let info = GatewayInfo {
                    name,
                    namespace: ns,
                    selector: gw.spec.selector.clone(),
                    servers: gw.spec.servers.clone(),
                };
                snap.gateways.insert(key, Arc::new(info));
            }
            Object::ServiceEntry(se) => se_names.push((key, ns, name, &se.spec)),
            Object::PeerAuthentication(pa) => {
                let info = PolicyInfo {
                    name,
                    namespace: ns,
                    spec: pa.spec.clone(),
                };
                snap.peer_authentications.insert(key, Arc::new(info));
            }
            Object::AuthorizationPolicy(ap) => {
                let info = PolicyInfo {
                    name,
                    namespace: ns,
                    spec: ap.spec.clone(),
                };
                snap.authorization_policies.insert(key, Arc::new(info));
            }
            Object::ConfigMap(cm) if is_mesh_config(&ns, &name) => {
                // Validation refused a mesh config that does not parse.
                if let Some(text) = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(istio::mesh_config::MESH_CONFIG_KEY))
                    && let Ok(mesh) = istio::mesh_config::MeshConfig::parse(text)
                {
                    snap.mesh_config = mesh;
                }
            }
            Object::Secret(secret) => {
                // Validation refused a Secret whose `data` is not base64.
                if let Ok(data) = secret.decoded() {
                    let info = SecretInfo {
                        name,
                        namespace: ns,
                        data,
                    };
                    snap.secrets.insert(key, Arc::new(info));
                }
            }
            Object::K8sGateway(gw)
                if gw.spec.gateway_class_name == istio::gateway_api::WAYPOINT_CLASS =>
            {
                let info = WaypointInfo {
                    name,
                    namespace: ns,
                    listeners: gw.spec.listeners.clone(),
                };
                snap.waypoints.insert(key, Arc::new(info));
            }
            _ => {}
        }
    }

    // ServiceEntry VIPs: the first IP of `addresses`, else allocated after the Services'.
    let taken: HashSet<IpAddr> = snap.services.values().map(|s| s.vip).collect();
    let vips = allocate_vips(se_names.iter().map(|(k, ..)| k.as_str()), &taken);
    for (key, ns, name, spec) in se_names {
        let given = spec.addresses.iter().find_map(|a| a.parse::<IpAddr>().ok());
        let Some(vip) = given.or_else(|| vips.get(&key).copied()) else {
            continue;
        };
        let info = ServiceEntryInfo {
            hosts: spec.hosts.iter().map(|h| mesh.fqdn(h, &ns)).collect(),
            name,
            namespace: ns,
            addresses: spec.addresses.clone(),
            ports: spec
                .ports
                .iter()
                .map(|p| ServiceEntryPort {
                    number: p.number,
                    name: p.name.clone(),
                    protocol: p
                        .protocol
                        .as_deref()
                        .and_then(Protocol::parse)
                        .unwrap_or(Protocol::Tcp),
                    target_port: p.target_port,
                })
                .collect(),
            location: spec.location.unwrap_or(istio::Location::MeshExternal),
            resolution: spec.resolution.unwrap_or(istio::Resolution::None),
            endpoints: spec.endpoints.clone(),
            export_to: spec.export_to.clone(),
            vip,
        };
        snap.service_entries.insert(key, Arc::new(info));
    }
}

/// A VirtualService with FQDN hosts, destinations and gateway references.
pub fn resolve_virtual_service(
    spec: &istio::VirtualServiceSpec,
    ns: &str,
    name: &str,
    mesh: &MeshOptions,
) -> VirtualServiceRoutes {
    let fq = |d: &mut istio::Destination| d.host = mesh.fqdn(&d.host, ns);
    let gateway = |g: &String| match mesh.gateway_ref(g, ns) {
        Some((gns, gname)) => format!("{gns}/{gname}"),
        None => "mesh".to_string(),
    };
    let mut http = spec.http.clone();
    for r in &mut http {
        r.route.iter_mut().for_each(|d| fq(&mut d.destination));
        if let Some(m) = r.mirror.as_mut() {
            fq(m);
        }
        r.mirrors.iter_mut().for_each(|m| fq(&mut m.destination));
        for m in &mut r.matches {
            m.gateways = m.gateways.iter().map(gateway).collect();
        }
    }
    // Match-level `gateways` take the same `namespace/name` form as the VirtualService's,
    // for `tls` and `tcp` rules as for `http` ones.
    let mut tls = spec.tls.clone();
    for r in &mut tls {
        r.route.iter_mut().for_each(|d| fq(&mut d.destination));
        for m in &mut r.matches {
            m.gateways = m.gateways.iter().map(gateway).collect();
        }
    }
    let mut tcp = spec.tcp.clone();
    for r in &mut tcp {
        r.route.iter_mut().for_each(|d| fq(&mut d.destination));
        for m in &mut r.matches {
            m.gateways = m.gateways.iter().map(gateway).collect();
        }
    }
    VirtualServiceRoutes {
        name: name.to_string(),
        namespace: ns.to_string(),
        hosts: spec.hosts.iter().map(|h| mesh.fqdn(h, ns)).collect(),
        gateways: if spec.gateways.is_empty() {
            vec!["mesh".to_string()]
        } else {
            spec.gateways.iter().map(gateway).collect()
        },
        http,
        tls,
        tcp,
        export_to: spec.export_to.clone(),
    }
}
