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

use serde::Serialize;

use super::metrics::TcpLabels;

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
    /// Bytes from the client towards the destination.
    pub bytes_sent: u64,
    /// Bytes from the destination back to the client.
    pub bytes_received: u64,
    pub duration_ms: u64,
    /// "ok", or what went wrong.
    pub result: String,
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
                bytes_sent: 0,
                bytes_received: 0,
                duration_ms: 0,
                result: "ok".into(),
                ended_at_ms: 0,
            },
            established: None,
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
}

impl ConnectionGuard {
    pub fn set_destination(&mut self, dst: SocketAddr) {
        self.record.original_destination = Some(dst);
    }

    /// The connection was to a Service VIP and goes to `endpoint`.
    pub fn set_service(&mut self, host: String, endpoint: std::net::SocketAddr) {
        self.record.service = Some(host);
        self.record.upstream = Some(endpoint);
    }

    /// The upstream connection is up: counts the connection as opened.
    pub fn established(&mut self) {
        let (namespace, name) = self
            .record
            .pod
            .split_once('/')
            .unwrap_or(("unknown", &self.record.pod));
        let unknown = || "unknown".to_string();
        let service = self.record.service.clone().unwrap_or_else(unknown);
        let labels = match self.record.direction {
            Direction::Outbound => TcpLabels {
                reporter: "source",
                source_workload: name.to_string(),
                source_workload_namespace: namespace.to_string(),
                destination_workload: unknown(),
                destination_workload_namespace: unknown(),
                destination_service: service,
                connection_security_policy: "none",
            },
            Direction::Inbound => TcpLabels {
                reporter: "destination",
                source_workload: unknown(),
                source_workload_namespace: unknown(),
                destination_workload: name.to_string(),
                destination_workload_namespace: namespace.to_string(),
                destination_service: service,
                connection_security_policy: "none",
            },
        };
        self.stats.metrics.tcp_opened.get_or_create(&labels).inc();
        self.established = Some(labels);
    }

    pub fn set_bytes(&mut self, sent: u64, received: u64) {
        self.record.bytes_sent = sent;
        self.record.bytes_received = received;
    }

    pub fn fail(&mut self, why: impl std::fmt::Display) {
        self.record.result = why.to_string();
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
        tracing::info!(
            target: "access",
            direction = ?record.direction,
            pod = %record.pod,
            src = %record.source,
            dst = %record.original_destination.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            service = %record.service.as_deref().unwrap_or("-"),
            upstream = %record.upstream.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            sent = record.bytes_sent,
            received = record.bytes_received,
            duration_ms = record.duration_ms,
            result = %record.result,
            "connection closed"
        );
        if let Some(labels) = &self.established {
            let m = &self.stats.metrics;
            m.tcp_closed.get_or_create(labels).inc();
            m.tcp_sent.get_or_create(labels).inc_by(record.bytes_sent);
            m.tcp_received
                .get_or_create(labels)
                .inc_by(record.bytes_received);
        }
        self.stats.finish(record);
    }
}
