//! The lab: nodes and pods as network namespaces, each pod in its own cgroup v2 leaf.
//!
//! # Topology and naming
//!
//! Every lab gets a run id `<id>` (5 base36 chars, reserved by an atomic `mkdir` of its
//! cgroup), and every name derives from it, so two labs (two test binaries, two tests in
//! one binary, a demo and a test) never collide.
//!
//! ```text
//!  netns mt<id>-lab      bridge br0 (no address), port n<k> per node
//!     |  veth  n<k> <-> eth0
//!  netns mt<id>-n<k>     eth0  198.18.0.<k>/24      fd00::<k>/64        (lab bridge side)
//!                        br0   198.18.<k>.1/24      fd00:0:0:<k>::1/64  (pod gateway)
//!     |  veth  p<j> (port of br0) <-> eth0
//!  netns mt<id>-n<k>p<j> eth0  198.18.<k>.<10+j>/24 fd00:0:0:<k>::<10+j>/64
//!                        default via 198.18.<k>.1 and fd00:0:0:<k>::1
//! ```
//!
//! Node and pod numbers start at 1: pod 1 of node 2 is `n2p1` at 198.18.2.11 and
//! fd00:0:0:2::11 (the IPv6 groups are the IPv4 decimals written as hex, for readability).
//! Node `k` routes `198.18.<m>.0/24` and `fd00:0:0:<m>::/64` via node `m`'s lab address for
//! every other node `m`, with IPv4 and IPv6 forwarding on; so every pod reaches every pod,
//! same node through the node's bridge, across nodes through the lab bridge. `lo` is up
//! everywhere (127.0.0.1 and ::1 work in pods). All addresses are from 198.18.0.0/15
//! (RFC 2544; 198.19/16 is left for Service VIPs) and fd00::/8. Limits: 250 nodes, 240 pods
//! per node. A running lab takes more pods ([`Lab::add_pod`]), numbered after the node's
//! last, as pods are scheduled onto a cluster's nodes.
//!
//! Interface names (`br0`, `eth0`, `n<k>`, `p<j>`) live inside the lab's own namespaces, so
//! they are short and need no run id. In the host's namespace the lab creates only the
//! namespace files (`/var/run/netns/mt<id>-*`), the cgroups, and optional
//! `/etc/netns/mt<id>-*` hosts and resolv.conf files.
//!
//! # Cgroups and "enrolled" pods
//!
//! Node `n<k>` has the cgroup `<cgroup2 mount>/mesh-<id>/n<k>` and its pod `n<k>p<j>` the
//! leaf `.../n<k>/p<j>` below it; processes started with [`Pod::command`] run in the pod's.
//! The node's agent attaches its capture programs once, to the node's cgroup (as it would
//! to the kubelet's `kubepods` cgroup), so they see every pod of the node; the agent itself
//! runs in `.../n<k>/system` ([`Node::daemon_command`]), below that cgroup too, as a
//! DaemonSet pod does. A cgroup alone
//! enrolls nothing: the agent enrolls a pod by its network namespace. A test that needs a
//! client outside the mesh simply uses a pod it does not enroll.
//!
//! # Cleanup
//!
//! On drop, on a failed creation (whatever was made so far), and on Ctrl-C/SIGTERM once
//! [`install_signal_cleanup`] was called; see `lab/cleanup.rs` for the order.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::ip::{self, Batch};
use crate::netns::{named_netns_path, run_in_netns};
use crate::{cgroup, process};

mod cleanup;
mod plan;
mod sweep;

pub use sweep::{SweptLab, sweep_dead_labs};
#[cfg(test)]
mod tests;

pub use cleanup::{LabChild, cleanup_all_labs, install_signal_cleanup};
use cleanup::{LabInner, etc_netns_dir};
pub use plan::{MAX_NODES, MAX_PODS_PER_NODE};

/// The lab's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabSpec {
    /// Number of nodes, 1..=250.
    pub nodes: usize,
    /// Pods on each node, 0..=240.
    pub pods_per_node: usize,
}

