//! What the agent counts and logs. `connections` records every proxied connection through
//! a guard that reports on drop, so no early return forgets a count; `spans` exports the
//! waypoint's and the gateway's request spans over OTLP.
pub mod connections;
pub mod kernel_log;
pub mod metrics;
pub mod spans;

/// An access record's `start_time`: RFC 3339 in UTC, `-` for a time before the epoch.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(time).map_or_else(|_| "-".to_string(), |t| t.to_string())
}
