//! Which names the mesh answers itself, and with what: a pure function of the query name,
//! the asking pod's namespace and the configuration snapshot (no I/O, unit-tested in
//! `names/tests.rs`).
//!
//! A pod's resolv.conf in Kubernetes searches `<ns>.svc.<domain> svc.<domain> <domain>`
//! with `ndots:5`, and glibc expands names itself, so most queries arrive fully qualified;
//! the short forms (`reviews`, `reviews.default`, `reviews.default.svc`) are answered too,
//! for resolvers that ask them as they are. Inside the cluster domain the mesh is the
//! authority: a name there that is not a Service is NXDOMAIN at once, which is what makes
//! the search list cheap for outside names (`example.com.default.svc.cluster.local`).
use std::net::IpAddr;

use mesh_config::{
    Snapshot,
    istio::Resolution,
    snapshot::{ServiceEntryInfo, ServiceInfo},
};

/// What the mesh says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name is the mesh's: these are its addresses, both families (an empty list, or
    /// none of the asked family, is an answer without records: NOERROR/NODATA).
    Addresses(Vec<IpAddr>),
    /// Inside the cluster domain and not a Service: the name does not exist.
    NxDomain,
    /// Not the mesh's: ask the upstream resolvers.
    Forward,
}

/// `name`: the query name, lowercase, without the trailing dot. `namespace`: the asking
/// pod's. `domain`: the cluster domain (`cluster.local`).
pub fn resolve(name: &str, namespace: &str, domain: &str, snap: &Snapshot) -> Answer {
    if let Some(service) = service_for(name, namespace, domain, snap) {
        return Answer::Addresses(service_addresses(service));
    }
    if let Some(entry) = service_entry_for(name, namespace, snap) {
        return Answer::Addresses(entry_addresses(entry));
    }
    if name == domain || name.ends_with(&format!(".{domain}")) {
        return Answer::NxDomain;
    }
    Answer::Forward
}

/// The Service `name` means for a pod of `namespace`: `<svc>`, `<svc>.<ns>`,
/// `<svc>.<ns>.svc` or `<svc>.<ns>.svc.<domain>`.
fn service_for<'a>(
    name: &str,
    namespace: &str,
    domain: &str,
    snap: &'a Snapshot,
) -> Option<&'a ServiceInfo> {
    let labels = name.split('.').count();
    let fqdn = if name.ends_with(&format!(".svc.{domain}")) {
        name.to_string()
    } else {
        match labels {
            1 => format!("{name}.{namespace}.svc.{domain}"),
            2 => format!("{name}.svc.{domain}"),
            3 if name.ends_with(".svc") => format!("{name}.{domain}"),
            _ => return None,
        }
    };
    snap.services.get(&fqdn).map(AsRef::as_ref)
}

/// A Service's VIP, or for a headless Service the addresses of its ready endpoints.
fn service_addresses(service: &ServiceInfo) -> Vec<IpAddr> {
    if !service.headless {
        return vec![service.vip];
    }
    let mut addresses: Vec<IpAddr> = service
        .endpoints
        .iter()
        .filter(|e| e.ready)
        .filter_map(|e| e.address)
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// A ServiceEntry visible from `namespace` with `name` among its hosts, of a resolution the
/// mesh gives addresses to (DNS and STATIC, as Istio's DNS auto-allocation). Wildcard hosts
/// have no address to give and are left to upstream.
fn service_entry_for<'a>(
    name: &str,
    namespace: &str,
    snap: &'a Snapshot,
) -> Option<&'a ServiceEntryInfo> {
    snap.service_entries
        .values()
        .map(AsRef::as_ref)
        .filter(|e| matches!(e.resolution, Resolution::Dns | Resolution::Static))
        .filter(|e| mesh_config::resolve::exported_to(&e.export_to, &e.namespace, namespace))
        .find(|e| e.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)))
}

/// The entry's `addresses` (single IPs; CIDR ranges name no one address), else its VIP.
fn entry_addresses(entry: &ServiceEntryInfo) -> Vec<IpAddr> {
    let given: Vec<IpAddr> = entry
        .addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if given.is_empty() {
        vec![entry.vip]
    } else {
        given
    }
}

#[cfg(test)]
mod tests;