impl LabSpec {
    fn validate(&self) -> Result<(), LabError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(LabError::Spec(format!(
                "nodes must be 1..={MAX_NODES}, got {}",
                self.nodes
            )));
        }
        if self.pods_per_node > MAX_PODS_PER_NODE {
            return Err(LabError::Spec(format!(
                "pods_per_node must be 0..={MAX_PODS_PER_NODE}, got {}",
                self.pods_per_node
            )));
        }
        Ok(())
    }
}

/// Why a lab could not be created. Every variant after `Spec`/`NotRoot` names the lab's run
/// id and the creation step; command failures carry the exact `ip` command and its stderr.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid lab spec: {0}")]
    Spec(String),
    #[error("the testbed needs root (namespaces, veths, cgroups)")]
    NotRoot,
    #[error("lab {run_id}: step `{step}`: `{command}` failed: {stderr}")]
    Command {
        run_id: String,
        step: &'static str,
        command: String,
        stderr: String,
    },
    #[error("lab {run_id}: step `{step}`: {source}")]
    Io {
        run_id: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("lab {run_id}: failure injected before step `{step}`")]
    Injected { run_id: String, step: &'static str },
}

impl LabError {
    /// The run id of the (partially created, now removed) lab, if it got that far.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Self::Spec(_) | Self::NotRoot => None,
            Self::Command { run_id, .. }
            | Self::Io { run_id, .. }
            | Self::Injected { run_id, .. } => Some(run_id),
        }
    }
}

/// Creation steps, in order. Their names appear in errors and in
/// [`Lab::create_with_fault`].
pub const STEPS: [&str; 6] = [
    "cgroups",
    "netns",
    "sysctl",
    "lab-links",
    "node-links",
    "pod-links",
];

/// A running lab. Dropping it removes everything it created.
#[derive(Debug)]
pub struct Lab {
    inner: Arc<LabInner>,
    cgroup_root: PathBuf,
    nodes: Vec<Node>,
}

/// A node: a network namespace on the lab bridge that routes for its pods.
#[derive(Debug, Clone)]
pub struct Node {
    index: usize,
    name: String,
    netns_name: String,
    netns_path: PathBuf,
    cgroup_path: PathBuf,
    pods: Vec<Pod>,
}

/// A pod: a network namespace behind its node, plus a cgroup v2 leaf.
#[derive(Debug, Clone)]
pub struct Pod {
    node: usize,
    index: usize,
    name: String,
    netns_name: String,
    netns_path: PathBuf,
    cgroup_path: PathBuf,
}

impl Lab {
    /// Creates a lab of `spec.nodes` nodes with `spec.pods_per_node` pods each. On error,
    /// whatever was created is removed before returning.
    pub fn create(spec: LabSpec) -> Result<Lab, LabError> {
        Self::create_inner(spec, None)
    }

    /// Test knob: like [`Lab::create`], but fails just before `step` (one of [`STEPS`]),
    /// with everything before it created, to exercise cleanup of a partial lab.
    #[doc(hidden)]
    pub fn create_with_fault(spec: LabSpec, step: &'static str) -> Result<Lab, LabError> {
        assert!(
            STEPS.contains(&step),
            "unknown step {step}; steps are {STEPS:?}"
        );
        Self::create_inner(spec, Some(step))
    }

    fn create_inner(spec: LabSpec, fault: Option<&'static str>) -> Result<Lab, LabError> {
        spec.validate()?;
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        let mount = cgroup::cgroup2_mount().map_err(|source| LabError::Io {
            run_id: "-".into(),
            step: "cgroups",
            source,
        })?;
        let (inner, cgroup_root) = reserve_run_id(&mount)?;
        let nodes = (1..=spec.nodes)
            .map(|n| Node::plan(&inner.id, &cgroup_root, n, spec))
            .collect();
        // From here on, any early return drops `lab`, which removes what was made so far.
        let lab = Lab {
            inner,
            cgroup_root,
            nodes,
        };
        // Declared after `lab`, so on an early return it is released before `lab`'s drop
        // runs cleanup (which takes it too).
        let inner = lab.inner.clone();
        let creating = inner.creating();
        let check = |step: &'static str| match fault {
            Some(f) if f == step => Err(LabError::Injected {
                run_id: lab.id().into(),
                step,
            }),
            _ => Ok(()),
        };

