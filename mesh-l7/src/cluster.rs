//! A cluster (Envoy's word): the endpoints of one host, subset and port with their traffic
//! policy, built once per snapshot, and the choice of one endpoint for a request.

use std::net::IpAddr;
use std::sync::Arc;

use mesh_config::canonical::TelemetryNames;
use std::time::Instant;

use crate::flags::ResponseFlag;
use crate::policy::{ClusterPolicy, HashKey, LbPolicy};
use crate::random::{Random, below};
use crate::request::Request;
use crate::state::LbState;

/// One endpoint of a cluster, with the port to connect to resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEndpoint {
    /// Identity kept across snapshots: the workload key, else the address, else the host.
    pub key: Arc<str>,
    pub address: Option<IpAddr>,
    /// `namespace/name` of the workload.
    pub workload: Option<String>,
    /// That workload as telemetry names it: its Deployment (StatefulSet, ...), not the
    /// pod, with its canonical service and revision (`mesh_config::canonical`).
    pub telemetry: Option<Arc<TelemetryNames>>,
    /// A name to resolve instead of an address (a DNS ServiceEntry without endpoints).
    pub hostname: Option<String>,
    /// The port to connect to (the Service's `targetPort`).
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<host>`.
    pub name: Arc<str>,
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
    pub endpoints: Vec<ClusterEndpoint>,
    pub policy: ClusterPolicy,
    /// Consistent hash ring: (point, endpoint index), sorted by point.
    ring: Vec<(u64, usize)>,
}

/// The endpoint chosen for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointChoice<'t> {
    pub index: usize,
    pub endpoint: &'t ClusterEndpoint,
}

impl Cluster {
    pub(crate) fn new(
        host: &str,
        subset: Option<&str>,
        port: u16,
        endpoints: Vec<ClusterEndpoint>,
        policy: ClusterPolicy,
    ) -> Cluster {
        let ring = match &policy.lb {
            LbPolicy::ConsistentHash { ring_size, .. } => build_ring(&endpoints, *ring_size),
            _ => Vec::new(),
        };
        Cluster {
            name: format!("outbound|{port}|{}|{host}", subset.unwrap_or("")).into(),
            host: host.to_string(),
            subset: subset.map(str::to_string),
            port,
            endpoints,
            policy,
            ring,
        }
    }

    /// Picks an endpoint for `req` by the cluster's balancing policy, skipping ejected
    /// endpoints and, when others remain, the `exclude`d ones (hosts a retry already tried).
    /// No endpoint, or all ejected: `UH`.
    pub fn choose<'t>(
        &'t self,
        req: &Request,
        state: &LbState,
        rng: &mut dyn Random,
        now: Instant,
        exclude: &[usize],
    ) -> Result<EndpointChoice<'t>, ResponseFlag> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(ResponseFlag::NoHealthyUpstream);
        }
        let cluster_state = state.cluster(&self.name);
        // Candidates: not ejected; not excluded unless that leaves none. Without outlier
        // detection or exclusions every endpoint is one, and nothing is allocated.
        let mut usable = Usable::All;
        if self.policy.outlier.is_some() || !exclude.is_empty() {
            let mut ok = vec![true; n];
            if self.policy.outlier.is_some() {
                let health = cluster_state.health();
                for (i, e) in self.endpoints.iter().enumerate() {
                    ok[i] = !health.outlier.is_ejected(&e.key, now);
                }
            }
            if !ok.iter().any(|u| *u) {
                return Err(ResponseFlag::NoHealthyUpstream);
            }
            let mut without = ok.clone();
            for &i in exclude {
                if let Some(u) = without.get_mut(i) {
                    *u = false;
                }
            }
            usable = Usable::Some(if without.iter().any(|u| *u) {
                without
            } else {
                ok
            });
        }
        let usable = |i: usize| match &usable {
            Usable::All => true,
            Usable::Some(v) => v[i],
        };
        let first_usable_from = |start: usize| {
            (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| usable(i))
                .unwrap_or(0)
        };
        let random_index = |rng: &mut dyn Random| below(rng, n as u64) as usize;
        let index = match &self.policy.lb {
            LbPolicy::RoundRobin => first_usable_from(cluster_state.next_position() % n),
            LbPolicy::Random => first_usable_from(random_index(rng)),
            LbPolicy::LeastRequest => {
                let a = first_usable_from(random_index(rng));
                let b = first_usable_from(random_index(rng));
                let health = cluster_state.health();
                let active = |i: usize| {
                    health
                        .active
                        .get(&self.endpoints[i].key)
                        .copied()
                        .unwrap_or(0)
                };
                if active(b) < active(a) { b } else { a }
            }
            LbPolicy::ConsistentHash { key, .. } => match hash_key(key, req) {
                Some(h) => self.ring_lookup(h, usable),
                None => first_usable_from(random_index(rng)),
            },
        };
        Ok(EndpointChoice {
            index,
            endpoint: &self.endpoints[index],
        })
    }

    /// The first usable endpoint at or after `hash` on the ring.
    fn ring_lookup(&self, hash: u64, usable: impl Fn(usize) -> bool) -> usize {
        let start = self.ring.partition_point(|(point, _)| *point < hash);
        let len = self.ring.len();
        (0..len)
            .map(|k| self.ring[(start + k) % len].1)
            .find(|&i| usable(i))
            .unwrap_or(0)
    }
}

/// Which endpoints a choice may take.
enum Usable {
    All,
    Some(Vec<bool>),
}

/// The value a consistent hash is computed from, hashed; `None` when the request lacks it.
fn hash_key(key: &HashKey, req: &Request) -> Option<u64> {
    match key {
        HashKey::Header(name) => req.headers.get(name).map(|v| hash(v.as_bytes(), 0)),
        HashKey::Cookie { name } => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v)
            })
            .map(|v| hash(v.as_bytes(), 0)),
        HashKey::SourceIp => req.source.ip.map(|ip| match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => hash(&v4.octets(), 0),
            std::net::IpAddr::V6(v6) => hash(&v6.octets(), 0),
        }),
        HashKey::QueryParameter(name) => req.query_param(name).map(|v| hash(v.as_bytes(), 0)),
    }
}

/// Each endpoint gets `ring_size / n` points (at least one), so the share of keys moving
/// when an endpoint comes or goes stays near 1/n.
fn build_ring(endpoints: &[ClusterEndpoint], ring_size: usize) -> Vec<(u64, usize)> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    let per_endpoint = ring_size.div_ceil(endpoints.len()).max(1);
    let mut ring: Vec<(u64, usize)> = endpoints
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            (0..per_endpoint).map(move |k| (hash(e.key.as_bytes(), k as u64 + 1), i))
        })
        .collect();
    ring.sort_unstable();
    ring
}

/// FNV-1a over the bytes and a salt, then a 64-bit finaliser (so nearby keys spread over
/// the ring). Stable across runs and builds: every replica places keys alike.
fn hash(bytes: &[u8], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.iter().chain(&salt.to_le_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
