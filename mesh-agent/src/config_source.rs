//! Where a process of the mesh reads its configuration: a watched directory of YAML (the
//! lab, the demo, a host), the Kubernetes API (a cluster: in-cluster credentials or a
//! kubeconfig), or both into one store. The node agent, the gateway and the waypoint all
//! start theirs here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use mesh_config::{ConfigStore, DirSource, KubeSource};

#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    pub dir: Option<PathBuf>,
    /// `Some(None)`: KUBECONFIG, `~/.kube/config` or in-cluster; `Some(Some(path))`: that
    /// kubeconfig.
    pub kubernetes: Option<Option<PathBuf>>,
}

/// The sources' watchers, feeding their store while this value lives.
pub struct Watching {
    _dir: Option<DirSource>,
    _kube: Option<KubeSource>,
}

impl ConfigSources {
    /// Loads every source into `store` and keeps watching them.
    pub async fn watch(&self, store: &Arc<ConfigStore>) -> anyhow::Result<Watching> {
        let dir = match &self.dir {
            Some(dir) => Some(
                DirSource::spawn(dir.clone(), store.clone())
                    .with_context(|| format!("watching the config directory {}", dir.display()))?,
            ),
            None => None,
        };
        let kube = match &self.kubernetes {
            Some(kubeconfig) => {
                let client = mesh_config::source::kube::kube_client(kubeconfig.as_deref())
                    .await
                    .context("connecting to the Kubernetes API")?;
                Some(
                    KubeSource::spawn(client, store.clone())
                        .context("watching the Kubernetes API")?,
                )
            }
            None => None,
        };
        Ok(Watching {
            _dir: dir,
            _kube: kube,
        })
    }
}
