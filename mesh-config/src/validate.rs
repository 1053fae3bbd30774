//! Analyzers in the spirit of `istioctl validate` / `istioctl analyze`. Each finding names the
//! file, the line, the object and the field.
//!
//! Errors: a route to a subset no DestinationRule defines; route weights not summing to 100;
//! a multi-port Service with an unnamed port; a VirtualService bound to a missing Gateway; two
//! VirtualServices claiming the same host for the mesh; a host listed twice in one
//! VirtualService; unknown port protocols; bad `exportTo`; percentages outside 0–100;
//! AuthorizationPolicy addresses that are not an IP or CIDR, ports outside 1–65535, empty
//! sources and operations, conditions without values; PeerAuthentication `portLevelMtls`
//! without a workload selector or keyed by something other than a port.
//! Warnings: a single-port Service without a port name (its protocol is taken as TCP).

use std::collections::{BTreeMap, HashSet};

use crate::authz::{self, IpBlock};
use crate::error::{ConfigError, ConfigWarning};
use crate::istio::{self, Destination};
use crate::object::{LoadedObject, Object, latest_by_key};
use crate::resolve::{self, MeshOptions, Protocol};

/// Runs every analyzer over a set of files' objects (duplicates resolved as the store does).
pub fn validate(
    objects: &[LoadedObject],
    mesh: &MeshOptions,
) -> (Vec<ConfigError>, Vec<ConfigWarning>) {
    let (objects, mut warnings) = latest_by_key(objects);
    let (errors, more) = analyze(&objects, mesh);
    warnings.extend(more);
    (errors, warnings)
}

/// Runs every analyzer over objects with unique keys.
pub fn analyze(
    objects: &[&LoadedObject],
    mesh: &MeshOptions,
) -> (Vec<ConfigError>, Vec<ConfigWarning>) {
    let mut a = Analysis {
        mesh,
        errors: Vec::new(),
        warnings: Vec::new(),
        subsets: BTreeMap::new(),
        gateways: HashSet::new(),
    };
    for o in objects {
        let ns = o.object.meta().namespace.clone().unwrap_or_default();
        let name = o.object.meta().name.clone().unwrap_or_default();
        match &o.object {
            Object::DestinationRule(dr) => {
                let host = mesh.fqdn(&dr.spec.host, &ns);
                let entry = a.subsets.entry(host).or_default();
                entry.extend(dr.spec.subsets.iter().map(|s| s.name.clone()));
            }
            Object::Gateway(_) => {
                a.gateways.insert(format!("{ns}/{name}"));
            }
            _ => {}
        }
    }
    let mut mesh_hosts: BTreeMap<String, &LoadedObject> = BTreeMap::new();
    for o in objects {
        match &o.object {
            Object::VirtualService(vs) => {
                a.virtual_service(o, &vs.spec);
                a.host_conflicts(o, &vs.spec, &mut mesh_hosts);
            }
            Object::Service(svc) => a.service(o, svc),
            Object::Gateway(gw) => a.gateway(o, &gw.spec),
            Object::ServiceEntry(se) => a.service_entry(o, &se.spec),
            Object::DestinationRule(dr) => a.export_to(o, &dr.spec.export_to),
            Object::AuthorizationPolicy(ap) => a.authorization_policy(o, &ap.spec),
            Object::PeerAuthentication(pa) => a.peer_authentication(o, &pa.spec),
            Object::ConfigMap(cm) => a.mesh_config(o, cm),
            Object::Secret(secret) => {
                if let Err(e) = secret.decoded() {
                    a.error(o, &format!("data.{}", e.key), e.to_string());
                }
            }
            _ => {}
        }
    }
    (a.errors, a.warnings)
}

struct Analysis<'a> {
    mesh: &'a MeshOptions,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
    /// Host FQDN → subset names defined by DestinationRules.
    subsets: BTreeMap<String, HashSet<String>>,
    /// `namespace/name` of Istio Gateways.
    gateways: HashSet<String>,
}

