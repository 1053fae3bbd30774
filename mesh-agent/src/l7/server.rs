//! The HTTP listeners: HTTP/1.1 (keep-alive, `Upgrade`) and h2c (prior knowledge) on the
//! same port, told apart by hyper's auto builder, optionally behind TLS; each request goes to
//! [`HttpProxy::handle`](super::proxy::HttpProxy::handle).

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::proxy::{Connection, HttpProxy};

/// Listens on `port` on every IPv4 and IPv6 address (two sockets; the IPv6 one is
/// IPv6-only so both can hold the port). A host without IPv6 gets the IPv4 socket only.
pub fn bind(port: u16) -> std::io::Result<Vec<TcpListener>> {
    let v4 = listener(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    let mut out = vec![v4];
    match listener(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Ok(v6) => out.push(v6),
        Err(e) => tracing::debug!(port, error = %e, "no IPv6 listener"),
    }
    Ok(out)
}

fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `listener` until the task is aborted; `port` is what requests
/// report as theirs (the Gateway server's port). With `tls`, each connection is a TLS
/// handshake first (HTTP/1.1 or h2 by ALPN).
pub async fn serve(
    listener: TcpListener,
    port: u16,
    proxy: Arc<HttpProxy>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a transient error: do not spin.
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let conn = Connection {
                peer,
                port,
                scheme,
                mesh: None,
            };
            match tls {
                None => serve_http(stream, conn, proxy).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_http(stream, conn, proxy).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                },
            }
        });
    }
}

/// Serves one client connection (HTTP/1.1 with upgrades, or h2c) until it ends.
pub async fn serve_http<I>(io: I, conn: Connection, proxy: Arc<HttpProxy>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, conn).await) }
    });
    let served = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}
