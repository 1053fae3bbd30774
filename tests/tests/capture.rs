//! Issue 3's "done when": outbound capture across nodes, what is never captured, inbound
//! plaintext steering, restart and uninstall. Real agents, real kernel programs, real
//! clients (the agent's `app tcp-client`, curl) in network namespaces and cgroups.
use std::time::Duration;

use anyhow::Result;
use mesh_tests::{Mesh, eventually, opened, records_to};

const MIB: u64 = 1024 * 1024;

/// An unmodified client in pod n1p1 reaching pod n2p1 by IP goes through node 1's agent,
/// with the right original destination; 1 B, 1 MiB and 100 MiB arrive intact both ways
/// (the echo comes back), and half-close works (the client half-closes first and still
/// reads the whole echo).
#[test]
fn cross_node_outbound_is_captured_intact_with_half_close() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    mesh.enroll(1, 1)?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());
    for bytes in [1, MIB, 100 * MIB] {
        let outcome = mesh.tcp_client(1, 1, &dst, bytes)?;
        assert_eq!(outcome["intact"], true, "{bytes} bytes: {outcome}");
        assert_eq!(outcome["received"].as_u64(), Some(bytes));
        let status = eventually(&mesh, 1, "a record of the transfer", |s| {
            records_to(s, &dst)
                .iter()
                .any(|r| r["bytes_sent"].as_u64() == Some(bytes))
        })?;
        let record = records_to(&status, &dst)
            .into_iter()
            .find(|r| r["bytes_sent"].as_u64() == Some(bytes))
            .expect("record");
        assert_eq!(record["direction"], "outbound");
        assert_eq!(record["bytes_received"].as_u64(), Some(bytes));
        assert_eq!(record["result"], "ok", "{record}");
    }

    // curl, and the server sees the client pod's own address (the agent connects from
    // inside the pod's namespace).
    let _http = mesh.serve_in_pod(
        2,
        2,
        &["http", "--listen", "0.0.0.0:8080", "--name", "reviews"],
        8080,
    )?;
    let url = format!("http://{}:8080/reviews/1", mesh.pod(2, 2).ip());
    let out = mesh.run_in_pod(1, 1, "curl", &["-sS", "--max-time", "10", &url])?;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(body["service"], "reviews");
    assert_eq!(body["path"], "/reviews/1");
    assert!(
        body["peer"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{}:", mesh.pod(1, 1).ip())),
        "{body}"
    );
    let http_dst = format!("{}:8080", mesh.pod(2, 2).ip());
    eventually(&mesh, 1, "a record of the curl request", |s| {
        !records_to(s, &http_dst).is_empty()
    })?;
    Ok(())
}