        check("cgroups")?;
        for node in &lab.nodes {
            // Recorded before its pods, so cleanup (in reverse) removes them first.
            lab.inner
                .record_cgroup(node.cgroup_path.clone())
                .map_err(|e| lab.io_err("cgroups", e))?;
            cgroup::create(&node.cgroup_path).map_err(|e| lab.io_err("cgroups", e))?;
            let system = node.system_cgroup_path();
            lab.inner
                .record_cgroup(system.clone())
                .map_err(|e| lab.io_err("cgroups", e))?;
            cgroup::create(&system).map_err(|e| lab.io_err("cgroups", e))?;
        }
        for pod in lab.pods() {
            lab.inner
                .record_cgroup(pod.cgroup_path.clone())
                .map_err(|e| lab.io_err("cgroups", e))?;
            cgroup::create(&pod.cgroup_path).map_err(|e| lab.io_err("cgroups", e))?;
        }

        check("netns")?;
        let names: Vec<String> = std::iter::once(plan::lab_netns(lab.id()))
            .chain(lab.nodes.iter().map(|n| n.netns_name.clone()))
            .chain(lab.pods().map(|p| p.netns_name.clone()))
            .collect();
        // Recorded before creating: `-force` deletion tolerates names that never appeared.
        lab.inner
            .record_netns(names.clone())
            .map_err(|e| lab.io_err("netns", e))?;
        let mut batch = Batch::new(None);
        for name in &names {
            batch.push(format!("netns add {name}"));
        }
        lab.ip("netns", &[batch])?;

        // Before any interface exists, so every interface inherits the `default` settings.
        check("sysctl")?;
        let node_paths = lab.nodes.iter().map(|n| (n.netns_path.clone(), true));
        let pod_paths = lab.pods().map(|p| (p.netns_path.clone(), false));
        let lab_path = std::iter::once((lab.netns_path(), false));
        for (path, router) in lab_path.chain(node_paths).chain(pod_paths) {
            let result = run_in_netns(&path, move || set_sysctls(router));
            result
                .and_then(|r| r)
                .map_err(|e| lab.io_err("sysctl", e))?;
        }

        check("lab-links")?;
        lab.ip("lab-links", &[lab.lab_batch()])?;
        check("node-links")?;
        lab.ip(
            "node-links",
            &lab.nodes.iter().map(|n| n.batch(spec)).collect::<Vec<_>>(),
        )?;
        check("pod-links")?;
        lab.ip("pod-links", &lab.pods().map(Pod::batch).collect::<Vec<_>>())?;

