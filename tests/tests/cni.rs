//! Issue 12: pods enrolled through the CNI plugin, as a container runtime does it (see
//! `mesh_tests::cni`): Debian's real plugins, then `mesh-cni` chained after them, in a lab
//! node's namespace where the node agent runs. No per-pod cgroup is ever given to the agent.
use anyhow::{Context, Result, ensure};
use mesh_tests::{Mesh, Workload, cni::Sandbox, counter, eventually, records_to};
use serde_json::{Value, json};

const ECHO_VIP: &str = "198.19.0.61";

/// The mesh's Service in front of an echo server in lab pod n1p1, an ambient namespace,
/// and a pod the configuration opts out.
const CONFIG: &str = "\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 198.19.0.61
  selector: {app: echo}
  ports: [{name: tcp-echo, port: 9000, targetPort: 9000}]
---
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: default, labels: {istio.io/dataplane-mode: none}}
spec: {containers: [{name: app, image: app}]}
";

/// ADD enrolls the pod by its network namespace alone, its connection to a Service VIP
/// goes through the agent, CHECK passes, DEL unenrolls (twice: idempotent); with the agent
/// down, ADD fails for a pod that must be captured and succeeds for one labelled `none`.
#[test]
fn a_pod_added_through_the_cni_chain_is_captured_until_deleted() -> Result<()> {
    let mut mesh = Mesh::start(1, 2)?;
    mesh.enroll_workloads(&[Workload {
        node: 1,
        pod: 1,
        service_account: "echo",
        labels: &[("app", "echo")],
    }])?;
    mesh.apply_all("cni.yaml", CONFIG)?;
    let _echo = mesh.serve_in_pod(1, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let socket = mesh.agents[0].agent.socket();
    let sandbox = Sandbox::create(&mesh, "web")?;
    let chain = sandbox.conflist(&socket);

    // ADD: the pod gets its address from the bridge chain; mesh-cni passes the result on
    // and the agent enrolls the pod (namespace `default` is ambient).
    let (prev, (ok, result)) = sandbox.add("web", &chain)?;
    ensure!(ok, "mesh-cni ADD failed: {result}");
    assert_eq!(result, prev, "mesh-cni passes prevResult through unchanged");
    let ip = prev["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .context("no address in the bridge's result")?
        .to_string();
    assert!(ip.starts_with("198.18.251."), "{prev}");
    let status = mesh.status(1)?;
    let pods = status["pods"].as_array().cloned().unwrap_or_default();
    let web = pods
        .iter()
        .find(|p| p["name"] == "web")
        .with_context(|| format!("web not enrolled: {pods:?}"))?;
    assert_eq!(web["ips"], json!([ip]));
    assert_eq!(web["netns"], json!(sandbox.netns()));
    assert!(web.get("cgroup").is_none(), "no cgroup was given: {web}");

    // Its connection to the Service VIP is captured and proxied by the agent.
    let opened = |m: &str| {
        counter(
            m,
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", "source"),
                ("destination_service", "echo.default.svc.cluster.local"),
            ],
        )
    };
    let before = opened(&mesh.metrics(1)?);
    let dst = format!("{ECHO_VIP}:9000");
    let out = sandbox
        .command(mesh_tests::agent_bin())
        .args(["app", "tcp-client", "--connect", &dst, "--bytes", "65536"])
        .output()?;
    ensure!(
        out.status.success(),
        "tcp-client from the CNI pod: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    eventually(
        &mesh,
        1,
        "the agent's record of the CNI pod's connection",
        |s| {
            records_to(s, &dst).iter().any(|r| {
                r["source"]
                    .as_str()
                    .is_some_and(|src| src.starts_with(&format!("{ip}:")))
            })
        },
    )?;
    assert_eq!(opened(&mesh.metrics(1)?), before + 1);

    // CHECK: enrolled as it must be.
    let check = Sandbox::conf(&chain[1], Some(&prev));
    let (ok, out) = sandbox.plugin("CHECK", "web", &check)?;
    ensure!(ok && out.is_null(), "CHECK failed: {out}");

    // DEL: unenrolled, then its connects go direct (not redirected); again: still fine.
    let del = Sandbox::conf(&chain[1], Some(&prev));
    for round in 1..=2 {
        let (ok, out) = sandbox.plugin("DEL", "web", &del)?;
        ensure!(ok, "DEL #{round} failed: {out}");
    }
    let status = mesh.status(1)?;
    assert!(
        !status["pods"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "web")),
        "web still enrolled: {}",
        status["pods"]
    );
    let direct = format!("{}:9000", mesh.pod(1, 1).ip());
    let out = sandbox
        .command(mesh_tests::agent_bin())
        .args(["app", "tcp-client", "--connect", &direct])
        .output()?;
    ensure!(
        out.status.success(),
        "tcp-client after DEL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        mesh.status(1)?["kernel"]["redirected"],
        status["kernel"]["redirected"],
        "a deleted pod's connect was still redirected"
    );
    // CHECK now fails: the pod must be captured and is not.
    let (ok, out) = sandbox.plugin("CHECK", "web", &check)?;
    assert!(!ok, "CHECK passed for a pod that is not enrolled: {out}");
    assert_eq!(out["code"], 101, "{out}");

    // The agent down: fail closed for the ambient pod, go ahead for the `none` one.
    mesh.kill_agent(1)?;
    let add = Sandbox::conf(&chain[1], Some(&prev));
    let (ok, out) = sandbox.plugin("ADD", "web", &add)?;
    assert!(
        !ok,
        "ADD of an ambient pod succeeded with the agent down: {out}"
    );
    assert_eq!(out["code"], 11, "try again later: {out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("must be captured"),
        "{out}"
    );
    let (ok, out) = sandbox.plugin("ADD", "batch", &add)?;
    ensure!(ok, "ADD of a `none` pod failed with the agent down: {out}");
    assert_eq!(out, prev);
    let (ok, out) = sandbox.plugin("DEL", "web", &del)?;
    ensure!(ok, "DEL with the agent down: {out}");
    let status = sandbox.plugin("STATUS", "web", &Sandbox::conf(&chain[1], None))?;
    assert!(!status.0, "STATUS ready with the agent down: {}", status.1);
    assert_eq!(status.1["code"], 50);

    // The bridge's own DEL, as the runtime ends the sandbox.
    let (ok, out) = sandbox.plugin("DEL", "web", &Sandbox::conf(&chain[0], Some(&prev)))?;
    ensure!(ok, "bridge DEL: {out}");
    Ok(())
}