/// Not captured: a pod that is not enrolled, loopback inside an enrolled pod, and the
/// agent's own upstream connection (exactly one record per client connection). IPv6 to
/// another pod is captured like IPv4.
#[test]
fn only_enrolled_non_loopback_traffic_is_captured_and_ipv6_works() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    mesh.enroll(1, 1)?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "[::]:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());

    // Unenrolled pod n1p2: reaches the server, the agent sees nothing.
    let before = mesh.status(1)?;
    let outcome = mesh.tcp_client(1, 2, &dst, 4096)?;
    assert_eq!(outcome["intact"], true);
    assert_eq!(
        outcome["peer"],
        dst.as_str(),
        "unenrolled client talks to the server directly"
    );
    std::thread::sleep(Duration::from_millis(200));
    let after = mesh.status(1)?;
    assert_eq!(
        opened(&after),
        opened(&before),
        "an unenrolled pod was captured"
    );
    assert_eq!(
        after["kernel"]["redirected"],
        before["kernel"]["redirected"]
    );

    // Loopback inside the enrolled pod: untouched.
    let _local = mesh.serve_in_pod(1, 1, &["echo", "--listen", "127.0.0.1:9100"], 9100)?;
    let before = mesh.status(1)?;
    let outcome = mesh.tcp_client(1, 1, "127.0.0.1:9100", 4096)?;
    assert_eq!(outcome["intact"], true);
    assert_eq!(outcome["peer"], "127.0.0.1:9100");
    let after = mesh.status(1)?;
    assert_eq!(
        opened(&after),
        opened(&before),
        "loopback traffic was captured"
    );
    assert!(after["kernel"]["passed"].as_u64() > before["kernel"]["passed"].as_u64());

    // One captured connection = one record and one redirect: the agent's own upstream
    // socket, created in the pod's namespace, is not captured again, although the agent
    // runs below the capture cgroup (as a DaemonSet pod under kubepods): its sockets
    // carry its mark, which the programs skip.
    let pid = mesh.agent_pid(1).expect("agent running");
    let agent_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let node_cgroup = mesh.lab.node(1).cgroup_path().to_path_buf();
    let relative = node_cgroup
        .strip_prefix(mesh_testbed::cgroup::cgroup2_mount()?)?
        .to_string_lossy()
        .into_owned();
    assert!(
        agent_cgroup
            .lines()
            .any(|l| l.starts_with("0::") && l.contains(&format!("/{relative}/"))),
        "the agent is not below the capture cgroup {relative}: {agent_cgroup}"
    );
    let before = mesh.status(1)?;
    let outcome = mesh.tcp_client(1, 1, &dst, 1000)?;
    assert_eq!(outcome["intact"], true);
    // getpeername4 answers with the original destination: the app cannot tell.
    assert_eq!(outcome["peer"], dst.as_str());
    let after = eventually(&mesh, 1, "one closed connection", |s| {
        s["connections"]["closed"].as_u64() > before["connections"]["closed"].as_u64()
    })?;
    assert_eq!(opened(&after), opened(&before) + 1);
    assert_eq!(
        after["kernel"]["redirected"].as_u64(),
        before["kernel"]["redirected"].as_u64().map(|n| n + 1)
    );

    // IPv6 pod-to-pod: captured through the [::1]:15001 listener, intact, and the app
    // still sees the address it dialled.
    let dst6 = format!("[{}]:9000", mesh.pod(2, 1).ipv6());
    let outcome = mesh.tcp_client(1, 1, &dst6, MIB)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    assert_eq!(outcome["peer"], dst6.as_str());
    eventually(&mesh, 1, "a record of the IPv6 connection", |s| {
        !records_to(s, &dst6).is_empty()
    })?;
    Ok(())
}

/// Plaintext from a namespace outside the mesh to an enrolled pod's port is steered by
/// sk_lookup to the agent's 15006 listener and reaches the application.
#[test]
fn inbound_plaintext_reaches_the_app_through_the_agent() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    mesh.enroll(2, 1)?;
    let _http = mesh.serve_in_pod(
        2,
        1,
        &["http", "--listen", "0.0.0.0:8080", "--name", "ratings"],
        8080,
    )?;
    let url = format!("http://{}:8080/ratings/0", mesh.pod(2, 1).ip());
    let out = mesh.run_in_pod(1, 2, "curl", &["-sS", "--max-time", "10", &url])?;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(body["service"], "ratings");
    let dst = format!("{}:8080", mesh.pod(2, 1).ip());
    let status = eventually(&mesh, 2, "an inbound record", |s| {
        records_to(s, &dst)
            .iter()
            .any(|r| r["direction"] == "inbound")
    })?;
    let record = records_to(&status, &dst)
        .into_iter()
        .find(|r| r["direction"] == "inbound")
        .expect("record");
    assert!(
        record["source"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{}:", mesh.pod(1, 2).ip())),
        "{record}"
    );
    assert!(status["kernel"]["steered"].as_u64() >= Some(1));

    // A large transfer both ways through the inbound path.
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let outcome = mesh.tcp_client(1, 2, &format!("{}:9000", mesh.pod(2, 1).ip()), 8 * MIB)?;
    assert_eq!(outcome["intact"], true);
    Ok(())
}

