//! The node agent's side of a waypoint pod. A waypoint (`mesh-agent waypoint`, see
//! `crate::l7::waypoint`) runs in an enrolled pod labelled with its Gateway's name; its
//! HBONE listener on 15008 is the agent's, like every pod's. A CONNECT stream there whose
//! target is not the pod but the VIP and port of a Service bound to that waypoint is
//! handed to the waypoint process over [`crate::handoff`] (PROXY protocol v2 with the
//! client's verified identity, on 127.0.0.1:15088 inside the pod). Anything else addressed
//! past the pod is refused as before.
use std::net::SocketAddr;

use mesh_config::{Snapshot, snapshot::WaypointRef};
use mesh_identity::SpiffeId;
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::{PodProxy, error::ProxyError};
use crate::handoff;

/// The waypoint `pod` runs, when `target` is a port of a Service bound to it.
pub fn serves(
    snapshot: &Snapshot,
    pod: &PodProxy,
    target: SocketAddr,
) -> Result<WaypointRef, ProxyError> {
    let not_this_pod = || ProxyError::NotThisPod(target);
    let waypoint = snapshot
        .waypoint_of_pod(&pod.namespace, &pod.labels)
        .ok_or_else(not_this_pod)?;
    let service =
        snapshot
            .service_by_vip(target.ip())
            .ok_or_else(|| ProxyError::NotThisWaypoint {
                target,
                waypoint: waypoint.key(),
            })?;
    let bound = service.waypoint.as_ref() == Some(&waypoint)
        && service.ports.iter().any(|p| p.port == target.port());
    if !bound {
        return Err(ProxyError::NotThisWaypoint {
            target,
            waypoint: waypoint.key(),
        });
    }
    Ok(waypoint)
}

/// Connects to the waypoint process inside `pod` and tells it who (`client`, at `peer`)
/// asked for `target`.
pub async fn hand_off(
    pod: &PodProxy,
    peer: SocketAddr,
    client: &SpiffeId,
    target: SocketAddr,
) -> Result<TcpStream, ProxyError> {
    let listener = SocketAddr::from(([127, 0, 0, 1], handoff::WAYPOINT_HANDOFF_PORT));
    let mut stream = super::connect_in_pod(pod, listener).await?;
    let header = handoff::encode(peer, target, client).map_err(ProxyError::Copy)?;
    stream.write_all(&header).await.map_err(ProxyError::Copy)?;
    Ok(stream)
}
