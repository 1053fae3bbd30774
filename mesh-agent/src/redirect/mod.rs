//! The kernel side of capture: loading and pinning the eBPF programs, attaching the cgroup
//! programs once to the node's capture cgroup, enrolling pods by network namespace, reading
//! original destinations, and removing everything on uninstall.
//!
//! Pin layout, one directory per agent (`/sys/fs/bpf/mesh/<agent>/`):
//! * `MESH_*`           the maps (pinned by name when the object is loaded);
//! * `prog_<program>`   the loaded programs, reused by a restarted agent;
//! * `cgroup/<id>/...`  the cgroup programs' links to the capture cgroup (`capture.rs`);
//! * `links/<pod>/...`  the pod's `sk_lookup` link; links are pinned so capture survives an
//!   agent restart (connections fail closed while no agent listens, rather than bypassing
//!   the mesh);
//! * `stamp-<hash>`     which build loaded the programs (see `upgrade.rs`).
mod capture;
mod loader;
mod origdst;
mod upgrade;

use std::path::{Path, PathBuf};

pub use capture::default_cgroup as default_capture_cgroup;
pub use loader::{KernelCounters, OrigDstTable, ProgramIds, Redirector, attached_links, uninstall};
pub use origdst::client_key;

/// Default root of the per-agent pin directories.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/mesh";

#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("link {path}: {reason}")]
    Link { path: PathBuf, reason: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RedirectError {
    let path = path.to_path_buf();
    move |source| RedirectError::Io { what, path, source }
}
