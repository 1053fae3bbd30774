//! Map keys as the agent builds them from what it sees on an accepted socket.
use std::net::{IpAddr, SocketAddr};

use mesh_common::{ClientKey, SockAddr};

/// The key under which `sock_ops` stored the original destination of the connection whose
/// client end is `peer` (the accepted socket's peer address) in the namespace `netns_cookie`.
pub fn client_key(netns_cookie: u64, peer: SocketAddr) -> ClientKey {
    ClientKey {
        netns_cookie,
        src: sock_addr(peer),
        _pad: 0,
    }
}

/// Kernel layout of an address: the octets in network order in memory, port in host order.
pub fn sock_addr(addr: SocketAddr) -> SockAddr {
    match addr.ip() {
        IpAddr::V4(ip) => SockAddr::v4(u32::from_ne_bytes(ip.octets()), addr.port()),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            // The kernel programs record v4-mapped clients as IPv4.
            Some(v4) => SockAddr::v4(u32::from_ne_bytes(v4.octets()), addr.port()),
            None => {
                let o = ip.octets();
                let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                SockAddr::v6([word(0), word(4), word(8), word(12)], addr.port())
            }
        },
    }
}

/// The inverse of [`sock_addr`].
pub fn socket_addr(addr: &SockAddr) -> Option<SocketAddr> {
    match addr.family {
        mesh_common::FAMILY_INET => Some(SocketAddr::new(
            IpAddr::from(addr.addr[0].to_ne_bytes()),
            addr.port,
        )),
        mesh_common::FAMILY_INET6 => {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_mut(4).zip(addr.addr) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(SocketAddr::new(IpAddr::from(octets), addr.port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip_and_kernel_byte_order() {
        let a: SocketAddr = "198.18.1.10:8080".parse().unwrap();
        let k = sock_addr(a);
        // In memory the kernel's __be32 holds the octets in order.
        assert_eq!(k.addr[0].to_ne_bytes(), [198, 18, 1, 10]);
        assert_eq!(k.port, 8080);
        assert_eq!(socket_addr(&k), Some(a));
    }

    #[test]
    fn v4_mapped_is_recorded_as_v4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let plain: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(sock_addr(mapped), sock_addr(plain));
    }

    #[test]
    fn v6_round_trip() {
        let a: SocketAddr = "[fd00::1:2]:443".parse().unwrap();
        assert_eq!(socket_addr(&sock_addr(a)), Some(a));
    }
}
