//! Harness for the integration tests and the benchmarks: a lab (nodes and pods from
//! `mesh-testbed`) with one real `mesh-agent run` process per node, and helpers to run
//! unmodified clients and servers inside pods.
//!
//! Everything is named after the lab's run id and removed on drop: agents are killed,
//! their pins uninstalled, state directories deleted, then the lab itself goes.
use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use mesh_agent::{
    api::client::ApiClient,
    launch::{self, LabAgent, StartOptions},
    pod::PodSpec,
};
use mesh_testbed::lab::{Lab, LabChild, LabSpec, Pod};
use serde_json::Value;

pub mod browser;
pub mod cni;
pub mod image;

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
    pub agent: LabAgent,
    child: Option<LabChild>,
    node: usize,
}

impl AgentProcess {
    pub fn pin_dir(&self) -> PathBuf {
        self.agent.bpffs_root.join(&self.agent.name)
    }

    /// The running agent's process id (`None` while it is stopped), for what only `/proc`
    /// tells: memory, open descriptors, threads.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(LabChild::pid)
    }
}

/// A lab pod as a mesh workload of the test's choosing, in namespace `default`.
#[derive(Clone, Copy)]
pub struct Workload<'a> {
    pub node: usize,
    pub pod: usize,
    pub service_account: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
}

/// How the agents of a [`Mesh`] are started: the real binary by default, or something that
/// runs it (a container, see [`image`]).
pub struct AgentLaunch {
    /// Started with `run --name <agent> ...` in the node's namespace.
    pub program: PathBuf,
    /// The agents' state directories go below it (`<root>/mesh-test-<agent>`).
    pub state_root: PathBuf,
    /// Called with the agent's name after its process is killed, to stop what the process
    /// only started (a container outlives its `podman run`).
    pub stop: Option<fn(&str)>,
    /// Create the mesh CA before the first agent starts, for agents that only read it (a
    /// DaemonSet's comes from a read-only Secret); otherwise the first agent creates it.
    pub create_ca: bool,
}

impl Default for AgentLaunch {
    fn default() -> Self {
        AgentLaunch {
            program: agent_bin(),
            state_root: std::env::temp_dir(),
            stop: None,
            create_ca: false,
        }
    }
}

