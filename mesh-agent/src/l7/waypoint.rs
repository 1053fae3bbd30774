//! `mesh-agent waypoint`: the L7 proxy of the Services bound to one waypoint
//! (`istio.io/use-waypoint: <name>` on a Service or its namespace, the waypoint being a
//! Gateway API `Gateway` of class `istio-waypoint`).
//!
//! It runs in its own enrolled pod, labelled `gateway.networking.k8s.io/gateway-name:
//! <name>` with its own service account, as Istio's waypoint Deployment is. Clients' node
//! agents send the Service's traffic there over HBONE (mutual TLS with the client's
//! identity); the waypoint pod's node agent terminates it and hands each connection to
//! this process on 127.0.0.1:15088 with a PROXY protocol header naming the Service's VIP
//! and port and the client's verified identity ([`crate::handoff`]; Istio calls this a
//! "sandwiched" waypoint). Per request the waypoint then enforces the AuthorizationPolicies
//! attached to it or to the Service (`targetRef(s)`), routes with the VirtualServices bound
//! to `mesh` (the engine in `mesh-l7`), and connects to the chosen endpoint's pod address
//! in plain HTTP: its own node agent captures that connection and carries it over HBONE
//! with the waypoint's identity, directly to the endpoint (a waypoint's own connections are
//! never sent back to a waypoint). Telemetry reports `reporter="waypoint"` with the
//! client's workload and principal.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use mesh_l7::TableOptions;
use tokio::net::{TcpListener, TcpStream};

use super::forward::Upstream;
use super::metrics::{HttpMetrics, ProxyIdentity};
use super::proxy::{Connection, EntryPoint, HttpProxy, MeshConnection};
use super::routes::{ConfigSources, FollowedRoutes};
use crate::handoff;
use mesh_config::canonical::TelemetryNames;

/// What `mesh-agent waypoint` is given.
#[derive(Debug, Clone)]
pub struct WaypointOptions {
    pub config: ConfigSources,
    /// The waypoint's Gateway (class `istio-waypoint`): its name and namespace.
    pub name: String,
    pub namespace: String,
    /// Its workload name (`istio_requests_total`'s view of it).
    pub workload: String,
    pub trust_domain: String,
    /// Istio's root namespace (mesh-wide policies).
    pub root_namespace: String,
    /// Where the node agent hands connections over (127.0.0.1:15088).
    pub listen: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
}

impl WaypointOptions {
    /// The hand-off address the node agent connects to.
    pub fn default_listen() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, handoff::WAYPOINT_HANDOFF_PORT))
    }
}

/// Runs the waypoint until SIGINT or SIGTERM.
pub async fn run(options: WaypointOptions) -> anyhow::Result<()> {
    let table_options = TableOptions {
        proxy_namespace: Some(options.namespace.clone()),
        root_namespace: options.root_namespace.clone(),
        ..TableOptions::default()
    };
    let followed = FollowedRoutes::watch(&options.config, table_options).await?;
    let routes = followed.routes.clone();
    let proxy = Arc::new(HttpProxy {
        routes: routes.clone(),
        upstream: Upstream::default(),
        metrics: HttpMetrics::default(),
        identity: ProxyIdentity {
            reporter: "waypoint",
            names: TelemetryNames {
                workload: options.workload.clone(),
                namespace: options.namespace.clone(),
                // As Istio labels waypoint pods: the canonical name is the Gateway's.
                canonical_service: options.name.clone(),
                canonical_revision: "latest".into(),
            },
            trust_domain: options.trust_domain.clone(),
        },
        entry: EntryPoint::Waypoint {
            namespace: options.namespace.clone(),
            name: options.name.clone(),
        },
    });
    if let Some(addr) = options.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tokio::spawn(super::gateway::serve_admin(listener, proxy.clone()));
    }
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding the hand-off address {}", options.listen))?;
    let accept = tokio::spawn(accept_handoffs(listener, proxy));
    tracing::info!(
        waypoint = %format!("{}/{}", options.namespace, options.name),
        listen = %options.listen,
        "waypoint ready"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    accept.abort();
    drop(followed);
    Ok(())
}

/// Accepts the node agent's hand-offs, one task per connection.
async fn accept_handoffs(listener: TcpListener, proxy: Arc<HttpProxy>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or a transient error: do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_handoff(stream, from, proxy.clone()));
    }
}

/// Reads the hand-off header, then serves the client's HTTP on the rest of the stream.
async fn serve_handoff(mut stream: TcpStream, from: SocketAddr, proxy: Arc<HttpProxy>) {
    let handoff = match handoff::read(&mut stream).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(%from, error = %e, "hand-off refused");
            return;
        }
    };
    let conn = Connection {
        peer: handoff.source,
        port: handoff.destination.port(),
        scheme: "http",
        mesh: Some(Arc::new(MeshConnection {
            destination: handoff.destination,
            identity: handoff.identity,
        })),
    };
    super::server::serve_http(stream, conn, proxy).await;
}
