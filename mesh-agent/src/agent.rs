//! The node agent: owns the kernel programs (`redirect`), the enrolled pods and their
//! listeners (`proxy`), and the state that lets a restarted agent pick up where it was.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use mesh_common::{HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};
use mesh_identity::{CertManager, CertificateAuthority, SpiffeId};
use serde::Serialize;
use tokio::{sync::Mutex, task::JoinHandle};

use mesh_config::{ConfigStore, store::StoreStatus};

use crate::{
    dns::{NodeDns, PodDns, server::DnsListeners},
    enrollment,
    pod::{PodKey, PodSockets, PodSpec, PodSpecError},
    proxy::{
        NodeProxy, PodProxy, inbound, inbound_passthrough, local::LocalPods, outbound, transparent,
    },
    redirect::{self, KernelCounters, ProgramIds, RedirectError, Redirector},
    telemetry::connections::{ConnectionRecord, ConnectionStats, Totals},
};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Names this agent's pins and state; unique per node (and per test run).
    pub name: String,
    pub bpffs_root: PathBuf,
    pub state_dir: PathBuf,
    /// The cgroup the capture programs attach to, once: every pod's cgroup lies below it
    /// (the kubelet's `kubepods`; a node's cgroup in the lab).
    pub capture_cgroup: PathBuf,
    /// Destination ports never captured outbound.
    pub excluded_ports: Vec<u16>,
    /// Let the kernel programs emit debug-level log records (one per redirect).
    pub kernel_debug_logs: bool,
    /// Directory of Kubernetes/Istio YAML to load and watch (None: only `apply`).
    pub config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API: `Some(None)` infers the cluster (KUBECONFIG,
    /// ~/.kube/config, in-cluster), `Some(Some(path))` uses that kubeconfig.
    pub kubernetes: Option<Option<PathBuf>>,
    /// The mesh CA in Istio's `cacerts` layout (created here if empty).
    pub ca_dir: PathBuf,
    /// SPIFFE trust domain of the identities this agent issues.
    pub trust_domain: String,
    /// Lifetime of workload certificates (rotated at half of it).
    pub cert_lifetime: std::time::Duration,
    /// Istio's root namespace (mesh-wide policies).
    pub root_namespace: String,
    /// The DNS proxy: upstream resolvers, cluster domain, cache size.
    pub dns: crate::dns::DnsConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("invalid pod: {0}")]
    Invalid(#[from] PodSpecError),
    #[error("pod {0} is already enrolled")]
    Duplicate(PodKey),
    #[error("field `ips`: {ip} already belongs to enrolled pod {owner}")]
    AddressInUse { ip: IpAddr, owner: PodKey },
    #[error("pod {0} is not enrolled")]
    NotFound(PodKey),
    #[error(
        "field `cgroup`: {cgroup} is not below the agent's capture cgroup {capture}: the pod's sockets would not be captured"
    )]
    OutsideCapture { cgroup: PathBuf, capture: PathBuf },
    #[error("pod {pod}: {source}")]
    Kernel {
        pod: PodKey,
        source: Box<RedirectError>,
    },
    #[error("pod {pod}: {what}: {source}")]
    Io {
        pod: PodKey,
        what: &'static str,
        source: std::io::Error,
    },
}

impl EnrollError {
    /// The HTTP status the enrollment API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            EnrollError::Invalid(_) | EnrollError::OutsideCapture { .. } => 400,
            EnrollError::Duplicate(_) | EnrollError::AddressInUse { .. } => 409,
            EnrollError::NotFound(_) => 404,
            EnrollError::Kernel { .. } | EnrollError::Io { .. } => 500,
        }
    }
}

