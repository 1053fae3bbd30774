//! The service graph as Kiali's "versioned app graph" draws it, from the mesh's own
//! metrics: workloads and Services are nodes; a request or connection from a workload to a
//! Service is an edge, and so is the Service's delivery to the workload that answered.
//! Plain functions of scraped samples, unit-tested apart from sockets.
//!
//! Sources, as Kiali reads them from Prometheus:
//! * `istio_requests_total` and `istio_request_duration_milliseconds` (the gateway reports
//!   as `source`, the waypoints as `waypoint`): HTTP and gRPC edges with requests, 5xx
//!   errors and the p99 latency;
//! * `istio_tcp_*` of the node agents (`reporter="source"`): TCP edges, for traffic no
//!   waypoint saw. A connection to or from a proxy (gateway, waypoint) is left out: the
//!   proxy's request metrics already draw that hop, with its real endpoints.
//!
//! The padlock says what carried the hop, never what the configuration wishes:
//! * a TCP edge: its agent's `connection_security_policy="mutual_tls"`;
//! * the client's hop into a waypoint: the waypoint names a `source_principal`, which it
//!   only has from the client's verified certificate (the agent's HBONE termination);
//! * a proxy's hop to an endpoint (and the gateway's own first hop): the proxy pod's own
//!   agent reported its connections to that endpoint as mutual TLS, and none as plain.
use std::collections::{BTreeMap, BTreeSet};

use prometheus_parse::{Sample, Value};

/// A node of the graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    Workload {
        namespace: String,
        name: String,
    },
    /// A Service (or ServiceEntry host), by the FQDN the metrics name.
    Service {
        host: String,
    },
    /// A peer the reporter could not name (outside the mesh, or nothing routed).
    Unknown,
}

impl NodeId {
    /// The name drawn on the node.
    pub fn label(&self) -> String {
        match self {
            NodeId::Workload { name, .. } => name.clone(),
            NodeId::Service { host } => short_host(host).to_string(),
            NodeId::Unknown => "unknown".into(),
        }
    }

    /// A stable key for URLs and the page's `data-` attributes.
    pub fn key(&self) -> String {
        match self {
            NodeId::Workload { namespace, name } => format!("workload:{namespace}/{name}"),
            NodeId::Service { host } => format!("service:{host}"),
            NodeId::Unknown => "unknown".into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            NodeId::Workload { .. } => "workload",
            NodeId::Service { .. } => "service",
            NodeId::Unknown => "unknown",
        }
    }
}

/// `reviews.default.svc.cluster.local` → `reviews`; other hosts as they are.
fn short_host(host: &str) -> &str {
    match host.split_once(".svc.") {
        Some((name_ns, _)) => name_ns.split('.').next().unwrap_or(name_ns),
        None => host,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub from: NodeId,
    pub to: NodeId,
    pub protocol: Protocol,
}

/// Cumulative counts of one edge at one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeTotals {
    /// Requests (HTTP, gRPC) or connections opened (TCP).
    pub requests: f64,
    /// Requests answered 5xx (or not at all); TCP: connections with a response flag.
    pub errors: f64,
    /// `le` → cumulative count, summed over the edge's series.
    pub duration_buckets: BTreeMap<Le, f64>,
    /// Bytes both ways (TCP).
    pub bytes: f64,
    /// TCP: the agent said mutual TLS. L7: the waypoint verified the client.
    pub mutual_tls: bool,
    /// L7 hops a proxy made: (proxy workload, endpoint workload) connections that carried them,
    /// to be checked against what the proxy's agent reported.
    pub carried_by: BTreeSet<(String, String)>,
}
/// A bucket bound with a total order (`+Inf` last).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Le(pub f64);

impl Eq for Le {}

