//! Moves bytes both ways between two TCP connections.
//!
//! * Plaintext hops use `splice(2)` through a pipe per direction: the bytes go socket →
//!   pipe → socket inside the kernel, never copied into the agent. (An encrypted hop will
//!   need the bytes in user space; that path gets its own copy loop.)
//! * End of stream on one side becomes a FIN (`shutdown(SHUT_WR)`) on the other, and the
//!   opposite direction keeps flowing: half-closed protocols work.
//! * A reset (or any error) on one side ends both directions; the caller then resets the
//!   other side ([`reset`]) so the peer sees the failure instead of a clean close.
use std::{
    io,
    net::Shutdown,
    os::fd::{AsFd, OwnedFd},
};

use nix::{
    fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice},
    unistd::pipe2,
};
use tokio::{io::Interest, net::TcpStream};

/// Pipe capacity per direction. 1 MiB lets a bulk transfer move large chunks per wake-up;
/// the kernel caps it at /proc/sys/fs/pipe-max-size (1 MiB by default) for non-root.
const PIPE_SIZE: i32 = 1024 * 1024;

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
    let (client, upstream) = (&*client, &*upstream);
    let pipes = match (Pipe::new(), Pipe::new()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Err((e, Transferred::default())),
    };
    let mut sent = 0u64;
    let mut received = 0u64;
    let outcome = {
        let forward = one_way(client, upstream, &pipes.0, &mut sent);
        let backward = one_way(upstream, client, &pipes.1, &mut received);
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

/// A kernel pipe used as the buffer of one direction.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Best effort: a smaller pipe still works, with more wake-ups.
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        Ok(Pipe { read, write })
    }
}

/// socket → pipe → socket until end of stream, then passes the half-close on.
async fn one_way(from: &TcpStream, to: &TcpStream, pipe: &Pipe, count: &mut u64) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing to read.
        let filled = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    &pipe.write,
                    None,
                    PIPE_SIZE as usize,
                    flags,
                )
                .map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if filled == 0 {
            return match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
                // The peer may already be gone; its own direction reports that.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                other => other,
            };
        }
        // Drain everything into the other socket before reading more.
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to.as_fd(), None, left, flags).map_err(io::Error::from)
            }) {
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        *count += filled as u64;
    }
}

/// Closes `stream` with a RST (SO_LINGER 0), so the peer sees the failure as a reset.
pub fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}
