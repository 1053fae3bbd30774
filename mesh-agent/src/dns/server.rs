//! The DNS listeners inside each enrolled pod's namespace: UDP and TCP on 127.0.0.1:15053
//! (and [::1]:15053 where the pod has IPv6), created through the pod's `PodSockets` thread
//! like the proxy's listeners. Each query is answered by its own task, so a slow upstream
//! never holds up the names the mesh answers itself.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use mesh_common::DNS_PORT;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};

use super::{PodDns, Transport};
use crate::pod::PodSockets;

/// Queries of one pod being answered at once; beyond that, UDP queries are dropped (the
/// client retries) rather than queued without bound.
const MAX_IN_FLIGHT: usize = 1024;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// One pod's DNS sockets, opened before its capture programs are attached.
pub struct DnsListeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

impl DnsListeners {
    /// IPv4 is required; IPv6 only where the namespace has `::1`.
    pub async fn open(sockets: &PodSockets) -> std::io::Result<Self> {
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT);
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), DNS_PORT);
        let mut udp = vec![sockets.udp_bind(v4).await?];
        let mut tcp = vec![sockets.listen(v4, 1024).await?];
        udp.extend(sockets.udp_bind(v6).await.ok());
        tcp.extend(sockets.listen(v6, 1024).await.ok());
        Ok(DnsListeners { udp, tcp })
    }

    /// Starts serving; the tasks end when aborted (pod removed).
    pub fn spawn(self, pod: Arc<PodDns>) -> Vec<tokio::task::JoinHandle<()>> {
        let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tasks = Vec::new();
        for socket in self.udp {
            tasks.push(tokio::spawn(serve_udp(
                Arc::new(socket),
                pod.clone(),
                limit.clone(),
            )));
        }
        for listener in self.tcp {
            tasks.push(tokio::spawn(serve_tcp(listener, pod.clone())));
        }
        tasks
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, pod: Arc<PodDns>, limit: Arc<Semaphore>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors of earlier sends surface here (ECONNREFUSED): keep serving.
                tracing::debug!(pod = %pod.pod, error = %e, "dns udp receive failed");
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(pod = %pod.pod, "dns: too many queries in flight; dropped one");
            continue;
        };
        let packet = buf[..n].to_vec();
        let (socket, pod) = (socket.clone(), pod.clone());
        tokio::spawn(async move {
            if let Some(answer) = pod.handle(&packet, Transport::Udp).await
                && let Err(e) = socket.send_to(&answer, client).await
            {
                tracing::debug!(pod = %pod.pod, %client, error = %e, "dns answer not sent");
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, pod: Arc<PodDns>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Some((table, cookie)) = &pod.redirected_tcp {
                    // Not needed (the query itself says what it wants); only freed.
                    let _ = table.take(*cookie, peer);
                }
                tokio::spawn(serve_tcp_client(stream, pod.clone()));
            }
            Err(e) => {
                tracing::warn!(pod = %pod.pod, error = %e, "dns accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// RFC 7766 framing: a two-byte length before each message; several queries may share a
/// connection. A malformed message ends it after its FORMERR.
async fn serve_tcp_client(mut stream: TcpStream, pod: Arc<PodDns>) {
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            let mut packet = vec![0u8; usize::from(len)];
            stream.read_exact(&mut packet).await?;
            Ok::<_, std::io::Error>(packet)
        };
        let packet = match tokio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(packet)) => packet,
            Ok(Err(_)) | Err(_) => return,
        };
        let Some(answer) = pod.handle(&packet, Transport::Tcp).await else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
