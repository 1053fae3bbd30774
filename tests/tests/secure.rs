//! Issue 7's "done when": pod-to-pod traffic between agents is mutual TLS over HBONE, and
//! policy decides who may connect. Real agents and kernel programs, real TLS (rustls in
//! the agents, openssl as a hostile client), real captures on the lab bridge (tcpdump).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use mesh_agent::app::tcp_client::pattern_byte;
use mesh_identity::{CertificateAuthority, SpiffeId};
use mesh_tests::{Mesh, Workload, counter, eventually, records_to, wait_for};

const MIB: u64 = 1024 * 1024;

const CLIENT: Workload = Workload {
    node: 1,
    pod: 1,
    service_account: "client",
    labels: &[("app", "client")],
};
const SERVER: Workload = Workload {
    node: 2,
    pod: 1,
    service_account: "server",
    labels: &[("app", "server")],
};
/// The identity an AuthorizationPolicy allows (on another node than the server).
const ALLOWED: Workload = Workload {
    node: 1,
    pod: 1,
    service_account: "allowed",
    labels: &[("app", "client")],
};
/// A mesh identity the policy does not allow (on the server's node).
const INTRUDER: Workload = Workload {
    node: 2,
    pod: 2,
    service_account: "intruder",
    labels: &[("app", "intruder")],
};

/// The test pattern's bytes `from..from + len`, as they appear in a plaintext capture.
fn pattern_window(from: u64, len: u64) -> Vec<u8> {
    (from..from + len).map(pattern_byte).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// tcpdump on the lab bridge (between the nodes), writing a pcap file.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(mesh: &Mesh, name: &str) -> Result<Capture> {
        let file = std::env::temp_dir().join(format!("mesh-test-{}-{name}.pcap", mesh.lab.id()));
        let netns = format!("--net={}", mesh.lab.netns_path().display());
        let mut child = Command::new("nsenter")
            .args([&netns, "tcpdump", "-i", "br0", "-U", "-s", "0", "-w"])
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (cargo xtask setup installs it)")?;
        // tcpdump says "listening on br0" once the capture runs.
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .context("tcpdump did not start listening")?;
        Ok(Capture { child, file })
    }

    /// Stops the capture (tcpdump flushes on SIGINT) and returns the file's bytes.
    fn finish(&mut self) -> Result<Vec<u8>> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status()?;
        self.child.wait()?;
        Ok(std::fs::read(&self.file)?)
    }

    /// Packets of the (finished) capture matching a tcpdump filter.
    fn count(&self, filter: &str) -> Result<usize> {
        let out = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.file)
            .arg(filter)
            .output()?;
        ensure!(
            out.status.success(),
            "tcpdump -r: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).lines().count())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// TLS ClientHello records (content type 22, handshake type 1) sent to port 15008.
const CLIENT_HELLO_TO_HBONE: &str = "tcp dst port 15008 and tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16 and tcp[((tcp[12:1] & 0xf0) >> 2) + 5:1] = 0x01";

/// One value of a Prometheus counter whose labels include all of `labels`.
fn principal(sa: &str) -> String {
    format!("cluster.local/ns/default/sa/{sa}")
}

/// Between two nodes only TLS crosses the lab bridge: the payload's bytes are not in the
/// capture, TLS handshakes to 15008 are, and the same transfer to a pod outside the mesh
/// (the control) does show the payload in clear. Metrics carry both identities and
/// `mutual_tls`, with counts equal to the test's own connections.
#[test]
fn cross_node_traffic_is_mutual_tls_over_hbone() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    mesh.enroll_workloads(&[CLIENT, SERVER])?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let _plain_echo = mesh.serve_in_pod(2, 2, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let secure_dst = format!("{}:9000", mesh.pod(2, 1).ip());
    let plain_dst = format!("{}:9000", mesh.pod(2, 2).ip());
    let window = pattern_window(1000, 48);

    let mut capture = Capture::start(&mesh, "mtls")?;
    let transfers = 3;
    for _ in 0..transfers {
        let outcome = mesh.tcp_client(1, 1, &secure_dst, MIB)?;
        assert_eq!(outcome["intact"], true, "{outcome}");
    }
    let bytes = capture.finish()?;
    assert!(
        !contains(&bytes, &window),
        "the payload crossed the bridge in clear"
    );
    let hellos = capture.count(CLIENT_HELLO_TO_HBONE)?;
    assert!(hellos >= 1, "no TLS ClientHello to 15008 in the capture");
    assert_eq!(
        capture.count("tcp port 9000")?,
        0,
        "the application port was reached directly"
    );

    // The control: the same transfer to a pod outside the mesh is visible in clear, so
    // the check above can fail.
    let mut control = Capture::start(&mesh, "plain")?;
    let outcome = mesh.tcp_client(1, 1, &plain_dst, MIB)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    let plain_bytes = control.finish()?;
    assert!(
        contains(&plain_bytes, &window),
        "control transfer not seen in clear"
    );

    // Records and metrics on both sides, with identities.
    let status = eventually(&mesh, 1, "outbound records", |s| {
        records_to(s, &secure_dst).len() >= transfers
    })?;
    for record in records_to(&status, &secure_dst) {
        assert_eq!(record["security"], "mutual_tls", "{record}");
        assert_eq!(record["source_principal"], principal("client").as_str());
        assert_eq!(
            record["destination_principal"],
            principal("server").as_str()
        );
        assert_eq!(record["result"], "ok", "{record}");
        assert!(
            record["source"]
                .as_str()
                .unwrap_or("")
                .starts_with(&mesh.pod(1, 1).ip().to_string()),
            "access log shows the pod's address: {record}"
        );
    }
    let identity_labels = |reporter| {
        [
            ("reporter", reporter),
            ("source_principal", "cluster.local/ns/default/sa/client"),
            (
                "destination_principal",
                "cluster.local/ns/default/sa/server",
            ),
            ("connection_security_policy", "mutual_tls"),
        ]
    };
    let m1 = mesh.metrics(1)?;
    assert_eq!(
        counter(
            &m1,
            "istio_tcp_connections_opened_total",
            &identity_labels("source")
        ),
        transfers as u64,
        "{m1}"
    );
    assert_eq!(
        counter(
            &m1,
            "istio_tcp_sent_bytes_total",
            &identity_labels("source")
        ),
        transfers as u64 * MIB
    );
    wait_for("destination-side metrics", || {
        let m2 = mesh.metrics(2)?;
        Ok(counter(
            &m2,
            "istio_tcp_connections_closed_total",
            &identity_labels("destination"),
        ) == transfers as u64)
    })?;
    let m2 = mesh.metrics(2)?;
    assert_eq!(
        counter(
            &m2,
            "istio_tcp_received_bytes_total",
            &identity_labels("destination")
        ),
        transfers as u64 * MIB,
        "{m2}"
    );
    Ok(())
}

/// Writes a workload certificate and key as PEM files for openssl.
fn write_cert(
    dir: &Path,
    name: &str,
    cert: &mesh_identity::WorkloadCert,
) -> Result<(PathBuf, PathBuf)> {
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_file, cert.chain_pem())?;
    std::fs::write(&key_file, cert.key_pem())?;
    Ok((cert_file, key_file))
}

