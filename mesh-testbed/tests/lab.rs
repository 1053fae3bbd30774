//! Real labs: namespaces, veths, bridges and cgroups on this host. Needs root; without it
//! every test fails loudly (never a silent skip).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_testbed::{Lab, LabError, LabSpec, Pod, cgroup, current_netns_cookie};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "mesh-testbed integration tests create namespaces and cgroups: run them as root"
    );
}

fn lab(nodes: usize, pods_per_node: usize) -> Lab {
    require_root();
    Lab::create(LabSpec {
        nodes,
        pods_per_node,
    })
    .expect("create lab")
}

/// Starts a TCP server inside `pod` (socket made on a thread in its namespace, then served
/// from an ordinary thread, as the agent does). For each connection it replies with the
/// peer address it sees, a space, and the line it received.
fn serve(pod: &Pod, addr: SocketAddr) -> SocketAddr {
    let listener = pod
        .run(move || TcpListener::bind(addr))
        .expect("enter pod")
        .expect("bind");
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let peer = conn.peer_addr().unwrap();
                let mut line = String::new();
                BufReader::new(&conn).read_line(&mut line).unwrap();
                conn.write_all(format!("{} {line}", peer.ip()).as_bytes())
                    .unwrap();
            });
        }
    });
    local
}

/// Connects from inside `pod`; returns (server address as the client sees it, local
/// address, the reply).
fn call(pod: &Pod, server: SocketAddr) -> (SocketAddr, SocketAddr, String) {
    pod.run(move || -> std::io::Result<_> {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok((s.peer_addr()?, s.local_addr()?, reply))
    })
    .expect("enter pod")
    .unwrap_or_else(|e| panic!("connect from {} to {server}: {e}", pod.name()))
}

fn assert_echo(client: &Pod, server: SocketAddr) {
    let (peer, local, reply) = call(client, server);
    assert_eq!(peer, server, "client sees the server's address");
    let client_ip: IpAddr = if server.is_ipv4() {
        client.ip().into()
    } else {
        client.ipv6().into()
    };
    assert_eq!(
        local.ip(),
        client_ip,
        "{} connects from its pod address",
        client.name()
    );
    assert_eq!(
        reply,
        format!("{client_ip} hello\n"),
        "server sees the client's pod address"
    );
}

#[test]
fn pods_reach_each_other_across_and_within_nodes() {
    let lab = lab(2, 2);
    let server = lab.pod(2, 1);
    let v4 = serve(server, SocketAddr::new(server.ip().into(), 7000));
    let v6 = serve(server, SocketAddr::new(server.ipv6().into(), 7000));
    assert_eq!(v4.to_string(), "198.18.2.11:7000");

    assert_echo(lab.pod(1, 1), v4); // across nodes, via the lab bridge
    assert_echo(lab.pod(1, 2), v4); // the other node's second pod
    assert_echo(lab.pod(2, 2), v4); // same node, via the node's bridge
    assert_echo(lab.pod(1, 1), v6);
    assert_echo(lab.pod(2, 2), v6);
}

#[test]
fn loopback_works_in_pods_and_namespaces_differ() {
    let lab = lab(1, 2);
    let pod = lab.pod(1, 1);
    let v4 = serve(pod, "127.0.0.1:0".parse().unwrap());
    let v6 = serve(pod, "[::1]:0".parse().unwrap());
    for server in [v4, v6] {
        let (_, _, reply) = call(pod, server);
        assert_eq!(reply, format!("{} hello\n", server.ip()));
    }
    let cookie = |p: &Pod| p.run(current_netns_cookie).unwrap().unwrap();
    let host = current_netns_cookie().unwrap();
    let (a, b) = (cookie(lab.pod(1, 1)), cookie(lab.pod(1, 2)));
    assert!(
        a != b && a != host && b != host,
        "cookies {a} {b} host {host}"
    );
    assert_eq!(a, cookie(lab.pod(1, 1)), "cookie is stable");
}

