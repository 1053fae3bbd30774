//! cgroup v2 directories: find the mount, create, empty and remove a cgroup.
//!
//! The pod cgroups are where the agent attaches its `cgroup/connect4` and `sock_ops`
//! programs, so they must be cgroup **v2** even on hybrid hosts (here v2 is mounted at
//! `/sys/fs/cgroup/unified`; on pure-v2 hosts at `/sys/fs/cgroup`).

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// The cgroup2 mount point of this process's mount namespace, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    parse_cgroup2_mount(&mountinfo)
        .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no cgroup2 mount in mountinfo"))
}

/// Finds the first `cgroup2` mount point in mountinfo text (`proc_pid_mountinfo(5)`):
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        match digits {
            Some(d) if bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')),
                );
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates one cgroup directory. Fails with `AlreadyExists` if it exists: callers use that to
/// reserve a name atomically.
pub fn create(path: &Path) -> io::Result<()> {
    fs::create_dir(path).map_err(|e| with_path(e, "mkdir", path))
}

/// The pids in `cgroup.procs` (this cgroup only, not descendants).
pub fn procs(path: &Path) -> io::Result<Vec<u32>> {
    let text = fs::read_to_string(path.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Whether any process lives in this cgroup or below (`populated` in `cgroup.events`).
pub fn is_populated(path: &Path) -> io::Result<bool> {
    let events = fs::read_to_string(path.join("cgroup.events"))?;
    Ok(events.lines().any(|l| l.trim() == "populated 1"))
}

/// Kills every process in the cgroup and its descendants (`cgroup.kill`, Linux 5.14) and
/// waits, up to `timeout`, until none is left. A missing cgroup counts as empty.
pub fn kill_all(path: &Path, timeout: Duration) -> io::Result<()> {
    match fs::write(path.join("cgroup.kill"), "1") {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, "write cgroup.kill", path)),
    }
    let deadline = Instant::now() + timeout;
    loop {
        match is_populated(path) {
            Ok(false) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(with_path(e, "read cgroup.events", path)),
            Ok(true) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "{}: processes still alive after cgroup.kill",
                        path.display()
                    ),
                ));
            }
            Ok(true) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Removes an empty cgroup directory. The kernel answers `EBUSY` for a short while after
/// the last process was killed (it is still exiting), so retry for up to a second. A
/// missing directory is success, which makes cleanup idempotent.
pub fn remove(path: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(with_path(e, "rmdir", path)),
        }
    }
}

fn with_path(err: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}