/// `openssl s_client` from an unenrolled pod to a pod's 15008, optionally with a client
/// certificate; sends one line so the server has to read after the handshake.
fn s_client(mesh: &Mesh, target: &str, cert: Option<&(PathBuf, PathBuf)>) -> Result<String> {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        target.into(),
        "-alpn".into(),
        "h2".into(),
        "-tls1_3".into(),
    ];
    if let Some((cert, key)) = cert {
        args.extend([
            "-cert".into(),
            cert.display().to_string(),
            "-key".into(),
            key.display().to_string(),
        ]);
    }
    let mut cmd = mesh.pod(1, 2).command("timeout");
    cmd.arg("10")
        .arg("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"hello\n");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Refused with a log line and a counted reason: no client certificate, a certificate of
/// another CA, an expired certificate (all from openssl), an identity an
/// AuthorizationPolicy does not allow; the allowed identity gets through.
#[test]
fn hostile_clients_and_denied_identities_are_refused() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    mesh.enroll_workloads(&[ALLOWED, SERVER, INTRUDER])?;
    mesh.apply_all(
        "policy.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-allow-client, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/allowed"]}}]
"#,
    )?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let server = mesh.pod(2, 1).ip();
    let hbone = format!("{server}:15008");
    let refused = |reason: &str| -> Result<u64> {
        Ok(counter(
            &mesh.metrics(2)?,
            "mesh_connections_refused_total",
            &[("direction", "inbound"), ("reason", reason)],
        ))
    };

    // No client certificate.
    let said = s_client(&mesh, &hbone, None)?;
    wait_for("refusal without a client certificate", || {
        Ok(refused("tls_no_client_certificate")? == 1)
    })
    .with_context(|| format!("openssl said: {said}"))?;

    // A certificate from another CA, with a plausible identity.
    let dir = tempdir(&mesh, "certs")?;
    let rogue_ca = CertificateAuthority::generate("cluster.local")?;
    let rogue = rogue_ca.issue(
        &SpiffeId::new("cluster.local", "default", "allowed"),
        Duration::from_secs(3600),
    )?;
    let rogue_files = write_cert(&dir, "rogue", &rogue)?;
    let said = s_client(&mesh, &hbone, Some(&rogue_files))?;
    wait_for("refusal of another CA's certificate", || {
        Ok(refused("tls_unknown_ca")? == 1)
    })
    .with_context(|| format!("openssl said: {said}"))?;

    // An expired certificate from the mesh's own CA.
    let ca = CertificateAuthority::load_or_create(
        &mesh_agent::launch::lab_ca_dir(&mesh.lab),
        "cluster.local",
    )?;
    let now = std::time::SystemTime::now();
    let expired = ca.issue_with_validity(
        &SpiffeId::new("cluster.local", "default", "allowed"),
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    )?;
    let expired_files = write_cert(&dir, "expired", &expired)?;
    let said = s_client(&mesh, &hbone, Some(&expired_files))?;
    wait_for("refusal of an expired certificate", || {
        Ok(refused("tls_expired_certificate")? == 1)
    })
    .with_context(|| format!("openssl said: {said}"))?;

    // A mesh identity the policy does not allow (same node as the server), then the
    // allowed one (across nodes).
    let dst = format!("{server}:9000");
    let denied = mesh.run_in_pod(
        2,
        2,
        mesh_tests::agent_bin(),
        &["app", "tcp-client", "--connect", &dst, "--bytes", "1024"],
    )?;
    assert!(!denied.status.success(), "the intruder got through");
    wait_for(
        "refusal by policy",
        || Ok(refused("denied_by_policy")? == 1),
    )?;
    let status = mesh.status(2)?;
    let record = mesh_tests::recent(&status)
        .into_iter()
        .find(|r| r["reason"] == "denied_by_policy")
        .context("no record of the denial")?;
    assert_eq!(record["source_principal"], principal("intruder").as_str());
    assert!(
        record["result"]
            .as_str()
            .unwrap_or("")
            .contains("default/server-allow-client"),
        "the log names the policy: {record}"
    );

    let outcome = mesh.tcp_client(1, 1, &dst, MIB)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    let log = std::fs::read_to_string(mesh.log_path(2))?;
    assert!(
        log.contains("tls_no_client_certificate")
            || log.contains("NoCertificatesPresented")
            || log.contains("certificate"),
        "the agent log says why"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir(mesh: &Mesh, name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("mesh-test-{}-{name}", mesh.lab.id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// PeerAuthentication: STRICT refuses plaintext from outside the mesh (steered to 15006);
/// PERMISSIVE accepts it; mesh workloads keep working under STRICT.
#[test]
fn strict_refuses_plaintext_and_permissive_accepts_it() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    mesh.enroll_workloads(&[CLIENT, SERVER])?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());

    // Default PERMISSIVE: n1p2 (not in the mesh) reaches the server in plaintext.
    let outcome = mesh.tcp_client(1, 2, &dst, 4096)?;
    assert_eq!(outcome["intact"], true);

    mesh.apply_all(
        "strict.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#,
    )?;
    let refused = mesh.run_in_pod(
        1,
        2,
        mesh_tests::agent_bin(),
        &["app", "tcp-client", "--connect", &dst, "--bytes", "4096"],
    )?;
    assert!(!refused.status.success(), "STRICT let plaintext in");
    eventually(&mesh, 2, "a plaintext refusal", |s| {
        mesh_tests::recent(s)
            .iter()
            .any(|r| r["reason"] == "plaintext_refused")
    })?;
    // Mesh workloads still get through (over HBONE).
    let outcome = mesh.tcp_client(1, 1, &dst, 4096)?;
    assert_eq!(outcome["intact"], true);

    // A namespace-level PERMISSIVE overrides the mesh-wide STRICT.
    mesh.apply_all(
        "permissive.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: PERMISSIVE}
"#,
    )?;
    let outcome = mesh.tcp_client(1, 2, &dst, 4096)?;
    assert_eq!(outcome["intact"], true);
    Ok(())
}

/// Certificates rotate (here every 2 s: lifetime 4 s) without breaking a connection that
/// outlives its certificate; new connections after the rotation work too.
#[test]
fn certificate_rotation_keeps_long_connections() -> Result<()> {
    let mesh = Mesh::start_with_args(2, 1, &["--cert-lifetime", "4s"])?;
    mesh.enroll_workloads(&[CLIENT, SERVER])?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());
    // Sends 8 MiB, then stays open for 6 s (past the first certificate's expiry) before
    // half-closing and reading the whole echo.
    let held = mesh.hold_tcp_client(1, 1, &dst, 8 * MIB, Duration::from_secs(6))?;
    std::thread::sleep(Duration::from_secs(3));
    let during = mesh.tcp_client(1, 1, &dst, MIB)?;
    assert_eq!(during["intact"], true, "{during}");
    let outcome = mesh_tests::finish_held(held)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    assert_eq!(outcome["received"].as_u64(), Some(8 * MIB));
    let after = mesh.tcp_client(1, 1, &dst, MIB)?;
    assert_eq!(after["intact"], true, "{after}");
    Ok(())
}

