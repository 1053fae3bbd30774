//! The DNS proxy, end to end: unmodified resolvers (glibc's `getent`, curl, Python, dig) in
//! an enrolled pod read a Kubernetes-style resolv.conf that names an ordinary nameserver;
//! the kernel steers their queries to the node agent, which answers Service and
//! ServiceEntry names itself and forwards the rest to that nameserver (a real `dnsmasq` in
//! an unenrolled pod, serving the test zone `lab.test`).
//!
//! Lab: one node; pod 1 is the enrolled client, pod 2 serves HTTP as `reviews`, pod 3 is
//! an unenrolled client, pod 4 runs dnsmasq.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::Output,
    str::FromStr,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{Name, RData, RecordType},
};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, records_to, wait_for};

const CLIENT: usize = 1;
const SERVER: usize = 2;
const OUTSIDER: usize = 3;
const RESOLVER: usize = 4;
const REVIEWS_VIP: &str = "198.19.0.30";
/// What dnsmasq answers for names of the test zone.
const WEB_IP: &str = "198.18.1.50";
const WEIXIN_UPSTREAM_IP: &str = "198.18.1.60";
/// The agent's DNS listener in each pod (mesh-common's `DNS_PORT`, as ztunnel's).
const DNS_PROXY_PORT: u16 = 15053;
/// Upstream answers the agent keeps at most (small, so the burst test fills it).
const CACHE_ENTRIES: usize = 500;

const REVIEWS_YAML: &str = r#"apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 198.19.0.30
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets:
- addresses: [{ip: 198.18.1.12}]
  ports: [{name: http, port: 9080}]
"#;

/// The mesh, dnsmasq and the `reviews` server, removed on drop (dnsmasq's files too).
struct DnsLab {
    mesh: Mesh,
    _dnsmasq: LabChild,
    _reviews: LabChild,
    dnsmasq_log: PathBuf,
}

impl Drop for DnsLab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.dnsmasq_log);
        }
    }
}

