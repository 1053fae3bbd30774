//! Project tasks: `cargo xtask <task>`. See the README for the two commands that matter.
mod ebpf;
mod fuzz;
mod image;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project tasks for the mesh")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything a fresh Debian machine needs (idempotent; quick when done).
    Setup,
    /// Build the eBPF programs for bpfel-unknown-none.
    BuildEbpf,
    /// Formatting and clippy checks, as CI runs them.
    Lint,
    /// Lint, then the whole test suite (needs root: tests build namespaces and load eBPF).
    Test {
        /// Extra arguments passed to `cargo test` after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks (direct vs through the mesh, side by side).
    Bench {
        /// Passed to mesh-bench (e.g. --seconds 5 --rounds 3 --only latency,conn-rate).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the fuzz targets (cargo-fuzz, libFuzzer) for a while each.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// One target (`yaml_config`, `api_request`, `dns_packet`, `hbone_connect`); all when left out.
        target: Option<String>,
    },
    /// Build the container image (podman, from statically linked release binaries).
    Image {
        /// The image's name.
        #[arg(long, default_value = "localhost/mesh-agent:dev")]
        tag: String,
        /// Also save it as an OCI archive here (for `kind load image-archive`).
        #[arg(long)]
        archive: Option<std::path::PathBuf>,
    },
    /// Build and start the demo (`mesh-agent demo`).
    Demo {
        /// Passed to `mesh-agent demo` (e.g. --config my-app/ --nodes 3 --listen 127.0.0.1:8081).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Errors print as their chain of causes, without the backtrace `RUST_BACKTRACE=1` would
/// add to a returned `anyhow::Error`.
fn main() -> std::process::ExitCode {
    match run_task() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => ebpf::build().map(|_| ()),
        Task::Lint => test::lint(),
        Task::Test { args } => test::run(&args),
        Task::Bench { args } => test::bench(&args),
        Task::Demo { args } => test::demo(&args),
        Task::Image { tag, archive } => image::run(&tag, archive),
        Task::Fuzz { seconds, target } => fuzz::run(seconds, target.as_deref()),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into())
}

/// Runs a command, failing with the command line if it cannot start or exits non-zero.
pub fn run_checked(cmd: &mut std::process::Command) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start {cmd:?}: {e}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}