/// VERSION, STATUS and the agent's readiness endpoint, and the agent's decision: a `none`
/// pod is left alone even with the agent up.
#[test]
fn version_and_an_opted_out_pod_with_the_agent_up() -> Result<()> {
    // The DaemonSet's readiness probe asks this (in the node's namespace: unique per lab).
    let mesh = Mesh::start_with_args(1, 1, &["--readiness-addr", "127.0.0.1:15021"])?;
    let ready = mesh
        .lab
        .node(1)
        .command("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:15021/healthz/ready",
        ])
        .output()?;
    ensure!(
        ready.status.success() && String::from_utf8_lossy(&ready.stdout).trim() == "ready",
        "readiness: {}{}",
        String::from_utf8_lossy(&ready.stdout),
        String::from_utf8_lossy(&ready.stderr)
    );
    mesh.apply_all("cni.yaml", &format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\n{CONFIG}"
    ))?;
    let sandbox = Sandbox::create(&mesh, "batch")?;
    let chain = sandbox.conflist(&mesh.agents[0].agent.socket());
    let (ok, out) = sandbox.plugin(
        "VERSION",
        "batch",
        &json!({"cniVersion": "1.0.0", "type": "mesh-cni"}),
    )?;
    ensure!(ok, "VERSION: {out}");
    assert!(
        out["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.0.0"))),
        "{out}"
    );
    let (status_ok, out) = sandbox.plugin("STATUS", "batch", &Sandbox::conf(&chain[1], None))?;
    ensure!(status_ok, "STATUS with the agent up: {out}");

    let (prev, (ok, result)) = sandbox.add("batch", &chain)?;
    ensure!(ok, "mesh-cni ADD: {result}");
    assert_eq!(result, prev);
    let status = mesh.status(1)?;
    assert_eq!(status["pods"], json!([]), "a `none` pod was enrolled");
    let (ok, out) = sandbox.plugin("CHECK", "batch", &Sandbox::conf(&chain[1], Some(&prev)))?;
    ensure!(ok, "CHECK of a `none` pod: {out}");

    // Chained without a previous plugin: refused as a configuration error.
    let (ok, out) = sandbox.plugin("ADD", "batch", &Sandbox::conf(&chain[1], None))?;
    assert!(!ok);
    assert_eq!(out["code"], 7, "{out}");
    Ok(())
}
