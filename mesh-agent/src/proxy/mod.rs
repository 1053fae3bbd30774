//! The data path: `outbound` (15001, captured connects), `inbound` (15006, steered SYNs),
//! and `copy` (moving bytes both ways with half-close and reset propagation).
pub mod copy;
pub mod inbound;
pub mod outbound;

use std::sync::Arc;

use crate::{pod::PodSockets, redirect::OrigDstTable, telemetry::connections::ConnectionStats};

/// What a pod's accept loops need.
pub struct PodProxy {
    /// `namespace/name`.
    pub pod: String,
    pub sockets: PodSockets,
    /// Kernel id of the pod's network namespace (part of the original-destination key).
    pub netns_cookie: u64,
    pub pod_ips: Vec<std::net::IpAddr>,
    pub orig_dst: Arc<OrigDstTable>,
    pub stats: Arc<ConnectionStats>,
}
