//! `mesh-agent app tcp-client --connect ADDR --bytes N`: a plain TCP client that sends N
//! bytes of a known pattern, half-closes, reads everything the echo server sends back,
//! checks it byte for byte and prints one JSON line with what happened.
use std::{net::SocketAddr, time::Instant};

use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(Serialize)]
pub struct Outcome {
    pub local: String,
    pub peer: String,
    pub sent: u64,
    pub received: u64,
    /// The echo matched what was sent, and arrived in full.
    pub intact: bool,
    pub millis: u128,
}

/// Byte `i` of the test pattern: not periodic at any power of two, so a dropped or
/// duplicated chunk shows.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8 ^ (i % 251) as u8
}

/// How the client spreads its bytes over time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pacing {
    /// Bytes per second while sending; 0 sends as fast as the connection takes them. A
    /// paced transfer keeps bytes flowing for as long as a test needs something to happen
    /// in the middle of it.
    pub rate: u64,
    /// After sending, the connection stays open (idle) this long before half-closing: a
    /// long-lived connection for tests that change things while it is established.
    pub hold: std::time::Duration,
}

pub async fn run(connect: SocketAddr, bytes: u64, pacing: Pacing) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let stream = TcpStream::connect(connect).await?;
    let local = stream.local_addr()?.to_string();
    let peer = stream.peer_addr()?.to_string();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            if pacing.rate > 0 {
                let due = std::time::Duration::from_secs_f64(sent as f64 / pacing.rate as f64);
                tokio::time::sleep_until((started + due).into()).await;
            }
            let n = buf.len().min((bytes - sent) as usize);
            for (j, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern_byte(sent + j as u64);
            }
            write.write_all(&buf[..n]).await?;
            sent += n as u64;
        }
        tokio::time::sleep(pacing.hold).await;
        // Half-close: the server sees EOF but can still answer.
        write.shutdown().await?;
        Ok::<_, std::io::Error>(sent)
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    let mut intact = true;
    loop {
        let n = read.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if intact {
            intact = buf[..n]
                .iter()
                .enumerate()
                .all(|(j, b)| *b == pattern_byte(received + j as u64));
        }
        received += n as u64;
    }
    let sent = writer.await??;
    Ok(Outcome {
        local,
        peer,
        sent,
        received,
        intact: intact && received == sent,
        millis: started.elapsed().as_millis(),
    })
}
