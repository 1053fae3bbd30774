//! A pod sandbox as a container runtime keeps one, and the CNI calls it makes: Debian's
//! real plugins (`loopback`, `bridge` + `host-local` from containernetworking-plugins) set
//! up a fresh network namespace, then `mesh-cni` runs chained after them with the CNI
//! environment and the conflist's plugin configuration plus `prevResult` on stdin. The
//! runtime's "host" is a lab node's namespace; the pod's processes live in a cgroup below
//! the node's capture cgroup, as a kubelet's pods live below `kubepods`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::Mesh;

/// Where Debian installs the reference plugins.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";
/// The pod subnet of the CNI network: unused by the lab (nodes take 198.18.1-250.0/24).
pub const CNI_SUBNET: &str = "198.18.251.0/24";

/// What a runtime keeps for one pod sandbox: its network namespace and cgroup, the CNI
/// network (a bridge in the node's namespace, host-local's address store), and removes
/// again, also when the test fails.
pub struct Sandbox {
    /// The runtime's "host": the node's network namespace, where the plugins run.
    node_netns: PathBuf,
    container_id: String,
    netns_name: String,
    cgroup: PathBuf,
    ipam_dir: PathBuf,
    bridge: String,
    /// `CNI_PATH`: where the runtime finds plugins by their `type`.
    plugin_dirs: String,
}

impl Sandbox {
    pub fn create(mesh: &Mesh, suffix: &str) -> Result<Self> {
        let id = mesh.lab.id();
        let sandbox = Sandbox {
            node_netns: mesh.lab.node(1).netns_path().to_path_buf(),
            container_id: format!("{id}-{suffix}"),
            netns_name: format!("mt{id}-{suffix}"),
            cgroup: mesh.lab.node(1).cgroup_path().join(suffix),
            ipam_dir: std::env::temp_dir().join(format!("mesh-test-{id}-{suffix}-ipam")),
            bridge: format!("cni{id}"),
            plugin_dirs: cni_path(),
        };
        let out = Command::new("ip")
            .args(["netns", "add", &sandbox.netns_name])
            .output()?;
        ensure!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        mesh_testbed::cgroup::create(&sandbox.cgroup)?;
        Ok(sandbox)
    }

    /// Plugins are looked for in `dirs` (`CNI_PATH`) instead of Debian's and the build's.
    pub fn with_plugin_dirs(mut self, dirs: String) -> Self {
        self.plugin_dirs = dirs;
        self
    }

    pub fn netns(&self) -> PathBuf {
        mesh_testbed::netns::named_netns_path(&self.netns_name)
    }

    /// The conflist's plugins, in chain order: the pod network, then the mesh.
    pub fn conflist(&self, agent_socket: &Path) -> Vec<Value> {
        vec![
            json!({
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "subnet": CNI_SUBNET,
                    "dataDir": self.ipam_dir,
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }),
            json!({"type": "mesh-cni", "agentSocket": agent_socket}),
        ]
    }

    /// Runs one plugin as the runtime does: found by its `type` in `CNI_PATH`, in the
    /// node's namespace, with the spec's environment and the configuration on stdin.
    pub fn plugin(&self, command: &str, pod: &str, conf: &Value) -> Result<(bool, Value)> {
        let plugin_type = conf["type"].as_str().context("plugin type")?;
        let dirs = &self.plugin_dirs;
        let bin = std::env::split_paths(&dirs)
            .map(|dir| dir.join(plugin_type))
            .find(|path| path.exists())
            .with_context(|| format!("plugin {plugin_type} not in CNI_PATH {dirs}"))?;
        let mut child = mesh_testbed::process::pod_command(bin, None, Some(&self.node_netns))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", self.netns())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", dirs)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={}",
                    self.container_id
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = serde_json::to_vec(conf)?;
        if let Some(mut input) = child.stdin.take() {
            std::io::Write::write_all(&mut input, &stdin)?;
        }
        let out = child.wait_with_output()?;
        let stdout: Value = if out.stdout.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).with_context(|| {
                format!(
                    "{plugin_type} {command}: stdout is not JSON: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })?
        };
        Ok((out.status.success(), stdout))
    }

    /// A plugin's configuration as the runtime hands it over: the network's version and
    /// name, the plugin's own fields, and the previous plugin's result.
    pub fn conf(plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = json!("1.0.0");
        conf["name"] = json!("mesh-test");
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    /// `loopback` (the runtime's own step), then ADD through the chain; returns the
    /// chain's result and mesh-cni's outcome (success, stdout).
    pub fn add(&self, pod: &str, chain: &[Value]) -> Result<(Value, (bool, Value))> {
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        let (ok, out) = self.plugin("ADD", pod, &lo)?;
        ensure!(ok, "loopback ADD: {out}");
        let (network, mesh) = chain.split_at(chain.len() - 1);
        let mut prev: Option<Value> = None;
        for plugin in network {
            let (ok, out) = self.plugin("ADD", pod, &Self::conf(plugin, prev.as_ref()))?;
            ensure!(ok, "{} ADD: {out}", plugin["type"]);
            prev = Some(out);
        }
        let prev = prev.context("no network plugin")?;
        let outcome = self.plugin("ADD", pod, &Self::conf(&mesh[0], Some(&prev)))?;
        Ok((prev, outcome))
    }

    /// A command in the pod: its cgroup (below the node's) and its network namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        mesh_testbed::process::pod_command(program, Some(&self.cgroup), Some(&self.netns()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = mesh_testbed::cgroup::kill_all(&self.cgroup, std::time::Duration::from_secs(3));
        let _ = mesh_testbed::cgroup::remove(&self.cgroup);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns_name])
            .output();
        let _ = std::fs::remove_dir_all(&self.ipam_dir);
    }
}

/// The directories a runtime searches for plugins: Debian's, and the one with mesh-cni.
pub fn cni_path() -> String {
    let ours = crate::agent_bin()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    format!("{CNI_PLUGINS}:{}", ours.display())
}
