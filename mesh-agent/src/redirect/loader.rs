//! Loads (or, after a restart, reopens) the pinned programs and maps of one agent, attaches
//! the cgroup programs to the node's capture cgroup (`capture.rs`), and enrolls pods: their
//! namespace cookie into `MESH_NETNS`, `sk_lookup` onto their namespace.
use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    EbpfLoader,
    maps::{HashMap, Map, MapData, PerCpuArray, SockHash},
    programs::{
        CgroupSockAddr, SkLookup, SockOps,
        cgroup_sock_addr::CgroupSockAddrAttachType,
        links::{FdLink, PinnedLink},
    },
};
use mesh_common::{ClientKey, InboundKey, OrigDst, counters, maps, programs};
use serde::Serialize;

use super::{RedirectError, capture, io_err, origdst, upgrade};

/// The compiled kernel programs, built by build.rs from the current `mesh-ebpf` sources.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh-ebpf"));

/// Kernel ids of the loaded programs: equal before and after an agent restart when the
/// pinned programs were reused.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ProgramIds(pub std::collections::BTreeMap<&'static str, u32>);

/// Counters kept by the kernel programs.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KernelCounters {
    pub redirected: u64,
    pub passed: u64,
    pub handed_over: u64,
    pub steered: u64,
    /// SYNs to enrolled addresses dropped while no agent listener existed.
    pub dropped: u64,
}

pub struct Redirector {
    dir: PathBuf,
    /// The cgroup the cgroup programs are attached to, and where those links are pinned.
    capture_cgroup: PathBuf,
    capture_links: PathBuf,
    sk_lookup: SkLookup,
    /// Namespace cookies of enrolled pods: the cgroup programs act on their sockets only.
    netns: HashMap<MapData, u64, u8>,
    client_dst: Arc<OrigDstTable>,
    inbound: SockHash<MapData, InboundKey>,
    /// Enrolled pod addresses: kept while the agent is down so inbound fails closed.
    enrolled: HashMap<MapData, InboundKey, u8>,
    /// Per CPU; read as the sum over CPUs.
    counters: PerCpuArray<MapData, u64>,
    ids: ProgramIds,
}

/// The `cgroup/sock_addr` programs: name, attach type.
const SOCK_ADDR_PROGRAMS: [(&str, CgroupSockAddrAttachType); 4] = [
    (programs::CONNECT4, CgroupSockAddrAttachType::Connect4),
    (programs::CONNECT6, CgroupSockAddrAttachType::Connect6),
    (
        programs::GETPEERNAME4,
        CgroupSockAddrAttachType::GetPeerName4,
    ),
    (
        programs::GETPEERNAME6,
        CgroupSockAddrAttachType::GetPeerName6,
    ),
];

const ALL_PROGRAMS: [&str; 6] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::GETPEERNAME4,
    programs::GETPEERNAME6,
    programs::SOCK_OPS,
    programs::SK_LOOKUP,
];

fn prog_pin(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("prog_{name}"))
}

fn links_dir(dir: &Path, pod: &str) -> PathBuf {
    dir.join("links").join(pod)
}

