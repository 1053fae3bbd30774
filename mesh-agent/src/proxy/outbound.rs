//! Outbound: connections a pod's application opened, redirected by `connect4/6` to the
//! agent's listener on 127.0.0.1:15001 inside the pod's namespace.
//!
//! Decide, then act: [`plan`] turns the original destination and the configuration
//! snapshot into where to connect (a Service VIP becomes one of its endpoints, anything
//! else passes through); the accept loop carries it out. The HBONE (mutual TLS) hop will
//! slot in here without touching the copying code.
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use mesh_config::Snapshot;
use tokio::net::{TcpListener, TcpStream};

use super::{PodProxy, copy, lb};
use crate::telemetry::connections::Direction;

/// Where an outbound connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not a mesh Service: connect to the original destination itself.
    Passthrough(SocketAddr),
    /// A Service VIP: connect to the chosen endpoint.
    Service { host: String, endpoint: SocketAddr },
    /// Refuse (reset) the connection, for this reason.
    Refuse(String),
}

/// Decides what to do with a connection whose original destination is `original`.
/// `pick` spreads connections over a Service's endpoints (round robin).
pub fn plan(snapshot: &Snapshot, original: SocketAddr, pick: usize) -> Plan {
    if original.ip().is_loopback() && original.port() == mesh_common::OUTBOUND_PORT {
        return Plan::Refuse("destination is the agent's own listener".into());
    }
    let Some(service) = snapshot.service_by_vip(original.ip()) else {
        return Plan::Passthrough(original);
    };
    match lb::choose(snapshot, service, original.port(), pick) {
        Ok(endpoint) => Plan::Service {
            host: service.hostname.clone(),
            endpoint,
        },
        Err(why) => Plan::Refuse(format!("{}: {why}", service.hostname)),
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
    let pick = pod.picks.fetch_add(1, Ordering::Relaxed);
    match plan(&pod.config.snapshot(), original, pick) {
        Plan::Passthrough(target) => super::forward(client, &pod, target, guard).await,
        Plan::Service { host, endpoint } => {
            guard.set_service(host, endpoint);
            super::forward(client, &pod, endpoint, guard).await
        }
        Plan::Refuse(why) => {
            guard.fail(why);
            copy::reset(&client);
        }
    }
}

#[cfg(test)]
mod tests;
