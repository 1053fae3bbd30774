//! L4 load balancing: which endpoint of a Service a new connection goes to, and on which
//! port. Round robin over ready endpoints, one position per Service (a client alternating
//! between two Services must not always land on the same endpoint of each).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use mesh_config::Snapshot;
use mesh_config::snapshot::{Endpoint, ServiceInfo};

use super::error::ProxyError;

/// Round-robin positions, one per Service FQDN.
#[derive(Default)]
pub struct Balancer {
    positions: Mutex<HashMap<String, Arc<AtomicUsize>>>,
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
}

/// Picks the `pick`-th ready endpoint (modulo their number) for a connection to the
/// Service's `port`, resolving the Service's `targetPort` (a number, or a container port
/// name looked up on the endpoint's workload). Returns the endpoint's workload key too.
pub fn choose<'s>(
    snapshot: &'s Snapshot,
    service: &'s ServiceInfo,
    port: u16,
    pick: usize,
) -> Result<(SocketAddr, &'s Endpoint), ProxyError> {
    let service_port = service
        .ports
        .iter()
        .find(|p| p.port == port)
        .ok_or_else(|| ProxyError::PortNotInService {
            service: service.hostname.clone(),
            port,
        })?;
    let ready: Vec<&Endpoint> = service
        .endpoints
        .iter()
        .filter(|e| e.ready && e.address.is_some())
        .collect();
    let no_endpoint = || ProxyError::NoEndpoint {
        service: service.hostname.clone(),
    };
    if ready.is_empty() {
        return Err(no_endpoint());
    }
    let endpoint = ready[pick % ready.len()];
    let address = endpoint.address.ok_or_else(no_endpoint)?;
    let target = match service_port.target_port.as_deref() {
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
    Ok((SocketAddr::new(address, target), endpoint))
}

fn named_port(snapshot: &Snapshot, endpoint: &Endpoint, name: &str) -> Option<u16> {
    let workload = snapshot.workloads.get(endpoint.workload.as_deref()?)?;
    workload
        .container_ports
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.port)
}
