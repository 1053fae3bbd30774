//! The demo's pods while it runs, as a kubelet keeps them: each planned pod gets a lab pod
//! (its planned slot at start; later a freed one, or one added to its node), a resolv.conf,
//! enrollment with its node's agent, and its containers' built-in workloads (for a
//! waypoint's pod, `mesh-agent waypoint`). [`Pods::apply`] carries out the
//! [`Changes`](super::plan::Changes) a configuration change asks for: new pods start and
//! serve before the pods file (what the agents list as endpoints) names them; stopped pods
//! leave the pods file before they are killed, so no new connection is sent to them.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mesh_config::LoadedObject;
use mesh_testbed::lab::{Lab, LabChild};

use super::plan::{Changes, PodPlan};
use super::{config, role};
use crate::launch::LabAgent;
use crate::pod::PodSpec;

/// How long a started pod's ports have to accept.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped pod's processes have to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a pod that left the pods file keeps serving before it is killed: time for the
/// agents, gateway and waypoints to read the file (debounced) and stop choosing it, as a
/// Kubernetes pod's endpoints are withdrawn before it gets SIGTERM.
const DRAIN: Duration = Duration::from_secs(1);

/// What a pod runs with: the binary, the watched configuration, the nodes' agents.
pub struct Mesh<'a> {
    pub bin: &'a Path,
    pub config_dir: &'a Path,
    /// Node `n`'s agent is `agents[n - 1]`.
    pub agents: &'a [LabAgent],
    /// Where proxies serve `/metrics` in their pod.
    pub metrics_addr: String,
}

struct RunningPod {
    plan: PodPlan,
    processes: Vec<LabChild>,
}

/// Every pod the demo runs, the gateway's included.
#[derive(Default)]
pub struct Pods {
    running: Vec<RunningPod>,
    /// Lab pods (node, slot) of stopped pods, used again before a node gets a new one.
    free: BTreeSet<(usize, usize)>,
}

impl Pods {
    /// The plans of the running pods.
    pub fn plans(&self) -> Vec<PodPlan> {
        self.running.iter().map(|p| p.plan.clone()).collect()
    }

    /// Records a pod started elsewhere (the gateway's).
    pub fn adopt(&mut self, plan: PodPlan, processes: Vec<LabChild>) {
        self.running.push(RunningPod { plan, processes });
    }

    /// Offers the lab pods no running pod uses (the lab is made as large as its fullest
    /// node) to pods started later.
    pub fn offer_unused(&mut self, lab: &Lab) {
        let used: BTreeSet<(usize, usize)> = self
            .running
            .iter()
            .map(|p| (p.plan.node, p.plan.slot))
            .collect();
        self.free = lab
            .pods()
            .map(|p| (p.node(), p.index()))
            .filter(|slot| !used.contains(slot))
            .collect();
    }

    /// Starts an enrolled pod's processes and records it.
    pub fn start_processes(&mut self, lab: &Lab, mesh: &Mesh<'_>, pod: PodPlan) -> Result<()> {
        let processes = if pod.owner == super::plan::WAYPOINT_OWNER {
            vec![start_waypoint(lab, mesh, &pod)?]
        } else {
            start_workload(lab, mesh.bin, &pod)?
        };
        self.running.push(RunningPod {
            plan: pod,
            processes,
        });
        Ok(())
    }

    /// Rewrites the pods file the agents, gateway and waypoints read: every running pod
    /// with its addresses.
    pub fn write_file(&self, lab: &Lab, dir: &Path, objects: &[LoadedObject]) -> Result<()> {
        let addresses: Vec<_> = self
            .running
            .iter()
            .map(|p| {
                let pod = lab.pod(p.plan.node, p.plan.slot);
                (&p.plan, pod.ip(), pod.ipv6())
            })
            .collect();
        config::write_pods(dir, objects, &addresses)?;
        Ok(())
    }

    /// Carries out `changes` for the configuration `objects`, saying what starts and stops.
    /// A pod that cannot start is reported and left out; the others go on.
    pub async fn apply(
        &mut self,
        lab: &mut Lab,
        mesh: &Mesh<'_>,
        changes: Changes,
        objects: &[LoadedObject],
    ) -> Result<()> {
        let Changes { start, stop } = changes;
        // A bare Pod or a StatefulSet's pod comes back under its own name: the old one goes
        // first. Every other new pod serves before the old ones go, as a rollout surges.
        let (later, now): (Vec<PodPlan>, Vec<PodPlan>) = start.into_iter().partition(|p| {
            stop.iter()
                .any(|s| s.name == p.name && s.namespace == p.namespace)
        });
        self.start_pods(lab, mesh, now).await;
        let stopping: Vec<RunningPod> = stop
            .iter()
            .filter_map(|s| {
                let i = self.running.iter().position(|r| r.plan == *s)?;
                Some(self.running.remove(i))
            })
            .collect();
        self.write_file(lab, mesh.config_dir, objects)?;
        if !stopping.is_empty() {
            tokio::time::sleep(DRAIN).await;
        }
        for pod in stopping {
            self.stop(lab, mesh, pod).await;
        }
        if !later.is_empty() {
            self.start_pods(lab, mesh, later).await;
            self.write_file(lab, mesh.config_dir, objects)?;
        }
        Ok(())
    }

