//! The L7 rows: HTTP/1.1 and HTTP/2 (h2c) requests with h2load, at a fixed 1,000
//! requests/s and at saturation, three ways side by side in one run:
//!
//! * DIRECT: n1p1 → `app http` in n1p2, no mesh;
//! * WAYPOINT: n1p3 → the Service `bench-l7` (bound with `istio.io/use-waypoint`), so
//!   n1p3's agent carries the request over HBONE to the waypoint in n1p5, which routes it
//!   and sends it over HBONE to `app http` in n1p4;
//! * GATEWAY: n1p1 → the ingress gateway in n1p6 (an Istio `Gateway` server on
//!   [`GATEWAY_PORT`] and a VirtualService bound to it), which sends it into the mesh to
//!   n1p4.
//!
//! All on node 1, as the same-node DIRECT pair is, so the columns differ only by the mesh.
//! A second gateway in n1p7, with tracing on (Istio's mesh config naming an OpenTelemetry
//! collector in n2p7), serves the span export rows (`spans.rs`).
//! Percentiles come from h2load's per-request log (`--log-file`). A WAYPOINT or GATEWAY
//! run whose proxy did not count the requests (`istio_requests_total` from its own
//! `/metrics`) did not measure the mesh: the bench says so and fails.
use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, Result, ensure};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, Workload, agent_bin, counter, tracing_mesh_config, wait_for};

use crate::{
    BenchArgs, measure,
    pods::{self, CASES, HTTP_PORT, PodId, Variant, run_bounded},
    stats::{Cell, cell, median, pct_us},
};

pub const WAYPOINT_POD: PodId = (1, 5);
pub const GATEWAY_POD: PodId = (1, 6);
/// The same gateway with tracing on, and its collector (not enrolled: outside the mesh).
pub const TRACED_GATEWAY_POD: PodId = (1, 7);
pub const COLLECTOR_POD: PodId = (2, 7);
const COLLECTOR_OTLP_PORT: u16 = 4317;
const COLLECTOR_HTTP_PORT: u16 = 16686;
const VIP: &str = "198.19.90.10";
const SERVICE_PORT: u16 = 9080;
const GATEWAY_PORT: u16 = 8081;
const METRICS_PORT: u16 = 15020;
/// The fixed-rate rows' total rate, spread over [`FIXED_CLIENTS`] connections.
const FIXED_RATE: u32 = 1000;
const FIXED_CLIENTS: u32 = 4;
/// Requests in flight at saturation (at most this many are cut when a timed run stops).
const IN_FLIGHT: u64 = 16;

/// The waypoint and the gateway as Istio would deploy them, and what routes to n1p4.
fn config() -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: default
  labels: {{istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata:
  name: bench-l7
  namespace: default
  labels: {{istio.io/use-waypoint: waypoint}}
spec:
  clusterIP: {VIP}
  selector: {{bench-l7: server}}
  ports: [{{name: http, port: {SERVICE_PORT}, targetPort: {HTTP_PORT}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {GATEWAY_PORT}, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench-edge, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [bench-gateway]
  http:
  - route: [{{destination: {{host: bench-l7, port: {{number: {SERVICE_PORT}}}}}}}]
"#
    )
}

/// Which way a request goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Waypoint,
    Gateway,
    /// The gateway with tracing on (not a column of the L7 table: see `spans.rs`).
    TracedGateway,
}

const PATHS: [Path; 3] = [Path::Direct, Path::Waypoint, Path::Gateway];

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Waypoint => "waypoint",
            Path::Gateway => "gateway",
            Path::TracedGateway => "traced gateway",
        }
    }

    /// The proxy whose counters must show the run, if any.
    pub fn proxy(self) -> Option<PodId> {
        match self {
            Path::Direct => None,
            Path::Waypoint => Some(WAYPOINT_POD),
            Path::Gateway => Some(GATEWAY_POD),
            Path::TracedGateway => Some(TRACED_GATEWAY_POD),
        }
    }
}