impl DnsLab {
    fn start() -> Result<DnsLab> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Result<DnsLab> {
        // The agent's upstream is the lab's nameserver (never the host's resolver).
        let upstream = "198.18.1.14:53";
        let cache = CACHE_ENTRIES.to_string();
        let mut args = vec!["--dns-upstream", upstream, "--dns-cache-entries", &cache];
        args.extend_from_slice(extra);
        let mesh = Mesh::start_with_args(1, 4, &args)?;
        let resolver_ip = mesh.pod(1, RESOLVER).ip();
        ensure!(
            SocketAddr::from((resolver_ip, 53)).to_string() == upstream,
            "lab layout changed"
        );
        let dnsmasq_log =
            std::env::temp_dir().join(format!("mesh-test-{}-dnsmasq.log", mesh.lab.id()));
        let mut cmd = mesh.pod(1, RESOLVER).command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=", // none: it would outlive the SIGKILL at cleanup
            "--log-queries",
            "--local-ttl=60",
            "--local=/lab.test/",
            "--local=/qq.com/",
            "--local=/cluster.local/",
        ])
        .arg(format!("--listen-address={resolver_ip}"))
        .arg(format!("--host-record=web.lab.test,{WEB_IP}"))
        .arg(format!(
            "--host-record=api.weixin.qq.com,{WEIXIN_UPSTREAM_IP}"
        ))
        .arg(format!(
            "--host-record=shop.lab.test,{}",
            mesh.pod(1, OUTSIDER).ip()
        ))
        .arg(format!("--log-facility={}", dnsmasq_log.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let dnsmasq = mesh.lab.spawn(&mut cmd).context("starting dnsmasq")?;
        let reviews = mesh.serve_in_pod(
            1,
            SERVER,
            &["http", "--listen", "0.0.0.0:9080", "--name", "reviews"],
            9080,
        )?;
        // Each client pod gets the resolv.conf a kubelet writes for namespace `default`.
        let search: Vec<String> = [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ]
        .map(String::from)
        .to_vec();
        for pod in [CLIENT, OUTSIDER] {
            mesh.pod(1, pod).write_resolv_conf(
                &[IpAddr::V4(resolver_ip)],
                &search,
                &["ndots:5", "timeout:1", "attempts:2"],
            )?;
        }
        mesh.enroll(1, CLIENT)?;
        mesh.apply_all("reviews.yaml", REVIEWS_YAML)?;
        let lab = DnsLab {
            mesh,
            _dnsmasq: dnsmasq,
            _reviews: reviews,
            dnsmasq_log,
        };
        // dnsmasq answers (asked directly, from outside every cgroup).
        wait_for("dnsmasq answering", || {
            Ok(lab
                .ask_direct(
                    RESOLVER,
                    SocketAddr::from((resolver_ip, 53)),
                    "web.lab.test",
                    RecordType::A,
                )
                .is_ok())
        })?;
        Ok(lab)
    }

    /// An unmodified program in pod `pod`, seeing the pod's resolv.conf.
    fn run(&self, pod: usize, program: &str, args: &[&str]) -> Result<Output> {
        let out = self
            .mesh
            .pod(1, pod)
            .command_with_etc(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {program} in pod {pod}"))?;
        Ok(out)
    }

    fn stdout_of(&self, pod: usize, program: &str, args: &[&str]) -> Result<String> {
        let out = self.run(pod, program, args)?;
        ensure!(
            out.status.success(),
            "{program} {args:?} in pod {pod} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The first address `getent hosts NAME` prints in pod `pod` (glibc, search list).
    fn getent(&self, pod: usize, name: &str) -> Result<String> {
        let out = self.stdout_of(pod, "getent", &["hosts", name])?;
        Ok(out
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string())
    }

    /// Asks `server` from a thread in pod `pod`'s namespace but outside its cgroup (so not
    /// captured): the way to talk to the agent's listener itself, or to dnsmasq.
    fn ask_direct(
        &self,
        pod: usize,
        server: SocketAddr,
        name: &str,
        qtype: RecordType,
    ) -> Result<Message> {
        let query = query_bytes(name, qtype)?;
        let answer = self
            .mesh
            .pod(1, pod)
            .run(move || exchange_udp(server, &query))??;
        Message::from_vec(&answer).context("parsing the answer")
    }

    /// dnsmasq's log lines of queries for `needle` (`query[A] web.lab.test from 1.2.3.4`).
    fn upstream_queries(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(&self.dnsmasq_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("query[") && l.contains(needle))
            .map(String::from)
            .collect()
    }

    fn metric(&self, name: &str) -> Result<f64> {
        let text = self.mesh.metrics(1)?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

fn query_bytes(name: &str, qtype: RecordType) -> Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_str(name)?,
        qtype,
    ));
    Ok(m.to_vec()?)
}

fn exchange_udp(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(query, server)?;
    let mut buf = vec![0u8; 65_535];
    let (n, _) = socket.recv_from(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// `getent`, curl (short name and FQDN) and Python resolve `reviews` to its VIP in the
/// enrolled pod and connect through the agent; an unenrolled pod with the same
/// resolv.conf asks dnsmasq itself and gets nothing for `reviews`.
#[test]
fn enrolled_pods_resolve_services_by_name_and_connect_through_the_agent() -> Result<()> {
    let lab = DnsLab::start()?;
    for name in [
        "reviews",
        "reviews.default",
        "reviews.default.svc.cluster.local",
    ] {
        assert_eq!(
            lab.getent(CLIENT, name)?,
            REVIEWS_VIP,
            "getent hosts {name}"
        );
    }
    for url in [
        "http://reviews:9080/",
        "http://reviews.default.svc.cluster.local:9080/",
    ] {
        let body = lab.stdout_of(CLIENT, "curl", &["-sS", "--max-time", "5", url])?;
        let body: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
        assert_eq!(body["service"], "reviews", "{url}: {body}");
    }
    let python = lab.stdout_of(
        CLIENT,
        "python3",
        &[
            "-c",
            "import socket; print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo('reviews', 9080, proto=socket.IPPROTO_TCP)})))",
        ],
    )?;
    assert_eq!(python.trim(), REVIEWS_VIP, "Python getaddrinfo");
    // The connections went to the VIP through the agent.
    let status = lab.mesh.status(1)?;
    assert!(
        records_to(&status, &format!("{REVIEWS_VIP}:9080")).len() >= 2,
        "curl's connections are not in the agent's records: {status:#}"
    );
    // None of those names reached the upstream: the agent answered them.
    assert!(
        lab.upstream_queries("reviews").is_empty(),
        "{:?}",
        lab.upstream_queries("reviews")
    );
    let metrics = lab.mesh.metrics(1)?;
    assert!(
        metrics.contains("istio_dns_requests_total{request_query_type=\"a\",request_protocol=\"udp\",source_canonical_service=\"n1p1\""),
        "{metrics}"
    );

    // The unenrolled pod is not captured: its queries reach dnsmasq from its own address.
    let out = lab.run(OUTSIDER, "getent", &["hosts", "reviews"])?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "reviews resolved outside the mesh: {out:?}"
    );
    let outsider = lab.mesh.pod(1, OUTSIDER).ip().to_string();
    let direct = lab.upstream_queries("reviews.default.svc.cluster.local");
    assert!(
        !direct.is_empty()
            && direct
                .iter()
                .all(|l| l.ends_with(&format!("from {outsider}"))),
        "{direct:?}"
    );
    assert_eq!(lab.getent(OUTSIDER, "web.lab.test")?, WEB_IP);
    Ok(())
}

/// A name that is not the mesh's goes to the upstream once (then the cache answers);
/// NXDOMAIN comes back as such; the answer looks as if the nameserver asked had sent it
/// (for connected and unconnected UDP sockets); TCP queries are captured too.
#[test]
fn other_names_are_forwarded_cached_and_nxdomain_passes_through() -> Result<()> {
    let lab = DnsLab::start()?;
    assert_eq!(lab.getent(CLIENT, "web.lab.test")?, WEB_IP);
    let node = lab.mesh.lab.node(1).pod_gateway().to_string();
    // Asked by the agent (from the node), once. (The readiness probe asked too, from
    // dnsmasq's own pod.)
    let by_agent = |lab: &DnsLab| -> Vec<String> {
        lab.upstream_queries("query[A] web.lab.test ")
            .into_iter()
            .filter(|l| l.ends_with(&format!("from {node}")))
            .collect()
    };
    assert_eq!(
        by_agent(&lab).len(),
        1,
        "{:?}",
        lab.upstream_queries("web.lab.test")
    );
    // The search-list expansions were answered by the agent (NXDOMAIN), not forwarded.
    assert!(lab.upstream_queries("web.lab.test.default.svc").is_empty());

    let hits = lab.metric("mesh_dns_cache_hits_total")?;
    assert_eq!(lab.getent(CLIENT, "web.lab.test")?, WEB_IP);
    assert_eq!(by_agent(&lab).len(), 1, "not served from the cache");
    assert!(lab.metric("mesh_dns_cache_hits_total")? > hits);
    assert!(lab.metric("istio_dns_upstream_requests_total")? >= 1.0);

    let out = lab.run(CLIENT, "getent", &["hosts", "nothing.lab.test"])?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let dig = lab.stdout_of(CLIENT, "dig", &["+tries=1", "+time=2", "nothing.lab.test"])?;
    assert!(dig.contains("status: NXDOMAIN"), "{dig}");
    assert!(
        lab.upstream_queries("nothing.lab.test")
            .iter()
            .all(|l| l.ends_with(&format!("from {node}")))
    );

    // TCP to port 53 goes to the agent's TCP listener.
    let dig = lab.stdout_of(
        CLIENT,
        "dig",
        &[
            "+tcp",
            "+short",
            "+tries=1",
            "reviews.default.svc.cluster.local",
        ],
    )?;
    assert_eq!(dig.trim(), REVIEWS_VIP, "dig +tcp");

    // An unconnected UDP socket (sendto/recvfrom) sees the answer come from the address
    // it sent to.
    let script = format!(
        "import socket\n\
         q = bytes.fromhex('12340100000100000000000007726576696577730764656661756c740373766307636c7573746572056c6f63616c0000010001')\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(3)\n\
         s.sendto(q, ('{}', 53))\n\
         data, peer = s.recvfrom(4096)\n\
         print(peer[0], peer[1], data[:2].hex(), '.'.join(str(b) for b in data[-4:]))\n",
        lab.mesh.pod(1, RESOLVER).ip()
    );
    let out = lab.stdout_of(CLIENT, "python3", &["-c", &script])?;
    assert_eq!(
        out.trim(),
        format!("{} 53 1234 {REVIEWS_VIP}", lab.mesh.pod(1, RESOLVER).ip()),
        "sendto/recvfrom"
    );

    // IPv6: a native IPv6 nameserver (connect6 and recvmsg6, the agent's [::1]:15053), and
    // an IPv4 one asked through an IPv6 socket as ::ffff:a.b.c.d (sendmsg6/recvmsg6).
    let v6_server = format!("@{}", lab.mesh.pod(1, RESOLVER).ipv6());
    let dig = lab.stdout_of(
        CLIENT,
        "dig",
        &[
            &v6_server,
            "+short",
            "+tries=1",
            "reviews.default.svc.cluster.local",
        ],
    )?;
    assert_eq!(dig.trim(), REVIEWS_VIP, "dig {v6_server}");
    let mapped = script
        .replace("socket.AF_INET,", "socket.AF_INET6,")
        .replace(
            &format!("('{}', 53)", lab.mesh.pod(1, RESOLVER).ip()),
            &format!("('::ffff:{}', 53)", lab.mesh.pod(1, RESOLVER).ip()),
        );
    let out = lab.stdout_of(CLIENT, "python3", &["-c", &mapped])?;
    assert_eq!(
        out.trim(),
        format!(
            "::ffff:{} 53 1234 {REVIEWS_VIP}",
            lab.mesh.pod(1, RESOLVER).ip()
        ),
        "IPv4-mapped sendto/recvfrom"
    );
    Ok(())
}

/// ServiceEntry hosts resolve to their auto-allocated VIP; removing the entry lets the
/// name fall through to upstream. A Service added or removed is answered or not as soon
/// as the snapshot changes.
#[test]
fn config_changes_are_answered_within_one_snapshot_swap() -> Result<()> {
    let lab = DnsLab::start()?;
    let entry = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: weixin, namespace: default}
spec:
  hosts: [api.weixin.qq.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;
    lab.mesh.apply_all("weixin.yaml", entry)?;
    let dump = lab.mesh.block_on(lab.mesh.client(1).config_dump())?;
    let vip = dump["service_entries"]["default/weixin"]["vip"]
        .as_str()
        .context("the ServiceEntry's VIP in config_dump")?
        .to_string();
    assert!(vip.starts_with("198.19."), "{vip}");
    assert_eq!(lab.getent(CLIENT, "api.weixin.qq.com")?, vip);
    assert!(lab.upstream_queries("api.weixin.qq.com").is_empty());

    lab.mesh.apply_all("weixin.yaml", "")?;
    assert_eq!(lab.getent(CLIENT, "api.weixin.qq.com")?, WEIXIN_UPSTREAM_IP);
    assert!(!lab.upstream_queries("api.weixin.qq.com").is_empty());

    // A new Service: answered right after the apply; gone right after its removal.
    let out = lab.run(CLIENT, "getent", &["hosts", "details"])?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let details = REVIEWS_YAML
        .replace("reviews", "details")
        .replace("198.19.0.30", "198.19.0.31");
    lab.mesh.apply_all("details.yaml", &details)?;
    assert_eq!(lab.getent(CLIENT, "details")?, "198.19.0.31");
    lab.mesh.apply_all("details.yaml", "")?;
    let out = lab.run(
        CLIENT,
        "getent",
        &["hosts", "details.default.svc.cluster.local"],
    )?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    Ok(())
}

/// Truncated packets, wrong counts and compression loops get FORMERR (or nothing when not
/// even a header came); the agent answers the next good query, over UDP and TCP.
#[test]
fn malformed_queries_get_formerr_or_nothing_and_the_agent_lives() -> Result<()> {
    let lab = DnsLab::start()?;
    let proxy = SocketAddr::from(([127, 0, 0, 1], DNS_PROXY_PORT));
    let good = query_bytes("reviews.default.svc.cluster.local", RecordType::A)?;
    let mut packets: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("half a header", good[..5].to_vec()),
        ("question cut short", good[..good.len() - 3].to_vec()),
    ];
    let mut counts = good.clone();
    counts[7] = 9; // ANCOUNT 9, no answers follow
    packets.push(("wrong counts", counts));
    // A name that is a pointer to itself (offset 12).
    let mut lp = good[..12].to_vec();
    lp.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    packets.push(("compression loop", lp));
    // Deterministic junk of every length up to 600 with a plausible header.
    let mut seed: u32 = 0x2545_f491;
    for len in (12..600).step_by(7) {
        let mut junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        junk[2] &= 0x7f; // a query, not a response
        packets.push(("junk", junk));
    }
    let results = lab.mesh.pod(1, CLIENT).run(move || {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_535];
        for (what, packet) in packets {
            socket.send_to(&packet, proxy)?;
            let answer = socket
                .recv_from(&mut buf)
                .ok()
                .map(|(n, _)| buf[..n].to_vec());
            out.push((what, packet, answer));
        }
        Ok::<_, std::io::Error>(out)
    })??;
    for (what, packet, answer) in &results {
        match answer {
            None => assert!(
                packet.len() < 12 || *what == "junk",
                "{what}: no answer to a packet with a header"
            ),
            Some(bytes) => {
                let m = Message::from_vec(bytes)
                    .with_context(|| format!("{what}: our answer does not parse"))?;
                assert_eq!(bytes[..2], packet[..2], "{what}: id");
                if *what != "junk" {
                    assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
                }
            }
        }
    }
    for what in ["wrong counts", "compression loop", "question cut short"] {
        assert!(
            results.iter().any(|(w, _, a)| *w == what && a.is_some()),
            "{what}: no FORMERR"
        );
    }
    // TCP: a length prefix promising more than comes, then a hang-up.
    lab.mesh.pod(1, CLIENT).run(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(proxy)?;
        s.write_all(&[0x01, 0x00, 0xde, 0xad])?;
        Ok::<_, std::io::Error>(())
    })??;
    assert!(lab.mesh.agent_pid(1).is_some());
    let answer = lab.ask_direct(
        CLIENT,
        proxy,
        "reviews.default.svc.cluster.local",
        RecordType::A,
    )?;
    assert_eq!(addresses(&answer), [REVIEWS_VIP]);
    let dig = lab.stdout_of(CLIENT, "dig", &["+tcp", "+short", "+tries=1", "reviews"])?;
    assert_eq!(dig.trim(), REVIEWS_VIP, "dig +tcp after the junk");
    Ok(())
}

