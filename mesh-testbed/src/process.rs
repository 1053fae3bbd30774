//! Starting a program inside a pod (cgroup + network namespace) or a node (namespace only).
//!
//! Why not `ip netns exec`: it unshares the mount namespace and remounts `/sys`, which hides
//! `/sys/fs/bpf` and the cgroup2 mount from the child; the agent needs both. Here the child
//! keeps the parent's mount namespace and only its cgroup and network namespace change.

// One of the two modules allowed to use `unsafe` (the other is `netns`).
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

/// Builds a `Command` that, in the child between fork and exec, first joins the cgroup at
/// `cgroup` (writes `0` to its `cgroup.procs`) and then enters the network namespace at
/// `netns`. Either may be `None` (a node has a namespace but no cgroup).
///
/// The cgroup is joined before the namespace so every socket the program creates is already
/// charged to (and captured by the eBPF programs of) the pod's cgroup.
///
/// The files are opened now, before fork, because the child may only make async-signal-safe
/// syscalls. If opening fails, the error is reported by `spawn()` (as the bare OS error).
pub fn pod_command(
    program: impl AsRef<OsStr>,
    cgroup: Option<&Path>,
    netns: Option<&Path>,
) -> Command {
    let mut cmd = Command::new(program);
    let setup = ChildSetup {
        cgroup_procs: cgroup.map(|dir| {
            OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map(OwnedFd::from)
        }),
        netns: netns.map(|path| std::fs::File::open(path).map(OwnedFd::from)),
    }
    .into_raw_errors();
    // SAFETY: the closure runs in the forked child before exec. It only calls write(2) and
    // setns(2) on descriptors opened before the fork, and builds errors with
    // `io::Error::from_raw_os_error`, which does not allocate: no locks, no allocation.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
    cmd
}

/// What the child does before exec. Errors from opening are kept as raw errno values so
/// the child can report them without allocating.
struct ChildSetup<T> {
    cgroup_procs: Option<T>,
    netns: Option<T>,
}

type Prepared = Result<OwnedFd, i32>;

impl ChildSetup<io::Result<OwnedFd>> {
    fn into_raw_errors(self) -> ChildSetup<Prepared> {
        let raw = |r: io::Result<OwnedFd>| r.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
        ChildSetup {
            cgroup_procs: self.cgroup_procs.map(raw),
            netns: self.netns.map(raw),
        }
    }
}

impl ChildSetup<Prepared> {
    /// Runs in the child between fork and exec: only async-signal-safe work.
    fn apply(&self) -> io::Result<()> {
        if let Some(procs) = &self.cgroup_procs {
            let fd = procs
                .as_ref()
                .map_err(|e| io::Error::from_raw_os_error(*e))?;
            // "0" means "the writing process": no pid formatting needed in the child.
            nix::unistd::write(fd, b"0").map_err(errno)?;
        }
        if let Some(ns) = &self.netns {
            let fd = ns.as_ref().map_err(|e| io::Error::from_raw_os_error(*e))?;
            setns(fd, CloneFlags::CLONE_NEWNET).map_err(errno)?;
        }
        Ok(())
    }
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
