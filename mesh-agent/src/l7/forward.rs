//! Sending a routed request upstream: pooled clients (HTTP/1.1 keep-alive, and HTTP/2 for
//! gRPC and h2 services), the route's timeout over all attempts, retries per the route's
//! policy on another endpoint of the cluster (`Cluster::choose` with the tried ones
//! excluded), each attempt's outcome reported to `LbState` for outlier detection, and
//! `Upgrade` requests (WebSocket) on a connection of their own whose bytes are copied both
//! ways once both sides switched protocols.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_config::canonical::TelemetryNames;
use mesh_l7::{
    AttemptOutcome, Cluster, ClusterEndpoint, EndpointChoice, LbState, ResponseFlag, RetryPolicy,
};

use super::reply::{empty, full};
use super::{Body, BoxError};

/// Istio's default `connectTimeout`.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy's base retry back-off.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// The upstream clients, shared by all requests of a proxy.
pub struct Upstream {
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
}

impl Default for Upstream {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // Absolute URIs name the endpoint; `Host` is set by the proxy from the request.
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Upstream { http1, http2 }
    }
}

/// A request body that can be sent again (read whole, small) or only once (streamed).
pub enum RequestBody {
    Replayable(Bytes),
    Once(Option<Incoming>),
}

/// Bodies up to this size are read before the first attempt so a retry can send them again.
pub const REPLAYABLE_LIMIT: u64 = 64 * 1024;

impl RequestBody {
    /// Reads a small (or empty) body whole; a larger or unsized one is streamed once.
    pub async fn prepare(body: Incoming) -> Result<RequestBody, hyper::Error> {
        use hyper::body::Body as _;
        let hint = body.size_hint();
        match hint.exact() {
            Some(n) if n <= REPLAYABLE_LIMIT => {
                Ok(RequestBody::Replayable(body.collect().await?.to_bytes()))
            }
            _ => Ok(RequestBody::Once(Some(body))),
        }
    }

    fn take(&mut self) -> Option<Body> {
        match self {
            RequestBody::Replayable(b) => Some(full(b.clone())),
            RequestBody::Once(b) => b.take().map(|b| b.map_err(BoxError::from).boxed()),
        }
    }
}

/// The request as it goes upstream, endpoint aside: method, path, headers (rewrites and
/// header operations applied, hop-by-hop headers removed, `Host` set).
pub struct Outgoing {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: RequestBody,
    /// HTTP/2 upstream (gRPC, h2 services).
    pub h2: bool,
}

/// How forwarding ended.
pub struct Forwarded {
    /// The upstream's response, or the flag of a local answer (`UF`, `UT`, ...).
    pub result: Result<Response<Body>, ResponseFlag>,
    pub attempts: u32,
    /// The last endpoint tried.
    pub upstream: Option<String>,
    /// The last endpoint's workload: its key, and its name in telemetry.
    pub workload: Option<String>,
    pub telemetry: Option<Arc<TelemetryNames>>,
}

/// What one forward reads of the decision.
pub struct Plan<'t> {
    pub cluster: &'t Cluster,
    pub first: EndpointChoice<'t>,
    pub timeout: Option<Duration>,
    pub retry: &'t RetryPolicy,
}

impl Upstream {
    /// Sends `out` to the plan's endpoint, retrying on others as the policy allows, within
    /// the route's timeout (`UT`, 504, when it fires).
    pub async fn forward(
        &self,
        plan: &Plan<'_>,
        mut out: Outgoing,
        lb: &LbState,
        route_req: &mesh_l7::Request<'_>,
        rng: &mut fastrand::Rng,
    ) -> Forwarded {
        let mut done = Forwarded {
            result: Err(ResponseFlag::NoHealthyUpstream),
            attempts: 0,
            upstream: None,
            workload: None,
            telemetry: None,
        };
        let attempts = self.attempts(plan, &mut out, lb, route_req, rng, &mut done);
        match plan.timeout {
            Some(limit) => {
                if tokio::time::timeout(limit, attempts).await.is_err() {
                    done.result = Err(ResponseFlag::UpstreamRequestTimeout);
                }
            }
            None => attempts.await,
        }
        done
    }

