//! Per-request telemetry with Istio's names and labels, so Istio's dashboards read it:
//! `istio_requests_total` and `istio_request_duration_milliseconds` (Istio's buckets), and
//! one access log line per request (Envoy's fields, `key=value`). A [`RequestRecord`] is
//! filled in as the request goes and records itself when dropped, so no early return
//! forgets a request. The duration is measured to the response headers (a streamed body
//! is not waited for). When the mesh config names a tracing collector, the record also
//! becomes this proxy's server span and, if it went upstream, its client span
//! ([`crate::telemetry::spans`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mesh_config::canonical::TelemetryNames;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::trace::TraceContext;
use crate::telemetry::spans::{SpanExporter, SpanRecord, attribute, int_attribute, unix_nanos};

/// Istio's standard request labels (the ones this proxy knows).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` at a gateway (Istio's gateways report as the source), `waypoint` at a
    /// waypoint.
    pub reporter: &'static str,
    /// The client at a waypoint; the gateway itself at a gateway.
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    /// `cluster.local/ns/x/sa/y`, `unknown` when the client is not a mesh workload.
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_principal: String,
    /// The destination host (FQDN), or `unknown` when nothing was routed.
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    /// `http` or `grpc`.
    pub request_protocol: &'static str,
    pub response_code: u16,
    /// Envoy's flags, `-` when none.
    pub response_flags: &'static str,
}

/// Istio's default buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

/// Buckets for `istio_request_bytes` / `istio_response_bytes` (powers of ten, 1 B to 10 MB).
const SIZE_BUCKETS: [f64; 8] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7];

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The proxy's registry.
pub struct HttpMetrics {
    registry: Registry,
    /// Request spans, to the collector the mesh config names.
    pub spans: SpanExporter,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    /// The gateway's TCP, terminated-TLS and passthrough connections ([`super::tcp`]).
    pub(super) tcp_opened: Family<TcpLabels, Counter>,
    pub(super) tcp_closed: Family<TcpLabels, Counter>,
    pub(super) tcp_sent: Family<TcpLabels, Counter>,
    pub(super) tcp_received: Family<TcpLabels, Counter>,
}

/// Istio's labels of `istio_tcp_*` (the ones a gateway knows of a byte stream).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    /// The destination host (FQDN), or `unknown` when nothing was routed.
    pub destination_service: String,
    /// `tcp`.
    pub request_protocol: &'static str,
    /// Envoy's flags, `-` when none.
    pub response_flags: &'static str,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = HistogramFamily::new_with_constructor(duration_histogram);
        let request_bytes = HistogramFamily::new_with_constructor(size_histogram);
        let response_bytes = HistogramFamily::new_with_constructor(size_histogram);
        // prometheus-client appends `_total` to counters.
        registry.register("istio_requests", "Requests handled", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Time to the response headers",
            durations.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes (Content-Length, or the body read for a retry)",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes (Content-Length of the response)",
            response_bytes.clone(),
        );
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened to an upstream",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed (routed or not)",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the client",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client",
            tcp_received.clone(),
        );
        let spans = SpanExporter::new(&mut registry);
        HttpMetrics {
            registry,
            spans,
            requests,
            durations,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
        }
    }
}

