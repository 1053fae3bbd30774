//! The gateway's byte-stream servers: Gateway servers of protocol TCP (and TLS terminated
//! here, then routed as TCP) and protocol TLS with `mode: PASSTHROUGH`.
//!
//! Per connection: route with `mesh-l7` ([`RouteTable::route_gateway_tcp`], or
//! [`RouteTable::route_tls`] on the ClientHello's SNI) for each Gateway with a server on
//! the port (first routed wins), choose an endpoint of the cluster, connect to it in plain
//! TCP from the gateway's pod (the node agent captures that connect and carries it over
//! HBONE, as for HTTP: see [`super`]), then copy both ways until either side ends.
//!
//! Passthrough never terminates: the ClientHello is read (at most [`MAX_HELLO`] bytes,
//! within [`HELLO_TIMEOUT`]) and parsed by rustls' `Acceptor` only to learn the SNI, and the
//! bytes read are kept and written to the upstream first, so the backend sees the client's
//! handshake byte for byte and terminates TLS itself.
//!
//! Each connection is counted in `istio_tcp_*` and logged (target `access`) when it ends,
//! by a [`TcpRecord`] guard, so no early return forgets one.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_config::canonical::TelemetryNames;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use mesh_l7::{Cluster, ClusterEndpoint, Entry, GatewayConnection, ResponseFlag, Source};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::forward::CONNECT_TIMEOUT;
use super::metrics::{HttpMetrics, ProxyIdentity, TcpLabels};
use super::proxy::HttpProxy;

/// The most of a ClientHello read before giving up (a hello with post-quantum key shares
/// is under 2 KiB; one spread over several records stays far below this).
pub const MAX_HELLO: usize = 32 * 1024;
/// How long a client may take to send its ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a port does with a connection.
#[derive(Clone)]
pub enum L4Mode {
    /// `tcp` rules; with an acceptor, TLS is terminated first.
    Tcp(Option<TlsAcceptor>),
    /// `tls` rules on the SNI; the stream is passed through.
    Passthrough,
}

/// Why a ClientHello could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client closed before a whole ClientHello")]
    Closed,
    #[error("no ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
    #[error("not a TLS ClientHello: {0}")]
    Tls(rustls::Error),
}

/// Reads from `stream` until a whole ClientHello is in: the bytes read (all of them, to
/// forward as they came) and the SNI, lower case.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Vec<u8>, Option<String>), HelloError> {
    tokio::time::timeout(HELLO_TIMEOUT, read_hello(stream))
        .await
        .map_err(|_| HelloError::Timeout(HELLO_TIMEOUT))?
}

async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Vec<u8>, Option<String>), HelloError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(sni) = parse_hello(&mut acceptor, &buf[..n])? {
            return Ok((seen, sni));
        }
        if seen.len() > MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
    }
}

/// Feeds `bytes` to the acceptor. `Some(sni)` once the ClientHello is complete.
fn parse_hello(
    acceptor: &mut rustls::server::Acceptor,
    mut bytes: &[u8],
) -> Result<Option<Option<String>>, HelloError> {
    while !bytes.is_empty() {
        // The acceptor copies what it has room for; a full buffer is an error from it.
        match acceptor.read_tls(&mut bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Err(HelloError::TooLarge),
        }
    }
    match acceptor.accept() {
        Ok(None) => Ok(None),
        Ok(Some(accepted)) => Ok(Some(
            accepted
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase),
        )),
        Err((e, _alert)) => Err(HelloError::Tls(e)),
    }
}

/// Accepts connections on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, port: u16, proxy: Arc<HttpProxy>, mode: L4Mode) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a transient error: do not spin.
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (proxy, mode) = (proxy.clone(), mode.clone());
        tokio::spawn(async move {
            let mut record = TcpRecord::new(&proxy.metrics, &proxy.identity, peer, port);
            match mode {
                L4Mode::Tcp(None) => tcp(stream, &proxy, &mut record).await,
                L4Mode::Tcp(Some(acceptor)) => match acceptor.accept(stream).await {
                    Ok(stream) => tcp(stream, &proxy, &mut record).await,
                    Err(e) => {
                        record.failure = Some(format!("TLS handshake: {e}"));
                    }
                },
                L4Mode::Passthrough => passthrough(stream, &proxy, &mut record).await,
            }
        });
    }
}

/// `tcp` rules, then copy.
async fn tcp<S>(mut client: S, proxy: &HttpProxy, record: &mut TcpRecord<'_>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut upstream) = connect(proxy, record, None).await else {
        return;
    };
    copy(&mut client, &mut upstream, record).await;
}

