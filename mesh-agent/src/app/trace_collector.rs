//! `mesh-agent app trace-collector --otlp ADDR --http ADDR`: an OTLP/gRPC trace receiver
//! that keeps the last spans it was sent in memory (bounded) and serves them as traces,
//! what Jaeger's collector and query API do for Istio's addons, small enough for the demo
//! and the tests:
//! * `GET /api/traces` — the most recent traces first, each with its spans (ids in hex,
//!   parent, name, kind, the resource's `service.name`, times, attributes as strings);
//! * `GET /api/traces/<trace id>` — one trace;
//! * `GET /healthz` — 200.
//!
//! When full, the oldest spans go first, so memory stays bounded whatever is sent.
use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::net::TcpListener;

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value},
};
use serde::Serialize;
use serde_json::json;

use super::serve;

/// Spans kept at most.
pub const MAX_SPANS: usize = 20_000;
/// Traces listed by `GET /api/traces` at most.
const MAX_LISTED: usize = 100;

#[derive(Clone, Debug, Serialize)]
pub struct StoredSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root.
    pub parent_span_id: String,
    pub name: String,
    /// `server`, `client`, ...
    pub kind: &'static str,
    /// The resource's `service.name`.
    pub service: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct SpanStore {
    spans: Mutex<VecDeque<StoredSpan>>,
}

impl SpanStore {
    fn add(&self, request: ExportTraceServiceRequest) -> usize {
        let mut added = Vec::new();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(text)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    added.push(StoredSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: kind_name(span.kind),
                        service: service.clone(),
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    kv.value.as_ref().map(text).unwrap_or_default(),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
        let count = added.len();
        let Ok(mut spans) = self.spans.lock() else {
            return 0;
        };
        spans.extend(added);
        while spans.len() > MAX_SPANS {
            spans.pop_front();
        }
        count
    }

    /// Traces, the most recently ended first; spans of each by start time.
    pub fn traces(&self) -> Vec<serde_json::Value> {
        let Ok(spans) = self.spans.lock() else {
            return Vec::new();
        };
        let mut by_trace: BTreeMap<&str, Vec<&StoredSpan>> = BTreeMap::new();
        for span in spans.iter() {
            by_trace.entry(&span.trace_id).or_default().push(span);
        }
        let mut traces: Vec<(u64, serde_json::Value)> = by_trace
            .into_iter()
            .map(|(id, mut spans)| {
                spans.sort_by_key(|s| s.start_unix_nano);
                let last = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
                (last, json!({"trace_id": id, "spans": spans}))
            })
            .collect();
        traces.sort_by_key(|t| std::cmp::Reverse(t.0));
        traces
            .into_iter()
            .take(MAX_LISTED)
            .map(|(_, t)| t)
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

struct Receiver(Arc<SpanStore>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let count = self.0.add(request.into_inner());
        tracing::debug!(spans = count, "spans received");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC on `otlp` and the query API on `http` until one fails.
pub async fn run(otlp: SocketAddr, http: SocketAddr) -> anyhow::Result<()> {
    let otlp_listener = TcpListener::bind(otlp).await?;
    let http_listener = TcpListener::bind(http).await?;
    tracing::info!(%otlp, %http, "trace collector listening");
    serve(otlp_listener, http_listener).await
}

/// The collector on listeners made by the caller (the demo opens the OTLP one inside the
/// lab, where the gateway and waypoints export, and the query one on the host).
pub async fn serve(otlp: TcpListener, http: TcpListener) -> anyhow::Result<()> {
    let store = Arc::new(SpanStore::default());
    let grpc = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(store.clone())))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(otlp));
    let query = serve::serve_on(http, move |req, _peer| {
        let store = store.clone();
        async move {
            let path = req.uri().path();
            if path == "/healthz" {
                return serve::reply(200, "text/plain", "ok\n");
            }
            let traces = store.traces();
            match path.strip_prefix("/api/traces") {
                Some("" | "/") => serve::json(200, &json!({ "traces": traces })),
                Some(id) => {
                    let id = id.trim_start_matches('/');
                    match traces.into_iter().find(|t| t["trace_id"] == id) {
                        Some(trace) => serve::json(200, &trace),
                        None => serve::json(404, &json!({"error": format!("no trace {id}")})),
                    }
                }
                None => serve::json(404, &json!({"error": "not found"})),
            }
        }
    });
    tokio::select! {
        served = grpc => served?,
        served = query => served?,
    }
    Ok(())
}
