//! Types shared by the kernel programs (`mesh-ebpf`) and the node agent (`mesh-agent`).
//!
//! This is the only place where map keys, map values, map names and the agent's port
//! numbers are defined, so the two sides cannot drift apart. Everything is `#[repr(C)]`,
//! `Copy` and free of implicit padding: the kernel compares map keys byte for byte, so
//! every padding byte is an explicit field that both sides set to zero.
#![no_std]

/// Outbound capture listener, inside each enrolled pod's network namespace (as ztunnel).
pub const OUTBOUND_PORT: u16 = 15001;
/// Inbound plaintext capture listener, inside each enrolled pod's network namespace.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// HBONE (HTTP/2 CONNECT over mutual TLS). Never steered by `sk_lookup`.
pub const HBONE_PORT: u16 = 15008;
/// A waypoint's hand-off listener (127.0.0.1, in the waypoint pod): the node agent passes
/// it the HBONE streams addressed to the Services the waypoint serves, PROXY protocol v2
/// first (Istio's `PROXY/15088` waypoint binding).
pub const WAYPOINT_HANDOFF_PORT: u16 = 15088;
/// Admin API.
pub const ADMIN_PORT: u16 = 15000;
/// Prometheus metrics.
pub const METRICS_PORT: u16 = 15020;
/// Readiness probe.
pub const READINESS_PORT: u16 = 15021;
/// The DNS proxy (UDP and TCP), inside each enrolled pod's network namespace (as ztunnel).
pub const DNS_PORT: u16 = 15053;
/// The port DNS clients send to; queries to it (any address) are steered to [`DNS_PORT`].
pub const DNS_NAMESERVER_PORT: u16 = 53;

/// `AF_INET`, as the kernel reports it in `bpf_sock_addr` / `bpf_sock_ops`.
pub const FAMILY_INET: u16 = 2;
/// `AF_INET6`.
pub const FAMILY_INET6: u16 = 10;

/// `SO_MARK` of the agent's delivery sockets inside a pod (and of the application's sockets
/// answering them): in-pod routing sends marked replies back to the agent (ztunnel's mark).
pub const DELIVERY_MARK: u32 = 0x539;
/// `SO_MARK` of every other socket the agent creates inside a pod's namespace (listeners,
/// upstream connects, HBONE, DNS). The capture programs leave sockets with either mark
/// alone: the agent may itself run below the capture cgroup (a DaemonSet pod lives under
/// `kubepods`), and its own connects must not be captured again. Not matched by the
/// in-pod routing rule, so these sockets route normally.
pub const AGENT_SOCKET_MARK: u32 = 0x53a;

/// Map names (the names of the statics in `mesh-ebpf`, and of their pins).
pub mod maps {
    /// `LruHashMap<u64 socket cookie, OrigDst>`: written by `connect4/6` when a connect is
    /// redirected, read by `sock_ops` once the client socket is established and by
    /// `getpeername4/6` for the socket's whole life (socket cookies are never reused; the
    /// LRU drops entries of closed sockets).
    pub const COOKIE_ORIG_DST: &str = "MESH_COOKIE_DST";
    /// `LruHashMap<ClientKey, OrigDst>`: written by `sock_ops`, read (and deleted) by the
    /// agent with the accepted socket's peer address.
    pub const CLIENT_ORIG_DST: &str = "MESH_CLIENT_DST";
    /// `HashMap<u16 port (host order), u8>`: destination ports never redirected outbound.
    pub const EXCLUDED_PORTS: &str = "MESH_EXCL_PORTS";
    /// `SockHash<InboundKey>`: the agent's 15006 listener for each enrolled pod address.
    pub const INBOUND_LISTENERS: &str = "MESH_INBOUND";
    /// `HashMap<InboundKey, u8>`: every enrolled pod address. An address listed here but
    /// without a listener in `INBOUND_LISTENERS` (the agent is down) is dropped, not
    /// delivered around the mesh: inbound fails closed, like outbound.
    pub const ENROLLED_ADDRS: &str = "MESH_ENROLLED";
    /// `PerCpuArray<u32, u64>` of counters (see [`crate::counters`]): one value per CPU,
    /// summed by the agent.
    pub const COUNTERS: &str = "MESH_COUNTERS";
    /// `HashMap<u64 netns cookie, u8>`: the network namespaces of enrolled pods. The
    /// cgroup programs are attached once per node, to a cgroup above every pod's; they act
    /// only on sockets whose namespace is listed here and leave every other socket alone.
    pub const ENROLLED_NETNS: &str = "MESH_NETNS";
}