        drop(creating);
        Ok(lab)
    }

    /// The lab namespace's batch: the bridge joining the nodes and one veth per node.
    fn lab_batch(&self) -> Batch {
        let mut b = Batch::new(Some(&plan::lab_netns(self.id())));
        b.push("link set lo up");
        b.push("link add br0 type bridge");
        b.push("link set br0 up");
        for node in &self.nodes {
            let port = plan::lab_port_name(node.index);
            b.push(format!(
                "link add {port} type veth peer name eth0 netns {}",
                node.netns_name
            ));
            b.push(format!("link set {port} master br0 up"));
        }
        b
    }

    fn ip(&self, step: &'static str, batches: &[Batch]) -> Result<(), LabError> {
        ip::run_all(batches).map_err(|f| LabError::Command {
            run_id: self.id().into(),
            step,
            command: f.command,
            stderr: f.stderr,
        })
    }

    fn io_err(&self, step: &'static str, source: io::Error) -> LabError {
        LabError::Io {
            run_id: self.id().into(),
            step,
            source,
        }
    }

    /// The run id every name of this lab contains.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The lab namespace holding the bridge between nodes.
    pub fn netns_path(&self) -> PathBuf {
        named_netns_path(&plan::lab_netns(self.id()))
    }

    /// The lab's cgroup directory (`<cgroup2 mount>/mesh-<id>`), parent of all pod cgroups.
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// The nodes, in order (`nodes()[0]` is node 1).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `node` (1-based). Panics if out of range.
    pub fn node(&self, node: usize) -> &Node {
        node.checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .unwrap_or_else(|| panic!("lab {} has no node {node}", self.id()))
    }

    /// Pod `pod` of node `node` (both 1-based: `pod(2, 1)` is `n2p1`). Panics if out of range.
    pub fn pod(&self, node: usize, pod: usize) -> &Pod {
        pod.checked_sub(1)
            .and_then(|i| self.node(node).pods.get(i))
            .unwrap_or_else(|| panic!("lab {} has no pod {pod} on node {node}", self.id()))
    }

    /// All pods of all nodes.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.nodes.iter().flat_map(|n| n.pods.iter())
    }

    /// Spawns `cmd` (typically from [`Pod::command`] or [`Node::command`]) and tracks the
    /// child so cleanup kills it. Processes started elsewhere in a pod's cgroup are killed
    /// through the cgroup anyway; node processes are only killed if spawned here.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<LabChild> {
        self.inner.track_child(cmd.spawn()?)
    }

    /// Adds a pod to node `node` of the running lab (as a kubelet creates one when a pod
    /// is scheduled): the next pod number, its cgroup, namespace and link, created as
    /// [`Lab::create`] creates them and removed with the lab. On error, what was made for
    /// it is removed and the lab stays as it was.
    pub fn add_pod(&mut self, node: usize) -> Result<&Pod, LabError> {
        let id = self.inner.id.clone();
        let Some(n) = node.checked_sub(1).and_then(|i| self.nodes.get(i)) else {
            return Err(LabError::Spec(format!("lab {id} has no node {node}")));
        };
        let index = n.pods.len() + 1;
        if index > MAX_PODS_PER_NODE {
            return Err(LabError::Spec(format!(
                "node {node} of lab {id} already has {MAX_PODS_PER_NODE} pods"
            )));
        }
        let pod = Pod::plan(&id, &n.cgroup_path, node, index);
        let mut link = Batch::new(Some(&n.netns_name));
        pod.push_node_link(&mut link);
        let created = {
            // As during creation: a signal's cleanup waits for this pod to be whole.
            let _creating = self.inner.creating();
            self.create_pod(&pod, link)
        };
        if let Err(e) = created {
            let mut undo = Batch::new(None);
            undo.force = true;
            undo.push(format!("netns del {}", pod.netns_name));
            let _ = ip::run(&undo);
            let _ = cgroup::remove(&pod.cgroup_path);
            return Err(e);
        }
        let pods = &mut self.nodes[node - 1].pods;
        pods.push(pod);
        Ok(&pods[index - 1])
    }

    fn create_pod(&self, pod: &Pod, node_link: Batch) -> Result<(), LabError> {
        const STEP: &str = "add-pod";
        self.inner
            .record_cgroup(pod.cgroup_path.clone())
            .map_err(|e| self.io_err(STEP, e))?;
        cgroup::create(&pod.cgroup_path).map_err(|e| self.io_err(STEP, e))?;
        self.inner
            .record_netns([pod.netns_name.clone()])
            .map_err(|e| self.io_err(STEP, e))?;
        let mut add = Batch::new(None);
        add.push(format!("netns add {}", pod.netns_name));
        self.ip(STEP, &[add])?;
        run_in_netns(&pod.netns_path, || set_sysctls(false))
            .and_then(|r| r)
            .map_err(|e| self.io_err(STEP, e))?;
        self.ip(STEP, &[node_link])?;
        self.ip(STEP, &[pod.batch()])
    }

    /// Removes the lab now (also done on drop). Idempotent.
    pub fn cleanup(&self) {
        self.inner.cleanup();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.inner.cleanup();
    }
}

