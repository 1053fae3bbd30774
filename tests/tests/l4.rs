//! L4 correctness: what an application behind the mesh sees, and what the node agent
//! reports about the connections it could not complete.
use std::{path::PathBuf, time::Duration};

use anyhow::{Result, ensure};
use mesh_tests::{Mesh, Workload, wait_for};

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
