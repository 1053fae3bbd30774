//! Moves bytes both ways between two TCP connections.
//!
//! * End of stream on one side becomes a FIN (`shutdown(SHUT_WR)`) on the other, and the
//!   opposite direction keeps flowing: half-closed protocols work.
//! * A reset (or any error) on one side ends both directions; the caller then resets the
//!   other side ([`reset`]) so the peer sees the failure instead of a clean close.
use std::io;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// Per-direction buffer. Large enough that a bulk transfer needs few wake-ups.
const BUFFER_SIZE: usize = 256 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes from the first stream (the client) to the second (the destination).
    pub sent: u64,
    /// Bytes from the second stream back to the first.
    pub received: u64,
}

/// Copies until both directions have ended. On error, returns what was moved so far.
pub async fn bidirectional(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
) -> Result<Transferred, (io::Error, Transferred)> {
    let (mut client_read, mut client_write) = client.split();
    let (mut upstream_read, mut upstream_write) = upstream.split();
    let mut sent = 0u64;
    let mut received = 0u64;
    let outcome = {
        let forward = one_way(&mut client_read, &mut upstream_write, &mut sent);
        let backward = one_way(&mut upstream_read, &mut client_write, &mut received);
        tokio::pin!(forward, backward);
        let (mut forward_done, mut backward_done) = (false, false);
        loop {
            if forward_done && backward_done {
                break Ok(());
            }
            let result = tokio::select! {
                r = &mut forward, if !forward_done => { forward_done = true; r }
                r = &mut backward, if !backward_done => { backward_done = true; r }
            };
            if let Err(e) = result {
                break Err(e);
            }
        }
    };
    let moved = Transferred { sent, received };
    outcome.map(|()| moved).map_err(|e| (e, moved))
}

async fn one_way<R, W>(from: &mut R, to: &mut W, count: &mut u64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER_SIZE];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction keeps going.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        *count += n as u64;
    }
}

/// Closes `stream` with a RST (SO_LINGER 0), so the peer sees the failure as a reset.
pub fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}
