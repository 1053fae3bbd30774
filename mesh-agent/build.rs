//! Builds the kernel programs (`mesh-ebpf`) for `bpfel-unknown-none` with the dated nightly
//! named in `mesh-ebpf/nightly-toolchain`, so every build of the agent embeds the current
//! programs (see `redirect::loader`). `cargo xtask setup` installs that nightly and the
//! bpf-linker built against its LLVM.
use std::path::Path;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest_dir
        .parent()
        .context("mesh-agent has no parent directory")?
        .join("mesh-ebpf");
    let toolchain_file = ebpf_dir.join("nightly-toolchain");
    println!("cargo::rerun-if-changed={}", toolchain_file.display());
    let toolchain = std::fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {}", toolchain_file.display()))?;
    let root_dir = ebpf_dir.to_str().context("mesh-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "mesh-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain.trim()),
    )
    .context("building mesh-ebpf (run `cargo xtask setup` if the nightly or bpf-linker is missing)")
}
