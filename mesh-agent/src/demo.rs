//! `mesh-agent demo`: the embedded default. Builds a lab (two nodes, two pods each), starts
//! one agent per node, runs Bookinfo-like sample services in the pods, enrolls them, sends
//! traffic between them through the agents and exposes the product page on 127.0.0.1.
//! Ctrl-C (or `--duration`) removes everything: agents, pins, namespaces, cgroups.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use mesh_testbed::lab::{Lab, LabChild, LabSpec};
use tokio::net::TcpListener;

use crate::{
    api::client::ApiClient,
    pod::{PodSockets, PodSpec},
    proxy::copy,
};

/// (service, node, pod) placement of the sample services.
const SERVICES: [(&str, usize, usize); 4] = [
    ("productpage", 1, 1),
    ("details", 1, 2),
    ("reviews", 2, 1),
    ("ratings", 2, 2),
];
const APP_PORT: u16 = 9080;
const BPFFS_ROOT: &str = "/sys/fs/bpf/mesh-demo";

pub struct DemoOptions {
    /// Host loopback address where the product page is exposed.
    pub listen: SocketAddr,
    /// Stop after this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
}

struct Agent {
    name: String,
    state_dir: PathBuf,
    child: LabChild,
}

pub async fn run(options: DemoOptions) -> Result<()> {
    let bin = std::env::current_exe().context("locating the mesh-agent binary")?;
    let lab = Lab::create(LabSpec {
        nodes: 2,
        pods_per_node: 2,
    })
    .context("creating the lab")?;
    println!(
        "lab {} created: 2 nodes, 4 pods (198.18.<node>.<10+pod>)",
        lab.id()
    );
    let result = demo(&lab, &bin, &options).await;
    println!("cleaning up lab {}", lab.id());
    drop(lab);
    result
}

async fn demo(lab: &Lab, bin: &Path, options: &DemoOptions) -> Result<()> {
    let mut agents = Vec::new();
    let outcome = async {
        for node in 1..=2 {
            agents.push(start_agent(lab, bin, node).await?);
        }
        for (service, node, pod) in SERVICES {
            let mut cmd = lab.pod(node, pod).command(bin);
            cmd.args([
                "app",
                "http",
                "--listen",
                &format!("0.0.0.0:{APP_PORT}"),
                "--name",
                service,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            lab.spawn(&mut cmd)?;
            let p = lab.pod(node, pod);
            let spec = PodSpec {
                name: format!("{service}-v1"),
                namespace: "default".into(),
                service_account: format!("bookinfo-{service}"),
                labels: [
                    ("app".to_string(), service.to_string()),
                    ("version".into(), "v1".into()),
                ]
                .into(),
                netns: p.netns_path().to_path_buf(),
                cgroup: p.cgroup_path().to_path_buf(),
                ips: vec![p.ip().into(), p.ipv6().into()],
            };
            ApiClient::new(agents[node - 1].state_dir.join("agent.sock"))
                .enroll(&spec)
                .await?;
            println!(
                "  {service:<12} pod n{node}p{pod} {:<14} enrolled with agent {}",
                p.ip(),
                agents[node - 1].name
            );
        }
        serve(lab, &agents, options).await
    }
    .await;
    for agent in &agents {
        let _ = agent.child.kill();
        let _ = crate::redirect::uninstall(Path::new(BPFFS_ROOT), &agent.name);
        let _ = std::fs::remove_dir_all(&agent.state_dir);
    }
    outcome
}

async fn start_agent(lab: &Lab, bin: &Path, node: usize) -> Result<Agent> {
    let name = format!("demo-{}-n{node}", lab.id());
    let state_dir = std::env::temp_dir().join(&name);
    let mut cmd = lab.node(node).command(bin);
    cmd.args(["run", "--name", &name, "--bpffs-root", BPFFS_ROOT])
        .arg("--state-dir")
        .arg(&state_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let child = lab.spawn(&mut cmd).context("starting an agent")?;
    let client = ApiClient::new(state_dir.join("agent.sock"));
    for _ in 0..200 {
        if client.status().await.is_ok() {
            println!("agent {name} running on node {node}");
            return Ok(Agent {
                name,
                state_dir,
                child,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("agent {name} exited at start-up: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("agent {name} did not answer within 10 s")
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
        // productpage calls details (same node) and reviews (other node); reviews calls ratings.
        for (from, to) in [
            ((1, 1), "details"),
            ((1, 1), "reviews"),
            ((2, 1), "ratings"),
        ] {
            let (node, pod) = from;
            let target = SERVICES
                .iter()
                .find(|s| s.0 == to)
                .map(|s| lab.pod(s.1, s.2).ip());
            let Some(ip) = target else { continue };
            let url = format!("http://{ip}:{APP_PORT}/{to}");
            let _ = tokio::task::spawn_blocking({
                let mut cmd = lab.pod(node, pod).command("curl");
                cmd.args(["-s", "-o", "/dev/null", "--max-time", "2", &url]);
                move || cmd.status()
            })
            .await;
        }
        for agent in agents {
            if let Ok(status) = ApiClient::new(agent.state_dir.join("agent.sock"))
                .status()
                .await
            {
                let c = &status["connections"];
                println!(
                    "{:<22} connections {:>4}  bytes out {:>8}  in {:>8}",
                    agent.name, c["opened"], c["bytes_sent"], c["bytes_received"]
                );
            }
        }
    };
    ingress.abort();
    result
}
