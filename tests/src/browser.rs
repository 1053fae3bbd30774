//! Debian's Chromium, headless, as the tests' browser: the DOM after scripts ran
//! (`--dump-dom`) and screenshots (`--screenshot`), each run with a profile of its own
//! (parallel tests never share one) that is removed afterwards.
//!
//! Chromium reaches out on its own (component updates, safe browsing, sync). The test
//! rules allow traffic to loopback only, so background networking is off and every host
//! name but the loopback address resolves to nothing.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, ensure};

/// Where tests keep what a person may want to look at afterwards (screenshots):
/// `target/test-artifacts/`.
pub fn artifact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts")
        .to_path_buf();
    let _ = std::fs::create_dir_all(&dir);
    dir
}

pub struct Browser {
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    pub fn new() -> Result<Browser> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "mesh-test-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("creating {}", profile.display()))?;
        Ok(Browser { profile })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("chromium");
        command
            .arg("--headless")
            // Root has no user namespace sandbox here; the pages are the tests' own.
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args([
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                // Let the page finish its layout before the DOM or the picture is taken.
                "--virtual-time-budget=2000",
            ]);
        command
    }

    fn run(&self, mut command: Command, what: &str) -> Result<Vec<u8>> {
        let output = run_with_timeout(&mut command, Duration::from_secs(60))
            .with_context(|| format!("running chromium ({what}; cargo xtask setup installs it)"))?;
        ensure!(
            output.status.success(),
            "chromium {what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(output.stdout)
    }

    /// The page's DOM once loaded and laid out, as HTML.
    pub fn dom(&self, url: &str) -> Result<String> {
        let mut command = self.command();
        command.arg("--dump-dom").arg(url);
        let dom = self.run(command, &format!("--dump-dom {url}"))?;
        Ok(String::from_utf8_lossy(&dom).into_owned())
    }

    /// A PNG of the page at `width`×`height`, written to `file`.
    pub fn screenshot(&self, url: &str, file: &Path, width: u32, height: u32) -> Result<()> {
        let mut command = self.command();
        command
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--screenshot={}", file.display()))
            .arg(url);
        self.run(command, &format!("--screenshot {url}"))?;
        let png = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        ensure!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            file.display()
        );
        Ok(())
    }
}

/// `output()`, but killed after `timeout` (a browser that hangs must not hang the test).
fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<std::process::Output> {
    use std::process::Stdio;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            // Our own child, not yet reaped (the waiting thread has not returned).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            anyhow::bail!("no answer within {timeout:?}")
        }
    }
}