impl Analysis<'_> {
    fn error(&mut self, o: &LoadedObject, field: &str, message: String) {
        self.errors
            .push(ConfigError::invalid(o.place(field), message));
    }

    /// `istio-system/istio`: its `mesh` key must parse as Istio's mesh configuration.
    fn mesh_config(&mut self, o: &LoadedObject, cm: &k8s_openapi::api::core::v1::ConfigMap) {
        let meta = o.object.meta();
        let (ns, name) = (
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        if !crate::snapshot::is_mesh_config(ns, name) {
            return;
        }
        let key = istio::mesh_config::MESH_CONFIG_KEY;
        if let Some(text) = cm.data.as_ref().and_then(|d| d.get(key))
            && let Err(e) = istio::mesh_config::MeshConfig::parse(text)
        {
            self.error(
                o,
                &format!("data.{key}"),
                format!("not a mesh configuration: {e}"),
            );
        }
    }

    fn ns(o: &LoadedObject) -> String {
        o.object.meta().namespace.clone().unwrap_or_default()
    }

    fn virtual_service(&mut self, o: &LoadedObject, spec: &istio::VirtualServiceSpec) {
        let ns = Self::ns(o);
        self.export_to(o, &spec.export_to);
        for (i, g) in spec.gateways.iter().enumerate() {
            self.gateway_ref(o, &ns, g, &format!("spec.gateways[{i}]"));
        }
        for (i, route) in spec.http.iter().enumerate() {
            let base = format!("spec.http[{i}]");
            for (j, m) in route.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    self.gateway_ref(o, &ns, g, &format!("{base}.match[{j}].gateways[{k}]"));
                }
            }
            let dests: Vec<(&Destination, Option<i32>)> = route
                .route
                .iter()
                .map(|d| (&d.destination, d.weight))
                .collect();
            self.destinations(o, &ns, &format!("{base}.route"), &dests);
            if let Some(fault) = &route.fault {
                if let Some(d) = &fault.delay {
                    self.percent(o, &format!("{base}.fault.delay"), d.percentage, d.percent);
                }
                if let Some(ab) = &fault.abort {
                    self.percent(o, &format!("{base}.fault.abort"), ab.percentage, ab.percent);
                    if let Some(s) = ab.http_status
                        && !(200..=599).contains(&s)
                    {
                        self.error(
                            o,
                            &format!("{base}.fault.abort.httpStatus"),
                            format!("HTTP status {s} is not in 200..599"),
                        );
                    }
                }
            }
            if let Some(m) = &route.mirror {
                self.destinations(o, &ns, &format!("{base}.mirror"), &[(m, None)]);
            }
        }
        for (i, route) in spec.tcp.iter().enumerate() {
            let dests: Vec<_> = route
                .route
                .iter()
                .map(|d| (&d.destination, d.weight))
                .collect();
            self.destinations(o, &ns, &format!("spec.tcp[{i}].route"), &dests);
        }
        for (i, route) in spec.tls.iter().enumerate() {
            let dests: Vec<_> = route
                .route
                .iter()
                .map(|d| (&d.destination, d.weight))
                .collect();
            self.destinations(o, &ns, &format!("spec.tls[{i}].route"), &dests);
        }
    }

    fn gateway_ref(&mut self, o: &LoadedObject, ns: &str, reference: &str, field: &str) {
        if let Some((gns, gname)) = self.mesh.gateway_ref(reference, ns) {
            let key = format!("{gns}/{gname}");
            if !self.gateways.contains(&key) {
                self.error(o, field, format!("Gateway {key} does not exist"));
            }
        }
    }

    /// Subsets defined, weights summing to 100.
    fn destinations(
        &mut self,
        o: &LoadedObject,
        ns: &str,
        base: &str,
        dests: &[(&Destination, Option<i32>)],
    ) {
        // `mirror` is a single destination, not a list.
        let is_list = !base.ends_with(".mirror");
        for (j, (d, weight)) in dests.iter().enumerate() {
            let at = if is_list {
                format!("{base}[{j}]")
            } else {
                base.to_string()
            };
            if let Some(subset) = &d.subset {
                let host = self.mesh.fqdn(&d.host, ns);
                let defined = self
                    .subsets
                    .iter()
                    .filter(|(h, _)| resolve::host_matches(h, &host))
                    .any(|(_, s)| s.contains(subset));
                if !defined {
                    let known = self
                        .subsets
                        .get(&host)
                        .map(|s| {
                            let mut v: Vec<&str> = s.iter().map(String::as_str).collect();
                            v.sort_unstable();
                            format!(" (its DestinationRule defines: {})", v.join(", "))
                        })
                        .unwrap_or_else(|| " (no DestinationRule for this host)".to_string());
                    self.error(
                        o,
                        &format!("{at}.destination.subset"),
                        format!("subset {subset:?} of host {host} is not defined{known}"),
                    );
                }
            }
            if let Some(w) = weight
                && *w < 0
            {
                self.error(
                    o,
                    &format!("{at}.weight"),
                    format!("weight {w} is negative"),
                );
            }
        }
        let weighted: Vec<(usize, i32)> = dests
            .iter()
            .enumerate()
            .filter_map(|(j, (_, w))| w.map(|w| (j, w)))
            .collect();
        if let Some(&(last, _)) = weighted.last() {
            let sum: i64 = weighted.iter().map(|(_, w)| i64::from(*w)).sum();
            let all_weighted = weighted.len() == dests.len();
            if sum != 100 && (dests.len() > 1 || sum != 0) && all_weighted {
                self.error(
                    o,
                    &format!("{base}[{last}].weight"),
                    format!("weights sum to {sum}, expected 100"),
                );
            } else if !all_weighted && dests.len() > 1 && sum > 100 {
                self.error(
                    o,
                    &format!("{base}[{last}].weight"),
                    format!("weights sum to {sum}, more than 100"),
                );
            }
        }
    }

    fn percent(
        &mut self,
        o: &LoadedObject,
        base: &str,
        percentage: Option<istio::Percent>,
        percent: Option<i32>,
    ) {
        if let Some(p) = percentage
            && !(0.0..=100.0).contains(&p.value)
        {
            self.error(
                o,
                &format!("{base}.percentage.value"),
                format!("{} is not in 0..100", p.value),
            );
        }
        if let Some(p) = percent
            && !(0..=100).contains(&p)
        {
            self.error(
                o,
                &format!("{base}.percent"),
                format!("{p} is not in 0..100"),
            );
        }
    }

    fn host_conflicts<'o>(
        &mut self,
        o: &'o LoadedObject,
        spec: &istio::VirtualServiceSpec,
        mesh_hosts: &mut BTreeMap<String, &'o LoadedObject>,
    ) {
        let ns = Self::ns(o);
        let bound_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
        let mut seen = HashSet::new();
        for (i, h) in spec.hosts.iter().enumerate() {
            let fqdn = self.mesh.fqdn(h, &ns);
            if !seen.insert(fqdn.clone()) {
                self.error(
                    o,
                    &format!("spec.hosts[{i}]"),
                    format!("host {fqdn} is listed twice"),
                );
                continue;
            }
            if !bound_to_mesh {
                continue;
            }
            if let Some(other) = mesh_hosts.get(&fqdn) {
                let p = other.place("spec.hosts");
                let at = match (&p.file, p.line) {
                    (Some(f), Some(l)) => format!(" ({}:{l})", f.display()),
                    _ => String::new(),
                };
                self.error(
                    o,
                    &format!("spec.hosts[{i}]"),
                    format!("host {fqdn} is also claimed by {}{at}", other.key()),
                );
            } else {
                mesh_hosts.insert(fqdn, o);
            }
        }
    }

    fn service(&mut self, o: &LoadedObject, svc: &k8s_openapi::api::core::v1::Service) {
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        for (i, p) in ports.iter().enumerate() {
            if p.name.as_deref().unwrap_or("").is_empty() {
                let field = format!("spec.ports[{i}].name");
                if ports.len() > 1 {
                    self.error(
                        o,
                        &field,
                        format!("port {} has no name; a Service with several ports must name each (e.g. `http-web`, `grpc`, `tcp`)", p.port),
                    );
                } else if p.app_protocol.is_none() {
                    self.warnings.push(ConfigWarning {
                        place: o.place(&field),
                        message: format!(
                            "port {} has no name nor appProtocol; its protocol is taken as TCP",
                            p.port
                        ),
                    });
                }
            }
        }
    }

    fn gateway(&mut self, o: &LoadedObject, spec: &istio::GatewaySpec) {
        for (i, s) in spec.servers.iter().enumerate() {
            self.protocol(
                o,
                s.port.protocol.as_deref(),
                &format!("spec.servers[{i}].port.protocol"),
            );
            if s.hosts.is_empty() {
                self.error(
                    o,
                    &format!("spec.servers[{i}].hosts"),
                    "a server needs at least one host".into(),
                );
            }
        }
    }

    fn service_entry(&mut self, o: &LoadedObject, spec: &istio::ServiceEntrySpec) {
        self.export_to(o, &spec.export_to);
        if spec.hosts.is_empty() {
            self.error(
                o,
                "spec.hosts",
                "a ServiceEntry needs at least one host".into(),
            );
        }
        for (i, p) in spec.ports.iter().enumerate() {
            self.protocol(
                o,
                p.protocol.as_deref(),
                &format!("spec.ports[{i}].protocol"),
            );
        }
    }

    fn protocol(&mut self, o: &LoadedObject, protocol: Option<&str>, field: &str) {
        if let Some(p) = protocol
            && Protocol::parse(p).is_none()
        {
            self.error(o, field, format!("unknown protocol {p:?}"));
        }
    }

    /// What Istio's webhook refuses, and what the L4 evaluator must be able to read: an
    /// address it cannot parse would otherwise match nothing without a word.
    fn authorization_policy(&mut self, o: &LoadedObject, spec: &istio::AuthorizationPolicySpec) {
        for (i, rule) in spec.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let base = format!("spec.rules[{i}].from[{j}].source");
                let s = &from.source;
                if *s == istio::Source::default() {
                    self.error(o, &base, "a source needs at least one field".into());
                }
                for (name, values) in [
                    ("ipBlocks", &s.ip_blocks),
                    ("notIpBlocks", &s.not_ip_blocks),
                    ("remoteIpBlocks", &s.remote_ip_blocks),
                    ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
                ] {
                    self.ip_blocks(o, &format!("{base}.{name}"), values);
                }
            }
            for (j, to) in rule.to.iter().enumerate() {
                let base = format!("spec.rules[{i}].to[{j}].operation");
                let op = &to.operation;
                if *op == istio::Operation::default() {
                    self.error(o, &base, "an operation needs at least one field".into());
                }
                self.ports(o, &format!("{base}.ports"), &op.ports);
                self.ports(o, &format!("{base}.notPorts"), &op.not_ports);
            }
            for (j, c) in rule.when.iter().enumerate() {
                let base = format!("spec.rules[{i}].when[{j}]");
                if c.key.is_empty() {
                    self.error(o, &format!("{base}.key"), "a condition needs a key".into());
                }
                if c.values.is_empty() && c.not_values.is_empty() {
                    self.error(o, &base, "a condition needs values or notValues".into());
                }
                let lists = [("values", &c.values), ("notValues", &c.not_values)];
                match c.key.as_str() {
                    "source.ip" | "remote.ip" | "destination.ip" => {
                        for (name, values) in lists {
                            self.ip_blocks(o, &format!("{base}.{name}"), values);
                        }
                    }
                    "destination.port" => {
                        for (name, values) in lists {
                            self.ports(o, &format!("{base}.{name}"), values);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn ip_blocks(&mut self, o: &LoadedObject, field: &str, values: &[String]) {
        for (k, v) in values.iter().enumerate() {
            if let Err(e) = v.parse::<IpBlock>() {
                self.error(
                    o,
                    &format!("{field}[{k}]"),
                    format!("{v:?} is not an IP address or CIDR: {e}"),
                );
            }
        }
    }

    fn ports(&mut self, o: &LoadedObject, field: &str, values: &[String]) {
        for (k, v) in values.iter().enumerate() {
            if authz::parse_port(v).is_none() {
                self.error(
                    o,
                    &format!("{field}[{k}]"),
                    format!("{v:?} is not a port number in 1..65535"),
                );
            }
        }
    }

    fn peer_authentication(&mut self, o: &LoadedObject, spec: &istio::PeerAuthenticationSpec) {
        if spec.port_level_mtls.is_empty() {
            return;
        }
        let has_labels = spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !has_labels {
            self.error(
                o,
                "spec.portLevelMtls",
                "portLevelMtls needs a selector with matchLabels (it sets one workload's ports)"
                    .into(),
            );
        }
        for key in spec.port_level_mtls.keys() {
            if authz::parse_port(key).is_none() {
                self.error(
                    o,
                    &format!("spec.portLevelMtls.{key}"),
                    format!("{key:?} is not a port number in 1..65535"),
                );
            }
        }
    }

    fn export_to(&mut self, o: &LoadedObject, export_to: &[String]) {
        if let Err(e) = resolve::check_export_to(export_to) {
            self.error(o, "spec.exportTo", e);
        }
    }
}