    async fn attempts(
        &self,
        plan: &Plan<'_>,
        out: &mut Outgoing,
        lb: &LbState,
        route_req: &mesh_l7::Request<'_>,
        rng: &mut fastrand::Rng,
        done: &mut Forwarded,
    ) {
        let mut tried = vec![plan.first.index];
        let mut endpoint = plan.first.endpoint;
        loop {
            done.attempts += 1;
            done.upstream = Some(endpoint_authority(endpoint));
            done.workload = endpoint.workload.clone();
            done.telemetry = endpoint.telemetry.clone();
            if endpoint.address.is_none() && endpoint.hostname.is_none() {
                // A workload whose pods do not run yet (a Deployment just applied): no
                // address to dial, and no name to hand to the resolver.
                done.result = Err(ResponseFlag::NoHealthyUpstream);
                return;
            }
            let Some(body) = out.body.take() else {
                return;
            };
            let request = match build(out, endpoint, body) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("cannot build the upstream request: {e}");
                    done.result = Err(ResponseFlag::UpstreamConnectionFailure);
                    return;
                }
            };
            let active = lb.begin(plan.cluster, endpoint);
            let (outcome, result) = self
                .attempt(request, out.h2, plan.retry.per_try_timeout)
                .await;
            drop(active);
            lb.report(plan.cluster, endpoint, outcome, Instant::now());
            let replayable = matches!(out.body, RequestBody::Replayable(_));
            let retry = replayable && plan.retry.should_retry(done.attempts, outcome);
            done.result = result;
            if !retry {
                return;
            }
            match plan
                .cluster
                .choose(route_req, lb, rng, Instant::now(), &tried)
            {
                Ok(next) => {
                    tried.push(next.index);
                    endpoint = next.endpoint;
                }
                Err(_) => return,
            }
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    /// One attempt: its outcome (for retries and outlier detection) and its result.
    async fn attempt(
        &self,
        request: Request<Body>,
        h2: bool,
        per_try: Option<Duration>,
    ) -> (AttemptOutcome, Result<Response<Body>, ResponseFlag>) {
        let client = if h2 { &self.http2 } else { &self.http1 };
        let sent = client.request(request);
        let answer = match per_try {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(a) => a,
                Err(_) => {
                    return (
                        AttemptOutcome::PerTryTimeout,
                        Err(ResponseFlag::UpstreamRequestTimeout),
                    );
                }
            },
            None => sent.await,
        };
        match answer {
            Ok(response) => {
                let outcome = AttemptOutcome::Response {
                    status: response.status().as_u16(),
                    grpc_status: grpc_status(response.headers()),
                };
                (
                    outcome,
                    Ok(response.map(|b| b.map_err(BoxError::from).boxed())),
                )
            }
            Err(e) => {
                let (outcome, flag) = classify(&e);
                tracing::info!(error = %e, source = ?std::error::Error::source(&e), flag = %flag, "upstream attempt failed");
                (outcome, Err(flag))
            }
        }
    }

    /// Sends a copy of a request to `endpoint` and forgets it (`mirror`): its answer is
    /// read and dropped, its failure only logged. Bodies streamed once are not mirrored.
    pub fn mirror(&self, endpoint: &ClusterEndpoint, out: &Outgoing) {
        let RequestBody::Replayable(bytes) = &out.body else {
            return;
        };
        let request = match build(out, endpoint, full(bytes.clone())) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("cannot build the mirrored request: {e}");
                return;
            }
        };
        let client = if out.h2 {
            self.http2.clone()
        } else {
            self.http1.clone()
        };
        let upstream = endpoint_authority(endpoint);
        tokio::spawn(async move {
            match client.request(request).await {
                Ok(response) => {
                    // Read to the end so the connection goes back to the pool.
                    let _ = response.into_body().collect().await;
                }
                Err(e) => tracing::debug!(%upstream, error = %e, "mirrored request failed"),
            }
        });
    }

    /// An `Upgrade` request (WebSocket): its own connection to the endpoint; on `101` both
    /// upgraded connections are joined and their bytes copied until either side closes.
    pub async fn upgrade(
        &self,
        endpoint: &ClusterEndpoint,
        mut out: Outgoing,
        downstream: hyper::upgrade::OnUpgrade,
    ) -> Result<Response<Body>, ResponseFlag> {
        let addr = endpoint_addr(endpoint).ok_or(ResponseFlag::UpstreamConnectionFailure)?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| ResponseFlag::UpstreamConnectionFailure)?
            .map_err(|_| ResponseFlag::UpstreamConnectionFailure)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ResponseFlag::UpstreamConnectionFailure)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upgraded upstream connection ended");
            }
        });
        let body = out.body.take().unwrap_or_else(empty);
        let mut request =
            build_origin(&out, body).map_err(|_| ResponseFlag::UpstreamConnectionFailure)?;
        *request.version_mut() = Version::HTTP_11;
        let mut response = sender
            .send_request(request)
            .await
            .map_err(|e| classify_hyper(&e).1)?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(response.map(|b| b.map_err(BoxError::from).boxed()));
        }
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (down, up) = match tokio::try_join!(downstream, upstream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let mut down = TokioIo::new(down);
            let mut up = TokioIo::new(up);
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(error = %e, "upgraded stream ended with an error");
            }
        });
        Ok(response.map(|_| empty()))
    }
}

