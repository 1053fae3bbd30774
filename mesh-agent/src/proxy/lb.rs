//! L4 load balancing: which endpoint of a Service a new connection goes to, and on which
//! port. Round robin over ready endpoints, one position per Service (a client alternating
//! between two Services must not always land on the same endpoint of each); endpoints on
//! this node first when the Service asks for it (`trafficDistribution: PreferClose`) or
//! only those (`internalTrafficPolicy: Local`); an endpoint that just failed a connect is
//! ejected for a while and skipped, unless every candidate is ejected (then they are all
//! tried, as Envoy's panic threshold does, rather than refusing everything).
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mesh_config::Snapshot;
use mesh_config::snapshot::{Endpoint, Locality, ServiceInfo};

use super::error::ProxyError;

/// How long an endpoint that failed a connect is skipped.
pub const EJECTION: Duration = Duration::from_secs(10);

/// Round-robin positions, one per Service FQDN, and the endpoints ejected after a failure.
#[derive(Default)]
pub struct Balancer {
    positions: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    ejected: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Balancer {
    /// The next position for `service` (0, 1, 2, ... per Service).
    pub fn next(&self, service: &str) -> usize {
        let position = {
            let mut map = self.positions.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(service) {
                Some(p) => p.clone(),
                None => map.entry(service.to_string()).or_default().clone(),
            }
        };
        position.fetch_add(1, Ordering::Relaxed)
    }

    /// Skips `endpoint` for [`EJECTION`] from `now`.
    pub fn eject(&self, endpoint: SocketAddr, now: Instant) {
        let mut map = self.ejected.lock().unwrap_or_else(|p| p.into_inner());
        // Expired entries go when the next one comes: the map stays as small as the
        // number of endpoints failing at once.
        map.retain(|_, until| *until > now);
        map.insert(endpoint, now + EJECTION);
    }

    /// Whether `endpoint` is ejected at `now`.
    pub fn is_ejected(&self, endpoint: SocketAddr, now: Instant) -> bool {
        let map = self.ejected.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&endpoint).is_some_and(|until| *until > now)
    }
}

/// What the caller knows about the candidates beyond the configuration.
pub struct Preference<'a> {
    /// Round-robin position (from [`Balancer::next`]).
    pub position: usize,
    /// Endpoints this connection already failed to reach: never again.
    pub tried: &'a [SocketAddr],
    /// Endpoints that recently failed for anyone.
    pub ejected: &'a dyn Fn(SocketAddr) -> bool,
    /// Addresses of pods on this node.
    pub on_this_node: &'a dyn Fn(IpAddr) -> bool,
}

/// Picks an endpoint for a connection to the Service's `port` and resolves the Service's
/// `targetPort` (a number, or a container port name looked up on the endpoint's workload).
pub fn choose<'s>(
    snapshot: &'s Snapshot,
    service: &'s ServiceInfo,
    port: u16,
    preference: &Preference<'_>,
) -> Result<(SocketAddr, &'s Endpoint), ProxyError> {
    let service_port = service
        .ports
        .iter()
        .find(|p| p.port == port)
        .ok_or_else(|| ProxyError::PortNotInService {
            service: service.hostname.clone(),
            port,
        })?;
    let no_endpoint = || ProxyError::NoEndpoint {
        service: service.hostname.clone(),
    };
    let target_of = |endpoint: &Endpoint| -> Result<Option<SocketAddr>, ProxyError> {
        let Some(address) = endpoint.address else {
            return Ok(None);
        };
        let number = match service_port.target_port.as_deref() {
            None => port,
            Some(t) => match t.parse::<u16>() {
                Ok(number) => number,
                Err(_) => {
                    named_port(snapshot, endpoint, t).ok_or_else(|| ProxyError::NoTargetPort {
                        service: service.hostname.clone(),
                        name: t.to_string(),
                        endpoint: address,
                    })?
                }
            },
        };
        Ok(Some(SocketAddr::new(address, number)))
    };
    let mut candidates = Vec::with_capacity(service.endpoints.len());
    for endpoint in service.endpoints.iter().filter(|e| e.ready) {
        if let Some(target) = target_of(endpoint)?
            && !preference.tried.contains(&target)
        {
            candidates.push((target, endpoint));
        }
    }
    let local = |c: &(SocketAddr, &Endpoint)| (preference.on_this_node)(c.0.ip());
    if service.locality == Locality::SameNodeOnly {
        candidates.retain(local);
    }
    if candidates.iter().any(|c| !(preference.ejected)(c.0)) {
        candidates.retain(|c| !(preference.ejected)(c.0));
    }
    if service.locality == Locality::PreferSameNode && candidates.iter().any(local) {
        candidates.retain(local);
    }
    if candidates.is_empty() {
        return Err(no_endpoint());
    }
    Ok(candidates[preference.position % candidates.len()])
}

fn named_port(snapshot: &Snapshot, endpoint: &Endpoint, name: &str) -> Option<u16> {
    let workload = snapshot.workloads.get(endpoint.workload.as_deref()?)?;
    workload
        .container_ports
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.port)
}
