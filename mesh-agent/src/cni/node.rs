//! The node agent's side of the CNI plugin: decide the pod's mode from the configuration,
//! enroll it by its network namespace (ADD), say whether it is enrolled (CHECK), and keep
//! the modes file the plugin falls back on while the agent is down.
use std::{path::PathBuf, sync::Arc};

use mesh_config::ConfigStore;

use super::{CniAnswer, CniPod, DataplaneModes, Mode};
use crate::{
    agent::{Agent, EnrollError},
    pod::PodSpec,
};

impl Agent {
    /// CNI ADD: a pod the configuration captures is enrolled (with the service account and
    /// labels of its Pod object when the agent has it); any other is left alone.
    pub async fn cni_add(&self, pod: CniPod) -> Result<CniAnswer, EnrollError> {
        let snapshot = self.config_store().snapshot();
        let mode = DataplaneModes::from_snapshot(&snapshot).decide(&pod.namespace, &pod.name);
        tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), container = %pod.container_id, ?mode, "CNI ADD");
        if mode == Mode::None {
            return Ok(CniAnswer {
                mode,
                enrolled: false,
            });
        }
        let workload = snapshot
            .workloads
            .get(&format!("{}/{}", pod.namespace, pod.name));
        let spec = PodSpec {
            service_account: workload
                .map(|w| w.service_account.clone())
                .unwrap_or_else(|| "default".into()),
            labels: workload.map(|w| w.labels.clone()).unwrap_or_default(),
            name: pod.name,
            namespace: pod.namespace,
            netns: pod.netns,
            cgroup: None,
            ips: pod.ips,
        };
        self.add_pod(spec).await?;
        Ok(CniAnswer {
            mode,
            enrolled: true,
        })
    }

    /// CNI CHECK: the pod's mode, and whether it is enrolled with this network namespace.
    pub async fn cni_check(&self, pod: CniPod) -> CniAnswer {
        let snapshot = self.config_store().snapshot();
        let mode = DataplaneModes::from_snapshot(&snapshot).decide(&pod.namespace, &pod.name);
        let enrolled =
            self.pods().await.iter().any(|p| {
                p.namespace == pod.namespace && p.name == pod.name && p.netns == pod.netns
            });
        CniAnswer { mode, enrolled }
    }
}

/// Writes the modes file now and after every configuration change, until the store goes.
pub fn keep_modes_file(store: Arc<ConfigStore>, path: PathBuf) {
    let mut changes = store.subscribe();
    let store = Arc::downgrade(&store);
    tokio::spawn(async move {
        loop {
            let Some(current) = store.upgrade() else {
                return;
            };
            let modes = DataplaneModes::from_snapshot(&current.snapshot());
            drop(current);
            if let Err(e) = modes.save(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the dataplane modes for the CNI plugin");
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}