/// A transfer whose bytes keep flowing while the certificates of both ends rotate several
/// times (lifetime 4 s, so a new one every 2 s, and the one its tunnel was opened with
/// expires half-way through) arrives whole and in order.
///
/// Rotation happens when a certificate is next asked for, so new connections are made
/// during the transfer: each after a rotation opens a new tunnel (the pool retires tunnels
/// of an older certificate), which is how the test sees that rotations did happen while
/// the old tunnel went on carrying the transfer.
#[test]
fn certificate_rotation_in_the_middle_of_a_transfer_does_not_break_it() -> Result<()> {
    let mesh = Mesh::start_with_args(2, 1, &["--cert-lifetime", "4s"])?;
    mesh.enroll_workloads(&[CLIENT, SERVER])?;
    let _echo = mesh.serve_in_pod(2, 1, &["echo", "--listen", "0.0.0.0:9000"], 9000)?;
    let dst = format!("{}:9000", mesh.pod(2, 1).ip());
    let tunnels_opened = || -> Result<u64> {
        let status = mesh.status(1)?;
        status["hbone"]["tunnels_opened"]
            .as_u64()
            .context("status.hbone.tunnels_opened")
    };
    // 40 MiB at 4 MiB/s: about 10 s of bytes flowing both ways.
    const TOTAL: u64 = 40 * MIB;
    let transfer = mesh.paced_tcp_client(1, 1, &dst, TOTAL, 4 * MIB)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = tunnels_opened()?;
    let started = std::time::Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(1500));
        let probe = mesh.tcp_client(1, 1, &dst, 64 * 1024)?;
        assert_eq!(probe["intact"], true, "{probe}");
        probes += 1;
    }
    let rotated = tunnels_opened()? - before;
    let outcome = mesh_tests::finish_held(transfer)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    assert_eq!(outcome["received"].as_u64(), Some(TOTAL), "{outcome}");
    let millis = outcome["millis"].as_u64().unwrap_or_default();
    assert!(
        millis >= 9_000,
        "the transfer lasted {millis} ms: it must outlive its tunnel's certificate (4 s)"
    );
    assert!(
        rotated >= 2,
        "{probes} connections during the transfer opened {rotated} new tunnels: the \
         certificates did not rotate while it ran"
    );
    Ok(())
}

