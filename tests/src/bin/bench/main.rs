//! `mesh-bench` (run by `cargo xtask bench`): throughput and request/response latency,
//! DIRECT (neither pod enrolled) side by side with MESH (client and server pods enrolled,
//! so traffic crosses the client's agent outbound and the server's agent inbound), for
//! a same-node pair and a cross-node pair.
//!
//! Both columns are measured in the same lab (2 nodes x 4 pods), on separate pods: DIRECT
//! uses n1p1 -> n1p2 / n2p1 (never enrolled), MESH uses n1p3 -> n1p4 / n2p3 (enrolled at
//! the start). Each measurement runs DIRECT then MESH back to back, so background load on
//! the 2 cores hits both columns alike; `--rounds N` repeats everything and reports
//! medians. After each MESH run both agents must hold records of the connections
//! (outbound on the client's node, inbound on the server's), or the number is not a mesh
//! number and the bench says so loudly (and exits non-zero).
//!
//! `mesh-bench pingpong-client` is the latency client: it runs inside the client pod's
//! cgroup and namespace (so its connect is what the eBPF programs capture) and prints
//! JSON.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, opened, records_to};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "mesh-bench",
    about = "Direct vs mesh, side by side: iperf3 throughput and 1 KB ping-pong latency",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Mode {
    /// Latency client (used by the bench itself, inside a pod): ping-pongs SIZE bytes over
    /// one TCP connection and prints p50/p99/mean in microseconds as JSON.
    PingpongClient(PingpongArgs),
}

#[derive(Args, Clone)]
struct BenchArgs {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Measured round trips per latency run (after the warm-up).
    #[arg(long, default_value_t = 5000)]
    count: u64,
    /// Warm-up round trips per latency run (not measured).
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Request (and response) size of the ping-pong, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Rounds of every DIRECT/MESH pair (the table shows medians over rounds).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Run only one kind of measurement.
    #[arg(long, value_enum)]
    only: Option<Only>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Throughput,
    Latency,
}

#[derive(Args, Clone)]
struct PingpongArgs {
    /// Address of an echo server.
    #[arg(long)]
    connect: SocketAddr,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 5000)]
    count: u64,
    #[arg(long, default_value_t = 200)]
    warmup: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Some(Mode::PingpongClient(args)) => pingpong_client(&args),
        None => bench(&cli.bench),
    }
}

// ---------------------------------------------------------------------------------------
// The latency client.

