//! The DNS proxy: every enrolled pod gets the names a Kubernetes pod has, answered by its
//! node's agent (as ztunnel's DNS proxy). The kernel steers the pod's port-53 traffic to
//! 15053 inside the pod's namespace (`mesh-ebpf/src/dns.rs`); from there, one file per job:
//! * `server`: the UDP and TCP listeners in each pod's namespace, framing, FORMERR;
//! * `names`: which names are the mesh's and their addresses (pure, from the snapshot);
//! * `upstream`: everything else, forwarded to the node's resolvers; `cache`: their answers.
//!
//! This file turns one query into one answer and counts it.
pub mod cache;
pub mod names;
pub mod server;
pub mod upstream;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{RData, Record, RecordType, rdata},
};
use mesh_config::ConfigStore;

use crate::telemetry::metrics::{DnsLabels, DnsMetrics};
use names::Answer;
use upstream::Forwarder;

/// TTL of the mesh's own answers: short, so a Service that goes away is forgotten soon
/// by clients that cache (ztunnel answers with 30 s too).
const LOCAL_TTL: u32 = 30;
/// The largest UDP answer the proxy sends a client that advertised a larger buffer.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The DNS proxy's settings (agent flags).
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Resolvers for names the mesh does not own.
    pub upstreams: Vec<SocketAddr>,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Upstream answers kept at most.
    pub cache_entries: usize,
}