impl HttpMetrics {
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Who this proxy is, for the `source_*` labels (at a gateway).
#[derive(Debug, Clone)]
pub struct ProxyIdentity {
    pub reporter: &'static str,
    /// The proxy itself as telemetry names it (the source of a gateway's requests).
    pub names: TelemetryNames,
    /// The mesh's trust domain: principals are `<trust-domain>/ns/x/sa/y`.
    pub trust_domain: String,
}

/// One request's telemetry, recorded on drop.
pub struct RequestRecord<'a> {
    metrics: &'a HttpMetrics,
    identity: &'a ProxyIdentity,
    start: Instant,
    /// Wall-clock start, for the access log's `start_time`.
    started_at: SystemTime,
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub protocol: &'static str,
    /// `HTTP/1.1`, `HTTP/2`.
    pub version: &'static str,
    pub request_id: String,
    /// Body sizes, when known (`Content-Length`, or a body read whole).
    pub request_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
    /// This proxy's server span of the request (W3C / B3 context).
    pub trace: Option<TraceContext>,
    /// The span of the call to the upstream, a child of `trace`, when one was made, and
    /// when it started.
    pub client_span: Option<(TraceContext, SystemTime)>,
    /// Where spans go (`host:port`), when the mesh config turns tracing on.
    pub collector: Option<String>,
    /// Envoy's cluster name of the destination: `outbound|<port>|<subset>|<host>`.
    pub upstream_cluster: Option<String>,
    pub user_agent: Option<String>,
    pub status: u16,
    pub flags: Option<mesh_l7::ResponseFlag>,
    /// `namespace/name` of the VirtualService that routed it.
    pub route: Option<String>,
    /// The destination host (FQDN).
    pub service: Option<String>,
    /// `namespace/name` of the endpoint's workload (its key in the snapshot).
    pub workload: Option<String>,
    /// That workload as telemetry names it (its Deployment, ...).
    pub destination: Option<Arc<TelemetryNames>>,
    /// The endpoint workload's principal.
    pub destination_principal: Option<String>,
    /// The client's workload, at a waypoint.
    pub source: Option<TelemetryNames>,
    /// The client's principal, at a waypoint.
    pub source_principal: Option<String>,
    /// The address the last attempt went to.
    pub upstream: Option<String>,
    pub attempts: u32,
}

impl<'a> RequestRecord<'a> {
    pub fn new(metrics: &'a HttpMetrics, identity: &'a ProxyIdentity, peer: SocketAddr) -> Self {
        RequestRecord {
            metrics,
            identity,
            start: Instant::now(),
            started_at: SystemTime::now(),
            peer,
            method: String::new(),
            path: String::new(),
            authority: String::new(),
            protocol: "http",
            version: "HTTP/1.1",
            request_id: String::new(),
            trace: None,
            client_span: None,
            collector: None,
            upstream_cluster: None,
            user_agent: None,
            request_bytes: None,
            response_bytes: None,
            status: 0,
            flags: None,
            route: None,
            service: None,
            workload: None,
            destination: None,
            destination_principal: None,
            source: None,
            source_principal: None,
            upstream: None,
            attempts: 0,
        }
    }

    fn labels(&self) -> RequestLabels {
        let unknown = || "unknown".to_string();
        let destination = self
            .destination
            .as_deref()
            .cloned()
            .unwrap_or_else(TelemetryNames::unknown);
        let service = self.service.clone().unwrap_or_else(unknown);
        // `name.namespace.svc.<domain>`: the first two labels.
        let mut parts = service.split('.');
        let (name, ns) = match (parts.next(), parts.next()) {
            (Some(n), Some(ns)) if self.service.is_some() => (n.to_string(), ns.to_string()),
            _ => (unknown(), unknown()),
        };
        let source = self
            .source
            .clone()
            .unwrap_or_else(|| self.identity.names.clone());
        RequestLabels {
            reporter: self.identity.reporter,
            source_workload: source.workload,
            source_workload_namespace: source.namespace,
            source_canonical_service: source.canonical_service,
            source_canonical_revision: source.canonical_revision,
            source_principal: self.source_principal.clone().unwrap_or_else(unknown),
            destination_workload: destination.workload,
            destination_workload_namespace: destination.namespace,
            destination_canonical_service: destination.canonical_service,
            destination_canonical_revision: destination.canonical_revision,
            destination_principal: self.destination_principal.clone().unwrap_or_else(unknown),
            destination_service: service,
            destination_service_name: name,
            destination_service_namespace: ns,
            request_protocol: self.protocol,
            response_code: self.status,
            response_flags: self.flags.map_or("-", |f| f.as_str()),
        }
    }
}

