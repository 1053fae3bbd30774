//! Istio's mesh configuration: the `mesh` key of the ConfigMap `istio` in `istio-system`
//! (what `meshConfig` in an IstioOperator or the Helm values renders to). Only the fields
//! the mesh acts on are read; the rest of Istio's many settings are accepted and ignored.

use serde::{Deserialize, Serialize};

/// The ConfigMap holding the mesh configuration, as istiod reads it.
pub const MESH_CONFIG_MAP: (&str, &str) = ("istio-system", "istio");
/// Its key holding the YAML text.
pub const MESH_CONFIG_KEY: &str = "mesh";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Named backends for telemetry (Istio's `extensionProviders`); only `opentelemetry`
    /// ones are acted on, others are accepted and ignored.
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// The providers used when no `Telemetry` resource says otherwise.
    #[serde(default)]
    pub default_providers: DefaultProviders,
    /// The settings every proxy starts from (Istio's `ProxyConfig`); only `tracing.sampling`
    /// is read.
    #[serde(default)]
    pub default_config: ProxyConfig,
}

/// Istio's percentage of new traces sampled when `defaultConfig.tracing.sampling` is unset
/// (pilot's `PILOT_TRACE_SAMPLING` default, 1.0; Istio's demo profile sets 100).
pub const DEFAULT_TRACE_SAMPLING_PERCENT: f64 = 1.0;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    #[serde(default)]
    pub tracing: ProxyTracing,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyTracing {
    /// Percentage (0.0–100.0) of requests without a sampling decision that start a sampled
    /// trace. Requests whose caller decided (`traceparent` flags, `x-b3-sampled`) keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionProvider {
    pub name: String,
    /// Traces over OTLP/gRPC. Other kinds (`prometheus`, `zipkin`, `envoyFileAccessLog`...)
    /// parse and are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetryProvider>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTelemetryProvider {
    /// The collector's host: a Service FQDN (`otel-collector.observability.svc.cluster.local`)
    /// or an address.
    pub service: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultProviders {
    #[serde(default)]
    pub tracing: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

/// What happens to a connection to a destination the mesh does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Passed through (Istio's default).
    #[default]
    AllowAny,
    /// Refused: only Services, mesh workloads and ServiceEntry hosts are reachable.
    RegistryOnly,
}

impl MeshConfig {
    /// The OTLP/gRPC collector traces go to (`host:port`): the first `defaultProviders.tracing`
    /// name that is an `opentelemetry` provider. None: tracing is off.
    pub fn tracing_collector(&self) -> Option<String> {
        self.default_providers.tracing.iter().find_map(|name| {
            let provider = self.extension_providers.iter().find(|p| &p.name == name)?;
            let otel = provider.opentelemetry.as_ref()?;
            let host = match otel.service.parse::<std::net::Ipv6Addr>() {
                Ok(v6) => format!("[{v6}]"),
                Err(_) => otel.service.clone(),
            };
            Some(format!("{host}:{}", otel.port))
        })
    }

    /// The percentage of new traces that are sampled ([`parse`](Self::parse) refuses one
    /// outside 0–100).
    pub fn trace_sampling_percent(&self) -> f64 {
        self.default_config
            .tracing
            .sampling
            .unwrap_or(DEFAULT_TRACE_SAMPLING_PERCENT)
    }

    /// Parses the `mesh` text; the error names the field.
    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        let mesh: MeshConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        match mesh.default_config.tracing.sampling {
            Some(p) if !(0.0..=100.0).contains(&p) => Err(format!(
                "defaultConfig.tracing.sampling: {p} is not a percentage (0.0 to 100.0)"
            )),
            _ => Ok(mesh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_only_is_read_and_other_settings_are_ignored() {
        let text = "accessLogFile: /dev/stdout\noutboundTrafficPolicy:\n  mode: REGISTRY_ONLY\ndefaultConfig:\n  holdApplicationUntilProxyStarts: true\n";
        let mesh = MeshConfig::parse(text).unwrap();
        assert_eq!(
            mesh.outbound_traffic_policy.mode,
            OutboundMode::RegistryOnly
        );
        assert_eq!(MeshConfig::parse("").unwrap(), MeshConfig::default());
        let err = MeshConfig::parse("outboundTrafficPolicy: {mode: SOMETIMES}").unwrap_err();
        assert!(
            err.contains("SOMETIMES") || err.contains("variant"),
            "{err}"
        );
    }

    #[test]
    fn the_tracing_collector_is_the_default_opentelemetry_provider() {
        let text = "extensionProviders:\n- name: prom\n  prometheus: {}\n- name: otel\n  opentelemetry:\n    service: otel-collector.observability.svc.cluster.local\n    port: 4317\ndefaultProviders:\n  tracing: [otel]\n  metrics: [prom]\n";
        let mesh = MeshConfig::parse(text).unwrap();
        assert_eq!(
            mesh.tracing_collector().as_deref(),
            Some("otel-collector.observability.svc.cluster.local:4317")
        );
        // A provider that exists but is not the default: tracing stays off.
        let off = MeshConfig::parse(&text.replace("tracing: [otel]", "tracing: []")).unwrap();
        assert_eq!(off.tracing_collector(), None);
        let err =
            MeshConfig::parse("extensionProviders:\n- name: otel\n  opentelemetry: {port: 4317}\n")
                .unwrap_err();
        assert!(err.contains("service"), "{err}");
    }

    #[test]
    fn trace_sampling_defaults_to_istios_one_percent_and_is_read_from_default_config() {
        assert_eq!(MeshConfig::default().trace_sampling_percent(), 1.0);
        let all = MeshConfig::parse("defaultConfig:\n  tracing:\n    sampling: 100\n").unwrap();
        assert_eq!(all.trace_sampling_percent(), 100.0);
        let err = MeshConfig::parse("defaultConfig: {tracing: {sampling: 250}}").unwrap_err();
        assert!(err.contains("defaultConfig.tracing.sampling"), "{err}");
    }
}
