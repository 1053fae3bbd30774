//! The data path: `outbound` (15001, captured connects), `inbound` (15006, steered SYNs),
//! `lb` (which endpoint of a Service), and `copy` (moving bytes both ways with half-close and reset propagation).
pub mod copy;
pub mod inbound;
pub mod lb;
pub mod outbound;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};

use crate::{
    pod::PodSockets,
    redirect::OrigDstTable,
    telemetry::connections::{ConnectionGuard, ConnectionStats},
};

/// What a pod's accept loops need.
pub struct PodProxy {
    /// `namespace/name`.
    pub pod: String,
    pub sockets: PodSockets,
    /// Kernel id of the pod's network namespace (part of the original-destination key).
    pub netns_cookie: u64,
    pub pod_ips: Vec<std::net::IpAddr>,
    pub orig_dst: Arc<OrigDstTable>,
    pub stats: Arc<ConnectionStats>,
    /// The mesh configuration; each new connection reads the current snapshot.
    pub config: Arc<mesh_config::ConfigStore>,
    /// Spreads connections over a Service's endpoints.
    pub picks: Arc<std::sync::atomic::AtomicUsize>,
}

/// Accepts forever, one task per connection. Accept errors (EMFILE and friends) back off
/// instead of spinning.
pub(crate) async fn accept_loop<H, F>(listener: TcpListener, pod: Arc<PodProxy>, handle: H)
where
    H: Fn(TcpStream, SocketAddr, Arc<PodProxy>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(handle(stream, peer, pod.clone()));
            }
            Err(e) => {
                tracing::warn!(pod = %pod.pod, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects to `target` from inside the pod's namespace (the packet leaves with the pod's
/// address; the agent is not in the pod's cgroup, so the connect is not captured again)
/// and copies both ways, recording the outcome in `guard`. Failures reset the client.
pub(crate) async fn forward(
    mut client: TcpStream,
    pod: &PodProxy,
    target: SocketAddr,
    mut guard: ConnectionGuard,
) {
    let connected = async {
        let socket = pod.sockets.tcp_socket(&target).await?;
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    };
    let mut upstream = match connected.await {
        Ok(stream) => stream,
        Err(e) => {
            guard.fail(format!("connect {target}: {e}"));
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
            guard.fail(e);
            copy::reset(&client);
            copy::reset(&upstream);
        }
    }
}
