//! Outbound: connections a pod's application opened, redirected by `connect4/6` to the
//! agent's listener on 127.0.0.1:15001 inside the pod's namespace.
//!
//! Decide, then act: [`plan`] turns the original destination and the configuration
//! snapshot into where to connect (a Service VIP becomes one of its endpoints, anything
//! else passes through) and how: over HBONE (mutual TLS, the destination's expected
//! identity) when the destination is a mesh workload, in plain TCP otherwise. The accept
//! loop carries the plan out.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use mesh_config::Snapshot;
use mesh_identity::SpiffeId;
use tokio::net::{TcpListener, TcpStream};

use super::{
    PodProxy, copy,
    error::ProxyError,
    hbone::{self, client},
    lb::{self, Balancer},
    local::LocalPods,
    pool::PoolKey,
};
use crate::telemetry::connections::{ConnectionGuard, Direction, Security};

/// Where and how an outbound connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The address to reach: a Service's chosen endpoint, or the original destination.
    pub target: SocketAddr,
    /// The Service FQDN when the original destination was its VIP.
    pub service: Option<String>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// Not a mesh workload: plain TCP to the target.
    Tcp,
    /// A mesh workload: HBONE to the target's 15008, which must prove this identity.
    Hbone(SpiffeId),
}

/// Decides what to do with a connection whose original destination is `original`.
pub fn plan(
    snapshot: &Snapshot,
    balancer: &Balancer,
    local: &LocalPods,
    trust_domain: &str,
    original: SocketAddr,
) -> Result<Plan, ProxyError> {
    if original.ip().is_loopback() && original.port() == mesh_common::OUTBOUND_PORT {
        return Err(ProxyError::Loop(original));
    }
    let (target, service) = match snapshot.service_by_vip(original.ip()) {
        None => (original, None),
        Some(service) => {
            let pick = balancer.next(&service.hostname);
            let (endpoint, _) = lb::choose(snapshot, service, original.port(), pick)?;
            (endpoint, Some(service.hostname.clone()))
        }
    };
    let protocol = match mesh_identity_of(snapshot, local, trust_domain, target.ip()) {
        Some(identity) => Protocol::Hbone(identity),
        None => Protocol::Tcp,
    };
    Ok(Plan {
        target,
        service,
        protocol,
    })
}

/// The identity of the mesh workload at `ip`: a pod enrolled on this node, or a workload of
/// the configuration that the mesh captures (ambient namespace or pod label). None for
/// anything outside the mesh.
pub fn mesh_identity_of(
    snapshot: &Snapshot,
    local: &LocalPods,
    trust_domain: &str,
    ip: IpAddr,
) -> Option<SpiffeId> {
    if let Some(identity) = local.identity(ip) {
        return Some(identity);
    }
    let workload = snapshot.workload_by_ip(ip)?;
    workload
        .ambient
        .then(|| SpiffeId::new(trust_domain, &workload.namespace, &workload.service_account))
}

pub async fn serve(listener: TcpListener, pod: Arc<PodProxy>) {
    super::accept_loop(listener, "outbound", pod, handle).await
}

async fn handle(client: TcpStream, peer: SocketAddr, pod: Arc<PodProxy>) {
    let node = &pod.node;
    let mut guard = node.stats.open(Direction::Outbound, pod.pod.clone(), peer);
    guard.set_source_principal(pod.identity.principal());
    let Some(original) = node.orig_dst.take(pod.netns_cookie, peer) else {
        guard.fail(&ProxyError::NoOriginalDestination);
        copy::reset(&client);
        return;
    };
    // The access log shows the pod's address, not the loopback end of the redirect.
    if let Some(ip) = pod
        .pod_ips
        .iter()
        .find(|ip| ip.is_ipv4() == original.is_ipv4())
    {
        guard.set_source(SocketAddr::new(*ip, peer.port()));
    }
    guard.set_destination(original);
    let decided = plan(
        &node.config.snapshot(),
        &node.balancer,
        &node.local,
        &node.trust_domain,
        original,
    );
    let plan = match decided {
        Ok(plan) => plan,
        Err(e) => {
            guard.fail(&e);
            copy::reset(&client);
            return;
        }
    };
    guard.set_upstream(plan.service.clone(), plan.target);
    match plan.protocol {
        Protocol::Tcp => super::forward(client, &pod, plan.target, guard).await,
        Protocol::Hbone(identity) => {
            guard.set_destination_principal(identity.principal());
            forward_hbone(client, &pod, plan.target, identity, guard).await
        }
    }
}

/// Carries the connection over an HBONE stream to `target`'s node agent.
async fn forward_hbone(
    mut client: TcpStream,
    pod: &PodProxy,
    target: SocketAddr,
    destination: SpiffeId,
    mut guard: ConnectionGuard,
) {
    let node = &pod.node;
    let peer = SocketAddr::new(target.ip(), mesh_common::HBONE_PORT);
    let key = PoolKey {
        source: pod.identity.clone(),
        destination,
        peer,
    };
    let stream = async {
        // Rotation happens when the certificate is asked for: ask first, so the
        // generation below is the one a new tunnel would be built with.
        let tls = node.certs.client_config(&pod.identity)?;
        let generation = node.certs.generation(&pod.identity);
        let open = || async {
            let socket =
                pod.sockets
                    .tcp_socket(&peer)
                    .await
                    .map_err(|source| ProxyError::Connect {
                        target: peer,
                        source,
                    })?;
            client::open_tunnel(socket, peer, tls, &key.destination).await
        };
        let (sender, lease) = node.pool.checkout(&key, generation, open).await?;
        let stream = client::connect_stream(sender, peer, target).await?;
        Ok::<_, ProxyError>((stream, lease))
    };
    let ((send, pending), _lease) = match stream.await {
        Ok(ok) => ok,
        Err(e) => {
            guard.fail(&e);
            copy::reset(&client);
            return;
        }
    };
    guard.set_security(Security::MutualTls);
    guard.established();
    let _ = client.set_nodelay(true);
    match hbone::stream::bidirectional(&mut client, send, pending.response()).await {
        Ok(moved) => guard.set_bytes(moved.sent, moved.received),
        Err((e, moved)) => {
            guard.set_bytes(moved.sent, moved.received);
            guard.fail(&e.into());
            copy::reset(&client);
        }
    }
}

#[cfg(test)]
mod tests;
