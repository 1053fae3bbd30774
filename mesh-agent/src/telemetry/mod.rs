//! What the agent counts and logs. `connections` records every proxied connection through
//! a guard that reports on drop, so no early return forgets a count; `spans` exports the
//! waypoint's and the gateway's request spans over OTLP.
pub mod connections;
pub mod kernel_log;
pub mod metrics;
pub mod spans;