impl Redirector {
    /// Opens the agent's pin directory `<root>/<agent>`, loading and pinning the programs
    /// on first use and reusing the pinned ones afterwards.
    pub fn open(
        root: &Path,
        agent: &str,
        capture_cgroup: &Path,
        excluded_ports: &[u16],
        kernel_debug_logs: bool,
    ) -> Result<Self, RedirectError> {
        ensure_bpffs(root)?;
        let dir = root.join(agent);
        std::fs::create_dir_all(dir.join("links")).map_err(io_err("creating", &dir))?;
        // All four pinned, or load afresh (a crash half-way through pinning leaves some).
        let fresh = !ALL_PROGRAMS
            .iter()
            .all(|name| prog_pin(&dir, name).exists());

        // Pinned maps are reused by name from `dir`; the rest are created anew.
        // Kernel log statements below `info` are skipped in the kernel (aya-log's level
        // global), so a redirect costs no ring-buffer write unless asked for.
        let kernel_log_level: u8 = if kernel_debug_logs { 4 } else { 3 };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&dir)
            .override_global(aya_log::LEVEL, &kernel_log_level, true)
            .load(OBJECT)?;
        // Pinned programs of another build (an upgrade, or a downgrade) are replaced.
        let stamp = upgrade::stamp(OBJECT);
        let outdated = !fresh && upgrade::pinned_stamp(&dir).as_deref() != Some(stamp.as_str());
        if fresh || outdated {
            if outdated {
                tracing::info!(dir = %dir.display(), "pinned programs come from another build: replacing them");
            }
            load_and_pin(&mut ebpf, &dir)?;
        } else {
            tracing::info!(dir = %dir.display(), "reusing pinned programs and maps");
        }
        let program_err = |name| move |source| RedirectError::Program { name, source };
        let mut sock_addr = Vec::new();
        for (name, attach_type) in SOCK_ADDR_PROGRAMS {
            let program = CgroupSockAddr::from_pin(prog_pin(&dir, name), attach_type)
                .map_err(program_err(name))?;
            sock_addr.push((name, program));
        }
        // DNS capture rides along: attached, pinned and reported like the programs above.
        sock_addr.extend(open_dns_programs(&mut ebpf, &dir, fresh || outdated)?);
        let mut sock_ops = SockOps::from_pin(prog_pin(&dir, programs::SOCK_OPS))
            .map_err(program_err(programs::SOCK_OPS))?;
        let sk_lookup = SkLookup::from_pin(prog_pin(&dir, programs::SK_LOOKUP))
            .map_err(program_err(programs::SK_LOOKUP))?;
        let id = |name, info: Result<aya::programs::ProgramInfo, _>| {
            info.map(|i| (name, i.id())).map_err(program_err(name))
        };
        let mut ids = std::collections::BTreeMap::new();
        for (name, program) in &sock_addr {
            ids.extend([id(name, program.info())?]);
        }
        ids.extend([id(programs::SOCK_OPS, sock_ops.info())?]);
        ids.extend([id(programs::SK_LOOKUP, sk_lookup.info())?]);
        let ids = ProgramIds(ids);
        if fresh || outdated {
            // Links of pods enrolled by the earlier build now run these programs; only then
            // is the stamp ours (a crash in between repeats the update at the next start).
            let mut fds = Vec::new();
            for (name, program) in &sock_addr {
                fds.push((*name, program.fd().map_err(program_err(name))?.as_fd()));
            }
            let sock_ops_fd = sock_ops.fd().map_err(program_err(programs::SOCK_OPS))?;
            fds.push((programs::SOCK_OPS, sock_ops_fd.as_fd()));
            let sk_lookup_fd = sk_lookup.fd().map_err(program_err(programs::SK_LOOKUP))?;
            fds.push((programs::SK_LOOKUP, sk_lookup_fd.as_fd()));
            let updated = upgrade::retarget_links(&dir.join("links"), &fds)?
                + upgrade::retarget_links(&capture::links_root(&dir), &fds)?;
            if updated > 0 {
                tracing::info!(
                    links = updated,
                    "pinned links now run this build's programs"
                );
            }
            upgrade::write_stamp(&dir, &stamp)?;
        }
        let capture_links = capture::attach(&dir, capture_cgroup, &mut sock_addr, &mut sock_ops)?;
        remove_per_pod_cgroup_links(&dir.join("links"))?;

