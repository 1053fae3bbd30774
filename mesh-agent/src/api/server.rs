//! HTTP/1.1 server for the local API (see the table in `api`), within budgets: at most
//! [`ApiLimits::connections`] connections at once (more are answered 503 and closed), request
//! heads of at most [`ApiLimits::header_bytes`] and [`ApiLimits::headers`] headers (431),
//! read within [`ApiLimits::header_read_timeout`], and bodies of at most
//! [`ApiLimits::pod_spec_bytes`] / [`ApiLimits::config_bytes`] (413). Config posts are
//! read and parsed one at a time, off the runtime's threads, so concurrent posts cannot
//! multiply the memory one may take. Each refusal is counted in
//! `mesh_api_refused_total{reason}`.
use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::{
    ApiError,
    request::{self, Route},
};
use crate::{accept::AcceptBackoff, agent::Agent, telemetry::metrics::ApiRefusedLabels};

/// The API's budgets.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Connections served at once (the CNI plugin and the CLI need a handful).
    pub connections: usize,
    /// Request line plus headers, in bytes.
    pub header_bytes: usize,
    /// Number of request headers.
    pub headers: usize,
    /// Time a client has to send a request's head.
    pub header_read_timeout: Duration,
    /// Body of an enrollment (one pod spec is a few hundred bytes).
    pub pod_spec_bytes: usize,
    /// Body of a config post: the YAML loader's own input budget.
    pub config_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            connections: 64,
            header_bytes: 16 * 1024,
            headers: 32,
            header_read_timeout: Duration::from_secs(10),
            pod_spec_bytes: 64 * 1024,
            config_bytes: mesh_config::yaml::limits::DEFAULT_INPUT_BYTES,
        }
    }
}

/// Binds the socket (replacing a stale one from a previous run) and serves until aborted.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// What every connection of the API shares.
struct Server {
    agent: Arc<Agent>,
    limits: ApiLimits,
    /// One config post read and parsed at a time.
    config_apply: Semaphore,
}

impl Server {
    fn refused(&self, reason: &'static str) {
        self.agent
            .metrics()
            .api_refused
            .get_or_create(&ApiRefusedLabels { reason })
            .inc();
    }
}

pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    serve_with(listener, agent, ApiLimits::default()).await
}

pub async fn serve_with(listener: UnixListener, agent: Arc<Agent>, limits: ApiLimits) {
    let connections = Arc::new(Semaphore::new(limits.connections));
    let mut backoff = AcceptBackoff::new("api", "agent", &agent.metrics().accept_errors);
    let server = Arc::new(Server {
        agent,
        limits,
        config_apply: Semaphore::new(1),
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.accepted();
                stream
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            server.refused("too_many_connections");
            refuse_busy(&stream, limits.connections);
            continue;
        };
        tokio::spawn(serve_connection(stream, server.clone(), permit));
    }
}

/// Answers 503 on a connection over the limit and closes it, inline: spawning a task per
/// refused connection would let a flood grow without bound. The answer fits in the
/// socket's buffer (a unix socket delivers it even though the request is never read).
fn refuse_busy(stream: &UnixStream, limit: usize) {
    let body = serde_json::to_vec(&ApiError {
        error: format!("too many connections to the agent's API (at most {limit}); retry later"),
    })
    .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    );
    let mut answer = head.into_bytes();
    answer.extend_from_slice(&body);
    let _ = stream.try_write(&answer);
}

async fn serve_connection(stream: UnixStream, server: Arc<Server>, _permit: OwnedSemaphorePermit) {
    let limits = server.limits;
    let service = {
        let server = server.clone();
        service_fn(move |req| handle(req, server.clone()))
    };
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.header_bytes)
        .max_headers(limits.headers)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        if e.is_parse_too_large() {
            // hyper has answered 431.
            server.refused("headers_too_large");
        }
        tracing::debug!(error = %e, "api connection ended with an error");
    }
}

type Answer = Response<Full<Bytes>>;

async fn handle(
    req: Request<Incoming>,
    server: Arc<Server>,
) -> Result<Answer, std::convert::Infallible> {
    let agent = &server.agent;
    let route = Route::parse(req.method().as_str(), req.uri().path(), req.uri().query());
    let answer = match route {
        Route::Status => json(StatusCode::OK, &agent.status().await),
        Route::Pods => json(StatusCode::OK, &agent.pods().await),
        Route::Metrics => metrics(agent),
        Route::ConfigDump => response(
            StatusCode::OK,
            agent.config_store().snapshot().to_json().into_bytes(),
        ),
        Route::ApplyConfig { file } => apply_config(req, file, &server).await,
        Route::Enroll => {
            let decoded = read_body(req, server.limits.pod_spec_bytes, &server)
                .await
                .and_then(|body| {
                    request::decode_pod_spec(&body).map_err(|e| (StatusCode::BAD_REQUEST, e))
                });
            match decoded {
                Ok(spec) => match agent.add_pod(spec).await {
                    Ok(()) => json(StatusCode::CREATED, &serde_json::json!({"enrolled": true})),
                    Err(e) => error(status(e.http_status()), e.to_string()),
                },
                Err((code, message)) => error(code, message),
            }
        }
        Route::CniAdd => cni(req, &server, true).await,
        Route::CniCheck => cni(req, &server, false).await,
        Route::Remove(key) => match agent.remove_pod(&key).await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"removed": true})),
            Err(e) => error(status(e.http_status()), e.to_string()),
        },
        Route::NotFound => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {}", req.method(), req.uri().path()),
        ),
    };
    Ok(answer)
}

