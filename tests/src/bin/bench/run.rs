//! The bench itself: start the lab, enroll the MESH pods as mesh workloads, run every row
//! DIRECT then MESH back to back (checking each MESH run went through both agents over
//! mutual TLS), then the memory holds, then print the report.
use anyhow::{Context, Result, bail, ensure};
use mesh_tests::Mesh;
use serde_json::Value;

use crate::{
    BenchArgs, Only, dns, l7, measure,
    memory::{self, Memory},
    pods::{self, CASES, Case, ECHO_PORT, HTTP_PORT, IPERF_BASE_PORT, Variant, name},
    report::{self, Header, Metric, Table},
    spans,
    stats::{Cell, cell},
    verify::{self, Before},
};

/// iperf3's parallel streams per throughput row.
const STREAMS: [u32; 2] = [1, 4];

/// What every row's runs share.
struct Bench<'a> {
    mesh: &'a Mesh,
    args: &'a BenchArgs,
    table: Table,
    warnings: Vec<String>,
    next_port: u16,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    ensure!(args.count > 0, "--count must be at least 1");
    ensure!(args.conns > 0, "--conns must be at least 1");
    ensure!(args.size > 0, "--size must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.hold.iter().all(|&n| n > 0),
        "--hold counts must be at least 1"
    );
    if args.wants(Only::Throughput) {
        ensure!(
            which("iperf3"),
            "iperf3 is not installed (cargo xtask setup installs it)"
        );
    }
    if args.wants(Only::L7) {
        ensure!(
            which("h2load"),
            "h2load is not installed (cargo xtask setup installs nghttp2-client)"
        );
    }
    // h2load is the optional extra of the latency rows (skipped if not installed); the
    // L7 rows need the HTTP servers too.
    let http = (args.wants(Only::Latency) && which("h2load")) || args.wants(Only::L7);
    let _ = mesh_testbed::lab::install_signal_cleanup();

    let header = Header::new(args);
    println!("mesh-bench");
    header.print();
    println!();
    let mesh = Mesh::start_with_args(2, 7, &["--dns-upstream", dns::UPSTREAM])
        .context("starting the lab and its agents")?;
    println!("lab {}", mesh.lab.id());
    mesh.enroll_workloads(&pods::mesh_workloads())
        .context("enrolling the MESH pods as mesh workloads")?;
    let mut memory = Memory::default();
    memory.idle(&mesh, "idle after start (3 pods enrolled, no traffic yet)");
    if let Some(row) = memory.rows.last() {
        memory::print_row(row);
    }
    let needs_echo = args.wants(Only::Latency)
        || args.wants(Only::ConnRate)
        || args.wants(Only::Memory)
        || args.wants(Only::L7);
    let mut servers = if needs_echo {
        pods::start_servers(&mesh, http)?
    } else {
        Vec::new()
    };
    if args.wants(Only::Dns) {
        servers.push(dns::start_nameserver(&mesh)?);
    }

    let mut bench = Bench {
        mesh: &mesh,
        args,
        table: Table::default(),
        warnings: Vec::new(),
        next_port: IPERF_BASE_PORT,
    };
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round}/{}", args.rounds);
        }
        for (ci, case) in CASES.iter().enumerate() {
            if args.wants(Only::Throughput) {
                for streams in STREAMS {
                    bench.throughput(ci, *case, streams);
                }
            }
            if args.wants(Only::Latency) {
                bench.latency(ci, *case);
                if http {
                    bench.http(ci, *case);
                }
            }
            if args.wants(Only::ConnRate) {
                bench.conn_rate(ci, *case);
            }
        }
        if args.wants(Only::Dns) {
            bench.dns();
        }
    }
    if args.wants(Only::Memory) {
        let w = memory::measure(&mesh, args, &mut bench.table, &mut memory);
        bench.warnings.extend(w);
    } else {
        memory.rows.clear();
    }
    println!();

    let mut notes = Vec::new();
    if args.wants(Only::ConnRate) || args.wants(Only::Memory) {
        notes.push(
            "HBONE tunnels and TLS handshakes are counted by the bench from the client pod's \
             sockets (TCP connections to the server's :15008), independently of the agent's \
             own count (`status`: `hbone.tunnels_opened`, `hbone.tunnels_pooled`)."
                .to_string(),
        );
    }
    report::print(args, &header, &bench.table, &memory, &notes);
    // After the memory rows, which count the bench's own 3 pods only.
    let l7 = if args.wants(Only::L7) {
        let mut all = pods::mesh_workloads().to_vec();
        all.extend(l7::workloads());
        Some(
            l7::start(&mesh, &all)
                .context("starting the waypoint and the gateway")
                .and_then(|proxies| l7::run(&mesh, args).map(|()| proxies))
                .and_then(|proxies| spans::run(&mesh, &proxies, args).map(|()| proxies)),
        )
    } else {
        None
    };
    for w in &bench.warnings {
        eprintln!("\n!!!!!!!! {w}");
    }
    let failed = bench.table.failed() || memory.failed();
    let warned = !bench.warnings.is_empty();
    drop(servers);
    let l7 = l7.transpose();
    drop(mesh);
    l7?;
    if warned {
        bail!(
            "MESH runs did not (all) go through both agents over mutual TLS: the MESH \
             column is not trustworthy"
        );
    }
    if failed {
        bail!("some runs failed (see FAILED above)");
    }
    Ok(())
}

