//! Inbound plaintext: SYNs to an enrolled pod's address that `sk_lookup` steered to the
//! agent's listener (127.0.0.1:15006 inside the pod). The accepted socket's local address
//! is the address the client asked for; the agent delivers to it over the pod's loopback,
//! which `sk_lookup` ignores, so delivery is not captured again.
use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};

use super::{PodProxy, copy};
use crate::telemetry::connections::Direction;

pub async fn serve(listener: TcpListener, pod: Arc<PodProxy>) {
    super::accept_loop(listener, pod, handle).await
}

async fn handle(client: TcpStream, peer: SocketAddr, pod: Arc<PodProxy>) {
    let mut guard = pod.stats.open(Direction::Inbound, pod.pod.clone(), peer);
    let target = match client.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            guard.fail(format!("no local address: {e}"));
            return;
        }
    };
    guard.set_destination(target);
    // Only addresses of this pod are steered here; anything else is a bug or a spoof.
    if !pod.pod_ips.contains(&target.ip()) {
        guard.fail(format!("{target} is not an address of this pod"));
        copy::reset(&client);
        return;
    }
    super::forward(client, &pod, target, guard).await
}
