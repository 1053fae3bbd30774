//! Harness for the integration tests and the benchmarks: a lab (nodes and pods from
//! `mesh-testbed`) with one real `mesh-agent run` process per node, and helpers to run
//! unmodified clients and servers inside pods.
//!
//! Everything is named after the lab's run id and removed on drop: agents are killed,
//! their pins uninstalled, state directories deleted, then the lab itself goes.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use mesh_agent::{api::client::ApiClient, pod::PodSpec};
use mesh_testbed::lab::{Lab, LabChild, LabSpec, Pod};
use serde_json::Value;

/// The `mesh-agent` binary built alongside this test or bench binary
/// (`target/<profile>/mesh-agent`; test binaries live one level deeper, in `deps/`).
pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("mesh-agent");
    // `cargo test` does not build other packages' binaries: `cargo xtask test` does.
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Fails loudly instead of skipping: the tests need root for namespaces and eBPF.
pub fn require_root() {
    let uid = nix_uid();
    assert_eq!(
        uid, 0,
        "these tests create network namespaces and load eBPF programs: run them as root"
    );
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

pub const BPFFS_ROOT: &str = "/sys/fs/bpf/mesh-test";

/// One node agent process.
pub struct AgentProcess {
    pub name: String,
    pub state_dir: PathBuf,
    child: Option<LabChild>,
    node: usize,
}

impl AgentProcess {
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(BPFFS_ROOT).join(&self.name)
    }
}

/// A lab plus one agent per node.
pub struct Mesh {
    pub lab: Lab,
    pub agents: Vec<AgentProcess>,
    /// Extra arguments for every `mesh-agent run` (e.g. `--config-dir`).
    agent_args: Vec<String>,
    runtime: tokio::runtime::Runtime,
}

impl Mesh {
    /// Creates the lab and starts an agent on each node (waits until each answers).
    pub fn start(nodes: usize, pods_per_node: usize) -> Result<Mesh> {
        Self::start_with_args(nodes, pods_per_node, &[])
    }

    /// As [`Mesh::start`], with extra arguments for each agent's `run`.
    pub fn start_with_args(
        nodes: usize,
        pods_per_node: usize,
        agent_args: &[&str],
    ) -> Result<Mesh> {
        require_root();
        let lab = Lab::create(LabSpec {
            nodes,
            pods_per_node,
        })
        .context("creating the lab")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut mesh = Mesh {
            lab,
            agents: Vec::new(),
            agent_args: agent_args.iter().map(ToString::to_string).collect(),
            runtime,
        };
        for node in 1..=nodes {
            let name = format!("{}-n{node}", mesh.lab.id());
            let state_dir = std::env::temp_dir().join(format!("mesh-test-{name}"));
            mesh.agents.push(AgentProcess {
                name,
                state_dir,
                child: None,
                node,
            });
            mesh.start_agent(node)?;
        }
        Ok(mesh)
    }

