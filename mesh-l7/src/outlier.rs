//! `outlierDetection` as a pure state machine with an explicit clock: consecutive 5xx or
//! gateway errors eject an endpoint for `baseEjectionTime` × the number of times it was
//! ejected, never more than `maxEjectionPercent` of the endpoints (but always at least one,
//! as Envoy does). An ejected endpoint comes back when its time is up (Envoy checks at each
//! `interval`; here the exact time counts, which only makes tests sharper).
//!
//! Local failures (connect failure, reset, timeout) count as a 503, Envoy's behaviour
//! without `splitExternalLocalOriginErrors`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_config::istio::OutlierDetection;

use crate::retry::AttemptOutcome;

/// The settings, with Istio's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 0: off.
    pub consecutive_5xx: u32,
    /// 0: off.
    pub consecutive_gateway: u32,
    pub base_ejection_time: Duration,
    /// Longest ejection (Envoy's `max_ejection_time`, 300 s).
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl OutlierConfig {
    pub fn from_istio(o: &OutlierDetection) -> OutlierConfig {
        // The deprecated `consecutiveErrors` meant gateway errors (Istio maps it so).
        let (five_xx, gateway) = match o.consecutive_errors {
            Some(n) if n > 0 => (0, u32::try_from(n).unwrap_or(0)),
            _ => (
                o.consecutive_5xx_errors.unwrap_or(5),
                o.consecutive_gateway_errors.unwrap_or(0),
            ),
        };
        OutlierConfig {
            consecutive_5xx: five_xx,
            consecutive_gateway: gateway,
            base_ejection_time: o
                .base_ejection_time
                .map_or(Duration::from_secs(30), |d| d.0),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: o
                .max_ejection_percent
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(10)
                .min(100),
        }
    }
}

/// What became of an endpoint after a reported outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierEvent {
    /// Ejected until this instant.
    Ejected { until: Instant },
    /// It reached the threshold, but `maxEjectionPercent` endpoints are out already.
    EjectionCapped,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

/// The health of the endpoints of one cluster, keyed by endpoint identity.
#[derive(Debug, Clone, Default)]
pub struct OutlierDetector {
    records: HashMap<Arc<str>, Record>,
}

impl OutlierDetector {
    /// Records one attempt's outcome on `endpoint` of a cluster of `endpoints` endpoints.
    pub fn record(
        &mut self,
        config: &OutlierConfig,
        endpoint: &Arc<str>,
        outcome: AttemptOutcome,
        endpoints: usize,
        now: Instant,
    ) -> Option<OutlierEvent> {
        let ejected_now = self.ejected(now);
        let record = self.records.entry(endpoint.clone()).or_default();
        if record.ejected_until.is_some_and(|t| t <= now) {
            record.ejected_until = None;
        }
        let status = match outcome {
            AttemptOutcome::Response { status, .. } => status,
            AttemptOutcome::ConnectFailure
            | AttemptOutcome::Reset
            | AttemptOutcome::RefusedStream
            | AttemptOutcome::PerTryTimeout => 503,
        };
        if !(500..=599).contains(&status) {
            record.consecutive_5xx = 0;
            record.consecutive_gateway = 0;
            return None;
        }
        record.consecutive_5xx += 1;
        if matches!(status, 502..=504) {
            record.consecutive_gateway += 1;
        } else {
            record.consecutive_gateway = 0;
        }
        let tripped = (config.consecutive_5xx > 0
            && record.consecutive_5xx >= config.consecutive_5xx)
            || (config.consecutive_gateway > 0
                && record.consecutive_gateway >= config.consecutive_gateway);
        if !tripped || record.ejected_until.is_some() {
            return None;
        }
        let cap = (endpoints * config.max_ejection_percent as usize / 100).max(1);
        if ejected_now >= cap {
            return Some(OutlierEvent::EjectionCapped);
        }
        record.times_ejected += 1;
        let time = config
            .base_ejection_time
            .saturating_mul(record.times_ejected)
            .min(config.max_ejection_time.max(config.base_ejection_time));
        let until = now + time;
        record.ejected_until = Some(until);
        record.consecutive_5xx = 0;
        record.consecutive_gateway = 0;
        Some(OutlierEvent::Ejected { until })
    }

    pub fn is_ejected(&self, endpoint: &str, now: Instant) -> bool {
        self.records
            .get(endpoint)
            .and_then(|r| r.ejected_until)
            .is_some_and(|t| t > now)
    }

    /// How many endpoints are ejected at `now`.
    pub fn ejected(&self, now: Instant) -> usize {
        self.records
            .values()
            .filter(|r| r.ejected_until.is_some_and(|t| t > now))
            .count()
    }
}
