//! The one immutable, plain-data view of the mesh that the agent, waypoint and gateway read.
//! Maps are `BTreeMap`s so `config-dump` output is sorted and stable; large parts sit behind
//! `Arc` so an incremental update (one Service's endpoints) copies pointers, not data.

mod build;
mod vip;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::Serialize;

pub use build::{
    BuildError, BuildOptions, DATAPLANE_MODE, GATEWAY_NAME_LABEL, ISTIO_INJECTION,
    SERVICE_NAME_LABEL, USE_WAYPOINT, USE_WAYPOINT_NAMESPACE, is_mesh_config,
    resolve_virtual_service, service_endpoints,
};
pub use vip::allocate_vips;

use crate::istio;
use crate::resolve::Protocol;

/// The mesh's state at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Namespaces named by any object, with their enrollment.
    pub namespaces: BTreeMap<String, NamespaceInfo>,
    /// Kubernetes Services by FQDN (`reviews.default.svc.cluster.local`).
    pub services: BTreeMap<String, Arc<ServiceInfo>>,
    /// Workloads (pods, or a Deployment's replicas off-cluster) by `namespace/name`.
    pub workloads: BTreeMap<String, Arc<Workload>>,
    /// VirtualServices by the FQDN (or wildcard) of each of their hosts, in creation order.
    pub routes: BTreeMap<String, Vec<Arc<VirtualServiceRoutes>>>,
    /// VirtualServices without hosts by `namespace/name`: only reachable through another
    /// VirtualService's `delegate`.
    pub delegates: BTreeMap<String, Arc<VirtualServiceRoutes>>,
    /// DestinationRules by the FQDN of their host.
    pub destination_rules: BTreeMap<String, Vec<Arc<DestinationRuleInfo>>>,
    /// Istio Gateways by `namespace/name`.
    pub gateways: BTreeMap<String, Arc<GatewayInfo>>,
    /// ServiceEntries by `namespace/name`.
    pub service_entries: BTreeMap<String, Arc<ServiceEntryInfo>>,
    /// PeerAuthentications by `namespace/name`.
    pub peer_authentications: BTreeMap<String, Arc<PolicyInfo<istio::PeerAuthenticationSpec>>>,
    /// AuthorizationPolicies by `namespace/name`.
    pub authorization_policies: BTreeMap<String, Arc<PolicyInfo<istio::AuthorizationPolicySpec>>>,
    /// Istio's mesh configuration (`istio-system/istio`, key `mesh`), defaults without it.
    pub mesh_config: istio::mesh_config::MeshConfig,
    /// Waypoints (Gateways of class `istio-waypoint`) by `namespace/name`.
    pub waypoints: BTreeMap<String, Arc<WaypointInfo>>,
    /// Secrets by `namespace/name`, values decoded (the gateway's `credentialName`). The
    /// config dump shows their keys only.
    pub secrets: BTreeMap<String, Arc<SecretInfo>>,
    /// Service VIP -> key in `services`: the data path looks a connection's destination up
    /// here on every new connection, so no scan over all services.
    #[serde(skip)]
    pub services_by_vip: BTreeMap<IpAddr, String>,
    /// Workload address -> key in `workloads`: the data path asks "is this destination a
    /// mesh workload, with which identity" on every new connection.
    #[serde(skip)]
    pub workloads_by_ip: BTreeMap<IpAddr, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceInfo {
    pub labels: BTreeMap<String, String>,
    /// The mesh captures this namespace's pods (unless a pod opts out).
    pub ambient: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// The clusterIP, or an address allocated from 198.19.0.0/16 (also for a headless
    /// Service, which the data path may still be handed).
    pub vip: IpAddr,
    /// `clusterIP: None`: DNS answers with the endpoints' addresses, not the VIP.
    pub headless: bool,
    pub ports: Vec<ServicePortInfo>,
    pub selector: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint>,
    /// The waypoint its traffic goes through: `istio.io/use-waypoint` of the Service (or
    /// its namespace).
    pub waypoint: Option<WaypointRef>,
    /// Whether endpoints on the client's own node come first (or alone).
    pub locality: Locality,
}