fn pingpong_client(args: &PingpongArgs) -> Result<()> {
    ensure!(args.size > 0, "--size must be at least 1");
    ensure!(args.count > 0, "--count must be at least 1");
    let mut stream = TcpStream::connect_timeout(&args.connect, Duration::from_secs(5))
        .with_context(|| format!("connecting to {}", args.connect))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let request: Vec<u8> = (0..args.size).map(|i| (i % 251) as u8).collect();
    let mut response = vec![0u8; args.size];
    let mut samples = Vec::with_capacity(args.count as usize);
    for i in 0..args.warmup + args.count {
        let start = Instant::now();
        stream.write_all(&request)?;
        stream
            .read_exact(&mut response)
            .with_context(|| format!("reading echo {i}"))?;
        let elapsed = start.elapsed();
        ensure!(response == request, "echo {i} differs from the request");
        if i >= args.warmup {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    // Drain the server's half-close so the connection ends cleanly on both sides.
    let _ = stream.read(&mut response);
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let pct = |p: f64| {
        let idx = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        us(samples[idx])
    };
    let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1000.0;
    let out = json!({
        "connect": args.connect.to_string(),
        "size": args.size,
        "warmup": args.warmup,
        "count": samples.len(),
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "mean_us": mean,
        "min_us": us(samples[0]),
        "max_us": us(samples[samples.len() - 1]),
    });
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The bench.

const ECHO_PORT: u16 = 9000;
const IPERF_BASE_PORT: u16 = 5201;
const HTTP_PORT: u16 = 8080;

/// A pod: (node, pod), both 1-based.
type PodId = (usize, usize);

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    /// Server of the DIRECT pair (the client is n1p1); the MESH pair uses the pods two
    /// numbers up on the same nodes (client n1p3).
    server: PodId,
}

const CASES: [Case; 2] = [
    Case {
        name: "same-node",
        server: (1, 2),
    },
    Case {
        name: "cross-node",
        server: (2, 1),
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Direct,
    Mesh,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Mesh => "mesh",
        }
    }
    /// (client, server) of `case` for this variant.
    fn pair(self, case: Case) -> (PodId, PodId) {
        let up = match self {
            Variant::Direct => 0,
            Variant::Mesh => 2,
        };
        ((1, 1 + up), (case.server.0, case.server.1 + up))
    }
}

/// One measured cell: a number, or why there is none.
type Cell<T> = std::result::Result<T, String>;

/// h2load's outcome: (requests/s, mean µs per request).
type Http = (f64, f64);

/// Every round's outcome, [case][variant].
type Rounds<T> = [[Vec<Cell<T>>; 2]; 2];

#[derive(Default)]
struct Results {
    /// Bits per second.
    tput: [[Option<Cell<f64>>; 2]; 2],
    /// Ping-pong JSON (p50_us, p99_us, mean_us: medians over the rounds).
    lat: [[Option<Cell<Value>>; 2]; 2],
    /// h2load over HTTP/1.1, one connection.
    http: [[Option<Cell<Http>>; 2]; 2],
    /// Loud problems found while checking that mesh runs went through the agents.
    warnings: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Empty: not measured; any failed round: failed; else the median over the rounds.
fn reduce<T, F: Fn(Vec<T>) -> T>(rounds: &[Cell<T>], combine: F) -> Option<Cell<T>>
where
    T: Clone,
{
    if rounds.is_empty() {
        return None;
    }
    if let Some(Err(e)) = rounds.iter().find(|c| c.is_err()) {
        return Some(Err(e.clone()));
    }
    Some(Ok(combine(
        rounds.iter().filter_map(|c| c.clone().ok()).collect(),
    )))
}

fn bench(args: &BenchArgs) -> Result<()> {
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    ensure!(args.count > 0, "--count must be at least 1");
    ensure!(args.size > 0, "--size must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let do_tput = args.only != Some(Only::Latency);
    let do_lat = args.only != Some(Only::Throughput);
    if do_tput {
        ensure!(
            which("iperf3"),
            "iperf3 is not installed (cargo xtask setup installs it)"
        );
    }
    // h2load is the optional extra of the latency part (skipped if not installed).
    let do_http = do_lat && which("h2load");
    let _ = mesh_testbed::lab::install_signal_cleanup();

    print_header(args);
    let mesh = Mesh::start(2, 4).context("starting the lab and its agents")?;
    let ip = |(n, p): PodId| mesh.pod(n, p).ip();
    println!(
        "lab {}: 2 nodes x 4 pods, one mesh-agent per node",
        mesh.lab.id()
    );
    for v in [Variant::Direct, Variant::Mesh] {
        let (c, same) = v.pair(CASES[0]);
        let (_, cross) = v.pair(CASES[1]);
        println!(
            "  {:<6} client n{}p{} {} -> same node n{}p{} {}, cross node n{}p{} {}{}",
            v.label(),
            c.0,
            c.1,
            ip(c),
            same.0,
            same.1,
            ip(same),
            cross.0,
            cross.1,
            ip(cross),
            match v {
                Variant::Direct => " (not enrolled)",
                Variant::Mesh => " (all three enrolled)",
            }
        );
    }
    println!(
        "method: one lab, separate pods per column; each measurement runs DIRECT then MESH \
         back to back ({} round(s); the table shows the median over rounds)",
        args.rounds
    );
    println!("load before: {}", loadavg());
    println!();

    let mut servers = Vec::new();
    for v in [Variant::Direct, Variant::Mesh] {
        for case in CASES {
            let (client, server) = v.pair(case);
            if v == Variant::Mesh {
                // The client is shared by both cases: enroll it once.
                let first = case.name == CASES[0].name;
                for (n, p) in [client, server]
                    .into_iter()
                    .filter(|&pod| first || pod != client)
                {
                    mesh.enroll(n, p)
                        .with_context(|| format!("enrolling n{n}p{p}"))?;
                }
            }
            if !do_lat {
                continue;
            }
            let (n, p) = server;
            let listen = format!("0.0.0.0:{ECHO_PORT}");
            servers.push(
                mesh.serve_in_pod(n, p, &["echo", "--listen", &listen], ECHO_PORT)
                    .with_context(|| format!("echo server in n{n}p{p}"))?,
            );
            if do_http {
                let listen = format!("0.0.0.0:{HTTP_PORT}");
                let name = format!("bench-n{n}p{p}");
                servers.push(
                    mesh.serve_in_pod(
                        n,
                        p,
                        &["http", "--listen", &listen, "--name", &name],
                        HTTP_PORT,
                    )
                    .with_context(|| format!("http server in n{n}p{p}"))?,
                );
            }
        }
    }

    let mut tput: Rounds<f64> = Default::default();
    let mut lat: Rounds<Value> = Default::default();
    let mut http: Rounds<Http> = Default::default();
    let mut warnings = Vec::new();
    let mut port = IPERF_BASE_PORT;
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round}/{}", args.rounds);
        }
        for (ci, case) in CASES.iter().enumerate() {
            for v in [Variant::Direct, Variant::Mesh]
                .into_iter()
                .filter(|_| do_tput)
            {
                let (client, server) = v.pair(*case);
                port += 1;
                let before = counters(&mesh);
                let since = now_ms();
                let r = run_iperf(&mesh, client, server, port, args.seconds);
                let label = v.label();
                match &r {
                    Ok(bps) => println!("{:<11} {label:<6} tput: {}", case.name, gbit(*bps)),
                    Err(e) => println!("{:<11} {label:<6} tput: FAILED: {e}", case.name),
                }
                if v == Variant::Mesh && r.is_ok() {
                    let dst = format!("{}:{port}", ip(server));
                    let w = check_through_agents(&mesh, *case, "throughput", &dst, since, before);
                    warnings.extend(w);
                }
                tput[ci][v as usize].push(r);
            }
            for v in [Variant::Direct, Variant::Mesh]
                .into_iter()
                .filter(|_| do_lat)
            {
                let (client, server) = v.pair(*case);
                let before = counters(&mesh);
                let since = now_ms();
                let r = run_pingpong(&mesh, client, server, args);
                let label = v.label();
                match &r {
                    Ok(v) => println!(
                        "{:<11} {label:<6} rtt:  p50 {} p99 {} mean {}",
                        case.name,
                        us(&v["p50_us"]),
                        us(&v["p99_us"]),
                        us(&v["mean_us"])
                    ),
                    Err(e) => println!("{:<11} {label:<6} rtt:  FAILED: {e}", case.name),
                }
                if v == Variant::Mesh && r.is_ok() {
                    let dst = format!("{}:{ECHO_PORT}", ip(server));
                    let w = check_through_agents(&mesh, *case, "latency", &dst, since, before);
                    warnings.extend(w);
                }
                lat[ci][v as usize].push(r);
            }
            for v in [Variant::Direct, Variant::Mesh]
                .into_iter()
                .filter(|_| do_http)
            {
                let (client, server) = v.pair(*case);
                let before = counters(&mesh);
                let since = now_ms();
                let r = run_h2load(&mesh, client, server, args.count);
                let label = v.label();
                match &r {
                    Ok((rps, mean)) => println!(
                        "{:<11} {label:<6} http: {rps:.0} req/s, mean {mean:.1} us (h2load, 1 conn)",
                        case.name
                    ),
                    Err(e) => println!("{:<11} {label:<6} http: FAILED: {e}", case.name),
                }
                if v == Variant::Mesh && r.is_ok() {
                    let dst = format!("{}:{HTTP_PORT}", ip(server));
                    let w = check_through_agents(&mesh, *case, "http", &dst, since, before);
                    warnings.extend(w);
                }
                http[ci][v as usize].push(r);
            }
        }
    }
    println!("load after:  {}", loadavg());
    println!();

    let mut results = Results {
        warnings,
        ..Default::default()
    };
    for ci in 0..2 {
        for vi in 0..2 {
            results.tput[ci][vi] = reduce(&tput[ci][vi], median);
            results.http[ci][vi] = reduce(&http[ci][vi], |v| {
                (
                    median(v.iter().map(|x| x.0).collect()),
                    median(v.iter().map(|x| x.1).collect()),
                )
            });
            results.lat[ci][vi] = reduce(&lat[ci][vi], |v| {
                let m = |k: &str| median(v.iter().filter_map(|x| x[k].as_f64()).collect());
                json!({"p50_us": m("p50_us"), "p99_us": m("p99_us"), "mean_us": m("mean_us")})
            });
        }
    }
    print_table(args, &results);
    for w in &results.warnings {
        eprintln!("\n!!!!!!!! {w}");
    }
    let failed = [
        &results
            .tput
            .iter()
            .flatten()
            .any(|c| matches!(c, Some(Err(_)))),
        &results
            .lat
            .iter()
            .flatten()
            .any(|c| matches!(c, Some(Err(_)))),
        &results
            .http
            .iter()
            .flatten()
            .any(|c| matches!(c, Some(Err(_)))),
    ]
    .iter()
    .any(|b| **b);
    drop(servers);
    drop(mesh);
    if !results.warnings.is_empty() {
        bail!("mesh runs did not (all) go through the agents: the MESH column is not trustworthy");
    }
    if failed {
        bail!("some runs failed (see FAILED above)");
    }
    Ok(())
}