#[derive(Clone, Copy)]
pub enum Load {
    Fixed,
    Saturation,
}

#[derive(Clone, Copy)]
pub enum Proto {
    H1,
    H2,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "h2c",
        }
    }
}

/// One h2load run: requests/s and latency percentiles (µs).
#[derive(Clone, Copy)]
pub struct Run {
    pub rps: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// The waypoint and the gateways running in their pods, their config directories removed
/// on drop.
pub struct L7 {
    config_dir: PathBuf,
    traced_config_dir: PathBuf,
    logs: Vec<PathBuf>,
    /// The traced gateway's OTLP collector (the span rows stop and resume it).
    pub collector: Option<LabChild>,
    _children: Vec<LabChild>,
}

impl Drop for L7 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config_dir);
        let _ = std::fs::remove_dir_all(&self.traced_config_dir);
        for log in &self.logs {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// The workloads the L7 rows add to the bench's own (which they need to know of).
pub fn workloads() -> [Workload<'static>; 3] {
    [
        Workload {
            node: WAYPOINT_POD.0,
            pod: WAYPOINT_POD.1,
            service_account: "waypoint",
            labels: &[("gateway.networking.k8s.io/gateway-name", "waypoint")],
        },
        Workload {
            node: GATEWAY_POD.0,
            pod: GATEWAY_POD.1,
            service_account: "istio-ingressgateway",
            labels: &[("istio", "ingressgateway")],
        },
        Workload {
            node: TRACED_GATEWAY_POD.0,
            pod: TRACED_GATEWAY_POD.1,
            service_account: "istio-ingressgateway",
            labels: &[("istio", "ingressgateway")],
        },
    ]
}

/// Enrolls the waypoint and gateway pods, applies the routes to every agent, starts both
/// proxies and waits until each routes a request.
pub fn start(mesh: &Mesh, all: &[Workload]) -> Result<L7> {
    let id = mesh.lab.id().to_string();
    let config_dir = std::env::temp_dir().join(format!("mesh-bench-{id}-l7-config"));
    let traced_config_dir = std::env::temp_dir().join(format!("mesh-bench-{id}-l7-traced-config"));
    std::fs::create_dir_all(&config_dir)?;
    std::fs::create_dir_all(&traced_config_dir)?;
    let mut l7 = L7 {
        logs: Vec::new(),
        config_dir,
        traced_config_dir,
        collector: None,
        _children: Vec::new(),
    };
    for w in workloads() {
        mesh.enroll_as(&w)?;
    }
    let files = [
        ("workloads.yaml", mesh.workloads_yaml(all)),
        ("bench-l7.yaml", config()),
    ];
    for (name, yaml) in &files {
        mesh.apply_all(name, yaml)?;
        std::fs::write(l7.config_dir.join(name), yaml)?;
        std::fs::write(l7.traced_config_dir.join(name), yaml)?;
    }
    // Only the traced gateway reads this mesh config: the other proxies export nothing.
    let collector_ip = mesh.pod(COLLECTOR_POD.0, COLLECTOR_POD.1).ip().to_string();
    std::fs::write(
        l7.traced_config_dir.join("mesh-config.yaml"),
        tracing_mesh_config(&collector_ip, COLLECTOR_OTLP_PORT),
    )?;
    l7.collector = Some(mesh.serve_in_pod(
        COLLECTOR_POD.0,
        COLLECTOR_POD.1,
        &[
            "trace-collector",
            "--otlp",
            &format!("0.0.0.0:{COLLECTOR_OTLP_PORT}"),
            "--http",
            &format!("0.0.0.0:{COLLECTOR_HTTP_PORT}"),
        ],
        COLLECTOR_HTTP_PORT,
    )?);
    let gateway: &[&str] = &[
        "gateway",
        "--labels",
        "istio=ingressgateway",
        "--namespace",
        "default",
    ];
    let roles: [(PodId, &[&str], &PathBuf, &str); 3] = [
        (
            WAYPOINT_POD,
            &["waypoint", "--name", "waypoint", "--namespace", "default"],
            &l7.config_dir,
            "waypoint",
        ),
        (GATEWAY_POD, gateway, &l7.config_dir, "gateway"),
        (
            TRACED_GATEWAY_POD,
            gateway,
            &l7.traced_config_dir,
            "traced-gateway",
        ),
    ];
    let mut children = Vec::new();
    let mut logs = Vec::new();
    for (pod, args, config_dir, role) in roles {
        let log_path = std::env::temp_dir().join(format!("mesh-bench-{id}-{role}.log"));
        let log = std::fs::File::create(&log_path)?;
        logs.push(log_path);
        let mut cmd = mesh.pod(pod.0, pod.1).command(agent_bin());
        cmd.args(args)
            .arg("--config-dir")
            .arg(config_dir)
            .args(["--metrics-addr", &format!("127.0.0.1:{METRICS_PORT}")])
            // One access line per request would measure the log file, not the proxy
            // (Istio ships with access logs off).
            .env("RUST_LOG", "info,access=off")
            .stdout(Stdio::null())
            .stderr(log);
        children.push(mesh.lab.spawn(&mut cmd)?);
    }
    l7.logs.extend(logs);
    l7._children.extend(children);
    for path in [Path::Waypoint, Path::Gateway, Path::TracedGateway] {
        let (client, url) = target(mesh, path);
        wait_for(&format!("the {} to route", path.label()), || {
            let out = mesh.run_in_pod(
                client.0,
                client.1,
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                    &url,
                ],
            )?;
            Ok(String::from_utf8_lossy(&out.stdout) == "200")
        })?;
    }
    Ok(l7)
}

