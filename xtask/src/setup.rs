//! `cargo xtask setup`: everything a fresh Debian 12 machine needs, as root. Each step checks
//! first and does nothing when already done, so a second run takes about a second.
//!
//! What is known to work here (see DESIGN.md, "Toolchain facts"): bpf-linker 0.13.0 built
//! against the LLVM shipped inside the dated nightly (no system LLVM), with the LLVM major
//! matching that nightly's.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{ebpf::nightly, run_checked};

/// Debian packages the tests and benchmarks use.
const APT_PACKAGES: &[&str] = &[
    "iproute2",       // ip: namespaces, veths, bridges, routes
    "util-linux",     // nsenter, mount
    "procps",         // ps, sysctl
    "curl",           // the unmodified HTTP client of the tests
    "iperf3",         // throughput benchmark
    "nghttp2-client", // h2load: request/response latency
    "wrk",            // HTTP/1.1 load
    "bpftool",        // inspecting programs, maps and pins
    "tcpdump",        // captures on the lab bridge: what crosses between nodes
    "openssl",        // s_client: hostile TLS clients against HBONE (15008); test certificates
    "python3",        // test servers and clients (http.server, the gateway's WebSocket echo)
    "ca-certificates",
    "dnsmasq-base",   // the upstream nameserver of the DNS tests (no system service)
    "bind9-dnsutils", // dig: an unmodified DNS client (UDP and TCP) in the DNS tests
    "python3",        // socket.getaddrinfo and the query burst in the DNS tests
    "gcc",            // cc for crates with C parts
    "containernetworking-plugins", // bridge + host-local: the CNI chain of the CNI test
    "prometheus",     // `mesh-agent demo --prometheus` and the test querying it
    "podman",         // `cargo xtask image` and the test running the agent from its image
    "runc",           // podman's runtime here: crun refuses this hybrid cgroup layout
    "shellcheck",     // the kind end-to-end script is checked in the tests
    "chromium",       // headless screenshots of the product page and the demo's console
    "fonts-noto-color-emoji", // the console's padlocks in those screenshots
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// `cargo xtask fuzz` runs the libFuzzer targets through it.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> Result<()> {
    ensure_apt_packages()?;
    ensure_user_toolchain()?;
    let nightly = nightly()?;
    ensure_nightly(&nightly)?;
    ensure_bpf_linker(&nightly)?;
    ensure_cargo_fuzz()?;
    ensure_bpffs()?;
    ensure_cgroup2()?;
    println!("setup: everything is in place");
    Ok(())
}

fn ensure_apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The user-space toolchain of rust-toolchain.toml with clippy and rustfmt. Running this
/// binary already needed it, but the components may be missing on a fresh machine.
fn ensure_user_toolchain() -> Result<()> {
    let have = |c: &str| {
        Command::new("cargo")
            .args([c, "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if have("clippy") && have("fmt") {
        return Ok(());
    }
    run_checked(
        Command::new("rustup")
            .args(["component", "add", "clippy", "rustfmt"])
            .current_dir(crate::workspace_root()),
    )
}

fn ensure_nightly(nightly: &str) -> Result<()> {
    if let Ok(sysroot) = sysroot(nightly)
        && sysroot.join("lib/rustlib/src/rust/library").is_dir()
    {
        return Ok(());
    }
    println!("setup: installing {nightly} with rust-src");
    run_checked(Command::new("rustup").args([
        "toolchain",
        "install",
        nightly,
        "--profile",
        "minimal",
        "-c",
        "rust-src",
        "--no-self-update",
    ]))
}

fn sysroot(toolchain: &str) -> Result<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .context("running rustup")?;
    ensure!(
        out.status.success(),
        "toolchain {toolchain} is not installed"
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The LLVM major version the nightly was built with (`LLVM version: 23.1.4`).
fn llvm_major(nightly: &str) -> Result<u32> {
    let out = Command::new("rustup")
        .args(["run", nightly, "rustc", "-vV"])
        .output()
        .context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("no LLVM version in `rustc -vV` of {nightly}"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into())
        .join(".cache/mesh-xtask")
}

/// bpf-linker is linked to one nightly's libLLVM; a stamp records which, so a change of
/// nightly reinstalls it.
fn ensure_bpf_linker(nightly: &str) -> Result<()> {
    let stamp = cache_dir().join("bpf-linker.stamp");
    let wanted = format!("{BPF_LINKER_VERSION} {nightly}");
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false);
    if linker_ok && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let major = llvm_major(nightly)?;
    let lib = sysroot(nightly)?.join("lib");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("libLLVM.so.{major}")))
        })
        .with_context(|| format!("no libLLVM.so.{major}* in {}", lib.display()))?;
    // bpf-linker's build looks for `<prefix>/lib/libLLVM.so`; the nightly ships the full
    // LLVM C API in its own libLLVM, so a prefix of two symlinks is enough.
    let prefix = cache_dir().join(format!("llvm-{major}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let file_name = libllvm.file_name().context("libLLVM has no file name")?;
    for link in [prefix_lib.join(file_name), prefix_lib.join("libLLVM.so")] {
        replace_symlink(&libllvm, &link)?;
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} of {nightly} (about 2 minutes)"
    );
    run_checked(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo-fuzz")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        });
    if installed {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about 2 minutes)");
    run_checked(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("symlink {} -> {}", link.display(), target.display()))
}

fn mounted(fs_type: &str, at: &str) -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, point, kind) = (f.next(), f.next(), f.next());
        point == Some(at) && kind == Some(fs_type)
    }))
}

/// Pins live under /sys/fs/bpf; some machines boot without it mounted.
fn ensure_bpffs() -> Result<()> {
    if mounted("bpf", "/sys/fs/bpf")? {
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf").ok();
    run_checked(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// Pods are cgroup v2 leaves; cgroup programs attach to them.
fn ensure_cgroup2() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
    {
        return Ok(());
    }
    bail!("no cgroup2 file system is mounted; the mesh attaches its programs to cgroup v2")
}
