//! `mesh-agent`: the node agent and its companion commands.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mesh_agent::{
    agent::{Agent, AgentConfig},
    api::{client::ApiClient, server},
    app, demo, l7,
    pod::PodSpec,
    redirect,
};

#[derive(Parser)]
#[command(
    name = "mesh-agent",
    version,
    about = "Sidecarless service mesh: node agent and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How access log lines (one per connection, one per request) are written: `text`
    /// (`key=value`) or `json` (one object per line, Envoy's field names, for a log
    /// collector). Other log lines stay text.
    #[arg(long, global = true, value_enum, default_value_t = AccessLogFormat::Text)]
    access_log_format: AccessLogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum AccessLogFormat {
    Text,
    Json,
}

/// The DNS proxy's flags.
#[derive(clap::Args, Clone)]
struct DnsArgs {
    /// Upstream resolver for names the mesh does not own (repeatable, e.g.
    /// 198.18.1.13:53). Default: the nameservers of --dns-resolv-conf.
    #[arg(long = "dns-upstream")]
    upstreams: Vec<SocketAddr>,
    /// The node's resolv.conf, read for upstream resolvers when none is given.
    #[arg(long = "dns-resolv-conf", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Upstream answers the DNS cache keeps at most.
    #[arg(long = "dns-cache-entries", default_value_t = 4096)]
    cache_entries: usize,
}

impl DnsArgs {
    fn config(self) -> mesh_agent::dns::DnsConfig {
        let upstreams = if self.upstreams.is_empty() {
            // A node without resolvers still gets the mesh's own names; the rest SERVFAIL.
            mesh_agent::dns::DnsConfig::upstreams_from_resolv_conf(&self.resolv_conf)
                .unwrap_or_else(|e| {
                    tracing::warn!(file = %self.resolv_conf.display(), error = %e, "no upstream DNS resolvers");
                    Vec::new()
                })
        } else {
            self.upstreams
        };
        mesh_agent::dns::DnsConfig {
            upstreams,
            cluster_domain: self.cluster_domain,
            cache_entries: self.cache_entries,
        }
    }
}

/// A YAML file, as `kubectl` takes it (`-f FILE`) or as a plain argument.
#[derive(clap::Args, Clone)]
struct FileArg {
    #[arg(short = 'f', long = "filename", conflicts_with = "path")]
    filename: Option<PathBuf>,
    path: Option<PathBuf>,
}

impl FileArg {
    fn get(self) -> Result<PathBuf> {
        self.filename
            .or(self.path)
            .context("which file? give -f FILE")
    }
}

/// Where the gateway and the waypoint read their configuration: a directory, the
/// Kubernetes API, or both.
#[derive(clap::Args, Clone)]
struct ProxyConfigArgs {
    /// Directory of Kubernetes and Istio YAML to load and watch for changes.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API (KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    kubernetes: bool,
    /// Watch the Kubernetes API of this kubeconfig (implies --kubernetes).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl ProxyConfigArgs {
    fn sources(self) -> l7::routes::ConfigSources {
        l7::routes::ConfigSources {
            kubernetes: (self.kubernetes || self.kubeconfig.is_some()).then_some(self.kubeconfig),
            dir: self.config_dir,
        }
    }
}

/// The agent's TCP listeners for Prometheus and the kubelet's probe.
#[derive(clap::Args, Clone)]
struct AdminArgs {
    /// Also serve Prometheus metrics over TCP here (e.g. 0.0.0.0:15020).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Serve `GET /healthz/ready` here once the agent is up (e.g. 0.0.0.0:15021).
    #[arg(long)]
    readiness_addr: Option<SocketAddr>,
}

/// Where one agent keeps its pins, state and API socket.
#[derive(clap::Args, Clone)]
struct AgentPaths {
    /// Agent name: unique per node; names the pin and state directories.
    #[arg(long, default_value = "node")]
    name: String,
    /// Parent of the per-agent bpffs pin directory.
    #[arg(long, default_value = redirect::DEFAULT_BPFFS_ROOT)]
    bpffs_root: PathBuf,
    /// State directory (enrolled pods). Default: /run/mesh-agent/<name>.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Unix socket of the enrollment and status API. Default: <state-dir>/agent.sock.
    #[arg(long)]
    api_socket: Option<PathBuf>,
}

