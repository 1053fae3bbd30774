//! Outbound: connections a pod's application opened, redirected by `connect4/6` to the
//! agent's listener on 127.0.0.1:15001 inside the pod's namespace.
//!
//! Decide, then act: [`plan`] turns the original destination into where to connect; the
//! accept loop carries it out. Plaintext passthrough for now: the HBONE (mutual TLS) hop
//! and Service load balancing replace `plan` without touching the copying code.
use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};

use super::{PodProxy, copy};
use crate::telemetry::connections::Direction;

/// Where an outbound connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Connect to this address from the pod's namespace (keeps the pod's source address).
    Direct(SocketAddr),
    /// The destination is the agent's own listener: refuse rather than loop.
    Refuse,
}

/// Decides what to do with a connection whose original destination is `original`.
pub fn plan(original: SocketAddr) -> Plan {
    if original.ip().is_loopback() && original.port() == mesh_common::OUTBOUND_PORT {
        Plan::Refuse
    } else {
        Plan::Direct(original)
    }
}

pub async fn serve(listener: TcpListener, pod: Arc<PodProxy>) {
    super::accept_loop(listener, pod, handle).await
}

async fn handle(client: TcpStream, peer: SocketAddr, pod: Arc<PodProxy>) {
    let mut guard = pod.stats.open(Direction::Outbound, pod.pod.clone(), peer);
    let Some(original) = pod.orig_dst.take(pod.netns_cookie, peer) else {
        guard.fail("no original destination recorded for this connection");
        copy::reset(&client);
        return;
    };
    guard.set_destination(original);
    match plan(original) {
        Plan::Direct(target) => super::forward(client, &pod, target, guard).await,
        Plan::Refuse => {
            guard.fail("destination is the agent's own listener");
            copy::reset(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_passes_through_and_refuses_loops() {
        let dst: SocketAddr = "198.18.2.10:8080".parse().unwrap();
        assert_eq!(plan(dst), Plan::Direct(dst));
        let own: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        assert_eq!(plan(own), Plan::Refuse);
    }
}