/// `/proc/loadavg`'s first three fields: other work on these 2 cores skews every number.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn print_header(args: &BenchArgs) {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let argv: Vec<String> = std::env::args().skip(1).collect();
    println!("mesh-bench");
    println!("  date     {date}");
    println!("  nproc    {nproc} ({cpu})");
    println!("  kernel   {kernel}");
    println!(
        "  command  cargo xtask bench{}{}",
        if argv.is_empty() { "" } else { " -- " },
        argv.join(" ")
    );
    println!(
        "  settings iperf3 {} s per run; ping-pong {} B, {} warm-up + {} measured round trips \
         over one TCP connection; {} round(s)",
        args.seconds, args.size, args.warmup, args.count, args.rounds
    );
    println!();
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// `connections.opened` of each agent.
fn counters(mesh: &Mesh) -> [Option<u64>; 2] {
    [1, 2].map(|n| mesh.status(n).ok().map(|s| opened(&s)))
}

/// Unix time in milliseconds (the agents stamp connection records with it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Records of `node`'s agent in `direction` to `dst` that ended at or after `since_ms`.
fn fresh_records(mesh: &Mesh, node: usize, direction: &str, dst: &str, since_ms: u64) -> usize {
    mesh.status(node)
        .map(|s| {
            records_to(&s, dst)
                .iter()
                .filter(|r| {
                    r["direction"] == direction
                        && r["ended_at_ms"].as_u64().is_some_and(|t| t >= since_ms)
                })
                .count()
        })
        .unwrap_or(0)
}