impl AgentPaths {
    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/mesh-agent").join(&self.name))
    }
    fn api_socket(&self) -> PathBuf {
        self.api_socket
            .clone()
            .unwrap_or_else(|| self.state_dir().join("agent.sock"))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent.
    Run {
        #[command(flatten)]
        paths: AgentPaths,
        /// Destination port never captured outbound (repeatable).
        #[arg(long = "exclude-port")]
        exclude_ports: Vec<u16>,
        /// The cgroup v2 directory the capture programs attach to, once; every pod's cgroup
        /// must lie below it. Default: the kubelet's kubepods cgroup, else the cgroup2 root.
        #[arg(long)]
        capture_cgroup: Option<PathBuf>,
        /// On exit, detach everything and remove the pins (as `uninstall`).
        #[arg(long)]
        cleanup: bool,
        /// Directory of Kubernetes and Istio YAML to load and watch for changes.
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// Boxed, as `dns`: keeps `Run` from dwarfing the other commands.
        #[command(flatten)]
        admin: Box<AdminArgs>,
        /// Watch the Kubernetes API (KUBECONFIG, ~/.kube/config or in-cluster).
        #[arg(long)]
        kubernetes: bool,
        /// Watch the Kubernetes API of this kubeconfig (implies --kubernetes).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Let the kernel programs log every redirect (debug level; costs a ring-buffer
        /// write per connection). Takes effect when the programs are first loaded.
        #[arg(long)]
        kernel_debug_logs: bool,
        /// The mesh CA in Istio's `cacerts` layout (ca-cert.pem, ca-key.pem, root-cert.pem,
        /// cert-chain.pem); a root CA is generated there if the directory is empty. Agents
        /// of one mesh must share it.
        #[arg(long, default_value = "/var/lib/mesh-agent/cacerts")]
        ca_dir: PathBuf,
        /// SPIFFE trust domain of workload identities.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Lifetime of workload certificates (rotated when half of it is left), e.g. 24h.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        cert_lifetime: std::time::Duration,
        /// Istio's root namespace: mesh-wide PeerAuthentication and AuthorizationPolicy.
        #[arg(long, default_value = "istio-system")]
        root_namespace: String,
        /// Boxed: the largest part of `Run`, which dwarfs the other commands.
        #[command(flatten)]
        dns: Box<DnsArgs>,
    },
    /// The ingress gateway: serves the `Gateway` servers that select its labels, routing
    /// by VirtualService. Run it inside an enrolled pod: the node agent carries its
    /// upstream connections over HBONE.
    Gateway {
        #[command(flatten)]
        config: ProxyConfigArgs,
        /// The gateway workload's labels, matched by `Gateway.spec.selector`
        /// (`key=value,key=value`).
        #[arg(long, default_value = "istio=ingressgateway", value_parser = parse_labels)]
        labels: std::collections::BTreeMap<String, String>,
        /// The gateway's namespace (DestinationRule lookup, metrics labels).
        #[arg(long, default_value = "istio-system")]
        namespace: String,
        /// The gateway's workload name (the `source_workload` of its metrics).
        #[arg(long, default_value = "istio-ingressgateway")]
        workload: String,
        /// SPIFFE trust domain of workload identities (principals in metrics).
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Serve `GET /metrics` and `GET /healthz/ready` here (e.g. 0.0.0.0:15020).
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
    },
    /// A waypoint: L7 routing and AuthorizationPolicy for the Services bound to it with
    /// `istio.io/use-waypoint`. Run it inside an enrolled pod labelled
    /// `gateway.networking.k8s.io/gateway-name=<name>`: the node agent terminates HBONE
    /// there and hands each connection over on 127.0.0.1:15088.
    Waypoint {
        #[command(flatten)]
        config: ProxyConfigArgs,
        /// The waypoint's Gateway (class `istio-waypoint`).
        #[arg(long, default_value = "waypoint")]
        name: String,
        /// The namespace of that Gateway and of this pod.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The workload name in metrics (default: the waypoint's name).
        #[arg(long)]
        workload: Option<String>,
        /// SPIFFE trust domain of workload identities.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Istio's root namespace: mesh-wide AuthorizationPolicies.
        #[arg(long, default_value = "istio-system")]
        root_namespace: String,
        /// Where the node agent hands connections over.
        #[arg(long, default_value_t = l7::waypoint::WaypointOptions::default_listen())]
        listen: SocketAddr,
        /// Serve `GET /metrics` and `GET /healthz/ready` here (e.g. 0.0.0.0:15020).
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
    },
    /// Remove an agent's pinned programs, maps and links, and its state.
    Uninstall {
        #[command(flatten)]
        paths: AgentPaths,
    },
    /// Print a running agent's status as JSON.
    Status {
        #[command(flatten)]
        paths: AgentPaths,
    },
    /// Enroll a pod with a running agent (JSON pod spec from a file, or - for stdin).
    Enroll {
        #[command(flatten)]
        paths: AgentPaths,
        file: PathBuf,
    },
    /// Remove a pod from a running agent.
    Unenroll {
        #[command(flatten)]
        paths: AgentPaths,
        namespace: String,
        pod: String,
    },
    /// Run a configuration as a whole mesh on this host (default: Istio's Bookinfo): a lab
    /// of nodes, one agent per node, the Deployments' pods, the ingress gateway.
    Demo {
        /// Directory (or file) of Kubernetes and Istio YAML to run (repeatable).
        #[arg(long = "config")]
        configs: Vec<PathBuf>,
        /// Number of nodes the pods are spread over.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=250))]
        nodes: u16,
        /// Where the ingress gateway is exposed (host loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's trace store answers (`GET /api/traces`; host loopback; port 0:
        /// any free port). The gateway and waypoints export their spans to it over OTLP.
        #[arg(long, default_value = "127.0.0.1:16686")]
        traces: SocketAddr,
        /// Where the demo's console answers: the service graph, each workload's traffic and
        /// configuration, the traces (host loopback; port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:20001")]
        console: SocketAddr,
        /// Also run Debian's Prometheus server scraping every agent, the gateway and the
        /// waypoints, its UI and API on this host loopback address (default
        /// 127.0.0.1:9090; port 0: any free port).
        #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:9090")]
        prometheus: Option<SocketAddr>,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Check Kubernetes and Istio YAML files or directories, as `istioctl validate` /
    /// `analyze` would; non-zero exit with one line per error.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the configuration snapshot: a running agent's, or built from --config paths.
    ConfigDump {
        #[command(flatten)]
        paths: AgentPaths,
        /// Build from these files or directories instead of asking a running agent.
        #[arg(long)]
        config: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "json")]
        format: DumpFormat,
    },
    /// Apply a YAML file (what `kubectl apply -f` is to a cluster): to the agent `--name`
    /// when its API socket exists, else to the running demo.
    Apply {
        #[command(flatten)]
        paths: AgentPaths,
        /// The demo to apply to, by pid, when several run.
        #[arg(long)]
        demo: Option<u32>,
        #[command(flatten)]
        file: FileArg,
    },
    /// Delete the objects a YAML file names from the running demo (what was applied to it
    /// with `mesh-agent apply`), as `kubectl delete -f`.
    Delete {
        /// The demo, by pid, when several run.
        #[arg(long)]
        demo: Option<u32>,
        #[command(flatten)]
        file: FileArg,
    },
    /// Kubernetes manifests to install the mesh (as `istioctl manifest generate`).
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Put the `mesh-cni` plugin into this node's CNI configuration, or take it out (the
    /// DaemonSet's init container runs `install`).
    Cni {
        #[command(subcommand)]
        command: CniCommand,
    },
    /// Built-in sample workloads.
    App {
        #[command(subcommand)]
        app: AppCommand,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DumpFormat {
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Print every object an install needs as YAML (`deploy/mesh.yaml` is the default).
    Generate {
        /// Change a value: crds (true/false: the Istio kinds' CustomResourceDefinitions),
        /// gateway (true/false: the ingress gateway's Deployment and Service),
        /// namespace, image, imagePullPolicy, captureCgroup, caSecret,
        /// resources.requests.cpu, resources.requests.memory, resources.limits.memory.
        #[arg(long = "set")]
        set: Vec<String>,
    },
    /// Print a namespace's waypoint: its Gateway (class istio-waypoint) and the
    /// Deployment, ServiceAccount and binding istiod would create for it (`kubectl apply
    /// -f -`; then label Services or the namespace `istio.io/use-waypoint: <name>`).
    Waypoint {
        /// The Gateway's name.
        #[arg(long, default_value = "waypoint")]
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Change a value: image, imagePullPolicy.
        #[arg(long = "set")]
        set: Vec<String>,
    },
}

#[derive(clap::Args)]
struct CniDirs {
    /// The node's CNI plugin directory (mounted from the host's /opt/cni/bin).
    #[arg(long, default_value = "/host/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// The node's CNI configuration directory (mounted from the host's /etc/cni/net.d).
    #[arg(long, default_value = "/host/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
}

#[derive(Subcommand)]
enum CniCommand {
    /// Copy `mesh-cni` into the plugin directory and append it to the chain of the node's
    /// primary network configuration (waiting for the pod network to write one).
    Install {
        #[command(flatten)]
        dirs: CniDirs,
        /// The plugin binary to copy (default: `mesh-cni` next to this binary).
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// The node agent's API socket, as the plugin reaches it on the host.
        #[arg(long, default_value = "/run/mesh-agent/node/agent.sock")]
        agent_socket: PathBuf,
        /// How long to wait for the pod network's configuration, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        wait: std::time::Duration,
    },
    /// Take the plugin out of every configuration and remove its binary (idempotent).
    Uninstall {
        #[command(flatten)]
        dirs: CniDirs,
    },
}

#[derive(Subcommand)]
enum AppCommand {
    /// TCP echo server (half-close aware).
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// The generic workload: HTTP (JSON naming itself and echoing the request, a line for
    /// `text/plain`, WebSocket echo) on each address.
    Http {
        /// Address to listen on (repeatable: one per container port).
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// `service` in its answers.
        #[arg(long)]
        name: String,
        /// Its pod's name, reported in answers.
        #[arg(long, default_value = "")]
        pod: String,
        /// Its pod's namespace, reported in answers.
        #[arg(long, default_value = "")]
        namespace: String,
        /// Its pod's labels, `key=value,...` (`app` and `version` are reported).
        #[arg(long, value_parser = parse_labels, default_value = "")]
        labels: std::collections::BTreeMap<String, String>,
        /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Bookinfo's product page: an HTML page from details and reviews (by Service name).
    Productpage {
        /// Address to listen on (repeatable: one per container port).
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
    },
    /// Bookinfo's details service.
    Details {
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
    },
    /// Bookinfo's reviews service (v1: --stars none, v2: black, v3: red).
    Reviews {
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// The pod's name, shown on the product page (Kubernetes sets HOSTNAME to it).
        #[arg(long, env = "HOSTNAME", default_value = "reviews")]
        pod: String,
        #[arg(long, value_enum, default_value = "none")]
        stars: app::reviews::Stars,
    },
    /// Bookinfo's ratings service.
    Ratings {
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
    },
    /// OTLP/gRPC trace receiver keeping the last spans in memory, listed over HTTP
    /// (`GET /api/traces`).
    TraceCollector {
        #[arg(long, default_value = "0.0.0.0:4317")]
        otlp: SocketAddr,
        #[arg(long, default_value = "0.0.0.0:16686")]
        http: SocketAddr,
    },
    /// gRPC server: the standard health service (unary Check, server-streaming Watch).
    Grpc {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
    },
    /// gRPC client: Check (or Watch for N messages) a service; prints the outcome as JSON.
    GrpcClient {
        /// e.g. http://198.19.0.10:9090
        #[arg(long)]
        target: String,
        #[arg(long, default_value = "")]
        service: String,
        #[arg(long)]
        watch: Option<usize>,
    },
    /// TCP client: send N pattern bytes to an echo server, half-close, verify the echo.
    TcpClient {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1)]
        bytes: u64,
        /// Keep the connection open this long after sending, before half-closing.
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
        /// Send at most this many bytes per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
}

fn init_logging(access_log: AccessLogFormat) {
    use tracing_subscriber::{
        Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain `key=value` text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = access_log == AccessLogFormat::Json;
    let is_access = |meta: &tracing::Metadata<'_>| meta.target() == "access";
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_filter(filter_fn(move |meta| !(json && is_access(meta))));
    // The access records' fields at the top level of one object per line.
    let access_json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter_fn(is_access))
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(access_json);
    // Also installs the `log` bridge, which carries aya-log's kernel messages.
    if let Err(e) = registry.try_init() {
        eprintln!("logging: {e}");
    }
}

/// Expected failures (a refused file, an agent not running, a port taken) print their
/// message and exit 1, without the backtrace anyhow would add under RUST_BACKTRACE=1.
fn main() -> std::process::ExitCode {
    match run_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_main() -> Result<()> {
    // The demo reports the time from the command to its first served page.
    let started = std::time::Instant::now();
    let cli = Cli::parse();
    init_logging(cli.access_log_format);
    // Before anything makes a TLS client (kube-client uses the process default).
    mesh_identity::install_process_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(cli.command, started))
}

async fn run(command: Command, started: std::time::Instant) -> Result<()> {
    match command {
        Command::Run {
            paths,
            exclude_ports,
            capture_cgroup,
            cleanup,
            kernel_debug_logs,
            config_dir,
            kubernetes,
            kubeconfig,
            admin,
            ca_dir,
            trust_domain,
            cert_lifetime,
            root_namespace,
            dns,
        } => {
            let capture_cgroup = match capture_cgroup {
                Some(path) => path,
                None => redirect::default_capture_cgroup()
                    .context("finding the cgroup2 mount for --capture-cgroup")?,
            };
            let config = AgentConfig {
                name: paths.name.clone(),
                bpffs_root: paths.bpffs_root.clone(),
                state_dir: paths.state_dir(),
                capture_cgroup,
                excluded_ports: exclude_ports,
                kernel_debug_logs,
                config_dir,
                kubernetes: (kubernetes || kubeconfig.is_some()).then_some(kubeconfig),
                ca_dir,
                trust_domain,
                cert_lifetime,
                root_namespace,
                dns: (*dns).config(),
            };
            let admin_addrs = [admin.metrics_addr, admin.readiness_addr];
            run_agent(paths, config, cleanup, admin_addrs).await
        }
        Command::Gateway {
            config,
            labels,
            namespace,
            workload,
            trust_domain,
            metrics_addr,
        } => {
            raise_fd_limit();
            l7::gateway::run(l7::gateway::GatewayOptions {
                config: config.sources(),
                labels,
                namespace,
                workload,
                trust_domain,
                metrics_addr,
            })
            .await
        }
        Command::Waypoint {
            config,
            name,
            namespace,
            workload,
            trust_domain,
            root_namespace,
            listen,
            metrics_addr,
        } => {
            raise_fd_limit();
            l7::waypoint::run(l7::waypoint::WaypointOptions {
                config: config.sources(),
                workload: workload.unwrap_or_else(|| name.clone()),
                name,
                namespace,
                trust_domain,
                root_namespace,
                listen,
                metrics_addr,
            })
            .await
        }
        Command::Validate { paths } => {
            let report = mesh_config::validate_paths(&paths);
            print!("{report}");
            anyhow::ensure!(
                report.is_ok(),
                "{} error(s) in {} object(s)",
                report.errors.len(),
                report.objects
            );
            println!(
                "{} object(s) valid, {} warning(s)",
                report.objects,
                report.warnings.len()
            );
            Ok(())
        }
        Command::ConfigDump {
            paths,
            config,
            format,
        } => {
            let dump: serde_json::Value = if config.is_empty() {
                ApiClient::new(paths.api_socket()).config_dump().await?
            } else {
                let loaded =
                    mesh_config::load_paths(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                let snapshot =
                    mesh_config::Snapshot::build(&loaded).map_err(|e| anyhow::anyhow!("{e}"))?;
                serde_json::from_str(&snapshot.to_json())?
            };
            match format {
                DumpFormat::Json => println!("{}", serde_json::to_string_pretty(&dump)?),
                DumpFormat::Yaml => print!("{}", serde_saphyr::to_string(&dump)?),
            }
            Ok(())
        }
        Command::Apply { paths, demo, file } => {
            let file = file.get()?;
            if demo.is_some() || !paths.api_socket().exists() {
                let records = demo::control::running_demos(Path::new(demo::control::RECORD_DIR));
                let target = demo::control::choose(records, demo)?;
                for line in demo::control::apply(&target, &file)? {
                    println!("{line}");
                }
                return Ok(());
            }
            let yaml =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "applied.yaml".into());
            let answer = ApiClient::new(paths.api_socket())
                .apply_config(&name, yaml)
                .await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Delete { demo, file } => {
            let file = file.get()?;
            let records = demo::control::running_demos(Path::new(demo::control::RECORD_DIR));
            let target = demo::control::choose(records, demo)?;
            for line in demo::control::delete(&target, &file)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Uninstall { paths } => {
            redirect::uninstall(&paths.bpffs_root, &paths.name)
                .with_context(|| format!("uninstalling agent {}", paths.name))?;
            match std::fs::remove_dir_all(paths.state_dir()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("removing the state directory"),
            }
            println!("uninstalled agent {}", paths.name);
            Ok(())
        }
        Command::Status { paths } => {
            let status = ApiClient::new(paths.api_socket()).status().await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        Command::Enroll { paths, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let spec: PodSpec = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a valid pod spec", file.display()))?;
            ApiClient::new(paths.api_socket()).enroll(&spec).await?;
            println!("enrolled {}", spec.key());
            Ok(())
        }
        Command::Unenroll {
            paths,
            namespace,
            pod,
        } => {
            ApiClient::new(paths.api_socket())
                .unenroll(&namespace, &pod)
                .await?;
            println!("removed {namespace}/{pod}");
            Ok(())
        }
        Command::Demo {
            configs,
            nodes,
            listen,
            traces,
            console,
            prometheus,
            duration,
        } => {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "--listen must be a loopback address"
            );
            anyhow::ensure!(
                traces.ip().is_loopback(),
                "--traces must be a loopback address"
            );
            anyhow::ensure!(
                console.ip().is_loopback(),
                "--console must be a loopback address"
            );
            anyhow::ensure!(
                prometheus.is_none_or(|p| p.ip().is_loopback()),
                "--prometheus must be a loopback address"
            );
            let options = demo::DemoOptions {
                configs,
                nodes: usize::from(nodes),
                listen,
                traces,
                console,
                prometheus,
                duration: duration.map(std::time::Duration::from_secs),
            };
            demo::run(options, started).await
        }
        Command::Manifest {
            command: ManifestCommand::Generate { set },
        } => {
            let mut values = mesh_agent::manifest::Values::default();
            for assignment in &set {
                values.set(assignment)?;
            }
            print!("{}", mesh_agent::manifest::generate(&values)?);
            Ok(())
        }
        Command::Manifest {
            command:
                ManifestCommand::Waypoint {
                    name,
                    namespace,
                    set,
                },
        } => {
            let mut values = mesh_agent::manifest::Values::default();
            for assignment in &set {
                values.set(assignment)?;
            }
            print!(
                "{}",
                mesh_agent::manifest::generate_waypoint(&values, &name, &namespace)?
            );
            Ok(())
        }
        Command::Cni { command } => cni_command(command),
        Command::App { app } => match app {
            AppCommand::Echo { listen } => app::echo::run(listen).await,
            AppCommand::Http {
                listen,
                name,
                pod,
                namespace,
                labels,
                tls_cert,
                tls_key,
            } => {
                let identity = app::http::Identity {
                    name,
                    pod,
                    namespace,
                    labels,
                };
                let tls = match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => Some(app::http::TlsFiles { cert, key }),
                    _ => None,
                };
                Ok(app::http::run_workload(listen, identity, tls).await?)
            }
            AppCommand::Productpage { listen } => Ok(app::productpage::run(listen).await?),
            AppCommand::Details { listen } => Ok(app::details::run(listen).await?),
            AppCommand::Reviews { listen, pod, stars } => {
                Ok(app::reviews::run(listen, pod, stars).await?)
            }
            AppCommand::Ratings { listen } => Ok(app::ratings::run(listen).await?),
            AppCommand::Grpc { listen, name } => app::grpc::serve(listen, name).await,
            AppCommand::TraceCollector { otlp, http } => {
                app::trace_collector::run(otlp, http).await
            }
            AppCommand::GrpcClient {
                target,
                service,
                watch,
            } => {
                let outcome = app::grpc::call(target, service, watch).await?;
                println!("{}", serde_json::to_string(&outcome)?);
                Ok(())
            }
            AppCommand::TcpClient {
                connect,
                bytes,
                hold_ms,
                rate,
            } => {
                let pacing = app::tcp_client::Pacing {
                    rate,
                    hold: std::time::Duration::from_millis(hold_ms),
                };
                let outcome = app::tcp_client::run(connect, bytes, pacing).await?;
                println!("{}", serde_json::to_string(&outcome)?);
                anyhow::ensure!(outcome.intact, "echo did not match what was sent");
                Ok(())
            }
        },
    }
}

async fn run_agent(
    paths: AgentPaths,
    config: AgentConfig,
    cleanup: bool,
    // The metrics and the readiness address: both serve `/metrics` and `/healthz/ready`.
    admin_addrs: [Option<SocketAddr>; 2],
) -> Result<()> {
    raise_fd_limit();
    let agent: Arc<Agent> = Agent::start(config).await?;
    let socket = paths.api_socket();
    let listener = server::bind(&socket)
        .with_context(|| format!("binding the API socket {}", socket.display()))?;
    let api = tokio::spawn(server::serve(listener, agent.clone()));
    for addr in admin_addrs.into_iter().flatten() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics or readiness address {addr}"))?;
        tokio::spawn(server::serve_metrics(listener, agent.clone()));
    }
    tracing::info!(agent = %paths.name, api = %socket.display(), "agent ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    api.abort();
    agent.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    if cleanup {
        redirect::uninstall(&paths.bpffs_root, &paths.name)?;
        let _ = std::fs::remove_dir_all(paths.state_dir());
        tracing::info!("removed pins and state");
    }
    Ok(())
}

/// `--cert-lifetime`: Istio's duration forms (`24h`, `90m`, `30s`).
fn cni_command(command: CniCommand) -> anyhow::Result<()> {
    use mesh_agent::cni::install::Installer;
    let installer = |dirs: CniDirs, plugin: PathBuf, config| Installer {
        plugin,
        bin_dir: dirs.cni_bin_dir,
        conf_dir: dirs.cni_conf_dir,
        plugin_config: config,
    };
    match command {
        CniCommand::Install {
            dirs,
            plugin,
            agent_socket,
            wait,
        } => {
            let plugin = match plugin {
                Some(path) => path,
                None => std::env::current_exe()
                    .context("locating this binary")?
                    .with_file_name("mesh-cni"),
            };
            let mut config = serde_json::Map::new();
            config.insert("agentSocket".into(), serde_json::json!(agent_socket));
            let done = installer(dirs, plugin, config).install(wait)?;
            println!(
                "installed {} and added it to {}",
                done.binary.display(),
                done.config.display()
            );
            if let Some(old) = done.replaced {
                println!("replaced {} (a single plugin) by that list", old.display());
            }
        }
        CniCommand::Uninstall { dirs } => {
            let changed = installer(dirs, PathBuf::new(), serde_json::Map::new()).uninstall()?;
            for path in &changed {
                println!("removed mesh-cni from {}", path.display());
            }
            println!("mesh-cni uninstalled");
        }
    }
    Ok(())
}

fn parse_duration(input: &str) -> Result<std::time::Duration, String> {
    mesh_config::duration::IstioDuration::parse(input)
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

/// `--labels`: `key=value` pairs separated by commas.
fn parse_labels(input: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    input
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("{pair:?} is not key=value"))
        })
        .collect()
}

/// Every proxied connection costs the agent one or two descriptors: lift the soft limit
/// to the hard one, as a node proxy must (ztunnel does the same).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
}
