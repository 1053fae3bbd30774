//! `mesh-agent gateway`: the ingress gateway. Loads the configuration with the same store
//! and directory watcher as the node agent, rebuilds the routing table on every change,
//! and listens on the ports of the `Gateway` servers that select it (its `--labels`,
//! `istio: ingressgateway` by default): protocol HTTP, HTTP2 or GRPC, and HTTPS with TLS
//! terminated (certificate files or a `credentialName` Secret, see [`super::tls`]), served
//! as HTTP; protocol TCP, and TLS terminated the same way, routed by VirtualService `tcp`
//! rules; protocol TLS with `mode: PASSTHROUGH`, routed by `tls` rules on the ClientHello's
//! SNI without terminating (see [`super::tcp`]). Listeners follow the configuration: a new
//! server port is opened, a removed or changed one closed (and a changed one opened again);
//! a change to a Secret a server reads re-opens its listener with the new certificate.
//!
//! Run it inside an enrolled pod: see the module docs of [`crate::l7`] for why.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_config::canonical::TelemetryNames;

use anyhow::Context as _;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_config::Snapshot;
use mesh_config::istio::{Server, ServerTlsMode};
use mesh_config::resolve::Protocol;
use mesh_config::snapshot::SecretInfo;
use mesh_l7::TableOptions;

use super::forward::Upstream;
use super::metrics::{HttpMetrics, ProxyIdentity};
use super::proxy::{EntryPoint, HttpProxy};
use super::reply;
use super::routes::{ConfigSources, FollowedRoutes};
use super::server;
use super::tcp;
use super::tls;

/// What `mesh-agent gateway` is given.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub config: ConfigSources,
    /// The gateway workload's labels, which `Gateway.spec.selector` is matched against.
    pub labels: BTreeMap<String, String>,
    /// The gateway's namespace (DestinationRule lookup, `source_workload_namespace`).
    pub namespace: String,
    /// Its workload name (`source_workload`).
    pub workload: String,
    /// The mesh's trust domain (principals in metrics).
    pub trust_domain: String,
    pub metrics_addr: Option<SocketAddr>,
}

/// How a port's connections are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortMode {
    /// HTTP/1.1 and h2 (after TLS for HTTPS), routed per request.
    #[default]
    Http,
    /// Raw bytes (after TLS for a terminated TLS server), routed by `tcp` rules.
    Tcp,
    /// TLS passed through untouched, routed by `tls` rules on the SNI.
    Passthrough,
}

/// What one port serves: the Gateways with a server on it, how, and the TLS it terminates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServedPort {
    /// `namespace/name` of each selecting Gateway with a served server on the port.
    pub gateways: Vec<String>,
    /// The first server found decides; servers of another mode on the port are skipped.
    pub mode: PortMode,
    /// The server whose TLS settings the port terminates (its Gateway's key and the
    /// server): the first one found; a port is plain or TLS, not both.
    pub tls: Option<(String, Server)>,
    /// The Secrets that server's `credentialName` reads (only their presence and content
    /// matter here: a change re-opens the listener).
    pub secrets: Vec<Arc<SecretInfo>>,
}

impl ServedPort {
    /// Whether a listener opened for `self` must be re-opened to serve `other`.
    fn reopens_for(&self, other: &ServedPort) -> bool {
        (self.mode, &self.tls, &self.secrets) != (other.mode, &other.tls, &other.secrets)
    }
}

