//! The ingress gateway (`mesh-agent gateway`) applying the user's Istio routing: a real
//! gateway process in an enrolled lab pod (its upstream connections carried over HBONE by
//! the node agent), real servers behind it, curl from a pod outside the mesh.
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, Workload, agent_bin, counter, wait_for};
use serde_json::Value;

/// Gateway pod, client pod (never enrolled).
const GATEWAY: (usize, usize) = (1, 1);
const CLIENT: (usize, usize) = (1, 4);

const WORKLOADS: [Workload<'static>; 7] = [
    Workload {
        node: 1,
        pod: 1,
        service_account: "ingressgateway",
        labels: &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
    },
    Workload {
        node: 1,
        pod: 2,
        service_account: "hello",
        labels: &[("app", "hello"), ("version", "v1")],
    },
    Workload {
        node: 2,
        pod: 1,
        service_account: "hello",
        labels: &[("app", "hello"), ("version", "v2")],
    },
    Workload {
        node: 2,
        pod: 2,
        service_account: "hello",
        labels: &[("app", "hello"), ("version", "v3")],
    },
    Workload {
        node: 1,
        pod: 3,
        service_account: "web",
        labels: &[("app", "web"), ("tier", "backend")],
    },
    Workload {
        node: 2,
        pod: 3,
        service_account: "ws",
        labels: &[("app", "ws")],
    },
    // A backend whose server is down: nothing listens in this pod.
    Workload {
        node: 2,
        pod: 4,
        service_account: "idle",
        labels: &[("app", "idle"), ("tier", "backend")],
    },
];

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ws, namespace: default}
spec:
  selector: {app: ws}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-h2, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http2, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  selector: {tier: backend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hello, namespace: default}
spec:
  host: hello
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"#;

/// The Gateway and the routes of `edge.example.com` and `reviews.example.com`.
const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [edge.example.com]
  gateways: [web-gateway]
  http:
  - match: [{uri: {prefix: /ws}}]
    route: [{destination: {host: ws, port: {number: 80}}}]
  - match: [{uri: {prefix: /broken}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: web}}]
  - match: [{uri: {prefix: /mirrored}}]
    route: [{destination: {host: web}}]
    mirror: {host: hello, subset: v1}
    mirrorPercentage: {value: 100}
  - match: [{uri: {prefix: /slow}}]
    timeout: 500ms
    route: [{destination: {host: web}}]
  - route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-edge, namespace: default}
spec:
  hosts: [reviews.example.com]
  gateways: [web-gateway]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: hello, subset: v2}}]
  - route: [{destination: {host: hello, subset: v3}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: h2-edge, namespace: default}
spec:
  hosts: [h2.example.com]
  gateways: [web-gateway]
  http:
  - route: [{destination: {host: web-h2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend-edge, namespace: default}
spec:
  hosts: [backend.example.com]
  gateways: [web-gateway]
  http:
  - route: [{destination: {host: backend}}]
    retries: {attempts: 2, retryOn: connect-failure}
"#;

/// `hello.example.com` with no subset, then only v1.
fn hello_route(subset: Option<&str>) -> String {
    let subset = subset.map(|s| format!(", subset: {s}")).unwrap_or_default();
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: hello-edge, namespace: default}}
spec:
  hosts: [hello.example.com]
  gateways: [web-gateway]
  http:
  - route: [{{destination: {{host: hello{subset}}}}}]
"#
    )
}

/// A second Gateway terminating TLS on 8443 with the certificate files in `certs`, and
/// the route of `secure.example.com` bound to it.
fn secure_routes(certs: &Path) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: secure-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [secure.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure.example.com]
  gateways: [secure-gateway]
  http:
  - route: [{{destination: {{host: web}}}}]
"#,
        cert = certs.join("cert.pem").display(),
        key = certs.join("key.pem").display(),
    )
}

