//! Inbound plaintext: SYNs to an enrolled pod's address that `sk_lookup` steered to the
//! agent's listener (127.0.0.1:15006 inside the pod). The accepted socket's local address
//! is the address the client asked for; the agent delivers to it over the pod's loopback,
//! which `sk_lookup` ignores, so delivery is not captured again.
use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};

use super::{PodProxy, copy};
use crate::telemetry::connections::Direction;

pub async fn serve(listener: TcpListener, pod: Arc<PodProxy>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(handle(stream, peer, pod.clone()));
            }
            Err(e) => {
                tracing::warn!(pod = %pod.pod, error = %e, "inbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(mut client: TcpStream, peer: SocketAddr, pod: Arc<PodProxy>) {
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
    let socket = match pod.sockets.tcp_socket(&target).await {
        Ok(s) => s,
        Err(e) => {
            guard.fail(format!("socket: {e}"));
            copy::reset(&client);
            return;
        }
    };
    let mut app = match socket.connect(target).await {
        Ok(s) => s,
        Err(e) => {
            guard.fail(format!("connect {target}: {e}"));
            copy::reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = app.set_nodelay(true);
    match copy::bidirectional(&mut client, &mut app).await {
        Ok(moved) => guard.set_bytes(moved.sent, moved.received),
        Err((e, moved)) => {
            guard.set_bytes(moved.sent, moved.received);
            guard.fail(e);
            copy::reset(&client);
            copy::reset(&app);
        }
    }
}
