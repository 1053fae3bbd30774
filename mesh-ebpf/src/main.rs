//! The mesh's kernel programs. Each is a thin entry point around a `try_*` function.
//!
//! The cgroup programs (connect, getpeername, the DNS ones, sock_ops) are attached once per
//! node, to a cgroup above every pod's (the kubelet's `kubepods`, or a lab node's cgroup),
//! and act only on sockets whose network namespace is enrolled (`MESH_NETNS`, keyed by the
//! namespace cookie): a container runtime's CNI call names a pod's namespace, not its
//! cgroup. Every other socket of that cgroup (pods outside the mesh, the node's own
//! processes, and the agent's own sockets inside pods, which carry its marks) is left
//! alone.
//!
//! * `mesh_connect4` / `mesh_connect6` (`cgroup/connect4`, `cgroup/connect6`): a TCP connect to a non-loopback destination whose port is not
//!   excluded is rewritten to the agent's outbound listener in the pod's own namespace
//!   (127.0.0.1:15001, or [::1]:15001 for native IPv6); the original destination is kept
//!   under the socket's cookie.
//! * `mesh_getpeername4` / `mesh_getpeername6`: the application's
//!   `getpeername` reports the original destination, not the agent's listener.
//! * `mesh_sock_ops`: when such a socket is established, the original
//!   destination is re-keyed by what the agent can see from its accepted socket: the
//!   namespace cookie plus the client's local address and port.
//! * `mesh_sk_lookup` (one link per enrolled pod's network namespace): a SYN to an enrolled
//!   pod address is handed to the agent's inbound listener, except HBONE (15008), anything
//!   whose ingress interface is `lo`, and anything whose source is the destination itself
//!   (the pod calling its own address: there is no one to authenticate). The agent's own
//!   delivery to the application comes from a socket bound to `lo` (and to the client's
//!   address, see the agent's `proxy/transparent.rs`), which makes the kernel report `lo`
//!   as its ingress interface; a pod's own connection to its address reports the interface
//!   that carries the address instead, hence the second rule.
//! * DNS capture (`dns.rs`): port 53 to the agent's DNS proxy (15053) in the pod's namespace.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, sk_action},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map, sk_lookup, sock_ops},
    maps::{HashMap, LruHashMap, PerCpuArray, SockHash},
    programs::{SkLookupContext, SockAddrContext, SockOpsContext},
};
use core::ptr::read_volatile;

mod dns;

use aya_log_ebpf::{debug, warn};
use mesh_common::{
    AGENT_SOCKET_MARK, ClientKey, DELIVERY_MARK, FAMILY_INET, FAMILY_INET6, HBONE_PORT, InboundKey,
    OUTBOUND_PORT, OrigDst, SockAddr, counters,
};

const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
/// Interface index of `lo` in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// 127.0.0.1 in network byte order, as the kernel stores it.
const LOCALHOST_V4_BE: u32 = u32::from_be_bytes([127, 0, 0, 1]).to_be();
/// The last word of ::1 in network byte order.
const LOCALHOST_V6_LAST_BE: u32 = 1u32.to_be();
/// The third word of an IPv4-mapped IPv6 address (::ffff:a.b.c.d), network byte order.
const V4_MAPPED_PREFIX_BE: u32 = 0x0000_ffffu32.to_be();

/// Outbound connections in flight: socket cookie -> original destination. LRU, so entries
/// of sockets that never establish age out instead of filling the map.
#[map(name = "MESH_COOKIE_DST")]
static COOKIE_ORIG_DST: LruHashMap<u64, OrigDst> = LruHashMap::pinned(65536, 0);

/// Established redirected connections: client as seen by the agent -> original destination.
#[map(name = "MESH_CLIENT_DST")]
static CLIENT_ORIG_DST: LruHashMap<ClientKey, OrigDst> = LruHashMap::pinned(65536, 0);

/// Destination ports that are never redirected.
#[map(name = "MESH_EXCL_PORTS")]
static EXCLUDED_PORTS: HashMap<u16, u8> = HashMap::pinned(256, 0);

/// Enrolled pod address -> the agent's inbound plaintext listener in that pod's namespace.
#[map(name = "MESH_INBOUND")]
static INBOUND_LISTENERS: SockHash<InboundKey> = SockHash::pinned(4096, 0);

/// Every enrolled pod address (see `mesh_common::maps::ENROLLED_ADDRS`).
#[map(name = "MESH_ENROLLED")]
static ENROLLED_ADDRS: HashMap<InboundKey, u8> = HashMap::pinned(4096, 0);

/// Per-CPU, so programs running on several CPUs at once never share (and lose) a count;
/// the agent sums the CPUs' values. (The BPF target has no atomic add in `core`.)
#[map(name = "MESH_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counters::LEN, 0);

/// Network namespaces of enrolled pods (see `mesh_common::maps::ENROLLED_NETNS`).
#[map(name = "MESH_NETNS")]
static ENROLLED_NETNS: HashMap<u64, u8> = HashMap::pinned(4096, 0);

