//! The HTTP proxy that acts on `mesh-l7`'s decisions: the ingress gateway
//! (`mesh-agent gateway`) and the waypoint (`mesh-agent waypoint`), the same server and
//! forwarder with other listeners: a gateway serves its `Gateway` servers' ports, a
//! waypoint the connections its node agent hands over ([`waypoint`]), routed with the
//! VirtualServices bound to `mesh` and its AuthorizationPolicies enforced.
//!
//! Per request: [`proxy`] reads the request into `mesh_l7::Request`, asks the current
//! [`routes::Routes`] table to `decide`, then either answers locally ([`reply`]: no route,
//! fault abort, redirect, direct response, CORS preflight, no healthy upstream) or hands
//! the request to [`forward`] (pooled HTTP/1.1 and h2 clients, timeout, retries on other
//! endpoints, `Upgrade` pass-through). [`server`] accepts connections (HTTP/1.1 and h2c on
//! the same port; HTTPS through [`tls`]), [`metrics`] counts and logs each request, [`gateway`] chooses which
//! `Gateway` servers to listen for; a gateway's TCP, terminated-TLS and TLS passthrough
//! servers are byte streams, routed per connection by [`tcp`].
//!
//! ## How the gateway and the waypoint enter the mesh
//!
//! The gateway does not speak HBONE itself (yet). It runs as a process inside an enrolled
//! pod (its own workload, labelled `istio: ingressgateway`, with its own service account),
//! and connects to the chosen endpoint's pod address in plain HTTP. The node agent's
//! capture takes that connection like any other outbound connection of the pod and carries
//! it over HBONE (mutual TLS, the gateway pod's SPIFFE identity) to the destination's node,
//! so policy and telemetry on the destination see the gateway's identity. One consequence:
//! the agent accepts the connect locally, so an endpoint that refuses shows here as a
//! connection closed before any response byte; the forwarder reports that as a connect
//! failure (`UF`), which is what it is underneath. A waypoint's upstream connections go
//! the same way, with the waypoint's identity.

pub mod forward;
pub mod gateway;
pub mod metrics;
pub mod proxy;
pub mod reply;
pub mod routes;
pub mod server;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod waypoint;

/// The body type every response of the proxy carries (local replies, upstream bodies).
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// Errors of a body stream (hyper's, or none for local bodies).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
