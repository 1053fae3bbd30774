//! Connection counters, per-connection records and the end-of-connection log line.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use mesh_config::canonical::TelemetryNames;
use serde::Serialize;

use super::metrics::{RefusedLabels, TcpLabels};
use crate::proxy::error::ProxyError;

/// How many finished connections `status` keeps for inspection.
const RECENT_LIMIT: usize = 1024;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Captured from a pod's connect (15001).
    Outbound,
    /// Captured on its way into a pod (15006).
    Inbound,
}

/// How the connection was protected between the agents.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain TCP (a destination outside the mesh, or plaintext accepted by policy).
    None,
    /// HBONE: mutual TLS with SPIFFE identities.
    MutualTls,
}

impl Security {
    /// Istio's `connection_security_policy` label value.
    pub fn label(self) -> &'static str {
        match self {
            Security::None => "none",
            Security::MutualTls => "mutual_tls",
        }
    }
}

/// One finished connection.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionRecord {
    pub direction: Direction,
    /// `namespace/name` of the enrolled pod the connection was captured for.
    pub pod: String,
    pub source: SocketAddr,
    pub original_destination: Option<SocketAddr>,
    /// The Service (FQDN) the original destination was a VIP of, if any.
    pub service: Option<String>,
    /// Where the agent connected: the chosen endpoint, or the original destination.
    pub upstream: Option<SocketAddr>,
    /// The client's SPIFFE identity (Istio principal form), when it has one.
    pub source_principal: Option<String>,
    /// The destination's SPIFFE identity, when it is a mesh workload.
    pub destination_principal: Option<String>,
    pub security: Security,
    /// Bytes from the client towards the destination.
    pub bytes_sent: u64,
    /// Bytes from the destination back to the client.
    pub bytes_received: u64,
    pub duration_ms: u64,
    /// "ok", or what went wrong.
    pub result: String,
    /// Envoy's response flag ("-" when all went well).
    pub response_flags: &'static str,
    /// Short name of the failure ("-" when all went well).
    pub reason: &'static str,
    /// Unix time, milliseconds, when the connection ended.
    pub ended_at_ms: u64,
}

#[derive(Default, Serialize, Clone, Debug)]
pub struct Totals {
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Default)]
pub struct ConnectionStats {
    /// The same connections as Prometheus metrics.
    pub metrics: super::metrics::Metrics,
    opened: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    recent: Mutex<VecDeque<ConnectionRecord>>,
}

impl ConnectionStats {
    pub fn totals(&self) -> Totals {
        Totals {
            opened: self.opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }

    pub fn recent(&self) -> Vec<ConnectionRecord> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Starts tracking a connection; the returned guard records it when dropped.
    pub fn open(
        self: &Arc<Self>,
        direction: Direction,
        pod: String,
        source: SocketAddr,
    ) -> ConnectionGuard {
        self.opened.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            stats: self.clone(),
            started: Instant::now(),
            record: ConnectionRecord {
                direction,
                pod,
                source,
                original_destination: None,
                service: None,
                upstream: None,
                source_principal: None,
                destination_principal: None,
                security: Security::None,
                bytes_sent: 0,
                bytes_received: 0,
                duration_ms: 0,
                result: "ok".into(),
                response_flags: "-",
                reason: "-",
                ended_at_ms: 0,
            },
            established: None,
            workload: None,
            peer_workload: None,
        }
    }

