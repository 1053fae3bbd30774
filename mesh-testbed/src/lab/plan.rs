//! The lab's names and addresses as pure functions (the plan is documented in `lab.rs`), so
//! they can be unit-tested and the creation code only carries them out.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest node number: node `n` owns `198.18.<n>.0/24`, and 198.19/16 is kept for VIPs.
pub const MAX_NODES: usize = 250;
/// Largest pod number: pod `p` is `198.18.<n>.<10 + p>`.
pub const MAX_PODS_PER_NODE: usize = 240;

/// Length of a run id: 36^5 ≈ 60 million values.
const RUN_ID_LEN: usize = 5;

/// A fresh run id: 5 base36 characters mixed from pid, time and a process-wide counter.
/// Uniqueness across processes is then *enforced* by the caller (it reserves the id with an
/// atomic `mkdir`), so a collision costs a retry, never a shared namespace.
pub fn new_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    base36(splitmix64(seed), RUN_ID_LEN)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn base36(mut v: u64, len: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    String::from_utf8(out).expect("ascii digits")
}

/// Short node name, e.g. `n1`.
pub fn node_name(node: usize) -> String {
    format!("n{node}")
}

/// Short pod name, e.g. `n1p2`.
pub fn pod_name(node: usize, pod: usize) -> String {
    format!("n{node}p{pod}")
}

/// Interface names live inside the lab's own namespaces, so they need no run id and stay
/// far below the 15-character limit. In the lab namespace, node `n`'s bridge port: `n<n>`.
pub fn lab_port_name(node: usize) -> String {
    format!("n{node}")
}

/// In node `n`'s namespace, pod `p`'s bridge port: `p<p>`.
pub fn node_port_name(pod: usize) -> String {
    format!("p{pod}")
}

/// Network-namespace name of the lab (bridge) namespace: `mt<id>-lab`.
pub fn lab_netns(id: &str) -> String {
    format!("mt{id}-lab")
}

/// Network-namespace name of a node or pod: `mt<id>-<short name>`.
pub fn netns_name(id: &str, short: &str) -> String {
    format!("mt{id}-{short}")
}

/// The lab's cgroup directory name under the cgroup2 mount: `mesh-<id>`.
pub fn cgroup_root_name(id: &str) -> String {
    format!("mesh-{id}")
}

/// A node's cgroup directory name under the lab's cgroup: `n<node>`. The node's agent
/// attaches its capture programs here, once (what the kubelet's `kubepods` cgroup is on a
/// real node): the pods' cgroups lie below it.
pub fn node_cgroup_name(node: usize) -> String {
    format!("n{node}")
}

/// The cgroup leaf of a node's own daemons (its agent), under the node's cgroup: `system`.
/// Like a DaemonSet pod under `kubepods`, it lies below the capture cgroup.
pub const NODE_SYSTEM_CGROUP: &str = "system";

/// A pod's cgroup leaf name under its node's cgroup: `p<pod>`.
pub fn pod_cgroup_name(pod: usize) -> String {
    format!("p{pod}")
}

/// Node on the lab bridge: `198.18.0.<n>/24`.
pub fn node_ipv4(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, octet(node))
}

/// Node's gateway for its pods: `198.18.<n>.1/24`.
pub fn pod_gateway_ipv4(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, octet(node), 1)
}

/// Pod `p` of node `n`: `198.18.<n>.<10 + p>/24`.
pub fn pod_ipv4(node: usize, pod: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, octet(node), octet(10 + pod))
}

/// The pods' subnet on node `n`: `198.18.<n>.0/24`.
pub fn pod_subnet_ipv4(node: usize) -> String {
    format!("198.18.{node}.0/24")
}

// IPv6 mirrors IPv4 textually: the decimal numbers are written as hex groups, so pod
// 198.18.1.11 is fd00:0:0:1::11 and is easy to match by eye.

/// Node on the lab bridge: `fd00::<n>/64`.
pub fn node_ipv6(node: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, dec_as_hex(node))
}

/// Node's gateway for its pods: `fd00:0:0:<n>::1/64`.
pub fn pod_gateway_ipv6(node: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, dec_as_hex(node), 0, 0, 0, 1)
}

/// Pod `p` of node `n`: `fd00:0:0:<n>::<10 + p>/64`.
pub fn pod_ipv6(node: usize, pod: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0,
        0,
        dec_as_hex(node),
        0,
        0,
        0,
        dec_as_hex(10 + pod),
    )
}

/// The pods' subnet on node `n`: `fd00:0:0:<n>::/64`.
pub fn pod_subnet_ipv6(node: usize) -> String {
    format!("fd00:0:0:{node}::/64")
}

fn octet(v: usize) -> u8 {
    u8::try_from(v).expect("lab spec is validated against MAX_NODES / MAX_PODS_PER_NODE")
}

/// Reads the decimal digits of `v` as a hex group (11 -> 0x11), so the text matches IPv4.
fn dec_as_hex(v: usize) -> u16 {
    u16::from_str_radix(&v.to_string(), 16).expect("lab numbers have at most 4 digits")
}
