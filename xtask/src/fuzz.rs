//! `cargo xtask fuzz [--seconds N] [TARGET]`: the libFuzzer targets of `fuzz/` (cargo-fuzz,
//! built with the dated nightly of `mesh-ebpf/nightly-toolchain`, AddressSanitizer on),
//! each for N seconds. Inputs start from the seeds kept in the repository
//! (`fuzz/seeds/<target>`, copies of the fixtures); what libFuzzer finds on the way goes to
//! `fuzz/corpus/<target>` (not kept), crashes to `fuzz/artifacts/<target>`.
use std::process::Command;

use anyhow::{Result, bail, ensure};

use crate::{ebpf::nightly, run_checked, workspace_root};

/// Every target (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[&str] = &["yaml_config", "api_request", "dns_packet", "hbone_connect"];

pub fn run(seconds: u64, target: Option<&str>) -> Result<()> {
    let targets: Vec<&str> = match target {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t}; there are: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    ensure!(
        Command::new("cargo-fuzz")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "cargo-fuzz is missing: run `cargo xtask setup`"
    );
    let nightly = nightly()?;
    let dir = workspace_root().join("fuzz");
    for t in targets {
        let corpus = dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        println!("fuzz: {t} for {seconds} s");
        // `rustup run` so the nightly wins over the workspace's rust-toolchain.toml, for
        // cargo-fuzz and for the cargo it starts.
        run_checked(
            Command::new("rustup")
                .args(["run", &nightly, "cargo", "fuzz", "run", t])
                .arg(&corpus)
                .arg(dir.join("seeds").join(t))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                // Budgets the loader promises: no input may take more memory or time.
                .args(["-rss_limit_mb=1024", "-timeout=10", "-print_final_stats=1"])
                .current_dir(&dir),
        )?;
    }
    Ok(())
}
