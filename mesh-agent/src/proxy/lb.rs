//! L4 load balancing: which endpoint of a Service a new connection goes to, and on which
//! port. Round robin over ready endpoints for now; locality and health come later.
use std::net::SocketAddr;

use mesh_config::Snapshot;
use mesh_config::snapshot::{Endpoint, ServiceInfo};

/// Picks the `pick`-th ready endpoint (modulo their number) for a connection to the
/// Service's `port`, resolving the Service's `targetPort` (a number, or a container port
/// name looked up on the endpoint's workload).
pub fn choose(
    snapshot: &Snapshot,
    service: &ServiceInfo,
    port: u16,
    pick: usize,
) -> Result<SocketAddr, String> {
    let service_port = service
        .ports
        .iter()
        .find(|p| p.port == port)
        .ok_or_else(|| format!("port {port} is not a port of the service"))?;
    let ready: Vec<&Endpoint> = service
        .endpoints
        .iter()
        .filter(|e| e.ready && e.address.is_some())
        .collect();
    if ready.is_empty() {
        return Err("no ready endpoint".into());
    }
    let endpoint = ready[pick % ready.len()];
    let address = endpoint.address.ok_or("endpoint without an address")?;
    let target = match service_port.target_port.as_deref() {
        None => port,
        Some(t) => match t.parse::<u16>() {
            Ok(number) => number,
            Err(_) => named_port(snapshot, endpoint, t)
                .ok_or_else(|| format!("no container port named {t:?} on {address}"))?,
        },
    };
    Ok(SocketAddr::new(address, target))
}

fn named_port(snapshot: &Snapshot, endpoint: &Endpoint, name: &str) -> Option<u16> {
    let workload = snapshot.workloads.get(endpoint.workload.as_deref()?)?;
    workload
        .container_ports
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.port)
}
