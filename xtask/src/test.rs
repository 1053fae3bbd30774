//! `cargo xtask lint`, `test`, `demo` and `bench`.
//! Lint and test cover the default members: `mesh-ebpf` only builds for the BPF target
//! (the agent's build.rs builds it).
use std::process::Command;

use anyhow::{Result, ensure};

use crate::{run_checked, workspace_root};

/// `cargo <args>` in the workspace root.
fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(workspace_root());
    cmd
}

pub fn lint() -> Result<()> {
    run_checked(&mut cargo(&["fmt", "--all", "--", "--check"]))?;
    run_checked(&mut cargo(&[
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

pub fn run(extra: &[String]) -> Result<()> {
    ensure!(
        is_root(),
        "the tests create network namespaces and load eBPF programs: run them as root"
    );
    lint()?;
    // The integration tests run the real `mesh-agent` binary, which `cargo test` alone
    // does not build (it is another package's binary). Building every target of the
    // workspace at once gives the binary the same dependency features as the tests, so
    // `cargo test` below reuses each artifact instead of building a second copy.
    run_checked(&mut cargo(&["build", "--all-targets"]))?;
    run_checked(cargo(&["test", "--no-fail-fast", "--"]).args(extra))
}

/// `cargo xtask demo`: the agent binary in release mode, running `demo`.
pub fn demo(args: &[String]) -> Result<()> {
    let run = [
        "run",
        "--release",
        "--package",
        "mesh-agent",
        "--bin",
        "mesh-agent",
    ];
    run_checked(cargo(&run).args(["--", "demo"]).args(args))
}

fn is_root() -> bool {
    // `id -u` keeps xtask free of libc bindings.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `cargo xtask bench`: release builds of the agent and the bench driver, then the driver.
pub fn bench(args: &[String]) -> Result<()> {
    run_checked(&mut cargo(&[
        "build",
        "--release",
        "--package",
        "mesh-agent",
        "--bins",
    ]))?;
    let run = [
        "run",
        "--release",
        "--package",
        "mesh-tests",
        "--bin",
        "mesh-bench",
        "--",
    ];
    run_checked(cargo(&run).args(args))
}