    /// Starts (or restarts) the agent of `node` and waits for its API.
    pub fn start_agent(&mut self, node: usize) -> Result<()> {
        let agent = &self.agents[node - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::env::temp_dir().join(format!("mesh-test-{}.log", agent.name)))?;
        let mut cmd = self.lab.node(agent.node).command(agent_bin());
        cmd.args(["run", "--name", &agent.name, "--bpffs-root", BPFFS_ROOT])
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .args(&self.agent_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let child = self.lab.spawn(&mut cmd).context("spawning mesh-agent")?;
        self.agents[node - 1].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.status(node).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.agents[node - 1]
                .child
                .as_ref()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "agent {} exited during start-up ({status}); see {}",
                    self.agents[node - 1].name,
                    self.log_path(node).display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "agent {} did not answer within 20 s",
                self.agents[node - 1].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_path(&self, node: usize) -> PathBuf {
        std::env::temp_dir().join(format!("mesh-test-{}.log", self.agents[node - 1].name))
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill_agent(&mut self, node: usize) -> Result<()> {
        if let Some(child) = self.agents[node - 1].child.take() {
            child.kill()?;
        }
        Ok(())
    }

    pub fn client(&self, node: usize) -> ApiClient {
        ApiClient::new(self.agents[node - 1].socket())
    }

    pub fn status(&self, node: usize) -> Result<Value> {
        Ok(self.runtime.block_on(self.client(node).status())?)
    }

    pub fn pod_spec(&self, node: usize, pod: usize) -> PodSpec {
        let p = self.lab.pod(node, pod);
        PodSpec {
            name: p.name().replace('_', "-").to_lowercase(),
            namespace: "default".into(),
            service_account: "default".into(),
            labels: Default::default(),
            netns: p.netns_path().to_path_buf(),
            cgroup: p.cgroup_path().to_path_buf(),
            ips: vec![p.ip().into(), p.ipv6().into()],
        }
    }

    /// Enrolls pod `pod` of node `node` with that node's agent.
    pub fn enroll(&self, node: usize, pod: usize) -> Result<()> {
        let spec = self.pod_spec(node, pod);
        Ok(self.runtime.block_on(self.client(node).enroll(&spec))?)
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub fn pod(&self, node: usize, pod: usize) -> &Pod {
        self.lab.pod(node, pod)
    }

    /// Starts a long-running process in a pod (killed with the lab).
    pub fn spawn_in_pod(&self, node: usize, pod: usize, args: &[&str]) -> Result<LabChild> {
        let mut cmd = self.pod(node, pod).command(args[0]);
        cmd.args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(self.lab.spawn(&mut cmd)?)
    }

    /// Starts `mesh-agent app ...` in a pod and waits until it accepts on `port`.
    pub fn serve_in_pod(
        &self,
        node: usize,
        pod: usize,
        app_args: &[&str],
        port: u16,
    ) -> Result<LabChild> {
        let bin = agent_bin();
        let mut cmd = self.pod(node, pod).command(&bin);
        cmd.arg("app")
            .args(app_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = self.lab.spawn(&mut cmd)?;
        // Probe over the pod's own loopback from a thread in its namespace: loopback is
        // neither captured nor steered, so the probe reaches the app itself (not the agent)
        // and no agent counts it. The apps listen on wildcard or loopback addresses.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = self.pod(node, pod).run(move || {
            while Instant::now() < deadline {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            false
        })?;
        ensure!(
            probe,
            "server {app_args:?} in pod n{node}p{pod} did not listen on {port}"
        );
        Ok(child)
    }

    /// Runs a command to completion inside a pod (its cgroup and namespace).
    pub fn run_in_pod(
        &self,
        node: usize,
        pod: usize,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> Result<Output> {
        let out = self
            .pod(node, pod)
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running a command in a pod")?;
        Ok(out)
    }

    /// `mesh-agent app tcp-client` in a pod; returns its JSON outcome.
    pub fn tcp_client(&self, node: usize, pod: usize, connect: &str, bytes: u64) -> Result<Value> {
        let out = self.run_in_pod(
            node,
            pod,
            agent_bin(),
            &[
                "app",
                "tcp-client",
                "--connect",
                connect,
                "--bytes",
                &bytes.to_string(),
            ],
        )?;
        ensure!(
            out.status.success(),
            "tcp-client to {connect} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `mesh-agent uninstall` for one agent.
    pub fn uninstall(&self, node: usize) -> Result<()> {
        let agent = &self.agents[node - 1];
        let out = Command::new(agent_bin())
            .args([
                "uninstall",
                "--name",
                &agent.name,
                "--bpffs-root",
                BPFFS_ROOT,
            ])
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .output()?;
        ensure!(
            out.status.success(),
            "uninstall failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for node in 1..=self.agents.len() {
            let _ = self.kill_agent(node);
            let _ = self.uninstall(node);
            // Agent logs are kept only when a test failed: they are what explains it.
            if !std::thread::panicking() {
                let _ = std::fs::remove_file(self.log_path(node));
            }
        }
        self.lab.cleanup();
    }
}

/// The connection records of an agent's status.
pub fn recent(status: &Value) -> Vec<Value> {
    status["recent"].as_array().cloned().unwrap_or_default()
}

/// Records whose original destination is `dst`.
pub fn records_to(status: &Value, dst: &str) -> Vec<Value> {
    recent(status)
        .into_iter()
        .filter(|r| r["original_destination"] == dst)
        .collect()
}

pub fn opened(status: &Value) -> u64 {
    status["connections"]["opened"].as_u64().unwrap_or(0)
}

/// Waits until `check` holds for the agent's status (records are written when a
/// connection ends, which can trail the client's exit by a moment).
pub fn eventually(
    mesh: &Mesh,
    node: usize,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = mesh.status(node)?;
        if check(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for: {what}\nstatus: {status:#}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
