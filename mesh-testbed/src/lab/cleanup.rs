//! What a lab owns and how it is torn down: on drop, on a failed creation, and on
//! Ctrl-C/SIGTERM through a process-wide registry of live labs.
//!
//! Order matters: processes first (a namespace or cgroup with members cannot really go
//! away), then namespace names (veths vanish with their namespaces), then `/etc/netns`
//! files, then the now-empty cgroups. Every step tolerates "already gone", so cleanup is
//! idempotent, and it reports problems on stderr instead of panicking (it runs in `Drop`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::{cgroup, ip};

/// How long to wait for killed processes to disappear before giving up on a step.
const KILL_TIMEOUT: Duration = Duration::from_secs(3);

/// The shared, lockable state of one lab: everything created so far, so a partial lab can
/// be removed exactly as far as it got.
#[derive(Debug)]
pub(crate) struct LabInner {
    pub id: String,
    /// Held by `Lab::create` for the whole creation and taken first by `cleanup`. Without
    /// it, a cleanup racing a creation (signal during `create`) could delete names that an
    /// `ip netns add` still running then creates, leaking them.
    creating: Mutex<()>,
    resources: Mutex<Resources>,
}

#[derive(Debug, Default)]
struct Resources {
    /// Namespace names, in creation order (removed in reverse).
    netns: Vec<String>,
    /// The lab's `mesh-<id>` cgroup directory, once created.
    cgroup_root: Option<PathBuf>,
    /// Node and pod cgroups under `cgroup_root`, parents before children (removed in
    /// reverse).
    cgroups: Vec<PathBuf>,
    children: Vec<Arc<Mutex<Child>>>,
    cleaned: bool,
}

impl LabInner {
    /// Creates the state and registers it so a signal can clean it up.
    pub fn register(id: String) -> Arc<Self> {
        let inner = Arc::new(Self {
            id,
            creating: Mutex::new(()),
            resources: Mutex::default(),
        });
        let mut labs = lock(&REGISTRY);
        labs.retain(|weak| weak.strong_count() > 0);
        labs.push(Arc::downgrade(&inner));
        inner
    }

    /// Held while creating; see the field.
    pub fn creating(&self) -> MutexGuard<'_, ()> {
        lock(&self.creating)
    }

    fn resources(&self) -> MutexGuard<'_, Resources> {
        lock(&self.resources)
    }

    /// Records something about to be created. Fails once cleanup has started (a signal
    /// arrived during creation), which aborts the creation.
    fn record(&self, f: impl FnOnce(&mut Resources)) -> io::Result<()> {
        let mut res = self.resources();
        if res.cleaned {
            return Err(io::Error::other("lab is being cleaned up"));
        }
        f(&mut res);
        Ok(())
    }

    pub fn record_cgroup_root(&self, path: PathBuf) -> io::Result<()> {
        self.record(|r| r.cgroup_root = Some(path))
    }

    pub fn record_cgroup(&self, path: PathBuf) -> io::Result<()> {
        self.record(|r| r.cgroups.push(path))
    }

    pub fn record_netns(&self, names: impl IntoIterator<Item = String>) -> io::Result<()> {
        self.record(|r| r.netns.extend(names))
    }

    pub fn track_child(&self, child: Child) -> io::Result<LabChild> {
        let child = Arc::new(Mutex::new(child));
        let pid = lock(&child).id();
        match self.record(|r| r.children.push(child.clone())) {
            Ok(()) => Ok(LabChild { pid, child }),
            Err(e) => {
                kill_and_reap(&child);
                Err(e)
            }
        }
    }

    /// Tears everything down. Idempotent; never panics; problems go to stderr.
    pub fn cleanup(&self) {
        let _creating = self.creating();
        let mut res = self.resources();
        if res.cleaned {
            return;
        }
        res.cleaned = true;
        let warn = |what: &str, err: &dyn std::fmt::Display| {
            eprintln!("mesh-testbed: cleanup of lab {}: {what}: {err}", self.id);
        };

        for child in res.children.drain(..) {
            kill_and_reap(&child);
        }
        if let Some(root) = &res.cgroup_root {
            // cgroup.kill on the parent reaches every pod leaf below it.
            if let Err(e) = cgroup::kill_all(root, KILL_TIMEOUT) {
                warn("killing cgroup members", &e);
            }
        }
        if !res.netns.is_empty() {
            let mut batch = ip::Batch::new(None);
            batch.force = true;
            for name in res.netns.iter().rev() {
                batch.push(format!("netns del {name}"));
            }
            if let Err(e) = ip::run(&batch) {
                // `-force` reports a failure if any name was already gone; only complain
                // about names that are really still there.
                let left: Vec<_> = res.netns.iter().filter(|n| netns_exists(n)).collect();
                if !left.is_empty() {
                    warn(&format!("deleting namespaces {left:?}"), &e.stderr);
                }
            }
            for name in &res.netns {
                let dir = etc_netns_dir(name);
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => warn(&format!("removing {}", dir.display()), &e),
                }
            }
        }
        for leaf in res.cgroups.iter().rev() {
            if let Err(e) = cgroup::remove(leaf) {
                warn("removing cgroup", &e);
            }
        }
        if let Some(root) = &res.cgroup_root
            && let Err(e) = cgroup::remove(root)
        {
            warn("removing cgroup", &e);
        }
        super::sweep::forget_owner(&self.id);
    }
}

