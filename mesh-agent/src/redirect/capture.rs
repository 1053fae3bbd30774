//! The node-level attachment of the cgroup programs (connect4/6, getpeername4/6, the DNS
//! sendmsg/recvmsg4/6, sock_ops): once per agent, to one cgroup above every pod's (the
//! kubelet's `kubepods` cgroup on a node, a node's cgroup in the lab). A CNI plugin learns a
//! pod's network namespace, never its cgroup, so the programs decide per socket from its
//! namespace cookie (`MESH_NETNS`, filled by enrollment) instead of being attached per pod.
//!
//! The links are pinned under `cgroup/<cgroup id>/<program>` (the id is the cgroup
//! directory's inode number, what the kernel calls the cgroup id), so they survive an agent
//! restart and an upgrade retargets them like the pods' links (`upgrade::retarget_links`).
//! An agent started with another capture cgroup attaches to it first and then drops the
//! links of the old one.
use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::programs::{CgroupAttachMode, CgroupSockAddr, SockOps, links::FdLink};

use super::{RedirectError, io_err};

/// The directory holding one subdirectory of links per capture cgroup.
pub fn links_root(pin_dir: &Path) -> PathBuf {
    pin_dir.join("cgroup")
}

/// Where the links to `cgroup` are pinned.
fn links_dir(pin_dir: &Path, cgroup: &Path) -> Result<PathBuf, RedirectError> {
    let id = std::fs::metadata(cgroup)
        .map_err(io_err("reading the capture cgroup", cgroup))?
        .ino();
    Ok(links_root(pin_dir).join(id.to_string()))
}

/// Attaches every program missing from `cgroup`'s pinned links and pins its link; then
/// removes the links of any other cgroup an earlier run captured. Returns the links
/// directory. A program already pinned there is left as it is (an upgrade has pointed it
/// at the current build's program before this runs).
pub fn attach(
    pin_dir: &Path,
    cgroup: &Path,
    sock_addr: &mut [(&'static str, CgroupSockAddr)],
    sock_ops: &mut SockOps,
) -> Result<PathBuf, RedirectError> {
    let dir = links_dir(pin_dir, cgroup)?;
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let cgroup_file = File::open(cgroup).map_err(io_err("opening the capture cgroup", cgroup))?;
    let e = |name: &'static str| move |source| RedirectError::Program { name, source };
    let pin = |link: FdLink, path: PathBuf| -> Result<(), RedirectError> {
        link.pin(&path)
            .map_err(|source| RedirectError::Pin { path, source })?;
        Ok(())
    };
    let as_fd_link = |path: &Path, link: Result<FdLink, String>| {
        link.map_err(|reason| RedirectError::Link {
            path: path.to_path_buf(),
            reason,
        })
    };
    for (name, program) in sock_addr.iter_mut() {
        let path = dir.join(*name);
        if path.exists() {
            continue;
        }
        let id = program
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(e(name))?;
        let link = program.take_link(id).map_err(e(name))?;
        pin(
            as_fd_link(&path, FdLink::try_from(link).map_err(|e| e.to_string()))?,
            path,
        )?;
    }
    let name = mesh_common::programs::SOCK_OPS;
    let path = dir.join(name);
    if !path.exists() {
        let id = sock_ops
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(e(name))?;
        let link = sock_ops.take_link(id).map_err(e(name))?;
        pin(
            as_fd_link(&path, FdLink::try_from(link).map_err(|e| e.to_string()))?,
            path,
        )?;
    }
    // Only now: the new cgroup is captured before the old one is let go.
    if let Ok(entries) = std::fs::read_dir(links_root(pin_dir)) {
        for entry in entries.flatten() {
            if entry.path() != dir {
                tracing::info!(links = %entry.path().display(), "detaching from the previous capture cgroup");
                remove(&entry.path())?;
            }
        }
    }
    Ok(dir)
}

/// Removes a links directory (a link whose last pin goes is detached).
pub fn remove(dir: &Path) -> Result<(), RedirectError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", dir)(e)),
    }
}

/// The default capture cgroup on a node: the kubelet's `kubepods` cgroup (systemd or
/// cgroupfs driver) under the cgroup2 mount when there is one, else the mount's root.
pub fn default_cgroup() -> std::io::Result<PathBuf> {
    let mount = mesh_testbed::cgroup::cgroup2_mount()?;
    let kubepods = ["kubepods.slice", "kubepods"]
        .iter()
        .map(|name| mount.join(name))
        .find(|path| path.is_dir());
    Ok(kubepods.unwrap_or(mount))
}