    fn finish(&self, record: ConnectionRecord) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        if record.result != "ok" {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_sent
            .fetch_add(record.bytes_sent, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(record.bytes_received, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_LIMIT {
            recent.pop_front();
        }
        recent.push_back(record);
    }
}

/// Records one connection when dropped: counters, the recent list and the access log line.
pub struct ConnectionGuard {
    stats: Arc<ConnectionStats>,
    started: Instant,
    record: ConnectionRecord,
    /// Set once the upstream connection exists: the labels its metrics are counted under.
    established: Option<TcpLabels>,
    /// This end's pod as telemetry names it (see [`Self::set_workload`]); the pod's name
    /// until it is set.
    workload: Option<TelemetryNames>,
    /// The workload at the other end, when the configuration knows the address: the
    /// endpoint dialled (outbound) or the client (inbound).
    peer_workload: Option<TelemetryNames>,
}

impl ConnectionGuard {
    pub fn set_destination(&mut self, dst: SocketAddr) {
        self.record.original_destination = Some(dst);
    }

    /// The client as the access log shows it (the pod's address rather than the loopback
    /// end of a redirected socket).
    pub fn set_source(&mut self, source: SocketAddr) {
        self.record.source = source;
    }

    /// Where the connection goes: the Service (if the destination was its VIP) and the
    /// address the agent connects to.
    pub fn set_upstream(&mut self, service: Option<String>, upstream: SocketAddr) {
        self.record.service = service;
        self.record.upstream = Some(upstream);
    }

    pub fn set_source_principal(&mut self, principal: String) {
        self.record.source_principal = Some(principal);
    }

    /// Names this end's pod in the metrics as Istio does: its Deployment (StatefulSet,
    /// ...), not the pod (`PodProxy::workload_name`).
    pub fn set_workload(&mut self, names: TelemetryNames) {
        self.workload = Some(names);
    }

    /// Names the workload at the other end in the metrics (Istio's `destination_workload`
    /// when reporting as the source, `source_workload` as the destination).
    pub fn set_peer_workload(&mut self, names: TelemetryNames) {
        self.peer_workload = Some(names);
    }

    pub fn set_destination_principal(&mut self, principal: String) {
        self.record.destination_principal = Some(principal);
    }

    pub fn set_security(&mut self, security: Security) {
        self.record.security = security;
    }

    /// The upstream connection is up: counts the connection as opened.
    pub fn established(&mut self) {
        let labels = self.labels();
        self.stats.metrics.tcp_opened.get_or_create(&labels).inc();
        self.established = Some(labels);
    }

    fn labels(&self) -> TcpLabels {
        let record = &self.record;
        let own = self.workload.clone().unwrap_or_else(|| {
            let (namespace, pod) = record
                .pod
                .split_once('/')
                .unwrap_or(("unknown", &record.pod));
            TelemetryNames {
                workload: pod.to_string(),
                namespace: namespace.to_string(),
                ..TelemetryNames::unknown()
            }
        });
        let unknown = || "unknown".to_string();
        let service = record.service.clone().unwrap_or_else(unknown);
        let source_principal = record.source_principal.clone().unwrap_or_else(unknown);
        let destination_principal = record.destination_principal.clone().unwrap_or_else(unknown);
        let peer = self
            .peer_workload
            .clone()
            .unwrap_or_else(TelemetryNames::unknown);
        let (reporter, source, destination) = match record.direction {
            Direction::Outbound => ("source", own, peer),
            Direction::Inbound => ("destination", peer, own),
        };
        TcpLabels {
            reporter,
            source_workload: source.workload,
            source_workload_namespace: source.namespace,
            source_canonical_service: source.canonical_service,
            source_canonical_revision: source.canonical_revision,
            source_principal,
            destination_workload: destination.workload,
            destination_workload_namespace: destination.namespace,
            destination_canonical_service: destination.canonical_service,
            destination_canonical_revision: destination.canonical_revision,
            destination_principal,
            destination_service: service,
            connection_security_policy: record.security.label(),
            response_flags: record.response_flags,
        }
    }

    pub fn set_bytes(&mut self, sent: u64, received: u64) {
        self.record.bytes_sent = sent;
        self.record.bytes_received = received;
    }

    pub fn fail(&mut self, error: &ProxyError) {
        self.record.result = error.to_string();
        self.record.response_flags = error.response_flag();
        self.record.reason = error.reason();
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut record = self.record.clone();
        record.duration_ms = self.started.elapsed().as_millis() as u64;
        record.ended_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let start_time = SystemTime::now()
            .checked_sub(self.started.elapsed())
            .map_or_else(|| "-".to_string(), super::rfc3339);
        tracing::info!(
            target: "access",
            start_time = %start_time,
            direction = ?record.direction,
            pod = %record.pod,
            src = %record.source,
            dst = %record.original_destination.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            service = %record.service.as_deref().unwrap_or("-"),
            upstream = %record.upstream.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            src_principal = %record.source_principal.as_deref().unwrap_or("-"),
            dst_principal = %record.destination_principal.as_deref().unwrap_or("-"),
            security = %record.security.label(),
            sent = record.bytes_sent,
            received = record.bytes_received,
            duration_ms = record.duration_ms,
            result = %record.result,
            flags = %record.response_flags,
            "connection closed"
        );
        let m = &self.stats.metrics;
        // Labels as of the end: a failure after the upstream was up carries its flag.
        let labels = self.labels();
        if self.established.is_none() {
            // Refused or failed before reaching an upstream: still a connection the
            // client saw, so it is counted, with the reason.
            m.tcp_opened.get_or_create(&labels).inc();
            m.refused
                .get_or_create(&RefusedLabels {
                    direction: match record.direction {
                        Direction::Outbound => "outbound",
                        Direction::Inbound => "inbound",
                    },
                    reason: record.reason,
                })
                .inc();
        }
        m.tcp_closed.get_or_create(&labels).inc();
        if let Some(opened) = &self.established {
            m.tcp_sent.get_or_create(opened).inc_by(record.bytes_sent);
            m.tcp_received
                .get_or_create(opened)
                .inc_by(record.bytes_received);
        }
        self.stats.finish(record);
    }
}