/// `/etc/netns/<name>`: the directory whose files `ip netns exec` bind-mounts over `/etc`.
pub(crate) fn etc_netns_dir(netns_name: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns_name)
}

fn netns_exists(name: &str) -> bool {
    crate::netns::named_netns_path(name).exists()
}

/// SIGKILL (if still running) and reap, bounded so a stuck process cannot hang cleanup.
fn kill_and_reap(child: &Mutex<Child>) {
    let mut child = lock(child);
    // std's kill is a no-op once the child was reaped, so there is no pid-reuse risk.
    let _ = child.kill();
    let deadline = Instant::now() + KILL_TIMEOUT;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Locks, ignoring poisoning: cleanup must still work after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child process started with [`Lab::spawn`](super::Lab::spawn). The lab kills it on
/// cleanup if it is still running; dropping this handle does not. Clones share the process.
#[derive(Debug, Clone)]
pub struct LabChild {
    pid: u32,
    child: Arc<Mutex<Child>>,
}

impl LabChild {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL and reap. Harmless if it already exited.
    pub fn kill(&self) -> io::Result<ExitStatus> {
        let mut child = lock(&self.child);
        child.kill()?;
        child.wait()
    }

    /// Sends SIGTERM if it is still running (graceful shutdown of an agent or server).
    pub fn terminate(&self) -> io::Result<()> {
        let mut child = lock(&self.child);
        // Holding the lock after `try_wait` says "running" means it is not reaped yet, so
        // the pid still names our child.
        if child.try_wait()?.is_none() {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        Ok(())
    }

    /// The exit status if it has exited.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        lock(&self.child).try_wait()
    }

    /// Waits for exit. Polls rather than blocking in `wait(2)` under the lock, so cleanup
    /// (or `kill` from another thread) is never blocked behind a waiter.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout`; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Takes the child's stdout pipe (if it was `Stdio::piped()`).
    pub fn take_stdout(&self) -> Option<std::process::ChildStdout> {
        lock(&self.child).stdout.take()
    }

    /// Takes the child's stderr pipe (if it was `Stdio::piped()`).
    pub fn take_stderr(&self) -> Option<std::process::ChildStderr> {
        lock(&self.child).stderr.take()
    }

    /// Takes the child's stdin pipe (if it was `Stdio::piped()`).
    pub fn take_stdin(&self) -> Option<std::process::ChildStdin> {
        lock(&self.child).stdin.take()
    }
}

/// Every lab alive in this process, for the signal handler. Weak, so the registry never
/// keeps a dropped lab alive.
static REGISTRY: Mutex<Vec<Weak<LabInner>>> = Mutex::new(Vec::new());

/// Cleans up every live lab in this process (for a custom signal handler, e.g. tokio's).
/// Safe to call more than once, but it removes labs other threads are still using.
pub fn cleanup_all_labs() {
    let labs: Vec<_> = lock(&REGISTRY).iter().filter_map(Weak::upgrade).collect();
    for lab in labs {
        lab.cleanup();
    }
}

/// Installs a SIGINT/SIGTERM/SIGHUP handler (once per process) that cleans up every live
/// lab and exits with 128 + the signal number (130 for Ctrl-C).
///
/// The work runs on a normal thread (signal-hook's iterator), not in signal context, so it
/// may spawn `ip` and take locks. Without this, Ctrl-C skips `Drop` and leaks the lab.
pub fn install_signal_cleanup() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = lock(&INSTALLED);
    if *installed {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                cleanup_all_labs();
                std::process::exit(128 + signal);
            }
        })?;
    *installed = true;
    Ok(())
}