impl Bench<'_> {
    /// Runs `measure` DIRECT then MESH; the MESH run is checked against both agents'
    /// records for connections to `server:port`.
    fn both<T>(
        &mut self,
        case: Case,
        what: &str,
        port: u16,
        mut measure: impl FnMut(Variant, pods::PodId, pods::PodId) -> Cell<T>,
        mut show: impl FnMut(Variant, &Cell<T>),
    ) -> [Cell<T>; 2] {
        Variant::BOTH.map(|v| {
            let (client, server) = v.pair(case);
            let before = Before::now(self.mesh);
            let r = measure(v, client, server);
            show(v, &r);
            if v == Variant::Mesh && r.is_ok() {
                let ip = self.mesh.pod(server.0, server.1).ip();
                let dst = format!("{ip}:{port}");
                let w = verify::through_agents(self.mesh, case, what, &dst, &before);
                self.warnings.extend(w);
            }
            r
        })
    }

    fn throughput(&mut self, ci: usize, case: Case, streams: u32) {
        self.next_port += 1;
        let (mesh, port, seconds) = (self.mesh, self.next_port, self.args.seconds);
        let r = self.both(
            case,
            "throughput",
            port,
            |_, c, s| cell(measure::iperf(mesh, c, s, port, streams, seconds)),
            |v, r| {
                let shown = r.as_ref().map(|bps| format!("{:.2} Gbit/s", bps / 1e9));
                line(case, v, &format!("tput -P {streams}"), shown);
            },
        );
        for (v, r) in Variant::BOTH.into_iter().zip(r) {
            self.table.push(ci, Metric::Tput(streams), v, r);
        }
    }

    fn latency(&mut self, ci: usize, case: Case) {
        let (mesh, args) = (self.mesh, self.args);
        let r = self.both(
            case,
            "latency",
            ECHO_PORT,
            |_, c, s| cell(measure::pingpong(mesh, c, s, args)),
            |v, r| {
                let shown = r.as_ref().map(|j| {
                    format!(
                        "p50 {} p99 {} mean {}",
                        us(&j["p50_us"]),
                        us(&j["p99_us"]),
                        us(&j["mean_us"])
                    )
                });
                line(case, v, "rtt", shown);
            },
        );
        for (v, r) in Variant::BOTH.into_iter().zip(r) {
            self.table.push(ci, Metric::RttP50, v, field(&r, "p50_us"));
            self.table.push(ci, Metric::RttP99, v, field(&r, "p99_us"));
        }
    }

    fn http(&mut self, ci: usize, case: Case) {
        let (mesh, count) = (self.mesh, self.args.count);
        let r = self.both(
            case,
            "http",
            HTTP_PORT,
            |_, c, s| cell(measure::h2load(mesh, c, s, count)),
            |v, r| {
                let shown = r
                    .as_ref()
                    .map(|(rps, mean)| format!("{rps:.0} req/s, mean {mean:.1} us"));
                line(case, v, "http", shown);
            },
        );
        for (v, r) in Variant::BOTH.into_iter().zip(r) {
            self.table
                .push(ci, Metric::HttpRps, v, r.clone().map(|x| x.0));
            self.table.push(ci, Metric::HttpMean, v, r.map(|x| x.1));
        }
    }

    /// Connections per second; for MESH also how many TLS handshakes the run cost: the
    /// agent pools HBONE tunnels, and the new ones are read from the client pod's sockets
    /// (a tunnel is a TCP connection to the server's 15008), not from the agent's word.
    fn conn_rate(&mut self, ci: usize, case: Case) {
        let (mesh, args) = (self.mesh, self.args);
        let mut handshakes = None;
        let r = self.both(
            case,
            "conn-rate",
            ECHO_PORT,
            |v, c, s| {
                let pooled = verify::tunnels(mesh, c, s);
                let r = cell(measure::conn_rate(mesh, c, s, args));
                if v == Variant::Mesh {
                    let now = verify::tunnels(mesh, c, s);
                    let new = now.difference(&pooled).count();
                    handshakes = Some((new, now.len()));
                }
                r
            },
            |v, r| {
                let shown = r.as_ref().map(|j| {
                    format!(
                        "{:.0} conn/s, connect+echo p50 {} p99 {}",
                        j["conn_per_s"].as_f64().unwrap_or(f64::NAN),
                        us(&j["p50_us"]),
                        us(&j["p99_us"])
                    )
                });
                line(case, v, "conns", shown);
            },
        );
        if let Some((new, open)) = handshakes {
            println!(
                "{:<19}HBONE tunnels {} -> {}: {new} opened during the run (= TLS handshakes), \
                 {open} open after it; each connection was a CONNECT stream on them",
                "",
                name(Variant::Mesh.pair(case).0),
                name(Variant::Mesh.pair(case).1)
            );
            let (new, open) = (Ok(new as f64), Ok(open as f64));
            self.table.push(ci, Metric::Handshakes, Variant::Mesh, new);
            self.table.push(ci, Metric::Tunnels, Variant::Mesh, open);
        }
        for (v, r) in Variant::BOTH.into_iter().zip(r) {
            self.table
                .push(ci, Metric::ConnRate, v, field(&r, "conn_per_s"));
            self.table.push(ci, Metric::ConnP50, v, field(&r, "p50_us"));
            self.table.push(ci, Metric::ConnP99, v, field(&r, "p99_us"));
        }
    }
}

