//! Istio's mesh configuration: the `mesh` key of the ConfigMap `istio` in `istio-system`
//! (what `meshConfig` in an IstioOperator or the Helm values renders to). Only the fields
//! the mesh acts on are read; the rest of Istio's many settings are accepted and ignored.

use serde::{Deserialize, Serialize};

/// The ConfigMap holding the mesh configuration, as istiod reads it.
pub const MESH_CONFIG_MAP: (&str, &str) = ("istio-system", "istio");
/// Its key holding the YAML text.
pub const MESH_CONFIG_KEY: &str = "mesh";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
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
    /// Parses the `mesh` text; the error names the field.
    pub fn parse(text: &str) -> Result<MeshConfig, String> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
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
}