/// A killed agent leaves its programs pinned; the restarted agent reuses them (same
/// kernel program ids), re-enrolls its pods and captures new connections. Uninstall
/// leaves no pins; the lab's cleanup leaves no namespaces or cgroups.
#[test]
fn restart_reuses_pins_and_uninstall_leaves_nothing() -> Result<()> {
    let mut mesh = Mesh::start(2, 1)?;
    mesh.enroll(1, 1)?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());
    assert_eq!(mesh.tcp_client(1, 1, &dst, 1000)?["intact"], true);
    let programs_before = mesh.status(1)?["programs"].clone();

    // An app in the enrolled pod, for the inbound side.
    let _local_app = mesh.serve_in_pod(1, 1, &["echo", "--listen", "0.0.0.0:9100"], 9100)?;
    let inbound = format!("{}:9100", mesh.pod(1, 1).ip());
    assert_eq!(mesh.tcp_client(2, 1, &inbound, 1000)?["intact"], true);

    mesh.kill_agent(1)?;
    // Inbound fails closed while no agent runs: sk_lookup drops the SYN to the enrolled
    // address (the kernel answers with a RST) instead of letting it reach the app around
    // the mesh, although the app is listening. `timeout` only bounds the attempt.
    let out = mesh.run_in_pod(
        2,
        1,
        "timeout",
        &[
            "2",
            mesh_tests::agent_bin().to_str().unwrap_or_default(),
            "app",
            "tcp-client",
            "--connect",
            &inbound,
        ],
    )?;
    assert!(
        !out.status.success(),
        "inbound bypassed the stopped agent: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let pin_dir = mesh.agents[0].pin_dir();
    assert!(
        pin_dir.join("prog_mesh_connect4").exists(),
        "pins vanished with the agent"
    );
    assert!(
        pin_dir.join("links").read_dir()?.next().is_some(),
        "links vanished with the agent"
    );

    mesh.start_agent(1)?;
    let status = mesh.status(1)?;
    assert_eq!(
        status["programs"], programs_before,
        "the restarted agent loaded new programs"
    );
    assert_eq!(
        status["pods"].as_array().map(Vec::len),
        Some(1),
        "the pod was not re-enrolled"
    );
    let outcome = mesh.tcp_client(1, 1, &dst, MIB)?;
    assert_eq!(outcome["intact"], true);
    assert!(
        mesh.status(1)?["kernel"]["dropped"].as_u64() >= Some(1),
        "no inbound SYN was dropped"
    );
    assert_eq!(
        mesh.tcp_client(2, 1, &inbound, 1000)?["intact"],
        true,
        "inbound after restart"
    );
    eventually(&mesh, 1, "capture after restart", |s| {
        records_to(s, &dst)
            .iter()
            .any(|r| r["bytes_sent"].as_u64() == Some(MIB))
    })?;

    mesh.kill_agent(1)?;
    mesh.uninstall(1)?;
    assert!(!pin_dir.exists(), "uninstall left {}", pin_dir.display());
    // Capture is off once uninstalled: were the programs still attached with no agent,
    // the connect would go to a listener that is gone and be refused.
    let outcome = mesh.tcp_client(1, 1, &dst, 1000)?;
    assert_eq!(outcome["intact"], true);

    let id = mesh.lab.id().to_string();
    let cgroup_root = mesh.lab.cgroup_root().to_path_buf();
    drop(mesh);
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&id),
        "namespaces of run {id} left behind"
    );
    assert!(
        !cgroup_root.exists(),
        "cgroup {} left behind",
        cgroup_root.display()
    );
    Ok(())
}

