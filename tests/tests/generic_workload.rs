//! The generic workload (`mesh-agent app http`), which every image without a Bookinfo
//! role runs as in the demo: on each of its ports it names its pod, namespace and labels,
//! echoes the request (JSON, or one line for `text/plain`), and echoes WebSocket messages.
//! Loopback only: real curl and a real WebSocket client against the real binary.
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use mesh_tests::agent_bin;
use serde_json::Value;

/// A WebSocket client (standard library only): the RFC 6455 handshake, the accept key
/// checked, one masked text message out, the echoed frame read back, a close.
const WS_CLIENT: &str = r#"
import base64, hashlib, json, os, socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
key = base64.b64encode(os.urandom(16)).decode()
conn = socket.create_connection(("127.0.0.1", port), timeout=5)
conn.sendall(("GET %s HTTP/1.1\r\nHost: site\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
data = b""
while b"\r\n\r\n" not in data:
    more = conn.recv(4096)
    if not more:
        break
    data += more
head, _, data = data.partition(b"\r\n\r\n")
lines = head.decode().split("\r\n")
fields = dict((l.split(":", 1)[0].strip().lower(), l.split(":", 1)[1].strip()) for l in lines[1:] if ":" in l)
want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
def send(opcode, payload):
    mask = os.urandom(4)
    conn.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
send(1, b"hello, mesh")
while len(data) < 2:
    data += conn.recv(4096)
size = data[1] & 0x7f
while len(data) < 2 + size:
    data += conn.recv(4096)
reply = data[2:2 + size].decode()
send(8, b"")
print(json.dumps({"status": lines[0], "accept_ok": fields.get("sec-websocket-accept") == want,
                  "opcode": data[0] & 0x0f, "reply": reply}))
"#;

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
        .args(["-c", WS_CLIENT, &ports[1].to_string(), "/ws"])
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