/// After a MESH run: the client's agent must have proxied the connections outbound and
/// the server's agent must have taken them inbound (records to the server's address that
/// ended during the run), and the `opened` counters must have moved. Records are written
/// when a connection ends, which can trail the client's exit a little: wait up to 5 s.
fn check_through_agents(
    mesh: &Mesh,
    case: Case,
    what: &str,
    dst: &str,
    since_ms: u64,
    before: [Option<u64>; 2],
) -> Option<String> {
    let (client_node, server_node) = (1, case.server.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut out, mut inb);
    loop {
        out = fresh_records(mesh, client_node, "outbound", dst, since_ms);
        inb = fresh_records(mesh, server_node, "inbound", dst, since_ms);
        if (out > 0 && inb > 0) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = counters(mesh);
    let delta = |n: usize| match (before[n - 1], after[n - 1]) {
        (Some(b), Some(a)) => format!("+{}", a.saturating_sub(b)),
        _ => "?".into(),
    };
    let summary = format!(
        "{out} outbound record(s) on node{client_node}'s agent, {inb} inbound on \
         node{server_node}'s; connections opened: node1 {}, node2 {}",
        delta(1),
        delta(2)
    );
    if out > 0 && inb > 0 {
        println!("{:<19}through the agents: {summary}", "");
        None
    } else {
        let msg = format!(
            "ERROR: the {} {what} MESH run to {dst} did NOT go through both agents \
             ({summary}): its numbers are not mesh numbers",
            case.name
        );
        eprintln!("!!!!!!!! {msg}");
        Some(msg)
    }
}

/// Runs a process in a pod (tracked by the lab, so it dies with it) and waits at most
/// `timeout`; returns its status and stdout, or fails with its stderr.
fn run_bounded(
    mesh: &Mesh,
    (n, p): PodId,
    program: impl AsRef<std::ffi::OsStr>,
    args: &[String],
    timeout: Duration,
) -> Result<(ExitStatus, String, String)> {
    let mut cmd = mesh.pod(n, p).command(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = mesh.lab.spawn(&mut cmd).context("spawning in a pod")?;
    let out = reader(child.take_stdout());
    let err = reader(child.take_stderr());
    let status = match child.wait_timeout(timeout)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            bail!("{args:?} in n{n}p{p} did not finish within {timeout:?}; killed");
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status, out, err))
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

fn run_iperf(mesh: &Mesh, client: PodId, server: PodId, port: u16, seconds: u64) -> Cell<f64> {
    run_iperf_inner(mesh, client, server, port, seconds).map_err(|e| format!("{e:#}"))
}

fn run_iperf_inner(
    mesh: &Mesh,
    client: PodId,
    server: PodId,
    port: u16,
    seconds: u64,
) -> Result<f64> {
    let (n, p) = server;
    let port_s = port.to_string();
    let iperf_server: LabChild = mesh.spawn_in_pod(n, p, &["iperf3", "-s", "-1", "-p", &port_s])?;
    wait_listening(mesh, server, port)?;
    let dst = mesh.pod(n, p).ip().to_string();
    let args: Vec<String> = [
        "-c",
        &dst,
        "-p",
        &port_s,
        "-t",
        &seconds.to_string(),
        "-J",
        "--connect-timeout",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let res = run_bounded(
        mesh,
        client,
        "iperf3",
        &args,
        Duration::from_secs(seconds + 30),
    );
    let _ = iperf_server.wait_timeout(Duration::from_secs(2));
    let _ = iperf_server.kill();
    let (status, out, err) = res?;
    let v: Value = serde_json::from_str(&out)
        .with_context(|| format!("iperf3 ({status}) printed no JSON: {out} {err}"))?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second in iperf3's JSON")?;
    ensure!(status.success(), "iperf3 exited with {status}: {err}");
    ensure!(bps > 0.0, "iperf3 measured 0 bit/s");
    Ok(bps)
}

/// Waits until something in the pod's namespace listens on TCP `port` (without
/// connecting: `iperf3 -s -1` would take a probe connection for its one test).
fn wait_listening(mesh: &Mesh, (n, p): PodId, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = mesh.pod(n, p).run(move || {
        let needle = format!(":{port:04X} ");
        while Instant::now() < deadline {
            for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
                if let Ok(s) = std::fs::read_to_string(table) {
                    // local_address is field 1, state is field 3; 0A is LISTEN.
                    if s.lines().skip(1).any(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() > 3 && format!("{} ", f[1]).ends_with(&needle) && f[3] == "0A"
                    }) {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })?;
    ensure!(
        listening,
        "nothing listens on {port} in n{n}p{p} after 10 s"
    );
    Ok(())
}

fn run_pingpong(mesh: &Mesh, client: PodId, server: PodId, args: &BenchArgs) -> Cell<Value> {
    run_pingpong_inner(mesh, client, server, args).map_err(|e| format!("{e:#}"))
}

fn run_pingpong_inner(
    mesh: &Mesh,
    client: PodId,
    server: PodId,
    args: &BenchArgs,
) -> Result<Value> {
    let (n, p) = server;
    let exe = std::env::current_exe()?;
    let connect = format!("{}:{ECHO_PORT}", mesh.pod(n, p).ip());
    let cargs: Vec<String> = [
        "pingpong-client",
        "--connect",
        &connect,
        "--size",
        &args.size.to_string(),
        "--count",
        &args.count.to_string(),
        "--warmup",
        &args.warmup.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Generous: 10 ms per round trip would already be a broken mesh.
    let timeout =
        Duration::from_secs(30) + Duration::from_millis(10) * (args.count + args.warmup) as u32;
    let (status, out, err) = run_bounded(mesh, client, exe, &cargs, timeout)?;
    ensure!(
        status.success(),
        "pingpong-client exited with {status}: {err}"
    );
    let v: Value = serde_json::from_str(out.trim())
        .with_context(|| format!("pingpong-client printed no JSON: {out} {err}"))?;
    Ok(v)
}

fn run_h2load(mesh: &Mesh, client: PodId, server: PodId, count: u64) -> Cell<Http> {
    run_h2load_inner(mesh, client, server, count).map_err(|e| format!("{e:#}"))
}

/// `h2load -n COUNT -c 1 --h1` against `mesh-agent app http`: (requests/s, mean µs of
/// "time for request").
fn run_h2load_inner(mesh: &Mesh, client: PodId, server: PodId, count: u64) -> Result<Http> {
    let url = format!("http://{}:{HTTP_PORT}/", mesh.pod(server.0, server.1).ip());
    let hargs: Vec<String> = ["-n", &count.to_string(), "-c", "1", "--h1", &url]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let timeout = Duration::from_secs(30) + Duration::from_millis(10) * count as u32;
    let (status, out, err) = run_bounded(mesh, client, "h2load", &hargs, timeout)?;
    ensure!(status.success(), "h2load exited with {status}: {out} {err}");
    // "requests: 5000 total, 5000 started, 5000 done, 5000 succeeded, 0 failed, ..."
    let succeeded = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| {
            l.split(',')
                .find(|f| f.trim_end().ends_with("succeeded"))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .with_context(|| format!("no request summary in h2load's output: {out}"))?;
    ensure!(
        succeeded == count,
        "h2load: {succeeded} of {count} requests succeeded: {out}"
    );
    // "finished in 1.23s, 4065.04 req/s, 500KB/s"
    let rps = out
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|f| f.trim().strip_suffix(" req/s"))
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no req/s in h2load's output: {out}"))?;
    // "time for request:   100us   2.3ms   220us   50us   95.00%" (min max mean sd +/-sd)
    let mean = out
        .lines()
        .find(|l| l.trim_start().starts_with("time for request:"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(duration_us)
        .with_context(|| format!("no request time in h2load's output: {out}"))?;
    Ok((rps, mean))
}

/// h2load's durations ("220us", "2.3ms", "1.05s") in microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (s.strip_suffix('s')?, 1e6)
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

// ---------------------------------------------------------------------------------------
// Output.

fn gbit(bps: f64) -> String {
    format!("{:.2} Gbit/s", bps / 1e9)
}

fn us(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.1} us"))
        .unwrap_or_else(|| "?".into())
}

fn print_table(args: &BenchArgs, r: &Results) {
    let row = |case: &str, d: &str, m: &str, x: &str| {
        println!("{case:<22} {d:<16} {m:<16} {x}");
    };
    let cell_str = |c: &Option<Cell<String>>| match c {
        None => "-".to_string(),
        Some(Ok(s)) => s.clone(),
        Some(Err(_)) => "FAILED".to_string(),
    };
    row("case", "direct", "mesh", "ratio / added");
    for (ci, case) in CASES.iter().enumerate() {
        let [d, m] = &r.tput[ci];
        if d.is_none() && m.is_none() {
            continue;
        }
        let ratio = match (d, m) {
            (Some(Ok(d)), Some(Ok(m))) => format!("{:.2}x", m / d),
            _ => "-".into(),
        };
        row(
            &format!("{} tput", case.name),
            &cell_str(&d.as_ref().map(|c| c.clone().map(gbit))),
            &cell_str(&m.as_ref().map(|c| c.clone().map(gbit))),
            &ratio,
        );
    }
    let kb = if args.size.is_multiple_of(1024) {
        format!("{}KB", args.size / 1024)
    } else {
        format!("{}B", args.size)
    };
    for (ci, case) in CASES.iter().enumerate() {
        for key in ["p50", "p99", "mean"] {
            let [d, m] = &r.lat[ci];
            if d.is_none() && m.is_none() {
                continue;
            }
            let field = format!("{key}_us");
            let get = |c: &Option<Cell<Value>>| -> Option<Cell<f64>> {
                c.as_ref().map(|c| {
                    c.clone()
                        .and_then(|v| v[&field].as_f64().ok_or_else(|| "no value".into()))
                })
            };
            let (dv, mv) = (get(d), get(m));
            let added = match (&dv, &mv) {
                (Some(Ok(d)), Some(Ok(m))) => format!("{:+.1} us", m - d),
                _ => "-".into(),
            };
            let fmt = |c: Option<Cell<f64>>| cell_str(&c.map(|c| c.map(|x| format!("{x:.1} us"))));
            row(
                &format!("{} {key} ({kb})", case.name),
                &fmt(dv),
                &fmt(mv),
                &added,
            );
        }
    }
    for (ci, case) in CASES.iter().enumerate() {
        let [d, m] = &r.http[ci];
        if d.is_none() && m.is_none() {
            continue;
        }
        let pick = |c: &Option<Cell<Http>>, i: usize| {
            c.as_ref()
                .map(|c| c.clone().map(|v| if i == 0 { v.0 } else { v.1 }))
        };
        let (dr, mr) = (pick(d, 0), pick(m, 0));
        let ratio = match (&dr, &mr) {
            (Some(Ok(d)), Some(Ok(m))) => format!("{:.2}x", m / d),
            _ => "-".into(),
        };
        row(
            &format!("{} http req/s", case.name),
            &cell_str(&dr.map(|c| c.map(|x| format!("{x:.0}")))),
            &cell_str(&mr.map(|c| c.map(|x| format!("{x:.0}")))),
            &ratio,
        );
        let (dm, mm) = (pick(d, 1), pick(m, 1));
        let added = match (&dm, &mm) {
            (Some(Ok(d)), Some(Ok(m))) => format!("{:+.1} us", m - d),
            _ => "-".into(),
        };
        row(
            &format!("{} http mean", case.name),
            &cell_str(&dm.map(|c| c.map(|x| format!("{x:.1} us")))),
            &cell_str(&mm.map(|c| c.map(|x| format!("{x:.1} us")))),
            &added,
        );
    }
    for (ci, case) in CASES.iter().enumerate() {
        for (vi, v) in ["direct", "mesh"].iter().enumerate() {
            if let Some(Err(e)) = &r.http[ci][vi] {
                println!("  {} {v} http failed: {e}", case.name);
            }
            if let Some(Err(e)) = &r.tput[ci][vi] {
                println!("  {} {v} tput failed: {e}", case.name);
            }
            if let Some(Err(e)) = &r.lat[ci][vi] {
                println!("  {} {v} latency failed: {e}", case.name);
            }
        }
    }
}
