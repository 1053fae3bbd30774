//! HTTP/1.1 server for the local API (see the table in `api`).
use std::{path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::ApiError;
use crate::{
    agent::Agent,
    pod::{PodKey, PodSpec},
};

/// Pod specs larger than this are refused (one is a few hundred bytes).
const MAX_POD_SPEC: usize = 64 * 1024;
/// Applied configuration larger than this is refused.
const MAX_CONFIG: usize = 8 * 1024 * 1024;

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

pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                continue;
            }
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, agent.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "api connection ended with an error");
            }
        });
    }
}

type Answer = Response<Full<Bytes>>;

async fn handle(
    req: Request<Incoming>,
    agent: Arc<Agent>,
) -> Result<Answer, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (&method, segments.as_slice()) {
        (&Method::GET, ["v1", "status"]) => json(StatusCode::OK, &agent.status().await),
        (&Method::GET, ["v1", "pods"]) => json(StatusCode::OK, &agent.pods().await),
        (&Method::GET, ["metrics"]) => metrics(&agent),
        (&Method::GET, ["v1", "config_dump"]) => response(
            StatusCode::OK,
            agent.config_store().snapshot().to_json().into_bytes(),
        ),
        (&Method::POST, ["v1", "config"]) => apply_config(req, &agent).await,
        (&Method::POST, ["v1", "pods"]) => match read_json::<PodSpec>(req).await {
            Ok(spec) => match agent.add_pod(spec).await {
                Ok(()) => json(StatusCode::CREATED, &serde_json::json!({"enrolled": true})),
                Err(e) => error(status(e.http_status()), e.to_string()),
            },
            Err((code, message)) => error(code, message),
        },
        (&Method::DELETE, ["v1", "pods", namespace, name]) => {
            let key = PodKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            match agent.remove_pod(&key).await {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({"removed": true})),
                Err(e) => error(status(e.http_status()), e.to_string()),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        ),
    };
    Ok(answer)
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the request body (at most {limit} bytes): {e}"),
            )
        })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, (StatusCode, String)> {
    let body = read_body(req, MAX_POD_SPEC).await?;
    serde_json::from_slice(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed pod spec: {e}")))
}

/// `POST /v1/config?file=NAME` with multi-document YAML: the objects replace what an
/// earlier apply of the same NAME gave. Refused input leaves the running snapshot alone
/// and the answer lists every error (file, line, object, field).
async fn apply_config(req: Request<Incoming>, agent: &Agent) -> Answer {
    let name = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("file=")))
        .unwrap_or("applied.yaml")
        .to_string();
    let body = match read_body(req, MAX_CONFIG).await {
        Ok(body) => body,
        Err((code, message)) => return error(code, message),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, format!("{name}: not UTF-8 text"));
    };
    let load = mesh_config::yaml::load_str(
        text,
        Some(std::path::Path::new(&name)),
        &mesh_config::LoadOptions::default(),
    );
    if !load.errors.is_empty() {
        let lines: Vec<String> = load.errors.iter().map(ToString::to_string).collect();
        return error(StatusCode::BAD_REQUEST, lines.join("\n"));
    }
    let objects = load.objects.len();
    let update = mesh_config::store::UnitUpdate {
        unit: name,
        change: mesh_config::store::UnitChange::Set(load.objects),
    };
    match agent.config_store().apply("apply", vec![update]) {
        Ok(_) => json(
            StatusCode::OK,
            &serde_json::json!({
                "applied": objects,
                "generation": agent.config_store().generation(),
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

/// Serves `GET /metrics` (and nothing else: enrollment stays on the unix socket) on a TCP
/// listener, for Prometheus to scrape (`run --metrics-addr 0.0.0.0:15020`).
pub async fn serve_metrics(listener: tokio::net::TcpListener, agent: Arc<Agent>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let agent = agent.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(match (req.method(), req.uri().path()) {
                        (&Method::GET, "/metrics") => metrics(&agent),
                        _ => error(
                            StatusCode::NOT_FOUND,
                            "only GET /metrics is served here".into(),
                        ),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
