//! `cargo xtask lint`, `test`, and the agent-backed tasks (`bench`, `demo`).
//! Both use the default members: `mesh-ebpf` only builds for the BPF target (build.rs
//! of the agent builds it).
use std::process::Command;

use anyhow::{Result, ensure};

use crate::{run_checked, workspace_root};

pub fn lint() -> Result<()> {
    let root = workspace_root();
    run_checked(
        Command::new("cargo")
            .args(["fmt", "--all", "--", "--check"])
            .current_dir(&root),
    )?;
    run_checked(
        Command::new("cargo")
            .args(["clippy", "--all-targets", "--", "-D", "warnings"])
            .current_dir(&root),
    )
}

pub fn run(extra: &[String]) -> Result<()> {
    ensure!(
        nix_is_root(),
        "the tests create network namespaces and load eBPF programs: run them as root"
    );
    lint()?;
    let root = workspace_root();
    // The integration tests run the real `mesh-agent` binary, which `cargo test` alone
    // does not build (it is another package's binary).
    run_checked(
        Command::new("cargo")
            .args(["build", "--package", "mesh-agent", "--bins"])
            .current_dir(&root),
    )?;
    run_checked(
        Command::new("cargo")
            .args(["test", "--no-fail-fast"])
            .arg("--")
            .args(extra)
            .current_dir(&root),
    )
}

/// `bench` and `demo` are subcommands of the agent binary (they reuse its testbed and
/// data path); build it in release mode and run it.
pub fn run_agent_subcommand(sub: &str, args: &[String]) -> Result<()> {
    let root = workspace_root();
    run_checked(
        Command::new("cargo")
            .args([
                "run",
                "--release",
                "--package",
                "mesh-agent",
                "--bin",
                "mesh-agent",
                "--",
            ])
            .arg(sub)
            .args(args)
            .current_dir(&root),
    )
}

fn nix_is_root() -> bool {
    // `id -u` keeps xtask free of libc bindings.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `cargo xtask bench`: release builds of the agent and the bench driver, then the driver.
pub fn bench(args: &[String]) -> Result<()> {
    let root = workspace_root();
    run_checked(
        Command::new("cargo")
            .args(["build", "--release", "--package", "mesh-agent", "--bins"])
            .current_dir(&root),
    )?;
    run_checked(
        Command::new("cargo")
            .args([
                "run",
                "--release",
                "--package",
                "mesh-tests",
                "--bin",
                "mesh-bench",
                "--",
            ])
            .args(args)
            .current_dir(&root),
    )
}
