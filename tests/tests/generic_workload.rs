//! The generic workload (`mesh-agent app http`), which every image without a Bookinfo
//! role runs as in the demo: on each of its ports it names its pod, namespace and labels,
//! echoes the request (JSON, or one line for `text/plain`), and echoes WebSocket messages.
//! Loopback only: real curl and a real WebSocket client against the real binary.
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use mesh_tests::{WEBSOCKET_CLIENT, agent_bin};
use serde_json::Value;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn curl(port: u16, path: &str, extra: &[&str]) -> Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()?;
    ensure!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn generic_workload_names_its_pod_on_every_port_answers_text_and_echoes_websocket() -> Result<()> {
    let ports = [free_port()?, free_port()?];
    let server = Server(
        Command::new(agent_bin())
            .args(["app", "http", "--name", "site"])
            .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--listen", &format!("127.0.0.1:{}", ports[1])])
            .args(["--pod", "web-7d9c6b8f5c-x2k9p", "--namespace", "shop"])
            .args(["--labels", "app=web,version=v2"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ports
        .iter()
        .any(|p| TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        ensure!(Instant::now() < deadline, "the workload did not listen");
        std::thread::sleep(Duration::from_millis(30));
    }

    for port in ports {
        let body = curl(port, "/cart/items?x=1", &["-X", "PUT", "-H", "x-user: ann"])?;
        let json: Value = serde_json::from_str(&body)?;
        assert_eq!(json["service"], "site");
        assert_eq!(json["pod"], "web-7d9c6b8f5c-x2k9p");
        assert_eq!(json["namespace"], "shop");
        assert_eq!(json["labels"]["app"], "web");
        assert_eq!(json["labels"]["version"], "v2");
        assert_eq!(json["method"], "PUT");
        assert_eq!(json["path"], "/cart/items");
        assert_eq!(json["headers"]["x-user"], "ann");
    }

    let line = curl(ports[0], "/hello", &["-H", "Accept: text/plain"])?;
    assert_eq!(
        line,
        "site pod=web-7d9c6b8f5c-x2k9p namespace=shop app=web version=v2 GET /hello\n"
    );

    let out = Command::new("python3")
        .args(["-c", WEBSOCKET_CLIENT, &ports[1].to_string(), "/ws"])
        .output()?;
    ensure!(
        out.status.success(),
        "websocket client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ws: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(ws["status"], "HTTP/1.1 101 Switching Protocols", "{ws}");
    assert_eq!(ws["accept_ok"], true, "{ws}");
    assert_eq!(ws["opcode"], 1, "a text frame back: {ws}");
    assert_eq!(ws["reply"], "hello, mesh", "{ws}");
    drop(server);
    Ok(())
}
