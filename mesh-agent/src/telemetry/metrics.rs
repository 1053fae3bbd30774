//! Prometheus metrics with Istio's names and labels, so existing dashboards (Kiali,
//! Grafana's Istio boards) read them: `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total`; the DNS proxy's (ztunnel's names and labels:
//! `istio_dns_requests_total`, `istio_dns_upstream_requests_total`,
//! `istio_dns_upstream_failures_total`, plus `mesh_dns_cache_hits_total` and
//! `mesh_dns_cache_entries`); plus the configuration store's health and the agent's
//! own budgets: inputs over a limit (`mesh_config_limits_exceeded_total{limit}`), API
//! requests and connections refused (`mesh_api_refused_total{reason}`) and failed accepts
//! that made a listener back off (`mesh_accept_errors_total{listener,error}`).
use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of the TCP metrics (a subset of Istio's standard labels; identities come with
/// mutual TLS).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` for connections captured leaving a pod, `destination` for those entering.
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    /// The `app` (or `service.istio.io/canonical-name`) and `version` of the workload, as
    /// Kiali groups by.
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    /// `cluster.local/ns/<ns>/sa/<sa>`, or `unknown` for plaintext clients.
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    /// The destination's identity, or `unknown` outside the mesh.
    pub destination_principal: String,
    /// The Service FQDN, or `unknown` when the destination was not a Service VIP.
    pub destination_service: String,
    /// `mutual_tls` over HBONE, `none` for plain TCP.
    pub connection_security_policy: &'static str,
    /// Envoy's response flag: `-` when the connection went well, else e.g. `UF` (upstream
    /// connection failure), `UH` (no healthy upstream), `NR` (no route), `RBAC` (denied).
    pub response_flags: &'static str,
}

/// Labels of `mesh_connections_refused_total`: the precise reason behind a flag.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub direction: &'static str,
    pub reason: &'static str,
}

/// Labels of the DNS counters (ztunnel's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// `a`, `aaaa`, `srv`, ...
    pub request_query_type: String,
    /// `udp` or `tcp`.
    pub request_protocol: &'static str,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
}

/// The DNS proxy's counters.
#[derive(Default)]
pub struct DnsMetrics {
    pub requests: Family<DnsLabels, Counter>,
    pub upstream_requests: Family<DnsLabels, Counter>,
    pub upstream_failures: Family<DnsLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_entries: Gauge,
}

impl DnsMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_dns_requests",
            "DNS requests from enrolled pods",
            self.requests.clone(),
        );
        registry.register(
            "istio_dns_upstream_requests",
            "DNS requests forwarded to an upstream resolver",
            self.upstream_requests.clone(),
        );
        registry.register(
            "istio_dns_upstream_failures",
            "DNS requests no upstream resolver answered",
            self.upstream_failures.clone(),
        );
        registry.register(
            "mesh_dns_cache_hits",
            "DNS requests answered from the cache of upstream answers",
            self.cache_hits.clone(),
        );
        registry.register(
            "mesh_dns_cache_entries",
            "Upstream answers in the DNS cache",
            self.cache_entries.clone(),
        );
    }
}

/// Labels of `mesh_config_limits_exceeded_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `input_bytes`, `documents`, `depth`, `nodes`, `expanded_bytes`.
    pub limit: String,
}

/// Labels of `mesh_api_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRefusedLabels {
    /// `body_too_large`, `headers_too_large`, `too_many_connections`.
    pub reason: &'static str,
}

/// Labels of `mesh_accept_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptLabels {
    /// `api`, `metrics`, `outbound`, `inbound`, `inbound_passthrough`.
    pub listener: &'static str,
    /// The errno name (`EMFILE`, `ENFILE`, ...) or `other`.
    pub error: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub dns: Arc<DnsMetrics>,
    pub tcp_opened: Family<TcpLabels, Counter>,
    pub tcp_closed: Family<TcpLabels, Counter>,
    pub tcp_sent: Family<TcpLabels, Counter>,
    pub tcp_received: Family<TcpLabels, Counter>,
    pub refused: Family<RefusedLabels, Counter>,
    config_errors: Counter,
    config_generation: Gauge,
    config_invalid_inputs: Gauge,
    config_limits: Family<LimitLabels, Counter>,
    pub api_refused: Family<ApiRefusedLabels, Counter>,
    pub accept_errors: Family<AcceptLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        let refused = Family::<RefusedLabels, Counter>::default();
        let config_errors = Counter::default();
        let config_generation = Gauge::default();
        let config_invalid_inputs = Gauge::default();
        let config_limits = Family::<LimitLabels, Counter>::default();
        let api_refused = Family::<ApiRefusedLabels, Counter>::default();
        let accept_errors = Family::<AcceptLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent towards the destination",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the destination",
            tcp_received.clone(),
        );
        registry.register(
            "mesh_connections_refused",
            "Connections refused or failed before reaching an upstream, by reason",
            refused.clone(),
        );
        registry.register(
            "mesh_config_errors",
            "Configuration updates refused (the last good snapshot kept serving)",
            config_errors.clone(),
        );
        registry.register(
            "mesh_config_generation",
            "Configuration snapshots swapped in",
            config_generation.clone(),
        );
        registry.register(
            "mesh_config_invalid_inputs",
            "Configuration errors currently refused (0 when all input is valid)",
            config_invalid_inputs.clone(),
        );
        let dns = Arc::new(DnsMetrics::default());
        dns.register(&mut registry);
        registry.register(
            "mesh_config_limits_exceeded",
            "Configuration inputs refused for being over a budget, by limit",
            config_limits.clone(),
        );
        registry.register(
            "mesh_api_refused",
            "API connections and requests refused by a limit, by reason",
            api_refused.clone(),
        );
        registry.register(
            "mesh_accept_errors",
            "Failed accepts (the listener backs off on descriptor exhaustion), by listener and error",
            accept_errors.clone(),
        );
        Metrics {
            registry,
            dns,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            refused,
            config_errors,
            config_generation,
            config_invalid_inputs,
            config_limits,
            api_refused,
            accept_errors,
        }
    }
}

impl Metrics {
    /// The text exposition, with the configuration figures read from the store now.
    pub fn render(&self, config: &mesh_config::ConfigStore) -> String {
        let status = config.status();
        // The store counts; the counter follows it (both only grow).
        let seen = self.config_errors.get();
        self.config_errors
            .inc_by(status.errors_total.saturating_sub(seen));
        self.config_generation
            .set(i64::try_from(status.generation).unwrap_or(i64::MAX));
        self.config_invalid_inputs
            .set(i64::try_from(status.last_errors.len()).unwrap_or(i64::MAX));
        for (limit, total) in &status.limits_exceeded {
            let counter = self.config_limits.get_or_create(&LimitLabels {
                limit: limit.clone(),
            });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