/// Writes a file under `/etc/netns/<name>/` via rename, so readers never see half of it.
fn write_etc_netns_file(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().expect("an /etc/netns file has a parent");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.tmp", name.unwrap_or_default()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Per-namespace settings, written from a thread inside the namespace: `/proc/sys/net` shows
/// the namespace of the *calling thread*.
fn set_sysctls(router: bool) -> io::Result<()> {
    let write = |key: &str, value: &str| {
        let path = Path::new("/proc/sys/net").join(key);
        std::fs::write(&path, value)
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))
    };
    // No duplicate address detection: otherwise link-local addresses stay tentative for a
    // while after creation and the first IPv6 connection across nodes stalls for ~2 s.
    write("ipv6/conf/all/accept_dad", "0")?;
    write("ipv6/conf/default/accept_dad", "0")?;
    if router {
        write("ipv4/ip_forward", "1")?;
        write("ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

/// Picks a run id nobody uses: `mkdir` of the lab's cgroup is atomic, so it doubles as the
/// reservation. Registers the lab for signal cleanup as soon as something exists.
fn reserve_run_id(mount: &Path) -> Result<(Arc<LabInner>, PathBuf), LabError> {
    let mut last_err = None;
    for _ in 0..16 {
        let id = plan::new_run_id();
        let root = mount.join(plan::cgroup_root_name(&id));
        // A leftover namespace of a crashed run with this id would make `netns add` fail.
        if named_netns_path(&plan::lab_netns(&id)).exists() {
            continue;
        }
        match cgroup::create(&root) {
            Ok(()) => {
                let inner = LabInner::register(id);
                // So that a run killed before its teardown is swept by a later one.
                if let Err(source) = sweep::record_owner(&inner.id) {
                    let _ = cgroup::remove(&root);
                    return Err(LabError::Io {
                        run_id: inner.id.clone(),
                        step: "owner record",
                        source,
                    });
                }
                if let Err(source) = inner.record_cgroup_root(root.clone()) {
                    let _ = cgroup::remove(&root);
                    return Err(LabError::Io {
                        run_id: inner.id.clone(),
                        step: "cgroups",
                        source,
                    });
                }
                return Ok((inner, root));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(source) => {
                return Err(LabError::Io {
                    run_id: id,
                    step: "cgroups",
                    source,
                });
            }
        }
    }
    let source = last_err.unwrap_or_else(|| io::Error::other("every run id was taken"));
    Err(LabError::Io {
        run_id: "-".into(),
        step: "cgroups",
        source,
    })
}

impl Node {
    fn plan(id: &str, cgroup_root: &Path, index: usize, spec: LabSpec) -> Node {
        let name = plan::node_name(index);
        let netns_name = plan::netns_name(id, &name);
        let cgroup_path = cgroup_root.join(plan::node_cgroup_name(index));
        let pods = (1..=spec.pods_per_node)
            .map(|p| Pod::plan(id, &cgroup_path, index, p))
            .collect();
        Node {
            index,
            cgroup_path,
            netns_path: named_netns_path(&netns_name),
            name,
            netns_name,
            pods,
        }
    }

    /// The node namespace's batch: its lab-side address, the pod bridge with the pods'
    /// gateway addresses, one veth per pod, and routes to the other nodes' pod subnets.
    fn batch(&self, spec: LabSpec) -> Batch {
        let n = self.index;
        let mut b = Batch::new(Some(&self.netns_name));
        b.push("link set lo up");
        b.push(format!("addr add {}/24 dev eth0", plan::node_ipv4(n)));
        // nodad (as well as accept_dad=0): a "tentative" address cannot be bound to.
        b.push(format!("addr add {}/64 dev eth0 nodad", plan::node_ipv6(n)));
        b.push("link set eth0 up");
        b.push("link add br0 type bridge");
        b.push(format!("addr add {}/24 dev br0", plan::pod_gateway_ipv4(n)));
        b.push(format!(
            "addr add {}/64 dev br0 nodad",
            plan::pod_gateway_ipv6(n)
        ));
        b.push("link set br0 up");
        for pod in &self.pods {
            pod.push_node_link(&mut b);
        }
        for m in (1..=spec.nodes).filter(|&m| m != n) {
            b.push(format!(
                "route add {} via {}",
                plan::pod_subnet_ipv4(m),
                plan::node_ipv4(m)
            ));
            b.push(format!(
                "route add {} via {}",
                plan::pod_subnet_ipv6(m),
                plan::node_ipv6(m)
            ));
        }
        b
    }

    /// Node number (1-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Short name, e.g. `n1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace name, e.g. `mt<id>-n1`.
    pub fn netns_name(&self) -> &str {
        &self.netns_name
    }

    /// `/var/run/netns/mt<id>-n1`.
    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    /// The node's address on the lab bridge, `198.18.0.<n>`.
    pub fn addr(&self) -> Ipv4Addr {
        plan::node_ipv4(self.index)
    }

    /// The node's IPv6 address on the lab bridge, `fd00::<n>`.
    pub fn addr6(&self) -> Ipv6Addr {
        plan::node_ipv6(self.index)
    }

    /// `<cgroup2 mount>/mesh-<id>/n<k>`: parent of this node's pod cgroups, where its
    /// agent attaches the capture programs. No process lives in it directly.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup_path
    }

    /// `<cgroup2 mount>/mesh-<id>/n<k>/system`: the node's own daemons (its agent) run
    /// here, below the capture cgroup, as a DaemonSet pod runs under `kubepods`.
    pub fn system_cgroup_path(&self) -> PathBuf {
        self.cgroup_path.join(plan::NODE_SYSTEM_CGROUP)
    }

    /// A command for a node daemon: this node's namespace and its `system` cgroup.
    pub fn daemon_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let cgroup = self.system_cgroup_path();
        process::pod_command(program, Some(&cgroup), Some(&self.netns_path))
    }

    /// The pods' gateway on this node, `198.18.<n>.1`.
    pub fn pod_gateway(&self) -> Ipv4Addr {
        plan::pod_gateway_ipv4(self.index)
    }

    /// The node's pods, in order (`pods()[0]` is pod 1).
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// A command that runs in this node's namespace (no cgroup). See [`process::pod_command`].
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        process::pod_command(program, None, Some(&self.netns_path))
    }

    /// Runs `f` on a thread inside this node's namespace (see [`run_in_netns`]).
    pub fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        run_in_netns(&self.netns_path, f)
    }
}

