//! `mesh-agent demo`: the user's first contact. Runs a configuration as a whole mesh on
//! this host: a lab of `--nodes` nodes (network namespaces and cgroups), one agent per
//! node, the pods of the configuration's Deployments, ReplicaSets, StatefulSets,
//! DaemonSets and bare Pods (named as Kubernetes names them, spread over the nodes,
//! enrolled, each container running the built-in workload its image stands for), and the
//! ingress gateway in its own enrolled pod, exposed on `--listen` (127.0.0.1:8080). With no
//! `--config` the configuration is Istio's unchanged Bookinfo.
//!
//! Order: config ([`config`]) → plan ([`plan`]) → lab → trace store ([`traces`]) → agents →
//! pods (enroll, then start the app) → gateway → waypoints ([`waypoints`]) → wait until the product page (or the
//! gateway) answers, print how long that took → run until Ctrl-C, SIGTERM or `--duration`
//! → remove everything: processes, pins, state, namespaces, cgroups, files.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use mesh_config::snapshot::BuildOptions;
use mesh_config::source::dir::DirSource;
use mesh_config::{ConfigStore, LoadedObject, Object, Snapshot};
use mesh_testbed::lab::{Lab, LabChild, LabSpec};
use tokio::net::TcpListener;

use crate::{
    app::upstream,
    launch::{self, LabAgent, StartOptions},
};

