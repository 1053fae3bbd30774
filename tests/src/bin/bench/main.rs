//! `mesh-bench` (run by `cargo xtask bench`): DIRECT (neither pod enrolled) side by side
//! with MESH (client and server pods enrolled as ambient workloads, so every connection
//! crosses the client's agent, an HBONE tunnel — HTTP/2 CONNECT over mutual TLS — and the
//! server's agent), for a same-node pair and a cross-node pair.
//!
//! Rows: iperf3 throughput (1 and 4 streams), 1 KB ping-pong round trips (p50/p99), new
//! connections per second (connect, 1 KB echo, close), h2load requests (when installed),
//! the time to open many held connections, and the agents' resident memory idle and while
//! they carry 1,000 and 10,000 open connections; DNS query latency, through the agent's
//! DNS proxy versus asking the nameserver (dnsmasq in pod n2p2) directly; HTTP requests
//! direct, through a waypoint and through the ingress gateway (`l7.rs`); the gateway's
//! requests with tracing off, on, and on with its collector stopped (`spans.rs`).
//!
//! Method: one lab (2 nodes x 7 pods), separate pods per column (see `pods.rs`); every
//! measurement runs DIRECT then MESH back to back, so background load on the 2 cores hits
//! both columns alike; `--rounds N` repeats the rows and reports medians. After each MESH
//! run both agents must hold records of the connections, all of them mutual TLS, or the
//! number is not a mesh number: the bench says so loudly and exits non-zero.
//!
//! The subcommands are the bench's own clients; it starts them inside the client pod's
//! cgroup and namespace, so their connects are what the eBPF programs capture.
mod clients;
mod dns;
mod l7;
mod measure;
mod memory;
mod netstat;
mod pods;
mod report;
mod run;
mod spans;
mod stats;
mod verify;

use std::net::SocketAddr;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "mesh-bench",
    about = "Direct vs mesh (mutual TLS), side by side: throughput, latency, connection \
             rate and agent memory",
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
    /// Latency client: ping-pongs SIZE bytes over one TCP connection and prints
    /// p50/p99/mean in microseconds as JSON.
    #[command(name = "pingpong-client")]
    Pingpong(PingpongArgs),
    /// Connection-rate client: COUNT sequential (connect, send SIZE bytes, read the echo,
    /// close) and prints connections per second and p50/p99 of one of them as JSON.
    #[command(name = "conn-rate-client")]
    ConnRate(ConnRateArgs),
    /// Holding client: opens COUNT connections to an echo server, checks an echo on each,
    /// prints one JSON line when all are open and keeps them until stdin closes.
    #[command(name = "hold-client")]
    Hold(HoldArgs),
    /// DNS client: COUNT sequential A queries for NAME to SERVER over one connected UDP
    /// socket (as glibc asks); prints p50/p99/mean in microseconds as JSON.
    #[command(name = "dns-client")]
    Dns(DnsClientArgs),
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Measured round trips per latency run (after the warm-up); also h2load's requests.
    #[arg(long, default_value_t = 5000)]
    pub count: u64,
    /// Warm-up round trips per latency run (not measured).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Request (and response) size of the ping-pong and of the connection-rate echo, bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Measured connections per connection-rate run (after 50 warm-up connections).
    #[arg(long, default_value_t = 2000)]
    pub conns: u64,
    /// Open connections held while the agents' memory is read (cross node), in order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub hold: Vec<u64>,
    /// Rounds of every DIRECT/MESH pair (the table shows medians over rounds); the memory
    /// rows are measured once, after the last round.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Run only these kinds of measurement (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Only>,
}

impl BenchArgs {
    pub fn wants(&self, what: Only) -> bool {
        self.only.is_empty() || self.only.contains(&what)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Only {
    /// iperf3, 1 and 4 streams.
    Throughput,
    /// 1 KB ping-pong round trips (and h2load when installed).
    Latency,
    /// New connections per second.
    ConnRate,
    /// Agent memory, idle and with many open connections.
    Memory,
    /// DNS query latency: through the agent's DNS proxy vs the nameserver directly.
    Dns,
    /// HTTP/1.1 and h2c requests (h2load): direct, through a waypoint, through the
    /// ingress gateway, at 1,000 requests/s and at saturation; then the gateway with
    /// span export off, on, and on with the collector stopped.
    L7,
}

#[derive(Args, Clone)]
pub struct PingpongArgs {
    /// Address of an echo server.
    #[arg(long)]
    pub connect: SocketAddr,
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    #[arg(long, default_value_t = 5000)]
    pub count: u64,
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
}

#[derive(Args, Clone)]
pub struct ConnRateArgs {
    /// Address of an echo server.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Bytes sent (and expected back) on each connection.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Measured connections.
    #[arg(long, default_value_t = 2000)]
    pub count: u64,
    /// Connections before the measurement (opens the mesh's tunnel, warms caches).
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
}

#[derive(Args, Clone)]
pub struct HoldArgs {
    /// Address of an echo server.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Connections to open and hold.
    #[arg(long)]
    pub count: u64,
    /// Connections opened before their echoes are awaited (keeps accept queues short).
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Gives up holding after this long even if stdin stays open (never outlives a lost
    /// parent by much).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Args, Clone)]
pub struct DnsClientArgs {
    /// The nameserver asked (in MESH the kernel steers the query to the agent).
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value_t = 2000)]
    pub count: u64,
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Ask a name never asked before each time (`q<i>-<pid>.<NAME>`), so that no cache
    /// on the way can answer.
    #[arg(long)]
    pub unique: bool,
}

/// Errors print as their chain of causes, without the backtrace `RUST_BACKTRACE=1` would
/// add to a returned `anyhow::Error`.
fn main() -> std::process::ExitCode {
    match run_mode() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_mode() -> Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Some(Mode::Pingpong(args)) => clients::pingpong(&args),
        Some(Mode::ConnRate(args)) => clients::conn_rate(&args),
        Some(Mode::Hold(args)) => clients::hold(&args),
        Some(Mode::Dns(args)) => clients::dns(&args),
        None => run::bench(&cli.bench),
    }
}