#[test]
fn pod_command_runs_in_pod_cgroup_and_netns() {
    let lab = lab(1, 1);
    let pod = lab.pod(1, 1);
    let out = pod
        .command("sh")
        .arg("-c")
        .arg("cat /proc/self/cgroup; readlink /proc/self/ns/net; ls -d /sys/fs/bpf")
        .output()
        .expect("spawn in pod");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();

    let mount = cgroup::cgroup2_mount().unwrap();
    let rel = pod.cgroup_path().strip_prefix(&mount).unwrap();
    let want_cgroup = format!("0::/{}", rel.display());
    assert!(
        stdout.lines().any(|l| l == want_cgroup),
        "{want_cgroup} not in:\n{stdout}"
    );
    let ino = std::fs::metadata(pod.netns_path()).unwrap().ino();
    let want_ns = format!("net:[{ino}]");
    assert!(
        stdout.lines().any(|l| l == want_ns),
        "{want_ns} not in:\n{stdout}"
    );
    // The mount namespace is the host's: /sys is not remounted (unlike `ip netns exec`).
    assert!(
        stdout.lines().any(|l| l == "/sys/fs/bpf"),
        "/sys/fs/bpf hidden:\n{stdout}"
    );

    let node = lab.node(1);
    let out = node
        .command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "forwarding on in the node"
    );
    let out = node
        .command("cat")
        .arg("/proc/self/cgroup")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("mesh-"),
        "node command has no cgroup"
    );
}

fn netns_names() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Nothing named after run `id` is left on the host.
fn assert_gone(id: &str) {
    let netns = netns_names();
    assert!(
        !netns.contains(&format!("mt{id}-")),
        "namespaces of {id} left:\n{netns}"
    );
    let mount = cgroup::cgroup2_mount().unwrap();
    assert!(
        !mount.join(format!("mesh-{id}")).exists(),
        "cgroup of {id} left"
    );
    let etc = std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten();
    let left: Vec<_> = etc
        .filter(|e| e.file_name().to_string_lossy().contains(id))
        .collect();
    assert!(left.is_empty(), "/etc/netns entries of {id} left: {left:?}");
}

fn is_alive(pid: u32) -> bool {
    // Zombies still have /proc entries; count only processes that are not dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn drop_removes_everything_and_kills_processes() {
    let lab = lab(2, 1);
    let id = lab.id().to_owned();
    let pod = lab.pod(1, 1);
    pod.write_hosts(&[(
        pod.ip().into(),
        vec!["reviews".into(), "reviews.default".into()],
    )])
    .unwrap();
    let hosts = std::fs::read_to_string(pod.hosts_path()).unwrap();
    assert!(
        hosts.contains("198.18.1.11\treviews reviews.default\n"),
        "{hosts}"
    );

    let tracked = lab.spawn(pod.command("sleep").arg("1000")).unwrap();
    let tracked_node = lab.spawn(lab.node(2).command("sleep").arg("1000")).unwrap();
    // Not tracked: only the pod's cgroup can find it.
    let mut untracked = lab.pod(2, 1).command("sleep").arg("1000").spawn().unwrap();
    assert!(tracked.try_wait().unwrap().is_none());
    assert!(netns_names().contains(&format!("mt{id}-n2p1")));

    let start = Instant::now();
    drop(lab);
    eprintln!("cleanup took {:?}", start.elapsed());
    assert_gone(&id);
    assert!(
        tracked.try_wait().unwrap().is_some(),
        "tracked pod child killed and reaped"
    );
    assert!(
        tracked_node.try_wait().unwrap().is_some(),
        "tracked node child killed"
    );
    assert!(
        untracked.wait().unwrap().code().is_none(),
        "untracked pod child killed by signal"
    );
    assert!(!is_alive(tracked.pid()));
}

#[test]
fn a_pod_added_to_a_running_lab_is_reached_and_removed_with_it() {
    let mut lab = lab(2, 1);
    let id = lab.id().to_owned();
    let added = lab.add_pod(2).expect("add a pod to node 2").clone();
    assert_eq!(added.name(), "n2p2");
    assert_eq!(added.ip().to_string(), "198.18.2.12");
    assert_eq!(lab.node(2).pods().len(), 2);
    assert!(added.cgroup_path().is_dir(), "the new pod has its cgroup");

    let server = serve(&added, SocketAddr::new(added.ip().into(), 7000));
    assert_echo(lab.pod(1, 1), server); // across nodes
    assert_echo(lab.pod(2, 1), server); // same node
    let v6 = serve(&added, SocketAddr::new(added.ipv6().into(), 7000));
    assert_echo(lab.pod(1, 1), v6);
    let back = serve(
        lab.pod(1, 1),
        SocketAddr::new(lab.pod(1, 1).ip().into(), 7001),
    );
    assert_echo(&added, back);

    let tracked = lab.spawn(added.command("sleep").arg("1000")).unwrap();
    let err = lab.add_pod(3).expect_err("node 3 does not exist");
    assert!(err.to_string().contains("no node 3"), "{err}");
    drop(lab);
    assert_gone(&id);
    assert!(
        !is_alive(tracked.pid()),
        "the added pod's process is killed"
    );
}

