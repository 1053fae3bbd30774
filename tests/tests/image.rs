//! Issue 12: the node agent from its container image, as the DaemonSet runs it. podman
//! runs the image with the capabilities and host mounts of the rendered DaemonSet
//! (`mesh-agent manifest generate`), in a lab node's network namespace (`hostNetwork`);
//! the DaemonSet's init container, from the same image, installs `mesh-cni` into the
//! node's CNI directories; then pods are added through the chain the installer wrote,
//! as a runtime adds them, and their traffic goes through the agent in the container.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use mesh_agent::manifest;
use mesh_tests::{
    Mesh,
    cni::{CNI_PLUGINS, Sandbox},
    counter, eventually,
    image::{TestImage, agent_container, agent_launch, container_options, podman, run},
    records_to, wait_for,
};
use serde_json::{Value, json};

const ECHO_VIP: &str = "198.19.0.62";

/// The echo Service and both pods as Pod objects (their labels and service accounts), in
/// the ambient namespace `default`; with their addresses once the runtime gave them, as
/// the API server has them after the CNI ADD (the Service's endpoints come from those).
fn config(pod_ips: &[(&str, &str)]) -> String {
    let mut yaml = String::from(
        "\
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 198.19.0.62
  selector: {app: echo}
  ports: [{name: tcp-echo, port: 9000, targetPort: 9000}]
",
    );
    for name in ["echo", "web"] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}\nspec: {{serviceAccountName: {name}, containers: [{{name: app, image: app}}]}}\n"
        ));
        if let Some((_, ip)) = pod_ips.iter().find(|(pod, _)| *pod == name) {
            yaml.push_str(&format!("status: {{podIP: {ip}}}\n"));
        }
    }
    yaml
}

/// The node's own directories of the test (its CNI directories), removed at the end.
struct NodeDirs(PathBuf);

impl Drop for NodeDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `podman run` of the DaemonSet's init container with `args` in place of its own.
fn run_init_container(image: &TestImage, options: &[String], args: &[String]) -> Result<String> {
    run(podman()
        .args(["run", "--rm", "--ulimit", "nofile=1024:1024"])
        .args(["--ulimit", "nproc=1024:1024"])
        .args(options)
        .arg(&image.tag)
        .args(args))
}