/// Services for the gateway's byte streams: an echo server (the idle pod runs one on 9000)
/// and two HTTPS servers that terminate TLS themselves (in hello v1's and v2's pods, on
/// 8443).
const L4_SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: idle}
  ports: [{name: tcp, port: 9000, targetPort: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: tls-a, namespace: default}
spec:
  selector: {app: hello, version: v1}
  ports: [{name: tls, port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: tls-b, namespace: default}
spec:
  selector: {app: hello, version: v2}
  ports: [{name: tls, port: 443, targetPort: 8443}]
"#;

/// A Gateway with a TCP server, a TLS passthrough server with two SNI hosts, an HTTPS
/// server whose certificate is the Secret `cred-cert`, one naming a Secret that does not
/// exist, and a TLS server terminated with `cred-cert` then routed as TCP; the routes
/// bound to it.
const L4_ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: l4-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9000, name: tcp-echo, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9443, name: tls-passthrough, protocol: TLS}
    hosts: [a.example.com, b.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 8444, name: https-secret, protocol: HTTPS}
    hosts: [cred.example.com]
    tls: {mode: SIMPLE, credentialName: cred-cert}
  - port: {number: 8445, name: https-missing, protocol: HTTPS}
    hosts: [missing.example.com]
    tls: {mode: SIMPLE, credentialName: missing-cert}
  - port: {number: 9444, name: tls-terminated, protocol: TLS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cred-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: l4, namespace: default}
spec:
  hosts: ["*"]
  gateways: [l4-gateway]
  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: echo, port: {number: 9000}}}]
  - match: [{port: 9444}]
    route: [{destination: {host: echo}}]
  tls:
  - match: [{port: 9443, sniHosts: [a.example.com]}]
    route: [{destination: {host: tls-a, port: {number: 443}}}]
  - match: [{port: 9443, sniHosts: [b.example.com]}]
    route: [{destination: {host: tls-b}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cred, namespace: default}
spec:
  hosts: [cred.example.com]
  gateways: [l4-gateway]
  http:
  - route: [{destination: {host: web}}]
"#;

/// The Secret `cred-cert` holding `cert`/`key` of `certs` (Istio's TLS form, base64).
fn cred_secret(certs: &Path, name: &str) -> Result<String> {
    use base64::Engine as _;
    let b64 = |file: String| -> Result<String> {
        let pem = std::fs::read(certs.join(file))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(pem))
    };
    Ok(format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: cred-cert, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
"#,
        b64(format!("{name}.pem"))?,
        b64(format!("{name}.key"))?,
    ))
}

/// A TLS client for `cred.example.com` (verified against the CA file given) that sends a
/// line and prints what comes back.
const TLS_ECHO_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname="cred.example.com") as s:
        s.sendall(b"ping through tls")
        got = b""
        while len(got) < 16:
            chunk = s.recv(100)
            if not chunk: break
            got += chunk
        print(got.decode())
"#;

/// A self-signed certificate for `host` as `<dir>/<name>.pem` and its key `<name>.key`.
fn self_signed(dir: &Path, name: &str, host: &str) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .output()?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A WebSocket echo server (RFC 6455 handshake and frames, standard library only) that
/// answers a plain GET with JSON naming itself, like `mesh-agent app http`.
const WS_SERVER: &str = r#"
import base64, hashlib, http.server, json, struct, sys
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() != "websocket":
            body = json.dumps({"service": "ws", "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        r = self.rfile
        while True:
            head = r.read(2)
            if len(head) < 2: return
            op, ln = head[0] & 0x0f, head[1] & 0x7f
            if ln == 126: ln = struct.unpack(">H", r.read(2))[0]
            elif ln == 127: ln = struct.unpack(">Q", r.read(8))[0]
            mask = r.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(r.read(ln)))
            if op == 8: return
            reply = b"echo: " + data
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

/// A WebSocket client: upgrade, check the accept key, one text message each way.
const WS_CLIENT: &str = r#"
import base64, hashlib, json, os, socket, sys
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
host, port, authority = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = base64.b64encode(os.urandom(16)).decode()
s = socket.create_connection((host, port), timeout=5)
s.sendall((f"GET /ws/echo HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk: break
    buf += chunk
head, _, rest = buf.partition(b"\r\n\r\n")
lines = head.decode().split("\r\n")
headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
msg = b"hello through the gateway"
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
while len(rest) < 2: rest += s.recv(4096)
ln = rest[1] & 0x7f
while len(rest) < 2 + ln: rest += s.recv(4096)
print(json.dumps({"status": lines[0], "accept_ok": headers.get("sec-websocket-accept") == expected,
                  "reply": rest[2:2 + ln].decode()}))
"#;

/// The lab, the servers, the gateway and its config directory (removed on drop).
struct GatewayLab {
    mesh: Mesh,
    config_dir: PathBuf,
    log: PathBuf,
    /// Set by a test that got to its end: the gateway's log is kept otherwise.
    passed: bool,
    _children: Vec<LabChild>,
}

impl Drop for GatewayLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config_dir);
        let _ = std::fs::remove_file(self.config_dir.with_extension("ws.py"));
        if self.passed {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("gateway log kept: {}", self.log.display());
        }
    }
}

