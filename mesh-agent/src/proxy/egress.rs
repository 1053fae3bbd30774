//! Egress at L4: a connection to a `ServiceEntry` (a host outside the cluster that the mesh
//! knows about) goes where the entry says, and is reported as going to that host.
//!
//! A connection matches an entry when its destination is the entry's VIP (the address the
//! DNS proxy answered for the host, from `addresses` or auto-allocated) or lies in one of
//! its `addresses`, and its port is one of the entry's ports. Where it goes then depends on
//! `resolution`: `STATIC` picks one of the `endpoints` (round robin), `DNS` resolves an
//! endpoint's name, or the host itself, through the node's resolvers at connect time,
//! `NONE` keeps the original destination. A mesh-external host is reached in plain TCP
//! from the pod (TLS, if any, is the application's).
use std::net::{IpAddr, SocketAddr};

use mesh_config::{
    Snapshot,
    authz::IpBlock,
    istio::Resolution,
    snapshot::{ServiceEntryInfo, ServiceEntryPort},
};

use super::error::ProxyError;

/// Where an egress connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPlan {
    /// The entry's host, reported as the destination service.
    pub host: String,
    pub to: EgressTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressTarget {
    Address(SocketAddr),
    /// A name to resolve at connect time, and the port to connect to.
    Name(String, u16),
}

/// The ServiceEntry `original` is addressed to, if any, with the port it asks for.
pub fn entry_for(
    snapshot: &Snapshot,
    original: SocketAddr,
) -> Option<(&ServiceEntryInfo, Option<&ServiceEntryPort>)> {
    let ip = original.ip();
    let entry = snapshot.service_entries.values().find(|entry| {
        (entry.vip == ip && entry.resolution != Resolution::None)
            || entry
                .addresses
                .iter()
                .any(|a| IpBlock::value_contains(a, ip))
    })?;
    let port = entry
        .ports
        .iter()
        .find(|p| p.number == u32::from(original.port()));
    Some((entry, port))
}

/// Decides where a connection to `entry` goes; `position` turns the round robin.
pub fn plan(
    entry: &ServiceEntryInfo,
    port: Option<&ServiceEntryPort>,
    original: SocketAddr,
    position: usize,
) -> Result<EgressPlan, ProxyError> {
    let host = entry.hosts.first().cloned().unwrap_or_default();
    let Some(port) = port else {
        return Err(ProxyError::PortNotInService {
            service: host,
            port: original.port(),
        });
    };
    let no_endpoint = || ProxyError::NoEndpoint {
        service: host.clone(),
    };
    let endpoint_port = |ports: &std::collections::BTreeMap<String, u32>| {
        let number = port
            .name
            .as_ref()
            .and_then(|name| ports.get(name))
            .or(port.target_port.as_ref())
            .copied()
            .unwrap_or(port.number);
        u16::try_from(number).unwrap_or(original.port())
    };
    let endpoints: Vec<_> = entry
        .endpoints
        .iter()
        .filter_map(|e| Some((e.address.as_deref()?, endpoint_port(&e.ports))))
        .collect();
    let to = match entry.resolution {
        Resolution::None => EgressTarget::Address(original),
        Resolution::Static => {
            let addresses: Vec<SocketAddr> = endpoints
                .iter()
                .filter_map(|(a, p)| Some(SocketAddr::new(a.parse().ok()?, *p)))
                .collect();
            if addresses.is_empty() {
                return Err(no_endpoint());
            }
            EgressTarget::Address(addresses[position % addresses.len()])
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if endpoints.is_empty() {
                // The host itself, unless it is a wildcard (nothing to resolve).
                if host.starts_with('*') || host.is_empty() {
                    return Err(no_endpoint());
                }
                let number = port.target_port.unwrap_or(port.number);
                EgressTarget::Name(
                    host.clone(),
                    u16::try_from(number).unwrap_or(original.port()),
                )
            } else {
                let (address, port) = endpoints[position % endpoints.len()];
                match address.parse::<IpAddr>() {
                    Ok(ip) => EgressTarget::Address(SocketAddr::new(ip, port)),
                    Err(_) => EgressTarget::Name(address.to_string(), port),
                }
            }
        }
    };
    Ok(EgressPlan { host, to })
}

/// The first address the node's resolvers give for `name` (A, then AAAA), cached with the
/// DNS proxy's answers.
pub async fn resolve(
    dns: &crate::dns::NodeDns,
    name: &str,
    port: u16,
) -> Result<SocketAddr, ProxyError> {
    use hickory_proto::rr::{Name, RData, RecordType};
    let failed = |reason: String| ProxyError::Resolve {
        name: name.to_string(),
        reason,
    };
    let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| failed(e.to_string()))?;
    let mut last = String::from("no address");
    for kind in [RecordType::A, RecordType::AAAA] {
        let query = hickory_proto::op::Query::query(fqdn.clone(), kind);
        match dns.forwarder.forward(&query, true, || {}).await {
            Ok(forwarded) => {
                let found =
                    forwarded
                        .response
                        .answers
                        .iter()
                        .find_map(|record| match &record.data {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                            _ => None,
                        });
                if let Some(ip) = found {
                    return Ok(SocketAddr::new(ip, port));
                }
                last = format!("{}", forwarded.response.metadata.response_code);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(failed(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::snapshot;

    const ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: weixin, namespace: default}
spec:
  hosts: [api.weixin.qq.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example]
  addresses: [198.18.99.0/24]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  endpoints: [{address: 198.18.99.10}, {address: 198.18.99.11}]
"#;

    #[test]
    fn dns_entries_resolve_their_host_at_connect_time() {
        let snap = snapshot(ENTRIES);
        let vip = snap.service_entries["default/weixin"].vip;
        let original = SocketAddr::new(vip, 443);
        let (entry, port) = entry_for(&snap, original).expect("the VIP matches");
        assert_eq!(
            plan(entry, port, original, 0).unwrap(),
            EgressPlan {
                host: "api.weixin.qq.com".into(),
                to: EgressTarget::Name("api.weixin.qq.com".into(), 443),
            }
        );
        let wrong_port = SocketAddr::new(vip, 80);
        let (entry, port) = entry_for(&snap, wrong_port).expect("the VIP matches");
        assert_eq!(
            plan(entry, port, wrong_port, 0).unwrap_err().reason(),
            "port_not_in_service"
        );
    }

    #[test]
    fn static_entries_take_turns_over_their_endpoints_by_address_range() {
        let snap = snapshot(ENTRIES);
        let original: SocketAddr = "198.18.99.200:80".parse().unwrap();
        let (entry, port) = entry_for(&snap, original).expect("the range matches");
        let targets: Vec<_> = (0..3)
            .map(|i| plan(entry, port, original, i).unwrap().to)
            .collect();
        assert_eq!(
            targets,
            [
                EgressTarget::Address("198.18.99.10:8080".parse().unwrap()),
                EgressTarget::Address("198.18.99.11:8080".parse().unwrap()),
                EgressTarget::Address("198.18.99.10:8080".parse().unwrap()),
            ]
        );
        assert!(entry_for(&snap, "198.18.98.1:80".parse().unwrap()).is_none());
    }
}