/// Which endpoints of a Service a client should prefer, from its spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Locality {
    /// Any ready endpoint.
    #[default]
    Any,
    /// `trafficDistribution: PreferClose` (or `PreferSameNode`): endpoints on the client's
    /// node when there are any ready ones, the others otherwise.
    PreferSameNode,
    /// `internalTrafficPolicy: Local`: only endpoints on the client's node; none there
    /// means no endpoint.
    SameNodeOnly,
}

impl Locality {
    pub fn of(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Locality {
        if spec.internal_traffic_policy.as_deref() == Some("Local") {
            return Locality::SameNodeOnly;
        }
        match spec.traffic_distribution.as_deref() {
            // Off-cluster there are no zones: the node is the closest there is.
            Some("PreferClose" | "PreferSameNode" | "PreferSameZone") => Locality::PreferSameNode,
            _ => Locality::Any,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: u16,
    /// A number, or a named container port.
    pub target_port: Option<String>,
    pub protocol: Protocol,
}

/// One backend of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Absent off-cluster, where the testbed gives each workload its address.
    pub address: Option<IpAddr>,
    /// `namespace/name` of the workload, when known.
    pub workload: Option<String>,
    /// Labels for subset selection (the workload's).
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The pod's name.
    pub name: String,
    pub namespace: String,
    /// What Istio's telemetry calls it: the Deployment (StatefulSet, ...) it belongs to,
    /// else the pod itself ([`crate::canonical::workload_name`]).
    pub workload_name: String,
    /// `service.istio.io/canonical-name`, `app`, ... ([`crate::canonical`]).
    pub canonical_service: String,
    pub canonical_revision: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub address: Option<IpAddr>,
    /// `Pod`, or the workload kind whose pod template defined it (`Deployment`, ...).
    pub source: &'static str,
    /// Captured by the mesh (Istio ambient enrollment).
    pub ambient: bool,
    pub container_ports: Vec<ContainerPort>,
}

impl Workload {
    /// Its names in telemetry.
    pub fn telemetry_names(&self) -> crate::canonical::TelemetryNames {
        crate::canonical::TelemetryNames {
            workload: self.workload_name.clone(),
            namespace: self.namespace.clone(),
            canonical_service: self.canonical_service.clone(),
            canonical_revision: self.canonical_revision.clone(),
        }
    }

    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
}

/// A VirtualService with every host name made fully qualified (hosts, destinations, gateways).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VirtualServiceRoutes {
    pub name: String,
    pub namespace: String,
    pub hosts: Vec<String>,
    /// `namespace/name` of bound Gateways; `mesh` for the mesh itself (the default).
    pub gateways: Vec<String>,
    pub http: Vec<istio::HttpRoute>,
    pub tls: Vec<istio::TlsRoute>,
    pub tcp: Vec<istio::TcpRoute>,
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationRuleInfo {
    pub name: String,
    pub namespace: String,
    pub host: String,
    pub traffic_policy: Option<istio::TrafficPolicy>,
    pub subsets: BTreeMap<String, istio::Subset>,
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayInfo {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<istio::Server>,
}

/// A Secret's decoded values (`Debug` and `Serialize` name the keys, never the values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub namespace: String,
    pub data: crate::secret::SecretData,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEntryInfo {
    pub name: String,
    pub namespace: String,
    pub hosts: Vec<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<ServiceEntryPort>,
    pub location: istio::Location,
    pub resolution: istio::Resolution,
    pub endpoints: Vec<istio::WorkloadEntrySpec>,
    pub export_to: Vec<String>,
    pub vip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntryPort {
    pub number: u32,
    pub name: Option<String>,
    pub protocol: Protocol,
    pub target_port: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyInfo<S> {
    pub name: String,
    pub namespace: String,
    pub spec: S,
}

/// A waypoint named by `istio.io/use-waypoint`: a Gateway of class `istio-waypoint`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct WaypointRef {
    pub namespace: String,
    pub name: String,
}

impl WaypointRef {
    /// `namespace/name`, the key of [`Snapshot::waypoints`].
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether `workload` is one of this waypoint's pods (Istio labels them with the
    /// Gateway's name).
    pub fn runs_on(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        namespace == self.namespace
            && labels.get(GATEWAY_NAME_LABEL).map(String::as_str) == Some(self.name.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaypointInfo {
    pub name: String,
    pub namespace: String,
    pub listeners: Vec<istio::gateway_api::Listener>,
}

impl Snapshot {
    /// The Service behind a host name as a client in `namespace` writes it (`reviews`,
    /// `reviews.default`, `reviews.default.svc`, or the FQDN).
    pub fn service_by_host(
        &self,
        host: &str,
        namespace: &str,
        domain: &str,
    ) -> Option<&ServiceInfo> {
        let fqdn = match host.matches('.').count() {
            0 => format!("{host}.{namespace}.svc.{domain}"),
            1 => format!("{host}.svc.{domain}"),
            2 if host.ends_with(".svc") => format!("{host}.{domain}"),
            _ => host.to_string(),
        };
        self.services.get(&fqdn).map(Arc::as_ref)
    }

    /// The Service (or ServiceEntry host) owning a VIP.
    pub fn service_by_vip(&self, vip: IpAddr) -> Option<&ServiceInfo> {
        let fqdn = self.services_by_vip.get(&vip)?;
        self.services.get(fqdn).map(Arc::as_ref)
    }

    /// The workload (pod) that has address `ip`.
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        let key = self.workloads_by_ip.get(&ip)?;
        self.workloads.get(key).map(Arc::as_ref)
    }

    /// The pods of waypoint `waypoint` that have an address, when the waypoint (its
    /// Gateway of class `istio-waypoint`) exists.
    pub fn waypoint_workloads(&self, waypoint: &WaypointRef) -> Vec<&Workload> {
        if !self.waypoints.contains_key(&waypoint.key()) {
            return Vec::new();
        }
        self.workloads
            .values()
            .filter(|w| w.address.is_some() && waypoint.runs_on(&w.namespace, &w.labels))
            .map(Arc::as_ref)
            .collect()
    }

    /// The waypoint `labels` in `namespace` make a pod of, if it is one that exists.
    pub fn waypoint_of_pod(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<WaypointRef> {
        let name = labels.get(GATEWAY_NAME_LABEL)?;
        let waypoint = WaypointRef {
            namespace: namespace.to_string(),
            name: name.clone(),
        };
        self.waypoints
            .contains_key(&waypoint.key())
            .then_some(waypoint)
    }

    /// The VirtualServices that apply to `fqdn` (exact host first, then wildcards).
    pub fn routes_for(&self, fqdn: &str) -> Vec<&VirtualServiceRoutes> {
        if let Some(exact) = self.routes.get(fqdn) {
            return exact.iter().map(Arc::as_ref).collect();
        }
        self.routes
            .iter()
            .filter(|(pattern, _)| {
                pattern.starts_with('*') && crate::resolve::host_matches(pattern, fqdn)
            })
            .flat_map(|(_, v)| v.iter().map(Arc::as_ref))
            .collect()
    }

    /// A subset of the DestinationRule for `fqdn`.
    pub fn subset(&self, fqdn: &str, subset: &str) -> Option<&istio::Subset> {
        self.destination_rules
            .get(fqdn)?
            .iter()
            .find_map(|dr| dr.subsets.get(subset))
    }

    /// Serializes for `config-dump` (sorted keys).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("error: {e}\n"))
    }

    /// Counts for status output.
    pub fn summary(&self) -> String {
        let endpoints: usize = self.services.values().map(|s| s.endpoints.len()).sum();
        format!(
            "{} services, {} endpoints, {} workloads, {} route hosts, {} gateways, {} service entries",
            self.services.len(),
            endpoints,
            self.workloads.len(),
            self.routes.len(),
            self.gateways.len(),
            self.service_entries.len()
        )
    }
}

/// The network Service VIPs are allocated from when a Service has no clusterIP (198.19.0.0/16).
pub const VIP_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