/// 1,000 queries per second for 10 s from one pod, most of them for distinct names: every
/// one is answered, and the agent's cache stays at its bound.
#[test]
fn a_burst_of_distinct_names_is_answered_and_the_cache_stays_bounded() -> Result<()> {
    let lab = DnsLab::start()?;
    let resolver = lab.mesh.pod(1, RESOLVER).ip().to_string();
    let pid = lab.mesh.agent_pid(1).context("agent pid")?;
    let rss_before = rss_kib(pid)?;
    // Paced sender and concurrent receiver on one unconnected socket: names q<i>.lab.test
    // (NXDOMAIN upstream, so each is a distinct cache entry) plus every tenth a Service.
    let script = format!(
        r#"
import socket, struct, time, select
def q(i, name):
    labels = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.'))
    return struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + labels + b'\x00\x00\x01\x00\x01'
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.setblocking(False)
rate, seconds = 1000, 10
total = rate * seconds
pending = set()
answered = 0
start = time.monotonic()
sent = 0
while sent < total or (pending and time.monotonic() - start < seconds + 5):
    due = min(total, int((time.monotonic() - start) * rate))
    while sent < due:
        name = 'reviews.default.svc.cluster.local' if sent % 10 == 0 else 'q%d.lab.test' % sent
        s.sendto(q(sent, name), ('{resolver}', 53))
        pending.add(sent & 0xffff)
        sent += 1
    r, _, _ = select.select([s], [], [], 0.001)
    while r:
        try:
            data, peer = s.recvfrom(4096)
        except BlockingIOError:
            break
        i = struct.unpack('>H', data[:2])[0]
        if i in pending and peer == ('{resolver}', 53):
            pending.discard(i)
            answered += 1
print(sent, answered, round(time.monotonic() - start, 1))
"#
    );
    let out = lab.stdout_of(CLIENT, "python3", &["-c", &script])?;
    let figures: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    ensure!(figures.len() == 3, "burst client said: {out}");
    assert_eq!(figures[0], 10_000.0, "{out}");
    assert_eq!(figures[1], figures[0], "unanswered queries: {out}");
    let entries = lab.metric("mesh_dns_cache_entries")?;
    assert!(
        entries <= CACHE_ENTRIES as f64,
        "cache holds {entries} > {CACHE_ENTRIES}"
    );
    assert!(
        entries >= (CACHE_ENTRIES / 2) as f64,
        "cache barely used: {entries}"
    );
    let grown = rss_kib(pid)?.saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "agent grew {grown} KiB over the burst");
    // Still answering.
    assert_eq!(lab.getent(CLIENT, "reviews")?, REVIEWS_VIP);
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

