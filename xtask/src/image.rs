//! `cargo xtask image`: the OCI image of `deploy/image/Containerfile`, built by Debian's
//! podman from statically linked release binaries (glibc's static libc: `crt-static`, so
//! `FROM scratch` runs them). The binaries are built for the explicit host triple so the
//! static flag reaches them and not the build scripts; podman's `--timestamp 0` makes the
//! image the same for the same binaries.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, ensure};

use crate::{run_checked, workspace_root};

const TRIPLE: &str = "x86_64-unknown-linux-gnu";
const BINARIES: [&str; 2] = ["mesh-agent", "mesh-cni"];

pub fn run(tag: &str, archive: Option<PathBuf>) -> Result<()> {
    let root = workspace_root();
    run_checked(
        Command::new("cargo")
            .args(["build", "--release", "--package", "mesh-agent", "--bins"])
            .args(["--target", TRIPLE])
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .current_dir(&root),
    )?;
    let built = root.join("target").join(TRIPLE).join("release");
    let context = root.join("target").join("image");
    let bin_dir = context.join("rootfs/usr/local/bin");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("{}", bin_dir.display()))?;
    for name in BINARIES {
        let from = built.join(name);
        ensure_static(&from)?;
        std::fs::copy(&from, bin_dir.join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    run_checked(
        Command::new("podman")
            .args([
                "build",
                "--runtime",
                "runc",
                "--timestamp",
                "0",
                "--tag",
                tag,
            ])
            .arg("--file")
            .arg(root.join("deploy/image/Containerfile"))
            .arg(&context),
    )
    .context("podman build (cargo xtask setup installs podman and runc)")?;
    if let Some(archive) = archive {
        let _ = std::fs::remove_file(&archive);
        run_checked(
            Command::new("podman")
                .args(["save", "--format", "oci-archive", "--output"])
                .arg(&archive)
                .arg(tag),
        )?;
        println!("image {tag} saved to {}", archive.display());
    }
    println!("image {tag} built (run: podman run --runtime runc --rm {tag} --help)");
    Ok(())
}

/// `FROM scratch` has no dynamic loader: a binary that needs one would not start.
fn ensure_static(binary: &std::path::Path) -> Result<()> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.contains("statically linked") || text.contains("not a dynamic executable"),
        "{} is linked dynamically: {text}",
        binary.display()
    );
    Ok(())
}
