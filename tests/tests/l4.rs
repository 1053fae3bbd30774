//! L4 correctness: what an application behind the mesh sees, and what the node agent
//! reports about the connections it could not complete.
use std::{path::PathBuf, time::Duration};

use anyhow::{Result, ensure};
use mesh_tests::{Mesh, Workload, counter, wait_for};

fn log_file(mesh: &Mesh, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mesh-test-{}-{name}.log", mesh.lab.id()))
}

/// An unmodified `python3 -m http.server` logs each client's own address, whichever way
/// the connection came: mutual TLS from another node, from the same node, or plaintext
/// from a pod outside the mesh; over IPv4 and IPv6.
#[test]
fn servers_see_the_real_client_address() -> Result<()> {
    let mesh = Mesh::start(2, 2)?;
    let workloads = [
        Workload {
            node: 1,
            pod: 1,
            service_account: "server",
            labels: &[("app", "server")],
        },
        Workload {
            node: 1,
            pod: 2,
            service_account: "near",
            labels: &[("app", "near")],
        },
        Workload {
            node: 2,
            pod: 1,
            service_account: "far",
            labels: &[("app", "far")],
        },
    ];
    mesh.enroll_workloads(&workloads)?;
    let logs = [log_file(&mesh, "http-v4"), log_file(&mesh, "http-v6")];
    let _servers =
        [("0.0.0.0", 8080, &logs[0]), ("::", 8081, &logs[1])].map(|(bind, port, log)| {
            let script = format!(
                "exec python3 -u -m http.server {port} --bind {bind} 2>{}",
                log.display()
            );
            mesh.spawn_in_pod(1, 1, &["sh", "-c", &script])
        });
    let server = mesh.pod(1, 1);
    let urls = [
        format!("http://{}:8080/", server.ip()),
        format!("http://[{}]:8081/", server.ipv6()),
    ];
    wait_for("the servers to listen", || {
        Ok(logs.iter().all(|l| l.exists()))
    })?;
    // (node, pod): same node over HBONE, other node over HBONE, outside the mesh.
    let clients = [(1, 2), (2, 1), (2, 2)];
    for (node, pod) in clients {
        for url in &urls {
            let mut last = String::new();
            let answered = (0..50).any(|_| {
                let out = mesh.run_in_pod(
                    node,
                    pod,
                    "curl",
                    &["-sS", "-o", "/dev/null", "--max-time", "5", url],
                );
                match out {
                    Ok(out) if out.status.success() => true,
                    Ok(out) => {
                        last = String::from_utf8_lossy(&out.stderr).into_owned();
                        std::thread::sleep(Duration::from_millis(100));
                        false
                    }
                    Err(e) => {
                        last = e.to_string();
                        false
                    }
                }
            });
            ensure!(answered, "n{node}p{pod} -> {url}: {last}");
        }
    }
    let v4_log = std::fs::read_to_string(&logs[0])?;
    let v6_log = std::fs::read_to_string(&logs[1])?;
    for (node, pod) in clients {
        let client = mesh.pod(node, pod);
        let v4 = format!("{} - - ", client.ip());
        let v6 = format!("{} - - ", client.ipv6());
        ensure!(
            v4_log.contains(&v4),
            "n{node}p{pod} ({v4}) not in:\n{v4_log}"
        );
        ensure!(
            v6_log.contains(&v6),
            "n{node}p{pod} ({v6}) not in:\n{v6_log}"
        );
    }
    let own = format!("{} - - ", server.ip());
    ensure!(!v4_log.contains(&own), "the server saw itself:\n{v4_log}");
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    Ok(())
}

/// 2 × `rounds` HTTP requests from a pod, each on a new connection: `web` and `side`
/// alternately. Returns how many `web` answers each server gave, and the failures.
const ROUNDS_CLIENT: &str = r#"
import collections, json, sys, urllib.request
web, side, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts, failures = collections.Counter(), []
for _ in range(rounds):
    for url in (web, side):
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                served_by = json.load(answer)["service"]
            if url == web:
                counts[served_by] += 1
        except Exception as e:
            failures.append(f"{url}: {e}")