impl Bench<'_> {
    /// DNS query latency, filed under the cross-node case (the nameserver is on node 2):
    /// DIRECT asks it from n1p1; MESH asks the same address from n1p3, which the kernel
    /// steers to node 1's agent. The agent's request counter must have grown by every
    /// MESH query and by none of the DIRECT ones, or the row is not what it says. Once for
    /// a repeated name (the agent's cache answers) and once for a new name each time (the
    /// agent forwards every query).
    fn dns(&mut self) {
        let (mesh, args) = (self.mesh, self.args);
        let server: std::net::SocketAddr = match dns::UPSTREAM.parse() {
            Ok(s) => s,
            Err(e) => {
                self.warnings.push(format!("dns: {e}"));
                return;
            }
        };
        let case = pods::CASES[pods::CROSS];
        let kinds = [
            ("dns", false, Metric::DnsP50, Metric::DnsP99),
            ("dns-miss", true, Metric::DnsMissP50, Metric::DnsMissP99),
        ];
        for (what, unique, p50, p99) in kinds {
            for v in Variant::BOTH {
                let (client, _) = v.pair(case);
                let before = dns::answered(mesh, 1).unwrap_or(f64::NAN);
                let r = cell(measure::dns(mesh, client, server, dns::NAME, unique, args));
                let after = dns::answered(mesh, 1).unwrap_or(f64::NAN);
                let shown = r.as_ref().map(|j| {
                    format!(
                        "p50 {} p99 {} mean {}",
                        us(&j["p50_us"]),
                        us(&j["p99_us"]),
                        us(&j["mean_us"])
                    )
                });
                line(case, v, what, shown);
                let through_agent = after - before;
                let expected = match v {
                    Variant::Direct => through_agent == 0.0,
                    // The client's warm-up queries count too.
                    Variant::Mesh => through_agent >= args.count as f64,
                };
                if r.is_ok() && !expected {
                    self.warnings.push(format!(
                        "{what} {}: the agent answered {through_agent} queries during the run",
                        v.label()
                    ));
                }
                self.table.push(pods::CROSS, p50, v, field(&r, "p50_us"));
                self.table.push(pods::CROSS, p99, v, field(&r, "p99_us"));
            }
        }
    }
}

/// A number out of a client's JSON report.
fn field(r: &Cell<Value>, key: &str) -> Cell<f64> {
    r.clone()
        .and_then(|j| j[key].as_f64().ok_or_else(|| format!("no {key} in {j}")))
}

fn us(v: &Value) -> String {
    v.as_f64().map_or("?".into(), |x| format!("{x:.1} us"))
}

/// One progress line per run.
fn line(case: Case, v: Variant, what: &str, shown: Result<String, &String>) {
    match shown {
        Ok(s) => println!("{:<11} {:<6} {what}: {s}", case.name, v.label()),
        Err(e) => println!("{:<11} {:<6} {what}: FAILED: {e}", case.name, v.label()),
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
