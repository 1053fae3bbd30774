//! What a killed run left behind, removed by the next one. A lab's owner writes
//! `/run/mesh-testbed/labs/<id>` (its pid and the pid's start time, so a reused pid is not
//! mistaken for the owner) when it reserves the id, and removes it when the lab is torn
//! down. A SIGKILL skips the teardown: the record stays, naming a process that is gone.
//! [`sweep_dead_labs`] then removes such a lab: every process inside its namespaces
//! (agents started in a node's namespace are in no lab cgroup), the members of its
//! cgroups, its namespaces and their `/etc/netns` files, its cgroup tree, the record.
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{cgroup, ip};

const RECORDS: &str = "/run/mesh-testbed/labs";

/// A lab whose owner is gone, as swept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptLab {
    pub id: String,
    /// The pid of the process that created it (to find files it named after itself).
    pub owner_pid: u32,
}

fn record_path(id: &str) -> PathBuf {
    Path::new(RECORDS).join(id)
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Records this process as the owner of lab `id`.
pub(crate) fn record_owner(id: &str) -> io::Result<()> {
    fs::create_dir_all(RECORDS)?;
    let pid = std::process::id();
    let started = start_time(pid).unwrap_or(0);
    fs::write(record_path(id), format!("{pid} {started}\n"))
}

pub(crate) fn forget_owner(id: &str) {
    let _ = fs::remove_file(record_path(id));
}

/// Whether the recorded owner still runs (same pid, same start time).
fn owner_alive(record: &str) -> Option<(u32, bool)> {
    let mut fields = record.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let started: u64 = fields.next()?.parse().ok()?;
    Some((pid, start_time(pid) == Some(started)))
}

/// Removes every lab whose owner is gone; returns them.
pub fn sweep_dead_labs() -> Vec<SweptLab> {
    let Ok(entries) = fs::read_dir(RECORDS) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        let Ok(record) = fs::read_to_string(entry.path()) else {
            continue;
        };
        match owner_alive(&record) {
            Some((_, true)) => {}
            Some((owner_pid, false)) => {
                remove_lab(&id);
                forget_owner(&id);
                swept.push(SweptLab { id, owner_pid });
            }
            // Unreadable: not ours to judge; leave it.
            None => {}
        }
    }
    swept
}

fn remove_lab(id: &str) {
    let prefix = format!("mt{id}-");
    let namespaces: Vec<String> = fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    kill_processes_in(&namespaces);
    if let Ok(mount) = cgroup::cgroup2_mount() {
        let root = mount.join(super::plan::cgroup_root_name(id));
        let _ = cgroup::kill_all(&root, Duration::from_secs(3));
        remove_tree(&root);
    }
    if !namespaces.is_empty() {
        let mut batch = ip::Batch::new(None);
        batch.force = true;
        for name in &namespaces {
            batch.push(format!("netns del {name}"));
        }
        let _ = ip::run(&batch);
    }
    for entry in fs::read_dir("/etc/netns").into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// SIGKILLs every process whose network namespace is one of `names`, and waits (a
/// little) for them to go.
fn kill_processes_in(names: &[String]) {
    let inodes: Vec<(u64, u64)> = names
        .iter()
        .filter_map(|n| fs::metadata(crate::netns::named_netns_path(n)).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if inodes.is_empty() {
        return;
    }
    let members = || -> Vec<i32> {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| inodes.contains(&(m.dev(), m.ino())))
            })
            .collect()
    };
    for pid in members() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !members().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes a cgroup directory and everything below it, children first.
fn remove_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = cgroup::remove(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_a_live_owner_only_with_its_start_time() {
        let me = std::process::id();
        let started = start_time(me).expect("our own start time");
        assert_eq!(owner_alive(&format!("{me} {started}\n")), Some((me, true)));
        // The same pid with another start time is another process.
        assert_eq!(
            owner_alive(&format!("{me} {}\n", started + 1)),
            Some((me, false))
        );
        assert_eq!(owner_alive("garbage"), None);
    }
}
