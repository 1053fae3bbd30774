//! What the engine remembers across requests, kept by the caller beside (not inside) the
//! routing table, so a new snapshot's table keeps round-robin positions, active request
//! counts and ejections: everything is keyed by cluster name
//! (`outbound|<port>|<subset>|<host>`) and endpoint identity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::cluster::{Cluster, ClusterEndpoint};
use crate::outlier::{OutlierDetector, OutlierEvent};
use crate::retry::AttemptOutcome;

/// Shared by every request of a proxy (cheap to share behind an `Arc`).
#[derive(Debug, Default)]
pub struct LbState {
    clusters: RwLock<HashMap<Arc<str>, Arc<ClusterState>>>,
}

/// One cluster's counters.
#[derive(Debug, Default)]
pub struct ClusterState {
    next: AtomicUsize,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
pub(crate) struct Health {
    pub active: HashMap<Arc<str>, u32>,
    pub outlier: OutlierDetector,
}

impl ClusterState {
    /// The next round-robin position.
    pub(crate) fn next_position(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LbState {
    pub fn new() -> LbState {
        LbState::default()
    }

    /// The state of the cluster named `name` (created on first use).
    pub fn cluster(&self, name: &Arc<str>) -> Arc<ClusterState> {
        if let Some(s) = self
            .clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return s.clone();
        }
        self.clusters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_default()
            .clone()
    }

    /// Counts a request as active on `endpoint` until the returned guard drops
    /// (LEAST_REQUEST reads the counts).
    pub fn begin(&self, cluster: &Cluster, endpoint: &ClusterEndpoint) -> ActiveRequest {
        let state = self.cluster(&cluster.name);
        *state
            .health()
            .active
            .entry(endpoint.key.clone())
            .or_default() += 1;
        ActiveRequest {
            state,
            endpoint: endpoint.key.clone(),
        }
    }

    /// Reports how an attempt on `endpoint` ended, for outlier detection. `None` when the
    /// cluster has no `outlierDetection` or nothing changed.
    pub fn report(
        &self,
        cluster: &Cluster,
        endpoint: &ClusterEndpoint,
        outcome: AttemptOutcome,
        now: Instant,
    ) -> Option<OutlierEvent> {
        let config = cluster.policy.outlier?;
        let state = self.cluster(&cluster.name);
        let mut health = state.health();
        health.outlier.record(
            &config,
            &endpoint.key,
            outcome,
            cluster.endpoints.len(),
            now,
        )
    }

    /// Whether `endpoint` of `cluster` is ejected at `now`.
    pub fn is_ejected(&self, cluster: &Cluster, endpoint: &ClusterEndpoint, now: Instant) -> bool {
        self.cluster(&cluster.name)
            .health()
            .outlier
            .is_ejected(&endpoint.key, now)
    }

    /// Active requests on `endpoint`.
    pub fn active(&self, cluster: &Cluster, endpoint: &ClusterEndpoint) -> u32 {
        self.cluster(&cluster.name)
            .health()
            .active
            .get(&endpoint.key)
            .copied()
            .unwrap_or(0)
    }
}

/// An active request on one endpoint; dropping it ends the count.
#[derive(Debug)]
pub struct ActiveRequest {
    state: Arc<ClusterState>,
    endpoint: Arc<str>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let mut health = self.state.health();
        if let Some(n) = health.active.get_mut(&self.endpoint) {
            *n = n.saturating_sub(1);
        }
    }
}
