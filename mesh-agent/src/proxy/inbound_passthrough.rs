//! Inbound plaintext: SYNs to an enrolled pod's address that `sk_lookup` steered to the
//! agent's listener (127.0.0.1:15006 inside the pod), from clients outside the mesh (mesh
//! workloads come over HBONE to 15008). `PeerAuthentication` decides whether plaintext is
//! accepted for the port (STRICT refuses it), then `AuthorizationPolicy` sees a client
//! without identity. The accepted socket's local address is the address the client asked
//! for; the agent delivers to it as the client (see `transparent.rs`).
use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};

use super::{PodProxy, copy, error::ProxyError, policy, transparent};
use crate::telemetry::connections::Direction;

pub async fn serve(listener: TcpListener, pod: Arc<PodProxy>) {
    super::accept_loop(listener, "inbound_passthrough", pod, handle).await
}

async fn handle(client: TcpStream, peer: SocketAddr, pod: Arc<PodProxy>) {
    let mut guard = pod.track(Direction::Inbound, peer, &pod.node.config.snapshot());
    let target = match client.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            guard.fail(&ProxyError::Copy(e));
            return;
        }
    };
    guard.set_destination(target);
    // Only addresses of this pod are steered here; anything else is a bug or a spoof.
    if !pod.pod_ips.contains(&target.ip()) {
        guard.fail(&ProxyError::NotThisPod(target));
        copy::reset(&client);
        return;
    }
    let snapshot = pod.node.config.snapshot();
    let checked = policy::plaintext_allowed(&snapshot, &pod, target.port())
        .and_then(|()| policy::check(&snapshot, &pod, None, peer, target));
    if let Err(e) = checked {
        guard.fail(&e);
        copy::reset(&client);
        return;
    }
    let upstream = transparent::connect_as(&pod, peer.ip(), target).await;
    super::forward(client, upstream, guard).await
}