impl PartialOrd for Le {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Le {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Every edge's cumulative counts at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub edges: BTreeMap<EdgeKey, EdgeTotals>,
    /// (source pod, destination workload) pairs the agents reported connections of, and
    /// whether every one of them was mutual TLS.
    pub links: BTreeMap<(String, String), bool>,
}

impl Totals {
    /// Adds the samples of one target's scrape: `reporter` is the proxy's workload when the
    /// target is the gateway or a waypoint. `proxies` are the gateway's and the waypoints'
    /// workload names (their TCP hops are drawn by their request metrics).
    pub fn add(&mut self, samples: &[Sample], reporter: Option<&str>, proxies: &BTreeSet<String>) {
        for sample in samples {
            let label = |name: &str| sample.labels.get(name).unwrap_or("unknown");
            match sample.metric.as_str() {
                "istio_requests_total" => {
                    let code: u16 = label("response_code").parse().unwrap_or(0);
                    let failed = f64::from(u8::from(code == 0 || code >= 500));
                    let count = scalar(&sample.value);
                    let verified_client =
                        label("reporter") == "waypoint" && label("source_principal") != "unknown";
                    let endpoint = label("destination_workload").to_string();
                    self.each_hop(
                        sample,
                        request_protocol(label("request_protocol")),
                        |e, first| {
                            e.requests += count;
                            e.errors += count * failed;
                            if first && verified_client {
                                e.mutual_tls = true;
                            } else if let Some(proxy) = reporter {
                                e.carried_by.insert((proxy.to_string(), endpoint.clone()));
                            }
                        },
                    );
                }
                "istio_request_duration_milliseconds" => {
                    let Value::Histogram(buckets) = &sample.value else {
                        continue;
                    };
                    self.each_hop(
                        sample,
                        request_protocol(label("request_protocol")),
                        |e, _| {
                            for bucket in buckets {
                                *e.duration_buckets.entry(Le(bucket.less_than)).or_default() +=
                                    bucket.count;
                            }
                        },
                    );
                }
                metric @ ("istio_tcp_connections_opened_total"
                | "istio_tcp_sent_bytes_total"
                | "istio_tcp_received_bytes_total") => {
                    if label("reporter") != "source" {
                        continue;
                    }
                    let mutual_tls = label("connection_security_policy") == "mutual_tls";
                    let link = (
                        label("source_workload").to_string(),
                        label("destination_workload").to_string(),
                    );
                    let all_mutual = self.links.entry(link).or_insert(true);
                    *all_mutual &= mutual_tls;
                    if proxies.contains(label("source_workload"))
                        || proxies.contains(label("destination_workload"))
                    {
                        continue;
                    }
                    let count = scalar(&sample.value);
                    let flagged = label("response_flags") != "-";
                    self.each_hop(sample, Protocol::Tcp, |e, _| {
                        if metric == "istio_tcp_connections_opened_total" {
                            e.requests += count;
                            if flagged {
                                e.errors += count;
                            }
                        } else {
                            e.bytes += count;
                        }
                        e.mutual_tls |= mutual_tls;
                    });
                }
                _ => {}
            }
        }
    }

    /// Whether the edge is drawn with a padlock (see the module's doc).
    pub fn mutual_tls(&self, edge: &EdgeTotals) -> bool {
        edge.mutual_tls
            || (!edge.carried_by.is_empty()
                && edge
                    .carried_by
                    .iter()
                    .all(|link| self.links.get(link) == Some(&true)))
    }

    /// Applies `update` to the edges one series stands for: source workload → Service
    /// → destination workload, or straight to the workload when no Service was named;
    /// `update` learns whether the edge is the first hop (the client's).
    fn each_hop(
        &mut self,
        sample: &Sample,
        protocol: Protocol,
        mut update: impl FnMut(&mut EdgeTotals, bool),
    ) {
        let label = |name: &str| {
            sample
                .labels
                .get(name)
                .filter(|v| !v.is_empty() && *v != "unknown")
        };
        let workload = |name: &str, namespace: &str| match (label(name), label(namespace)) {
            (Some(name), namespace) => NodeId::Workload {
                namespace: namespace.unwrap_or("unknown").to_string(),
                name: name.to_string(),
            },
            (None, _) => NodeId::Unknown,
        };
        let source = workload("source_workload", "source_workload_namespace");
        let destination = workload("destination_workload", "destination_workload_namespace");
        let mut hop = |from: NodeId, to: NodeId, first: bool| {
            let edge = self
                .edges
                .entry(EdgeKey { from, to, protocol })
                .or_default();
            update(edge, first);
        };
        match label("destination_service") {
            Some(host) => {
                let service = NodeId::Service {
                    host: host.to_string(),
                };
                hop(source, service.clone(), true);
                if destination != NodeId::Unknown {
                    hop(service, destination, false);
                }
            }
            None => hop(source, destination, true),
        }
    }
}

fn request_protocol(name: &str) -> Protocol {
    if name == "grpc" {
        Protocol::Grpc
    } else {
        Protocol::Http
    }
}

fn scalar(value: &Value) -> f64 {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(_) | Value::Summary(_) => 0.0,
    }
}