/// Bad enrollment requests get a clear error naming the problem and leave the other pods
/// (and their traffic) alone.
#[test]
fn bad_enrollment_requests_are_refused_cleanly() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    mesh.enroll(1, 1)?;
    let client = mesh.client(1);

    let mut missing_netns = mesh.pod_spec(1, 2);
    missing_netns.netns = "/var/run/netns/does-not-exist".into();
    let err = mesh
        .block_on(client.enroll(&missing_netns))
        .expect_err("missing netns accepted");
    assert!(
        err.to_string().contains("400") && err.to_string().contains("netns"),
        "{err}"
    );

    let mut missing_cgroup = mesh.pod_spec(1, 2);
    missing_cgroup.cgroup = Some("/sys/fs/cgroup/unified/does-not-exist".into());
    let err = mesh
        .block_on(client.enroll(&missing_cgroup))
        .expect_err("missing cgroup accepted");
    assert!(err.to_string().contains("cgroup"), "{err}");

    // A cgroup outside the node's capture cgroup (node 2's pod, on node 1's agent): its
    // sockets would never meet the programs, so the agent says so instead of pretending.
    let mut elsewhere = mesh.pod_spec(1, 2);
    elsewhere.cgroup = mesh.pod_spec(2, 1).cgroup;
    let err = mesh
        .block_on(client.enroll(&elsewhere))
        .expect_err("a cgroup outside the capture cgroup accepted");
    assert!(
        err.to_string().contains("400") && err.to_string().contains("capture cgroup"),
        "{err}"
    );

    let err = mesh
        .block_on(client.enroll(&mesh.pod_spec(1, 1)))
        .expect_err("duplicate accepted");
    assert!(
        err.to_string().contains("409") && err.to_string().contains("already enrolled"),
        "{err}"
    );

    let mut same_ip = mesh.pod_spec(1, 2);
    same_ip.ips = mesh.pod_spec(1, 1).ips;
    let err = mesh
        .block_on(client.enroll(&same_ip))
        .expect_err("address clash accepted");
    assert!(err.to_string().contains("ips"), "{err}");

    let err = mesh
        .block_on(client.call(
            hyper_method_post(),
            "/v1/pods",
            Some(b"{\"name\": 7}".to_vec()),
        ))
        .expect_err("malformed accepted");
    assert!(
        err.to_string().contains("400") && err.to_string().contains("malformed"),
        "{err}"
    );

    // The enrolled pod still works and is the only one.
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());
    let outcome = mesh.tcp_client(1, 1, &dst, 10_000)?;
    assert_eq!(outcome["intact"], true);
    eventually(&mesh, 1, "the connection captured", |s| {
        !records_to(s, &dst).is_empty()
    })?;
    assert_eq!(mesh.status(1)?["pods"].as_array().map(Vec::len), Some(1));

    // Removing it stops capture for it: its connects go direct again (were the programs
    // still attached, they would reach a listener that is gone and be refused).
    mesh.block_on(client.unenroll("default", &mesh.pod_spec(1, 1).name))?;
    let before = mesh.status(1)?;
    let outcome = mesh.tcp_client(1, 1, &dst, 10_000)?;
    assert_eq!(outcome["intact"], true);
    let after = mesh.status(1)?;
    assert_eq!(
        before["kernel"]["redirected"],
        after["kernel"]["redirected"]
    );
    assert!(
        after["links"].as_array().is_some_and(Vec::is_empty),
        "{after}"
    );
    Ok(())
}

fn hyper_method_post() -> mesh_agent::api::client::Method {
    mesh_agent::api::client::Method::POST
}

