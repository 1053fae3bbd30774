//! The demo's trace store, what Jaeger is in Istio's addons: the project's OTLP receiver
//! (`app trace-collector`) run inside the demo process, its OTLP/gRPC listener opened in
//! node 1's network namespace on the node's lab address (every pod on every node reaches
//! it, as a cluster's pods reach the collector's Service), its query API on the host's
//! loopback (`--traces`). Istio's mesh config pointing the gateway and the waypoints at it
//! (`extensionProviders` + `defaultProviders.tracing`) is written beside the user's YAML,
//! unless the user's configuration brings its own.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
};

use anyhow::{Context, Result};
use mesh_config::{LoadedObject, Object};
use tokio::net::TcpListener;

use crate::{app::trace_collector, pod::PodSockets};

/// The file the demo writes Istio's mesh config to, in the watched directory.
pub const MESH_CONFIG_FILE: &str = "demo-mesh-config.yaml";
pub const OTLP_PORT: u16 = 4317;

/// The running store; aborted on drop.
pub struct Traces {
    /// Where `GET /api/traces` answers (the bound address: `--traces` may ask for port 0).
    pub query: SocketAddr,
    /// Where the spans are sent, inside the lab.
    pub otlp: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Traces {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens both listeners and serves them.
pub async fn start(node_netns: &Path, node_addr: Ipv4Addr, query: SocketAddr) -> Result<Traces> {
    let otlp = SocketAddr::from((node_addr, OTLP_PORT));
    let node = PodSockets::start(node_netns, "demo-traces".into())
        .context("entering node 1's namespace for the trace receiver")?;
    let otlp_listener = node
        .listen(otlp, 1024)
        .await
        .with_context(|| format!("cannot listen on {otlp} in node 1's namespace"))?;
    let query_listener = TcpListener::bind(query)
        .await
        .with_context(|| format!("cannot listen on {query} (--traces)"))?;
    let query = query_listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = trace_collector::serve(otlp_listener, query_listener).await {
            tracing::warn!(error = %e, "demo trace store stopped");
        }
    });
    Ok(Traces { query, otlp, task })
}

/// Whether the user's configuration has Istio's mesh config (ConfigMap
/// `istio-system/istio`) of its own: then its tracing settings are the ones that apply.
pub fn has_mesh_config(objects: &[LoadedObject]) -> bool {
    objects.iter().any(|o| {
        let meta = o.object.meta();
        matches!(o.object, Object::ConfigMap(_))
            && meta.name.as_deref() == Some("istio")
            && meta.namespace.as_deref() == Some("istio-system")
    })
}

/// Istio's mesh config sending every proxy's spans to `otlp`, as an IstioOperator's
/// `meshConfig` with an `opentelemetry` extension provider renders it, sampling every
/// request as Istio's demo profile does (the default, 1%, would leave the trace view empty).
pub fn mesh_config_yaml(otlp: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\n\
         data:\n  mesh: |\n    extensionProviders:\n    - name: demo-traces\n      \
         opentelemetry:\n        service: \"{}\"\n        port: {}\n    defaultProviders:\n      \
         tracing: [demo-traces]\n    \
         defaultConfig:\n      tracing:\n        sampling: 100\n",
        otlp.ip(),
        otlp.port()
    )
}

/// Writes [`MESH_CONFIG_FILE`] into the watched directory.
pub fn write_mesh_config(dir: &Path, otlp: SocketAddr) -> Result<()> {
    Ok(super::config::write_whole(
        dir,
        MESH_CONFIG_FILE,
        &mesh_config_yaml(otlp),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_mesh_config_names_the_collector_as_istio_reads_it() {
        let otlp: SocketAddr = "198.18.0.1:4317".parse().unwrap();
        let yaml = mesh_config_yaml(otlp);
        let objects = mesh_config::load_str(&yaml, None).unwrap().objects;
        assert!(has_mesh_config(&objects), "{yaml}");
        let Object::ConfigMap(map) = &objects[0].object else {
            panic!("not a ConfigMap: {yaml}");
        };
        let text = &map.data.as_ref().unwrap()["mesh"];
        let mesh = mesh_config::istio::mesh_config::MeshConfig::parse(text).unwrap();
        assert_eq!(mesh.tracing_collector().as_deref(), Some("198.18.0.1:4317"));
        assert_eq!(mesh.trace_sampling_percent(), 100.0);
    }
}
