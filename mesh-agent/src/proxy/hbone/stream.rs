//! Moves bytes both ways between a plain TCP connection and one HBONE stream (an HTTP/2
//! CONNECT stream inside mutual TLS), with the same contract as the plaintext copy
//! (`proxy::copy`): end of stream on one side becomes a half-close on the other, an error
//! or a reset on either side ends both.
//!
//! Backpressure is HTTP/2 flow control in both directions: towards the tunnel, data is
//! only handed to h2 once the peer granted window for it (`reserve_capacity` /
//! `poll_capacity`), so a slow reader on the far side never makes the agent buffer more
//! than one read; from the tunnel, window is released only after the bytes were written
//! to the TCP socket, so a slow application stops the sender at its window.
use std::{
    future::{Future, poll_fn},
    io,
    net::Shutdown,
};

use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use tokio::net::TcpStream;

use crate::proxy::{copy::Transferred, error::ProxyError};

/// Why a copy over an HBONE stream ended early.
#[derive(Debug)]
pub enum CopyError {
    /// The peer refused the CONNECT (or the tunnel failed before answering).
    Refused(ProxyError),
    /// Either side failed or reset while copying.
    Io(io::Error),
}

impl From<CopyError> for ProxyError {
    fn from(e: CopyError) -> ProxyError {
        match e {
            CopyError::Refused(e) => e,
            CopyError::Io(e) => ProxyError::Copy(e),
        }
    }
}

/// Bytes read from the TCP side per h2 DATA hand-off. Large reads mean few wake-ups per
/// byte; h2 splits them into frames of the negotiated maximum size. The buffer is only
/// allocated once the socket is readable, so an idle connection holds none.
const READ_CHUNK: usize = 256 * 1024;

/// Copies until both directions have ended. On error, returns what was moved so far; the
/// caller resets the TCP side, and the h2 stream has been reset here.
///
/// `recv` resolves to the stream's receiving half: on the server it is there at once; on
/// the client it is the peer's answer to CONNECT, awaited while the first bytes already
/// flow the other way. A refusal fails the copy with that error.
pub async fn bidirectional<R>(
    tcp: &mut TcpStream,
    mut send: SendStream<Bytes>,
    recv: R,
) -> Result<Transferred, (CopyError, Transferred)>
where
    R: Future<Output = Result<RecvStream, ProxyError>>,
{
    let tcp = &*tcp;
    let mut sent = 0u64;
    let mut received = 0u64;
    let outcome = {
        let to_tunnel = async {
            tcp_to_h2(tcp, &mut send, &mut sent)
                .await
                .map_err(CopyError::Io)
        };
        let from_tunnel = async {
            let mut recv = recv.await.map_err(CopyError::Refused)?;
            h2_to_tcp(&mut recv, tcp, &mut received)
                .await
                .map_err(CopyError::Io)
        };
        tokio::pin!(to_tunnel, from_tunnel);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            if up_done && down_done {
                break Ok(());
            }
            let result = tokio::select! {
                r = &mut to_tunnel, if !up_done => { up_done = true; r }
                r = &mut from_tunnel, if !down_done => { down_done = true; r }
            };
            if let Err(e) = result {
                break Err(e);
            }
        }
    };
    let moved = Transferred { sent, received };
    match outcome {
        Ok(()) => Ok(moved),
        Err(e) => {
            send.send_reset(h2::Reason::CANCEL);
            Err((e, moved))
        }
    }
}

async fn tcp_to_h2(
    from: &TcpStream,
    to: &mut SendStream<Bytes>,
    count: &mut u64,
) -> io::Result<()> {
    let mut buf = BytesMut::new();
    loop {
        from.readable().await?;
        buf.reserve(READ_CHUNK);
        let n = match from.try_read_buf(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // Half-close: END_STREAM on an empty DATA frame.
            return to.send_data(Bytes::new(), true).map_err(h2_io);
        }
        let mut chunk = buf.split().freeze();
        while !chunk.is_empty() {
            to.reserve_capacity(chunk.len());
            let granted = match poll_fn(|cx| to.poll_capacity(cx)).await {
                Some(Ok(granted)) => granted,
                Some(Err(e)) => return Err(h2_io(e)),
                None => return Err(io::Error::new(io::ErrorKind::BrokenPipe, "tunnel closed")),
            };
            if granted == 0 {
                continue;
            }
            let part = chunk.split_to(granted.min(chunk.len()));
            to.send_data(part, false).map_err(h2_io)?;
        }
        *count += n as u64;
    }
}
async fn h2_to_tcp(from: &mut RecvStream, to: &TcpStream, count: &mut u64) -> io::Result<()> {
    while let Some(data) = from.data().await {
        let data = data.map_err(h2_io)?;
        let len = data.len();
        let mut written = 0;
        while written < len {
            to.writable().await?;
            match to.try_write(&data[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        // Only now may the peer send more: the socket took these bytes.
        let _ = from.flow_control().release_capacity(len);
        *count += len as u64;
    }
    // END_STREAM from the peer: pass the half-close on as a FIN.
    match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// An h2 error as an I/O error; a stream reset by the peer reads as a connection reset.
pub fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    if e.is_reset() {
        return io::Error::new(io::ErrorKind::ConnectionReset, e);
    }
    io::Error::other(e)
}
