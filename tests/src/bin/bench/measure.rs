//! One measurement each: run the client in the client pod against the server pod, parse
//! what it printed. Nothing here knows DIRECT from MESH; `run.rs` decides and checks.
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{
    BenchArgs,
    pods::{ECHO_PORT, HTTP_PORT, PodId, run_bounded, run_client, wait_listening},
};

/// Conn-rate warm-up connections (not measured).
pub const CONN_WARMUP: u64 = 50;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(ToString::to_string).collect()
}

fn echo_addr(mesh: &mesh_tests::Mesh, (n, p): PodId) -> String {
    format!("{}:{ECHO_PORT}", mesh.pod(n, p).ip())
}

/// iperf3 with `streams` parallel streams for `seconds`: received bits per second (the
/// sum over the streams).
pub fn iperf(
    mesh: &mesh_tests::Mesh,
    client: PodId,
    server: PodId,
    port: u16,
    streams: u32,
    seconds: u64,
) -> Result<f64> {
    let (n, p) = server;
    let port_s = port.to_string();
    let iperf_server = mesh.spawn_in_pod(n, p, &["iperf3", "-s", "-1", "-p", &port_s])?;
    wait_listening(mesh, server, port)?;
    let dst = mesh.pod(n, p).ip().to_string();
    let args = strings(&[
        "-c",
        &dst,
        "-p",
        &port_s,
        "-t",
        &seconds.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
        "--connect-timeout",
        "5000",
    ]);
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

/// `mesh-bench pingpong-client` against the server pod's echo: its JSON (p50_us, p99_us,
/// mean_us, ...).
pub fn pingpong(
    mesh: &mesh_tests::Mesh,
    client: PodId,
    server: PodId,
    args: &BenchArgs,
) -> Result<Value> {
    let cargs = strings(&[
        "pingpong-client",
        "--connect",
        &echo_addr(mesh, server),
        "--size",
        &args.size.to_string(),
        "--count",
        &args.count.to_string(),
        "--warmup",
        &args.warmup.to_string(),
    ]);
    // Generous: 10 ms per round trip would already be a broken mesh.
    let timeout =
        Duration::from_secs(30) + Duration::from_millis(10) * (args.count + args.warmup) as u32;
    run_client(mesh, client, &cargs, timeout)
}

/// `mesh-bench conn-rate-client` against the server pod's echo: its JSON (conn_per_s,
/// p50_us, p99_us, ...).
pub fn conn_rate(
    mesh: &mesh_tests::Mesh,
    client: PodId,
    server: PodId,
    args: &BenchArgs,
) -> Result<Value> {
    let cargs = strings(&[
        "conn-rate-client",
        "--connect",
        &echo_addr(mesh, server),
        "--size",
        &args.size.to_string(),
        "--count",
        &args.conns.to_string(),
        "--warmup",
        &CONN_WARMUP.to_string(),
    ]);
    // 20 ms per connection would already be a broken mesh.
    let timeout =
        Duration::from_secs(30) + Duration::from_millis(20) * (args.conns + CONN_WARMUP) as u32;
    run_client(mesh, client, &cargs, timeout)
}

/// h2load's outcome: (requests/s, mean µs per request).
pub type Http = (f64, f64);

/// `h2load -n COUNT -c 1 --h1` against `mesh-agent app http`.
pub fn h2load(mesh: &mesh_tests::Mesh, client: PodId, server: PodId, count: u64) -> Result<Http> {
    let url = format!("http://{}:{HTTP_PORT}/", mesh.pod(server.0, server.1).ip());
    let hargs = strings(&["-n", &count.to_string(), "-c", "1", "--h1", &url]);
    let timeout = Duration::from_secs(30) + Duration::from_millis(10) * count as u32;
    let (status, out, err) = run_bounded(mesh, client, "h2load", &hargs, timeout)?;
    ensure!(status.success(), "h2load exited with {status}: {out} {err}");
    let succeeded = h2load_requests(&out, "succeeded")?;
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

/// One count of h2load's summary line, "requests: 5000 total, 5000 started, 5000 done,
/// 5000 succeeded, 0 failed, ...": `what` is "succeeded", "failed", ...
pub fn h2load_requests(out: &str, what: &str) -> Result<u64> {
    out.lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| {
            l.split(',')
                .find(|f| f.trim_end().ends_with(what))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .with_context(|| format!("no request summary in h2load's output: {out}"))
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

/// `mesh-bench dns-client` in `client` asking `server` for `name` (with `unique`, for a
/// new name under it each time): its JSON (p50_us, ...).
pub fn dns(
    mesh: &mesh_tests::Mesh,
    client: PodId,
    server: std::net::SocketAddr,
    name: &str,
    unique: bool,
    args: &BenchArgs,
) -> Result<Value> {
    let mut cargs = strings(&[
        "dns-client",
        "--server",
        &server.to_string(),
        "--name",
        name,
        "--count",
        &args.count.to_string(),
    ]);
    if unique {
        cargs.push("--unique".into());
    }
    let timeout = Duration::from_secs(30) + Duration::from_millis(10) * args.count as u32;
    run_client(mesh, client, &cargs, timeout)
}