/// `println!` that does not panic when stdout is gone (`mesh-agent demo | head`, a closed
/// terminal): a panic there would skip the cleanup.
macro_rules! say {
    () => {
        say!("")
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod config;
pub mod console;
pub mod control;
pub mod ingress;
pub mod plan;
pub mod pods;
pub mod prometheus;
pub mod role;
pub mod traces;

use plan::Plan;
use pods::{Mesh, Pods};

const BPFFS_ROOT: &str = "/sys/fs/bpf/mesh-demo";
/// How long the demo waits for its first served page before saying so.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DemoOptions {
    /// Directories or files of YAML; empty: Istio's Bookinfo.
    pub configs: Vec<PathBuf>,
    pub nodes: usize,
    /// Host loopback address where the ingress gateway is exposed.
    pub listen: SocketAddr,
    /// Host loopback address of the trace store's query API.
    pub traces: SocketAddr,
    /// Host loopback address of the console (graph, workloads, traces).
    pub console: SocketAddr,
    /// Run Prometheus, reachable on this host loopback address.
    pub prometheus: Option<SocketAddr>,
    /// Stop after this long (None: until Ctrl-C or SIGTERM).
    pub duration: Option<Duration>,
}

/// What runs, for cleanup whatever the point startup reached.
#[derive(Default)]
struct Running {
    agents: Vec<(LabAgent, LabChild)>,
    ingress: Option<tokio::task::JoinHandle<()>>,
    traces: Option<traces::Traces>,
    prometheus: Option<prometheus::Prometheus>,
    console: Option<console::Console>,
}

pub async fn run(options: DemoOptions, started: Instant) -> Result<()> {
    let bin = std::env::current_exe().context("locating the mesh-agent binary")?;
    // First, so a taken port fails before anything is created.
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let config_dir = std::env::temp_dir().join(format!("mesh-demo-{}", std::process::id()));
    sweep_killed_demos();
    let outcome = async {
        let objects = config::prepare(&config_dir, &options.configs)?;
        let plan = plan::plan(&objects, options.nodes, &mut fastrand::Rng::new());
        let mut lab = Lab::create(LabSpec {
            nodes: plan.nodes,
            pods_per_node: plan.pods_per_node,
        })
        .context("creating the lab")?;
        say!(
            "lab {}: {} node(s), {} pod(s) (198.18.<node>.<10+pod>)",
            lab.id(),
            plan.nodes,
            plan.workloads.len() + 1
        );
        let mut running = Running::default();
        let result = tokio::select! {
            r = demo(&mut lab, &bin, &plan, &objects, &config_dir, listener, &mut running, &options, started) => r,
            () = shutdown_signal() => Ok(()),
        };
        say!("stopping: removing lab {}", lab.id());
        if let Some(ingress) = running.ingress.take() {
            ingress.abort();
        }
        running.console = None;
        running.traces = None;
        running.prometheus = None;
        for (agent, child) in &running.agents {
            let _ = child.kill();
            if let Err(e) = agent.uninstall() {
                eprintln!("removing agent {}: {e}", agent.name);
            }
        }
        let _ = std::fs::remove_dir_all(launch::lab_ca_dir(&lab));
        drop(lab);
        result
    }
    .await;
    let _ = std::fs::remove_dir_all(&config_dir);
    outcome
}

/// Removes what demos (and test runs) killed before their cleanup left: the testbed
/// sweeps their labs (processes, namespaces, cgroups), this the demo's own files named
/// after the lab or the dead process.
fn sweep_killed_demos() {
    for lab in mesh_testbed::lab::sweep_dead_labs() {
        let agent_prefix = format!("demo-{}-", lab.id);
        let tmp = std::env::temp_dir();
        let mut paths = vec![
            tmp.join(format!("mesh-demo-{}", lab.owner_pid)),
            Path::new(control::RECORD_DIR).join(format!("{}.json", lab.owner_pid)),
            tmp.join(format!("mesh-ca-{}", lab.id)),
            tmp.join(format!("mesh-demo-prometheus-{}", lab.id)),
        ];
        for dir in [Path::new(BPFFS_ROOT), tmp.as_path()] {
            let named_after_lab = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&agent_prefix))
                .map(|e| e.path());
            paths.extend(named_after_lab);
        }
        for path in paths.iter().filter(|p| p.exists()) {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(e) = removed {
                eprintln!("removing {}: {e}", path.display());
            }
        }
        say!(
            "removed lab {} left by a run that was killed (pid {})",
            lab.id,
            lab.owner_pid
        );
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn demo(
    lab: &mut Lab,
    bin: &Path,
    plan: &Plan,
    objects: &[LoadedObject],
    config_dir: &Path,
    listener: TcpListener,
    running: &mut Running,
    options: &DemoOptions,
    started: Instant,
) -> Result<()> {
    let addresses: Vec<_> = plan
        .all_pods()
        .map(|p| {
            let pod = lab.pod(p.node, p.slot);
            (p, pod.ip(), pod.ipv6())
        })
        .collect();
    config::write_pods(config_dir, objects, &addresses)?;
    // Before the gateway and the waypoints start: they read where to export at start.
    let node1 = lab.node(1);
    let store = traces::start(node1.netns_path(), node1.addr(), options.traces).await?;
    if traces::has_mesh_config(objects) {
        say!(
            "  the configuration's own mesh config (ConfigMap istio-system/istio) decides tracing"
        );
    } else {
        traces::write_mesh_config(config_dir, store.otlp)?;
    }
    say!("  trace store    http://{}/api/traces", store.query);
    running.traces = Some(store);

    let agents = (1..=plan.nodes).map(|node| start_agent(lab, bin, node, config_dir));
    for (agent, child) in futures_util::future::try_join_all(agents).await? {
        say!("  agent {} running", agent.name);
        running.agents.push((agent, child));
    }

    let agents: Vec<LabAgent> = running.agents.iter().map(|(a, _)| a.clone()).collect();
    let mesh = Mesh {
        bin,
        config_dir,
        agents: &agents,
        metrics_addr: metrics_addr(),
    };
    let mut pods = Pods::default();
    for pod in plan.all_pods() {
        pods::enroll(lab, pod, &mesh).await?;
    }
    for pod in &plan.workloads {
        pods.start_processes(lab, &mesh, pod.clone())?;
    }
    // Before any traffic: an endpoint that refuses a first connection is ejected for a
    // while, and the first pages would miss it.
    pods::wait_listening(lab, &plan.workloads.iter().collect::<Vec<_>>()).await?;
    let gateway_pod = lab.pod(plan.gateway.node, plan.gateway.slot).clone();
    let mut gateway = gateway_pod.command(bin);
    gateway
        .args(["gateway", "--config-dir"])
        .arg(config_dir)
        .args(["--labels", &pods::labels_arg(&plan.gateway)])
        .args(["--namespace", &plan.gateway.namespace])
        .args(["--workload", plan::GATEWAY_SERVICE_ACCOUNT])
        .args(["--metrics-addr", &metrics_addr()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let gateway = lab.spawn(&mut gateway).context("starting the gateway")?;
    pods.adopt(plan.gateway.clone(), vec![gateway]);
    say!(
        "  pod {:<40} {} {:<14} ingress gateway",
        format!("{}/{}", plan.gateway.namespace, plan.gateway.name),
        gateway_pod.name(),
        gateway_pod.ip()
    );
    for waypoint in &plan.waypoints {
        pods.start_processes(lab, &mesh, waypoint.clone())?;
    }
    pods.offer_unused(lab);

    let targets = prometheus::Targets {
        agents: lab.nodes().iter().map(|n| n.addr()).collect(),
        proxies: std::iter::once(("gateway", gateway_pod.ip()))
            .chain(
                plan.waypoints
                    .iter()
                    .map(|w| ("waypoint", lab.pod(w.node, w.slot).ip())),
            )
            .collect(),
    };
    let agent_targets = lab.nodes().iter().map(|n| console::scrape::Target {
        addr: SocketAddr::from((n.addr(), prometheus::METRICS_PORT)),
        proxy_workload: None,
    });
    let proxy_targets = std::iter::once(&plan.gateway)
        .chain(&plan.waypoints)
        .map(|p| console::scrape::Target {
            addr: SocketAddr::from((lab.pod(p.node, p.slot).ip(), prometheus::METRICS_PORT)),
            proxy_workload: Some(p.workload_name()),
        });
    let console_sources = console::Sources {
        targets: agent_targets.chain(proxy_targets).collect(),
        proxies: std::iter::once(&plan.gateway)
            .chain(&plan.waypoints)
            .map(|p| p.workload_name())
            .collect(),
        // One per workload, as the metrics name them: a Deployment's replicas are one.
        workloads: plan
            .all_pods()
            .map(|p| console::Workload {
                namespace: p.namespace.clone(),
                name: p.workload_name(),
                labels: p.labels.clone(),
                service_account: p.service_account.clone(),
            })
            .fold(Vec::new(), |mut all: Vec<console::Workload>, w| {
                if !all
                    .iter()
                    .any(|o| o.namespace == w.namespace && o.name == w.name)
                {
                    all.push(w);
                }
                all
            }),
        config_dir: config_dir.to_path_buf(),
        traces: running.traces.as_ref().map_or(options.traces, |t| t.query),
    };
    let console = console::start(node1.netns_path(), options.console, console_sources).await?;
    say!("  console        http://{}/", console.url);
    running.console = Some(console);
    if let Some(listen) = options.prometheus {
        let server = prometheus::start(lab, &targets, listen).await?;
        say!(
            "  prometheus     http://{}/   (scraping {} agent(s), the gateway, {} waypoint(s); log {})",
            server.url,
            targets.agents.len(),
            plan.waypoints.len(),
            server.log_path().display()
        );
        running.prometheus = Some(server);
    }

    let gateway_port = gateway_port(objects);
    match gateway_port {
        Some(port) => {
            let target = SocketAddr::new(gateway_pod.ip().into(), port);
            running.ingress = Some(ingress::spawn(
                listener,
                lab.node(plan.gateway.node).netns_path(),
                target,
            )?);
        }
        None => say!(
            "no Gateway selects istio=ingressgateway with an HTTP server: nothing is exposed on {}",
            options.listen
        ),
    }

    let bookinfo = has_service(objects, "productpage");
    if gateway_port.is_some() {
        let path = if bookinfo { "/productpage" } else { "/" };
        match wait_until_served(options.listen, path, bookinfo).await {
            Ok(()) => say!(
                "\nready in {:.2} s (from the command to a served {})",
                started.elapsed().as_secs_f64(),
                if bookinfo { "product page" } else { "page" }
            ),
            // The user's routes may still be wrong: say so and keep running for them.
            Err(e) => say!("\nwarning: {e}"),
        }
    }
    // From here `mesh-agent apply -f` and `delete -f` find this demo.
    let _record =
        control::record(config_dir).context("recording the demo for `mesh-agent apply`")?;
    print_usage(plan, running, bookinfo, options);
    let until = options.duration.map(|d| tokio::time::Instant::now() + d);
    follow_configuration(lab, &mesh, &mut pods, plan.nodes, until).await
}

/// Until `until` (or forever), starts and stops pods as the configuration directory
/// changes: each change the mesh accepts (`mesh-agent apply -f`, `delete -f`) is compared
/// with the running pods ([`plan::reconcile`]) and carried out ([`Pods::apply`]).
async fn follow_configuration(
    lab: &mut Lab,
    mesh: &Mesh<'_>,
    pods: &mut Pods,
    nodes: usize,
    until: Option<tokio::time::Instant>,
) -> Result<()> {
    let store = Arc::new(ConfigStore::new(BuildOptions::default()));
    let _watch = DirSource::spawn(mesh.config_dir, store.clone())
        .context("watching the demo's configuration")?;
    let mut changed = store.subscribe();
    let mut rng = fastrand::Rng::new();
    loop {
        let stop = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            seen = changed.changed() => if seen.is_err() { return Ok(()) },
            () = stop => return Ok(()),
        }
        let loaded = pods::configuration_files(mesh.config_dir)
            .and_then(|files| mesh_config::load_paths(&files).map_err(anyhow::Error::from));
        let objects = match loaded {
            Ok(loaded) => loaded.objects,
            Err(e) => {
                say!("warning: the pods stay as they are: {e:#}");
                continue;
            }
        };
        let changes = plan::reconcile(&pods.plans(), &objects, nodes, &mut rng);
        if !changes.is_empty() {
            pods.apply(lab, mesh, changes, &objects).await?;
        }
    }
}

/// Every agent, gateway and waypoint serves `/metrics` on Istio's port, in its own
/// namespace (the node's, the pod's).
fn metrics_addr() -> String {
    format!("0.0.0.0:{}", prometheus::METRICS_PORT)
}

async fn start_agent(
    lab: &Lab,
    bin: &Path,
    node: usize,
    config_dir: &Path,
) -> Result<(LabAgent, LabChild)> {
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
            "--metrics-addr".into(),
            metrics_addr(),
        ],
        log_filter: "warn",
        stderr: Stdio::inherit(),
        timeout: Duration::from_secs(20),
    };
    let child = agent.start(lab, node, bin, options).await?;
    Ok((agent, child))
}

