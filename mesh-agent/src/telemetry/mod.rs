//! What the agent counts and logs. `connections` records every proxied connection through
//! a guard that reports on drop, so no early return forgets a count.
pub mod connections;
pub mod kernel_log;
pub mod metrics;