/// While the agent is down, names fail at once (the pinned programs still steer queries to
/// a listener that is gone: refused, not sent around the mesh); a restarted agent reuses
/// the pinned programs and answers again.
#[test]
fn names_fail_closed_while_the_agent_is_down_and_come_back_with_it() -> Result<()> {
    let mut lab = DnsLab::start()?;
    assert_eq!(lab.getent(CLIENT, "reviews")?, REVIEWS_VIP);
    lab.mesh.kill_agent(1)?;
    let started = std::time::Instant::now();
    let out = lab.run(CLIENT, "getent", &["hosts", "web.lab.test"])?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "resolved without the agent: {out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused queries should fail fast, took {:?}",
        started.elapsed()
    );
    let node = lab.mesh.lab.node(1).pod_gateway().to_string();
    let client = lab.mesh.pod(1, CLIENT).ip().to_string();
    assert!(
        lab.upstream_queries("web.lab.test")
            .iter()
            .all(|l| !l.ends_with(&format!("from {client}"))),
        "the pod reached the nameserver directly: {:?}",
        lab.upstream_queries("web.lab.test")
    );
    lab.mesh.start_agent(1)?;
    // Applied configuration lives in the agent's memory: give it again, as the API server
    // would list it to a restarted agent.
    lab.mesh.apply_all("reviews.yaml", REVIEWS_YAML)?;
    wait_for("the restarted agent answering", || {
        Ok(lab.getent(CLIENT, "reviews").ok().as_deref() == Some(REVIEWS_VIP))
    })?;
    assert_eq!(lab.getent(CLIENT, "web.lab.test")?, WEB_IP);
    assert!(
        lab.upstream_queries("query[A] web.lab.test")
            .iter()
            .any(|l| l.ends_with(&format!("from {node}")))
    );
    Ok(())
}