impl RequestRecord<'_> {
    /// The server span (and the client span, when the request went upstream) to the
    /// collector, with Istio's span names and attributes.
    fn export_spans(&self, labels: &RequestLabels) {
        let (Some(collector), Some(server)) = (&self.collector, self.trace) else {
            return;
        };
        if !server.sampled {
            return;
        }
        let ended = SystemTime::now();
        let name = match &self.upstream_cluster {
            // `outbound|9080|v1|reviews.default.svc.cluster.local` → `reviews...:9080/*`.
            Some(cluster) => match cluster.split('|').collect::<Vec<_>>().as_slice() {
                [_, port, _, host] => format!("{host}:{port}/*"),
                _ => format!("{}/*", self.authority),
            },
            None => format!("{}/*", self.authority),
        };
        // The proxy as OpenTelemetry's `service.name` and Istio's `node_id`.
        let names = &self.identity.names;
        let service_name = format!("{}.{}", names.workload, names.namespace);
        let mut attributes = vec![
            attribute("istio.canonical_service", &names.canonical_service),
            attribute("istio.namespace", &names.namespace),
            attribute("istio.mesh_id", "cluster.local"),
            attribute("component", "proxy"),
            attribute("node_id", &service_name),
            attribute("guid:x-request-id", &self.request_id),
            attribute("http.url", format!("{}{}", self.authority, self.path)),
            attribute("http.method", &self.method),
            attribute("http.protocol", self.version),
            int_attribute("http.status_code", i64::from(self.status)),
            attribute("response_flags", labels.response_flags),
            attribute(
                "upstream_cluster",
                self.upstream_cluster.as_deref().unwrap_or("-"),
            ),
            attribute(
                "upstream_cluster.name",
                self.upstream_cluster.as_deref().unwrap_or("-"),
            ),
            attribute("downstream_cluster", &labels.source_workload),
            attribute("peer.address", self.peer.ip().to_string()),
            attribute("user_agent", self.user_agent.as_deref().unwrap_or("-")),
            int_attribute("request_size", self.request_bytes.unwrap_or(0) as i64),
            int_attribute("response_size", self.response_bytes.unwrap_or(0) as i64),
        ];
        if let Some(upstream) = &self.upstream {
            attributes.push(attribute("upstream_host", upstream));
        }
        let failed = self.status >= 500 || self.status == 0;
        if failed {
            attributes.push(attribute("error", "true"));
        }
        let status = Some(Status {
            code: if failed {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Unset as i32
            },
            message: String::new(),
        });
        let span = |ctx: &TraceContext, kind: SpanKind, start: SystemTime| Span {
            trace_id: ctx.trace_id.to_be_bytes().to_vec(),
            span_id: ctx.span_id.to_be_bytes().to_vec(),
            parent_span_id: ctx
                .parent_id
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            name: name.clone(),
            kind: kind as i32,
            start_time_unix_nano: unix_nanos(start),
            end_time_unix_nano: unix_nanos(ended),
            attributes: attributes.clone(),
            status: status.clone(),
            ..Default::default()
        };
        let record = |span| SpanRecord {
            collector: collector.clone(),
            service_name: service_name.clone(),
            span,
        };
        self.metrics
            .spans
            .record(record(span(&server, SpanKind::Server, self.started_at)));
        if let Some((client, started)) = &self.client_span {
            self.metrics
                .spans
                .record(record(span(client, SpanKind::Client, *started)));
        }
    }
}

/// `namespace/name` → (namespace, name); `unknown` for what is missing.
impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let labels = self.labels();
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
        if let Some(bytes) = self.request_bytes {
            self.metrics
                .request_bytes
                .get_or_create(&labels)
                .observe(bytes as f64);
        }
        if let Some(bytes) = self.response_bytes {
            self.metrics
                .response_bytes
                .get_or_create(&labels)
                .observe(bytes as f64);
        }
        let start_time = crate::telemetry::rfc3339(self.started_at);
        tracing::info!(
            target: "access",
            start_time = %start_time,
            method = %self.method,
            path = %self.path,
            protocol = self.version,
            authority = %self.authority,
            response_code = self.status,
            response_flags = labels.response_flags,
            duration_ms = elapsed.as_millis() as u64,
            bytes_received = self.request_bytes.unwrap_or(0),
            bytes_sent = self.response_bytes.unwrap_or(0),
            upstream_host = self.upstream.as_deref().unwrap_or("-"),
            upstream_cluster = %labels.destination_service,
            route_name = self.route.as_deref().unwrap_or("-"),
            attempts = self.attempts,
            downstream_remote_address = %self.peer,
            x_request_id = %self.request_id,
            trace_id = %self.trace.map_or_else(|| "-".to_string(), |t| format!("{:032x}", t.trace_id)),
            "request"
        );
        self.export_spans(&labels);
    }
}
