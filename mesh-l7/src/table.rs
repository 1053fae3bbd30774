//! `RouteTable::build`: a snapshot turned into what the data path reads per request —
//! compiled VirtualServices indexed by host (exact, then wildcards by specificity),
//! resolved delegates, a default rule per Service, and every cluster (host × subset × port)
//! with its endpoints and traffic policy. Built once per snapshot; a bad regex or a missing
//! delegate refuses the whole snapshot, so the caller keeps its previous table.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_config::Snapshot;
use mesh_config::authz::DEFAULT_ROOT_NAMESPACE;
use mesh_config::istio::Resolution;
use mesh_config::resolve::host_matches;
use mesh_config::snapshot::{Endpoint, VirtualServiceRoutes};

use crate::cluster::{Cluster, ClusterEndpoint};
use crate::error::L7ConfigError;
use crate::policy::{ClusterPolicy, MergedRule, merge};
use crate::rule::{HttpRule, VirtualService};

/// Where the table is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    pub cluster_domain: String,
    /// Istio's `meshConfig.rootNamespace`.
    pub root_namespace: String,
    /// The namespace of the waypoint or gateway: DestinationRules are looked up from it.
    pub proxy_namespace: Option<String>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            cluster_domain: "cluster.local".to_string(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            proxy_namespace: None,
        }
    }
}

/// Everything routing reads, for one snapshot.
#[derive(Debug)]
pub struct RouteTable {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) options: TableOptions,
    pub(crate) virtual_services: Vec<VirtualService>,
    pub(crate) delegates: Vec<VirtualService>,
    /// Lower-case host → indexes into `virtual_services`, in creation order.
    pub(crate) exact: HashMap<String, Vec<usize>>,
    /// `*.suffix` and `*`, most specific (longest) first.
    pub(crate) wildcards: Vec<(String, Vec<usize>)>,
    /// Hosts the mesh knows (Services, ServiceEntry hosts) → their ports.
    pub(crate) host_ports: HashMap<String, Vec<u16>>,
    /// The rule of a host no VirtualService names.
    pub(crate) defaults: HashMap<String, HttpRule>,
    pub(crate) clusters: HashMap<String, Vec<Cluster>>,
}