impl Pod {
    fn plan(id: &str, node_cgroup: &Path, node: usize, index: usize) -> Pod {
        let name = plan::pod_name(node, index);
        let netns_name = plan::netns_name(id, &name);
        Pod {
            node,
            index,
            netns_path: named_netns_path(&netns_name),
            cgroup_path: node_cgroup.join(plan::pod_cgroup_name(index)),
            name,
            netns_name,
        }
    }

    /// The node side of the pod's link, in the node's batch: a veth whose peer is the
    /// pod's `eth0`, on the node's bridge.
    fn push_node_link(&self, b: &mut Batch) {
        let port = plan::node_port_name(self.index);
        b.push(format!(
            "link add {port} type veth peer name eth0 netns {}",
            self.netns_name
        ));
        b.push(format!("link set {port} master br0 up"));
    }

    fn batch(&self) -> Batch {
        let (n, p) = (self.node, self.index);
        let mut b = Batch::new(Some(&self.netns_name));
        b.push("link set lo up");
        b.push(format!("addr add {}/24 dev eth0", plan::pod_ipv4(n, p)));
        b.push(format!(
            "addr add {}/64 dev eth0 nodad",
            plan::pod_ipv6(n, p)
        ));
        b.push("link set eth0 up");
        b.push(format!(
            "route add default via {}",
            plan::pod_gateway_ipv4(n)
        ));
        b.push(format!("route add ::/0 via {}", plan::pod_gateway_ipv6(n)));
        b
    }