struct EnrolledPod {
    spec: PodSpec,
    /// (device, inode) of the namespace file at enrollment: the pod is gone when the file
    /// is, or when it names another namespace.
    netns_id: (u64, u64),
    proxy: Arc<PodProxy>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for EnrolledPod {
    fn drop(&mut self) {
        // Aborting the accept loops drops the listeners; connections in flight finish.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The kernel side of one pod's enrollment (see `enrollment.rs`).
struct PodKernel<'a> {
    redirector: &'a mut Redirector,
    in_v4: &'a tokio::net::TcpListener,
    in_v6: Option<&'a tokio::net::TcpListener>,
    pin_name: &'a str,
    spec: &'a PodSpec,
    netns_cookie: u64,
}

impl enrollment::Kernel for PodKernel<'_> {
    type Error = RedirectError;

    fn steer(&mut self, ip: IpAddr) -> Result<(), RedirectError> {
        // The plan steers IPv6 addresses only when the IPv6 listener exists.
        let listener = match (ip, self.in_v6) {
            (IpAddr::V6(_), Some(v6)) => v6,
            _ => self.in_v4,
        };
        self.redirector.steer_inbound(ip, listener)
    }

    fn unsteer(&mut self, ip: IpAddr) {
        self.redirector.unsteer_inbound(ip);
    }

    fn capture(&mut self) -> Result<(), RedirectError> {
        self.redirector.capture_netns(self.netns_cookie)
    }

    fn uncapture(&mut self) {
        self.redirector.uncapture_netns(self.netns_cookie);
    }

    fn attach(&mut self) -> Result<(), RedirectError> {
        self.redirector.attach_pod(self.pin_name, &self.spec.netns)
    }

    fn detach(&mut self) {
        let _ = self.redirector.detach_pod(self.pin_name);
    }
}

/// How often the agent looks for pods whose network namespace vanished.
const VANISHED_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// (device, inode) of a namespace file: the namespace's identity.
fn netns_id(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

pub struct Agent {
    config: AgentConfig,
    redirector: Mutex<Redirector>,
    program_ids: ProgramIds,
    pods: Mutex<BTreeMap<PodKey, EnrolledPod>>,
    /// What every pod's proxy shares: configuration, certificates, tunnels, counters.
    node: Arc<NodeProxy>,
    /// What every pod's DNS server shares: configuration, upstream resolvers, cache.
    dns: Arc<NodeDns>,
    /// Watches `config_dir` and the Kubernetes API while it lives.
    _config_sources: crate::config_source::Watching,
}

#[derive(Serialize)]
pub struct HboneStatus {
    pub tunnels_opened: usize,
    pub tunnels_pooled: usize,
}

#[derive(Serialize)]
pub struct Status {
    pub agent: String,
    pub pin_dir: PathBuf,
    /// The cgroup the capture programs are attached to, and those links.
    pub capture_cgroup: PathBuf,
    pub capture_links: Vec<String>,
    pub programs: ProgramIds,
    pub kernel: KernelCounters,
    pub pods: Vec<PodSpec>,
    pub links: Vec<String>,
    pub connections: Totals,
    /// HBONE tunnels: opened since start (one TLS handshake each) and pooled now.
    pub hbone: HboneStatus,
    /// Identities this agent holds certificates for (its pods' service accounts).
    pub identities: Vec<String>,
    pub recent: Vec<ConnectionRecord>,
    pub config: StoreStatus,
}

impl Agent {
    /// Loads (or reuses) the programs and re-enrolls the pods of an earlier run.
    pub async fn start(config: AgentConfig) -> anyhow::Result<Arc<Agent>> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating state dir {}", config.state_dir.display()))?;
        let redirector = Redirector::open(
            &config.bpffs_root,
            &config.name,
            &config.capture_cgroup,
            &config.excluded_ports,
            config.kernel_debug_logs,
        )
        .context("loading the eBPF programs")?;
        crate::telemetry::kernel_log::forward(redirector.program_ids());
        // Service FQDNs in the snapshot and the names the DNS proxy answers share the domain.
        let config_store = Arc::new(ConfigStore::new(mesh_config::snapshot::BuildOptions {
            mesh: mesh_config::resolve::MeshOptions {
                cluster_domain: config.dns.cluster_domain.clone(),
            },
        }));
        let config_sources = crate::config_source::ConfigSources {
            dir: config.config_dir.clone(),
            kubernetes: config.kubernetes.clone(),
        }
        .watch(&config_store)
        .await?;
        let ca = CertificateAuthority::load_or_create(&config.ca_dir, &config.trust_domain)
            .with_context(|| format!("loading the mesh CA from {}", config.ca_dir.display()))?;
        let stats = Arc::new(ConnectionStats::default());
        let dns = Arc::new(NodeDns {
            config: config_store.clone(),
            cluster_domain: config.dns.cluster_domain.clone(),
            forwarder: crate::dns::upstream::Forwarder::new(
                config.dns.upstreams.clone(),
                config.dns.cache_entries,
            ),
            metrics: stats.metrics.dns.clone(),
        });
        let node = Arc::new(NodeProxy {
            orig_dst: redirector.orig_dst_table(),
            stats,
            dns: dns.clone(),
            config: config_store,
            balancer: Default::default(),
            certs: Arc::new(CertManager::new(Arc::new(ca), config.cert_lifetime)),
            trust_domain: config.trust_domain.clone(),
            root_namespace: config.root_namespace.clone(),
            pool: Default::default(),
            local: LocalPods::default(),
        });
        crate::cni::node::keep_modes_file(
            node.config.clone(),
            config.state_dir.join(crate::cni::spec::MODES_FILE),
        );
        let sweeper = Arc::downgrade(&node);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::proxy::pool::IDLE_TIMEOUT / 2);
            loop {
                tick.tick().await;
                let Some(node) = sweeper.upgrade() else {
                    return;
                };
                node.pool.sweep();
            }
        });
        tracing::info!(upstreams = ?config.dns.upstreams, domain = %config.dns.cluster_domain, "DNS proxy");
        let agent = Arc::new(Agent {
            dns,
            program_ids: redirector.program_ids().clone(),
            redirector: Mutex::new(redirector),
            pods: Mutex::new(BTreeMap::new()),
            node,
            _config_sources: config_sources,
            config,
        });
        agent.restore().await;
        let reaper = Arc::downgrade(&agent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(VANISHED_CHECK);
            loop {
                tick.tick().await;
                let Some(agent) = reaper.upgrade() else {
                    return;
                };
                agent.remove_vanished().await;
            }
        });
        Ok(agent)
    }

    /// Removes the pods whose network namespace is gone (deleted without `unenroll`, e.g.
    /// when a CNI DEL never came): their capture, links and enrolled addresses must not
    /// outlive them, or the addresses' next owner would be blackholed.
    pub async fn remove_vanished(&self) {
        let vanished: Vec<PodKey> = self
            .pods
            .lock()
            .await
            .iter()
            .filter(|(_, pod)| netns_id(&pod.spec.netns).ok() != Some(pod.netns_id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in vanished {
            tracing::warn!(pod = %key, "the pod's network namespace is gone: removing the pod");
            if let Err(e) = self.remove_pod(&key).await {
                tracing::warn!(pod = %key, error = %e, "removing a vanished pod");
            }
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn state_file(&self) -> PathBuf {
        self.config.state_dir.join("pods.json")
    }

    /// Re-enrolls the pods recorded by an earlier run; pods whose namespace is gone are
    /// dropped, and links and namespace cookies of pods nobody knows about are removed.
    async fn restore(&self) {
        let specs: Vec<PodSpec> = match std::fs::read(self.state_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %self.state_file().display(), error = %e, "ignoring unreadable state file");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        for spec in specs {
            let key = spec.key();
            let ips = spec.ips.clone();
            match self.add_pod(spec).await {
                Ok(()) => tracing::info!(pod = %key, "re-enrolled pod from the previous run"),
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "dropping pod of the previous run");
                    let mut redirector = self.redirector.lock().await;
                    let _ = redirector.detach_pod(&key.file_name());
                    // Its addresses are no longer enrolled: do not keep dropping their SYNs.
                    for ip in &ips {
                        redirector.unsteer_inbound(*ip);
                    }
                }
            }
        }
        let (known, cookies): (Vec<String>, Vec<u64>) = self
            .pods
            .lock()
            .await
            .iter()
            .map(|(key, pod)| (key.file_name(), pod.proxy.netns_cookie))
            .unzip();
        self.redirector.lock().await.retain_netns(&cookies);
        let links = self.config.bpffs_root.join(&self.config.name).join("links");
        if let Ok(entries) = std::fs::read_dir(&links) {
            let mut redirector = self.redirector.lock().await;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    tracing::warn!(pod = %name, "removing links of an unknown pod");
                    let _ = redirector.detach_pod(&name);
                }
            }
        }
        self.persist().await;
    }

    async fn persist(&self) {
        let pods = self.pods.lock().await;
        self.save(&pods);
    }

    /// Writes `pods.json` from the enrolled pods. Called with the pods lock held, so the
    /// file is written in the order the list changed: two enrollments racing can no
    /// longer leave the older list on disk last.
    fn save(&self, pods: &BTreeMap<PodKey, EnrolledPod>) {
        let specs: Vec<PodSpec> = pods.values().map(|p| p.spec.clone()).collect();
        if let Err(e) = write_atomically(&self.state_file(), &specs) {
            tracing::error!(error = %e, "cannot save enrolled pods; a restart would forget them");
        }
    }

    pub async fn add_pod(&self, spec: PodSpec) -> Result<(), EnrollError> {
        spec.validate()?;
        if let Some(cgroup) = &spec.cgroup
            && !is_below(cgroup, &self.config.capture_cgroup)
        {
            return Err(EnrollError::OutsideCapture {
                cgroup: cgroup.clone(),
                capture: self.config.capture_cgroup.clone(),
            });
        }
        let key = spec.key();
        let mut pods = self.pods.lock().await;
        if pods.contains_key(&key) {
            return Err(EnrollError::Duplicate(key));
        }
        for (owner, pod) in pods.iter() {
            if let Some(ip) = spec.ips.iter().find(|ip| pod.spec.ips.contains(ip)) {
                return Err(EnrollError::AddressInUse {
                    ip: *ip,
                    owner: owner.clone(),
                });
            }
        }
        let enrolled = self.enroll(&spec).await?;
        pods.insert(key.clone(), enrolled);
        self.save(&pods);
        drop(pods);
        tracing::info!(pod = %key, ips = ?spec.ips, "pod enrolled");
        Ok(())
    }

    async fn enroll(&self, spec: &PodSpec) -> Result<EnrolledPod, EnrollError> {
        let key = spec.key();
        let io = |what| {
            let pod = key.clone();
            move |source| EnrollError::Io { pod, what, source }
        };
        let netns_id = netns_id(&spec.netns).map_err(io("reading the pod's network namespace"))?;
        let sockets = PodSockets::start(&spec.netns, format!("pod-{}", spec.name))
            .map_err(io("entering the pod's network namespace"))?;
        // Listeners first, programs second: a connect captured before its listener exists
        // would be refused.
        let out_v4 = sockets
            .listen(
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), OUTBOUND_PORT),
                1024,
            )
            .await
            .map_err(io("outbound listener 127.0.0.1:15001"))?;
        let in_v4 = sockets
            .listen(
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), INBOUND_PLAINTEXT_PORT),
                1024,
            )
            .await
            .map_err(io("inbound listener 127.0.0.1:15006"))?;
        // IPv6 listeners only where the namespace has ::1; without them native IPv6
        // connects are refused, which is what an IPv4-only pod gets anyway.
        let out_v6 = sockets
            .listen(
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), OUTBOUND_PORT),
                1024,
            )
            .await
            .ok();
        let in_v6 = sockets
            .listen(
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), INBOUND_PLAINTEXT_PORT),
                1024,
            )
            .await
            .ok();
        // HBONE on every address of the pod; sk_lookup leaves 15008 alone.
        let hbone_v4 = sockets
            .listen(
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), HBONE_PORT),
                1024,
            )
            .await
            .map_err(io("HBONE listener 0.0.0.0:15008"))?;
        let hbone_v6 = sockets
            .listen(
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), HBONE_PORT),
                1024,
            )
            .await
            .ok();
        let dns_listeners = DnsListeners::open(&sockets)
            .await
            .map_err(io("DNS listeners 127.0.0.1:15053"))?;
        let netns_cookie =
            mesh_testbed::netns::netns_cookie(&out_v4).map_err(io("SO_NETNS_COOKIE"))?;
        transparent::prepare(&sockets)
            .await
            .map_err(io("in-pod routing for delivery as the client"))?;

        let mut redirector = self.redirector.lock().await;
        let pin_name = key.file_name();
        let steps = enrollment::plan(
            &spec.ips,
            in_v6.is_some(),
            redirector.is_attached(&pin_name),
        );
        let mut kernel = PodKernel {
            redirector: &mut redirector,
            in_v4: &in_v4,
            in_v6: in_v6.as_ref(),
            pin_name: &pin_name,
            spec,
            netns_cookie,
        };
        enrollment::apply(&mut kernel, &steps).map_err(|source| EnrollError::Kernel {
            pod: key.clone(),
            source: Box::new(source),
        })?;
        drop(redirector);

        let proxy = Arc::new(PodProxy {
            pod: key.to_string(),
            namespace: spec.namespace.clone(),
            labels: spec.labels.clone(),
            identity: self.identity_of(spec),
            sockets,
            netns_cookie,
            pod_ips: spec.ips.clone(),
            node: self.node.clone(),
        });
        self.node.local.insert(&spec.ips, &proxy.identity);
        let mut tasks = vec![
            tokio::spawn(outbound::serve(out_v4, proxy.clone())),
            tokio::spawn(inbound_passthrough::serve(in_v4, proxy.clone())),
            tokio::spawn(inbound::serve(hbone_v4, proxy.clone())),
        ];
        tasks.extend(out_v6.map(|l| tokio::spawn(outbound::serve(l, proxy.clone()))));
        tasks.extend(in_v6.map(|l| tokio::spawn(inbound_passthrough::serve(l, proxy.clone()))));
        tasks.extend(hbone_v6.map(|l| tokio::spawn(inbound::serve(l, proxy.clone()))));
        let pod_dns = PodDns::new(
            key.to_string(),
            spec.namespace.clone(),
            &spec.labels,
            self.dns.clone(),
        )
        .with_redirected_tcp(self.node.orig_dst.clone(), netns_cookie);
        tasks.extend(dns_listeners.spawn(Arc::new(pod_dns)));
        Ok(EnrolledPod {
            spec: spec.clone(),
            netns_id,
            proxy,
            tasks,
        })
    }

    pub async fn remove_pod(&self, key: &PodKey) -> Result<(), EnrollError> {
        let mut pods = self.pods.lock().await;
        let pod = pods
            .remove(key)
            .ok_or_else(|| EnrollError::NotFound(key.clone()))?;
        self.save(&pods);
        let identity = self.identity_of(&pod.spec);
        let shared = pods
            .values()
            .any(|other| self.identity_of(&other.spec) == identity);
        drop(pods);
        self.node.local.remove(&pod.spec.ips);
        if !shared {
            self.node.certs.forget(&identity);
        }
        let mut redirector = self.redirector.lock().await;
        redirector.uncapture_netns(pod.proxy.netns_cookie);
        for ip in &pod.spec.ips {
            redirector.unsteer_inbound(*ip);
        }
        let detached = redirector.detach_pod(&key.file_name());
        drop(redirector);
        // After the capture is gone: no delivery needs the routing any more.
        if let Err(e) = transparent::remove(&pod.proxy.sockets).await {
            tracing::warn!(pod = %key, error = %e, "in-pod delivery routing not removed");
        }
        drop(pod);
        detached.map_err(|source| EnrollError::Kernel {
            pod: key.clone(),
            source: Box::new(source),
        })?;
        tracing::info!(pod = %key, "pod removed");
        Ok(())
    }

    /// A pod's SPIFFE identity: its namespace and service account in this trust domain.
    fn identity_of(&self, spec: &PodSpec) -> SpiffeId {
        SpiffeId::new(
            &self.config.trust_domain,
            &spec.namespace,
            &spec.service_account,
        )
    }

    pub async fn pods(&self) -> Vec<PodSpec> {
        self.pods
            .lock()
            .await
            .values()
            .map(|p| p.spec.clone())
            .collect()
    }

    pub async fn status(&self) -> Status {
        let (kernel, capture_links) = {
            let redirector = self.redirector.lock().await;
            (redirector.kernel_counters(), redirector.capture_links())
        };
        Status {
            agent: self.config.name.clone(),
            pin_dir: self.config.bpffs_root.join(&self.config.name),
            capture_cgroup: self.config.capture_cgroup.clone(),
            capture_links,
            programs: self.program_ids.clone(),
            kernel,
            pods: self.pods().await,
            links: redirect::attached_links(&self.config.bpffs_root, &self.config.name),
            connections: self.node.stats.totals(),
            hbone: {
                let (tunnels_opened, tunnels_pooled) = self.node.pool.counts();
                HboneStatus {
                    tunnels_opened,
                    tunnels_pooled,
                }
            },
            identities: self
                .node
                .certs
                .identities()
                .iter()
                .map(ToString::to_string)
                .collect(),
            recent: self.node.stats.recent(),
            config: self.node.config.status(),
        }
    }

    /// The agent's metrics (the API and accept loops count their refusals here).
    pub fn metrics(&self) -> &crate::telemetry::metrics::Metrics {
        &self.node.stats.metrics
    }

    /// Prometheus text exposition of the agent's metrics.
    pub fn metrics_text(&self) -> String {
        self.node.stats.metrics.render(&self.node.config)
    }

    pub fn config_store(&self) -> &ConfigStore {
        &self.node.config
    }

    /// Stops every pod's listeners (the kernel programs stay attached unless uninstalled).
    pub async fn shutdown(&self) {
        self.pods.lock().await.clear();
    }
}

/// Whether `path` is `ancestor` or lies below it, both resolved (symlinks, `..`).
fn is_below(path: &Path, ancestor: &Path) -> bool {
    match (path.canonicalize(), ancestor.canonicalize()) {
        (Ok(path), Ok(ancestor)) => path.starts_with(ancestor),
        _ => false,
    }
}

fn write_atomically(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(tmp, path)
}