impl RouteTable {
    pub fn build(
        snapshot: Arc<Snapshot>,
        options: TableOptions,
    ) -> Result<RouteTable, L7ConfigError> {
        let mut table = RouteTable {
            snapshot: snapshot.clone(),
            options,
            virtual_services: Vec::new(),
            delegates: Vec::new(),
            exact: HashMap::new(),
            wildcards: Vec::new(),
            host_ports: HashMap::new(),
            defaults: HashMap::new(),
            clusters: HashMap::new(),
        };
        table.build_delegates(&snapshot)?;
        table.build_virtual_services(&snapshot)?;
        table.build_clusters(&snapshot);
        Ok(table)
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    pub fn options(&self) -> &TableOptions {
        &self.options
    }

    fn build_delegates(&mut self, snap: &Snapshot) -> Result<(), L7ConfigError> {
        let keys: Vec<&String> = snap.delegates.keys().collect();
        for (key, vs) in &snap.delegates {
            let mut nested = |d: &str, field: &str| {
                Err(if keys.iter().any(|k| k.as_str() == d) {
                    L7ConfigError::NestedDelegate {
                        virtual_service: key.clone(),
                        field: field.to_string(),
                        delegate: d.to_string(),
                    }
                } else {
                    L7ConfigError::MissingDelegate {
                        virtual_service: key.clone(),
                        field: field.to_string(),
                        delegate: d.to_string(),
                    }
                })
            };
            self.delegates.push(compile_vs(key, vs, &mut nested)?);
        }
        Ok(())
    }

    fn build_virtual_services(&mut self, snap: &Snapshot) -> Result<(), L7ConfigError> {
        // One VirtualService sits under each of its hosts in the snapshot; compile it once.
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (host, list) in &snap.routes {
            for vs in list {
                let id = (vs.namespace.clone(), vs.name.clone());
                let index = match seen.get(&id) {
                    Some(i) => *i,
                    None => {
                        let key = format!("{}/{}", vs.namespace, vs.name);
                        let delegates = &self.delegates;
                        let mut resolve = |d: &str, field: &str| {
                            delegates.iter().position(|x| x.key == d).ok_or_else(|| {
                                L7ConfigError::MissingDelegate {
                                    virtual_service: key.clone(),
                                    field: field.to_string(),
                                    delegate: d.to_string(),
                                }
                            })
                        };
                        let compiled = compile_vs(&key, vs, &mut resolve)?;
                        self.virtual_services.push(compiled);
                        let i = self.virtual_services.len() - 1;
                        seen.insert(id, i);
                        i
                    }
                };
                let host = host.to_ascii_lowercase();
                if host.starts_with('*') {
                    match self.wildcards.iter_mut().find(|(h, _)| *h == host) {
                        Some((_, v)) => v.push(index),
                        None => self.wildcards.push((host, vec![index])),
                    }
                } else {
                    self.exact.entry(host).or_default().push(index);
                }
            }
        }
        // Most specific first; `*` (length 1) ends the list.
        self.wildcards
            .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Ok(())
    }

    fn build_clusters(&mut self, snap: &Snapshot) {
        let root = self.options.root_namespace.clone();
        let proxy_ns = self.options.proxy_namespace.clone();
        let rule_for = |host: &str, ns: Option<&str>| -> Option<MergedRule> {
            let rules = snap.destination_rules.get(host)?;
            merge(rules, proxy_ns.as_deref(), ns, &root)
        };
        for (host, svc) in &snap.services {
            let rule = rule_for(host, Some(&svc.namespace));
            let ports: Vec<u16> = svc.ports.iter().map(|p| p.port).collect();
            let mut clusters = Vec::new();
            for port in &svc.ports {
                let endpoints = |labels: Option<&std::collections::BTreeMap<String, String>>| {
                    svc.endpoints
                        .iter()
                        .filter(|e| e.ready)
                        .filter(|e| {
                            labels.is_none_or(|l| l.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                        })
                        .filter_map(|e| {
                            service_endpoint(snap, e, port.target_port.as_deref(), port.port)
                        })
                        .collect::<Vec<_>>()
                };
                clusters.push(Cluster::new(
                    host,
                    None,
                    port.port,
                    endpoints(None),
                    ClusterPolicy::resolve(rule.as_ref(), None, port.port),
                ));
                for (name, subset) in rule.iter().flat_map(|r| &r.subsets) {
                    clusters.push(Cluster::new(
                        host,
                        Some(name),
                        port.port,
                        endpoints(Some(&subset.labels)),
                        ClusterPolicy::resolve(rule.as_ref(), Some(name), port.port),
                    ));
                }
            }
            self.host_ports.insert(host.clone(), ports);
            self.defaults
                .insert(host.clone(), HttpRule::default_for(host));
            self.clusters.insert(host.clone(), clusters);
        }
        for se in snap.service_entries.values() {
            for host in &se.hosts {
                if self.clusters.contains_key(host) || host.starts_with('*') {
                    continue;
                }
                let rule = rule_for(host, Some(&se.namespace));
                let mut clusters = Vec::new();
                let mut ports = Vec::new();
                for p in &se.ports {
                    let Ok(number) = u16::try_from(p.number) else {
                        continue;
                    };
                    ports.push(number);
                    let target = p
                        .target_port
                        .and_then(|t| u16::try_from(t).ok())
                        .unwrap_or(number);
                    let endpoints =
                        |labels: Option<&std::collections::BTreeMap<String, String>>| {
                            let mut out: Vec<ClusterEndpoint> = se
                                .endpoints
                                .iter()
                                .filter(|e| {
                                    labels.is_none_or(|l| {
                                        l.iter().all(|(k, v)| e.labels.get(k) == Some(v))
                                    })
                                })
                                .filter_map(|e| {
                                    let address = e.address.as_deref()?;
                                    let port = p
                                        .name
                                        .as_ref()
                                        .and_then(|n| e.ports.get(n))
                                        .and_then(|n| u16::try_from(*n).ok())
                                        .unwrap_or(target);
                                    let ip = address.parse().ok();
                                    Some(ClusterEndpoint {
                                        key: address.into(),
                                        address: ip,
                                        workload: None,
                                        telemetry: None,
                                        hostname: ip.is_none().then(|| address.to_string()),
                                        port,
                                    })
                                })
                                .collect();
                            if se.endpoints.is_empty() && se.resolution != Resolution::Static {
                                // DNS (or NONE): the host itself, resolved by the caller.
                                out.push(ClusterEndpoint {
                                    key: host.as_str().into(),
                                    address: None,
                                    workload: None,
                                    telemetry: None,
                                    hostname: Some(host.clone()),
                                    port: target,
                                });
                            }
                            out
                        };
                    clusters.push(Cluster::new(
                        host,
                        None,
                        number,
                        endpoints(None),
                        ClusterPolicy::resolve(rule.as_ref(), None, number),
                    ));
                    for (name, subset) in rule.iter().flat_map(|r| &r.subsets) {
                        clusters.push(Cluster::new(
                            host,
                            Some(name),
                            number,
                            endpoints(Some(&subset.labels)),
                            ClusterPolicy::resolve(rule.as_ref(), Some(name), number),
                        ));
                    }
                }
                self.host_ports.insert(host.clone(), ports);
                self.defaults
                    .insert(host.clone(), HttpRule::default_for(host));
                self.clusters.insert(host.clone(), clusters);
            }
        }
    }

    /// Whether Gateway `key` (`namespace/name`) has a server on `port` whose `hosts` admit
    /// `host`. A server host's `namespace/` part (which namespaces may bind VirtualServices)
    /// is not checked here.
    pub fn gateway_serves(&self, key: &str, port: u16, host: &str) -> bool {
        self.server_hosts(key, port)
            .any(|pattern| host_matches(pattern, host))
    }

    /// The hosts of Gateway `gateway`'s servers on `port`, without their `namespace/` part.
    pub(crate) fn server_hosts<'t>(
        &'t self,
        gateway: &str,
        port: u16,
    ) -> impl Iterator<Item = &'t str> + 't {
        self.snapshot
            .gateways
            .get(gateway)
            .into_iter()
            .flat_map(|g| &g.servers)
            .filter(move |s| s.port.number == u32::from(port))
            .flat_map(|s| &s.hosts)
            .map(|h| h.split_once('/').map_or(h.as_str(), |(_, host)| host))
    }

    /// The cluster of `host`, `subset`, `port`, if the mesh knows it.
    pub fn cluster(&self, host: &str, subset: Option<&str>, port: u16) -> Option<&Cluster> {
        self.clusters
            .get(host)?
            .iter()
            .find(|c| c.port == port && c.subset.as_deref() == subset)
    }
}

fn compile_vs(
    key: &str,
    vs: &VirtualServiceRoutes,
    delegate: &mut dyn FnMut(&str, &str) -> Result<usize, L7ConfigError>,
) -> Result<VirtualService, L7ConfigError> {
    let http = vs
        .http
        .iter()
        .enumerate()
        .map(|(i, r)| HttpRule::compile(vs, key, i, r, delegate))
        .collect::<Result<Vec<_>, _>>()?;
    let tcp = vs
        .tcp
        .iter()
        .enumerate()
        .map(|(i, r)| crate::tcp::TcpRule::compile(key, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    let tls = vs
        .tls
        .iter()
        .enumerate()
        .map(|(i, r)| crate::tls::TlsRule::compile(key, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VirtualService {
        tcp,
        tls,
        key: key.to_string(),
        namespace: vs.namespace.clone(),
        hosts: vs.hosts.clone(),
        gateways: vs.gateways.clone(),
        export_to: vs.export_to.clone(),
        http,
    })
}

/// A Service endpoint with the port to connect to: `targetPort` as a number, or a container
/// port name looked up on the endpoint's workload (an endpoint without it is left out).
fn service_endpoint(
    snap: &Snapshot,
    e: &Endpoint,
    target_port: Option<&str>,
    port: u16,
) -> Option<ClusterEndpoint> {
    let port = match target_port {
        None => port,
        Some(t) => match t.parse::<u16>() {
            Ok(n) => n,
            Err(_) => {
                // A workload without that port name is left out of the cluster (the
                // configuration crate's validator is where users hear about it).
                let workload = snap.workloads.get(e.workload.as_deref()?)?;
                workload
                    .container_ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(t))
                    .map(|p| p.port)?
            }
        },
    };
    let key: Arc<str> = match (&e.workload, e.address) {
        (Some(w), _) => w.as_str().into(),
        (None, Some(ip)) => ip.to_string().into(),
        (None, None) => return None,
    };
    let telemetry = e
        .workload
        .as_deref()
        .and_then(|w| snap.workloads.get(w))
        .map(|w| Arc::new(w.telemetry_names()));
    Some(ClusterEndpoint {
        key,
        address: e.address,
        workload: e.workload.clone(),
        telemetry,
        hostname: None,
        port,
    })
}