/// Whether the socket of a `cgroup/sock_addr` program's context is a pod's to capture: not
/// one of the agent's own (marked), and in an enrolled network namespace. The first check
/// of every such program, so other sockets cost a field read and one map lookup and are
/// otherwise untouched.
#[inline(always)]
fn in_enrolled_netns(ctx: &SockAddrContext) -> bool {
    // SAFETY: `sock_addr` is the context pointer the kernel passed; its `sk` is the socket
    // the call is about (never null in cgroup/sock_addr programs) and `mark` a readable
    // field of it. Volatile: one load per field, as the verifier wants them.
    let mark = unsafe {
        let sk = read_volatile(&raw const (*ctx.sock_addr).__bindgen_anon_1.sk);
        read_volatile(&raw const (*sk).mark)
    };
    if mark == AGENT_SOCKET_MARK || mark == DELIVERY_MARK {
        return false;
    }
    // SAFETY: bpf_get_netns_cookie is allowed in cgroup/sock_addr programs and takes the
    // program's own context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: only the presence of the plain u8 value is read.
    unsafe { ENROLLED_NETNS.get(&cookie) }.is_some()
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's element of the array, from a successful lookup,
        // valid for the program's run; programs do not migrate between CPUs while running.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn is_excluded(port: u16) -> bool {
    // SAFETY: the value is a plain u8 and only its presence is read.
    unsafe { EXCLUDED_PORTS.get(&port) }.is_some()
}

#[cgroup_sock_addr(connect4)]
pub fn mesh_connect4(ctx: SockAddrContext) -> i32 {
    if in_enrolled_netns(&ctx) && !dns::steer4(&ctx) {
        try_connect4(&ctx);
    }
    // Always allow the connect; only its destination may have been rewritten.
    1
}

fn try_connect4(ctx: &SockAddrContext) {
    // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return;
    }
    let ip_be = sa.user_ip4;
    let port = u16::from_be(sa.user_port as u16);
    if u32::from_be(ip_be) >> 24 == 127 || is_excluded(port) {
        count(counters::PASSED);
        return;
    }
    if !remember(ctx, SockAddr::v4(ip_be, port)) {
        return;
    }
    sa.user_ip4 = LOCALHOST_V4_BE;
    sa.user_port = u32::from(OUTBOUND_PORT.to_be());
    count(counters::REDIRECTED);
    debug!(ctx, "connect4 redirected, original port {}", port);
}

#[cgroup_sock_addr(connect6)]
pub fn mesh_connect6(ctx: SockAddrContext) -> i32 {
    if in_enrolled_netns(&ctx) && !dns::steer6(&ctx) {
        try_connect6(&ctx);
    }
    1
}

fn try_connect6(ctx: &SockAddrContext) {
    // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return;
    }
    let ip = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    let port = u16::from_be(sa.user_port as u16);
    let v4_mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == V4_MAPPED_PREFIX_BE;
    let loopback = if v4_mapped {
        u32::from_be(ip[3]) >> 24 == 127
    } else {
        ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == LOCALHOST_V6_LAST_BE
    };
    if loopback || is_excluded(port) {
        count(counters::PASSED);
        return;
    }
    // An IPv4-mapped destination is IPv4 on the wire (connect4 does not see it): record
    // it as IPv4 and send it to the IPv4 listener through ::ffff:127.0.0.1.
    let original = if v4_mapped {
        SockAddr::v4(ip[3], port)
    } else {
        SockAddr::v6(ip, port)
    };
    if !remember(ctx, original) {
        return;
    }
    if v4_mapped {
        sa.user_ip6[3] = LOCALHOST_V4_BE;
    } else {
        sa.user_ip6 = [0, 0, 0, LOCALHOST_V6_LAST_BE];
    }
    sa.user_port = u32::from(OUTBOUND_PORT.to_be());
    count(counters::REDIRECTED);
    debug!(ctx, "connect6 redirected, original port {}", port);
}

/// Records the original destination under the socket cookie. On failure the connect is
/// left alone (it goes direct) rather than redirected to a listener that could not tell
/// where it was meant to go.
#[inline(always)]
fn remember(ctx: &SockAddrContext, dst: SockAddr) -> bool {
    // SAFETY: bpf_get_socket_cookie is allowed in cgroup/connect programs and takes the
    // program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    match COOKIE_ORIG_DST.insert(&cookie, &OrigDst { dst }, u64::from(BPF_ANY)) {
        Ok(()) => true,
        Err(_) => {
            warn!(ctx, "original destination map full; connect not captured");
            false
        }
    }
}

/// The application asks who its peer is: answer with the original destination rather
/// than the agent's listener, as if nothing had been redirected.
#[cgroup_sock_addr(getpeername4)]
pub fn mesh_getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(orig) = redirected_to(&ctx) {
        // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
        let sa = unsafe { &mut *ctx.sock_addr };
        if orig.dst.family == FAMILY_INET {
            sa.user_ip4 = orig.dst.addr[0];
            sa.user_port = u32::from(orig.dst.port.to_be());
        }
    }
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn mesh_getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(orig) = redirected_to(&ctx) {
        // SAFETY: `sock_addr` is the context pointer the kernel passed to this program.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip6 = if orig.dst.family == FAMILY_INET {
            // An IPv6 socket that reached an IPv4 destination sees it v4-mapped.
            [0, 0, V4_MAPPED_PREFIX_BE, orig.dst.addr[0]]
        } else {
            orig.dst.addr
        };
        sa.user_port = u32::from(orig.dst.port.to_be());
    }
    1
}

