//! `cargo xtask build-ebpf`: the explicit form of what `mesh-agent/build.rs` does on every
//! agent build, leaving the object at `target/bpfel-unknown-none/release/mesh-ebpf`.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::{run_checked, workspace_root};

/// The dated nightly the eBPF crate is built with (one line in `mesh-ebpf/nightly-toolchain`).
pub fn nightly() -> Result<String> {
    let path = workspace_root().join("mesh-ebpf/nightly-toolchain");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_string())
}

pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let nightly = nightly()?;
    run_checked(
        Command::new("cargo")
            .arg(format!("+{nightly}"))
            .args(["build", "--package", "mesh-ebpf", "--bins", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "-Cdebuginfo=2\x1f-Clink-arg=--btf",
            )
            .current_dir(root.join("mesh-ebpf")),
    )?;
    let object = root.join("target/bpfel-unknown-none/release/mesh-ebpf");
    let size = std::fs::metadata(&object)
        .with_context(|| format!("expected object at {}", object.display()))?
        .len();
    println!("built {} ({size} bytes)", object.display());
    Ok(object)
}
