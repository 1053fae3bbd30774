//! Loads (or, after a restart, reopens) the pinned programs and maps of one agent, and
//! attaches them to pods.
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
        CgroupAttachMode, CgroupSockAddr, SkLookup, SockOps,
        cgroup_sock_addr::CgroupSockAddrAttachType,
        links::{FdLink, PinnedLink},
    },
};
use mesh_common::{ClientKey, InboundKey, OrigDst, counters, maps, programs};
use serde::Serialize;

use super::{RedirectError, io_err, origdst, upgrade};

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
    /// connect4/6 and getpeername4/6, with the pin name of their per-pod links.
    sock_addr: Vec<(&'static str, CgroupSockAddr)>,
    sock_ops: SockOps,
    sk_lookup: SkLookup,
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
        let sock_ops = SockOps::from_pin(prog_pin(&dir, programs::SOCK_OPS))
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
            let updated = upgrade::retarget_links(&dir.join("links"), &fds)?;
            if updated > 0 {
                tracing::info!(links = updated, "pods' links now run this build's programs");
            }
            upgrade::write_stamp(&dir, &stamp)?;
        }

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
            sock_addr,
            sock_ops,
            sk_lookup,
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

    /// True when this pod's programs are still attached from an earlier run.
    pub fn is_attached(&self, pod: &str) -> bool {
        links_dir(&self.dir, pod).join(programs::SK_LOOKUP).exists()
    }

    /// Attaches the outbound programs to the pod's cgroup and the inbound program to its
    /// network namespace, pinning each link. Partial work is undone on failure.
    pub fn attach_pod(
        &mut self,
        pod: &str,
        cgroup: &Path,
        netns: &Path,
    ) -> Result<(), RedirectError> {
        let dir = links_dir(&self.dir, pod);
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let result = self.attach_pod_inner(&dir, cgroup, netns);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn attach_pod_inner(
        &mut self,
        dir: &Path,
        cgroup: &Path,
        netns: &Path,
    ) -> Result<(), RedirectError> {
        let cgroup_file = File::open(cgroup).map_err(io_err("opening cgroup", cgroup))?;
        let netns_file = File::open(netns).map_err(io_err("opening netns", netns))?;
        let pin = |link: Result<FdLink, String>, name: &str| -> Result<(), RedirectError> {
            let path = dir.join(name);
            let link = link.map_err(|reason| RedirectError::Link {
                path: path.clone(),
                reason,
            })?;
            link.pin(&path)
                .map_err(|source| RedirectError::Pin { path, source })?;
            Ok(())
        };
        let e = |name: &'static str| move |source| RedirectError::Program { name, source };

        for (name, program) in &mut self.sock_addr {
            let id = program
                .attach(&cgroup_file, CgroupAttachMode::Single)
                .map_err(e(name))?;
            let link = program.take_link(id).map_err(e(name))?;
            pin(FdLink::try_from(link).map_err(|e| e.to_string()), name)?;
        }

        let id = self
            .sock_ops
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(e(programs::SOCK_OPS))?;
        let link = self.sock_ops.take_link(id).map_err(e(programs::SOCK_OPS))?;
        pin(
            FdLink::try_from(link).map_err(|e| e.to_string()),
            programs::SOCK_OPS,
        )?;

        let id = self
            .sk_lookup
            .attach(&netns_file)
            .map_err(e(programs::SK_LOOKUP))?;
        let link = self
            .sk_lookup
            .take_link(id)
            .map_err(e(programs::SK_LOOKUP))?;
        pin(Ok(FdLink::from(link)), programs::SK_LOOKUP)
    }

    /// Detaches a pod: removing a link's last pin releases the link, which detaches it.
    pub fn detach_pod(&mut self, pod: &str) -> Result<(), RedirectError> {
        let dir = links_dir(&self.dir, pod);
        unpin_tree(&dir)
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

/// Pinned links opened by path (used by `status` to show what is attached).
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
