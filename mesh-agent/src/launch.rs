//! Node agents and pods on a `mesh-testbed` lab: how the demo, the integration tests and
//! the benchmark start an agent in a node's namespace, wait for it, and describe a lab pod
//! to the enrollment API. One place, so the three cannot drift apart.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use mesh_testbed::lab::{Lab, LabChild, Pod};

use crate::{api::client::ApiClient, pod::PodSpec};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("starting agent {agent}: {source}")]
    Spawn {
        agent: String,
        source: std::io::Error,
    },
    #[error("agent {agent} exited during start-up ({status})")]
    Exited {
        agent: String,
        status: std::process::ExitStatus,
    },
    #[error("agent {agent} did not answer within {} s", timeout.as_secs())]
    Timeout { agent: String, timeout: Duration },
}

/// How to run a lab agent's process.
pub struct StartOptions {
    /// Extra arguments of `mesh-agent run` (e.g. `--config-dir DIR`).
    pub extra_args: Vec<String>,
    /// The agent's `RUST_LOG`.
    pub log_filter: &'static str,
    /// Where its log goes.
    pub stderr: Stdio,
    /// How long to wait for its API.
    pub timeout: Duration,
}

/// Where one lab agent keeps its pins, state and API socket.
#[derive(Clone, Debug)]
pub struct LabAgent {
    pub name: String,
    pub bpffs_root: PathBuf,
    pub state_dir: PathBuf,
    /// The mesh CA shared by the lab's agents ([`lab_ca_dir`]).
    pub ca_dir: PathBuf,
}

/// Where a lab's agents keep their shared CA (Istio's `cacerts` layout); the first agent
/// to start creates it. Remove it with the lab.
pub fn lab_ca_dir(lab: &Lab) -> PathBuf {
    std::env::temp_dir().join(format!("mesh-ca-{}", lab.id()))
}

impl LabAgent {
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(self.socket())
    }

    /// Spawns `bin run` for this agent in the namespace of `node`, in the node's `system`
    /// cgroup below the capture cgroup, as a DaemonSet pod is (the lab tracks and kills
    /// it) and waits until its API answers.
    pub async fn start(
        &self,
        lab: &Lab,
        node: usize,
        bin: &Path,
        options: StartOptions,
    ) -> Result<LabChild, LaunchError> {
        let StartOptions {
            extra_args,
            log_filter,
            stderr,
            timeout,
        } = options;
        let mut cmd = lab.node(node).daemon_command(bin);
        cmd.args(["run", "--name", &self.name])
            .arg("--capture-cgroup")
            .arg(lab.node(node).cgroup_path())
            .arg("--bpffs-root")
            .arg(&self.bpffs_root)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--ca-dir")
            .arg(&self.ca_dir)
            .args(extra_args)
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = lab.spawn(&mut cmd).map_err(|source| LaunchError::Spawn {
            agent: self.name.clone(),
            source,
        })?;
        let client = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            if client.status().await.is_ok() {
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LaunchError::Exited {
                    agent: self.name.clone(),
                    status,
                });
            }
            if Instant::now() > deadline {
                return Err(LaunchError::Timeout {
                    agent: self.name.clone(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Detaches and unpins everything of this agent and removes its state.
    pub fn uninstall(&self) -> Result<(), crate::redirect::RedirectError> {
        crate::redirect::uninstall(&self.bpffs_root, &self.name)?;
        let _ = std::fs::remove_dir_all(&self.state_dir);
        Ok(())
    }
}

/// A lab pod as the enrollment API wants it: its namespace, cgroup and both addresses.
/// (The cgroup is optional for the agent; given, it is checked to lie below the node's.)
pub fn pod_spec(
    pod: &Pod,
    name: impl Into<String>,
    service_account: impl Into<String>,
    labels: BTreeMap<String, String>,
) -> PodSpec {
    PodSpec {
        name: name.into(),
        namespace: "default".into(),
        service_account: service_account.into(),
        labels,
        netns: pod.netns_path().to_path_buf(),
        cgroup: Some(pod.cgroup_path().to_path_buf()),
        ips: vec![pod.ip().into(), pod.ipv6().into()],
    }
}
