//! The server end of HBONE: mutual TLS as the destination workload, then HTTP/2; the
//! caller (`proxy::inbound`) handles each CONNECT stream.
use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use mesh_identity::SpiffeId;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{
    CONNECT_TIMEOUT, CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_STREAMS_PER_TUNNEL, STREAM_WINDOW,
};
use crate::proxy::error::ProxyError;

pub type Connection = h2::server::Connection<TlsStream<TcpStream>, Bytes>;

/// TLS (client certificate required and verified by `tls`'s verifier) and the HTTP/2
/// handshake; returns the connection and the client's identity.
pub async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> Result<(Connection, SpiffeId), ProxyError> {
    let _ = tcp.set_nodelay(true);
    let handshakes = async {
        let tls_stream = tokio_rustls::TlsAcceptor::from(tls)
            .accept(tcp)
            .await
            .map_err(|source| ProxyError::Tls { peer, source })?;
        let identity = mesh_identity::peer_identity(tls_stream.get_ref().1.peer_certificates())?;
        let connection = h2_settings()
            .handshake::<_, Bytes>(tls_stream)
            .await
            .map_err(|source| ProxyError::Hbone { peer, source })?;
        Ok((connection, identity))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, handshakes).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Tls {
            peer,
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"),
        }),
    }
}

/// The HTTP/2 settings the server end offers (windows and frame size tuned for bulk
/// transfer, streams per tunnel bounded).
pub fn h2_settings() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(MAX_STREAMS_PER_TUNNEL);
    builder
}

/// The CONNECT target of one stream: `:authority` as `ip:port`; anything else is a 400.
pub fn connect_target<B>(request: &http::Request<B>) -> Result<SocketAddr, ProxyError> {
    if request.method() != http::Method::CONNECT {
        return Err(ProxyError::BadRequest(format!(
            "method {} (HBONE takes CONNECT)",
            request.method()
        )));
    }
    let authority = request
        .uri()
        .authority()
        .ok_or_else(|| ProxyError::BadRequest("CONNECT without :authority".into()))?;
    authority
        .as_str()
        .parse()
        .map_err(|_| ProxyError::BadRequest(format!("authority {authority} is not an ip:port")))
}