#[test]
fn the_agent_runs_from_its_image_and_serves_pods_added_through_its_cni_plugin() -> Result<()> {
    mesh_tests::require_root();
    let id = format!("img{}", std::process::id());
    let image = TestImage::build(&id)?;
    let values = manifest::Values {
        image: image.tag.clone(),
        ..Default::default()
    };
    let pod = manifest::daemon_set(&values)
        .spec
        .and_then(|s| s.template.spec)
        .context("the DaemonSet has a pod template")?;
    let agent = pod.containers.first().context("the agent container")?;
    let install = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "install-cni")
        .context("the install-cni init container")?;

    // The node's CNI directories, in place of /opt/cni/bin and /etc/cni/net.d.
    let node = NodeDirs(std::env::temp_dir().join(format!("mesh-test-{id}-node")));
    let (cni_bin, cni_conf) = (node.0.join("opt-cni-bin"), node.0.join("etc-cni-net.d"));
    let host_dirs: [(&str, &Path); 2] = [("/opt/cni/bin", &cni_bin), ("/etc/cni/net.d", &cni_conf)];

    let launch = agent_launch(
        &image,
        &container_options(&pod, agent, &host_dirs)?,
        &node.0,
    )?;
    let mesh = Mesh::start_launched(1, 1, &[], launch)?;
    let name = &mesh.agents[0].agent.name;
    let listed = run(podman().args(["ps", "--format", "{{.Names}}"]))?;
    ensure!(
        listed.lines().any(|l| l == agent_container(name)),
        "the agent is not running in its container: {listed}"
    );
    mesh.apply_all("image.yaml", &config(&[]))?;

    // The pod network's configuration, as its own installer writes it, then the mesh's
    // init container appends mesh-cni, pointing it at this agent's socket.
    let echo = Sandbox::create(&mesh, "echo")?;
    let socket = mesh.agents[0].agent.socket();
    let network = json!({
        "cniVersion": "1.0.0",
        "name": "lab",
        "plugins": [echo.conflist(&socket)[0].clone()],
    });
    std::fs::create_dir_all(&cni_conf)?;
    let conflist = cni_conf.join("10-lab.conflist");
    std::fs::write(&conflist, network.to_string())?;
    let mut install_args = install.args.clone().unwrap_or_default();
    let at = install_args
        .iter()
        .position(|a| a == "--agent-socket")
        .context("install-cni names the agent socket")?;
    install_args[at + 1] = socket.display().to_string();
    install_args.extend(["--wait".into(), "10s".into()]);
    let install_options = container_options(&pod, install, &host_dirs)?;
    let said = run_init_container(&image, &install_options, &install_args)?;
    let chain: Value = serde_json::from_slice(&std::fs::read(&conflist)?)?;
    let plugins = chain["plugins"].as_array().cloned().unwrap_or_default();
    assert_eq!(plugins.len(), 2, "{said}{chain}");
    assert_eq!(
        plugins[0], network["plugins"][0],
        "the network plugin stays first"
    );
    assert_eq!(plugins[1]["type"], "mesh-cni");
    assert_eq!(plugins[1]["agentSocket"], json!(socket));
    ensure!(
        cni_bin.join("mesh-cni").exists(),
        "mesh-cni not installed: {said}"
    );

    // Pods added through that chain, the runtime finding mesh-cni where it was installed.
    let dirs = format!("{CNI_PLUGINS}:{}", cni_bin.display());
    let echo = echo.with_plugin_dirs(dirs.clone());
    let web = Sandbox::create(&mesh, "web")?.with_plugin_dirs(dirs);
    let mut ips = Vec::new();
    for (sandbox, pod_name) in [(&echo, "echo"), (&web, "web")] {
        let (prev, (ok, result)) = sandbox.add(pod_name, &plugins)?;
        ensure!(ok, "mesh-cni ADD of {pod_name}: {result}");
        let ip = prev["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .context("no address in the bridge's result")?
            .to_string();
        ips.push((prev, ip));
    }
    mesh.apply_all(
        "image.yaml",
        &config(&[("echo", ips[0].1.as_str()), ("web", ips[1].1.as_str())]),
    )?;
    let status = mesh.status(1)?;
    for pod_name in ["echo", "web"] {
        let enrolled = status["pods"]
            .as_array()
            .is_some_and(|pods| pods.iter().any(|p| p["name"] == pod_name));
        ensure!(enrolled, "{pod_name} not enrolled: {}", status["pods"]);
    }

    // web -> the echo Service: through the agent in the container, on both sides.
    let _server = echo
        .command(mesh_tests::agent_bin())
        .args(["app", "echo", "--listen", "0.0.0.0:9000"])
        .spawn()?;
    let dst = format!("{ECHO_VIP}:9000");
    let mut last = String::new();
    wait_for("web's echo through the mesh", || {
        let out = web
            .command(mesh_tests::agent_bin())
            .args(["app", "tcp-client", "--connect", &dst, "--bytes", "65536"])
            .output()?;
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|o| o["intact"] == true))
    })
    .with_context(|| {
        let log = std::fs::read_to_string(mesh.log_path(1)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("last try: {last}\nthe agent's log ends:\n{tail}")
    })?;
    let web_ip = ips[1].1.clone();
    eventually(&mesh, 1, "the agent's record of web's connection", |s| {
        records_to(s, &dst).iter().any(|r| {
            r["source"]
                .as_str()
                .is_some_and(|src| src.starts_with(&format!("{web_ip}:")))
        })
    })?;
    let metrics = mesh.metrics(1)?;
    let opened = counter(
        &metrics,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "source"),
            ("source_principal", "cluster.local/ns/default/sa/web"),
            ("destination_principal", "cluster.local/ns/default/sa/echo"),
        ],
    );
    assert!(
        opened >= 1,
        "no connection web -> echo with their identities:\n{metrics}"
    );

    // DEL both, then the installer's uninstall leaves the network as it was.
    for ((sandbox, pod_name), (prev, _)) in [(&echo, "echo"), (&web, "web")].into_iter().zip(&ips) {
        let (ok, out) = sandbox.plugin("DEL", pod_name, &Sandbox::conf(&plugins[1], Some(prev)))?;
        ensure!(ok, "DEL {pod_name}: {out}");
    }
    let uninstall: Vec<String> = ["cni", "uninstall"]
        .iter()
        .map(ToString::to_string)
        .collect();
    run_init_container(&image, &install_options, &uninstall)?;
    let after: Value = serde_json::from_slice(&std::fs::read(&conflist)?)?;
    assert_eq!(after, network, "uninstall restores the network's own chain");
    assert!(!cni_bin.join("mesh-cni").exists());
    Ok(())
}
