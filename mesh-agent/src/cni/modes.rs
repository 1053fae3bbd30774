//! Which pods the mesh captures, as the node agent knows it from its configuration
//! (Istio's ambient labels: `istio.io/dataplane-mode: ambient` on a Namespace, `ambient` or
//! `none` on a Pod). One decision, used twice: by the agent when the CNI plugin asks, and by
//! the plugin itself from the copy the agent keeps on disk when the agent is down, so an
//! `ADD` fails closed for a pod that must be captured and goes ahead for the rest.
use std::{collections::BTreeMap, io, path::Path};

use mesh_config::Snapshot;
use serde::{Deserialize, Serialize};

/// Whether a pod is captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Captured: enrolled with the node agent.
    Ambient,
    /// Left alone (`istio.io/dataplane-mode: none`, or a namespace outside the mesh).
    None,
}

/// The decisions the configuration implies, by namespace and by pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneModes {
    /// Every namespace the configuration knows: its pods' mode unless a pod says otherwise.
    pub namespaces: BTreeMap<String, Mode>,
    /// Pods the configuration lists (`namespace/name`), with their pod label applied.
    pub pods: BTreeMap<String, Mode>,
}

fn mode(ambient: bool) -> Mode {
    if ambient { Mode::Ambient } else { Mode::None }
}

impl DataplaneModes {
    /// What the snapshot says: its namespaces, and its Pod objects (not the stand-ins a
    /// Deployment's template makes off-cluster: a CNI call is about a real pod).
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        DataplaneModes {
            namespaces: snapshot
                .namespaces
                .iter()
                .map(|(name, ns)| (name.clone(), mode(ns.ambient)))
                .collect(),
            pods: snapshot
                .workloads
                .iter()
                .filter(|(_, w)| w.source == "Pod")
                .map(|(key, w)| (key.clone(), mode(w.ambient)))
                .collect(),
        }
    }

    /// The pod's own decision if the configuration lists it, else its namespace's; a pod of
    /// a namespace nobody labelled is not captured (as in Istio).
    pub fn decide(&self, namespace: &str, name: &str) -> Mode {
        self.pods
            .get(&format!("{namespace}/{name}"))
            .or_else(|| self.namespaces.get(namespace))
            .copied()
            .unwrap_or(Mode::None)
    }

    /// Reads the copy the agent wrote.
    pub fn load(path: &Path) -> io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    /// Writes the copy the plugin reads when the agent is down (through a rename, so a
    /// plugin never reads half of it).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: shop, labels: {istio.io/dataplane-mode: none}}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: island, namespace: legacy, labels: {istio.io/dataplane-mode: ambient}}
spec: {containers: [{name: app, image: app}]}
";

    #[test]
    fn pod_label_then_namespace_label_then_not_captured() {
        let modes = DataplaneModes::from_snapshot(&crate::test_support::snapshot(YAML));
        assert_eq!(modes.decide("shop", "web"), Mode::Ambient);
        assert_eq!(modes.decide("shop", "batch"), Mode::None, "pod opts out");
        // A pod the agent has not heard of yet: its namespace decides.
        assert_eq!(modes.decide("shop", "new-pod"), Mode::Ambient);
        assert_eq!(
            modes.decide("legacy", "island"),
            Mode::Ambient,
            "pod opts in"
        );
        assert_eq!(modes.decide("legacy", "other"), Mode::None);
        assert_eq!(modes.decide("unknown", "x"), Mode::None);
    }

    #[test]
    fn the_saved_copy_decides_the_same() {
        let modes = DataplaneModes::from_snapshot(&crate::test_support::snapshot(YAML));
        let path = std::env::temp_dir().join(format!("mesh-modes-{}.json", std::process::id()));
        modes.save(&path).unwrap();
        let loaded = DataplaneModes::load(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(loaded.unwrap(), modes);
    }
}