    /// Pod number on its node (1-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of the node this pod lives on (1-based; `lab.node(pod.node())`).
    pub fn node(&self) -> usize {
        self.node
    }

    /// Short name, e.g. `n1p2`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace name, e.g. `mt<id>-n1p2`.
    pub fn netns_name(&self) -> &str {
        &self.netns_name
    }

    /// `/var/run/netns/mt<id>-n1p2`.
    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    /// `<cgroup2 mount>/mesh-<id>/n1/p2`.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup_path
    }

    /// `198.18.<node>.<10 + pod>`.
    pub fn ip(&self) -> Ipv4Addr {
        plan::pod_ipv4(self.node, self.index)
    }

    /// `fd00:0:0:<node>::<10 + pod>`.
    pub fn ipv6(&self) -> Ipv6Addr {
        plan::pod_ipv6(self.node, self.index)
    }

    /// A command that runs in this pod's cgroup and namespace. See [`process::pod_command`].
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        process::pod_command(program, Some(&self.cgroup_path), Some(&self.netns_path))
    }

    /// Runs `f` on a thread inside this pod's namespace (see [`run_in_netns`]). The thread
    /// is *not* in the pod's cgroup, like the agent's own sockets.
    pub fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        run_in_netns(&self.netns_path, f)
    }

    /// `/etc/netns/<netns name>/hosts`.
    pub fn hosts_path(&self) -> PathBuf {
        etc_netns_dir(&self.netns_name).join("hosts")
    }

    /// Writes [`Pod::hosts_path`]: localhost lines plus one line per entry. Only processes
    /// that get a private mount namespace with this file over `/etc/hosts` see it (what
    /// `ip netns exec` does); [`Pod::command`] does not, on purpose (see `process.rs`). The
    /// directory is removed with the lab. Written via rename, so readers never see half.
    pub fn write_hosts(&self, entries: &[(IpAddr, Vec<String>)]) -> io::Result<()> {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
        for (addr, names) in entries {
            text.push_str(&format!("{addr}\t{}\n", names.join(" ")));
        }
        write_etc_netns_file(&self.hosts_path(), &text)
    }

    /// `/etc/netns/<netns name>/resolv.conf`.
    pub fn resolv_conf_path(&self) -> PathBuf {
        etc_netns_dir(&self.netns_name).join("resolv.conf")
    }

    /// Writes [`Pod::resolv_conf_path`] as the kubelet writes a pod's: the nameservers, the
    /// search list and options (e.g. `ndots:5`). Seen by [`Pod::command_with_etc`], like
    /// the hosts file.
    pub fn write_resolv_conf(
        &self,
        nameservers: &[IpAddr],
        search: &[String],
        options: &[&str],
    ) -> io::Result<()> {
        let mut text = String::new();
        for ns in nameservers {
            text.push_str(&format!("nameserver {ns}\n"));
        }
        if !search.is_empty() {
            text.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !options.is_empty() {
            text.push_str(&format!("options {}\n", options.join(" ")));
        }
        write_etc_netns_file(&self.resolv_conf_path(), &text)
    }

    /// As [`Pod::command`], and the program sees this pod's `/etc/netns/<netns name>/`
    /// files (hosts, resolv.conf) over `/etc`, as an unmodified program in a real pod sees
    /// its own: `ip netns exec` runs it, after the pod's cgroup was joined (so it is
    /// captured). Its private mount namespace hides `/sys/fs/bpf`: fine for applications.
    pub fn command_with_etc(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.command("ip");
        cmd.args(["netns", "exec", &self.netns_name]).arg(program);
        cmd
    }
}
