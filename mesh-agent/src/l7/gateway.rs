//! `mesh-agent gateway`: the ingress gateway. Loads the configuration with the same store
//! and directory watcher as the node agent, rebuilds the routing table on every change,
//! and listens on the ports of the `Gateway` servers that select it (its `--labels`,
//! `istio: ingressgateway` by default) with protocol HTTP, HTTP2 or GRPC. Listeners follow
//! the configuration: a new server port is opened, a removed one closed. HTTPS, TLS and TCP
//! servers are not served yet (logged once per change).
//!
//! Run it inside an enrolled pod: see the module docs of [`crate::l7`] for why.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_config::resolve::Protocol;
use mesh_config::{ConfigStore, DirSource, Snapshot};
use mesh_l7::TableOptions;

use super::forward::Upstream;
use super::metrics::{HttpMetrics, ProxyIdentity};
use super::proxy::{EntryPoint, HttpProxy};
use super::reply;
use super::routes::Routes;
use super::server;

/// What `mesh-agent gateway` is given.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub config_dir: PathBuf,
    /// The gateway workload's labels, which `Gateway.spec.selector` is matched against.
    pub labels: BTreeMap<String, String>,
    /// The gateway's namespace (DestinationRule lookup, `source_workload_namespace`).
    pub namespace: String,
    /// Its workload name (`source_workload`).
    pub workload: String,
    pub metrics_addr: Option<SocketAddr>,
}

/// Gateway servers this gateway serves: port → the `namespace/name` of each selecting
/// Gateway with an HTTP, HTTP2 or GRPC server on it.
pub fn served_ports(
    snapshot: &Snapshot,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<u16, Vec<String>> {
    let mut ports: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for (key, gateway) in selecting(snapshot, labels) {
        for server in &gateway.servers {
            let Ok(port) = u16::try_from(server.port.number) else {
                continue;
            };
            if is_plain_http(server) {
                let keys = ports.entry(port).or_default();
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
    }
    ports
}

/// The Gateways (keys) a request on `port` may enter through.
pub fn gateways_on_port(
    snapshot: &Snapshot,
    labels: &BTreeMap<String, String>,
    port: u16,
) -> Vec<String> {
    selecting(snapshot, labels)
        .filter(|(_, g)| {
            g.servers
                .iter()
                .any(|s| s.port.number == u32::from(port) && is_plain_http(s))
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Gateways whose selector is a subset of `labels` (Istio matches them in every namespace
/// by default).
fn selecting<'s>(
    snapshot: &'s Snapshot,
    labels: &'s BTreeMap<String, String>,
) -> impl Iterator<Item = (&'s String, &'s Arc<mesh_config::snapshot::GatewayInfo>)> {
    snapshot
        .gateways
        .iter()
        .filter(move |(_, g)| g.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn is_plain_http(server: &mesh_config::istio::Server) -> bool {
    let protocol = server.port.protocol.as_deref().and_then(Protocol::parse);
    matches!(
        protocol,
        Some(Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    )
}

/// Servers selected but not served, to say so in the log.
fn unserved(snapshot: &Snapshot, labels: &BTreeMap<String, String>) -> Vec<String> {
    selecting(snapshot, labels)
        .flat_map(|(key, g)| {
            g.servers
                .iter()
                .filter(|s| !is_plain_http(s))
                .map(move |s| {
                    format!(
                        "{key} port {} ({})",
                        s.port.number,
                        s.port.protocol.as_deref().unwrap_or("no protocol")
                    )
                })
        })
        .collect()
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(options: GatewayOptions) -> anyhow::Result<()> {
    let store = Arc::new(ConfigStore::default());
    let _source =
        DirSource::spawn(options.config_dir.clone(), store.clone()).with_context(|| {
            format!(
                "watching the config directory {}",
                options.config_dir.display()
            )
        })?;
    let table_options = TableOptions {
        proxy_namespace: Some(options.namespace.clone()),
        ..TableOptions::default()
    };
    let routes = Routes::new(&store, table_options);
    let follow = routes.follow(store.clone());
    let proxy = Arc::new(HttpProxy {
        routes: routes.clone(),
        upstream: Upstream::default(),
        metrics: HttpMetrics::default(),
        identity: ProxyIdentity {
            reporter: "source",
            workload: options.workload.clone(),
            namespace: options.namespace.clone(),
        },
        entry: EntryPoint::Gateway {
            labels: options.labels.clone(),
        },
    });
    if let Some(addr) = options.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tokio::spawn(serve_admin(listener, proxy.clone()));
    }

    let mut listeners: BTreeMap<u16, Vec<tokio::task::JoinHandle<()>>> = BTreeMap::new();
    let mut changes = routes.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(labels = ?options.labels, "gateway ready");
    loop {
        reconcile(&proxy, &options.labels, &mut listeners);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    follow.abort();
    for tasks in listeners.into_values() {
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
    Ok(())
}

/// Opens listeners for new server ports and closes those no Gateway server has any more.
fn reconcile(
    proxy: &Arc<HttpProxy>,
    labels: &BTreeMap<String, String>,
    listeners: &mut BTreeMap<u16, Vec<tokio::task::JoinHandle<()>>>,
) {
    let table = proxy.routes.table();
    let wanted = served_ports(table.snapshot(), labels);
    let skipped = unserved(table.snapshot(), labels);
    if !skipped.is_empty() {
        tracing::warn!(servers = ?skipped, "Gateway servers not served (only HTTP, HTTP2 and GRPC are, yet)");
    }
    let gone: BTreeSet<u16> = listeners
        .keys()
        .filter(|p| !wanted.contains_key(p))
        .copied()
        .collect();
    for port in gone {
        if let Some(tasks) = listeners.remove(&port) {
            tasks.iter().for_each(tokio::task::JoinHandle::abort);
            tracing::info!(port, "listener closed: no Gateway server on it any more");
        }
    }
    for (port, gateways) in wanted {
        if listeners.contains_key(&port) {
            continue;
        }
        match server::bind(port) {
            Ok(sockets) => {
                let tasks = sockets
                    .into_iter()
                    .map(|l| tokio::spawn(server::serve(l, port, proxy.clone())))
                    .collect();
                listeners.insert(port, tasks);
                tracing::info!(port, ?gateways, "listening");
            }
            Err(e) => tracing::error!(port, ?gateways, error = %e, "cannot listen"),
        }
    }
}

/// `GET /metrics` (Prometheus) and `GET /healthz/ready`.
async fn serve_admin(listener: tokio::net::TcpListener, proxy: Arc<HttpProxy>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move {
                    let (status, body) = match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => (StatusCode::OK, proxy.metrics.render()),
                        (&Method::GET, "/healthz/ready") => (StatusCode::OK, String::new()),
                        _ => (
                            StatusCode::NOT_FOUND,
                            "GET /metrics or /healthz/ready\n".into(),
                        ),
                    };
                    let mut r = Response::new(reply::full(body));
                    *r.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests;