/// Gateway servers this gateway serves, by port, of the Gateways that select it: HTTP,
/// HTTP2, GRPC, HTTPS and TLS it can terminate, TCP, and TLS passthrough.
pub fn served_ports(
    snapshot: &Snapshot,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<u16, ServedPort> {
    let mut ports: BTreeMap<u16, ServedPort> = BTreeMap::new();
    for (key, gateway) in selecting(snapshot, labels) {
        for server in &gateway.servers {
            let Some(mode) = mode_of(server) else {
                continue;
            };
            let Ok(port) = u16::try_from(server.port.number) else {
                continue;
            };
            let fresh = !ports.contains_key(&port);
            let served = ports.entry(port).or_default();
            if fresh {
                served.mode = mode;
            } else if served.mode != mode {
                tracing::warn!(
                    port,
                    gateway = %key,
                    "a Gateway server of another protocol already holds this port: skipped"
                );
                continue;
            }
            if !served.gateways.contains(key) {
                served.gateways.push(key.clone());
            }
            if tls::terminates(server) && served.tls.is_none() {
                served.tls = Some((key.clone(), server.clone()));
                served.secrets = tls::secrets_read(key, server, snapshot);
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
                .any(|s| s.port.number == u32::from(port) && serves(s))
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

/// How the gateway serves a server, if it does: HTTP, HTTP2, GRPC, and HTTPS with TLS
/// settings it terminates, as HTTP; TCP, and TLS it terminates, as TCP; TLS PASSTHROUGH.
fn mode_of(server: &Server) -> Option<PortMode> {
    let protocol = server.port.protocol.as_deref().and_then(Protocol::parse);
    let passthrough = server
        .tls
        .as_ref()
        .is_some_and(|t| t.mode == Some(ServerTlsMode::Passthrough));
    match protocol {
        Some(Protocol::Http | Protocol::Http2 | Protocol::Grpc) => Some(PortMode::Http),
        Some(Protocol::Https) if tls::terminates(server) => Some(PortMode::Http),
        Some(Protocol::Tcp) => Some(PortMode::Tcp),
        Some(Protocol::Tls) if passthrough => Some(PortMode::Passthrough),
        Some(Protocol::Tls) if tls::terminates(server) => Some(PortMode::Tcp),
        _ => None,
    }
}

fn serves(server: &Server) -> bool {
    mode_of(server).is_some()
}

/// Servers selected but not served, to say so in the log.
fn unserved(snapshot: &Snapshot, labels: &BTreeMap<String, String>) -> Vec<String> {
    selecting(snapshot, labels)
        .flat_map(|(key, g)| {
            g.servers.iter().filter(|s| !serves(s)).map(move |s| {
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
    let table_options = TableOptions {
        proxy_namespace: Some(options.namespace.clone()),
        ..TableOptions::default()
    };
    let followed = FollowedRoutes::watch(&options.config, table_options).await?;
    let routes = followed.routes.clone();
    let proxy = Arc::new(HttpProxy {
        routes: routes.clone(),
        upstream: Upstream::default(),
        metrics: HttpMetrics::default(),
        identity: ProxyIdentity {
            reporter: "source",
            names: TelemetryNames::from_workload(
                options.workload.clone(),
                &options.namespace,
                &options.labels,
            ),
            trust_domain: options.trust_domain.clone(),
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

    let mut listeners: BTreeMap<u16, Listener> = BTreeMap::new();
    let mut changes = routes.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(labels = ?options.labels, "gateway ready");
    loop {
        reconcile(&proxy, &options.labels, &mut listeners).await;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    drop(followed);
    drop(listeners);
    Ok(())
}

/// A port's listener tasks and what they were opened for.
struct Listener {
    served: ServedPort,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listener {
    /// Stops accepting and waits until the listening sockets are closed: an aborted task
    /// drops its socket only when next polled, and binding the port again before that
    /// fails with `EADDRINUSE`. Connections already accepted carry on.
    async fn close(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Opens listeners for new server ports, closes those no Gateway server has any more, and
/// reopens those whose TLS settings changed.
async fn reconcile(
    proxy: &Arc<HttpProxy>,
    labels: &BTreeMap<String, String>,
    listeners: &mut BTreeMap<u16, Listener>,
) {
    let table = proxy.routes.table();
    let wanted = served_ports(table.snapshot(), labels);
    let skipped = unserved(table.snapshot(), labels);
    if !skipped.is_empty() {
        tracing::warn!(servers = ?skipped, "Gateway servers not served (HTTP, HTTP2, GRPC, HTTPS, TCP and TLS SIMPLE, MUTUAL or PASSTHROUGH are)");
    }
    let stale: BTreeSet<u16> = listeners
        .iter()
        .filter(|(port, l)| wanted.get(port).is_none_or(|w| l.served.reopens_for(w)))
        .map(|(port, _)| *port)
        .collect();
    for port in stale {
        if let Some(listener) = listeners.remove(&port) {
            listener.close().await;
        }
        tracing::info!(
            port,
            "listener closed: its Gateway servers changed or are gone"
        );
    }
    for (port, served) in wanted {
        if let Some(l) = listeners.get_mut(&port) {
            l.served = served;
            continue;
        }
        // HTTPS offers h2 and HTTP/1.1; a TLS server routed as TCP offers no ALPN.
        let alpn: &[&[u8]] = match served.mode {
            PortMode::Http => &[b"h2", b"http/1.1"],
            PortMode::Tcp | PortMode::Passthrough => &[],
        };
        let acceptor = match &served.tls {
            Some((key, server)) => match tls::server_config(key, server, table.snapshot(), alpn) {
                Ok(config) => Some(tokio_rustls::TlsAcceptor::from(config)),
                Err(e) => {
                    // Only this port stays closed; the error names Gateway, server and
                    // field or Secret (never a Secret's value).
                    tracing::error!("cannot serve TLS: {e}");
                    continue;
                }
            },
            None => None,
        };
        match server::bind(port) {
            Ok(sockets) => {
                let tasks = sockets
                    .into_iter()
                    .map(|l| {
                        let (proxy, acceptor) = (proxy.clone(), acceptor.clone());
                        match served.mode {
                            PortMode::Http => tokio::spawn(server::serve(l, port, proxy, acceptor)),
                            PortMode::Tcp => {
                                tokio::spawn(tcp::serve(l, port, proxy, tcp::L4Mode::Tcp(acceptor)))
                            }
                            PortMode::Passthrough => {
                                tokio::spawn(tcp::serve(l, port, proxy, tcp::L4Mode::Passthrough))
                            }
                        }
                    })
                    .collect();
                tracing::info!(port, gateways = ?served.gateways, mode = ?served.mode, tls = acceptor.is_some(), "listening");
                listeners.insert(port, Listener { served, tasks });
            }
            Err(e) => {
                tracing::error!(port, gateways = ?served.gateways, error = %e, "cannot listen")
            }
        }
    }
}

/// `GET /metrics` (Prometheus) and `GET /healthz/ready`.
pub(super) async fn serve_admin(listener: tokio::net::TcpListener, proxy: Arc<HttpProxy>) {
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