/// The gateway's first plain HTTP server port, from the configuration as it will see it.
fn gateway_port(objects: &[LoadedObject]) -> Option<u16> {
    let loaded = mesh_config::LoadedConfig {
        objects: objects.to_vec(),
        warnings: Vec::new(),
    };
    let snapshot = Snapshot::build(&loaded).ok()?;
    let labels = plan::GATEWAY_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::l7::gateway::served_ports(&snapshot, &labels)
        .into_iter()
        .find(|(_, served)| served.tls.is_none())
        .map(|(port, _)| port)
}

fn has_service(objects: &[LoadedObject], name: &str) -> bool {
    objects.iter().any(|o| {
        matches!(o.object, Object::Service(_)) && o.object.meta().name.as_deref() == Some(name)
    })
}

/// Polls `GET path` through the exposed gateway until it answers: 200 for the product
/// page; for a user's configuration anything but the gateway's "no upstream yet" (502,
/// 503, 504), since `/` may well be unrouted (404) in it.
async fn wait_until_served(listen: SocketAddr, path: &str, want_ok: bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let host = listen.ip().to_string();
    let none = hyper::HeaderMap::new();
    loop {
        let answer = upstream::get(&host, listen.port(), path, &none, Duration::from_secs(2)).await;
        let served = answer.is_ok_and(|a| {
            if want_ok {
                a.status.is_success()
            } else {
                !matches!(a.status.as_u16(), 502..=504)
            }
        });
        if served {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "http://{listen}{path} did not answer 200 within {} s",
            READY_TIMEOUT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn print_usage(plan: &Plan, running: &Running, bookinfo: bool, options: &DemoOptions) {
    let url = format!("http://{}", options.listen);
    say!();
    if let Some(console) = &running.console {
        say!(
            "  console        http://{}/   (service graph, workloads, traces)",
            console.url
        );
    }
    if let Some(traces) = &running.traces {
        say!(
            "  traces         http://{}/api/traces   (the last spans of the gateway and waypoints)",
            traces.query
        );
    }
    if bookinfo {
        say!("  product page   {url}/productpage   (open it in a browser; sign in as jason)");
        say!("  products API   {url}/api/v1/products");
        say!("\ntry:");
        say!(
            "  for i in $(seq 10); do curl -s {url}/productpage | grep -o 'Reviews served by: <b>[^<]*' ; done"
        );
    } else {
        say!("  gateway        {url}/");
        say!("\ntry:");
        say!("  curl -s {url}/");
    }
    say!(
        "  mesh-agent apply -f my-virtual-service.yaml    # the agents, gateway and waypoints reload it"
    );
    say!("  mesh-agent delete -f my-virtual-service.yaml   # and back");
    if let Some((agent, _)) = running.agents.first() {
        say!(
            "  mesh-agent status --name {} --state-dir {}",
            agent.name,
            agent.state_dir.display()
        );
    }
    say!(
        "\n{} pods on {} node(s); Ctrl-C removes everything",
        plan.workloads.len() + 1,
        plan.nodes
    );
}