impl GatewayLab {
    fn start() -> Result<GatewayLab> {
        let mesh = Mesh::start(2, 4)?;
        let config_dir =
            std::env::temp_dir().join(format!("mesh-test-{}-gateway-config", mesh.lab.id()));
        let log = std::env::temp_dir().join(format!("mesh-test-{}-gateway.log", mesh.lab.id()));
        let mut lab = GatewayLab {
            config_dir,
            log,
            passed: false,
            _children: Vec::new(),
            mesh,
        };
        std::fs::create_dir_all(&lab.config_dir)?;
        let certs = lab.config_dir.join("certs");
        std::fs::create_dir_all(&certs)?;
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=secure.example.com"])
            .args(["-addext", "subjectAltName=DNS:secure.example.com"])
            .arg("-keyout")
            .arg(certs.join("key.pem"))
            .arg("-out")
            .arg(certs.join("cert.pem"))
            .output()?;
        ensure!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, host) in [
            ("a", "a.example.com"),
            ("b", "b.example.com"),
            ("cred", "cred.example.com"),
            ("cred2", "cred.example.com"),
        ] {
            self_signed(&certs, name, host)?;
        }
        let mesh = &lab.mesh;
        mesh.enroll_workloads(&WORKLOADS)?;
        // The same YAML for the agents (L4: who is who) and the gateway (routing).
        let files = [
            ("workloads.yaml", mesh.workloads_yaml(&WORKLOADS)),
            ("services.yaml", SERVICES.to_string()),
            ("routes.yaml", ROUTES.to_string()),
            ("hello.yaml", hello_route(None)),
            ("secure.yaml", secure_routes(&certs)),
            ("l4-services.yaml", L4_SERVICES.to_string()),
            ("l4-routes.yaml", L4_ROUTES.to_string()),
            ("secrets.yaml", cred_secret(&certs, "cred")?),
        ];
        for (name, yaml) in &files {
            mesh.apply_all(name, yaml)?;
            std::fs::write(lab.config_dir.join(name), yaml)?;
        }
        let mut children = Vec::new();
        for (w, name) in WORKLOADS[1..5]
            .iter()
            .zip(["hello-v1", "hello-v2", "hello-v3", "web"])
        {
            children.push(mesh.serve_in_pod(
                w.node,
                w.pod,
                &["http", "--listen", "0.0.0.0:8080", "--name", name],
                8080,
            )?);
        }
        // The byte-stream backends: echo in the idle pod, HTTPS in hello v1's and v2's.
        let idle = WORKLOADS[6];
        children.push(mesh.serve_in_pod(
            idle.node,
            idle.pod,
            &["echo", "--listen", "0.0.0.0:9000"],
            9000,
        )?);
        for (w, name) in WORKLOADS[1..3].iter().zip(["a", "b"]) {
            let cert = certs.join(format!("{name}.pem"));
            let key = certs.join(format!("{name}.key"));
            children.push(mesh.serve_in_pod(
                w.node,
                w.pod,
                &[
                    "http",
                    "--listen",
                    "0.0.0.0:8443",
                    "--name",
                    &format!("tls-{name}"),
                    "--tls-cert",
                    &cert.to_string_lossy(),
                    "--tls-key",
                    &key.to_string_lossy(),
                ],
                8443,
            )?);
        }
        let ws_script = lab.config_dir.with_extension("ws.py");
        std::fs::write(&ws_script, WS_SERVER)?;
        let ws = WORKLOADS[5];
        let script = ws_script.to_string_lossy().into_owned();
        children.push(mesh.spawn_in_pod(ws.node, ws.pod, &["python3", &script, "8080"])?);

