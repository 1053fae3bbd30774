//! Running iproute2 in batch mode: one `ip [-n NS] -batch -` process per namespace instead
//! of one process per command, which keeps lab creation fast. A failure names the exact
//! command line that failed (from ip's `Command failed -:N`) and ip's stderr.

use std::io::Write;
use std::process::{Child, Command, Stdio};

/// Commands to run in one namespace (or the caller's, if `netns` is `None`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch {
    pub netns: Option<String>,
    pub lines: Vec<String>,
    /// `-force`: keep going after a failed line (used by cleanup).
    pub force: bool,
}

impl Batch {
    pub fn new(netns: Option<&str>) -> Self {
        Self {
            netns: netns.map(str::to_owned),
            ..Self::default()
        }
    }

    pub fn push(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(ns) = &self.netns {
            args.extend(["-n".to_owned(), ns.clone()]);
        }
        if self.force {
            args.push("-force".to_owned());
        }
        args.extend(["-batch".to_owned(), "-".to_owned()]);
        args
    }

    /// How one line of this batch reads as a standalone command, for error messages.
    fn describe_line(&self, line: &str) -> String {
        match &self.netns {
            Some(ns) => format!("ip -n {ns} {line}"),
            None => format!("ip {line}"),
        }
    }

    fn describe(&self) -> String {
        format!(
            "ip {} ({} commands)",
            self.args().join(" "),
            self.lines.len()
        )
    }
}

/// A failed `ip` invocation: the command that failed and what ip printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpFailure {
    pub command: String,
    pub stderr: String,
}

/// Runs the batches concurrently (they must not depend on each other) and waits for all of
/// them, returning the first failure.
pub(crate) fn run_all(batches: &[Batch]) -> Result<(), IpFailure> {
    let children: Vec<_> = batches.iter().map(|b| (b, spawn(b))).collect();
    let mut first_error = None;
    for (batch, child) in children {
        let result = child.and_then(|c| finish(batch, c));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub(crate) fn run(batch: &Batch) -> Result<(), IpFailure> {
    run_all(std::slice::from_ref(batch))
}

fn spawn(batch: &Batch) -> Result<Child, IpFailure> {
    let spawn_error = |e: std::io::Error| IpFailure {
        command: batch.describe(),
        stderr: e.to_string(),
    };
    let mut child = Command::new("ip")
        .args(batch.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut input = batch.lines.join("\n");
    input.push('\n');
    // The input is a few KB at most and ip reads all of it before acting, so writing it all
    // before reading stderr cannot deadlock on pipe buffers.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(input.as_bytes());
    drop(stdin);
    if let Err(e) = written {
        let _ = child.kill();
        let _ = child.wait();
        return Err(spawn_error(e));
    }
    Ok(child)
}

fn finish(batch: &Batch, child: Child) -> Result<(), IpFailure> {
    let output = child.wait_with_output().map_err(|e| IpFailure {
        command: batch.describe(),
        stderr: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let command = failed_line(&stderr)
        .and_then(|n| batch.lines.get(n.checked_sub(1)?))
        .map_or_else(|| batch.describe(), |line| batch.describe_line(line));
    Err(IpFailure {
        command,
        stderr: format!("{stderr} ({})", output.status),
    })
}

/// The 1-based line number in ip's `Command failed -:N` message.
pub(crate) fn failed_line(stderr: &str) -> Option<usize> {
    stderr.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Command failed -:")?
            .trim()
            .parse()
            .ok()
    })
}