/// (client pod, URL) of a path.
fn target(mesh: &Mesh, path: Path) -> (PodId, String) {
    let same = CASES[0];
    match path {
        Path::Direct => {
            let (client, server) = Variant::Direct.pair(same);
            let ip = mesh.pod(server.0, server.1).ip();
            (client, format!("http://{ip}:{HTTP_PORT}/"))
        }
        Path::Waypoint => (
            Variant::Mesh.pair(same).0,
            format!("http://{VIP}:{SERVICE_PORT}/"),
        ),
        Path::Gateway | Path::TracedGateway => {
            let pod = path.proxy().unwrap_or(GATEWAY_POD);
            let ip = mesh.pod(pod.0, pod.1).ip();
            (
                Variant::Direct.pair(same).0,
                format!("http://{ip}:{GATEWAY_PORT}/"),
            )
        }
    }
}

/// A proxy's `/metrics`, from its pod.
pub fn proxy_metrics(mesh: &Mesh, pod: PodId) -> Result<String> {
    let url = format!("http://127.0.0.1:{METRICS_PORT}/metrics");
    let out = mesh.run_in_pod(pod.0, pod.1, "curl", &["-sS", "--max-time", "5", &url])?;
    ensure!(out.status.success(), "metrics of {}", pods::name(pod));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The requests a proxy counted (`istio_requests_total`, all series), from its pod.
pub fn proxy_requests(mesh: &Mesh, pod: PodId) -> Result<f64> {
    let metrics = proxy_metrics(mesh, pod)?;
    Ok(counter(&metrics, "istio_requests_total", &[]) as f64)
}

/// One h2load run from `path`'s client for `seconds`.
pub fn h2load(
    mesh: &Mesh,
    path: Path,
    proto: Proto,
    load: Load,
    seconds: u64,
    log: &std::path::Path,
) -> Result<Run> {
    let (client, url) = target(mesh, path);
    let mut args: Vec<String> = vec![
        "-D".into(),
        seconds.to_string(),
        "--warm-up-time".into(),
        "1".into(),
        "--log-file".into(),
        log.display().to_string(),
    ];
    let shape: Vec<String> = match load {
        Load::Fixed => vec![
            "-c".into(),
            FIXED_CLIENTS.to_string(),
            "-m".into(),
            "1".into(),
            "--rps".into(),
            (FIXED_RATE / FIXED_CLIENTS).to_string(),
        ],
        // 16 requests in flight either way: 16 HTTP/1.1 connections, or 2 h2 connections
        // of 8 streams (as a proxy multiplexes).
        Load::Saturation => match proto {
            Proto::H1 => vec!["-c".into(), "16".into()],
            Proto::H2 => vec!["-c".into(), "2".into(), "-m".into(), "8".into()],
        },
    };
    args.extend(shape);
    if let Proto::H1 = proto {
        args.push("--h1".into());
    }
    args.push(url);
    // h2load appends to its log: each run starts from an empty one.
    match std::fs::remove_file(log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let timeout = Duration::from_secs(seconds + 30);
    let (status, out, err) = run_bounded(mesh, client, "h2load", &args, timeout)?;
    ensure!(status.success(), "h2load exited with {status}: {out} {err}");
    let failed = measure::h2load_requests(&out, "failed")?;
    let text = std::fs::read_to_string(log).context("reading h2load's log")?;
    // Columns: start (µs since the epoch), status (-1: the stream did not finish, as
    // the requests in flight when a timed run stops), µs to the end of the response.
    let mut durations = Vec::new();
    let (mut unfinished, mut not_2xx) = (0u64, 0u64);
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (_start, status, micros) = (cols.next(), cols.next(), cols.next());
        let status = status.and_then(|s| s.trim().parse::<i32>().ok());
        match (status, micros.and_then(|m| m.trim().parse::<u64>().ok())) {
            (Some(200..=299), Some(us)) => durations.push(us * 1000),
            (Some(-1), _) => unfinished += 1,
            _ => not_2xx += 1,
        }
    }
    ensure!(
        failed == 0 && not_2xx == 0 && unfinished <= IN_FLIGHT && !durations.is_empty(),
        "h2load: {failed} failed, {not_2xx} not 2xx, {unfinished} unfinished of {} logged: {out}",
        durations.len() as u64 + not_2xx + unfinished
    );
    durations.sort_unstable();
    Ok(Run {
        rps: durations.len() as f64 / seconds as f64,
        p50: pct_us(&durations, 0.50),
        p90: pct_us(&durations, 0.90),
        p99: pct_us(&durations, 0.99),
    })
}

/// Runs every row `args.rounds` times (medians shown) and prints the table; failures and
/// runs that bypassed their proxy make it return an error after printing.
pub fn run(mesh: &Mesh, args: &BenchArgs) -> Result<()> {
    let log = std::env::temp_dir().join(format!("mesh-bench-{}-h2load.tsv", mesh.lab.id()));
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        for load in [Load::Fixed, Load::Saturation] {
            let mut cells: Vec<Vec<Cell<Run>>> = vec![Vec::new(); PATHS.len()];
            for _ in 0..args.rounds {
                for (i, path) in PATHS.into_iter().enumerate() {
                    let before = path.proxy().map(|p| proxy_requests(mesh, p));
                    let r = cell(h2load(mesh, path, proto, load, args.seconds, &log));
                    if let (Ok(run), Some(Ok(before)), Some(pod)) = (&r, before, path.proxy()) {
                        let counted = proxy_requests(mesh, pod).unwrap_or(f64::NAN) - before;
                        // h2load's warm-up requests are counted by the proxy, not logged.
                        let logged = run.rps * args.seconds as f64;
                        if counted.is_nan() || counted < logged {
                            problems.push(format!(
                                "{} {}: the {} counted {counted} requests, h2load logged {}",
                                proto.label(),
                                load_label(load),
                                path.label(),
                                logged
                            ));
                        }
                    }
                    println!(
                        "l7 {:<8} {:<9} {:<10} {}",
                        path.label(),
                        proto.label(),
                        load_label(load),
                        match &r {
                            Ok(x) => format!(
                                "{:.0} req/s p50 {:.0} us p90 {:.0} us p99 {:.0} us",
                                x.rps, x.p50, x.p90, x.p99
                            ),
                            Err(e) => format!("FAILED: {e}"),
                        }
                    );
                    cells[i].push(r);
                }
            }
            rows.push((
                proto,
                load,
                cells.into_iter().map(reduce).collect::<Vec<_>>(),
            ));
        }
    }
    let _ = std::fs::remove_file(&log);
    print_table(&rows, args);
    for p in &problems {
        eprintln!("\n!!!!!!!! {p}");
    }
    let failed = rows
        .iter()
        .any(|(_, _, cells)| cells.iter().any(|c| c.is_err()));
    ensure!(
        problems.is_empty(),
        "L7 runs did not all go through their proxy"
    );
    ensure!(!failed, "some L7 runs failed (see FAILED above)");
    Ok(())
}

