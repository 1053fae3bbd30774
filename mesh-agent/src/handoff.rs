//! The hand-off between the node agent and a waypoint process in the same pod (Istio's
//! "sandwich" binding of a waypoint, `PROXY/15088`): the agent terminates HBONE (mutual
//! TLS as the waypoint's identity) and, for each CONNECT stream addressed to a Service the
//! waypoint serves, opens a plain TCP connection to the waypoint on
//! 127.0.0.1:[`WAYPOINT_HANDOFF_PORT`] inside the pod and writes one PROXY protocol v2
//! header before the client's bytes:
//!
//! | field | value |
//! |---|---|
//! | command | `PROXY`, transport `STREAM` |
//! | source | the client's address as the agent saw it (its pod's address) |
//! | destination | the CONNECT target: the Service's VIP and port |
//! | TLV `0xD0` | the client's SPIFFE ID, verified by the agent's TLS (`spiffe://td/ns/x/sa/y`) |
//!
//! So the waypoint learns which Service was asked for and who asked, without speaking TLS
//! itself. The listener is on loopback inside the pod: only the agent (through the pod's
//! namespace) and the waypoint's own pod can reach it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh_identity::SpiffeId;
use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use mesh_common::WAYPOINT_HANDOFF_PORT;

/// TLV type carrying the client's SPIFFE ID (the type ztunnel uses for the peer identity).
pub const PEER_IDENTITY_TLV: u8 = 0xD0;
/// The largest header accepted: addresses plus an identity well within URI limits.
pub const MAX_HEADER: usize = 1024;
/// How long the waypoint waits for the header before dropping the connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the agent tells the waypoint about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub identity: Option<SpiffeId>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("no PROXY header within {HEADER_TIMEOUT:?}")]
    Timeout,
    #[error("bad PROXY header: {0}")]
    Parse(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("PROXY header without IP addresses")]
    NoAddresses,
    #[error("peer identity TLV is not a SPIFFE ID: {0}")]
    Identity(String),
}

/// The header for a connection from `source` to `destination` by `identity`. Mixed
/// families are sent as IPv6 (IPv4-mapped), the only form that holds both.
pub fn encode(
    source: SocketAddr,
    destination: SocketAddr,
    identity: &SpiffeId,
) -> std::io::Result<Vec<u8>> {
    let (source, destination) = if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (as_v6(source), as_v6(destination))
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (source, destination),
    )
    .write_tlv(PEER_IDENTITY_TLV, identity.to_string().as_bytes())?
    .build()
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

/// Reads exactly one header from the start of `stream` (nothing after it), within
/// [`HEADER_TIMEOUT`].
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Handoff, HandoffError> {
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(stream)).await {
        Ok(result) => result,
        Err(_) => Err(HandoffError::Timeout),
    }
}

async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Handoff, HandoffError> {
    // Signature (12), version/command, family/protocol, length (2): then `length` more.
    let mut buf = vec![0u8; 16];
    stream.read_exact(&mut buf).await?;
    if !buf.starts_with(v2::PROTOCOL_PREFIX) {
        return Err(HandoffError::Parse("not a PROXY protocol v2 header".into()));
    }
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + length > MAX_HEADER {
        return Err(HandoffError::TooLong);
    }
    buf.resize(16 + length, 0);
    stream.read_exact(&mut buf[16..]).await?;
    decode(&buf)
}

/// Parses a complete header.
pub fn decode(bytes: &[u8]) -> Result<Handoff, HandoffError> {
    let header = v2::Header::try_from(bytes).map_err(|e| HandoffError::Parse(e.to_string()))?;
    let (source, destination) = match header.addresses {
        v2::Addresses::IPv4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        v2::Addresses::IPv6(a) => (
            unmap(SocketAddr::from((a.source_address, a.source_port))),
            unmap(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        _ => return Err(HandoffError::NoAddresses),
    };
    let identity = header
        .tlvs()
        .filter_map(Result::ok)
        .find(|tlv| tlv.kind == PEER_IDENTITY_TLV)
        .map(|tlv| {
            let text = String::from_utf8_lossy(&tlv.value).into_owned();
            text.parse::<SpiffeId>()
                .map_err(|_| HandoffError::Identity(text))
        })
        .transpose()?;
    Ok(Handoff {
        source,
        destination,
        identity,
    })
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SpiffeId {
        SpiffeId::new("cluster.local", "default", "productpage")
    }

    #[tokio::test]
    async fn a_header_round_trips_with_the_identity_and_leaves_the_payload() {
        let src: SocketAddr = "198.18.1.10:40000".parse().unwrap();
        let dst: SocketAddr = "198.19.0.10:9080".parse().unwrap();
        let mut bytes = encode(src, dst, &client()).unwrap();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut reader = &bytes[..];
        let handoff = read(&mut reader).await.unwrap();
        assert_eq!(
            handoff,
            Handoff {
                source: src,
                destination: dst,
                identity: Some(client()),
            }
        );
        assert_eq!(reader, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn mixed_families_travel_as_ipv6_and_come_back_as_sent() {
        let src: SocketAddr = "[fd00::1:10]:40000".parse().unwrap();
        let dst: SocketAddr = "198.19.0.10:9080".parse().unwrap();
        let bytes = encode(src, dst, &client()).unwrap();
        let handoff = read(&mut &bytes[..]).await.unwrap();
        assert_eq!((handoff.source, handoff.destination), (src, dst));
    }

    #[tokio::test]
    async fn garbage_oversized_and_silent_peers_are_refused() {
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            read(&mut garbage).await,
            Err(HandoffError::Parse(_))
        ));
        let mut long = encode(
            "198.18.1.10:1".parse().unwrap(),
            "198.19.0.10:80".parse().unwrap(),
            &client(),
        )
        .unwrap();
        long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            read(&mut &long[..]).await,
            Err(HandoffError::TooLong)
        ));
        let bad_id = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "198.18.1.10:1".parse::<SocketAddr>().unwrap(),
                "198.19.0.10:80".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(PEER_IDENTITY_TLV, b"not a spiffe id")
        .unwrap()
        .build()
        .unwrap();
        assert!(matches!(
            read(&mut &bad_id[..]).await,
            Err(HandoffError::Identity(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_sends_nothing_times_out() {
        let (_keep, mut silent) = tokio::io::duplex(64);
        assert!(matches!(
            read(&mut silent).await,
            Err(HandoffError::Timeout)
        ));
    }
}
