//! What the bench prints: the header (machine, command line, settings) and, at the end,
//! one Markdown block (header again, the DIRECT vs MESH table, the agents' memory, the
//! failures) that can be pasted into notes as it is.
use std::collections::BTreeMap;

use crate::{
    BenchArgs, Only,
    measure::CONN_WARMUP,
    memory::{AgentMem, Memory},
    pods::{CASES, Variant},
    stats::{Cell, reduce},
};

/// A row of the DIRECT vs MESH table (per case); the order here is the table's order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// iperf3 with this many parallel streams, bit/s.
    Tput(u32),
    RttP50,
    RttP99,
    /// Sequential (connect, echo, close) per second.
    ConnRate,
    ConnP50,
    ConnP99,
    /// HBONE tunnels (TLS handshakes) the conn-rate run opened; MESH only.
    Handshakes,
    /// HBONE tunnels open after the conn-rate run (its connections were streams on them).
    Tunnels,
    HttpRps,
    HttpMean,
    /// Milliseconds to open this many held connections (each echoed once).
    HoldOpen(u64),
    /// One DNS query for an upstream name asked again and again (MESH: through the agent,
    /// answered from its cache after the first).
    DnsP50,
    DnsP99,
    /// One DNS query for a name never asked before (MESH: the agent forwards every one).
    DnsMissP50,
    DnsMissP99,
}

/// How a MESH value is set against its DIRECT one.
enum Compare {
    /// mesh / direct (more is better: rates).
    Ratio,
    /// mesh - direct (less is better: durations).
    Added,
    None,
}

impl Metric {
    fn label(self, size: &str) -> String {
        match self {
            Metric::Tput(1) => "throughput, 1 stream (iperf3)".into(),
            Metric::Tput(n) => format!("throughput, {n} streams (iperf3 -P {n})"),
            Metric::RttP50 => format!("{size} ping-pong round trip p50"),
            Metric::RttP99 => format!("{size} ping-pong round trip p99"),
            Metric::ConnRate => format!("new connections/s (connect, {size} echo, close)"),
            Metric::ConnP50 => format!("one connect + {size} echo, p50"),
            Metric::ConnP99 => format!("one connect + {size} echo, p99"),
            Metric::Handshakes => "TLS handshakes in the conn-rate run (new HBONE tunnels)".into(),
            Metric::Tunnels => {
                "HBONE tunnels carrying the conn-rate run (one stream per connection)".into()
            }
            Metric::HttpRps => "HTTP/1.1 req/s (h2load, 1 connection)".into(),
            Metric::HttpMean => "HTTP/1.1 mean request time (h2load)".into(),
            Metric::HoldOpen(n) => format!("time to open {} held connections", thousands(n)),
            Metric::DnsP50 => "DNS query (A, upstream name, repeated: cached), p50".into(),
            Metric::DnsP99 => "DNS query (A, upstream name, repeated: cached), p99".into(),
            Metric::DnsMissP50 => "DNS query (A, a new upstream name each: forwarded), p50".into(),
            Metric::DnsMissP99 => "DNS query (A, a new upstream name each: forwarded), p99".into(),
        }
    }

    fn compare(self) -> Compare {
        match self {
            Metric::Tput(_) | Metric::ConnRate | Metric::HttpRps => Compare::Ratio,
            Metric::Handshakes | Metric::Tunnels => Compare::None,
            _ => Compare::Added,
        }
    }

    fn format(self, x: f64) -> String {
        match self {
            Metric::Tput(_) => format!("{:.2} Gbit/s", x / 1e9),
            Metric::ConnRate | Metric::HttpRps => format!("{x:.0}/s"),
            Metric::Handshakes | Metric::Tunnels => format!("{x:.0}"),
            Metric::HoldOpen(_) => format!("{x:.0} ms"),
            _ => format!("{x:.1} us"),
        }
    }

    fn added(self, d: f64) -> String {
        match self {
            Metric::HoldOpen(_) => format!("{d:+.0} ms"),
            _ => format!("{d:+.1} us"),
        }
    }
}

