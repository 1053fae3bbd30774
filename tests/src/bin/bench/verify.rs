//! Proof that a MESH number is a mesh number: after each MESH run both agents must hold
//! records of its connections (outbound on the client's node, inbound on the server's),
//! every one of them `"security": "mutual_tls"`. Plus what the agents do not count
//! themselves: HBONE tunnels, read from the client pod's sockets.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use mesh_tests::{Mesh, opened, records_to};
use serde_json::Value;

use crate::{
    netstat,
    pods::{Case, PodId},
};

/// The HBONE port every enrolled pod listens on.
pub const HBONE_PORT: u16 = 15008;

/// How long an agent may take to answer `status` before the bench moves on without it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

fn status(mesh: &Mesh, node: usize) -> Option<Value> {
    mesh.status_within(node, STATUS_TIMEOUT).ok()
}

/// `connections.opened` of each agent.
pub fn counters(mesh: &Mesh) -> [Option<u64>; 2] {
    [1, 2].map(|n| status(mesh, n).map(|s| opened(&s)))
}

/// Unix time in milliseconds (the agents stamp connection records with it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a MESH run is checked against: taken just before it starts.
pub struct Before {
    since_ms: u64,
    opened: [Option<u64>; 2],
}

impl Before {
    pub fn now(mesh: &Mesh) -> Before {
        Before {
            opened: counters(mesh),
            since_ms: now_ms(),
        }
    }

    /// Connections each agent opened since.
    pub fn opened_since(&self, mesh: &Mesh) -> [Option<u64>; 2] {
        let after = counters(mesh);
        [0, 1].map(|i| Some(after[i]?.saturating_sub(self.opened[i]?)))
    }
}

/// Records of `node`'s agent in `direction` to `dst` that ended since the run started.
fn fresh_records(
    mesh: &Mesh,
    node: usize,
    direction: &str,
    dst: &str,
    since_ms: u64,
) -> Vec<Value> {
    status(mesh, node)
        .map(|s| {
            records_to(&s, dst)
                .into_iter()
                .filter(|r| {
                    r["direction"] == direction
                        && r["ended_at_ms"].as_u64().is_some_and(|t| t >= since_ms)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// After a MESH run to `dst`: records on both agents (written when a connection ends,
/// which can trail the client's exit a little: up to 10 s), all mutual TLS. Prints a
/// one-line summary; returns the loud complaint if the run was not (all) through the mesh.
pub fn through_agents(
    mesh: &Mesh,
    case: Case,
    what: &str,
    dst: &str,
    before: &Before,
) -> Option<String> {
    let (client_node, server_node) = (1, case.server.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut out, mut inb);
    loop {
        out = fresh_records(mesh, client_node, "outbound", dst, before.since_ms);
        inb = fresh_records(mesh, server_node, "inbound", dst, before.since_ms);
        if (!out.is_empty() && !inb.is_empty()) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let plain: Vec<String> = out
        .iter()
        .chain(&inb)
        .filter(|r| r["security"] != "mutual_tls")
        .map(|r| format!("{} security {}", r["direction"], r["security"]))
        .collect();
    let opened = before.opened_since(mesh);
    let delta = |i: usize| opened[i].map_or("?".into(), |d| format!("+{d}"));
    let summary = format!(
        "{} outbound record(s) on node{client_node}'s agent, {} inbound on node{server_node}'s \
         ({} not mutual TLS); connections opened: node1 {}, node2 {}",
        out.len(),
        inb.len(),
        plain.len(),
        delta(0),
        delta(1)
    );
    let complaint = if out.is_empty() || inb.is_empty() {
        "did NOT go through both agents"
    } else if !plain.is_empty() {
        "was NOT all mutual TLS"
    } else {
        println!("{:<19}through both agents, mutual TLS: {summary}", "");
        return None;
    };
    let first = plain
        .first()
        .map_or(String::new(), |p| format!("; first: {p}"));
    let msg = format!(
        "ERROR: the {} {what} MESH run to {dst} {complaint} ({summary}{first}): its numbers \
         are not mesh numbers",
        case.name
    );
    eprintln!("!!!!!!!! {msg}");
    Some(msg)
}

/// The client pod's established connections to `server`'s HBONE port: the tunnels its
/// agent pooled towards that pod (the agent opens them from inside the client pod's
/// namespace), identified by local port.
pub fn tunnels(mesh: &Mesh, client: PodId, server: PodId) -> BTreeSet<u16> {
    let peer = mesh.pod(server.0, server.1).ip();
    mesh.pod(client.0, client.1)
        .run(move || netstat::connections_to(peer, HBONE_PORT))
        .map(|ports| ports.into_iter().collect())
        .unwrap_or_default()
}

/// Waits (up to `timeout`) until every connection an agent opened has ended, so memory
/// read next is idle memory; false if some are still open.
pub fn wait_quiet(mesh: &Mesh, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let quiet = [1, 2].iter().all(|&n| {
            status(mesh, n).is_some_and(|s| {
                let c = &s["connections"];
                c["closed"].as_u64() >= c["opened"].as_u64()
            })
        });
        if quiet || Instant::now() > deadline {
            return quiet;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