        let log = std::fs::File::create(&lab.log)?;
        let mut gateway = mesh.pod(GATEWAY.0, GATEWAY.1).command(agent_bin());
        gateway
            .args(["gateway", "--config-dir"])
            .arg(&lab.config_dir)
            .args(["--labels", "istio=ingressgateway,app=istio-ingressgateway"])
            .args([
                "--namespace",
                "default",
                "--metrics-addr",
                "127.0.0.1:15020",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        children.push(mesh.lab.spawn(&mut gateway)?);
        lab._children = children;
        // Up when the gateway routes to the HTTP servers and the WebSocket one listens.
        wait_for("the gateway to route", || {
            Ok(["/", "/ws/info"].iter().all(|path| {
                lab.get("edge.example.com", path, &[])
                    .is_ok_and(|(s, _)| s == 200)
            }))
        })
        .with_context(|| format!("gateway log: {}", lab.log.display()))?;
        Ok(lab)
    }

    fn gateway_url(&self, path: &str) -> String {
        format!(
            "http://{}:8080{path}",
            self.mesh.pod(GATEWAY.0, GATEWAY.1).ip()
        )
    }

    /// curl from the client pod through the gateway: (status, body).
    fn get(&self, host: &str, path: &str, headers: &[&str]) -> Result<(u16, String)> {
        let url = self.gateway_url(path);
        let host_header = format!("Host: {host}");
        let mut args = vec![
            "-sS",
            "--max-time",
            "5",
            "-H",
            &host_header,
            "-w",
            "\n%{http_code}",
        ];
        for h in headers {
            args.extend(["-H", h]);
        }
        args.push(&url);
        let out = self.mesh.run_in_pod(CLIENT.0, CLIENT.1, "curl", &args)?;
        ensure!(
            out.status.success(),
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse()?, body.to_string()))
    }

    /// The `service` a routed request reached.
    fn served_by(&self, host: &str, path: &str, headers: &[&str]) -> Result<String> {
        let (status, body) = self.get(host, path, headers)?;
        ensure!(status == 200, "{host}{path}: status {status}: {body}");
        let json: Value = serde_json::from_str(&body).with_context(|| body.clone())?;
        Ok(json["service"].as_str().unwrap_or_default().to_string())
    }

