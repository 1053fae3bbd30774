//! The HTTP server loop the sample apps share: HTTP/1.1 and h2c (prior knowledge) on one
//! listener, one task per connection, upgrades allowed (the generic workload's WebSocket
//! echo), optionally behind TLS (`app http --tls-cert/--tls-key`). Each app is then only a
//! function from a request to a reply.
use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub type Reply = Response<Full<Bytes>>;

/// Binds `listen` and serves `handler` on it until the task is dropped.
pub async fn serve<H, F>(listen: SocketAddr, handler: H) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    serve_with(listen, None, handler).await
}

/// [`serve`], behind TLS when given an acceptor (HTTP/1.1 or h2 by ALPN).
pub async fn serve_with<H, F>(
    listen: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(%listen, tls = tls.is_some(), "listening");
    serve_listener(listener, tls, handler).await
}

/// Serves `handler` on a listener made elsewhere (in another network namespace, say).
pub async fn serve_on<H, F>(listener: TcpListener, handler: H) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    serve_listener(listener, None, handler).await
}

async fn serve_listener<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, peer, handler).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => connection(stream, peer, handler).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                },
            }
        });
    }
}

async fn connection<I, H, F>(io: I, peer: SocketAddr, handler: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let service = service_fn(move |req| {
        let reply = handler(req, peer);
        async move { Ok::<_, Infallible>(reply.await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A reply with this status, content type and body.
pub fn reply(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// A JSON reply.
pub fn json(status: u16, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", format!("{value}\n"))
}