/// A lab plus one agent per node.
pub struct Mesh {
    pub lab: Lab,
    pub agents: Vec<AgentProcess>,
    /// Extra arguments for every `mesh-agent run` (e.g. `--config-dir`).
    agent_args: Vec<String>,
    launch: AgentLaunch,
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
        Self::start_launched(nodes, pods_per_node, agent_args, AgentLaunch::default())
    }

    /// As [`Mesh::start_with_args`], the agents started by `launch`.
    pub fn start_launched(
        nodes: usize,
        pods_per_node: usize,
        agent_args: &[&str],
        launch: AgentLaunch,
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
            launch,
            runtime,
        };
        if mesh.launch.create_ca {
            mesh_identity::CertificateAuthority::load_or_create(
                &launch::lab_ca_dir(&mesh.lab),
                "cluster.local",
            )?;
        }
        for node in 1..=nodes {
            let name = format!("{}-n{node}", mesh.lab.id());
            let state_dir = mesh.launch.state_root.join(format!("mesh-test-{name}"));
            mesh.agents.push(AgentProcess {
                agent: LabAgent {
                    name,
                    bpffs_root: BPFFS_ROOT.into(),
                    state_dir,
                    ca_dir: launch::lab_ca_dir(&mesh.lab),
                },
                child: None,
                node,
            });
            mesh.start_agent(node)?;
        }
        Ok(mesh)
    }

    /// Starts (or restarts) the agent of `node` and waits for its API.
    pub fn start_agent(&mut self, node: usize) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(node))?;
        let options = StartOptions {
            extra_args: self.agent_args.clone(),
            log_filter: "info",
            stderr: log.into(),
            timeout: Duration::from_secs(20),
        };
        let process = &self.agents[node - 1];
        let started = self.runtime.block_on(process.agent.start(
            &self.lab,
            process.node,
            &self.launch.program,
            options,
        ));
        // The log goes with the mesh when the test returns an error: its end goes into it.
        let child = started.with_context(|| {
            let log = std::fs::read_to_string(self.log_path(node)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!("{}:\n{tail}", self.log_path(node).display())
        })?;
        self.agents[node - 1].child = Some(child);
        Ok(())
    }

    pub fn log_path(&self, node: usize) -> PathBuf {
        std::env::temp_dir().join(format!(
            "mesh-test-{}.log",
            self.agents[node - 1].agent.name
        ))
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill_agent(&mut self, node: usize) -> Result<()> {
        if let Some(child) = self.agents[node - 1].child.take() {
            child.kill()?;
            if let Some(stop) = self.launch.stop {
                stop(&self.agents[node - 1].agent.name);
            }
        }
        Ok(())
    }

    /// The process id of `node`'s running agent.
    pub fn agent_pid(&self, node: usize) -> Option<u32> {
        self.agents[node - 1].pid()
    }

    pub fn client(&self, node: usize) -> ApiClient {
        self.agents[node - 1].agent.client()
    }

    pub fn status(&self, node: usize) -> Result<Value> {
        Ok(self.runtime.block_on(self.client(node).status())?)
    }

    /// As [`Mesh::status`], but gives up after `timeout`: an agent out of descriptors
    /// accepts no API connection, and a bench holding thousands of connections through it
    /// must not hang on that.
    pub fn status_within(&self, node: usize, timeout: Duration) -> Result<Value> {
        let client = self.client(node);
        // The timer must be created inside the runtime, hence the async block.
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, client.status()).await })
            .with_context(|| format!("node {node}'s agent did not answer within {timeout:?}"))?;
        Ok(answer?)
    }

    pub fn pod_spec(&self, node: usize, pod: usize) -> PodSpec {
        let p = self.lab.pod(node, pod);
        launch::pod_spec(p, p.name(), "default", Default::default())
    }

    /// Enrolls pod `pod` of node `node` with that node's agent.
    pub fn enroll(&self, node: usize, pod: usize) -> Result<()> {
        let spec = self.pod_spec(node, pod);
        Ok(self.runtime.block_on(self.client(node).enroll(&spec))?)
    }

    /// Enrolls a lab pod as the workload `w` (its identity is
    /// `spiffe://cluster.local/ns/default/sa/<service account>`).
    pub fn enroll_as(&self, w: &Workload) -> Result<()> {
        let p = self.lab.pod(w.node, w.pod);
        let labels = w
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = launch::pod_spec(p, p.name(), w.service_account, labels);
        Ok(self.runtime.block_on(self.client(w.node).enroll(&spec))?)
    }

    /// What creating pods does in a cluster: each workload is enrolled with its node's
    /// agent (the CNI plugin's part) and every agent learns all of them from the
    /// configuration (the API server's part, as `workloads.yaml`).
    pub fn enroll_workloads(&self, workloads: &[Workload]) -> Result<()> {
        for w in workloads {
            self.enroll_as(w)?;
        }
        self.apply_all("workloads.yaml", &self.workloads_yaml(workloads))
    }

    /// Applies YAML to every agent (what `kubectl apply` does for a whole cluster) and
    /// waits until each has taken it.
    pub fn apply_all(&self, file: &str, yaml: &str) -> Result<()> {
        for node in 1..=self.agents.len() {
            let answer = self
                .runtime
                .block_on(
                    self.client(node)
                        .apply_config(file, yaml.as_bytes().to_vec()),
                )
                .with_context(|| format!("applying {file} to node {node}"))?;
            ensure!(
                answer["errors"].as_array().is_none_or(|e| e.is_empty()),
                "node {node} refused {file}: {answer}"
            );
        }
        Ok(())
    }

    /// The Prometheus text of an agent.
    pub fn metrics(&self, node: usize) -> Result<String> {
        Ok(self.runtime.block_on(self.client(node).metrics())?)
    }

    /// Kubernetes YAML declaring lab pods as mesh workloads, as the API server would list
    /// them to every node: the `default` namespace enrolled in ambient mode and one Pod per
    /// workload, with its address.
    pub fn workloads_yaml(&self, workloads: &[Workload]) -> String {
        let mut yaml = String::from(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels: {istio.io/dataplane-mode: ambient}\n",
        );
        for w in workloads {
            let p = self.lab.pod(w.node, w.pod);
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: default\n  labels: {{{}}}\nspec:\n  serviceAccountName: {}\n  containers: [{{name: app, image: app}}]\nstatus:\n  podIP: {}\n",
                p.name(),
                labels.join(", "),
                w.service_account,
                p.ip()
            ));
        }
        yaml
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub fn pod(&self, node: usize, pod: usize) -> &Pod {
        self.lab.pod(node, pod)
    }

    /// Starts `mesh-agent app ARGS` in a workload's pod as a Kubernetes pod would run it:
    /// seeing a resolv.conf as a kubelet writes it (the node's pod gateway as nameserver,
    /// the namespace's search list, `ndots:5`), so names resolve through the mesh's DNS,
    /// and with HOSTNAME set to the pod's name.
    pub fn start_named_app(&self, w: &Workload, pod_name: &str, args: &[&str]) -> Result<LabChild> {
        let search = [
            "default.svc.cluster.local".to_string(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ];
        let pod = self.pod(w.node, w.pod);
        pod.write_resolv_conf(
            &[self.lab.node(w.node).pod_gateway().into()],
            &search,
            &["ndots:5"],
        )?;
        let mut cmd = pod.command_with_etc(agent_bin());
        cmd.arg("app")
            .args(args)
            .env("HOSTNAME", pod_name)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Ok(self.lab.spawn(&mut cmd)?)
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

    /// Starts `tcp-client` in a pod: it sends `bytes` to an echo server, then holds the
    /// connection open for `hold` before half-closing. A connection that stays established
    /// across whatever the test does next; finish it with [`finish_held`].
    pub fn hold_tcp_client(
        &self,
        node: usize,
        pod: usize,
        connect: &str,
        bytes: u64,
        hold: Duration,
    ) -> Result<std::process::Child> {
        let child = self
            .pod(node, pod)
            .command(agent_bin())
            .args(["app", "tcp-client", "--connect", connect])
            .args(["--bytes", &bytes.to_string()])
            .args(["--hold-ms", &hold.as_millis().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(child)
    }

    /// Starts `tcp-client` in a pod sending `bytes` at `rate` bytes per second, so that
    /// bytes keep flowing for `bytes / rate` seconds while the test does something else;
    /// finish it with [`finish_held`].
    pub fn paced_tcp_client(
        &self,
        node: usize,
        pod: usize,
        connect: &str,
        bytes: u64,
        rate: u64,
    ) -> Result<std::process::Child> {
        let child = self
            .pod(node, pod)
            .command(agent_bin())
            .args(["app", "tcp-client", "--connect", connect])
            .args(["--bytes", &bytes.to_string()])
            .args(["--rate", &rate.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(child)
    }

    /// `mesh-agent uninstall` for one agent.
    pub fn uninstall(&self, node: usize) -> Result<()> {
        let agent = &self.agents[node - 1];
        let out = Command::new(agent_bin())
            .args([
                "uninstall",
                "--name",
                &agent.agent.name,
                "--bpffs-root",
                BPFFS_ROOT,
            ])
            .arg("--state-dir")
            .arg(&agent.agent.state_dir)
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
        let _ = std::fs::remove_dir_all(launch::lab_ca_dir(&self.lab));
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

/// Polls `check` every 50 ms until it holds; after 10 s fails naming `what`. An error
/// from `check` ends the wait at once.
pub fn wait_for(what: &str, check: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_for_within(what, Duration::from_secs(10), check)
}

/// [`wait_for`] with another deadline (for checks that take seconds themselves, such as
/// a page behind an injected delay).
pub fn wait_for_within(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `check` holds for the agent's status (records are written when a
/// connection ends, which can trail the client's exit by a moment).
pub fn eventually(
    mesh: &Mesh,
    node: usize,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let mut status = Value::Null;
    wait_for(what, || {
        status = mesh.status(node)?;
        Ok(check(&status))
    })
    .with_context(|| format!("status: {status:#}"))?;
    Ok(status)
}

/// Collects a client started by [`Mesh::hold_tcp_client`]. It must still be running when
/// called (a connection that ended before the test's changes proves nothing) and must exit
/// cleanly; returns its JSON outcome.
pub fn finish_held(mut held: std::process::Child) -> Result<Value> {
    ensure!(
        held.try_wait()?.is_none(),
        "the held connection ended before the test's changes; hold it longer"
    );
    let out = held.wait_with_output()?;
    ensure!(
        out.status.success(),
        "held client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Istio's mesh config turning tracing on for every proxy that reads it, as `meshConfig`
/// in an IstioOperator renders it: an OpenTelemetry provider at `collector:port`, the
/// default tracing provider, every request sampled (as Istio's demo profile).
pub fn tracing_mesh_config(collector: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: otel-tracing
      opentelemetry:
        service: {collector}
        port: {port}
    defaultProviders:
      tracing: [otel-tracing]
    defaultConfig:
      tracing:
        sampling: 100
"#
    )
}

/// The sum of a Prometheus counter's samples whose labels include all of `labels`.
pub fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A WebSocket client for `python3 -c WEBSOCKET_CLIENT <port> <path>` (standard library
/// only) to 127.0.0.1: the RFC 6455 handshake, the accept key checked, one masked text
/// message out, the echoed frame read back, a close; prints one JSON line.
pub const WEBSOCKET_CLIENT: &str = r#"
import base64, hashlib, json, os, socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
key = base64.b64encode(os.urandom(16)).decode()
conn = socket.create_connection(("127.0.0.1", port), timeout=5)
conn.sendall(("GET %s HTTP/1.1\r\nHost: site\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
data = b""
while b"\r\n\r\n" not in data:
    more = conn.recv(4096)
    if not more:
        break
    data += more
head, _, data = data.partition(b"\r\n\r\n")
lines = head.decode().split("\r\n")
fields = dict((l.split(":", 1)[0].strip().lower(), l.split(":", 1)[1].strip()) for l in lines[1:] if ":" in l)
want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
def send(opcode, payload):
    mask = os.urandom(4)
    conn.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
send(1, b"hello, mesh")
while len(data) < 2:
    data += conn.recv(4096)
size = data[1] & 0x7f
while len(data) < 2 + size:
    data += conn.recv(4096)
reply = data[2:2 + size].decode()
send(8, b"")
print(json.dumps({"status": lines[0], "accept_ok": fields.get("sec-websocket-accept") == want,
                  "opcode": data[0] & 0x0f, "reply": reply}))
"#;