    fn metrics(&self) -> Result<String> {
        let out = self.mesh.run_in_pod(
            GATEWAY.0,
            GATEWAY.1,
            "curl",
            &["-sS", "--max-time", "5", "http://127.0.0.1:15020/metrics"],
        )?;
        ensure!(
            out.status.success(),
            "metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Path routing, header routing, a fault abort, a timeout, a WebSocket, and the metrics
/// and headers a user of Istio's gateway relies on.
#[test]
fn gateway_routes_by_path_and_header_with_faults_timeouts_and_websockets() -> Result<()> {
    let mut lab = GatewayLab::start()?;

    // (a) `uri.prefix: /ws` to one service, everything else to another.
    assert_eq!(lab.served_by("edge.example.com", "/ws/info", &[])?, "ws");
    assert_eq!(lab.served_by("edge.example.com", "/", &[])?, "web");
    assert_eq!(
        lab.served_by("edge.example.com", "/other/page", &[])?,
        "web"
    );
    // A host no VirtualService binds to the Gateway: 404 with Envoy's empty body.
    assert_eq!(
        lab.get("nobody.example.com", "/", &[])?,
        (404, String::new())
    );

    // The upstream got the original Host and a request id; the client's address forwarded.
    let (_, body) = lab.get("edge.example.com", "/headers", &[])?;
    let json: Value = serde_json::from_str(&body)?;
    assert_eq!(json["headers"]["host"], "edge.example.com");
    assert_eq!(
        json["headers"]["x-request-id"].as_str().map(str::len),
        Some(36)
    );
    let client_ip = lab.mesh.pod(CLIENT.0, CLIENT.1).ip().to_string();
    assert_eq!(json["headers"]["x-forwarded-for"], client_ip.as_str());

    // HTTP/2 without TLS (prior knowledge), as gRPC clients speak it.
    let url = lab.gateway_url("/h2");
    let out = lab.mesh.run_in_pod(
        CLIENT.0,
        CLIENT.1,
        "curl",
        &[
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "5",
            "-H",
            "Host: edge.example.com",
            "-w",
            "\n%{http_version}",
            &url,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && text.ends_with("\n2") && text.contains("\"service\":\"web\""),
        "h2c through the gateway: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A Service port named `http2` is spoken to in HTTP/2 (h2c) by the gateway, whatever
    // the client spoke; an `http` one in HTTP/1.1.
    let (_, body) = lab.get("h2.example.com", "/", &[])?;
    let json: Value = serde_json::from_str(&body)?;
    assert_eq!(json["version"], "HTTP/2.0", "{json}");
    let (_, body) = lab.get("edge.example.com", "/", &[])?;
    let json: Value = serde_json::from_str(&body)?;
    assert_eq!(json["version"], "HTTP/1.1", "{json}");

    // HTTPS: the gateway terminates TLS with the server's certificate files (ALPN h2).
    let cert = lab.config_dir.join("certs/cert.pem");
    let resolve = format!(
        "secure.example.com:8443:{}",
        lab.mesh.pod(GATEWAY.0, GATEWAY.1).ip()
    );
    let out = lab.mesh.run_in_pod(
        CLIENT.0,
        CLIENT.1,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            &cert.to_string_lossy(),
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            "https://secure.example.com:8443/tls",
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "https through the gateway: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, version) = text.rsplit_once('\n').unwrap_or_default();
    assert_eq!(version, "2", "ALPN should pick h2: {text}");
    let json: Value = serde_json::from_str(body)?;
    assert_eq!(json["service"], "web");
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");

    // Retries: one of the two backends refuses (no server), each request still lands on
    // the live one.
    for _ in 0..6 {
        assert_eq!(lab.served_by("backend.example.com", "/", &[])?, "web");
    }
    let log = std::fs::read_to_string(&lab.log)?;
    let retried = log
        .lines()
        .filter(|l| l.contains("authority=backend.example.com") && l.contains("attempts=2"))
        .count();
    ensure!(
        retried >= 2,
        "round robin over two backends should have retried about half of 6 requests, the \
         access log shows {retried}"
    );

    // A mirrored request: the client's answer comes from the route's destination, and a
    // copy reaches the mirror (hello v1, which nothing else in this test calls), as the
    // agent in front of it counts.
    assert_eq!(lab.served_by("edge.example.com", "/mirrored", &[])?, "web");
    let v1 = WORKLOADS[1].pod_name(&lab.mesh);
    wait_for("the mirrored copy to reach hello v1", || {
        let agent = lab.mesh.metrics(WORKLOADS[1].node)?;
        Ok(counter(
            &agent,
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", "destination"),
                ("destination_workload", v1.as_str()),
                (
                    "source_principal",
                    "cluster.local/ns/default/sa/ingressgateway",
                ),
            ],
        ) > 0)
    })?;

    // (c) Bookinfo's jason-v2-v3: the header picks v2, everyone else gets v3.
    for _ in 0..3 {
        assert_eq!(
            lab.served_by("reviews.example.com", "/", &["end-user: jason"])?,
            "hello-v2"
        );
        assert_eq!(lab.served_by("reviews.example.com", "/", &[])?, "hello-v3");
        assert_eq!(
            lab.served_by("reviews.example.com", "/", &["end-user: mike"])?,
            "hello-v3"
        );
    }

    // (d) A fault abort answers its status with Envoy's body.
    assert_eq!(
        lab.get("edge.example.com", "/broken", &[])?,
        (418, "fault filter abort".to_string())
    );

    // (e) The route's timeout (500 ms) fires on a server that takes 3 s: 504.
    let start = std::time::Instant::now();
    assert_eq!(
        lab.get("edge.example.com", "/slow?delay_ms=3000", &[])?,
        (504, "upstream request timeout".to_string())
    );
    ensure!(
        start.elapsed() < Duration::from_millis(2500),
        "the timeout fired late: {:?}",
        start.elapsed()
    );
    // ... and a quick answer on the same route passes.
    assert_eq!(
        lab.served_by("edge.example.com", "/slow?delay_ms=10", &[])?,
        "web"
    );

    // (f) A WebSocket through `uri.prefix: /ws`: upgrade, then a message each way.
    let client_script = lab.config_dir.join("ws-client.py");
    std::fs::write(&client_script, WS_CLIENT)?;
    let gw_ip = lab.mesh.pod(GATEWAY.0, GATEWAY.1).ip().to_string();
    let out = lab.mesh.run_in_pod(
        CLIENT.0,
        CLIENT.1,
        "python3",
        &[
            &client_script.to_string_lossy(),
            &gw_ip,
            "8080",
            "edge.example.com",
        ],
    )?;
    ensure!(
        out.status.success(),
        "websocket client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ws: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(ws["status"], "HTTP/1.1 101 Switching Protocols", "{ws}");
    assert_eq!(ws["accept_ok"], true, "{ws}");
    assert_eq!(ws["reply"], "echo: hello through the gateway", "{ws}");

    // Istio's request metrics, reported by the gateway as the source.
    let metrics = lab.metrics()?;
    let jason = counter(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("destination_service", "hello.default.svc.cluster.local"),
            (
                "destination_workload",
                WORKLOADS[2].pod_name(&lab.mesh).as_str(),
            ),
            ("response_code", "200"),
            ("request_protocol", "http"),
        ],
    );
    assert_eq!(jason, 3, "{metrics}");
    let timeouts = counter(
        &metrics,
        "istio_requests_total",
        &[("response_code", "504"), ("response_flags", "UT")],
    );
    assert_eq!(timeouts, 1, "{metrics}");
    let aborts = counter(
        &metrics,
        "istio_requests_total",
        &[("response_code", "418"), ("response_flags", "FI")],
    );
    assert_eq!(aborts, 1, "{metrics}");
    let no_route = counter(
        &metrics,
        "istio_requests_total",
        &[("response_code", "404"), ("response_flags", "NR")],
    );
    assert_eq!(no_route, 1, "{metrics}");
    ensure!(
        metrics.contains("istio_request_duration_milliseconds_bucket{"),
        "no duration histogram: {metrics}"
    );

    // The upstream connections left the gateway's pod through its node agent, over mutual
    // TLS with the gateway's identity.
    let agent = lab.mesh.metrics(GATEWAY.0)?;
    let hbone = counter(
        &agent,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "source"),
            (
                "source_principal",
                "cluster.local/ns/default/sa/ingressgateway",
            ),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    ensure!(hbone > 0, "no HBONE connection from the gateway: {agent}");
    lab.passed = true;
    Ok(())
}

/// Byte streams at the gateway: a TCP server routed to an echo service, TLS passthrough
/// by SNI to two backends that terminate TLS themselves, TLS terminated then routed as
/// TCP, an HTTPS server whose certificate is a Secret (and follows it when it changes), and
/// a server naming a missing Secret that is refused, naming it, while the others serve.
#[test]
fn gateway_serves_tcp_tls_passthrough_and_certificates_from_secrets() -> Result<()> {
    let mut lab = GatewayLab::start()?;
    let gw_ip = lab.mesh.pod(GATEWAY.0, GATEWAY.1).ip().to_string();
    let certs = lab.config_dir.join("certs");

    // TCP: bytes round trip through the gateway's port 9000 to the echo server.
    let bytes = 1024 * 1024;
    let outcome = lab
        .mesh
        .tcp_client(CLIENT.0, CLIENT.1, &format!("{gw_ip}:9000"), bytes)?;
    assert_eq!(outcome["intact"], true, "{outcome}");
    assert_eq!(outcome["received"].as_u64(), Some(bytes), "{outcome}");

    // TLS passthrough: each SNI reaches its own backend, which answers with its own
    // certificate (curl checks it against that backend's CA, not the gateway's).
    let curl_tls = |host: &str, port: u16, ca: &str, path: &str| -> Result<Output> {
        let resolve = format!("{host}:{port}:{gw_ip}");
        let cacert = certs.join(ca).to_string_lossy().into_owned();
        let url = format!("https://{host}:{port}{path}");
        lab.mesh.run_in_pod(
            CLIENT.0,
            CLIENT.1,
            "curl",
            &[
                "-sS",
                "--max-time",
                "5",
                "--cacert",
                &cacert,
                "--resolve",
                &resolve,
                &url,
            ],
        )
    };
    for (host, ca, service) in [
        ("a.example.com", "a.pem", "tls-a"),
        ("b.example.com", "b.pem", "tls-b"),
    ] {
        let out = curl_tls(host, 9443, ca, "/passthrough")?;
        ensure!(
            out.status.success(),
            "curl {host} through passthrough: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(json["service"], service, "{json}");
        assert_eq!(json["path"], "/passthrough", "{json}");
    }
    // openssl names the certificate the far end presented: b's, not the gateway's.
    let out = lab.mesh.run_in_pod(
        CLIENT.0,
        CLIENT.1,
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("{gw_ip}:9443"),
            "-servername",
            "b.example.com",
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.lines()
            .any(|l| l.starts_with("subject=") && l.contains("b.example.com")),
        "openssl s_client -servername b.example.com: {text}"
    );
    // An SNI the server does not admit: closed without an answer.
    let out = curl_tls("c.example.com", 9443, "a.pem", "/")?;
    ensure!(!out.status.success(), "c.example.com should not be routed");

    // credentialName: the HTTPS server answers with the Secret's certificate.
    let out = curl_tls("cred.example.com", 8444, "cred.pem", "/cred")?;
    ensure!(
        out.status.success(),
        "https with the Secret's certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["service"], "web", "{json}");

    // TLS terminated with the Secret's certificate, then the bytes routed as TCP (echo).
    let out = lab.mesh.run_in_pod(
        CLIENT.0,
        CLIENT.1,
        "python3",
        &[
            "-c",
            TLS_ECHO_CLIENT,
            &gw_ip,
            "9444",
            &certs.join("cred.pem").to_string_lossy(),
        ],
    )?;
    ensure!(
        out.status.success(),
        "TLS then TCP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ping through tls"
    );

    // A server naming a missing Secret: an error naming Gateway, server and Secret; the
    // other servers (above, and plain HTTP) serve on.
    let log = std::fs::read_to_string(&lab.log)?;
    ensure!(
        log.contains(
            "Gateway default/l4-gateway port 8445 (server https-missing): tls.credentialName: \
             Secret default/missing-cert: not found"
        ),
        "no error naming the missing Secret in {}",
        lab.log.display()
    );
    assert_eq!(lab.served_by("edge.example.com", "/", &[])?, "web");

    // The Secret rotated: the listener re-opens with the new certificate.
    write_atomically(
        &lab.config_dir.join("secrets.yaml"),
        &cred_secret(&certs, "cred2")?,
    )?;
    wait_for("the gateway to serve the rotated certificate", || {
        Ok(curl_tls("cred.example.com", 8444, "cred2.pem", "/")?
            .status
            .success())
    })?;

    // The Secret's values are never written to the log.
    let key = std::fs::read_to_string(certs.join("cred.key"))?;
    let key_line = key.lines().nth(1).unwrap_or("-").to_string();
    let log = std::fs::read_to_string(&lab.log)?;
    ensure!(
        !log.contains(&key_line) && !log.contains("PRIVATE KEY"),
        "a Secret value reached the log"
    );

    // Each connection is counted and logged.
    let metrics = lab.metrics()?;
    // To echo: the TCP server's connection and the terminated TLS one.
    let echoed = counter(
        &metrics,
        "istio_tcp_connections_opened_total",
        &[("destination_service", "echo.default.svc.cluster.local")],
    );
    assert_eq!(echoed, 2, "{metrics}");
    let echo_bytes = counter(
        &metrics,
        "istio_tcp_received_bytes_total",
        &[("destination_service", "echo.default.svc.cluster.local")],
    );
    assert_eq!(echo_bytes, bytes + 16, "{metrics}");
    let passed = counter(
        &metrics,
        "istio_tcp_connections_closed_total",
        &[("destination_service", "tls-b.default.svc.cluster.local")],
    );
    ensure!(passed >= 2, "curl and openssl to b: {metrics}");
    let no_route = counter(
        &metrics,
        "istio_tcp_connections_closed_total",
        &[("response_flags", "NR")],
    );
    assert_eq!(no_route, 1, "{metrics}");
    ensure!(
        log.lines()
            .any(|l| l.contains("requested_server_name=\"a.example.com\"") && l.contains("tls-a")),
        "no access line for a.example.com in {}",
        lab.log.display()
    );
    lab.passed = true;
    Ok(())
}

/// Three versions seen in turn with no subset; once a VirtualService with `subset: v1` is
/// written into the watched directory, only v1.
#[test]
fn gateway_follows_a_subset_written_live() -> Result<()> {
    let mut lab = GatewayLab::start()?;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..9 {
        seen.insert(lab.served_by("hello.example.com", "/", &[])?);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["hello-v1", "hello-v2", "hello-v3"]
    );

    write_atomically(&lab.config_dir.join("hello.yaml"), &hello_route(Some("v1")))?;
    wait_for("the gateway to take subset v1", || {
        Ok((0..3).all(|_| {
            lab.served_by("hello.example.com", "/", &[])
                .is_ok_and(|s| s == "hello-v1")
        }))
    })?;
    for _ in 0..9 {
        assert_eq!(lab.served_by("hello.example.com", "/", &[])?, "hello-v1");
    }

    // A bad edit (an invalid regex) is refused naming the object and the field; the
    // routes in place keep serving.
    let bad = hello_route(Some("v2")).replace(
        "  - route:",
        "  - match: [{uri: {regex: \"(unclosed\"}}]\n    route:",
    );
    write_atomically(&lab.config_dir.join("hello.yaml"), &bad)?;
    wait_for("the gateway to refuse the bad route", || {
        let log = std::fs::read_to_string(&lab.log)?;
        Ok(log.contains("default/hello-edge") && log.contains("spec.http[0].match[0].uri.regex"))
    })?;
    for _ in 0..3 {
        assert_eq!(lab.served_by("hello.example.com", "/", &[])?, "hello-v1");
    }
    lab.passed = true;
    Ok(())
}

/// Writes through a temporary file and a rename, as `kubectl`-driven config syncers do, so
/// the watcher never reads half a file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

trait PodName {
    fn pod_name(&self, mesh: &Mesh) -> String;
}

impl PodName for Workload<'_> {
    fn pod_name(&self, mesh: &Mesh) -> String {
        mesh.pod(self.node, self.pod).name().to_string()
    }
}
