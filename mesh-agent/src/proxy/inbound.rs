//! Inbound HBONE: the listener on 15008 inside each enrolled pod's namespace (`sk_lookup`
//! leaves that port alone, so peers reach it directly). Per connection: mutual TLS as the
//! pod's identity (the client must present a mesh certificate); per CONNECT stream: the
//! target must be this pod's address, `AuthorizationPolicy` must allow the client's
//! identity, then the agent connects to the application from inside the pod and copies.
//! A waypoint's pod also takes streams for the Services bound to it (see `waypoint`).
use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use h2::server::SendResponse;
use mesh_identity::SpiffeId;
use tokio::net::{TcpListener, TcpStream};

use super::{PodProxy, error::ProxyError, hbone, policy};
use crate::telemetry::connections::{Direction, Security};

pub async fn serve(listener: TcpListener, pod: Arc<PodProxy>) {
    super::accept_loop(listener, "inbound", pod, handle_connection).await
}

async fn handle_connection(tcp: TcpStream, peer: SocketAddr, pod: Arc<PodProxy>) {
    let handshake = async {
        let tls = pod.node.certs.server_config(&pod.identity)?;
        hbone::server::accept(tcp, peer, tls).await
    };
    let (mut connection, client) = match handshake.await {
        Ok(ok) => ok,
        Err(e) => {
            // Refused before any stream: recorded as one failed inbound connection.
            let mut guard = pod.track(Direction::Inbound, peer, &pod.node.config.snapshot());
            guard.set_destination_principal(pod.identity.principal());
            guard.fail(&e);
            return;
        }
    };
    // Polling `accept` drives the whole connection, streams included.
    while let Some(next) = connection.accept().await {
        match next {
            Ok((request, respond)) => {
                tokio::spawn(handle_stream(
                    request,
                    respond,
                    peer,
                    client.clone(),
                    pod.clone(),
                ));
            }
            Err(e) => {
                tracing::debug!(pod = %pod.pod, %peer, error = %e, "HBONE connection ended");
                break;
            }
        }
    }
}

async fn handle_stream(
    request: http::Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    client: SpiffeId,
    pod: Arc<PodProxy>,
) {
    let node = &pod.node;
    let snapshot = node.config.snapshot();
    let mut guard = pod.track(Direction::Inbound, peer, &snapshot);
    // The tunnel comes from the client pod's own address (the source agent dials from
    // inside it), so the configuration names the client workload.
    if let Some(workload) = snapshot.workload_by_ip(peer.ip()) {
        guard.set_peer_workload(workload.telemetry_names());
    }
    guard.set_source_principal(client.principal());
    guard.set_destination_principal(pod.identity.principal());
    guard.set_security(Security::MutualTls);
    let refuse = |respond: &mut SendResponse<Bytes>, status: u16| {
        let response = http::Response::builder().status(status).body(());
        if let Ok(response) = response {
            let _ = respond.send_response(response, true);
        }
    };
    let target = match hbone::server::connect_target(&request) {
        Ok(target) => target,
        Err(e) => {
            refuse(&mut respond, 400);
            guard.fail(&e);
            return;
        }
    };
    guard.set_destination(target);
    let to_waypoint = !pod.pod_ips.contains(&target.ip());
    if to_waypoint && let Err(e) = super::waypoint::serves(&snapshot, &pod, target) {
        refuse(&mut respond, 400);
        guard.fail(&e);
        return;
    }
    if let Err(e) = policy::check(&snapshot, &pod, Some(&client), peer, target) {
        refuse(&mut respond, 401);
        guard.fail(&e);
        return;
    }
    let connected = if to_waypoint {
        super::waypoint::hand_off(&pod, peer, &client, target).await
    } else {
        super::transparent::connect_as(&pod, peer.ip(), target).await
    };
    let mut upstream = match connected {
        Ok(stream) => stream,
        Err(e) => {
            refuse(&mut respond, 503);
            guard.fail(&e);
            return;
        }
    };
    let send = match respond.send_response(http::Response::new(()), false) {
        Ok(send) => send,
        Err(source) => {
            guard.fail(&ProxyError::Hbone { peer, source });
            super::copy::reset(&upstream);
            return;
        }
    };
    guard.established();
    let body = std::future::ready(Ok(request.into_body()));
    match hbone::stream::bidirectional(&mut upstream, send, body).await {
        // The client sent toward the application: "sent" is what the stream delivered.
        Ok(moved) => guard.set_bytes(moved.received, moved.sent),
        Err((e, moved)) => {
            guard.set_bytes(moved.received, moved.sent);
            guard.fail(&e.into());
            super::copy::reset(&upstream);
        }
    }
}