/// The ClientHello's SNI, `tls` rules, then the hello and the rest of the stream as they
/// came.
async fn passthrough(mut client: TcpStream, proxy: &HttpProxy, record: &mut TcpRecord<'_>) {
    let (hello, sni) = match read_client_hello(&mut client).await {
        Ok(read) => read,
        Err(e) => {
            record.failure = Some(e.to_string());
            return;
        }
    };
    record.sni = sni.clone();
    let Some(mut upstream) = connect(proxy, record, Some(sni.as_deref())).await else {
        return;
    };
    if let Err(e) = upstream.write_all(&hello).await {
        record.flags = Some(ResponseFlag::UpstreamConnectionFailure);
        record.failure = Some(format!("writing the ClientHello upstream: {e}"));
        return;
    }
    record.received += hello.len() as u64;
    copy(&mut client, &mut upstream, record).await;
}

/// Routes (`sni`: `Some` for passthrough, with the SNI if any), picks an endpoint and
/// connects. `None` when there is nowhere to go; the record says why.
async fn connect(
    proxy: &HttpProxy,
    record: &mut TcpRecord<'_>,
    sni: Option<Option<&str>>,
) -> Option<TcpStream> {
    let table = proxy.routes.table();
    let labels = match &proxy.entry {
        super::proxy::EntryPoint::Gateway { labels } => labels,
        super::proxy::EntryPoint::Waypoint { .. } => {
            record.flags = Some(ResponseFlag::NoRoute);
            return None;
        }
    };
    let gateways = super::gateway::gateways_on_port(table.snapshot(), labels, record.port);
    let mut rng = fastrand::Rng::new();
    let source = Source {
        ip: Some(record.peer.ip()),
        ..Source::default()
    };
    let mut outcome: Result<&Cluster, ResponseFlag> = Err(ResponseFlag::NoRoute);
    for gateway in &gateways {
        let conn = GatewayConnection {
            gateway,
            port: record.port,
            sni: sni.flatten(),
            source,
        };
        outcome = match sni {
            Some(_) => table.route_tls(&conn, &mut rng),
            None => table.route_gateway_tcp(&conn, &mut rng),
        };
        if outcome.is_ok() {
            record.gateway = Some(gateway.clone());
            break;
        }
    }
    let cluster = match outcome {
        Ok(c) => c,
        Err(flag) => {
            record.flags = Some(flag);
            return None;
        }
    };
    record.service = Some(cluster.host.clone());
    // `choose` reads a request for consistent hashing: a byte stream has only its source.
    let headers = HeaderMap::new();
    let request = mesh_l7::Request {
        method: "",
        scheme: "tcp",
        authority: "",
        path: "",
        headers: &headers,
        port: record.port,
        service: Some(&cluster.host),
        source,
        entry: Entry::Gateway(record.gateway.as_deref().unwrap_or_default()),
    };
    let now = Instant::now();
    let choice = match cluster.choose(&request, proxy.routes.lb(), &mut rng, now, &[]) {
        Ok(c) => c,
        Err(flag) => {
            record.flags = Some(flag);
            return None;
        }
    };
    let endpoint = choice.endpoint;
    record.upstream = Some(super::forward::endpoint_authority(endpoint));
    record.destination = endpoint.telemetry.clone();
    match tokio::time::timeout(CONNECT_TIMEOUT, dial(endpoint)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            // A connect that succeeds resets the endpoint's consecutive errors, as an
            // answered request does for HTTP.
            let success = mesh_l7::AttemptOutcome::Response {
                status: 200,
                grpc_status: None,
            };
            report(proxy, cluster, endpoint, success);
            record
                .metrics
                .tcp_opened
                .get_or_create(&record.labels())
                .inc();
            Some(stream)
        }
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {CONNECT_TIMEOUT:?}"),
            };
            report(
                proxy,
                cluster,
                endpoint,
                mesh_l7::AttemptOutcome::ConnectFailure,
            );
            record.flags = Some(ResponseFlag::UpstreamConnectionFailure);
            record.failure = Some(format!("connecting upstream: {why}"));
            None
        }
    }
}

fn report(
    proxy: &HttpProxy,
    cluster: &Cluster,
    endpoint: &ClusterEndpoint,
    outcome: mesh_l7::AttemptOutcome,
) {
    if let Some(event) = proxy
        .routes
        .lb()
        .report(cluster, endpoint, outcome, Instant::now())
    {
        tracing::info!(cluster = %cluster.name, endpoint = %endpoint.key, ?event, "outlier detection");
    }
}