/// Between two pods of one node, IPv4 and IPv6 alike go over HBONE (the agent knows its own
/// pods' identities without any configuration).
#[test]
fn same_node_ipv4_and_ipv6_are_mutual_tls() -> Result<()> {
    let mesh = Mesh::start(1, 2)?;
    let local_server = Workload {
        node: 1,
        pod: 2,
        service_account: "server",
        labels: &[("app", "server")],
    };
    mesh.enroll_as(&CLIENT)?;
    mesh.enroll_as(&local_server)?;
    let _echo = mesh.serve_in_pod(1, 2, &["echo", "--listen", "[::]:9000"], 9000)?;
    let v4 = format!("{}:9000", mesh.pod(1, 2).ip());
    let v6 = format!("[{}]:9000", mesh.pod(1, 2).ipv6());
    for dst in [&v4, &v6] {
        let outcome = mesh.tcp_client(1, 1, dst, MIB)?;
        assert_eq!(outcome["intact"], true, "{dst}: {outcome}");
        let status = eventually(&mesh, 1, "the outbound record", |s| {
            !records_to(s, dst).is_empty()
        })?;
        for record in records_to(&status, dst) {
            assert_eq!(record["security"], "mutual_tls", "{record}");
            assert_eq!(
                record["destination_principal"],
                principal("server").as_str()
            );
        }
    }
    Ok(())
}