/// Every round's value of every row: (case index, metric) -> [direct, mesh].
#[derive(Default)]
pub struct Table {
    cells: BTreeMap<(usize, Metric), [Vec<Cell<f64>>; 2]>,
}

impl Table {
    pub fn push(&mut self, case: usize, metric: Metric, variant: Variant, value: Cell<f64>) {
        self.cells.entry((case, metric)).or_default()[variant as usize].push(value);
    }

    pub fn failed(&self) -> bool {
        self.cells.values().flatten().flatten().any(|c| c.is_err())
    }

    fn print(&self, size: &str, failures: &mut Vec<(String, String)>) {
        println!("| case | DIRECT | MESH (mutual TLS) | MESH vs DIRECT |");
        println!("|---|---:|---:|---:|");
        for (&(ci, metric), [d, m]) in &self.cells {
            let (d, m) = (reduce(d), reduce(m));
            let mut cell = |c: &Option<Cell<f64>>, column: &str| match c {
                None if matches!(metric, Metric::Handshakes | Metric::Tunnels) => {
                    "n/a (plain TCP)".to_string()
                }
                None => "-".to_string(),
                Some(Ok(x)) => metric.format(*x),
                Some(Err(e)) => {
                    let what = format!("{} {} {column}", CASES[ci].name, metric.label(size));
                    format!("FAILED ({})", failure(failures, &what, e))
                }
            };
            let (dc, mc) = (cell(&d, "DIRECT"), cell(&m, "MESH"));
            let cmp = match (metric.compare(), &d, &m) {
                (Compare::Ratio, Some(Ok(d)), Some(Ok(m))) => format!("{:.2}x", m / d),
                (Compare::Added, Some(Ok(d)), Some(Ok(m))) => metric.added(m - d),
                _ => "-".into(),
            };
            let label = format!("{} {}", CASES[ci].name, metric.label(size));
            println!("| {label} | {dc} | {mc} | {cmp} |");
        }
    }
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1KB" for 1024, "100B" otherwise.
pub fn size_label(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{}KB", size / 1024)
    } else {
        format!("{size}B")
    }
}

/// `/proc/loadavg`'s first three fields: other work on these cores skews every number.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What the numbers were measured on and with.
pub struct Header {
    lines: Vec<String>,
}

impl Header {
    pub fn new(args: &BenchArgs) -> Header {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("?".into(), |(_, v)| v.trim().to_string());
        let mem = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or("?".into(), |kib| {
                format!("{:.1} GiB", kib as f64 / 1048576.0)
            });
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .map_or("?".into(), |o| {
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            });
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let command = if argv.is_empty() {
            "cargo xtask bench".to_string()
        } else {
            format!("cargo xtask bench -- {}", argv.join(" "))
        };
        let lines = vec![
            format!("- date: {date}"),
            format!("- machine: nproc {nproc} ({cpu}), {mem} RAM, kernel {kernel}"),
            format!("- load average before: {}", loadavg()),
            format!("- command: `{command}`"),
            settings(args),
            "- lab: 2 nodes x 7 pods, one release `mesh-agent run` per node. DIRECT: n1p1 -> \
             n1p2 / n2p1, not enrolled. MESH: n1p3 -> n1p4 / n2p3, enrolled as ambient \
             workloads (sa bench-client, bench-server-same, bench-server-cross): HBONE on \
             both paths. DIRECT then MESH back to back for every row. L7 rows: a waypoint \
             in n1p5, the ingress gateway in n1p6, the gateway with tracing on in n1p7 \
             (its OTLP collector in n2p7)."
                .to_string(),
        ];
        Header { lines }
    }

    pub fn print(&self) {
        for l in &self.lines {
            println!("{l}");
        }
    }
}

