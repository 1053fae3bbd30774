//! The L7 routing engine the waypoint and the ingress gateway share: Istio's
//! VirtualService, DestinationRule and AuthorizationPolicy applied to one HTTP request, as
//! plain functions of the request and a configuration snapshot. No sockets here: a proxy
//! builds a [`RouteTable`] per snapshot (keeping its previous one when
//! [`RouteTable::build`] refuses a snapshot), keeps one [`LbState`] for its lifetime, and
//! per request calls [`RouteTable::authorize`] and [`RouteTable::decide`], then acts on the
//! [`Decision`]: answer locally, or forward to the chosen endpoint with the rule's timeout,
//! retries, rewrites, header operations and mirrors, reporting each attempt's outcome with
//! [`LbState::report`] (outlier detection) and retrying with [`Cluster::choose`].
//!
//! Modules, one job each: [`request`] (what is read of a request), [`matcher`] (compiled
//! `match`), [`rule`] (compiled `http` rules), [`table`] (the index built from a snapshot),
//! [`route`] (the decisions), [`tcp`] (`tcp` routes), [`tls`] (a Gateway's TCP and TLS passthrough servers: `tcp` rules by port, `tls` rules by SNI), [`action`] (faults, rewrites, redirects, direct responses,
//! headers, mirrors), [`cors`], [`retry`] (`retryOn` and the retry decision), [`policy`]
//! (DestinationRule merge and cluster traffic policy), [`cluster`] (endpoints and load
//! balancing), [`outlier`] (ejection state machine), [`state`] (what persists across
//! requests and snapshots), [`authz`] (L7 AuthorizationPolicy), [`flags`] (Istio's
//! response flags), [`random`] (the injected random source).

#![forbid(unsafe_code)]

pub mod action;
pub mod authz;
pub mod cluster;
pub mod cors;
pub mod error;
pub mod flags;
pub mod matcher;
pub mod outlier;
pub mod policy;
pub mod random;
pub mod request;
pub mod retry;
pub mod route;
pub mod rule;
pub mod state;
pub mod table;
pub mod tcp;
pub mod tls;

pub use authz::{Allowed, Denied};
pub use cluster::{Cluster, ClusterEndpoint, EndpointChoice};
pub use error::L7ConfigError;
pub use flags::{RBAC_DENIED_BODY, ResponseFlag};
pub use random::Random;
pub use request::{Entry, Request, Source};
pub use retry::{AttemptOutcome, RetryCondition, RetryOn, RetryPolicy};
pub use route::{Decision, Forward, LocalReply, Route};
pub use state::LbState;
pub use table::{RouteTable, TableOptions};
pub use tcp::TcpRequest;
pub use tls::GatewayConnection;

#[cfg(test)]
mod tests;
