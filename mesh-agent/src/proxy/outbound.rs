//! Outbound: connections a pod's application opened, redirected by `connect4/6` to the
//! agent's listener on 127.0.0.1:15001 inside the pod's namespace.
//!
//! Decide, then act: [`plan`] turns the original destination and the configuration
//! snapshot into where to connect (a Service VIP becomes one of its endpoints, anything
//! else passes through) and how: over HBONE (mutual TLS, the destination's expected
//! identity) when the destination is a mesh workload, in plain TCP otherwise. A Service
//! bound to a waypoint (`istio.io/use-waypoint`) is reached through one of the waypoint's
//! pods instead: HBONE to the waypoint, CONNECT to the Service's VIP and port, and the
//! waypoint picks the endpoint (unless the client is that waypoint: its own upstream
//! connections go to endpoints, never back to itself). With `outboundTrafficPolicy:
//! REGISTRY_ONLY` in the mesh configuration, a destination that is no Service, mesh
//! workload or ServiceEntry is refused. The accept loop carries the plan out.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use mesh_config::{
    Snapshot,
    istio::mesh_config::OutboundMode,
    snapshot::{ServiceInfo, WaypointRef},
};
use mesh_identity::SpiffeId;
use tokio::net::{TcpListener, TcpStream};

use super::{
    PodProxy, copy,
    error::ProxyError,
    hbone::{self, client},
    lb::{self, Balancer, Preference},
    local::LocalPods,
    pool::PoolKey,
};
use crate::telemetry::connections::{ConnectionGuard, Direction, Security};

/// Where and how an outbound connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The address to reach: a Service's chosen endpoint, or the original destination (a
    /// Service VIP and port through a waypoint, as the CONNECT target).
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
    /// The Service's waypoint: HBONE to the 15008 of the waypoint pod at `address`, which
    /// must prove `identity`, with the Service's VIP and port as the CONNECT target.
    Waypoint { identity: SpiffeId, address: IpAddr },
}

impl Plan {
    /// What this attempt tries: the endpoint (the target), or the waypoint pod's HBONE
    /// port. A failed attempt ejects it and the next attempt avoids it.
    pub fn dialled(&self) -> SocketAddr {
        match &self.protocol {
            Protocol::Waypoint { address, .. } => {
                SocketAddr::new(*address, mesh_common::HBONE_PORT)
            }
            _ => self.target,
        }
    }

    /// Where the HBONE tunnel goes: port 15008 of the target or of the waypoint pod.
    pub fn hbone_peer(&self) -> SocketAddr {
        let ip = match &self.protocol {
            Protocol::Waypoint { address, .. } => *address,
            _ => self.target.ip(),
        };
        SocketAddr::new(ip, mesh_common::HBONE_PORT)
    }
}

/// The client pod, as far as the plan cares: a waypoint's own pods are not sent back to it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub namespace: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
}

