//! Enrolled pods: what the enrollment API receives, how it is checked, and the per-pod
//! helper thread that creates sockets (and does other work) inside the pod's network
//! namespace.
use std::{
    collections::BTreeMap,
    fmt, io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::mpsc,
};

use mesh_testbed::netns::NetnsHandle;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

/// A pod as the CNI plugin (or the demo, or a test) describes it when enrolling it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod's network namespace file, e.g. /var/run/netns/NAME or /proc/PID/ns/net.
    pub netns: PathBuf,
    /// The pod's cgroup v2 directory, when the caller knows it (a CNI plugin does not).
    /// Capture does not need it (the programs attach once per node, above every pod's
    /// cgroup); when given, enrollment checks it lies below the agent's capture cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// The pod's addresses; inbound connections to them are captured.
    pub ips: Vec<IpAddr>,
}

fn default_service_account() -> String {
    "default".into()
}

/// `namespace/name`, the key pods are known by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PodKey {
    /// A file-name-safe form (`namespace_name`) for pin directories.
    pub fn file_name(&self) -> String {
        format!("{}_{}", self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PodSpecError {
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
    #[error(
        "field `{field}`: {value:?} is not a valid Kubernetes name (lowercase letters, digits, '-', '.'; at most 253)"
    )]
    BadName { field: &'static str, value: String },
    #[error("field `netns`: {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("field `netns`: {0} is not a network namespace file")]
    NotNetns(PathBuf),
    #[error("field `cgroup`: {path}: {source}")]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("field `cgroup`: {0} is not a cgroup v2 directory")]
    NotCgroup2(PathBuf),
    #[error("field `ips`: at least one pod address is required")]
    NoIps,
    #[error("field `ips`: {0} is not a pod address (loopback, unspecified or multicast)")]
    BadIp(IpAddr),
}

impl PodSpec {
    pub fn key(&self) -> PodKey {
        PodKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Checks everything that can be checked before touching the kernel, so a bad request
    /// fails cleanly and leaves the other pods alone.
    pub fn validate(&self) -> Result<(), PodSpecError> {
        check_name("name", &self.name)?;
        check_name("namespace", &self.namespace)?;
        check_name("serviceAccount", &self.service_account)?;
        let netns_meta = std::fs::metadata(&self.netns).map_err(|source| PodSpecError::Netns {
            path: self.netns.clone(),
            source,
        })?;
        // Namespace files live on nsfs; a regular file or directory is a mistake.
        if netns_meta.is_dir() || fs_magic(&self.netns) != Some(NSFS_MAGIC) {
            return Err(PodSpecError::NotNetns(self.netns.clone()));
        }
        if let Some(cgroup) = &self.cgroup {
            let cg_meta = std::fs::metadata(cgroup).map_err(|source| PodSpecError::Cgroup {
                path: cgroup.clone(),
                source,
            })?;
            if !cg_meta.is_dir() || fs_magic(cgroup) != Some(CGROUP2_SUPER_MAGIC) {
                return Err(PodSpecError::NotCgroup2(cgroup.clone()));
            }
        }
        if self.ips.is_empty() {
            return Err(PodSpecError::NoIps);
        }
        if let Some(ip) = self
            .ips
            .iter()
            .find(|ip| ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
        {
            return Err(PodSpecError::BadIp(*ip));
        }
        Ok(())
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), PodSpecError> {
    if value.is_empty() {
        return Err(PodSpecError::Empty(field));
    }
    let ok = value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(PodSpecError::BadName {
            field,
            value: value.to_string(),
        })
    }
}

const NSFS_MAGIC: i64 = 0x6e73_6673;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn fs_magic(path: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| s.filesystem_type().0)
}

/// Work to run on the pod's thread, inside its network namespace.
type NetnsJob = Box<dyn FnOnce() + Send>;

/// A thread that lives inside one pod's network namespace and runs what must happen there:
/// creating sockets (a socket belongs to the namespace of the thread that creates it) and
/// writing the namespace's sysctls. Creating a thread per connection (setns only changes
/// the calling thread) would cost tens of microseconds; a channel round trip costs a few.
pub struct PodSockets {
    jobs: mpsc::Sender<NetnsJob>,
}

impl PodSockets {
    pub fn start(netns: &Path, thread_name: String) -> io::Result<Self> {
        let handle = NetnsHandle::open(netns)?;
        let (tx, rx) = mpsc::channel::<NetnsJob>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                if let Err(e) = handle.enter() {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                // Ends when the PodSockets (the only sender) is dropped.
                for job in rx {
                    job();
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("socket thread died"))??;
        Ok(PodSockets { jobs: tx })
    }

    /// Runs `job` on the pod's thread (inside its network namespace) and returns its result.
    pub async fn run<T, F>(&self, job: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(job());
            }))
            .map_err(|_| io::Error::other("pod socket thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("pod socket thread is gone"))?
    }

    /// A new, unconnected TCP socket in the pod's namespace, ready for tokio.
    pub async fn tcp_socket(&self, for_addr: &SocketAddr) -> io::Result<tokio::net::TcpSocket> {
        let socket = self.socket(for_addr, Type::STREAM, Protocol::TCP).await?;
        Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
    }

    async fn socket(
        &self,
        for_addr: &SocketAddr,
        kind: Type,
        protocol: Protocol,
    ) -> io::Result<Socket> {
        let domain = Domain::for_address(*for_addr);
        self.run(move || {
            let socket = Socket::new(domain, kind.nonblocking().cloexec(), Some(protocol))?;
            // The capture programs skip marked sockets: the agent may run below the
            // capture cgroup, and must not capture its own connects from inside the pod.
            socket.set_mark(mesh_common::AGENT_SOCKET_MARK)?;
            Ok(socket)
        })
        .await
    }

    /// A UDP socket bound to `addr` in the pod's namespace, ready for tokio.
    pub async fn udp_bind(&self, addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
        let socket = self.socket(&addr, Type::DGRAM, Protocol::UDP).await?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        tokio::net::UdpSocket::from_std(socket.into())
    }

    /// A listening socket in the pod's namespace (created on the helper thread).
    pub async fn listen(
        &self,
        addr: SocketAddr,
        backlog: u32,
    ) -> io::Result<tokio::net::TcpListener> {
        let socket = self.tcp_socket(&addr).await?;
        socket.set_reuseaddr(true)?;
        if addr.is_ipv6() {
            socket2::SockRef::from(&socket).set_only_v6(true)?;
        }
        socket.bind(addr)?;
        socket.listen(backlog)
    }
}