pub fn load_label(load: Load) -> String {
    match load {
        Load::Fixed => format!("{FIXED_RATE}/s"),
        Load::Saturation => "saturation".into(),
    }
}

/// Medians over rounds, field by field; any failed round fails the cell.
pub fn reduce(rounds: Vec<Cell<Run>>) -> Cell<Run> {
    let ok: Vec<Run> = rounds
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    if let Some(Err(e)) = rounds.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    let m = |f: fn(&Run) -> f64| median(ok.iter().map(f).collect());
    Ok(Run {
        rps: m(|r| r.rps),
        p50: m(|r| r.p50),
        p90: m(|r| r.p90),
        p99: m(|r| r.p99),
    })
}

fn print_table(rows: &[(Proto, Load, Vec<Cell<Run>>)], args: &BenchArgs) {
    println!();
    println!(
        "## mesh-bench: L7 (h2load {} s per run, {} round(s), medians; fixed rate: {FIXED_CLIENTS} \
         connections, 1 request in flight each; saturation: 16 requests in flight)",
        args.seconds, args.rounds
    );
    println!();
    println!(
        "| requests | direct req/s | p50 / p90 / p99 µs | waypoint req/s | p50 / p90 / p99 µs | \
         added p90 | gateway req/s | p50 / p90 / p99 µs | added p90 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (proto, load, cells) in rows {
        let direct = cells[0].as_ref().ok();
        let mut line = format!("| {} {} ", proto.label(), load_label(*load));
        for (i, c) in cells.iter().enumerate() {
            match c {
                Ok(r) => {
                    let ratio = match (i, direct, load) {
                        (0, _, _) => String::new(),
                        (_, Some(d), Load::Saturation) => format!(" ({:.2}×)", r.rps / d.rps),
                        _ => String::new(),
                    };
                    line.push_str(&format!(
                        "| {:.0}{ratio} | {:.0} / {:.0} / {:.0} ",
                        r.rps, r.p50, r.p90, r.p99
                    ));
                    if i > 0 {
                        match direct {
                            Some(d) => line.push_str(&format!("| +{:.0} µs ", r.p90 - d.p90)),
                            None => line.push_str("| – "),
                        }
                    }
                }
                Err(_) => {
                    line.push_str("| FAILED | ");
                    if i > 0 {
                        line.push_str("| ");
                    }
                }
            }
        }
        println!("{line}|");
    }
    for (proto, load, cells) in rows {
        for (path, c) in PATHS.iter().zip(cells) {
            if let Err(e) = c {
                println!(
                    "- {} {} {}: {}",
                    path.label(),
                    proto.label(),
                    load_label(*load),
                    e.replace('\n', " ")
                );
            }
        }
    }
}
