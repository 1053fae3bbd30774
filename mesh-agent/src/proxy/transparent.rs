//! Delivery that keeps the client's address: the application in the pod sees the real
//! client (the source pod, or whoever sent the plaintext SYN), as it would without a mesh.
//!
//! The agent connects to the application from inside the pod with a socket bound to the
//! *client's* address (`IP_TRANSPARENT` allows binding an address the pod does not own),
//! marked [`DELIVERY_MARK`] and bound to `lo`. The application's replies go to the client's
//! address, which is not local to the pod, so without help they would leave through the
//! pod's interface. Three settings in the pod's network namespace bring them back, with no
//! iptables:
//!
//! * `net.ipv4.tcp_fwmark_accept = 1` (it covers IPv6 too): a connection accepted from a
//!   marked SYN carries the SYN's mark on its socket, SYN-ACK included; the application's
//!   sockets of delivered connections therefore carry [`DELIVERY_MARK`]. Its other
//!   connections come from the pod's interface, where the mark is always cleared.
//!   `fwmark_reflect` (IPv4 and IPv6) does the same for what the kernel answers without a
//!   socket: the RST refusing a delivery to a port nobody listens on.
//! * `ip rule add fwmark DELIVERY_MARK lookup DELIVERY_TABLE` (IPv4 and IPv6), ahead of the
//!   main table;
//! * `ip route add local default dev lo table DELIVERY_TABLE`: marked packets are delivered
//!   inside the pod, where the agent's transparent socket owns the connection.
//!
//! `sk_lookup` must not steer the delivery back to the agent: binding the socket to `lo`
//! makes the kernel report `lo` as the SYN's ingress interface, which the program skips
//! (a SYN from outside the pod always arrives on its interface).
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{RouteScope, RouteType},
};
use tokio::net::{TcpSocket, TcpStream};

use super::{PodProxy, error::ProxyError};
use crate::pod::PodSockets;

/// The mark on the agent's delivery sockets and on the application's sockets that answer
/// them (ztunnel's in-pod mark, so one rule set serves either).
pub const DELIVERY_MARK: u32 = mesh_common::DELIVERY_MARK;
/// The routing table holding the `local default` route for marked packets.
pub const DELIVERY_TABLE: u32 = 15_006;
/// Ahead of `main` (32766), behind `local` (0).
const RULE_PRIORITY: u32 = 32_700;
const LOOPBACK_IFINDEX: u32 = 1;
/// Set to 1 in the pod's namespace (see the module's documentation).
const SYSCTLS: [&str; 3] = [
    "/proc/sys/net/ipv4/tcp_fwmark_accept",
    // Replies the kernel sends without a socket (the RST of a refused delivery) carry the
    // mark of what they answer, so they reach the agent too instead of leaving the pod.
    "/proc/sys/net/ipv4/fwmark_reflect",
    "/proc/sys/net/ipv6/fwmark_reflect",
];

/// Installs the in-pod routing (idempotent: an agent restarting over an enrolled pod finds
/// it in place).
pub async fn prepare(sockets: &PodSockets) -> io::Result<()> {
    // /proc/sys/net belongs to the namespace of the thread that opens it.
    sockets
        .run(|| {
            SYSCTLS
                .iter()
                .try_for_each(|path| std::fs::write(path, b"1"))
        })
        .await?;
    let handle = netlink(sockets).await?;
    let v4 = delivery_rule(handle.rule().add().v4());
    tolerate(v4.execute().await, libc::EEXIST)?;
    let v6 = delivery_rule(handle.rule().add().v6());
    tolerate(v6.execute().await, libc::EEXIST)?;
    for route in routes() {
        tolerate(handle.route().add(route).execute().await, libc::EEXIST)?;
    }
    Ok(())
}

/// Removes what [`prepare`] installed (idempotent). The sysctls stay: unmarked packets
/// are unaffected by them.
pub async fn remove(sockets: &PodSockets) -> io::Result<()> {
    let handle = netlink(sockets).await?;
    let mut v4 = delivery_rule(handle.rule().add().v4());
    let mut v6 = delivery_rule(handle.rule().add().v6());
    for rule in [v4.message_mut().clone(), v6.message_mut().clone()] {
        tolerate(handle.rule().del(rule).execute().await, libc::ENOENT)?;
    }
    for route in routes() {
        tolerate(handle.route().del(route).execute().await, libc::ESRCH)?;
    }
    Ok(())
}

/// A route-netlink connection inside the pod's namespace (the socket is created on the
/// pod's thread, then driven by this runtime).
async fn netlink(sockets: &PodSockets) -> io::Result<Handle> {
    let runtime = tokio::runtime::Handle::current();
    let (connection, handle, _) = sockets
        .run(move || {
            let _entered = runtime.enter();
            rtnetlink::new_connection()
        })
        .await?;
    tokio::spawn(connection);
    Ok(handle)
}

/// `fwmark DELIVERY_MARK lookup DELIVERY_TABLE`, ahead of the main table.
fn delivery_rule<T>(request: rtnetlink::RuleAddRequest<T>) -> rtnetlink::RuleAddRequest<T> {
    request
        .fw_mark(DELIVERY_MARK)
        .table_id(DELIVERY_TABLE)
        .priority(RULE_PRIORITY)
        .action(rtnetlink::packet_route::rule::RuleAction::ToTable)
}

fn routes() -> [rtnetlink::packet_route::route::RouteMessage; 2] {
    [
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .output_interface(LOOPBACK_IFINDEX)
            .table_id(DELIVERY_TABLE)
            .build(),
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .output_interface(LOOPBACK_IFINDEX)
            .table_id(DELIVERY_TABLE)
            .build(),
    ]
}

/// `Ok` also when the kernel answered `errno` (already there, already gone).
fn tolerate(result: Result<(), rtnetlink::Error>, errno: i32) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -errno => Ok(()),
        Err(rtnetlink::Error::NetlinkError(message)) => {
            Err(io::Error::from_raw_os_error(-message.raw_code()))
        }
        Err(other) => Err(io::Error::other(other)),
    }
}

/// Connects to `target` (this pod's application) from inside the pod as `client`.
/// A client of the other address family, or one the kernel cannot impersonate (loopback,
/// unspecified), is delivered from the pod's own address instead.
pub async fn connect_as(
    pod: &PodProxy,
    client: IpAddr,
    target: SocketAddr,
) -> Result<TcpStream, ProxyError> {
    let connect = |source| ProxyError::Connect { target, source };
    let socket = pod.sockets.tcp_socket(&target).await.map_err(connect)?;
    if impersonable(client, target) {
        impersonate(&socket, client).map_err(connect)?;
    }
    let stream = socket.connect(target).await.map_err(connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn impersonable(client: IpAddr, target: SocketAddr) -> bool {
    client.is_ipv4() == target.is_ipv4() && !client.is_loopback() && !client.is_unspecified()
}

fn impersonate(socket: &TcpSocket, client: IpAddr) -> io::Result<()> {
    let raw = socket2::SockRef::from(socket);
    match client {
        IpAddr::V4(_) => raw.set_ip_transparent_v4(true)?,
        IpAddr::V6(_) => raw.set_ip_transparent_v6(true)?,
    }
    raw.set_mark(DELIVERY_MARK)?;
    raw.bind_device(Some(b"lo"))?;
    socket.bind(SocketAddr::new(client, 0))
}
