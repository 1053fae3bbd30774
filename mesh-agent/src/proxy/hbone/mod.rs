//! HBONE: TCP connections carried as HTTP/2 `CONNECT` streams inside mutual TLS, between
//! node agents (and later waypoints and gateways). The wire format is Istio ambient's, so
//! this agent and ztunnel can talk to each other:
//!
//! | what | value |
//! |---|---|
//! | port | 15008 on the destination pod's address (the listener lives in the pod's netns) |
//! | TLS | 1.3 only, mutual; ALPN `h2` |
//! | certificates | one leaf per workload; its only SAN is the URI `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`; issued by the node agent of the workload's node from the mesh CA (`mesh-identity`) |
//! | client checks | the server's chain against the mesh roots, then its SPIFFE ID equals the destination workload's expected identity (from the configuration, or the enrolled pod on this node) |
//! | server checks | the client's chain (a certificate is required), its SPIFFE ID, then policy (`PeerAuthentication`, `AuthorizationPolicy`) for that principal |
//! | request | `:method CONNECT`, `:authority <destination ip>:<port>` (the workload's address and application port, not a VIP); no `:scheme`, no `:path` |
//! | response | `200` then the stream carries the bytes both ways; `END_STREAM` is a half-close (TCP FIN); `RST_STREAM` is a reset. Refusals: `401` (policy denied), `400` (bad authority or not this pod's address), `503` (the application refused or is unreachable) |
//!
//! Tunnels are pooled (`proxy::pool`): many streams share one TLS connection per (source
//! identity, destination identity, destination address).
pub mod client;
pub mod server;
pub mod stream;

use std::time::Duration;

/// ALPN protocol of HBONE.
pub const ALPN_H2: &[u8] = b"h2";

/// HTTP/2 settings shared by both ends, chosen for bulk throughput on a LAN: a per-stream
/// window of 4 MiB covers the bandwidth-delay product of a few Gbit/s at sub-millisecond
/// RTTs, the connection window lets four such streams run at once, and large frames mean
/// fewer frame headers and wake-ups per byte (TLS still cuts records at 16 KiB).
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
pub const MAX_FRAME_SIZE: u32 = 256 * 1024;
/// Streams one tunnel carries at once before the pool opens another.
pub const MAX_STREAMS_PER_TUNNEL: u32 = 100;
/// How long a TCP connect plus TLS and HTTP/2 handshakes may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