        let mut take = |name: &'static str| -> Result<Map, RedirectError> {
            ebpf.take_map(name).ok_or(RedirectError::Map {
                name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            })
        };
        let map_err = |name| move |source| RedirectError::Map { name, source };
        let client_dst = HashMap::try_from(take(maps::CLIENT_ORIG_DST)?)
            .map_err(map_err(maps::CLIENT_ORIG_DST))?;
        let enrolled = HashMap::try_from(take(maps::ENROLLED_ADDRS)?)
            .map_err(map_err(maps::ENROLLED_ADDRS))?;
        let netns = HashMap::try_from(take(maps::ENROLLED_NETNS)?)
            .map_err(map_err(maps::ENROLLED_NETNS))?;
        let inbound = SockHash::try_from(take(maps::INBOUND_LISTENERS)?)
            .map_err(map_err(maps::INBOUND_LISTENERS))?;
        let counters =
            PerCpuArray::try_from(take(maps::COUNTERS)?).map_err(map_err(maps::COUNTERS))?;
        let mut excluded: HashMap<MapData, u16, u8> =
            HashMap::try_from(take(maps::EXCLUDED_PORTS)?)
                .map_err(map_err(maps::EXCLUDED_PORTS))?;
        // The flags of this run decide: drop what an earlier run excluded, add ours.
        let stale: Vec<u16> = excluded.keys().filter_map(Result::ok).collect();
        for port in stale {
            excluded
                .remove(&port)
                .map_err(map_err(maps::EXCLUDED_PORTS))?;
        }
        for port in excluded_ports {
            excluded
                .insert(port, &1, 0)
                .map_err(map_err(maps::EXCLUDED_PORTS))?;
        }

        Ok(Redirector {
            dir,
            capture_cgroup: capture_cgroup.to_path_buf(),
            capture_links,
            sk_lookup,
            netns,
            client_dst: Arc::new(OrigDstTable {
                map: Mutex::new(client_dst),
            }),
            inbound,
            enrolled,
            counters,
            ids,
        })
    }

    pub fn program_ids(&self) -> &ProgramIds {
        &self.ids
    }

    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup the cgroup programs are attached to.
    pub fn capture_cgroup(&self) -> &Path {
        &self.capture_cgroup
    }

    /// The node-level links (`cgroup/<id>/<program>`), for `status`.
    pub fn capture_links(&self) -> Vec<String> {
        pinned_links_in(&self.capture_links)
    }

    /// True when this pod's namespace is still enrolled from an earlier run.
    pub fn is_attached(&self, pod: &str) -> bool {
        links_dir(&self.dir, pod).join(programs::SK_LOOKUP).exists()
    }

    /// The cgroup programs act on the sockets of the network namespace `cookie` (idempotent).
    pub fn capture_netns(&mut self, cookie: u64) -> Result<(), RedirectError> {
        self.netns
            .insert(&cookie, &1, 0)
            .map_err(|source| RedirectError::Map {
                name: maps::ENROLLED_NETNS,
                source,
            })
    }

    /// The cgroup programs leave the namespace `cookie` alone again.
    pub fn uncapture_netns(&mut self, cookie: u64) {
        // Absent when an earlier, interrupted removal already took it out.
        let _ = self.netns.remove(&cookie);
    }

    /// Attaches `sk_lookup` to the pod's network namespace and pins the link under
    /// `links/<pod>/`. Partial work is undone on failure.
    pub fn attach_pod(&mut self, pod: &str, netns: &Path) -> Result<(), RedirectError> {
        let dir = links_dir(&self.dir, pod);
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let result = self.attach_sk_lookup(&dir, netns);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn attach_sk_lookup(&mut self, dir: &Path, netns: &Path) -> Result<(), RedirectError> {
        let netns_file = File::open(netns).map_err(io_err("opening netns", netns))?;
        let e = |name: &'static str| move |source| RedirectError::Program { name, source };
        let id = self
            .sk_lookup
            .attach(&netns_file)
            .map_err(e(programs::SK_LOOKUP))?;
        let link = self
            .sk_lookup
            .take_link(id)
            .map_err(e(programs::SK_LOOKUP))?;
        let path = dir.join(programs::SK_LOOKUP);
        FdLink::from(link)
            .pin(&path)
            .map_err(|source| RedirectError::Pin { path, source })?;
        Ok(())
    }

    /// Detaches a pod's `sk_lookup`: removing a link's last pin releases the link.
    pub fn detach_pod(&mut self, pod: &str) -> Result<(), RedirectError> {
        unpin_tree(&links_dir(&self.dir, pod))
    }

    /// Keeps only these namespaces enrolled: after a restart, cookies of pods the agent
    /// no longer knows (dropped, or removed while it was down) stop being captured.
    pub fn retain_netns(&mut self, cookies: &[u64]) {
        let stale: Vec<u64> = self
            .netns
            .keys()
            .filter_map(Result::ok)
            .filter(|cookie| !cookies.contains(cookie))
            .collect();
        for cookie in stale {
            let _ = self.netns.remove(&cookie);
        }
    }

    /// Makes `listener` (the agent's inbound listener inside the pod) receive the SYNs
    /// that `sk_lookup` sees for `ip`.
    pub fn steer_inbound(
        &mut self,
        ip: IpAddr,
        listener: &impl AsRawFd,
    ) -> Result<(), RedirectError> {
        let key = InboundKey {
            addr: origdst::sock_addr(SocketAddr::new(ip, 0)),
        };
        self.inbound
            .insert(&key, listener.as_raw_fd(), 0)
            .map_err(|source| RedirectError::Map {
                name: maps::INBOUND_LISTENERS,
                source,
            })?;
        self.enrolled
            .insert(&key, &1, 0)
            .map_err(|source| RedirectError::Map {
                name: maps::ENROLLED_ADDRS,
                source,
            })
    }

    pub fn unsteer_inbound(&mut self, ip: IpAddr) {
        let key = InboundKey {
            addr: origdst::sock_addr(SocketAddr::new(ip, 0)),
        };
        // Absent when the listener already closed (the kernel drops closed sockets).
        let _ = self.inbound.remove(&key);
        let _ = self.enrolled.remove(&key);
    }

    /// The table the outbound path reads original destinations from.
    pub fn orig_dst_table(&self) -> Arc<OrigDstTable> {
        self.client_dst.clone()
    }

    pub fn kernel_counters(&self) -> KernelCounters {
        let get = |i| {
            self.counters
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        KernelCounters {
            redirected: get(counters::REDIRECTED),
            passed: get(counters::PASSED),
            handed_over: get(counters::HANDED_OVER),
            steered: get(counters::STEERED),
            dropped: get(counters::DROPPED),
        }
    }
}

/// The `sock_ops`-filled map of original destinations, shared with the outbound proxy.
pub struct OrigDstTable {
    /// Read on every accepted outbound connection; a short critical section.
    map: Mutex<HashMap<MapData, ClientKey, OrigDst>>,
}

impl OrigDstTable {
    /// Looks up, and forgets, the original destination of an accepted outbound connection
    /// whose client is `peer` in the namespace `netns_cookie`.
    pub fn take(&self, netns_cookie: u64, peer: SocketAddr) -> Option<SocketAddr> {
        let key = origdst::client_key(netns_cookie, peer);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let value = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        origdst::socket_addr(&value.dst)
    }
}

/// The DNS capture programs (`cgroup/sendmsg4/6`, `cgroup/recvmsg4/6`): name, attach type.
const DNS_PROGRAMS: [(&str, CgroupSockAddrAttachType); 4] = [
    (
        programs::DNS_SENDMSG4,
        CgroupSockAddrAttachType::UDPSendMsg4,
    ),
    (
        programs::DNS_SENDMSG6,
        CgroupSockAddrAttachType::UDPSendMsg6,
    ),
    (
        programs::DNS_RECVMSG4,
        CgroupSockAddrAttachType::UDPRecvMsg4,
    ),
    (
        programs::DNS_RECVMSG6,
        CgroupSockAddrAttachType::UDPRecvMsg6,
    ),
];

/// Opens the pinned DNS capture programs, loading and pinning those that are missing (or
/// all of them when the other programs were loaded afresh, so they share the maps).
fn open_dns_programs(
    ebpf: &mut aya::Ebpf,
    dir: &Path,
    fresh: bool,
) -> Result<Vec<(&'static str, CgroupSockAddr)>, RedirectError> {
    let program_err = |name| move |source| RedirectError::Program { name, source };
    let mut out = Vec::new();
    for (name, attach_type) in DNS_PROGRAMS {
        let path = prog_pin(dir, name);
        if fresh || !path.exists() {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(RedirectError::Program {
                    name,
                    source: aya::programs::ProgramError::UnexpectedProgramType,
                })?
                .try_into()
                .map_err(program_err(name))?;
            program.load().map_err(program_err(name))?;
            let _ = std::fs::remove_file(&path);
            program.pin(&path).map_err(|source| RedirectError::Pin {
                path: path.clone(),
                source,
            })?;
        }
        let program = CgroupSockAddr::from_pin(&path, attach_type).map_err(program_err(name))?;
        out.push((name, program));
    }
    Ok(out)
}

fn load_and_pin(ebpf: &mut aya::Ebpf, dir: &Path) -> Result<(), RedirectError> {
    let program_err = |name| move |source| RedirectError::Program { name, source };
    for name in ALL_PROGRAMS {
        let program = ebpf.program_mut(name).ok_or(RedirectError::Program {
            name,
            source: aya::programs::ProgramError::UnexpectedProgramType,
        })?;
        match program {
            aya::programs::Program::CgroupSockAddr(p) => p.load().map_err(program_err(name))?,
            aya::programs::Program::SockOps(p) => p.load().map_err(program_err(name))?,
            aya::programs::Program::SkLookup(p) => p.load().map_err(program_err(name))?,
            _ => {
                return Err(program_err(name)(
                    aya::programs::ProgramError::UnexpectedProgramType,
                ));
            }
        }
        let path = prog_pin(dir, name);
        let _ = std::fs::remove_file(&path);
        program
            .pin(&path)
            .map_err(|source| RedirectError::Pin { path, source })?;
    }
    Ok(())
}

/// Earlier builds attached the cgroup programs to each pod's cgroup (`links/<pod>/
/// mesh_connect4`...). Those links go once the node-level ones exist: a socket under both
/// would otherwise run each program twice. Only `sk_lookup` stays per pod.
fn remove_per_pod_cgroup_links(links: &Path) -> Result<(), RedirectError> {
    let Ok(pods) = std::fs::read_dir(links) else {
        return Ok(());
    };
    for pod in pods.flatten() {
        for link in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if link.file_name() != programs::SK_LOOKUP {
                tracing::info!(link = %link.path().display(), "removing a per-pod cgroup link of an earlier build");
                std::fs::remove_file(link.path()).map_err(io_err("removing", &link.path()))?;
            }
        }
    }
    Ok(())
}