/// One edge as drawn: totals since the start, rates over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub key: EdgeKey,
    pub total_requests: f64,
    pub requests_per_second: f64,
    /// 5xx share of the window's requests (0 when idle).
    pub error_rate: f64,
    /// Over the window, or since the start when the window saw no request; `None` for TCP.
    pub p99_ms: Option<f64>,
    pub bytes_per_second: f64,
    pub mutual_tls: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub nodes: BTreeSet<NodeId>,
    pub edges: Vec<Edge>,
    /// The window the rates are over.
    pub window_seconds: f64,
}

impl Graph {
    /// The graph of `newest`, with rates against `oldest` taken `seconds` earlier.
    pub fn between(oldest: &Totals, newest: &Totals, seconds: f64) -> Graph {
        let mut graph = Graph {
            window_seconds: seconds,
            ..Graph::default()
        };
        let per_second = |delta: f64| {
            if seconds > 0.0 {
                (delta / seconds).max(0.0)
            } else {
                0.0
            }
        };
        for (key, now) in &newest.edges {
            let before = oldest.edges.get(key).cloned().unwrap_or_default();
            let requests = (now.requests - before.requests).max(0.0);
            let errors = (now.errors - before.errors).max(0.0);
            let window_buckets: BTreeMap<Le, f64> = now
                .duration_buckets
                .iter()
                .map(|(le, count)| {
                    let earlier = before.duration_buckets.get(le).copied().unwrap_or(0.0);
                    (*le, (count - earlier).max(0.0))
                })
                .collect();
            let p99_ms =
                quantile(0.99, &window_buckets).or_else(|| quantile(0.99, &now.duration_buckets));
            graph.nodes.insert(key.from.clone());
            graph.nodes.insert(key.to.clone());
            graph.edges.push(Edge {
                key: key.clone(),
                total_requests: now.requests,
                requests_per_second: per_second(requests),
                error_rate: if requests > 0.0 {
                    errors / requests
                } else {
                    0.0
                },
                p99_ms: if key.protocol == Protocol::Tcp {
                    None
                } else {
                    p99_ms
                },
                bytes_per_second: per_second(now.bytes - before.bytes),
                mutual_tls: newest.mutual_tls(now),
            });
        }
        graph.fold_tcp_into_requests();
        graph
    }

    /// A TCP edge between two nodes that also have a request edge is the same traffic
    /// seen at L4 (the client's agent carrying it to the waypoint): its bytes and its
    /// padlock go to the request edge instead of a second arrow.
    fn fold_tcp_into_requests(&mut self) {
        let (tcp, mut requests): (Vec<Edge>, Vec<Edge>) = std::mem::take(&mut self.edges)
            .into_iter()
            .partition(|e| e.key.protocol == Protocol::Tcp);
        for edge in tcp {
            let twin = requests
                .iter_mut()
                .find(|r| r.key.from == edge.key.from && r.key.to == edge.key.to);
            match twin {
                Some(twin) => {
                    twin.bytes_per_second += edge.bytes_per_second;
                    twin.mutual_tls |= edge.mutual_tls;
                }
                None => requests.push(edge),
            }
        }
        requests.sort_by(|a, b| a.key.cmp(&b.key));
        self.edges = requests;
    }

    /// The edges into and out of `node`.
    pub fn edges_of<'a>(&'a self, node: &'a NodeId) -> (Vec<&'a Edge>, Vec<&'a Edge>) {
        let inbound = self.edges.iter().filter(|e| &e.key.to == node).collect();
        let outbound = self.edges.iter().filter(|e| &e.key.from == node).collect();
        (inbound, outbound)
    }
}

/// The `q` quantile of cumulative buckets, interpolated inside the bucket it falls in, as
/// Prometheus's `histogram_quantile` does; `None` with no observation.
pub fn quantile(q: f64, buckets: &BTreeMap<Le, f64>) -> Option<f64> {
    let total = buckets.values().copied().fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, count) in buckets {
        if *count >= rank {
            if le.0.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let into = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return Some(lower.0 + (le.0 - lower.0) * into);
        }
        lower = (le.0, *count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests;