/// Decides what to do with a connection whose original destination is `original`, after
/// failing to reach the endpoints in `tried`.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    snapshot: &Snapshot,
    balancer: &Balancer,
    local: &LocalPods,
    trust_domain: &str,
    client: Client,
    original: SocketAddr,
    tried: &[SocketAddr],
) -> Result<Plan, ProxyError> {
    if original.ip().is_loopback() && original.port() == mesh_common::OUTBOUND_PORT {
        return Err(ProxyError::Loop(original));
    }
    let (target, service) = match snapshot.service_by_vip(original.ip()) {
        None if registry_only(snapshot) && !registered(snapshot, local, original.ip()) => {
            return Err(ProxyError::NotRegistered(original));
        }
        None => (original, None),
        Some(service) => {
            if let Some(waypoint) = &service.waypoint
                && !waypoint.runs_on(client.namespace, client.labels)
            {
                return through_waypoint(
                    snapshot,
                    balancer,
                    trust_domain,
                    service,
                    waypoint,
                    original,
                    tried,
                );
            }
            let now = Instant::now();
            let preference = Preference {
                position: balancer.next(&service.hostname),
                tried,
                ejected: &|endpoint| balancer.is_ejected(endpoint, now),
                on_this_node: &|ip| local.contains(ip),
            };
            let (endpoint, _) = lb::choose(snapshot, service, original.port(), &preference)?;
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

/// `outboundTrafficPolicy: REGISTRY_ONLY` in the mesh configuration.
fn registry_only(snapshot: &Snapshot) -> bool {
    snapshot.mesh_config.outbound_traffic_policy.mode == OutboundMode::RegistryOnly
}

/// A workload the configuration or this node knows (Services and ServiceEntries are
/// matched before).
fn registered(snapshot: &Snapshot, local: &LocalPods, ip: IpAddr) -> bool {
    local.contains(ip) || snapshot.workload_by_ip(ip).is_some()
}

/// HBONE to one of the waypoint's pods (round robin, skipping those tried and, while
/// others remain, those ejected), the Service's VIP and port as the target.
fn through_waypoint(
    snapshot: &Snapshot,
    balancer: &Balancer,
    trust_domain: &str,
    service: &ServiceInfo,
    waypoint: &WaypointRef,
    original: SocketAddr,
    tried: &[SocketAddr],
) -> Result<Plan, ProxyError> {
    let key = waypoint.key();
    let mut pods: Vec<_> = snapshot
        .waypoint_workloads(waypoint)
        .into_iter()
        .filter_map(|w| Some((w.address?, w)))
        .filter(|(ip, _)| !tried.contains(&SocketAddr::new(*ip, mesh_common::HBONE_PORT)))
        .collect();
    let now = Instant::now();
    let healthy =
        |ip: &IpAddr| !balancer.is_ejected(SocketAddr::new(*ip, mesh_common::HBONE_PORT), now);
    if pods.iter().any(|(ip, _)| healthy(ip)) {
        pods.retain(|(ip, _)| healthy(ip));
    }
    if pods.is_empty() {
        return Err(ProxyError::NoWaypoint {
            service: service.hostname.clone(),
            waypoint: key,
        });
    }
    let (address, pod) = pods[balancer.next(&key) % pods.len()];
    Ok(Plan {
        target: original,
        service: Some(service.hostname.clone()),
        protocol: Protocol::Waypoint {
            identity: SpiffeId::new(trust_domain, &pod.namespace, &pod.service_account),
            address,
        },
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
    let snapshot = node.config.snapshot();
    let mut guard = pod.track(Direction::Outbound, peer, &snapshot);
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
    if let Some((entry, port)) = super::egress::entry_for(&snapshot, original) {
        let host = entry.hosts.first().cloned().unwrap_or_default();
        guard.set_upstream(Some(host.clone()), original);
        let position = node.balancer.next(&host);
        let target = match super::egress::plan(entry, port, original, position) {
            Ok(plan) => match plan.to {
                super::egress::EgressTarget::Address(target) => Ok(target),
                super::egress::EgressTarget::Name(name, port) => {
                    super::egress::resolve(&node.dns, &name, port).await
                }
            },
            Err(e) => Err(e),
        };
        let upstream = match target {
            Ok(target) => {
                guard.set_upstream(Some(host), target);
                super::connect_in_pod(&pod, target).await
            }
            Err(e) => Err(e),
        };
        return super::forward(client, upstream, guard).await;
    }
    // A Service endpoint that cannot be reached is ejected and the next one tried, within
    // MAX_ATTEMPTS; the client sees one connection either way.
    let mut tried = Vec::new();
    let mut last_failure = None;
    loop {
        let decided = plan(
            &snapshot,
            &node.balancer,
            &node.local,
            &node.trust_domain,
            Client {
                namespace: &pod.namespace,
                labels: &pod.labels,
            },
            original,
            &tried,
        );
        let plan = match decided {
            Ok(plan) => plan,
            Err(e) => {
                guard.fail(&last_failure.unwrap_or(e));
                copy::reset(&client);
                return;
            }
        };
        guard.set_upstream(plan.service.clone(), plan.dialled());
        if let Some(workload) = snapshot.workload_by_ip(plan.target.ip()) {
            guard.set_peer_workload(workload.telemetry_names());
        }
        let connected = match &plan.protocol {
            Protocol::Tcp => super::connect_in_pod(&pod, plan.target)
                .await
                .map(Upstream::Tcp),
            Protocol::Hbone(identity) | Protocol::Waypoint { identity, .. } => {
                guard.set_destination_principal(identity.principal());
                connect_hbone(
                    &client,
                    &pod,
                    plan.hbone_peer(),
                    plan.target,
                    identity.clone(),
                )
                .await
                .map(Upstream::Hbone)
            }
        };
        match connected {
            Ok(upstream) => return carry(client, upstream, guard).await,
            Err(e) if plan.service.is_some() && retryable(&e) && tried.len() + 1 < MAX_ATTEMPTS => {
                let dialled = plan.dialled();
                tracing::debug!(pod = %pod.pod, endpoint = %dialled, error = %e, "endpoint ejected, trying the next one");
                node.balancer.eject(dialled, Instant::now());
                tried.push(dialled);
                last_failure = Some(e);
            }
            Err(e) => {
                guard.fail(&e);
                copy::reset(&client);
                return;
            }
        }
    }
}

/// Endpoints one connection tries before it fails.
const MAX_ATTEMPTS: usize = 3;

/// Whether another endpoint may do better: the endpoint did not answer or refused the
/// connection. Identity and policy failures would fail the same way elsewhere.
fn retryable(e: &ProxyError) -> bool {
    match e {
        ProxyError::Connect { .. } | ProxyError::Hbone { .. } => true,
        ProxyError::TunnelRefused { status, .. } => *status >= 500,
        _ => false,
    }
}

/// A connected upstream, before any byte was taken from the client that it did not get.
enum Upstream {
    Tcp(TcpStream),
    Hbone(HboneStream),
}

struct HboneStream {
    send: h2::SendStream<bytes::Bytes>,
    recv: h2::RecvStream,
    /// The client's first flight, already sent behind the CONNECT.
    early: u64,
    _lease: super::pool::Lease,
}

/// Copies both ways until the end, recording the outcome.
async fn carry(mut client: TcpStream, upstream: Upstream, mut guard: ConnectionGuard) {
    match upstream {
        Upstream::Tcp(stream) => super::forward(client, Ok(stream), guard).await,
        Upstream::Hbone(stream) => {
            guard.set_security(Security::MutualTls);
            guard.established();
            let _ = client.set_nodelay(true);
            let recv = std::future::ready(Ok(stream.recv));
            let early = stream.early;
            match hbone::stream::bidirectional(&mut client, stream.send, recv).await {
                Ok(moved) => guard.set_bytes(moved.sent + early, moved.received),
                Err((e, moved)) => {
                    guard.set_bytes(moved.sent + early, moved.received);
                    guard.fail(&e.into());
                    copy::reset(&client);
                }
            }
        }
    }
}

/// Opens an HBONE stream through the tunnel to `peer` (a workload's or a waypoint's
/// 15008) for `target`, from the pool, and gets the peer's answer, the client's first
/// flight riding behind the CONNECT.
async fn connect_hbone(
    client: &TcpStream,
    pod: &PodProxy,
    peer: SocketAddr,
    target: SocketAddr,
    destination: SpiffeId,
) -> Result<HboneStream, ProxyError> {
    let node = &pod.node;
    let key = PoolKey {
        source: pod.identity.clone(),
        destination,
        peer,
    };
    // Rotation happens when the certificate is asked for: ask first, so the generation
    // below is the one a new tunnel would be built with.
    let tls = node.certs.client_config(&pod.identity)?;
    let generation = node.certs.generation(&pod.identity);
    let open = || async {
        let socket = pod
            .sockets
            .tcp_socket(&peer)
            .await
            .map_err(|source| ProxyError::Connect {
                target: peer,
                source,
            })?;
        client::open_tunnel(socket, peer, tls, &key.destination).await
    };
    let (sender, lease) = node.pool.checkout(&key, generation, open).await?;
    let (mut send, pending) = client::connect_stream(sender, peer, target).await?;
    match pending.first_flight(client, &mut send).await {
        Ok((recv, early)) => Ok(HboneStream {
            send,
            recv,
            early,
            _lease: lease,
        }),
        Err(e) => {
            send.send_reset(h2::Reason::CANCEL);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
