//! Issue 14's budgets at the agent's edges: the API refuses oversized bodies and headers and
//! connections over its limit with clear answers (413, 431, 503), counted; and an agent
//! out of file descriptors backs off instead of spinning, then recovers when the load
//! drops. Real agents, curl, and the kernel's descriptor limit (`prlimit`).
use std::{
    io::Write,
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use mesh_tests::{Mesh, wait_for};

/// `curl` on the agent's unix socket; `body` goes in through stdin. Returns the HTTP status
/// and the body of the answer.
fn curl(socket: &Path, args: &[&str], body: Option<&[u8]>) -> Result<(u16, String)> {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--unix-socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running curl")?;
    let mut stdin = child.stdin.take().context("curl stdin")?;
    if let Some(body) = body {
        // curl may stop reading once the agent has answered early: ignore a broken pipe.
        let _ = stdin.write_all(body);
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().with_context(|| {
        format!(
            "curl {args:?} gave no status: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((code, answer.to_string()))
}

/// The value of a metric line starting with `prefix` (0 when absent).
fn metric(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn api_refuses_large_bodies_large_headers_and_too_many_connections() -> Result<()> {
    let mesh = Mesh::start(1, 1)?;
    let socket = mesh.agents[0].agent.socket();
    let pods = "http://agent/v1/pods";

    // A 100 KiB "pod spec": declared length over the limit, refused before it is read.
    let big = vec![b' '; 100 * 1024];
    let (code, answer) = curl(
        &socket,
        &["-X", "POST", "--data-binary", "@-", pods],
        Some(&big),
    )?;
    assert_eq!(code, 413, "{answer}");
    assert!(answer.contains("limit of 65536 bytes"), "{answer}");
    // The same, chunked (no length declared): refused once the limit is passed.
    let (code, answer) = curl(
        &socket,
        &[
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            pods,
        ],
        Some(&big),
    )?;
    assert_eq!(code, 413, "{answer}");
    // A config post over 8 MiB.
    let yaml = vec![b'#'; 9 * 1024 * 1024];
    let (code, answer) = curl(
        &socket,
        &[
            "-X",
            "POST",
            "--data-binary",
            "@-",
            "http://agent/v1/config?file=big.yaml",
        ],
        Some(&yaml),
    )?;
    assert_eq!(code, 413, "{answer}");
    assert!(answer.contains("limit of 8388608 bytes"), "{answer}");

    // A 20 KiB header: 431 from the HTTP layer.
    let header = format!("X-Padding: {}", "a".repeat(20 * 1024));
    let (code, _) = curl(&socket, &["-H", &header, "http://agent/v1/status"], None)?;
    assert_eq!(code, 431);

    // 64 connections held open (idle) take every slot: the next is answered 503.
    let held: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(&socket))
        .collect::<Result<_, _>>()?;
    // The agent accepts them asynchronously: wait until the 65th is refused.
    let mut refused = String::new();
    wait_for("a connection over the limit to be refused", || {
        let (code, answer) = curl(&socket, &["http://agent/v1/status"], None)?;
        refused = answer;
        Ok(code == 503)
    })?;
    assert!(
        refused.contains("too many connections") && refused.contains("64"),
        "{refused}"
    );
    drop(held);
    wait_for("the API to serve again", || {
        Ok(curl(&socket, &["http://agent/v1/status"], None)?.0 == 200)
    })?;

    let metrics = mesh.metrics(1)?;
    for reason in [
        "body_too_large",
        "headers_too_large",
        "too_many_connections",
    ] {
        let n = metric(
            &metrics,
            &format!("mesh_api_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1, "{reason} not counted: {metrics}");
    }
    assert_eq!(
        metric(
            &metrics,
            "mesh_api_refused_total{reason=\"body_too_large\"}"
        ),
        3
    );
    Ok(())
}

/// CPU time (user + system) a process has used, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The agent's descriptor limit lowered to a few more than it holds; idle API connections
/// use the rest. Its API and outbound accept loops then fail with EMFILE: they back off
/// (the agent's CPU stays low for the whole exhaustion), count it and log once per burst.
/// When the connections close the agent serves again, including the connection that
/// waited in the backlog meanwhile.
#[test]
fn out_of_descriptors_the_agent_backs_off_and_recovers() -> Result<()> {
    let mesh = Mesh::start(1, 2)?;
    mesh.enroll(1, 1)?;
    let _echo = mesh.serve_in_pod(1, 2, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(1, 2).ip());
    assert_eq!(mesh.tcp_client(1, 1, &dst, 1024)?["intact"], true);

    let pid = mesh.agent_pid(1).context("agent pid")?;
    let limit = open_fds(pid)? + 20;
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .output()?;
    ensure!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // More idle connections than descriptors left (fewer than the API's 64-connection
    // limit, so each one costs the agent a descriptor; fewer than the listen backlog).
    let socket = mesh.agents[0].agent.socket();
    let held: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&socket))
        .collect::<Result<_, _>>()?;
    wait_for("the agent to run out of descriptors", || {
        Ok(open_fds(pid)? >= limit)
    })?;
    // A pod's connection now waits in the outbound listener's backlog.
    let waiting = mesh
        .pod(1, 1)
        .command(mesh_tests::agent_bin())
        .args(["app", "tcp-client", "--connect", &dst, "--bytes", "4096"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;

    let ticks_per_s = 100; // USER_HZ on Linux
    let wall = Duration::from_secs(4);
    let before = cpu_ticks(pid)?;
    let started = Instant::now();
    std::thread::sleep(wall);
    let used = cpu_ticks(pid)? - before;
    let elapsed = started.elapsed();
    // A loop retrying accept without pause burns a whole core (~400 ticks here); backing
    // off, the agent sleeps. The bound is generous: a quarter of one core.
    let bound = elapsed.as_secs_f64() * ticks_per_s as f64 / 4.0;
    assert!(
        (used as f64) < bound,
        "agent used {used} ticks of CPU in {elapsed:?} while out of descriptors"
    );
    assert!(open_fds(pid)? >= limit, "the exhaustion ended by itself");

    drop(held);
    let metrics = {
        let mut text = String::new();
        wait_for("the agent's API to answer again", || {
            match mesh.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), mesh.client(1).metrics()).await
            }) {
                Ok(Ok(m)) => {
                    text = m;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })?;
        text
    };
    let out = waiting.wait_with_output()?;
    ensure!(
        out.status.success(),
        "the connection made during the exhaustion failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    assert_eq!(mesh.tcp_client(1, 1, &dst, 1024)?["intact"], true);

    let api_failures = metric(
        &metrics,
        "mesh_accept_errors_total{listener=\"api\",error=\"EMFILE\"}",
    );
    let outbound_failures = metric(
        &metrics,
        "mesh_accept_errors_total{listener=\"outbound\",error=\"EMFILE\"}",
    );
    assert!(api_failures >= 2, "{metrics}");
    assert!(outbound_failures >= 2, "{metrics}");
    eprintln!(
        "out of descriptors for {elapsed:?}: {used} ticks of CPU, {api_failures} API and \
         {outbound_failures} outbound accept failures"
    );
    // Logged once per burst, not once per failed accept.
    let log = std::fs::read_to_string(mesh.log_path(1))?;
    let warnings = log.matches("accept failing").count() as u64;
    assert!(
        (2..=6).contains(&warnings) && warnings < api_failures + outbound_failures,
        "{warnings} warnings for {api_failures} + {outbound_failures} failures"
    );
    Ok(())
}