    /// Gives each pod a lab pod, enrolls it and starts it, then waits until its ports
    /// accept; one that fails is said and stopped again.
    async fn start_pods(&mut self, lab: &mut Lab, mesh: &Mesh<'_>, pods: Vec<PodPlan>) {
        let mut started = Vec::new();
        for mut pod in pods {
            let what = format!("{}/{}", pod.namespace, pod.name);
            match self.place(lab, pod.node) {
                Ok(slot) => pod.slot = slot,
                Err(e) => {
                    eprintln!("pod {what} not started: {e:#}");
                    continue;
                }
            }
            let failed = RunningPod {
                plan: pod.clone(),
                processes: Vec::new(),
            };
            let result = match enroll(lab, &pod, mesh).await {
                Ok(()) => self.start_processes(lab, mesh, pod),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => started.push(self.running.len() - 1),
                Err(e) => {
                    eprintln!("pod {what} not started: {e:#}");
                    // What did start goes with the pod's cgroup.
                    self.stop(lab, mesh, failed).await;
                }
            }
        }
        let waiting: Vec<&PodPlan> = started.iter().map(|&i| &self.running[i].plan).collect();
        if let Err(e) = wait_listening(lab, &waiting).await {
            say!("  warning: {e:#}");
        }
    }

    /// A lab pod on `node` for a new pod: a freed one, or a new one.
    fn place(&mut self, lab: &mut Lab, node: usize) -> Result<usize> {
        if let Some(&(n, slot)) = self.free.iter().find(|(n, _)| *n == node) {
            self.free.remove(&(n, slot));
            return Ok(slot);
        }
        let pod = lab.add_pod(node).context("adding a pod to the lab")?;
        Ok(pod.index())
    }

    /// Kills a pod's processes, unenrolls it and frees its lab pod.
    async fn stop(&mut self, lab: &Lab, mesh: &Mesh<'_>, pod: RunningPod) {
        let plan = &pod.plan;
        let lab_pod = lab.pod(plan.node, plan.slot);
        for process in &pod.processes {
            let _ = process.kill();
        }
        // Whatever the workload started itself too.
        if let Err(e) = mesh_testbed::cgroup::kill_all(lab_pod.cgroup_path(), KILL_TIMEOUT) {
            eprintln!("stopping pod {}/{}: {e}", plan.namespace, plan.name);
        }
        let agent = &mesh.agents[plan.node - 1];
        if let Err(e) = agent.client().unenroll(&plan.namespace, &plan.name).await {
            eprintln!(
                "unenrolling pod {}/{} from {}: {e}",
                plan.namespace, plan.name, agent.name
            );
        }
        say!(
            "  pod {:<40} {} {:<14} stopped ({})",
            format!("{}/{}", plan.namespace, plan.name),
            lab_pod.name(),
            lab_pod.ip(),
            plan.owner
        );
        self.free.insert((plan.node, plan.slot));
    }
}

/// The pod's resolv.conf (as a kubelet writes it), then enrollment with its node's agent.
pub async fn enroll(lab: &Lab, pod: &PodPlan, mesh: &Mesh<'_>) -> Result<()> {
    let lab_pod = lab.pod(pod.node, pod.slot);
    let search = [
        format!("{}.svc.cluster.local", pod.namespace),
        "svc.cluster.local".into(),
        "cluster.local".into(),
    ];
    // Any nameserver will do: the kernel steers the pod's queries to the agent.
    lab_pod
        .write_resolv_conf(
            &[lab.node(pod.node).pod_gateway().into()],
            &search,
            &["ndots:5"],
        )
        .context("writing a pod's resolv.conf")?;
    let spec = PodSpec {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        service_account: pod.service_account.clone(),
        labels: pod.labels.clone(),
        netns: lab_pod.netns_path().to_path_buf(),
        cgroup: Some(lab_pod.cgroup_path().to_path_buf()),
        ips: vec![lab_pod.ip().into(), lab_pod.ipv6().into()],
    };
    mesh.agents[pod.node - 1]
        .client()
        .enroll(&spec)
        .await
        .with_context(|| format!("enrolling pod {}/{}", pod.namespace, pod.name))
}

