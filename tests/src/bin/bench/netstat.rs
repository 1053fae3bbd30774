//! The TCP sockets of the calling thread's network namespace, from
//! `/proc/thread-self/net/tcp{,6}` (call it on a thread inside a pod, `Pod::run`).
//!
//! Used where the agents count nothing: whether a server listens yet (without connecting
//! to it), and how many HBONE tunnels — TCP connections to port 15008, each one TLS
//! handshake — the client pod holds.
use std::net::Ipv4Addr;

/// `st` of a listening socket.
pub const LISTEN: u8 = 0x0A;
/// `st` of an established connection.
pub const ESTABLISHED: u8 = 0x01;

pub struct Socket {
    pub local_port: u16,
    /// The remote IPv4 address (`None` for IPv6 sockets).
    pub remote_v4: Option<Ipv4Addr>,
    pub remote_port: u16,
    pub state: u8,
}

/// All TCP sockets (v4 and v6) of the current namespace; unreadable tables give none.
pub fn sockets() -> Vec<Socket> {
    let mut out = Vec::new();
    for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(parse_line));
    }
    out
}

/// `sl local_address rem_address st ...`, addresses as `HEXADDR:HEXPORT`.
fn parse_line(line: &str) -> Option<Socket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (_, local_port) = split_addr(fields.get(1)?)?;
    let (remote, remote_port) = split_addr(fields.get(2)?)?;
    Some(Socket {
        local_port,
        remote_v4: ipv4(remote),
        remote_port,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
    })
}

fn split_addr(field: &str) -> Option<(&str, u16)> {
    let (addr, port) = field.split_once(':')?;
    Some((addr, u16::from_str_radix(port, 16).ok()?))
}

/// The kernel prints an IPv4 address as the 32-bit word in host byte order.
fn ipv4(hex: &str) -> Option<Ipv4Addr> {
    if hex.len() != 8 {
        return None;
    }
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_ne_bytes()))
}

/// Established connections of this namespace to `peer:port`; their local ports.
pub fn connections_to(peer: Ipv4Addr, port: u16) -> Vec<u16> {
    sockets()
        .into_iter()
        .filter(|s| s.state == ESTABLISHED && s.remote_v4 == Some(peer) && s.remote_port == port)
        .map(|s| s.local_port)
        .collect()
}