/// The runs' parameters, for the rows that run.
fn settings(args: &BenchArgs) -> String {
    let size = size_label(args.size);
    let mut parts = Vec::new();
    if args.wants(Only::Throughput) {
        parts.push(format!("iperf3 {} s per run", args.seconds));
    }
    if args.wants(Only::Latency) {
        parts.push(format!(
            "ping-pong {size}, {} warm-up + {} measured round trips on one connection",
            args.warmup, args.count
        ));
    }
    if args.wants(Only::ConnRate) {
        parts.push(format!(
            "conn-rate {} sequential connections (+{CONN_WARMUP} warm-up), {size} echo each",
            args.conns
        ));
    }
    if args.wants(Only::Dns) {
        parts.push(format!("dns {} sequential A queries per run", args.count));
    }
    if args.wants(Only::L7) {
        parts.push(format!("h2load {} s per L7 run", args.seconds));
    }
    if args.wants(Only::Memory) {
        let counts: Vec<String> = args.hold.iter().map(|&n| thousands(n)).collect();
        parts.push(format!(
            "held connections {} (measured once)",
            counts.join(", ")
        ));
    }
    format!(
        "- settings: {}; {} round(s), medians shown",
        parts.join("; "),
        args.rounds
    )
}

/// The final Markdown block; `notes` are listed under the tables.
pub fn print(args: &BenchArgs, header: &Header, table: &Table, memory: &Memory, notes: &[String]) {
    let size = size_label(args.size);
    let mut failures = Vec::new();
    println!("## mesh-bench: DIRECT vs MESH");
    println!();
    header.print();
    println!("- load average after: {}", loadavg());
    println!();
    table.print(&size, &mut failures);
    println!();
    if !memory.rows.is_empty() {
        print_memory(memory, &mut failures);
        println!();
    }
    for note in notes.iter().chain(&memory.notes) {
        println!("- {note}");
    }
    if !failures.is_empty() {
        println!();
        println!("Failures:");
        println!();
        for (i, (what, e)) in failures.iter().enumerate() {
            println!("{}. {what}: {}", i + 1, e.replace('\n', " "));
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_memory(memory: &Memory, failures: &mut Vec<(String, String)>) {
    println!(
        "| agent memory (VmRSS, open fds), cross-node held connections | node1 agent (client \
         side) | node2 agent (server side) | HBONE tunnels |"
    );
    println!("|---|---:|---:|---:|");
    let base = memory.baseline();
    for row in &memory.rows {
        let mut cell = |i: usize| match &row.agents[i] {
            Ok(AgentMem { rss_kib, fds }) => {
                let per_conn = match (row.held, base.and_then(|b| b[i])) {
                    (held, Some(b)) if held > 0 => format!(
                        " ({:+.1} KiB/conn)",
                        (*rss_kib as f64 - b as f64) / held as f64
                    ),
                    _ => String::new(),
                };
                format!("{}{per_conn}, {} fds", mib(*rss_kib), thousands(*fds))
            }
            Err(e) => {
                let what = format!("memory, {}, node{}", row.label, i + 1);
                format!("FAILED ({})", failure(failures, &what, e))
            }
        };
        let (a, b) = (cell(0), cell(1));
        let label = match &row.error {
            Some(e) => {
                let n = failure(failures, &row.label, e);
                format!("{} — FAILED ({n}): {}", row.label, short(e))
            }
            None => row.label.clone(),
        };
        let tunnels = row.tunnels.map_or("-".into(), |t| t.to_string());
        println!("| {label} | {a} | {b} | {tunnels} |");
    }
}

/// Lists a failure under the table (once per distinct error: the memory rows and the
/// open-time row report the same hold); returns its number.
fn failure(failures: &mut Vec<(String, String)>, what: &str, error: &str) -> usize {
    if let Some(i) = failures.iter().position(|(_, e)| e == error) {
        return i + 1;
    }
    failures.push((what.to_string(), error.to_string()));
    failures.len()
}

/// An error short enough for a table cell, without the characters Markdown tables use.
fn short(e: &str) -> String {
    let flat: String = e.replace(['|', '\n'], " ");
    match flat.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
    }
}
