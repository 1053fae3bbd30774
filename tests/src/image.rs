//! The mesh's container image in tests: `deploy/image/Containerfile` built by podman, and
//! node agents run from it as the DaemonSet runs them (its capabilities, its host mounts).
//!
//! The image holds this build's binaries (the debug build the other tests run) with the
//! shared libraries they link, copied at their paths: the image of `cargo xtask image`
//! holds statically linked release binaries instead, a build a test run does not wait for.
//! Everything else (the Containerfile, `FROM scratch`, the entry point) is the same.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::{AgentLaunch, agent_bin};

/// `podman` with the runtime that works here (crun refuses this hybrid cgroup layout).
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    cmd
}

/// Runs `cmd`, failing with its output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An image built for one test run, removed on drop.
pub struct TestImage {
    pub tag: String,
    context: PathBuf,
}

impl TestImage {
    /// Builds `localhost/mesh-agent-test:<id>`.
    pub fn build(id: &str) -> Result<TestImage> {
        let context = std::env::temp_dir().join(format!("mesh-test-{id}-image"));
        let _ = std::fs::remove_dir_all(&context);
        let image = TestImage {
            tag: format!("localhost/mesh-agent-test:{id}"),
            context,
        };
        let rootfs = image.context.join("rootfs");
        let bins = agent_bin()
            .parent()
            .map(Path::to_path_buf)
            .context("the build directory")?;
        for name in ["mesh-agent", "mesh-cni"] {
            let binary = bins.join(name);
            copy_into(&rootfs, &binary, Path::new("/usr/local/bin").join(name))?;
            for library in shared_libraries(&binary)? {
                copy_into(&rootfs, &library, library.clone())?;
            }
        }
        let containerfile =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/Containerfile");
        run(podman()
            .args(["build", "--quiet", "--tag", &image.tag, "--file"])
            .arg(containerfile)
            .arg(&image.context))?;
        Ok(image)
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "--force", &self.tag]).output();
        let _ = std::fs::remove_dir_all(&self.context);
    }
}

/// What `ldd` says `binary` loads (the dynamic loader included).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let text = run(Command::new("ldd").arg(binary))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn copy_into(rootfs: &Path, from: &Path, at: PathBuf) -> Result<()> {
    let to = rootfs.join(at.strip_prefix("/").unwrap_or(&at));
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

/// `podman run` options for a container of the DaemonSet's pod: its capabilities and its
/// hostPath volumes at their mount paths, with `host_dirs` standing in for host paths a
/// test must not touch (`/opt/cni/bin` -> a directory of its own).
pub fn container_options(
    pod: &PodSpec,
    container: &Container,
    host_dirs: &[(&str, &Path)],
) -> Result<Vec<String>> {
    let mut options = Vec::new();
    let security = container.security_context.as_ref();
    if security.and_then(|s| s.privileged) == Some(true) {
        options.push("--privileged".to_string());
    }
    if let Some(caps) = security.and_then(|s| s.capabilities.as_ref()) {
        for cap in caps.drop.iter().flatten() {
            options.push(format!("--cap-drop={cap}"));
        }
        for cap in caps.add.iter().flatten() {
            options.push(format!("--cap-add={cap}"));
        }
    }
    for mount in container.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .with_context(|| format!("volume {} is not declared", mount.name))?;
        let Some(host_path) = &volume.host_path else {
            // A Secret volume: the test mounts its stand-in itself.
            continue;
        };
        let host = host_dirs
            .iter()
            .find(|(path, _)| *path == host_path.path)
            .map_or_else(
                || PathBuf::from(&host_path.path),
                |(_, dir)| dir.to_path_buf(),
            );
        if host_path.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&host)?;
        }
        let mut flags = vec![];
        if mount.read_only == Some(true) {
            flags.push("ro");
        }
        if mount.mount_propagation.as_deref() == Some("HostToContainer") {
            flags.push("rslave");
        }
        let suffix = if flags.is_empty() {
            String::new()
        } else {
            format!(":{}", flags.join(","))
        };
        options.push(format!(
            "--volume={}:{}{suffix}",
            host.display(),
            mount.mount_path
        ));
    }
    Ok(options)
}

/// The container name of a test agent.
pub fn agent_container(agent: &str) -> String {
    format!("mesh-test-{agent}")
}

fn stop_agent_container(agent: &str) {
    let _ = podman()
        .args(["rm", "--force", "--time", "0", &agent_container(agent)])
        .output();
}

/// Agents run from `image` with `options` (see [`container_options`]) in the node's
/// network namespace (`hostNetwork`), their state below the DaemonSet's `/run/mesh-agent`,
/// and the lab's CA (`--ca-dir`) mounted read-only at its path, the stand-in of the
/// DaemonSet's Secret volume. `dir` holds the launcher script.
pub fn agent_launch(image: &TestImage, options: &[String], dir: &Path) -> Result<AgentLaunch> {
    std::fs::create_dir_all(dir)?;
    let script = dir.join("agent-in-container.sh");
    let quoted: Vec<String> = options.iter().map(|o| format!("'{o}'")).collect();
    // The agent's name (after `--name`) names the container, so the test can remove it:
    // killing `podman run` leaves the container running.
    let text = format!(
        "#!/bin/sh\n\
         name=''; ca=''; prev=''\n\
         for arg in \"$@\"; do\n  \
         [ \"$prev\" = --name ] && name=\"$arg\"\n  \
         [ \"$prev\" = --ca-dir ] && ca=\"$arg\"\n  \
         prev=\"$arg\"\n\
         done\n\
         exec podman --runtime runc run --rm --name \"mesh-test-$name\" --network host \\\n  \
         --ulimit nofile=16384:16384 --ulimit nproc=4096:4096 --env RUST_LOG \\\n  \
         {} \\\n  \
         --volume=\"$ca:$ca:ro\" '{}' \"$@\"\n",
        quoted.join(" "),
        image.tag,
    );
    std::fs::write(&script, text)?;
    let mut perms = std::fs::metadata(&script)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms)?;
    Ok(AgentLaunch {
        program: script,
        state_root: PathBuf::from("/run/mesh-agent"),
        stop: Some(stop_agent_container),
        create_ca: true,
    })
}
