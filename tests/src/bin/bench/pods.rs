//! The bench's lab layout (which pod plays what in which column) and running processes
//! inside pods with a deadline.
//!
//! One lab of 2 nodes x 7 pods. DIRECT uses n1p1 -> n1p2 (same node) and n1p1 -> n2p1
//! (cross node), never enrolled. MESH uses the pods two numbers up, n1p3 -> n1p4 and
//! n1p3 -> n2p3, enrolled as ambient mesh workloads (each with its own service account),
//! so the agents speak HBONE between them on both the same-node and the cross-node path.
//! n2p2 runs the DNS rows' nameserver; n1p5 and n1p6 the L7 rows' waypoint and gateway
//! (`l7.rs`); n1p7 the gateway with tracing on and n2p7 its collector (`spans.rs`).
use std::{
    io::Read,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, Workload};

use crate::netstat;

pub const ECHO_PORT: u16 = 9000;
pub const IPERF_BASE_PORT: u16 = 5201;
pub const HTTP_PORT: u16 = 8080;

/// A pod: (node, pod), both 1-based.
pub type PodId = (usize, usize);

#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    /// Server of the DIRECT pair (the client is n1p1); MESH uses the pods two up.
    pub server: PodId,
}

pub const CASES: [Case; 2] = [
    Case {
        name: "same-node",
        server: (1, 2),
    },
    Case {
        name: "cross-node",
        server: (2, 1),
    },
];

/// Index of the cross-node case in [`CASES`] (where the held connections go).
pub const CROSS: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Direct,
    Mesh,
}

impl Variant {
    pub const BOTH: [Variant; 2] = [Variant::Direct, Variant::Mesh];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Mesh => "mesh",
        }
    }

    /// (client, server) of `case` for this variant.
    pub fn pair(self, case: Case) -> (PodId, PodId) {
        let up = match self {
            Variant::Direct => 0,
            Variant::Mesh => 2,
        };
        ((1, 1 + up), (case.server.0, case.server.1 + up))
    }
}

const CLIENT_LABELS: &[(&str, &str)] = &[("app", "bench-client")];
const SERVER_LABELS: &[(&str, &str)] = &[("app", "bench-server")];
/// The same-node MESH server is also the L7 rows' backend (Service `bench-l7`).
const L7_SERVER_LABELS: &[(&str, &str)] = &[("app", "bench-server"), ("bench-l7", "server")];

fn workload(
    (node, pod): PodId,
    service_account: &'static str,
    labels: &'static [(&'static str, &'static str)],
) -> Workload<'static> {
    Workload {
        node,
        pod,
        service_account,
        labels,
    }
}

/// The MESH pods as workloads: the client and both servers, each its own identity
/// (`spiffe://cluster.local/ns/default/sa/<service account>`).
pub fn mesh_workloads() -> [Workload<'static>; 3] {
    let (client, same) = Variant::Mesh.pair(CASES[0]);
    let (_, cross) = Variant::Mesh.pair(CASES[CROSS]);
    [
        workload(client, "bench-client", CLIENT_LABELS),
        workload(same, "bench-server-same", L7_SERVER_LABELS),
        workload(cross, "bench-server-cross", SERVER_LABELS),
    ]
}

pub fn name((n, p): PodId) -> String {
    format!("n{n}p{p}")
}

/// Starts `mesh-agent app echo` (and `app http` when h2load will run) in every server
/// pod of both columns; they live until the returned handles are dropped with the lab.
pub fn start_servers(mesh: &Mesh, http: bool) -> Result<Vec<LabChild>> {
    let mut servers = Vec::new();
    for v in Variant::BOTH {
        for case in CASES {
            let (_, server) = v.pair(case);
            let (n, p) = server;
            let listen = format!("0.0.0.0:{ECHO_PORT}");
            servers.push(
                mesh.serve_in_pod(n, p, &["echo", "--listen", &listen], ECHO_PORT)
                    .with_context(|| format!("echo server in {}", name(server)))?,
            );
            if http {
                let listen = format!("0.0.0.0:{HTTP_PORT}");
                let app = format!("bench-{}", name(server));
                let args = ["http", "--listen", &listen, "--name", &app];
                servers.push(
                    mesh.serve_in_pod(n, p, &args, HTTP_PORT)
                        .with_context(|| format!("http server in {}", name(server)))?,
                );
            }
        }
    }
    Ok(servers)
}

/// Runs a process in a pod (tracked by the lab, so it dies with it) and waits at most
/// `timeout`; returns its status, stdout and stderr.
pub fn run_bounded(
    mesh: &Mesh,
    pod: PodId,
    program: impl AsRef<std::ffi::OsStr>,
    args: &[String],
    timeout: Duration,
) -> Result<(ExitStatus, String, String)> {
    let mut cmd = mesh.pod(pod.0, pod.1).command(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = mesh.lab.spawn(&mut cmd).context("spawning in a pod")?;
    let out = reader(child.take_stdout());
    let err = reader(child.take_stderr());
    let Some(status) = child.wait_timeout(timeout)? else {
        let _ = child.kill();
        bail!(
            "{args:?} in {} did not finish within {timeout:?}; killed",
            name(pod)
        );
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status, out, err))
}

/// Reads a child's pipe to the end on a thread (so a full pipe never blocks the child).
pub fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

/// Runs this very binary's subcommand `args` in `pod` and parses the JSON line it prints.
pub fn run_client(
    mesh: &Mesh,
    pod: PodId,
    args: &[String],
    timeout: Duration,
) -> Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let (status, out, err) = run_bounded(mesh, pod, exe, args, timeout)?;
    ensure!(status.success(), "{} exited with {status}: {err}", args[0]);
    serde_json::from_str(out.trim())
        .with_context(|| format!("{} printed no JSON: {out} {err}", args[0]))
}

/// Waits until something in the pod's namespace listens on TCP `port` (without
/// connecting: `iperf3 -s -1` would take a probe connection for its one test).
pub fn wait_listening(mesh: &Mesh, pod: PodId, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = mesh.pod(pod.0, pod.1).run(move || {
        while Instant::now() < deadline {
            if netstat::sockets()
                .iter()
                .any(|s| s.local_port == port && s.state == netstat::LISTEN)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })?;
    ensure!(
        listening,
        "nothing listens on {port} in {} after 10 s",
        name(pod)
    );
    Ok(())
}
