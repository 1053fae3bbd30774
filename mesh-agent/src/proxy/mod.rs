//! The data path, one file per job:
//! * `outbound`: 15001, connects captured by `connect4/6`; decides where a connection goes
//!   (`plan`) and carries it there, over HBONE to mesh workloads, plain TCP otherwise;
//! * `inbound`: 15008, the HBONE server inside each pod (mutual TLS, policy, delivery);
//! * `inbound_passthrough`: 15006, plaintext steered by `sk_lookup` (PeerAuthentication
//!   decides whether it is accepted);
//! * `hbone`: the wire protocol (client, server, stream copy); `pool`: tunnel reuse;
//! * `waypoint`: HBONE streams for a Service, at its waypoint's pod, handed to the waypoint;
//! * `lb`: which endpoint of a Service; `copy`: plaintext splice copy; `error`: what can
//!   go wrong, typed.
pub mod copy;
pub mod egress;
pub mod error;
pub mod hbone;
pub mod inbound;
pub mod inbound_passthrough;
pub mod lb;
pub mod local;
pub mod outbound;
pub mod policy;
pub mod pool;
pub mod transparent;
pub mod waypoint;

use std::{collections::BTreeMap, future::Future, net::SocketAddr, sync::Arc};

use mesh_config::{Snapshot, canonical::TelemetryNames};
use mesh_identity::{CertManager, SpiffeId};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    accept::AcceptBackoff,
    pod::PodSockets,
    redirect::OrigDstTable,
    telemetry::connections::{ConnectionGuard, ConnectionStats, Direction},
};
use error::ProxyError;

/// What every pod's proxy shares on this node.
pub struct NodeProxy {
    pub orig_dst: Arc<OrigDstTable>,
    pub stats: Arc<ConnectionStats>,
    /// The node's resolvers (with the DNS proxy's cache): egress resolves names there.
    pub dns: Arc<crate::dns::NodeDns>,
    /// The mesh configuration; each new connection reads the current snapshot.
    pub config: Arc<mesh_config::ConfigStore>,
    /// Spreads connections over each Service's endpoints.
    pub balancer: lb::Balancer,
    /// Certificates of this node's workloads (and nobody else's).
    pub certs: Arc<CertManager>,
    pub trust_domain: String,
    /// Istio's root namespace: mesh-wide policies live here.
    pub root_namespace: String,
    pub pool: pool::Pool,
    /// The pods enrolled on this node, by address.
    pub local: local::LocalPods,
}

/// What a pod's accept loops need.
pub struct PodProxy {
    /// `namespace/name`.
    pub pod: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The pod's SPIFFE identity (from its service account).
    pub identity: SpiffeId,
    pub sockets: PodSockets,
    /// Kernel id of the pod's network namespace (part of the original-destination key).
    pub netns_cookie: u64,
    pub pod_ips: Vec<std::net::IpAddr>,
    pub node: Arc<NodeProxy>,
}

impl PodProxy {
    /// What Istio's telemetry calls this pod: the workload the configuration names for it
    /// (from its owners: its Deployment, StatefulSet, ...), else what its name and labels
    /// tell (a Deployment's pod carries `pod-template-hash`).
    pub fn telemetry_names(&self, snapshot: &Snapshot) -> TelemetryNames {
        if let Some(workload) = snapshot.workloads.get(&self.pod) {
            return workload.telemetry_names();
        }
        let name = self
            .pod
            .split_once('/')
            .map_or(self.pod.as_str(), |(_, n)| n);
        TelemetryNames::from_pod(name, &self.namespace, &self.labels)
    }

    /// Starts recording one connection of this pod (`peer`: the other end's socket),
    /// its end named as `snapshot` says.
    pub fn track(
        &self,
        direction: Direction,
        peer: SocketAddr,
        snapshot: &Snapshot,
    ) -> ConnectionGuard {
        let mut guard = self.node.stats.open(direction, self.pod.clone(), peer);
        guard.set_workload(self.telemetry_names(snapshot));
        guard
    }
}

/// Accepts forever, one task per connection. Accept errors (EMFILE and friends) back off
/// instead of spinning (see [`crate::accept`]); `listener` names the loop in logs and in
/// `mesh_accept_errors_total`.
pub(crate) async fn accept_loop<H, F>(
    listener: TcpListener,
    name: &'static str,
    pod: Arc<PodProxy>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, Arc<PodProxy>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut backoff =
        AcceptBackoff::new(name, pod.pod.clone(), &pod.node.stats.metrics.accept_errors);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.accepted();
                tokio::spawn(handle(stream, peer, pod.clone()));
            }
            Err(e) => backoff.failed(&e).await,
        }
    }
}

/// Connects to `target` from inside the pod's namespace (the packet leaves with the pod's
/// address; the agent is not in the pod's cgroup, so the connect is not captured again).
pub(crate) async fn connect_in_pod(
    pod: &PodProxy,
    target: SocketAddr,
) -> Result<TcpStream, ProxyError> {
    let connect = |source| ProxyError::Connect { target, source };
    let socket = pod.sockets.tcp_socket(&target).await.map_err(connect)?;
    let stream = socket.connect(target).await.map_err(connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Copies both ways between `client` and the plain TCP `upstream` just connected (or not),
/// recording the outcome in `guard`. Failures reset the client.
pub(crate) async fn forward(
    mut client: TcpStream,
    upstream: Result<TcpStream, ProxyError>,
    mut guard: ConnectionGuard,
) {
    let mut upstream = match upstream {
        Ok(stream) => stream,
        Err(e) => {
            guard.fail(&e);
            copy::reset(&client);
            return;
        }
    };
    guard.established();
    let _ = client.set_nodelay(true);
    match copy::bidirectional(&mut client, &mut upstream).await {
        Ok(moved) => guard.set_bytes(moved.sent, moved.received),
        Err((e, moved)) => {
            guard.set_bytes(moved.sent, moved.received);
            guard.fail(&ProxyError::Copy(e));
            copy::reset(&client);
            copy::reset(&upstream);
        }
    }
}
