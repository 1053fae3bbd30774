//! Kubernetes pods into the mesh through the container runtime: the CNI plugin `mesh-cni`
//! (chained after the plugin that gives the pod its network) and the node agent's side of it.
//!
//! * `spec.rs`: the CNI wire format (environment, configuration, errors), pure.
//! * `modes.rs`: which pods are captured (Istio's ambient labels), decided from the agent's
//!   configuration, kept on disk for when the agent is down.
//! * `plugin.rs`: the plugin's commands (ADD, DEL, CHECK, STATUS, VERSION).
//! * `install.rs`: the installer that puts the plugin into a node's CNI configuration.
//! * `node.rs`: the agent's answers to the plugin (`POST /v1/cni/add`, `/v1/cni/check`) and
//!   the writer of the modes file.
//!
//! The plugin sends the pod's name, namespace, network namespace and addresses; the agent
//! decides ambient or `none` from its configuration and enrolls the pod by its network
//! namespace (the capture programs are attached per node, see `redirect/capture.rs`).
use std::{net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

pub mod install;
pub mod modes;
pub mod node;
pub mod plugin;
pub mod spec;

pub use modes::{DataplaneModes, Mode};

/// What the plugin tells the agent about a pod on ADD and CHECK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CniPod {
    pub name: String,
    pub namespace: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
    /// From the previous plugin's result.
    pub ips: Vec<IpAddr>,
    /// `CNI_CONTAINERID` (for the agent's log).
    #[serde(default)]
    pub container_id: String,
}

/// The agent's answer: the pod's mode and whether it is enrolled now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAnswer {
    pub mode: Mode,
    pub enrolled: bool,
}