const SHOP_ENTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.lab.test]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 8080, name: http, protocol: HTTP}]
"#;

/// Egress: an enrolled pod calls a ServiceEntry host (resolution DNS, outside the mesh) by
/// name; the name resolves to the entry's VIP, the agent resolves the host through the
/// node's nameserver when the connection comes, reaches the server outside the mesh, and
/// counts the connection as going to the entry's host. A port the entry does not list is
/// refused.
#[test]
fn a_service_entry_host_is_reached_and_counted_as_that_host() -> Result<()> {
    let lab = DnsLab::start()?;
    let _shop = lab.mesh.serve_in_pod(
        1,
        OUTSIDER,
        &["http", "--listen", "0.0.0.0:8080", "--name", "shop"],
        8080,
    )?;
    lab.mesh.apply_all("shop.yaml", SHOP_ENTRY)?;
    let outside = lab.mesh.pod(1, OUTSIDER).ip().to_string();
    let vip = lab.getent(CLIENT, "shop.lab.test")?;
    assert_ne!(
        vip, outside,
        "the pod sees the entry's VIP, not the host's address"
    );
    let body = lab.stdout_of(
        CLIENT,
        "curl",
        &["-sS", "--max-time", "5", "http://shop.lab.test:8080/"],
    )?;
    assert!(body.contains(r#""service":"shop""#), "{body}");
    let metrics = lab.mesh.metrics(1)?;
    let counted = mesh_tests::counter(
        &metrics,
        "istio_tcp_connections_opened_total",
        &[("destination_service", "shop.lab.test")],
    );
    assert!(counted >= 1, "not counted as shop.lab.test:\n{metrics}");
    let refused = lab.run(
        CLIENT,
        "curl",
        &["-sS", "--max-time", "5", "http://shop.lab.test:9999/"],
    )?;
    assert!(
        !refused.status.success(),
        "a port the entry does not list went through"
    );
    let metrics = lab.mesh.metrics(1)?;
    let refused = mesh_tests::counter(
        &metrics,
        "mesh_connections_refused_total",
        &[("reason", "port_not_in_service")],
    );
    assert!(refused >= 1, "{metrics}");

    // outboundTrafficPolicy REGISTRY_ONLY: the same server by its bare address (no
    // ServiceEntry names it) goes through by default, and is refused once the mesh
    // configuration says so; the registered host still works.
    let direct = format!("http://{outside}:8080/");
    let curl = |url: &str| lab.run(CLIENT, "curl", &["-sS", "--max-time", "5", url]);
    assert!(curl(&direct)?.status.success(), "ALLOW_ANY passes it");
    lab.mesh.apply_all("mesh.yaml", REGISTRY_ONLY)?;
    assert!(
        !curl(&direct)?.status.success(),
        "REGISTRY_ONLY let it through"
    );
    assert!(curl("http://shop.lab.test:8080/")?.status.success());
    let metrics = lab.mesh.metrics(1)?;
    let refused = mesh_tests::counter(
        &metrics,
        "mesh_connections_refused_total",
        &[("reason", "registry_only")],
    );
    assert_eq!(refused, 1, "{metrics}");
    Ok(())
}

/// Istio's mesh configuration with only registered destinations reachable.
const REGISTRY_ONLY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
"#;
