//! The agents' memory: VmRSS (and open descriptors) of each node's agent idle, and while
//! they carry many open cross-node connections (`mesh-bench hold-client` in the MESH
//! client pod against the echo server on the other node). The same holds are made DIRECT
//! first, so the table shows what opening them costs with and without the mesh.
use std::{
    io::{BufRead, BufReader},
    process::{ChildStdin, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use mesh_testbed::lab::LabChild;
use mesh_tests::Mesh;
use serde_json::Value;

use crate::{
    BenchArgs,
    pods::{CASES, CROSS, ECHO_PORT, PodId, Variant, name, reader},
    report::{Metric, Table, thousands},
    stats::Cell,
    verify::{self, Before},
};

/// One agent's footprint at one moment.
pub struct AgentMem {
    pub rss_kib: u64,
    pub fds: u64,
}

pub struct MemRow {
    pub label: String,
    /// Connections held at the time (0 when idle); per-connection cost is against the
    /// idle row before the holds.
    pub held: u64,
    pub agents: [Cell<AgentMem>; 2],
    /// HBONE tunnels from the client pod to the server pod at the time.
    pub tunnels: Option<usize>,
    /// The hold did not (fully) succeed: why.
    pub error: Option<String>,
}

#[derive(Default)]
pub struct Memory {
    pub rows: Vec<MemRow>,
    pub notes: Vec<String>,
    /// Index of the row per-connection costs are computed against.
    baseline: Option<usize>,
}

impl Memory {
    /// Each agent's RSS in the baseline row, if measured.
    pub fn baseline(&self) -> Option<[Option<u64>; 2]> {
        let row = &self.rows[self.baseline?];
        Some([0, 1].map(|i| row.agents[i].as_ref().ok().map(|a| a.rss_kib)))
    }

    /// A row without held connections; the tunnels column shows what the pool still
    /// keeps towards the cross-node server (idle tunnels live for a minute).
    pub fn idle(&mut self, mesh: &Mesh, label: &str) {
        let (client, server) = Variant::Mesh.pair(CASES[CROSS]);
        self.rows.push(MemRow {
            label: label.into(),
            held: 0,
            agents: agents(mesh),
            tunnels: Some(verify::tunnels(mesh, client, server).len()),
            error: None,
        });
    }

    pub fn failed(&self) -> bool {
        self.rows
            .iter()
            .any(|r| r.error.is_some() || r.agents.iter().any(|a| a.is_err()))
    }
}

/// Both agents' footprint now.
pub fn agents(mesh: &Mesh) -> [Cell<AgentMem>; 2] {
    [1, 2].map(|node| {
        let pid = mesh
            .agent_pid(node)
            .ok_or_else(|| format!("node{node}'s agent is not running"))?;
        read_mem(pid).map_err(|e| format!("agent pid {pid}: {e:#}"))
    })
}

fn read_mem(pid: u32) -> Result<AgentMem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok(AgentMem { rss_kib, fds })
}

/// A running `hold-client` whose connections are open.
struct Held {
    child: LabChild,
    stdin: Option<ChildStdin>,
    /// Its report: opened, open_ms, and error when it fell short.
    report: Value,
}

impl Held {
    fn error(&self) -> Option<String> {
        self.report["error"].as_str().map(|e| {
            format!(
                "opened {} of {}: {e}",
                self.report["opened"], self.report["count"]
            )
        })
    }

    fn open_ms(&self) -> Cell<f64> {
        match (self.error(), self.report["open_ms"].as_f64()) {
            (Some(e), _) => Err(e),
            (None, Some(ms)) => Ok(ms),
            (None, None) => Err(format!("no open_ms in {}", self.report)),
        }
    }

    /// Closing stdin tells the client to close its connections and exit.
    fn release(mut self) {
        drop(self.stdin.take());
        if !matches!(
            self.child.wait_timeout(Duration::from_secs(60)),
            Ok(Some(_))
        ) {
            let _ = self.child.kill();
        }
    }
}

/// Starts `hold-client` in `client` and waits for its one line.
fn hold(mesh: &Mesh, client: PodId, server: PodId, count: u64) -> Result<Held> {
    let (n, p) = server;
    let connect = format!("{}:{ECHO_PORT}", mesh.pod(n, p).ip());
    let mut cmd = mesh
        .pod(client.0, client.1)
        .command(std::env::current_exe()?);
    cmd.args(["hold-client", "--connect", &connect])
        .args(["--count", &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = mesh.lab.spawn(&mut cmd).context("spawning hold-client")?;
    let stdin = child.take_stdin();
    let stderr = reader(child.take_stderr());
    let stdout = child.take_stdout().context("hold-client stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // Generous: 10 ms per connection would already be a broken mesh.
    let timeout = Duration::from_secs(60) + Duration::from_millis(10) * count as u32;
    let line = match rx.recv_timeout(timeout) {
        Ok(line) if !line.trim().is_empty() => line,
        outcome => {
            let _ = child.kill();
            let err = stderr.join().unwrap_or_default();
            match outcome {
                Ok(_) => bail!("hold-client exited without a report: {err}"),
                Err(_) => bail!("hold-client did not report within {timeout:?}: {err}"),
            }
        }
    };
    let report = serde_json::from_str(line.trim())
        .with_context(|| format!("hold-client printed no JSON: {line}"))?;
    Ok(Held {
        child,
        stdin,
        report,
    })
}

/// The holds of `args.hold`, DIRECT then MESH; the MESH ones with both agents' memory.
/// Returns the loud complaints (a MESH hold that did not go through both agents).
pub fn measure(
    mesh: &Mesh,
    args: &BenchArgs,
    table: &mut Table,
    memory: &mut Memory,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let case = CASES[CROSS];
    let (mclient, mserver) = Variant::Mesh.pair(case);
    let dst = format!("{}:{ECHO_PORT}", mesh.pod(mserver.0, mserver.1).ip());
    verify::wait_quiet(mesh, Duration::from_secs(10));
    memory.baseline = Some(memory.rows.len());
    memory.idle(mesh, "idle before the holds (after the rows above)");
    for &count in &args.hold {
        let (dclient, dserver) = Variant::Direct.pair(case);
        let direct = hold(mesh, dclient, dserver, count);
        let direct_ms = match direct {
            Ok(held) => {
                let ms = held.open_ms();
                held.release();
                ms
            }
            Err(e) => Err(format!("{e:#}")),
        };
        print_open("direct", count, &direct_ms);
        table.push(CROSS, Metric::HoldOpen(count), Variant::Direct, direct_ms);

        let before = Before::now(mesh);
        let label = format!(
            "{} open connections {} -> {}",
            thousands(count),
            name(mclient),
            name(mserver)
        );
        let held = match hold(mesh, mclient, mserver, count) {
            Ok(held) => held,
            Err(e) => {
                let e = format!("{e:#}");
                print_open("mesh", count, &Err(e.clone()));
                table.push(
                    CROSS,
                    Metric::HoldOpen(count),
                    Variant::Mesh,
                    Err(e.clone()),
                );
                memory.rows.push(MemRow {
                    label,
                    held: 0,
                    agents: agents(mesh),
                    tunnels: None,
                    error: Some(e),
                });
                continue;
            }
        };
        let open_ms = held.open_ms();
        print_open("mesh", count, &open_ms);
        table.push(CROSS, Metric::HoldOpen(count), Variant::Mesh, open_ms);
        // Let the agents finish whatever the last batch started before reading /proc.
        std::thread::sleep(Duration::from_millis(500));
        let opened = held.report["opened"].as_u64().unwrap_or(0);
        // Read from /proc only while holding: an agent at its descriptor limit cannot
        // accept even an API connection.
        let row = MemRow {
            label,
            held: opened,
            agents: agents(mesh),
            tunnels: Some(verify::tunnels(mesh, mclient, mserver).len()),
            error: held.error(),
        };
        print_row(&row);
        let failed = row.error.is_some();
        memory.rows.push(row);
        held.release();
        // Every held connection must have been a connection of both agents (`opened`
        // counts at accept, so this holds after they closed too).
        let through = before.opened_since(mesh);
        if through.iter().any(|d| d.is_none_or(|d| d < opened)) {
            let what = format!(
                "{opened} connections were held through the mesh, but the agents accepted \
                 {through:?} meanwhile"
            );
            if failed {
                // Expected when the hold failed (e.g. an agent ran out of descriptors).
                memory.notes.push(format!("{}: {what}", thousands(count)));
            } else {
                let msg = format!("ERROR: {what}: the memory rows are not about mesh connections");
                eprintln!("!!!!!!!! {msg}");
                warnings.push(msg);
            }
        }
        warnings.extend(verify::through_agents(mesh, case, "hold", &dst, &before));
        if !verify::wait_quiet(mesh, Duration::from_secs(30)) {
            memory
                .notes
                .push("the agents still had connections open 30 s after the holds ended".into());
        }
    }
    memory.idle(mesh, "idle after closing them");
    if let Some(last) = memory.rows.last() {
        print_row(last);
    }
    warnings
}

fn print_open(column: &str, count: u64, ms: &Cell<f64>) {
    match ms {
        Ok(ms) => println!(
            "{:<11} {column:<6} hold: {} connections open in {ms:.0} ms",
            "cross-node",
            thousands(count)
        ),
        Err(e) => println!("{:<11} {column:<6} hold: FAILED: {e}", "cross-node"),
    }
}

pub fn print_row(row: &MemRow) {
    let agent = |c: &Cell<AgentMem>| match c {
        Ok(a) => format!("{:.1} MiB, {} fds", a.rss_kib as f64 / 1024.0, a.fds),
        Err(e) => format!("? ({e})"),
    };
    println!(
        "{:<19}memory, {}: node1 agent {}, node2 agent {}{}",
        "",
        row.label,
        agent(&row.agents[0]),
        agent(&row.agents[1]),
        row.tunnels
            .map_or(String::new(), |t| format!(", {t} HBONE tunnel(s)"))
    );
}
