//! `mesh-agent demo`: the embedded default. Builds a lab (two nodes, three pods each),
//! starts one agent per node watching a config directory that holds Istio's unchanged
//! Bookinfo YAML plus the pods the demo runs, runs Bookinfo-like services in the pods,
//! enrolls them, sends traffic between them by Service name through the agents (reviews
//! spread over v1, v2, v3) and exposes the product page on 127.0.0.1.
//! Ctrl-C (or `--duration`) removes everything: agents, pins, namespaces, cgroups.
use std::{net::SocketAddr, path::Path, process::Stdio, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use mesh_testbed::lab::{Lab, LabChild, LabSpec};
use tokio::net::TcpListener;

use crate::{
    launch::{self, LabAgent, StartOptions},
    pod::PodSockets,
    proxy::copy,
};

/// Which pod calls which Service (by name), every two seconds.
const CALLS: [((usize, usize), &str); 3] = [
    ((1, 1), "details"),
    ((1, 1), "reviews"),
    ((2, 1), "ratings"),
];

/// (app, version, node, pod) placement of the sample services.
const SERVICES: [(&str, &str, usize, usize); 6] = [
    ("productpage", "v1", 1, 1),
    ("details", "v1", 1, 2),
    ("ratings", "v1", 1, 3),
    ("reviews", "v1", 2, 1),
    ("reviews", "v2", 2, 2),
    ("reviews", "v3", 2, 3),
];
/// Istio's Bookinfo Services, Deployments and ServiceAccounts, unchanged (Apache-2.0, see
/// tests/fixtures/istio-bookinfo/README.md).
const BOOKINFO_YAML: &str = include_str!("../../tests/fixtures/istio-bookinfo/bookinfo.yaml");
const APP_PORT: u16 = 9080;
const BPFFS_ROOT: &str = "/sys/fs/bpf/mesh-demo";

pub struct DemoOptions {
    /// Host loopback address where the product page is exposed.
    pub listen: SocketAddr,
    /// Stop after this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
}

struct Agent {
    agent: LabAgent,
    child: LabChild,
}

pub async fn run(options: DemoOptions) -> Result<()> {
    let bin = std::env::current_exe().context("locating the mesh-agent binary")?;
    let lab = Lab::create(LabSpec {
        nodes: 2,
        pods_per_node: 3,
    })
    .context("creating the lab")?;
    println!(
        "lab {} created: 2 nodes, 6 pods (198.18.<node>.<10+pod>)",
        lab.id()
    );
    let result = demo(&lab, &bin, &options).await;
    println!("cleaning up lab {}", lab.id());
    drop(lab);
    result
}

async fn demo(lab: &Lab, bin: &Path, options: &DemoOptions) -> Result<()> {
    let config_dir = std::env::temp_dir().join(format!("demo-{}-config", lab.id()));
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(config_dir.join("bookinfo.yaml"), BOOKINFO_YAML)?;
    std::fs::write(config_dir.join("demo-pods.yaml"), pods_yaml(lab))?;
    let mut agents = Vec::new();
    let outcome = async {
        for node in 1..=2 {
            agents.push(start_agent(lab, bin, node, &config_dir).await?);
        }
        for (app, version, node, pod) in SERVICES {
            let mut cmd = lab.pod(node, pod).command(bin);
            cmd.args(["app", "http", "--listen", &format!("0.0.0.0:{APP_PORT}")])
                .args(["--name", &format!("{app}-{version}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            lab.spawn(&mut cmd)?;
            let labels = [
                ("app".to_string(), app.to_string()),
                ("version".into(), version.into()),
            ];
            let spec = launch::pod_spec(
                lab.pod(node, pod),
                format!("{app}-{version}"),
                format!("bookinfo-{app}"),
                labels.into(),
            );
            agents[node - 1].agent.client().enroll(&spec).await?;
            println!(
                "  {:<16} pod n{node}p{pod} {:<14} enrolled with agent {}",
                format!("{app}-{version}"),
                lab.pod(node, pod).ip(),
                agents[node - 1].agent.name
            );
        }
        println!(
            "\nconfiguration: {} (edit it, or `mesh-agent apply --state-dir {} FILE`)",
            config_dir.display(),
            agents[0].agent.state_dir.display()
        );
        serve(lab, &agents, options).await
    }
    .await;
    for agent in &agents {
        let _ = agent.child.kill();
        let _ = agent.agent.uninstall();
    }
    let _ = std::fs::remove_dir_all(&config_dir);
    let _ = std::fs::remove_dir_all(launch::lab_ca_dir(lab));
    outcome
}

/// The demo's pods as Kubernetes Pod objects with their addresses, so the Bookinfo
/// Services' selectors find them (off-cluster, nothing else knows pod IPs).
fn pods_yaml(lab: &Lab) -> String {
    // `default` in ambient mode, as `kubectl label namespace default
    // istio.io/dataplane-mode=ambient` does in Istio's Bookinfo tutorial: its pods talk
    // mutual TLS (HBONE) through the agents.
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n    istio.io/dataplane-mode: ambient\n",
    );
    for (app, version, node, pod) in SERVICES {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {app}-{version}\n  namespace: default\n  labels:\n    app: {app}\n    version: {version}\nspec:\n  serviceAccountName: bookinfo-{app}\n  containers:\n  - name: {app}\n    image: mesh-agent-app\n    ports:\n    - containerPort: {APP_PORT}\nstatus:\n  podIP: {}\n",
            lab.pod(node, pod).ip()
        ));
    }
    yaml
}

async fn start_agent(lab: &Lab, bin: &Path, node: usize, config_dir: &Path) -> Result<Agent> {
    let name = format!("demo-{}-n{node}", lab.id());
    let agent = LabAgent {
        state_dir: std::env::temp_dir().join(&name),
        bpffs_root: BPFFS_ROOT.into(),
        ca_dir: launch::lab_ca_dir(lab),
        name,
    };
    let options = StartOptions {
        extra_args: vec![
            "--config-dir".into(),
            config_dir.to_string_lossy().into_owned(),
        ],
        log_filter: "warn",
        stderr: Stdio::inherit(),
        timeout: Duration::from_secs(10),
    };
    let child = agent.start(lab, node, bin, options).await?;
    println!("agent {} running on node {node}", agent.name);
    Ok(Agent { agent, child })
}

async fn serve(lab: &Lab, agents: &[Agent], options: &DemoOptions) -> Result<()> {
    // The product page is reached from the host through node 1's namespace: the connection
    // enters the productpage pod like any outside client's, steered through the agent.
    let productpage = SocketAddr::new(lab.pod(1, 1).ip().into(), APP_PORT);
    let node_sockets = Arc::new(PodSockets::start(
        lab.node(1).netns_path(),
        "demo-ingress".into(),
    )?);
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    println!(
        "\nproduct page: curl http://{}/productpage   (Ctrl-C to stop)\n",
        options.listen
    );
    let ingress = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let sockets = node_sockets.clone();
            tokio::spawn(async move {
                let Ok(socket) = sockets.tcp_socket(&productpage).await else {
                    return;
                };
                if let Ok(mut upstream) = socket.connect(productpage).await {
                    let _ = copy::bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });

    // The calling pods get the resolv.conf a kubelet writes for namespace `default`; the
    // nameserver is their node's address (the kernel steers the queries to the agent
    // whatever it names).
    for ((node, pod), _) in CALLS {
        let search = [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ];
        lab.pod(node, pod).write_resolv_conf(
            &[lab.node(node).pod_gateway().into()],
            &search.map(String::from),
            &["ndots:5"],
        )?;
    }
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let result = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = tick.tick() => {}
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break Ok(());
        }
        // productpage calls details and reviews, reviews calls ratings: by Service name,
        // as Bookinfo's do; the agents answer the names and pick the endpoints.
        let mut answers = Vec::new();
        for ((node, pod), to) in CALLS {
            let url = format!("http://{to}:{APP_PORT}/{to}");
            let mut cmd = lab.pod(node, pod).command_with_etc("curl");
            cmd.args(["-s", "--max-time", "2", &url]);
            let out = tokio::task::spawn_blocking(move || cmd.output()).await;
            let answered = out
                .ok()
                .and_then(Result::ok)
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .and_then(|v| v["service"].as_str().map(str::to_string))
                .unwrap_or_else(|| "(failed)".into());
            answers.push(format!("{to} -> {answered}"));
        }
        println!("{}", answers.join("   "));
        for agent in agents {
            if let Ok(status) = agent.agent.client().status().await {
                let c = &status["connections"];
                println!(
                    "{:<22} connections {:>4}  bytes out {:>8}  in {:>8}",
                    agent.agent.name, c["opened"], c["bytes_sent"], c["bytes_received"]
                );
            }
        }
    };
    ingress.abort();
    result
}
