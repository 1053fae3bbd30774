//! Prometheus metrics with Istio's names and labels, so existing dashboards (Kiali,
//! Grafana's Istio boards) read them: `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total`; plus the configuration store's health.
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
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    /// The Service FQDN, or `unknown` when the destination was not a Service VIP.
    pub destination_service: String,
    /// `none` until mutual TLS: the agent says so rather than leave the label out.
    pub connection_security_policy: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub tcp_opened: Family<TcpLabels, Counter>,
    pub tcp_closed: Family<TcpLabels, Counter>,
    pub tcp_sent: Family<TcpLabels, Counter>,
    pub tcp_received: Family<TcpLabels, Counter>,
    config_errors: Counter,
    config_generation: Gauge,
    config_invalid_inputs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        let config_errors = Counter::default();
        let config_generation = Gauge::default();
        let config_invalid_inputs = Gauge::default();
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
        Metrics {
            registry,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            config_errors,
            config_generation,
            config_invalid_inputs,
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
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