/// Removes a pin directory tree. Links and programs whose last reference was a pin are
/// released by the kernel when the pin goes.
fn unpin_tree(path: &Path) -> Result<(), RedirectError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RedirectError::Io {
            what: "removing",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// `mesh-agent uninstall`: removes every pin of one agent (links first, so capture stops).
pub fn uninstall(root: &Path, agent: &str) -> Result<(), RedirectError> {
    let dir = root.join(agent);
    capture::remove(&capture::links_root(&dir))?;
    if let Ok(entries) = std::fs::read_dir(dir.join("links")) {
        for entry in entries.flatten() {
            unpin_tree(&entry.path())?;
        }
    }
    unpin_tree(&dir)?;
    // The shared root goes too once the last agent has left it.
    let _ = std::fs::remove_dir(root);
    Ok(())
}

/// The links pinned directly in `dir` that the kernel still holds.
fn pinned_links_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|link| PinnedLink::from_pin(link.path()).is_ok())
        .map(|link| link.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Pinned links of pods opened by path (used by `status` to show what is attached).
pub fn attached_links(root: &Path, agent: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(pods) = std::fs::read_dir(root.join(agent).join("links")) {
        for pod in pods.flatten() {
            if let Ok(links) = std::fs::read_dir(pod.path()) {
                for link in links.flatten() {
                    if PinnedLink::from_pin(link.path()).is_ok() {
                        out.push(format!(
                            "{}/{}",
                            pod.file_name().to_string_lossy(),
                            link.file_name().to_string_lossy()
                        ));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// bpffs must be mounted where the pins go (`/sys/fs/bpf` on most hosts).
fn ensure_bpffs(root: &Path) -> Result<(), RedirectError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let magic = nix::sys::statfs::statfs(&probe).map(|s| s.filesystem_type().0);
    if magic == Ok(BPF_FS_MAGIC) {
        return Ok(());
    }
    Err(RedirectError::Bpffs {
        path: root.to_path_buf(),
        source: std::io::Error::other(format!(
            "{} is not on a bpf file system; mount one with `mount -t bpf bpf /sys/fs/bpf` (cargo xtask setup does)",
            probe.display()
        )),
    })
}
