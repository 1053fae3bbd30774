//! The testbed: network namespaces, cgroup v2 and process placement, and the "lab" of nodes
//! and pods built from them, shared by the agent (`netns`), `mesh-agent demo`, integration
//! tests and benchmarks.
//!
//! - [`netns`]: open a namespace, run code inside it on a helper thread, namespace cookies.
//! - [`cgroup`]: find the cgroup2 mount, create, empty and remove cgroups.
//! - [`process`]: start a program inside a pod's cgroup and namespace.
//! - [`lab`]: create and tear down a whole lab (address plan and naming documented there).
//!
//! `unsafe` is denied crate-wide and allowed only in `netns` and `process` (syscalls).

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cgroup;
mod ip;
pub mod lab;
pub mod netns;
pub mod process;

pub use lab::{
    Lab, LabChild, LabError, LabSpec, Node, Pod, cleanup_all_labs, install_signal_cleanup,
};
pub use netns::{NetnsHandle, current_netns_cookie, netns_cookie, run_in_netns};
pub use process::pod_command;