/// Program names (the function names in `mesh-ebpf`).
pub mod programs {
    pub const CONNECT4: &str = "mesh_connect4";
    pub const CONNECT6: &str = "mesh_connect6";
    pub const GETPEERNAME4: &str = "mesh_getpeername4";
    pub const GETPEERNAME6: &str = "mesh_getpeername6";
    pub const SOCK_OPS: &str = "mesh_sock_ops";
    pub const SK_LOOKUP: &str = "mesh_sk_lookup";
    /// DNS capture of unconnected UDP sockets: `sendto(<any>:53)` goes to the agent's
    /// [`crate::DNS_PORT`], and the reply's source is reported as the nameserver asked.
    pub const DNS_SENDMSG4: &str = "mesh_dns_sendmsg4";
    pub const DNS_SENDMSG6: &str = "mesh_dns_sendmsg6";
    pub const DNS_RECVMSG4: &str = "mesh_dns_recvmsg4";
    pub const DNS_RECVMSG6: &str = "mesh_dns_recvmsg6";
}

/// Indexes into the [`maps::COUNTERS`] array, counted in the kernel.
pub mod counters {
    /// TCP connects redirected to the outbound listener.
    pub const REDIRECTED: u32 = 0;
    /// TCP connects left alone: loopback destination or excluded port.
    pub const PASSED: u32 = 1;
    /// Established client sockets whose original destination was handed to the agent.
    pub const HANDED_OVER: u32 = 2;
    /// Inbound SYNs steered to the agent's inbound listener.
    pub const STEERED: u32 = 3;
    /// Inbound SYNs dropped: an enrolled address while no agent listener exists.
    pub const DROPPED: u32 = 4;
    /// Size of the counters array.
    pub const LEN: u32 = 5;
}

/// An IPv4 or IPv6 address and port as the kernel hands them to programs: addresses in
/// network byte order (four `u32` words, IPv4 in `addr[0]`), port in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockAddr {
    pub addr: [u32; 4],
    pub port: u16,
    /// [`FAMILY_INET`] or [`FAMILY_INET6`].
    pub family: u16,
}

impl SockAddr {
    pub const fn v4(addr_be: u32, port: u16) -> Self {
        SockAddr {
            addr: [addr_be, 0, 0, 0],
            port,
            family: FAMILY_INET,
        }
    }

    pub const fn v6(addr_be: [u32; 4], port: u16) -> Self {
        SockAddr {
            addr: addr_be,
            port,
            family: FAMILY_INET6,
        }
    }
}

/// The original destination of a redirected connect.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OrigDst {
    pub dst: SockAddr,
}

/// Identifies the client side of a redirected connection as the agent sees it from the
/// accepted socket: the pod's network namespace plus the client's local address and port.
/// The namespace cookie is needed because every pod has its own 127.0.0.1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientKey {
    pub netns_cookie: u64,
    pub src: SockAddr,
    pub _pad: u32,
}

/// Key of [`maps::INBOUND_LISTENERS`]: an enrolled pod's address (port 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InboundKey {
    pub addr: SockAddr,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` structs of integers with every padding byte spelled out
    // as a field, so any bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::SockAddr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OrigDst {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClientKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InboundKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<SockAddr>(), 16 + 2 + 2);
        assert_eq!(size_of::<OrigDst>(), 20);
        assert_eq!(size_of::<ClientKey>(), 8 + 20 + 4);
        assert_eq!(size_of::<InboundKey>(), 20);
    }
}
