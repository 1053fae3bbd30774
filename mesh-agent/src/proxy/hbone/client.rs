//! The client end of HBONE: one tunnel (TCP, mutual TLS, HTTP/2) to a peer's 15008, and
//! CONNECT streams over it. Pooling is `proxy::pool`'s job.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use h2::{RecvStream, SendStream, client::SendRequest};
use mesh_identity::SpiffeId;
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};

use super::{CONNECT_TIMEOUT, CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};
use crate::proxy::{error::ProxyError, pool::OpenTunnel};

/// At most this much of the client's first flight rides behind the CONNECT before the
/// answer (well inside the stream's initial window).
const FIRST_FLIGHT: usize = 16 * 1024;

/// Opens a tunnel: connects `socket` (created in the source pod's namespace, so the
/// packets carry the pod's address) to `peer`, runs mutual TLS with `tls` (the source
/// workload's certificate), insists the peer is `expected`, and starts HTTP/2. The
/// connection's driver runs on its own task until the tunnel closes.
pub async fn open_tunnel(
    socket: TcpSocket,
    peer: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    expected: &SpiffeId,
) -> Result<OpenTunnel, ProxyError> {
    let handshakes = async {
        let tcp = socket
            .connect(peer)
            .await
            .map_err(|source| ProxyError::Connect {
                target: peer,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        // Identities are SPIFFE URIs, not names: the verifier ignores the server name and
        // checks the URI SAN; the IP form keeps rustls from sending SNI.
        let name = ServerName::IpAddress(peer.ip().into());
        let tls_stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|source| ProxyError::Tls { peer, source })?;
        let actual = mesh_identity::peer_identity(tls_stream.get_ref().1.peer_certificates())?;
        if &actual != expected {
            return Err(ProxyError::WrongIdentity {
                peer,
                ids: Box::new((expected.clone(), actual)),
            });
        }
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .enable_push(false)
            .handshake::<_, Bytes>(tls_stream)
            .await
            .map_err(|source| ProxyError::Hbone { peer, source })?;
        let closed = Arc::new(AtomicBool::new(false));
        let driver_closed = closed.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HBONE tunnel ended with an error");
            }
            driver_closed.store(true, Ordering::Relaxed);
        });
        Ok(OpenTunnel { sender, closed })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, handshakes).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Connect {
            target: peer,
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel set-up timed out"),
        }),
    }
}

/// Asks the tunnel for a stream to `target` (the destination workload's address and port).
/// Returns as soon as the request is sent: the client's first bytes go out right behind
/// the CONNECT instead of waiting a round trip for the answer (the peer buffers them
/// within the stream's window until it has connected to the application). The answer is
/// awaited by [`Pending::response`].
pub async fn connect_stream(
    sender: SendRequest<Bytes>,
    peer: SocketAddr,
    target: SocketAddr,
) -> Result<(SendStream<Bytes>, Pending), ProxyError> {
    let hbone = |source| ProxyError::Hbone { peer, source };
    let request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(target.to_string())
        .body(())
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    let mut sender = sender.ready().await.map_err(hbone)?;
    let (response, send) = sender.send_request(request, false).map_err(hbone)?;
    Ok((
        send,
        Pending {
            response,
            peer,
            target,
        },
    ))
}

/// The peer's answer to a CONNECT, not yet received.
pub struct Pending {
    response: h2::client::ResponseFuture,
    peer: SocketAddr,
    target: SocketAddr,
}

impl Pending {
    /// The stream's receiving half once the peer answered 200; its refusal otherwise.
    pub async fn response(self) -> Result<RecvStream, ProxyError> {
        let Pending {
            response,
            peer,
            target,
        } = self;
        let response = response
            .await
            .map_err(|source| ProxyError::Hbone { peer, source })?;
        if response.status() != http::StatusCode::OK {
            return Err(ProxyError::TunnelRefused {
                peer,
                target,
                status: response.status().as_u16(),
            });
        }
        Ok(response.into_body())
    }
}

impl Pending {
    /// Sends the client's first bytes behind the CONNECT while the answer is on its way,
    /// without taking them from the client's socket (`MSG_PEEK`): if the peer refuses, they
    /// are still there for another endpoint. Once the peer accepted, they are consumed
    /// (they already went) and the receiving half comes back with their count.
    pub async fn first_flight(
        self,
        client: &TcpStream,
        send: &mut SendStream<Bytes>,
    ) -> Result<(RecvStream, u64), ProxyError> {
        let response = self.response();
        tokio::pin!(response);
        tokio::select! {
            biased;
            answered = &mut response => return answered.map(|recv| (recv, 0)),
            readable = client.readable() => readable.map_err(ProxyError::Copy)?,
        }
        let mut flight = vec![0u8; FIRST_FLIGHT];
        let peeked = client.peek(&mut flight).await.map_err(ProxyError::Copy)?;
        // A peer that refuses may close the stream before the flight goes out: its answer,
        // awaited below, then says why (a refusal another endpoint may not give).
        let mut unsent = None;
        if peeked > 0 {
            flight.truncate(peeked);
            unsent = send.send_data(Bytes::from(flight), false).err();
        }
        let recv = response.await?;
        if let Some(e) = unsent {
            return Err(ProxyError::Copy(super::stream::h2_io(e)));
        }
        discard(client, peeked).await?;
        Ok((recv, peeked as u64))
    }
}

/// Reads and drops `len` bytes that are already in the socket's receive queue.
async fn discard(client: &TcpStream, mut len: usize) -> Result<(), ProxyError> {
    let mut scratch = [0u8; 8192];
    while len > 0 {
        let want = len.min(scratch.len());
        client.readable().await.map_err(ProxyError::Copy)?;
        match client.try_read(&mut scratch[..want]) {
            Ok(0) => {
                return Err(ProxyError::Copy(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => len -= n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(ProxyError::Copy(e)),
        }
    }
    Ok(())
}