#[test]
fn cleanup_is_idempotent() {
    let lab = lab(1, 1);
    let id = lab.id().to_owned();
    lab.cleanup();
    lab.cleanup();
    assert_gone(&id);
    drop(lab);
}

#[test]
fn two_labs_at_once_do_not_collide() {
    require_root();
    let create = || {
        std::thread::spawn(|| {
            Lab::create(LabSpec {
                nodes: 2,
                pods_per_node: 1,
            })
        })
    };
    let (a, b) = (create(), create());
    let (a, b) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
    assert_ne!(a.id(), b.id());
    assert_ne!(a.pod(1, 1).cgroup_path(), b.pod(1, 1).cgroup_path());
    // Same addresses in both labs, but separate namespaces: each answers its own clients.
    let sa = serve(a.pod(2, 1), SocketAddr::new(a.pod(2, 1).ip().into(), 7100));
    let sb = serve(b.pod(2, 1), SocketAddr::new(b.pod(2, 1).ip().into(), 7100));
    assert_echo(a.pod(1, 1), sa);
    assert_echo(b.pod(1, 1), sb);
    let (ida, idb) = (a.id().to_owned(), b.id().to_owned());
    drop(a);
    assert_echo(b.pod(1, 1), sb); // still works after the other lab is gone
    drop(b);
    assert_gone(&ida);
    assert_gone(&idb);
}

#[test]
fn failure_midway_removes_partial_lab() {
    require_root();
    for step in mesh_testbed::lab::STEPS {
        let err = Lab::create_with_fault(
            LabSpec {
                nodes: 2,
                pods_per_node: 2,
            },
            step,
        )
        .expect_err("fault injected");
        assert!(matches!(err, LabError::Injected { .. }), "{err}");
        assert_gone(err.run_id().expect("run id in error"));
    }
}

#[test]
fn invalid_spec_is_rejected() {
    require_root();
    let err = Lab::create(LabSpec {
        nodes: 0,
        pods_per_node: 1,
    })
    .unwrap_err();
    assert!(matches!(err, LabError::Spec(_)), "{err}");
}

#[test]
fn create_2x3_is_fast() {
    require_root();
    let start = Instant::now();
    let lab = Lab::create(LabSpec {
        nodes: 2,
        pods_per_node: 3,
    })
    .unwrap();
    let created = start.elapsed();
    let s = serve(
        lab.pod(2, 3),
        SocketAddr::new(lab.pod(2, 3).ip().into(), 7200),
    );
    assert_echo(lab.pod(1, 3), s);
    drop(lab);
    eprintln!(
        "2x3 lab: created in {created:?}, total with cleanup {:?}",
        start.elapsed()
    );
    assert!(
        created < Duration::from_secs(5),
        "creation took {created:?}"
    );
}

#[test]
fn unenrolled_pod_is_an_ordinary_client() {
    // Enrollment is the agent's business; a pod nobody enrolls is the "not enrolled"
    // namespace tests need. It still has a cgroup, which is simply left alone.
    let lab = lab(1, 2);
    assert!(Path::new(lab.pod(1, 2).cgroup_path()).is_dir());
    let s = serve(
        lab.pod(1, 1),
        SocketAddr::new(lab.pod(1, 1).ip().into(), 7300),
    );
    assert_echo(lab.pod(1, 2), s);
}

/// Env var that turns `signal_cleanup_helper` into the child of `sigterm_cleans_up_and_exits`.
const SIGNAL_HELPER_ENV: &str = "MESH_TESTBED_SIGNAL_HELPER";

#[test]
fn signal_cleanup_helper() {
    // Only does something when re-executed by `sigterm_cleans_up_and_exits`.
    if std::env::var_os(SIGNAL_HELPER_ENV).is_none() {
        return;
    }
    mesh_testbed::install_signal_cleanup().unwrap();
    let lab = lab(1, 1);
    let _child = lab
        .spawn(lab.pod(1, 1).command("sleep").arg("1000"))
        .unwrap();
    println!("LAB_ID={}", lab.id());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    panic!("the signal never came");
}

#[test]
fn sigterm_cleans_up_and_exits() {
    require_root();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "signal_cleanup_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SIGNAL_HELPER_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let id = lines
        // libtest prints "test signal_cleanup_helper ... " on the same line first.
        .find_map(|l| Some(l.unwrap().split_once("LAB_ID=")?.1.trim().to_owned()))
        .expect("helper printed its lab id");
    assert!(netns_names().contains(&format!("mt{id}-n1p1")));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "exit status after SIGTERM");
    assert_gone(&id);
}