/// Where an endpoint is reached: its address, or its host name (a DNS ServiceEntry).
pub fn endpoint_authority(e: &ClusterEndpoint) -> String {
    match (e.address, &e.hostname) {
        (Some(ip), _) => SocketAddr::new(ip, e.port).to_string(),
        (None, Some(host)) => format!("{host}:{}", e.port),
        (None, None) => format!("unknown:{}", e.port),
    }
}

fn endpoint_addr(e: &ClusterEndpoint) -> Option<SocketAddr> {
    e.address.map(|ip| SocketAddr::new(ip, e.port))
}

/// The request for one attempt: absolute URI naming the endpoint (the client connects
/// there), the proxy's headers (`Host` included).
fn build(
    out: &Outgoing,
    endpoint: &ClusterEndpoint,
    body: Body,
) -> Result<Request<Body>, http::Error> {
    let uri: Uri = format!("http://{}{}", endpoint_authority(endpoint), out.path).parse()?;
    let mut request = Request::builder()
        .method(out.method.clone())
        .uri(uri)
        .version(if out.h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        })
        .body(body)?;
    *request.headers_mut() = out.headers.clone();
    Ok(request)
}

/// The request on a connection of its own (origin-form path).
fn build_origin(out: &Outgoing, body: Body) -> Result<Request<Body>, http::Error> {
    let mut request = Request::builder()
        .method(out.method.clone())
        .uri(out.path.as_str())
        .body(body)?;
    *request.headers_mut() = out.headers.clone();
    Ok(request)
}

/// `grpc-status` of a trailers-only answer (in the headers).
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A failed attempt as a retry outcome and a response flag. The node agent accepts the
/// connect itself (capture), so an endpoint that refuses shows as a connection closed
/// or resets before any response byte: that is a connect failure too (see the module docs
/// of `l7`).
fn classify(e: &hyper_util::client::legacy::Error) -> (AttemptOutcome, ResponseFlag) {
    if e.is_connect() {
        return (
            AttemptOutcome::ConnectFailure,
            ResponseFlag::UpstreamConnectionFailure,
        );
    }
    match std::error::Error::source(e).and_then(|s| s.downcast_ref::<hyper::Error>()) {
        Some(h) => classify_hyper(h),
        None => (
            AttemptOutcome::Reset,
            ResponseFlag::UpstreamConnectionTermination,
        ),
    }
}

fn classify_hyper(e: &hyper::Error) -> (AttemptOutcome, ResponseFlag) {
    let reset = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        });
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() || reset {
        (
            AttemptOutcome::ConnectFailure,
            ResponseFlag::UpstreamConnectionFailure,
        )
    } else {
        (
            AttemptOutcome::Reset,
            ResponseFlag::UpstreamConnectionTermination,
        )
    }
}