print(json.dumps({"counts": counts, "failures": failures[:5], "failed": len(failures)}))
"#;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 198.19.40.1
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: side, namespace: default}
spec:
  clusterIP: 198.19.40.2
  selector: {app: side}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn rounds(mesh: &Mesh, script: &std::path::Path, n: usize) -> Result<serde_json::Value> {
    let out = mesh.run_in_pod(
        1,
        1,
        "python3",
        &[
            script.to_str().unwrap_or_default(),
            "http://198.19.40.1/",
            "http://198.19.40.2/",
            &n.to_string(),
        ],
    )?;
    ensure!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Round robin per Service, with another Service called in between; an endpoint removed
/// from the configuration gets nothing more; a killed endpoint is skipped without a single
/// client connection failing.
#[test]
fn service_connections_spread_evenly_and_skip_dead_endpoints() -> Result<()> {
    let mesh = Mesh::start(2, 4)?;
    let web = [("app", "web")];
    let side = [("app", "side")];
    let client = Workload {
        node: 1,
        pod: 1,
        service_account: "client",
        labels: &[("app", "client")],
    };
    let endpoint = |node, pod, labels| Workload {
        node,
        pod,
        service_account: "server",
        labels,
    };
    let mut workloads = vec![
        client,
        endpoint(1, 2, &web),
        endpoint(2, 1, &web),
        endpoint(2, 2, &web),
        endpoint(1, 3, &side),
        endpoint(2, 3, &side),
    ];
    mesh.enroll_workloads(&workloads)?;
    mesh.apply_all("services.yaml", SERVICES)?;
    let mut servers = Vec::new();
    for w in &workloads[1..] {
        let name = mesh.pod(w.node, w.pod).name().to_string();
        servers.push(mesh.serve_in_pod(
            w.node,
            w.pod,
            &["http", "--listen", "0.0.0.0:8080", "--name", &name],
            8080,
        )?);
    }
    let script = std::env::temp_dir().join(format!("mesh-test-{}-rounds.py", mesh.lab.id()));
    std::fs::write(&script, ROUNDS_CLIENT)?;
    let web_pods: Vec<String> = [(1, 2), (2, 1), (2, 2)]
        .iter()
        .map(|&(n, p)| mesh.pod(n, p).name().to_string())
        .collect();

    let outcome = rounds(&mesh, &script, 1000)?;
    assert_eq!(outcome["failed"], 0, "{outcome}");
    for pod in &web_pods {
        let got = outcome["counts"][pod].as_u64().unwrap_or(0);
        // A third of 1000, ± 5%.
        assert!(
            (317..=350).contains(&got),
            "{pod}: {got} of 1000: {outcome}"
        );
    }

    // n2p2 leaves the Service (its labels change, as a rollout would do).
    workloads[3] = endpoint(2, 2, &[("app", "web-old")]);
    mesh.apply_all("workloads.yaml", &mesh.workloads_yaml(&workloads))?;
    let outcome = rounds(&mesh, &script, 150)?;
    assert_eq!(outcome["failed"], 0, "{outcome}");
    assert_eq!(
        outcome["counts"][&web_pods[2]],
        serde_json::Value::Null,
        "{outcome}"
    );

    // n2p1's server dies; its pod stays enrolled and listed. (A connection that was being
    // served when it died is reset, as without a mesh; the rounds start once it is gone.)
    servers[1].kill()?;
    wait_for("the killed server to stop listening", || {
        let closed = mesh.pod(2, 1).run(|| {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
                Duration::from_millis(200),
            )
            .is_err()
        })?;
        Ok(closed)
    })?;
    let outcome = rounds(&mesh, &script, 150)?;
    assert_eq!(outcome["failed"], 0, "{outcome}");
    assert_eq!(outcome["counts"][&web_pods[0]], 150, "{outcome}");
    let _ = std::fs::remove_file(&script);
    Ok(())
}

/// Each way an outbound connection can fail before reaching an upstream is named in the
/// access log and counted in Prometheus with Istio's response flag.
#[test]
fn every_l4_failure_is_logged_and_counted_with_its_flag() -> Result<()> {
    let mesh = Mesh::start(1, 2)?;
    let client = Workload {
        node: 1,
        pod: 1,
        service_account: "client",
        labels: &[("app", "client")],
    };
    mesh.enroll_workloads(&[client])?;
    // `side` selects nothing: no endpoint. `web` is client's own Service on port 80 only.
    mesh.apply_all(
        "services.yaml",
        &SERVICES.replace("selector: {app: web}", "selector: {app: client}"),
    )?;
    let outside = mesh.pod(1, 2).ip();
    let cases = [
        // (dial, response flag, reason, what the log says)
        (
            "198.19.40.2:80".to_string(),
            "UH",
            "no_endpoint",
            "no ready endpoint",
        ),
        (
            "198.19.40.1:81".to_string(),
            "NR",
            "port_not_in_service",
            "is not a port of the service",
        ),
        (
            format!("{outside}:9"),
            "UF",
            "connect_refused",
            "Connection refused",
        ),
    ];
    for (dial, flag, reason, text) in &cases {
        let out = mesh.run_in_pod(
            1,
            1,
            "curl",
            &["-sS", "--max-time", "5", &format!("http://{dial}/")],
        )?;
        ensure!(!out.status.success(), "{dial} answered");
        let logged = wait_for(&format!("{dial} in the access log"), || {
            let log = std::fs::read_to_string(mesh.log_path(1))?;
            Ok(log.lines().any(|l| {
                l.contains("connection closed")
                    && l.contains(dial.as_str())
                    && l.contains(&format!("flags={flag}"))
                    && l.contains(text)
            }))
        });
        if let Err(e) = logged {
            let log = std::fs::read_to_string(mesh.log_path(1))?;
            let closed: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("connection closed"))
                .collect();
            anyhow::bail!("{e}; access log:\n{}", closed.join("\n"));
        }
        let metrics = mesh.metrics(1)?;
        let refused = counter(
            &metrics,
            "mesh_connections_refused_total",
            &[("direction", "outbound"), ("reason", reason)],
        );
        ensure!(refused >= 1, "{reason}: not counted:\n{metrics}");
        let closed = counter(
            &metrics,
            "istio_tcp_connections_closed_total",
            &[("reporter", "source"), ("response_flags", flag)],
        );
        ensure!(closed >= 1, "{flag}: not counted:\n{metrics}");
    }
    Ok(())
}

/// A pod whose network namespace disappears without `unenroll` (a CNI DEL that never came)
/// is noticed and removed: its links and enrolled addresses do not outlive it.
#[test]
fn a_pod_whose_namespace_vanished_is_removed() -> Result<()> {
    let mesh = Mesh::start(1, 2)?;
    mesh.enroll(1, 1)?;
    mesh.enroll(1, 2)?;
    let gone = mesh.pod(1, 2);
    let out = std::process::Command::new("ip")
        .args(["netns", "del", gone.netns_name()])
        .output()?;
    ensure!(out.status.success(), "ip netns del: {out:?}");
    let name = format!("default_{}", gone.name());
    wait_for("the agent to drop the pod", || {
        let status = mesh.status(1)?;
        let pods = status["pods"].as_array().cloned().unwrap_or_default();
        let links = status["links"].to_string();
        Ok(pods.len() == 1 && pods[0]["name"] == mesh.pod(1, 1).name() && !links.contains(&name))
    })?;
    Ok(())
}
