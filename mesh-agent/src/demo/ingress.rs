//! The gateway on the host's loopback: every connection to `--listen` (127.0.0.1:8080 by
//! default) is carried to the ingress gateway's pod from a socket in node 1's namespace,
//! so it enters the pod as any outside client's would (through the pod's inbound capture)
//! and the gateway routes it.
use std::{net::SocketAddr, path::Path, sync::Arc};

use tokio::net::TcpListener;

use crate::{pod::PodSockets, proxy::copy};

/// Forwards `listener`'s connections to `target` until the task is aborted.
pub fn spawn(
    listener: TcpListener,
    node_netns: &Path,
    target: SocketAddr,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let node_sockets = Arc::new(PodSockets::start(node_netns, "demo-ingress".into())?);
    Ok(tokio::spawn(async move {
        loop {
            let mut client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "demo ingress: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let sockets = node_sockets.clone();
            tokio::spawn(async move {
                let Ok(socket) = sockets.tcp_socket(&target).await else {
                    return;
                };
                match socket.connect(target).await {
                    Ok(mut upstream) => {
                        let _ = copy::bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(e) => {
                        tracing::warn!(%target, error = %e, "demo ingress: gateway unreachable")
                    }
                }
            });
        }
    }))
}