/// The CNI plugin's ADD (`add`) or CHECK: the agent's decision and whether the pod is
/// enrolled, as a `cni::CniAnswer`.
async fn cni(req: Request<Incoming>, server: &Server, add: bool) -> Answer {
    let pod = match read_body(req, server.limits.pod_spec_bytes, server)
        .await
        .and_then(|body| request::decode_cni_pod(&body).map_err(|e| (StatusCode::BAD_REQUEST, e)))
    {
        Ok(pod) => pod,
        Err((code, message)) => return error(code, message),
    };
    if !add {
        return json(StatusCode::OK, &server.agent.cni_check(pod).await);
    }
    match server.agent.cni_add(pod).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(e) => error(status(e.http_status()), e.to_string()),
    }
}

/// The whole body, refused with 413 (and counted) past `limit`: at once when the declared
/// length says so, else as soon as that many bytes have come.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    server: &Server,
) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        server.refused("body_too_large");
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("reading the request body: {e}"),
        )),
    }
}

/// `POST /v1/config?file=NAME` with multi-document YAML: the objects replace what an
/// earlier apply of the same NAME gave. Refused input leaves the running snapshot alone
/// and the answer lists every error (file, line, object, field); it is counted by the
/// store (`mesh_config_errors_total`, and per limit for inputs over a budget).
async fn apply_config(req: Request<Incoming>, name: String, server: &Server) -> Answer {
    // Held until the objects are applied: one body in memory and one parse at a time.
    let Ok(_permit) = server.config_apply.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    };
    let body = match read_body(req, server.limits.config_bytes, server).await {
        Ok(body) => body,
        Err((code, message)) => return error(code, message),
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, format!("{name}: not UTF-8 text"));
    };
    let file = std::path::PathBuf::from(&name);
    // Parsing a few MiB takes a while: not on the runtime's worker threads.
    let parsed = tokio::task::spawn_blocking(move || {
        mesh_config::yaml::load_str(&text, Some(&file), &mesh_config::LoadOptions::default())
    })
    .await;
    let load = match parsed {
        Ok(load) => load,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: {e}")),
    };
    let store = server.agent.config_store();
    if !load.errors.is_empty() {
        store.reject(&load.errors);
        let lines: Vec<String> = load.errors.iter().map(ToString::to_string).collect();
        return error(StatusCode::BAD_REQUEST, lines.join("\n"));
    }
    let objects = load.objects.len();
    let update = mesh_config::store::UnitUpdate {
        unit: name,
        change: mesh_config::store::UnitChange::Set(load.objects),
    };
    match store.apply("apply", vec![update]) {
        Ok(_) => json(
            StatusCode::OK,
            &serde_json::json!({
                "applied": objects,
                "generation": store.generation(),
                "warnings": load.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json(code: StatusCode, value: &impl serde::Serialize) -> Answer {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => response(code, body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn error(code: StatusCode, message: String) -> Answer {
    let body = serde_json::to_vec(&ApiError { error: message }).unwrap_or_default();
    response(code, body)
}

fn response(code: StatusCode, body: Vec<u8>) -> Answer {
    response_of_type(code, body, "application/json")
}

fn response_of_type(code: StatusCode, body: Vec<u8>, content_type: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = code;
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    answer
}

fn metrics(agent: &Agent) -> Answer {
    response_of_type(
        StatusCode::OK,
        agent.metrics_text().into_bytes(),
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// Serves `GET /metrics` and `GET /healthz/ready` (nothing else: enrollment stays on the
/// unix socket) on a TCP listener, for Prometheus to scrape and the kubelet to probe
/// (`run --metrics-addr 0.0.0.0:15020 --readiness-addr 0.0.0.0:15021`). Connections
/// over the API's limit are closed at once.
pub async fn serve_metrics(listener: tokio::net::TcpListener, agent: Arc<Agent>) {
    let limits = ApiLimits::default();
    let connections = Arc::new(Semaphore::new(limits.connections));
    let mut backoff = AcceptBackoff::new("metrics", "agent", &agent.metrics().accept_errors);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.accepted();
                stream
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            agent
                .metrics()
                .api_refused
                .get_or_create(&ApiRefusedLabels {
                    reason: "too_many_connections",
                })
                .inc();
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let agent = agent.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(match (req.method(), req.uri().path()) {
                        (&hyper::Method::GET, "/metrics") => metrics(&agent),
                        // Answering at all means the agent is up: listeners open, pods
                        // of the previous run restored.
                        (&hyper::Method::GET, "/healthz/ready") => {
                            response_of_type(StatusCode::OK, b"ready\n".to_vec(), "text/plain")
                        }
                        _ => error(
                            StatusCode::NOT_FOUND,
                            "only GET /metrics and /healthz/ready are served here".into(),
                        ),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(limits.header_bytes)
                .max_headers(limits.headers)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
