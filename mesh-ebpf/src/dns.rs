//! DNS capture: a pod's queries to port 53, whatever nameserver its resolv.conf names, go
//! to the agent's DNS proxy inside the pod's own namespace (127.0.0.1:15053, [::1]:15053),
//! and the answers look as if the nameserver asked had sent them.
//!
//! * `connect4`/`connect6` (called from the existing `mesh_connect4/6` for port 53): TCP,
//!   and UDP sockets that connect first (glibc's resolver does), are pointed at 15053.
//! * `mesh_dns_sendmsg4/6` (`cgroup/sendmsg4/6`): unconnected UDP `sendto(<any>:53)`.
//! * `mesh_dns_recvmsg4/6` (`cgroup/recvmsg4/6`): a datagram from the proxy is reported as
//!   coming from the nameserver the socket last asked, so resolvers that check the
//!   answer's source (glibc, musl, Python's, curl's c-ares) accept it.
//!
//! The asked nameserver is kept under the socket cookie in `MESH_COOKIE_DST`, the map
//! `getpeername4/6` already answer from, so a connected socket's peer is the nameserver too.
//! Only sockets of enrolled network namespaces are steered (`in_enrolled_netns`, checked
//! by the callers and by `redirected_to`): the agent's upstream queries leave from its own
//! namespace, and its replies inside a pod go to the client's port, never to 53.
use core::ptr::write_volatile;

use aya_ebpf::programs::SockAddrContext;
use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr};
use mesh_common::{DNS_NAMESERVER_PORT, DNS_PORT, FAMILY_INET, FAMILY_INET6, SockAddr};

use crate::{LOCALHOST_V4_BE, LOCALHOST_V6_LAST_BE, SOCK_STREAM, V4_MAPPED_PREFIX_BE};

const SOCK_DGRAM: u32 = 2;

#[inline(always)]
fn is_dns(sa: &bpf_sock_addr) -> bool {
    u16::from_be(sa.user_port as u16) == DNS_NAMESERVER_PORT
        && (sa.type_ == SOCK_DGRAM || sa.type_ == SOCK_STREAM)
}

#[inline(always)]
fn is_proxy_port(sa: &bpf_sock_addr) -> bool {
    u16::from_be(sa.user_port as u16) == DNS_PORT
}

/// An IPv4 connect or send to port 53: steered to 127.0.0.1:15053. True when the address
/// was a DNS one (handled here, whether or not it could be steered).
#[inline(always)]
pub fn steer4(ctx: &SockAddrContext) -> bool {
    // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if !is_dns(sa) {
        return false;
    }
    // Without the record the answer could not be made to look like the nameserver's:
    // leave the query alone (it goes to the nameserver itself) rather than break it.
    if crate::remember(ctx, SockAddr::v4(sa.user_ip4, DNS_NAMESERVER_PORT)) {
        sa.user_ip4 = LOCALHOST_V4_BE;
        sa.user_port = u32::from(DNS_PORT.to_be());
    }
    true
}

/// The IPv6 (and IPv4-mapped) form of [`steer4`].
#[inline(always)]
pub fn steer6(ctx: &SockAddrContext) -> bool {
    // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if !is_dns(sa) {
        return false;
    }
    let ip = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    let v4_mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == V4_MAPPED_PREFIX_BE;
    let asked = if v4_mapped {
        SockAddr::v4(ip[3], DNS_NAMESERVER_PORT)
    } else {
        SockAddr::v6(ip, DNS_NAMESERVER_PORT)
    };
    if crate::remember(ctx, asked) {
        if v4_mapped {
            sa.user_ip6[3] = LOCALHOST_V4_BE;
        } else {
            sa.user_ip6 = [0, 0, 0, LOCALHOST_V6_LAST_BE];
        }
        sa.user_port = u32::from(DNS_PORT.to_be());
    }
    true
}

#[cgroup_sock_addr(sendmsg4)]
pub fn mesh_dns_sendmsg4(ctx: SockAddrContext) -> i32 {
    if crate::in_enrolled_netns(&ctx) {
        steer4(&ctx);
    }
    // Always let the datagram go; only its destination may have been rewritten.
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn mesh_dns_sendmsg6(ctx: SockAddrContext) -> i32 {
    if crate::in_enrolled_netns(&ctx) {
        steer6(&ctx);
    }
    1
}

/// The socket's asked nameserver, if the socket was steered to the proxy.
#[inline(always)]
fn asked_nameserver(ctx: &SockAddrContext) -> Option<SockAddr> {
    let orig = crate::redirected_to(ctx)?;
    (orig.dst.port == DNS_NAMESERVER_PORT).then_some(orig.dst)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn mesh_dns_recvmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.user_ip4 == LOCALHOST_V4_BE
        && is_proxy_port(sa)
        && let Some(asked) = asked_nameserver(&ctx)
        && asked.family == FAMILY_INET
    {
        sa.user_ip4 = asked.addr[0];
        sa.user_port = u32::from(DNS_NAMESERVER_PORT.to_be());
    }
    // Always deliver the datagram.
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn mesh_dns_recvmsg6(ctx: SockAddrContext) -> i32 {
    // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
    let sa = unsafe { &mut *ctx.sock_addr };
    let ip = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    let from_v6_proxy = ip == [0, 0, 0, LOCALHOST_V6_LAST_BE];
    let from_v4_proxy = ip == [0, 0, V4_MAPPED_PREFIX_BE, LOCALHOST_V4_BE];
    if (from_v6_proxy || from_v4_proxy)
        && is_proxy_port(sa)
        && let Some(asked) = asked_nameserver(&ctx)
    {
        let words = if asked.family == FAMILY_INET6 {
            asked.addr
        } else {
            [0, 0, V4_MAPPED_PREFIX_BE, asked.addr[0]]
        };
        // One 4-byte store per word at a constant offset: the verifier refuses the copy
        // loop the compiler makes of an array assignment into the context.
        // SAFETY: fields of the context the kernel passed, written in place.
        unsafe {
            write_volatile(&raw mut sa.user_ip6[0], words[0]);
            write_volatile(&raw mut sa.user_ip6[1], words[1]);
            write_volatile(&raw mut sa.user_ip6[2], words[2]);
            write_volatile(&raw mut sa.user_ip6[3], words[3]);
        }
        sa.user_port = u32::from(DNS_NAMESERVER_PORT.to_be());
    }
    1
}
