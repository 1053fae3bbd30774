//! Network namespaces: open one, run code inside it, and ask the kernel which one a socket
//! belongs to.
//!
//! `setns(2)` changes only the *calling thread*. The agent therefore never enters a pod's
//! namespace on a tokio worker: it spawns a short-lived std thread ([`run_in_netns`]) that
//! enters the namespace, creates the socket and returns it; the socket stays in that
//! namespace for its whole life and can be handed to tokio on any thread.
//!
//! This module is used by the production agent as well as by the testbed.

// One of the two modules allowed to use `unsafe` (the other is `process`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// `SO_NETNS_COOKIE` (Linux 5.14): the 64-bit id of the socket's network namespace. Defined
/// here because not every libc target module exports it.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Where `ip netns add NAME` puts the namespace file.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// The path of a named network namespace (`/var/run/netns/NAME`).
pub fn named_netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// An open network-namespace file (`/var/run/netns/NAME`, `/proc/PID/ns/net`, ...).
///
/// Holding the file keeps the namespace alive even if its name is deleted.
#[derive(Debug)]
pub struct NetnsHandle {
    fd: OwnedFd,
    path: PathBuf,
}

impl NetnsHandle {
    /// Opens a namespace file. The descriptor is close-on-exec (std's default).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| with_path(e, "open netns", path))?;
        Ok(Self {
            fd: file.into(),
            path: path.to_owned(),
        })
    }

    /// The namespace of the calling *thread* (not the process: a helper thread may differ).
    pub fn current() -> io::Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number: what `readlink /proc/PID/ns/net` shows as `net:[N]`.
    pub fn inode(&self) -> io::Result<u64> {
        Ok(File::from(self.fd.try_clone()?).metadata()?.ino())
    }

    /// Moves the calling thread into this namespace. Only for threads you own and will
    /// discard (see [`NetnsHandle::run`]); a pooled thread would silently stay inside.
    pub fn enter(&self) -> io::Result<()> {
        setns(&self.fd, CloneFlags::CLONE_NEWNET)
            .map_err(|e| with_path(e.into(), "setns", &self.path))
    }

    /// Runs `f` on a new thread inside this namespace and returns its result. A panic in `f`
    /// is resumed on the caller.
    pub fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let fd = self.fd.try_clone()?;
        let path = self.path.clone();
        let thread =
            std::thread::Builder::new()
                .name("netns".into())
                .spawn(move || -> io::Result<T> {
                    setns(&fd, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| with_path(e.into(), "setns", &path))?;
                    Ok(f())
                })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl AsFd for NetnsHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Runs `f` on a short-lived thread that has entered the network namespace at `netns`.
///
/// Typical use: create a listening or connecting socket inside a pod's namespace, return
/// it, and register it with tokio on the caller's side.
pub fn run_in_netns<T, F>(netns: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    NetnsHandle::open(netns)?.run(f)
}

/// The kernel's id of the network namespace `socket` lives in (`SO_NETNS_COOKIE`). Stable for
/// the namespace's lifetime and never reused, unlike inode numbers.
pub fn netns_cookie(socket: impl AsFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the fd is borrowed for the duration of the call; `cookie` and `len` are live
    // locals and `len` holds the exact size of `cookie`, so the kernel writes within bounds.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(io::Error::other(format!(
            "SO_NETNS_COOKIE returned {len} bytes"
        )));
    }
    Ok(cookie)
}

/// The cookie of the calling thread's network namespace, read from a throwaway socket.
pub fn current_netns_cookie() -> io::Result<u64> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    netns_cookie(&sock)
}

fn with_path(err: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}