impl DnsConfig {
    /// The `nameserver` lines of a resolv.conf (the node's, by default), port 53.
    pub fn upstreams_from_resolv_conf(path: &Path) -> std::io::Result<Vec<SocketAddr>> {
        let text = std::fs::read_to_string(path)?;
        Ok(parse_resolv_conf(&text))
    }
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) has no SocketAddr form: skipped.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The transport a query came over (a metrics label, and the UDP size limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What every pod's DNS server shares on this node.
pub struct NodeDns {
    pub config: Arc<ConfigStore>,
    pub cluster_domain: String,
    pub forwarder: Forwarder,
    pub metrics: Arc<DnsMetrics>,
}

/// One pod's DNS server: who is asking.
pub struct PodDns {
    /// `namespace/name`, for logs.
    pub pod: String,
    pub namespace: String,
    /// Istio's canonical service and revision of the pod (metrics labels).
    pub canonical_service: String,
    pub canonical_revision: String,
    pub node: Arc<NodeDns>,
    /// The original-destination table and the pod's namespace cookie: a TCP query was
    /// redirected by `connect4/6`, so `sock_ops` filed its client there like any captured
    /// connection; the TCP listener takes the entry off on accept.
    pub redirected_tcp: Option<(Arc<crate::redirect::OrigDstTable>, u64)>,
}

impl PodDns {
    pub fn new(
        pod: String,
        namespace: String,
        labels: &BTreeMap<String, String>,
        node: Arc<NodeDns>,
    ) -> Self {
        let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
        PodDns {
            canonical_service: first(&[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ])
            .unwrap_or_else(|| pod.rsplit('/').next().unwrap_or_default().to_string()),
            canonical_revision: first(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ])
            .unwrap_or_else(|| "latest".into()),
            pod,
            namespace,
            node,
            redirected_tcp: None,
        }
    }

    /// See [`PodDns::redirected_tcp`].
    pub fn with_redirected_tcp(
        mut self,
        table: Arc<crate::redirect::OrigDstTable>,
        netns_cookie: u64,
    ) -> Self {
        self.redirected_tcp = Some((table, netns_cookie));
        self
    }

    /// One query in, the answer out; `None` drops the packet (not even a header to
    /// answer, or a response sent to us).
    pub async fn handle(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!(pod = %self.pod, error = %e, len = packet.len(), "malformed DNS query");
                return format_error(packet);
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let response = self.respond(&request, transport).await;
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(request.max_payload().min(MAX_UDP_PAYLOAD)),
        };
        encode(&response, limit)
    }

    async fn respond(&self, request: &Message, transport: Transport) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        response.queries = request.queries.clone();
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return response;
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        let qtype = query.query_type();
        let labels = DnsLabels {
            request_query_type: qtype.to_string().to_lowercase(),
            request_protocol: transport.label(),
            source_canonical_service: self.canonical_service.clone(),
            source_canonical_revision: self.canonical_revision.clone(),
        };
        let metrics = &self.node.metrics;
        metrics.requests.get_or_create(&labels).inc();
        let name = query.name().to_lowercase().to_ascii();
        let name = name.trim_end_matches('.');
        let snapshot = self.node.config.snapshot();
        let answer = names::resolve(name, &self.namespace, &self.node.cluster_domain, &snapshot);
        let outcome = match answer {
            Answer::Addresses(addresses) => {
                response.metadata.authoritative = true;
                for ip in addresses {
                    let data = match (ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(rdata::A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(rdata::AAAA(v6)),
                        _ => continue,
                    };
                    response.add_answer(Record::from_rdata(query.name().clone(), LOCAL_TTL, data));
                }
                "mesh"
            }
            Answer::NxDomain => {
                response.metadata.authoritative = true;
                response.metadata.response_code = ResponseCode::NXDomain;
                "nxdomain"
            }
            Answer::Forward => {
                let forwarded = self
                    .node
                    .forwarder
                    .forward(query, request.metadata.recursion_desired, || {
                        metrics.upstream_requests.get_or_create(&labels).inc();
                    })
                    .await;
                match forwarded {
                    Ok(forwarded) => {
                        let upstream = forwarded.response;
                        response.metadata.response_code = upstream.metadata.response_code;
                        response.metadata.authoritative = upstream.metadata.authoritative;
                        response.answers = upstream.answers;
                        response.authorities = upstream.authorities;
                        response.additionals = upstream.additionals;
                        if forwarded.cached {
                            metrics.cache_hits.inc();
                            "cache"
                        } else {
                            "upstream"
                        }
                    }
                    Err(e) => {
                        metrics.upstream_failures.get_or_create(&labels).inc();
                        tracing::warn!(pod = %self.pod, name, error = %e, "no upstream resolver answered");
                        response.metadata.response_code = ResponseCode::ServFail;
                        "servfail"
                    }
                }
            }
        };
        metrics
            .cache_entries
            .set(i64::try_from(self.node.forwarder.cache_len()).unwrap_or(i64::MAX));
        tracing::debug!(
            pod = %self.pod,
            name,
            qtype = %qtype,
            transport = transport.label(),
            outcome,
            rcode = %response.metadata.response_code,
            answers = response.answers.len(),
            "dns query"
        );
        response
    }
}

/// FORMERR for a query that did not parse, if at least its header (12 bytes) is there:
/// the client learns at once instead of timing out. Nothing of the query is echoed.
fn format_error(packet: &[u8]) -> Option<Vec<u8>> {
    let header = packet.get(..12)?;
    // QR set in what we got: a response, not ours to answer.
    if header[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let op_code = OpCode::from_u8((header[2] >> 3) & 0x0f);
    Message::error_msg(id, op_code, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// The wire form, truncated (TC set, records dropped) when over `limit` so the client
/// retries over TCP. Never over `limit`: when even the echoed questions do not fit (a
/// packet with many of them, answered FORMERR), the header alone goes back.
fn encode(response: &Message, limit: usize) -> Option<Vec<u8>> {
    let wire = response.to_vec().ok()?;
    if wire.len() <= limit {
        return Some(wire);
    }
    let mut truncated = response.truncate();
    let wire = truncated.to_vec().ok()?;
    if wire.len() <= limit {
        return Some(wire);
    }
    truncated.queries.clear();
    truncated.to_vec().ok()
}

#[cfg(test)]
mod tests;