/// Enrollments racing each other, then a crash: every pod comes back captured. (Before
/// `pods.json` was written under the pods lock, two enrollments could persist an older
/// list last, and the restarted agent forgot a pod while its address stayed enrolled.)
#[test]
fn concurrent_enrollments_survive_a_restart() -> Result<()> {
    const PODS: usize = 6;
    let mut mesh = Mesh::start(2, PODS)?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());
    let requests: Vec<_> = (1..=PODS)
        .map(|p| (mesh.client(1), mesh.pod_spec(1, p)))
        .collect();
    mesh.block_on(async {
        let mut racing = tokio::task::JoinSet::new();
        for (client, spec) in requests {
            racing.spawn(async move { client.enroll(&spec).await });
        }
        while let Some(done) = racing.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    assert_eq!(mesh.status(1)?["pods"].as_array().map(Vec::len), Some(PODS));

    mesh.kill_agent(1)?;
    mesh.start_agent(1)?;
    let status = mesh.status(1)?;
    assert_eq!(
        status["pods"].as_array().map(Vec::len),
        Some(PODS),
        "the restarted agent forgot a pod: {:#}",
        status["pods"]
    );
    for pod in 1..=PODS {
        let outcome = mesh.tcp_client(1, pod, &dst, 1000)?;
        assert_eq!(outcome["intact"], true);
    }
    eventually(&mesh, 1, "every pod's connection captured", |s| {
        records_to(s, &dst).len() >= PODS
    })?;
    Ok(())
}

/// Connection attempts from a pod, one after the other, for `seconds`.
const CONNECT_LOOP: &str = r#"
import json, socket, sys, time
target, seconds = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
attempts = succeeded = 0
end = time.time() + seconds
while time.time() < end:
    attempts += 1
    try:
        with socket.create_connection(target, timeout=0.5) as s:
            s.sendall(b"x")
            succeeded += s.recv(1) == b"x"
    except OSError:
        time.sleep(0.01)
print(json.dumps({"attempts": attempts, "succeeded": succeeded}))
"#;

/// An agent of another build started over the pins of an earlier one replaces the
/// programs the pods' links run (in place, with BPF_LINK_UPDATE), and no connection made
/// across the swap escapes capture: every attempt went through the new or the old
/// program.
#[test]
fn a_new_build_replaces_the_pinned_programs_in_place() -> Result<()> {
    let mut mesh = Mesh::start(1, 2)?;
    mesh.enroll(1, 1)?;
    let _echo = mesh.serve_in_pod(1, 2, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let before = mesh.status(1)?;
    // The pins now look like another build's.
    let pin_dir = mesh.agents[0].pin_dir();
    let ours = std::fs::read_dir(&pin_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("stamp-"))
        .expect("the agent stamps its pins");
    std::fs::remove_dir(pin_dir.join(&ours))?;
    std::fs::create_dir(pin_dir.join("stamp-0000000000000000"))?;

    let script = std::env::temp_dir().join(format!("mesh-test-{}-connect.py", mesh.lab.id()));
    std::fs::write(&script, CONNECT_LOOP)?;
    let target = mesh.pod(1, 2).ip().to_string();
    let looping = mesh
        .pod(1, 1)
        .command("python3")
        .args([script.to_str().unwrap_or_default(), &target, "9000", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    mesh.kill_agent(1)?;
    mesh.start_agent(1)?;
    let out = looping.wait_with_output()?;
    let _ = std::fs::remove_file(&script);
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let after = mesh.status(1)?;

    for (name, id) in before["programs"].as_object().expect("program ids") {
        assert_ne!(&after["programs"][name], id, "{name} was not replaced");
    }
    assert_eq!(
        after["links"], before["links"],
        "the same links, now running new programs"
    );
    assert!(
        pin_dir.join(&ours).exists(),
        "the pins carry the new build's stamp"
    );
    assert!(!pin_dir.join("stamp-0000000000000000").exists());
    let redirected = |s: &serde_json::Value| s["kernel"]["redirected"].as_u64().unwrap_or(0);
    assert_eq!(
        redirected(&after) - redirected(&before),
        outcome["attempts"].as_u64().unwrap_or(0),
        "every attempt was captured: {outcome}"
    );
    assert!(outcome["succeeded"].as_u64() > Some(0), "{outcome}");
    // And the new programs capture as the old ones did.
    let outcome = mesh.tcp_client(1, 1, &format!("{target}:9000"), 64 * 1024)?;
    assert_eq!(outcome["intact"], true);
    Ok(())
}

/// The kernel counters are per CPU and summed by the agent: two clients connecting at
/// the same time (one curl process per CPU, 200 connections each) are each counted once,
/// `redirected` and `handed_over` alike, with nothing lost to a racing increment.
#[test]
fn kernel_counters_count_every_concurrent_connect_exactly() -> Result<()> {
    let mesh = Mesh::start(1, 2)?;
    mesh.enroll(1, 1)?;
    let _http = mesh.serve_in_pod(
        1,
        2,
        &["http", "--listen", "0.0.0.0:8080", "--name", "web"],
        8080,
    )?;
    let before = mesh.status(1)?;
    // One connection per request (`Connection: close`); `%{num_connects}` says how many
    // each transfer opened, so the expected count does not depend on curl's reuse.
    let url = format!("http://{}:8080/c[1-200]", mesh.pod(1, 2).ip());
    let clients: Vec<std::process::Child> = (0..2)
        .map(|_| {
            mesh.pod(1, 1)
                .command("curl")
                .args(["-s", "-o", "/dev/null", "--max-time", "60"])
                .args(["-H", "Connection: close", "-w", "%{num_connects}\n", &url])
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut connects = 0;
    for client in clients {
        let out = client.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "curl failed");
        connects += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    assert!(connects >= 400, "curl made {connects} connections");
    let count = |s: &serde_json::Value, key: &str| s["kernel"][key].as_u64().unwrap_or(0);
    let after = eventually(&mesh, 1, "every connection handed over", |s| {
        count(s, "handed_over") >= count(&before, "handed_over") + connects
    })?;
    assert_eq!(
        count(&after, "redirected") - count(&before, "redirected"),
        connects
    );
    assert_eq!(
        count(&after, "handed_over") - count(&before, "handed_over"),
        connects
    );
    Ok(())
}
