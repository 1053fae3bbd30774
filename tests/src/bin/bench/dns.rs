//! The DNS rows: a nameserver (dnsmasq, pod n2p2, which no other row uses) answering every
//! name under one zone, asked by the DIRECT client pod itself and, from the MESH client pod,
//! through the agent (the kernel steers the query to its DNS proxy). Two rows: one name
//! asked again and again (the agent forwards once, then answers from its cache), and a new
//! name each time (the agent forwards every query: its full cost).
use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use mesh_testbed::lab::LabChild;
use mesh_tests::Mesh;

use crate::pods::PodId;

/// The nameserver's pod.
pub const NAMESERVER: PodId = (2, 2);
/// Its address, known before the lab exists (the agents start with it as upstream).
pub const UPSTREAM: &str = "198.18.2.12:53";
/// The zone the nameserver answers for, every name in it.
pub const ZONE: &str = "bench.test";
/// The name asked again and again.
pub const NAME: &str = "web.bench.test";

/// Starts dnsmasq (killed with the lab) and waits until it answers.
pub fn start_nameserver(mesh: &Mesh) -> Result<LabChild> {
    let (n, p) = NAMESERVER;
    let ip = mesh.pod(n, p).ip();
    ensure!(
        SocketAddr::from((ip, 53)).to_string() == UPSTREAM,
        "the lab's layout moved the nameserver"
    );
    let mut cmd = mesh.pod(n, p).command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--user=root",
        "--pid-file=",
        "--local-ttl=300",
    ])
    .arg(format!("--listen-address={ip}"))
    // Every name of the zone is an address, so each unique name gets an answer.
    .arg(format!("--address=/{ZONE}/198.18.2.50"))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let child = mesh
        .lab
        .spawn(&mut cmd)
        .context("starting dnsmasq (cargo xtask setup installs dnsmasq-base)")?;
    let server: SocketAddr = UPSTREAM.parse()?;
    let ready = mesh.pod(n, p).run(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let probe = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 5, b'b', b'e', b'n',
            b'c', b'h', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1,
        ];
        while std::time::Instant::now() < deadline {
            if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0")
                && s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                    .is_ok()
                && s.send_to(&probe, server).is_ok()
                && s.recv(&mut [0u8; 512]).is_ok()
            {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    })?;
    ensure!(ready, "dnsmasq did not answer on {UPSTREAM}");
    Ok(child)
}

/// DNS queries the agent of `node` has answered so far (`istio_dns_requests_total`).
pub fn answered(mesh: &Mesh, node: usize) -> Result<f64> {
    let text = mesh.metrics(node)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("istio_dns_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