/// Its address, or its host name resolved now (a DNS ServiceEntry).
async fn dial(endpoint: &ClusterEndpoint) -> std::io::Result<TcpStream> {
    match (endpoint.address, &endpoint.hostname) {
        (Some(ip), _) => TcpStream::connect(SocketAddr::new(ip, endpoint.port)).await,
        (None, Some(host)) => TcpStream::connect((host.as_str(), endpoint.port)).await,
        (None, None) => Err(std::io::Error::other("the endpoint has no address")),
    }
}

/// Both directions until either side ends (a half-close is passed on). Bytes are counted
/// as they are read, so a copy that ends in an error (a TLS client gone without
/// `close_notify`) still reports what went through.
async fn copy<C>(client: &mut C, upstream: &mut TcpStream, record: &mut TcpRecord<'_>)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = Counted {
        inner: client,
        read: 0,
    };
    let mut upstream = Counted {
        inner: upstream,
        read: 0,
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        record.failure = Some(format!("copy: {e}"));
    }
    record.received += client.read;
    record.sent += upstream.read;
    let _ = upstream.inner.shutdown().await;
}

/// A stream that counts the bytes read from it.
struct Counted<'s, S> {
    inner: &'s mut S,
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        let after = buf.filled().len();
        self.read += (after - before) as u64;
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// One connection's telemetry, recorded on drop.
pub struct TcpRecord<'a> {
    metrics: &'a HttpMetrics,
    identity: &'a ProxyIdentity,
    start: Instant,
    started_at: SystemTime,
    peer: SocketAddr,
    port: u16,
    sni: Option<String>,
    gateway: Option<String>,
    service: Option<String>,
    /// The endpoint's workload, as telemetry names it.
    destination: Option<Arc<TelemetryNames>>,
    upstream: Option<String>,
    flags: Option<ResponseFlag>,
    failure: Option<String>,
    sent: u64,
    received: u64,
}

impl<'a> TcpRecord<'a> {
    fn new(
        metrics: &'a HttpMetrics,
        identity: &'a ProxyIdentity,
        peer: SocketAddr,
        port: u16,
    ) -> Self {
        TcpRecord {
            metrics,
            identity,
            start: Instant::now(),
            started_at: SystemTime::now(),
            peer,
            port,
            sni: None,
            gateway: None,
            service: None,
            destination: None,
            upstream: None,
            flags: None,
            failure: None,
            sent: 0,
            received: 0,
        }
    }

    fn labels(&self) -> TcpLabels {
        let unknown = || "unknown".to_string();
        let source = self.identity.names.clone();
        let destination = self
            .destination
            .as_deref()
            .cloned()
            .unwrap_or_else(TelemetryNames::unknown);
        TcpLabels {
            reporter: self.identity.reporter,
            source_workload: source.workload,
            source_workload_namespace: source.namespace,
            source_canonical_service: source.canonical_service,
            source_canonical_revision: source.canonical_revision,
            destination_workload: destination.workload,
            destination_workload_namespace: destination.namespace,
            destination_canonical_service: destination.canonical_service,
            destination_canonical_revision: destination.canonical_revision,
            destination_service: self.service.clone().unwrap_or_else(unknown),
            request_protocol: "tcp",
            response_flags: self.flags.map_or("-", |f| f.as_str()),
        }
    }
}

impl Drop for TcpRecord<'_> {
    fn drop(&mut self) {
        let labels = self.labels();
        self.metrics.tcp_closed.get_or_create(&labels).inc();
        self.metrics
            .tcp_sent
            .get_or_create(&labels)
            .inc_by(self.sent);
        self.metrics
            .tcp_received
            .get_or_create(&labels)
            .inc_by(self.received);
        let start_time = crate::telemetry::rfc3339(self.started_at);
        tracing::info!(
            target: "access",
            start_time = %start_time,
            protocol = "tcp",
            port = self.port,
            requested_server_name = self.sni.as_deref().unwrap_or("-"),
            response_flags = labels.response_flags,
            duration_ms = self.start.elapsed().as_millis() as u64,
            bytes_received = self.received,
            bytes_sent = self.sent,
            upstream_host = self.upstream.as_deref().unwrap_or("-"),
            upstream_cluster = %labels.destination_service,
            gateway = self.gateway.as_deref().unwrap_or("-"),
            downstream_remote_address = %self.peer,
            failure = self.failure.as_deref().unwrap_or("-"),
            "connection"
        );
    }
}

#[cfg(test)]
mod tests;
