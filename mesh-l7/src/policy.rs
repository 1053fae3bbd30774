//! DestinationRules for one host merged as Istio does, then the traffic policy of one
//! cluster (host, subset, port): load balancer, connection pool limits, outlier detection.
//!
//! Which DestinationRules: those exported to the proxy's namespace, from the first of the
//! proxy's namespace, the host's namespace, the root namespace (Istio's lookup order);
//! within it, every rule for the host is merged in creation order: subsets are united (the
//! first definition of a name wins) and the first top-level `trafficPolicy` is kept.
//! A field of the policy comes from the most specific place that sets it: the subset's
//! port-level settings, the subset's policy, the rule's port-level settings, the rule's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use mesh_config::istio::{
    ConnectionPoolSettings, LoadBalancerSettings, SimpleLb, Subset, TrafficPolicy,
};
use mesh_config::resolve::exported_to;
use mesh_config::snapshot::DestinationRuleInfo;

use crate::outlier::OutlierConfig;

/// The DestinationRules of one host, merged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MergedRule {
    /// `namespace/name` of the merged rules, in order.
    pub rules: Vec<String>,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: BTreeMap<String, Subset>,
}

/// Merges the rules for a host (see the module comment). `None` when none is visible.
pub fn merge(
    rules: &[Arc<DestinationRuleInfo>],
    proxy_namespace: Option<&str>,
    host_namespace: Option<&str>,
    root_namespace: &str,
) -> Option<MergedRule> {
    let visible = |r: &&Arc<DestinationRuleInfo>| match proxy_namespace {
        Some(ns) => exported_to(&r.export_to, &r.namespace, ns),
        None => true,
    };
    let order = [proxy_namespace, host_namespace, Some(root_namespace)];
    let namespace = order.into_iter().flatten().find(|ns| {
        rules
            .iter()
            .filter(visible)
            .any(|r| r.namespace.as_str() == *ns)
    });
    let chosen: Vec<&Arc<DestinationRuleInfo>> = match namespace {
        Some(ns) => rules
            .iter()
            .filter(visible)
            .filter(|r| r.namespace == ns)
            .collect(),
        // Elsewhere, but exported to us: the first namespace that has one.
        None => {
            let first = rules.iter().find(visible)?;
            rules
                .iter()
                .filter(visible)
                .filter(|r| r.namespace == first.namespace)
                .collect()
        }
    };
    let mut merged = MergedRule::default();
    for r in chosen {
        merged.rules.push(format!("{}/{}", r.namespace, r.name));
        if merged.traffic_policy.is_none() {
            merged.traffic_policy = r.traffic_policy.clone();
        }
        for (name, subset) in &r.subsets {
            merged
                .subsets
                .entry(name.clone())
                .or_insert_with(|| subset.clone());
        }
    }
    Some(merged)
}

/// How a cluster picks an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices on active requests.
    LeastRequest,
    Random,
    ConsistentHash {
        key: HashKey,
        ring_size: usize,
    },
}

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    /// The cookie's value. (Envoy would generate the cookie when absent and `ttl` is set;
    /// here a request without it is balanced at random.)
    Cookie {
        name: String,
    },
    SourceIp,
    QueryParameter(String),
}

/// Connection pool limits for the caller to enforce (Istio's defaults when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub max_retries: u32,
    pub idle_timeout: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: u32::MAX,
            connect_timeout: Duration::from_secs(10),
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_requests_per_connection: 0,
            max_retries: u32::MAX,
            idle_timeout: None,
        }
    }
}

/// The effective traffic policy of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPolicy {
    pub lb: LbPolicy,
    pub limits: ConnectionLimits,
    pub outlier: Option<OutlierConfig>,
}

