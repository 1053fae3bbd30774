//! Spans of the waypoint and the gateway, exported over OTLP/gRPC to the collector Istio's
//! mesh config names (`extensionProviders[].opentelemetry` chosen by
//! `defaultProviders.tracing`; see `mesh_config::istio::mesh_config`).
//!
//! The data path never waits for the collector: a request's spans go into a bounded queue
//! with `try_send` (full: dropped and counted), and one task drains it in batches (up to
//! [`BATCH`] spans or [`FLUSH`], whichever comes first), each export bounded by
//! [`EXPORT_TIMEOUT`]; a batch the collector did not take is dropped and counted. A slow
//! or stopped collector therefore costs requests nothing but their spans.
//!
//! Wire types are the official `opentelemetry-proto` definitions (tonic client).
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::sync::mpsc;

/// Spans waiting for export at most; beyond that new ones are dropped.
pub const QUEUE: usize = 4096;
/// Spans per export call at most.
pub const BATCH: usize = 512;
/// A span waits at most this long for its batch to fill.
pub const FLUSH: Duration = Duration::from_secs(1);
/// One export call (connect included) may take this long; then its batch is dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full` (the data path did not wait) or `export_failed` (the collector did not
    /// take the batch in time).
    pub reason: &'static str,
}

/// One span and where it goes.
pub struct SpanRecord {
    /// The collector, `host:port` (plain gRPC, as Istio's `opentelemetry` provider).
    pub collector: String,
    /// `service.name` of the resource the span belongs to: the proxy's canonical service
    /// and namespace, as Istio writes it (`istio-ingressgateway.istio-system`).
    pub service_name: String,
    pub span: Span,
}

/// The proxy's side of the exporter: cheap to call from any request.
pub struct SpanExporter {
    tx: mpsc::Sender<SpanRecord>,
    /// The receiver, until the first span starts the export task (in the runtime that
    /// handles requests, so construction needs none).
    rx: Mutex<Option<mpsc::Receiver<SpanRecord>>>,
    exported: Counter,
    dropped: Family<DropLabels, Counter>,
}

impl SpanExporter {
    /// Registers `mesh_spans_exported_total` and `mesh_spans_dropped_total{reason}`.
    pub fn new(registry: &mut Registry) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let exported = Counter::default();
        let dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "mesh_spans_exported",
            "Spans the OTLP collector accepted",
            exported.clone(),
        );
        registry.register(
            "mesh_spans_dropped",
            "Spans dropped: the export queue was full, or the collector did not take them",
            dropped.clone(),
        );
        SpanExporter {
            tx,
            rx: Mutex::new(Some(rx)),
            exported,
            dropped,
        }
    }

    /// Queues one span; never waits.
    pub fn record(&self, record: SpanRecord) {
        self.start_task();
        if self.tx.try_send(record).is_err() {
            self.dropped
                .get_or_create(&DropLabels {
                    reason: "queue_full",
                })
                .inc();
        }
    }

    fn start_task(&self) {
        let Ok(mut slot) = self.rx.lock() else {
            return;
        };
        if slot.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(rx) = slot.take() {
            let task = ExportTask {
                exported: self.exported.clone(),
                dropped: self.dropped.clone(),
                clients: HashMap::new(),
            };
            runtime.spawn(task.run(rx));
        }
    }
}

struct ExportTask {
    exported: Counter,
    dropped: Family<DropLabels, Counter>,
    /// One lazily connected channel per collector.
    clients: HashMap<String, TraceServiceClient<tonic::transport::Channel>>,
}

impl ExportTask {
    async fn run(mut self, mut rx: mpsc::Receiver<SpanRecord>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + FLUSH;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(next)) => batch.push(next),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut groups: HashMap<(String, String), Vec<Span>> = HashMap::new();
            for r in batch {
                groups
                    .entry((r.collector, r.service_name))
                    .or_default()
                    .push(r.span);
            }
            for ((collector, service_name), spans) in groups {
                self.export(collector, &service_name, spans).await;
            }
        }
    }

    async fn export(&mut self, collector: String, service_name: &str, spans: Vec<Span>) {
        let count = spans.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(service_name)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "mesh-agent".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let client = match self.client(&collector) {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(%collector, error = %e, "the tracing collector's address is not usable");
                self.drop_batch(count);
                return;
            }
        };
        match tokio::time::timeout(EXPORT_TIMEOUT, client.export(request)).await {
            Ok(Ok(_)) => {
                self.exported.inc_by(count);
            }
            Ok(Err(status)) => {
                tracing::debug!(%collector, %status, spans = count, "the collector refused spans");
                self.drop_batch(count);
            }
            Err(_) => {
                tracing::debug!(%collector, spans = count, "the collector did not answer in time");
                self.drop_batch(count);
            }
        }
    }

    fn drop_batch(&self, count: u64) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: "export_failed",
            })
            .inc_by(count);
    }

    fn client(
        &mut self,
        collector: &str,
    ) -> Result<&mut TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
        use std::collections::hash_map::Entry;
        match self.clients.entry(collector.to_string()) {
            Entry::Occupied(client) => Ok(client.into_mut()),
            Entry::Vacant(slot) => {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{collector}"))?
                        .connect_timeout(EXPORT_TIMEOUT)
                        .connect_lazy();
                Ok(slot.insert(TraceServiceClient::new(channel)))
            }
        }
    }
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![attribute("service.name", service_name)],
        ..Default::default()
    }
}

/// A string attribute.
pub fn attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// Nanoseconds since the Unix epoch, as OTLP wants times.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
