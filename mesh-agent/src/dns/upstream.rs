//! Forwarding to the node's resolvers: names the mesh does not own are asked upstream
//! (UDP, then TCP when the answer was truncated), from the agent's own namespace, and the
//! answers are kept in a bounded cache as long as their TTLs allow. NXDOMAIN and SERVFAIL
//! come back as they are; only when no upstream answers at all does the caller get an
//! error (and the client SERVFAIL).
use std::{
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use hickory_proto::op::{Edns, Message, MessageType, Query};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use super::cache::{Cache, Key};

/// How long one upstream gets before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The UDP payload the agent advertises upstream (the DNS flag day's safe size).
const EDNS_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {upstream}: no answer within {UPSTREAM_TIMEOUT:?}")]
    Timeout { upstream: SocketAddr },
    #[error("upstream {upstream}: malformed answer: {reason}")]
    Malformed {
        upstream: SocketAddr,
        reason: String,
    },
}

/// An upstream answer and where it came from.
pub struct Forwarded {
    pub response: Message,
    /// Served from the cache, no upstream asked.
    pub cached: bool,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, cache_entries: usize) -> Self {
        Forwarder {
            upstreams,
            cache: Mutex::new(Cache::new(cache_entries)),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Entries in the cache now.
    pub fn cache_len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to `query` (one question) from the cache or from the first upstream that
    /// answers. `on_upstream` is called for each upstream asked (metrics).
    pub async fn forward(
        &self,
        query: &Query,
        recursion_desired: bool,
        mut on_upstream: impl FnMut(),
    ) -> Result<Forwarded, UpstreamError> {
        let key: Key = (
            query
                .name()
                .to_lowercase()
                .to_ascii()
                .trim_end_matches('.')
                .to_string(),
            u16::from(query.query_type()),
            u16::from(query.query_class()),
        );
        if let Some(response) = self.lock().get(&key, Instant::now()) {
            return Ok(Forwarded {
                response,
                cached: true,
            });
        }
        // A fresh random id: answers are matched on it, not on the client's.
        let mut request = Message::query();
        request.metadata.recursion_desired = recursion_desired;
        request.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        request.set_edns(edns);
        let wire = request.to_vec().map_err(|e| UpstreamError::Malformed {
            upstream: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: e.to_string(),
        })?;
        let mut last = UpstreamError::NoUpstream;
        for &upstream in &self.upstreams {
            on_upstream();
            match ask(upstream, &wire, &request).await {
                Ok(response) => {
                    self.lock().insert(key, &response, Instant::now());
                    return Ok(Forwarded {
                        response,
                        cached: false,
                    });
                }
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "upstream resolver failed; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

/// One exchange with one upstream: UDP, and TCP again when the UDP answer was truncated.
async fn ask(
    upstream: SocketAddr,
    wire: &[u8],
    request: &Message,
) -> Result<Message, UpstreamError> {
    let exchange = async {
        let response = ask_udp(upstream, wire, request).await?;
        if response.metadata.truncation {
            return ask_tcp(upstream, wire, request).await;
        }
        Ok(response)
    };
    match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamError::Timeout { upstream }),
    }
}

async fn ask_udp(
    upstream: SocketAddr,
    wire: &[u8],
    request: &Message,
) -> Result<Message, UpstreamError> {
    let io = |source| UpstreamError::Io { upstream, source };
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(wire).await.map_err(io)?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        // Anything that is not the answer to this question (late answers, spoofs) is
        // ignored; the timeout bounds the wait.
        if let Ok(response) = Message::from_vec(&buf[..n])
            && answers(&response, request)
        {
            return Ok(response);
        }
    }
}

async fn ask_tcp(
    upstream: SocketAddr,
    wire: &[u8],
    request: &Message,
) -> Result<Message, UpstreamError> {
    let io = |source| UpstreamError::Io { upstream, source };
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let len = u16::try_from(wire.len()).map_err(|_| UpstreamError::Malformed {
        upstream,
        reason: "query longer than 65535 bytes".into(),
    })?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let response = Message::from_vec(&buf).map_err(|e| UpstreamError::Malformed {
        upstream,
        reason: e.to_string(),
    })?;
    if !answers(&response, request) {
        return Err(UpstreamError::Malformed {
            upstream,
            reason: "the answer is not for the question asked".into(),
        });
    }
    Ok(response)
}

fn answers(response: &Message, request: &Message) -> bool {
    response.metadata.message_type == MessageType::Response
        && response.metadata.id == request.metadata.id
        && response.queries == request.queries
}
