//! Built-in sample workloads (`mesh-agent app ...`): small, unmodified-looking applications
//! for the demo, the tests and the benchmarks. They know nothing about the mesh.
//!
//! `productpage`, `details`, `reviews` and `ratings` behave as Istio's Bookinfo images do
//! (the demo runs them for `docker.io/istio/examples-bookinfo-*`); `http` is the generic
//! workload every other image runs as; `trace-collector` receives the proxies' spans over
//! OTLP and lists them (the demo's and the tests' stand-in for Jaeger).
use std::{future::Future, net::SocketAddr};

use hyper::{Request, body::Incoming};

pub mod details;
pub mod echo;
pub mod grpc;
pub mod http;
pub mod page;
pub mod productpage;
pub mod ratings;
pub mod reviews;
pub mod serve;
pub mod tcp_client;
pub mod trace_collector;
pub mod upstream;
pub mod websocket;

/// Serves `handler` on every address (a pod's container ports); returns when one fails.
pub async fn serve_all<H, F>(listen: Vec<SocketAddr>, handler: H) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = serve::Reply> + Send + 'static,
{
    serve_all_with(listen, None, handler).await
}

/// [`serve_all`], behind TLS on every address when given an acceptor.
pub async fn serve_all_with<H, F>(
    listen: Vec<SocketAddr>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = serve::Reply> + Send + 'static,
{
    let mut servers = tokio::task::JoinSet::new();
    for addr in listen {
        servers.spawn(serve::serve_with(addr, tls.clone(), handler.clone()));
    }
    match servers.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(std::io::Error::other(e)),
        None => Err(std::io::Error::other("no address to listen on")),
    }
}