impl ClusterPolicy {
    /// For `subset` (if any) on `port`, from a merged rule (if any).
    pub fn resolve(rule: Option<&MergedRule>, subset: Option<&str>, port: u16) -> ClusterPolicy {
        let top = rule.and_then(|r| r.traffic_policy.as_ref());
        let sub = rule
            .zip(subset)
            .and_then(|(r, s)| r.subsets.get(s))
            .and_then(|s| s.traffic_policy.as_ref());
        let lb = pick(
            sub,
            top,
            port,
            |p| p.load_balancer.as_ref(),
            |p| p.load_balancer.as_ref(),
        );
        let pool = pick(
            sub,
            top,
            port,
            |p| p.connection_pool.as_ref(),
            |p| p.connection_pool.as_ref(),
        );
        let outlier = pick(
            sub,
            top,
            port,
            |p| p.outlier_detection.as_ref(),
            |p| p.outlier_detection.as_ref(),
        );
        ClusterPolicy {
            lb: lb.map_or(LbPolicy::RoundRobin, lb_policy),
            limits: pool.map_or_else(ConnectionLimits::default, limits),
            outlier: outlier.map(OutlierConfig::from_istio),
        }
    }
}

/// The most specific setting of one field (see the module comment).
fn pick<'p, T>(
    subset: Option<&'p TrafficPolicy>,
    top: Option<&'p TrafficPolicy>,
    port: u16,
    field: impl Fn(&'p TrafficPolicy) -> Option<&'p T>,
    port_field: impl Fn(&'p mesh_config::istio::PortTrafficPolicy) -> Option<&'p T>,
) -> Option<&'p T> {
    let at_port = |p: &'p TrafficPolicy| {
        p.port_level_settings
            .iter()
            .find(|s| s.port.is_some_and(|sel| sel.number == u32::from(port)))
            .and_then(&port_field)
    };
    subset
        .and_then(at_port)
        .or_else(|| subset.and_then(&field))
        .or_else(|| top.and_then(at_port))
        .or_else(|| top.and_then(&field))
}

fn lb_policy(lb: &LoadBalancerSettings) -> LbPolicy {
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .ok()
                .map(HashKey::Header)
        } else if let Some(c) = &ch.http_cookie {
            Some(HashKey::Cookie {
                name: c.name.clone(),
            })
        } else if ch.use_source_ip == Some(true) {
            Some(HashKey::SourceIp)
        } else {
            ch.http_query_parameter_name
                .clone()
                .map(HashKey::QueryParameter)
        };
        let ring_size = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(ch.minimum_ring_size)
            .or(ch.maglev.as_ref().and_then(|m| m.table_size))
            .unwrap_or(1024)
            .clamp(1, 1 << 20);
        if let Some(key) = key {
            return LbPolicy::ConsistentHash {
                key,
                ring_size: usize::try_from(ring_size).unwrap_or(1024),
            };
        }
    }
    match lb.simple {
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn) => LbPolicy::LeastRequest,
        Some(SimpleLb::Random) => LbPolicy::Random,
        // PASSTHROUGH would use the original destination; a waypoint always balances.
        _ => LbPolicy::RoundRobin,
    }
}

fn limits(pool: &ConnectionPoolSettings) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let positive = |v: Option<i32>, default: u32| {
        v.and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default)
    };
    let tcp = pool.tcp.as_ref();
    let http = pool.http.as_ref();
    ConnectionLimits {
        max_connections: positive(tcp.and_then(|t| t.max_connections), d.max_connections),
        connect_timeout: tcp
            .and_then(|t| t.connect_timeout)
            .map_or(d.connect_timeout, |t| t.0),
        max_pending_requests: positive(
            http.and_then(|h| h.http1_max_pending_requests),
            d.max_pending_requests,
        ),
        max_requests: positive(http.and_then(|h| h.http2_max_requests), d.max_requests),
        max_requests_per_connection: positive(http.and_then(|h| h.max_requests_per_connection), 0),
        max_retries: positive(http.and_then(|h| h.max_retries), d.max_retries),
        idle_timeout: http
            .and_then(|h| h.idle_timeout)
            .or(tcp.and_then(|t| t.idle_timeout))
            .map(|t| t.0),
    }
}
