//! Deterministic VIPs from 198.19.0.0/16 for Services that carry no clusterIP.
//!
//! Each name hashes (FNV-1a, stable across runs and builds) to a slot; collisions probe to the
//! next free slot in name order, so the same set of services always gets the same addresses,
//! and a service keeps its address as long as no new service takes its slot first.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

const SLOTS: u32 = 65_534; // 198.19.0.1 ..= 198.19.255.254

fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn slot_addr(slot: u32) -> IpAddr {
    let n = slot + 1;
    IpAddr::V4(Ipv4Addr::new(198, 19, (n >> 8) as u8, (n & 0xff) as u8))
}

/// Assigns an address to every name of `names` (sorted by the map), avoiding `taken`.
/// Names beyond the range's capacity get none.
pub fn allocate_vips<'a>(
    names: impl IntoIterator<Item = &'a str>,
    taken: &HashSet<IpAddr>,
) -> BTreeMap<String, IpAddr> {
    let mut sorted: Vec<&str> = names.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut used: HashSet<IpAddr> = taken.clone();
    let mut out = BTreeMap::new();
    for name in sorted {
        if used.len() >= SLOTS as usize {
            break;
        }
        let mut slot = fnv1a(name) % SLOTS;
        loop {
            let addr = slot_addr(slot);
            if used.insert(addr) {
                out.insert(name.to_string(), addr);
                break;
            }
            slot = (slot + 1) % SLOTS;
        }
    }
    out
}