/// Starts each container's built-in workload in the pod, seeing the pod's resolv.conf.
fn start_workload(lab: &Lab, bin: &Path, pod: &PodPlan) -> Result<Vec<LabChild>> {
    let lab_pod = lab.pod(pod.node, pod.slot);
    let mut processes = Vec::new();
    for container in &pod.containers {
        let ports: Vec<u16> = container.ports.iter().map(|p| p.number).collect();
        let what = if ports.is_empty() {
            "no container port: nothing to serve".to_string()
        } else {
            let list: Vec<String> = ports.iter().map(|p| format!(":{p}")).collect();
            format!("{} on {}", container.role.name(), list.join(" "))
        };
        say!(
            "  pod {:<40} {} {:<14} {what}",
            format!("{}/{}", pod.namespace, pod.name),
            lab_pod.name(),
            lab_pod.ip()
        );
        if ports.is_empty() {
            continue;
        }
        let mut cmd = lab_pod.command_with_etc(bin);
        cmd.arg("app").args(container.role.app_args());
        for port in &ports {
            cmd.args(["--listen", &format!("0.0.0.0:{port}")]);
        }
        if container.role == role::Role::Generic {
            cmd.args(["--name", &container.name])
                .args(["--pod", &pod.name])
                .args(["--namespace", &pod.namespace])
                .args(["--labels", &labels_arg(pod)]);
        }
        cmd.envs(container.env.iter().map(|(k, v)| (k, v)))
            .env("HOSTNAME", &pod.name)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let process = lab
            .spawn(&mut cmd)
            .with_context(|| format!("starting {} in pod {}", container.name, pod.name))?;
        processes.push(process);
    }
    Ok(processes)
}

/// `mesh-agent waypoint` in the waypoint's pod, for the Gateway its label names.
fn start_waypoint(lab: &Lab, mesh: &Mesh<'_>, waypoint: &PodPlan) -> Result<LabChild> {
    let pod = lab.pod(waypoint.node, waypoint.slot);
    let name = waypoint
        .labels
        .get(mesh_config::snapshot::GATEWAY_NAME_LABEL)
        .cloned()
        .unwrap_or_default();
    let mut command = pod.command(mesh.bin);
    command
        .args(["waypoint", "--config-dir"])
        .arg(mesh.config_dir)
        .args(["--name", &name, "--namespace", &waypoint.namespace])
        .args(["--metrics-addr", &mesh.metrics_addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let process = lab.spawn(&mut command).context("starting a waypoint")?;
    say!(
        "  pod {:<40} {} {:<14} waypoint {}/{name}",
        format!("{}/{}", waypoint.namespace, waypoint.name),
        pod.name(),
        pod.ip(),
        waypoint.namespace
    );
    Ok(process)
}

pub fn labels_arg(pod: &PodPlan) -> String {
    let pairs: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Waits until every container port of `pods` accepts, probing over the pod's own loopback
/// from a thread in its namespace (neither captured nor steered, so the probe reaches the
/// app itself).
pub async fn wait_listening(lab: &Lab, pods: &[&PodPlan]) -> Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let mut probes = tokio::task::JoinSet::new();
    for pod in pods {
        for port in pod.containers.iter().flat_map(|c| &c.ports) {
            let lab_pod = lab.pod(pod.node, pod.slot).clone();
            let addr = SocketAddr::from(([127, 0, 0, 1], port.number));
            let what = format!("{}/{} port {}", pod.namespace, pod.name, port.number);
            probes.spawn_blocking(move || {
                let listening = lab_pod.run(move || {
                    while Instant::now() < deadline {
                        let probe =
                            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200));
                        if probe.is_ok() {
                            return true;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    false
                });
                (what, listening.unwrap_or(false))
            });
        }
    }
    while let Some(probe) = probes.join_next().await {
        let (what, listening) = probe?;
        anyhow::ensure!(
            listening,
            "{what}: nothing listens after {} s",
            LISTEN_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// The configuration's files in the demo's directory: every YAML file but the pods file,
/// whose Pods the demo wrote for the pods it runs (planned, they would be bare pods).
pub fn configuration_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| mesh_config::source::dir::is_yaml(p))
        .filter(|p| p.file_name().is_none_or(|n| n != config::PODS_FILE))
        .collect();
    files.sort();
    Ok(files)
}