#[inline(always)]
fn redirected_to(ctx: &SockAddrContext) -> Option<OrigDst> {
    if !in_enrolled_netns(ctx) {
        return None;
    }
    // SAFETY: bpf_get_socket_cookie is allowed in cgroup/sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: plain data, copied out at once.
    unsafe { COOKIE_ORIG_DST.get(&cookie) }.copied()
}

#[sock_ops]
pub fn mesh_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        try_active_established(&ctx);
    }
    1
}

fn try_active_established(ctx: &SockOpsContext) {
    // SAFETY: both helpers are allowed in sock_ops programs and take its own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the map value is plain data, copied out before anything else touches it.
    let Some(orig) = (unsafe { COOKIE_ORIG_DST.get(&cookie) }).copied() else {
        return;
    };
    // The cookie entry stays: getpeername4/6 answer from it while the socket lives.
    // SAFETY: as above.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let local_port = ctx.local_port() as u16;
    let src = if ctx.family() == u32::from(FAMILY_INET6) {
        let ip = ctx.local_ip6();
        if ip[0] == 0 && ip[1] == 0 && ip[2] == V4_MAPPED_PREFIX_BE {
            // The agent's IPv4 listener sees this client as plain IPv4.
            SockAddr::v4(ip[3], local_port)
        } else {
            SockAddr::v6(ip, local_port)
        }
    } else {
        SockAddr::v4(ctx.local_ip4(), local_port)
    };
    let key = ClientKey {
        netns_cookie,
        src,
        _pad: 0,
    };
    if CLIENT_ORIG_DST
        .insert(&key, &orig, u64::from(BPF_ANY))
        .is_ok()
    {
        count(counters::HANDED_OVER);
    } else {
        warn!(
            ctx,
            "client map insert failed for local port {}", local_port
        );
    }
}

#[sk_lookup]
pub fn mesh_sk_lookup(ctx: SkLookupContext) -> u32 {
    // SK_PASS with a socket assigned sends the SYN to it; without one the normal lookup
    // (the application's own listener) runs. SK_DROP only for an enrolled address whose
    // agent listener is gone.
    try_sk_lookup(&ctx)
}

fn try_sk_lookup(ctx: &SkLookupContext) -> u32 {
    let lookup = ctx.lookup;
    // Each context field is read with its own volatile load: the verifier rejects loads
    // through a context pointer the compiler has offset and shared between branches.
    // SAFETY: `lookup` is the context pointer the kernel passed to this program; every
    // read is a field of it.
    let (protocol, ifindex, port, family) = unsafe {
        (
            read_volatile(&raw const (*lookup).protocol),
            read_volatile(&raw const (*lookup).ingress_ifindex),
            read_volatile(&raw const (*lookup).local_port),
            read_volatile(&raw const (*lookup).family),
        )
    };
    if protocol != IPPROTO_TCP || ifindex == LOOPBACK_IFINDEX || port == u32::from(HBONE_PORT) {
        return sk_action::SK_PASS;
    }
    let addr = if family == u32::from(FAMILY_INET6) {
        // SAFETY: as above.
        let ip = unsafe {
            [
                read_volatile(&raw const (*lookup).local_ip6[0]),
                read_volatile(&raw const (*lookup).local_ip6[1]),
                read_volatile(&raw const (*lookup).local_ip6[2]),
                read_volatile(&raw const (*lookup).local_ip6[3]),
            ]
        };
        // SAFETY: as above.
        let remote = unsafe {
            [
                read_volatile(&raw const (*lookup).remote_ip6[0]),
                read_volatile(&raw const (*lookup).remote_ip6[1]),
                read_volatile(&raw const (*lookup).remote_ip6[2]),
                read_volatile(&raw const (*lookup).remote_ip6[3]),
            ]
        };
        if remote == ip {
            return sk_action::SK_PASS;
        }
        SockAddr::v6(ip, 0)
    } else if family == u32::from(FAMILY_INET) {
        // SAFETY: as above.
        let (local, remote) = unsafe {
            (
                read_volatile(&raw const (*lookup).local_ip4),
                read_volatile(&raw const (*lookup).remote_ip4),
            )
        };
        if remote == local {
            return sk_action::SK_PASS;
        }
        SockAddr::v4(local, 0)
    } else {
        return sk_action::SK_PASS;
    };
    let key = InboundKey { addr };
    if INBOUND_LISTENERS.redirect_sk_lookup(ctx, &key, 0).is_ok() {
        count(counters::STEERED);
        return sk_action::SK_PASS;
    }
    // SAFETY: only the presence of the plain u8 value is read.
    if unsafe { ENROLLED_ADDRS.get(&key) }.is_some() {
        count(counters::DROPPED);
        return sk_action::SK_DROP;
    }
    sk_action::SK_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
