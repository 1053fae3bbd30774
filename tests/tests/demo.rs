//! `mesh-agent demo` as a user runs it: the real binary with no configuration (Istio's
//! Bookinfo), the product page fetched with curl through the ingress gateway on a
//! localhost port, then SIGTERM, and nothing of it left on the host.
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mesh_tests::{WEBSOCKET_CLIENT, agent_bin, require_root, wait_for_within};
use serde_json::Value;

/// A running `mesh-agent demo`; SIGTERM and wait on drop, so a failed test cleans up too.
struct Demo {
    child: Child,
    port: u16,
    lab_id: String,
    lines: Vec<String>,
    /// The stdout lines not read yet.
    more: mpsc::Receiver<String>,
}

impl Demo {
    /// Starts the demo on a free localhost port (and `args`) and waits for its "ready"
    /// line.
    fn start(args: &[&str]) -> Result<Demo> {
        require_root();
        // A free port, not 8080: parallel runs (and a user's own demo) must not collide.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut child = Command::new(agent_bin())
            .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--traces", "127.0.0.1:0", "--console", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("demo stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end even once nobody listens: a closed pipe would fail the
            // demo's own output.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("demo: {line}");
                let _ = tx.send(line);
            }
        });
        let mut demo = Demo {
            child,
            port,
            lab_id: String::new(),
            lines: Vec::new(),
            more: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match demo.more.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => bail!(
                    "the demo did not say it was ready within 90 s: {:?}",
                    demo.lines
                ),
            };
            if let Some(rest) = line.strip_prefix("lab ") {
                demo.lab_id = rest.split(':').next().unwrap_or_default().to_string();
            }
            let ready = line.starts_with("ready in ");
            demo.lines.push(line);
            if ready {
                break;
            }
        }
        ensure!(!demo.lab_id.is_empty(), "no lab line: {:?}", demo.lines);
        Ok(demo)
    }

    /// Waits (at most `timeout`) for the next stdout line that `wanted` accepts.
    fn wait_line(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .more
                .recv_timeout(left)
                .with_context(|| format!("no such line within {timeout:?}"))?;
            self.lines.push(line.clone());
            if wanted(&line) {
                return Ok(line);
            }
        }
    }

    /// `mesh-agent apply -f FILE` or `delete -f FILE` against this demo: stdout.
    fn control(&self, verb: &str, file: &Path) -> Result<String> {
        let out = Command::new(agent_bin())
            .args([verb, "--demo", &self.child.id().to_string(), "-f"])
            .arg(file)
            .output()?;
        ensure!(
            out.status.success(),
            "{verb} {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// curl from the host, as a user would: (status, body).
    fn curl(&self, path: &str, extra: &[&str]) -> Result<(u16, String)> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(self.url(path))
            .output()?;
        ensure!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse()?, body.to_string()))
    }

    /// SIGTERM, then wait (at most 30 s) for a clean exit.
    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "the demo did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Which reviews version served a product page, checked against what it shows: v1 no
/// stars, v2 black stars, v3 red stars.
fn reviews_version(page: &str) -> Result<&'static str> {
    let served_by = page
        .split("Reviews served by: <b>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .with_context(|| format!("no 'Reviews served by' on the page:\n{page}"))?;
    let black = page.contains("class=\"stars\" style=\"color: black\"");
    let red = page.contains("class=\"stars\" style=\"color: red\"");
    Ok(match (served_by.split('-').nth(1), black, red) {
        (Some("v1"), false, false) => "v1",
        (Some("v2"), true, false) => "v2",
        (Some("v3"), false, true) => "v3",
        other => bail!("{served_by}: stars do not match the version: {other:?}"),
    })
}

/// What a run leaves on the host, if anything: namespaces, cgroups, pins, state and config
/// files, processes.
fn leftovers(lab_id: &str, demo_pid: u32, nodes: usize) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let netns_prefix = format!("mt{lab_id}-");
    for entry in std::fs::read_dir("/var/run/netns")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&netns_prefix) {
            left.push(format!("namespace {name}"));
        }
    }
    let cgroup = mesh_testbed::cgroup::cgroup2_mount()?.join(format!("mesh-{lab_id}"));
    let agent_prefix = format!("demo-{lab_id}-");
    let mut paths: Vec<PathBuf> = vec![
        cgroup,
        std::env::temp_dir().join(format!("mesh-demo-{demo_pid}")),
        std::env::temp_dir().join(format!("mesh-ca-{lab_id}")),
        // What `mesh-agent apply` finds the demo by.
        PathBuf::from(format!("/run/mesh-demo/{demo_pid}.json")),
    ];
    for node in 1..=nodes {
        paths.push(PathBuf::from(format!(
            "/sys/fs/bpf/mesh-demo/{agent_prefix}n{node}"
        )));
        paths.push(std::env::temp_dir().join(format!("{agent_prefix}n{node}")));
    }
    for entry in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&netns_prefix)
        {
            paths.push(entry.path());
        }
    }
    left.extend(
        paths
            .into_iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string()),
    );
    // The agents (named after the lab) and the gateway (reading the demo's directory).
    let config_dir = format!("mesh-demo-{demo_pid}");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&agent_prefix) || cmdline.contains(&config_dir) {
            left.push(format!(
                "process {}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    Ok(left)
}

/// `mesh-agent demo` with no flags but a port: Istio's Bookinfo answers on localhost with
/// the product page, its details and reviews from all three versions; SIGTERM removes all.
#[test]
fn demo_serves_bookinfo_on_localhost_and_leaves_nothing_behind() -> Result<()> {
    let mut demo = Demo::start(&[])?;
    let ready = demo
        .lines
        .iter()
        .find(|l| l.starts_with("ready in "))
        .cloned();
    ensure!(
        ready.as_deref().is_some_and(|l| l.contains("product page")),
        "{ready:?}"
    );

    let mut versions = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let (status, page) = demo.curl("/productpage", &[])?;
        ensure!(status == 200, "status {status}: {page}");
        for text in [
            "<h1 class=\"title\">The Comedy of Errors</h1>",
            "Book Details",
            "<dd>William Shakespeare</dd>",
            "<dd>paperback</dd>",
            "Book Reviews",
            "An extremely entertaining play by Shakespeare.",
        ] {
            ensure!(
                page.contains(text),
                "{text:?} missing from the page:\n{page}"
            );
        }
        *versions.entry(reviews_version(&page)?).or_insert(0) += 1;
    }
    ensure!(
        versions.len() == 3,
        "reviews v1, v2 and v3 should all appear over 30 requests: {versions:?}"
    );

    // The login form sets the user, and the page shows who is signed in.
    let (status, _) = demo.curl("/login", &["-d", "username=jason&passwd=x"])?;
    ensure!(status == 302, "login: {status}");
    let (_, page) = demo.curl("/productpage", &["-b", "user=jason"])?;
    ensure!(page.contains("jason <a href=\"/logout\">"), "{page}");

    // The API route of bookinfo-gateway.yaml reaches productpage too.
    let (status, body) = demo.curl("/api/v1/products", &[])?;
    ensure!(
        status == 200 && body.contains("The Comedy of Errors"),
        "{status} {body}"
    );
    // A path the gateway's VirtualService does not route.
    let (status, _) = demo.curl("/nothing-here", &[])?;
    ensure!(status == 404, "unrouted path: {status}");

    // The gateway exported its spans to the demo's trace store (the mesh config the demo
    // wrote names it): the product page requests are traces there, server and client span.
    let traces_url = demo
        .lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("trace store"))
        .map(|rest| rest.trim().to_string())
        .with_context(|| format!("no trace store line: {:?}", demo.lines))?;
    mesh_tests::wait_for("the gateway's product page spans", || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", &traces_url])
            .output()?;
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let pages = body["traces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                let spans = t["spans"].as_array().map(Vec::as_slice).unwrap_or_default();
                let gateway = |kind: &str| {
                    spans.iter().any(|s| {
                        s["kind"] == kind
                            && s["service"]
                                .as_str()
                                .is_some_and(|n| n.starts_with("istio-ingressgateway"))
                            && s["attributes"]["http.url"]
                                .as_str()
                                .is_some_and(|u| u.contains("/productpage"))
                    })
                };
                gateway("server") && gateway("client")
            })
            .count();
        Ok(pages >= 30)
    })?;

    let pid = demo.child.id();
    let lab_id = demo.lab_id.clone();
    let status = demo.terminate()?;
    ensure!(status.success(), "the demo exited with {status}");
    let left = leftovers(&lab_id, pid, 2)?;
    ensure!(left.is_empty(), "left behind after SIGTERM: {left:#?}");
    Ok(())
}

/// A user's own manifests, unchanged: three versions of a website (made-up image) with a
/// Service, DestinationRule subsets, a Gateway and a VirtualService (header match, a
/// default subset, a `/ws` WebSocket route), plus a StatefulSet of another made-up image.
const WEBSITE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: website}
spec:
  selector: {app: website}
  ports: [{name: http, port: 80, targetPort: web}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: website}
spec:
  host: website
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: website-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: website}
spec:
  hosts: ["*"]
  gateways: [website-gateway]
  http:
  - match: [{uri: {prefix: /ws}}]
    route: [{destination: {host: website, subset: v1}}]
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: website, subset: v2}}]
  - route: [{destination: {host: website, subset: v3}}]
"#;

fn website_deployment(version: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: website-{version}, labels: {{app: website}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: website, version: {version}}}}}
  template:
    metadata: {{labels: {{app: website, version: {version}}}}}
    spec:
      serviceAccountName: website
      containers:
      - name: web
        image: registry.example.com/acme/website:{version}
        ports: [{{name: web, containerPort: 8080}}]
"#
    )
}

/// The directory the test writes the manifests to, removed on drop.
struct ConfigDir(PathBuf);

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn demo_runs_a_users_own_manifests_unchanged_and_routes_them_as_written() -> Result<()> {
    let dir = ConfigDir(
        std::env::temp_dir().join(format!("mesh-test-demo-config-{}", std::process::id())),
    );
    std::fs::create_dir_all(dir.0.join("deployments"))?;
    std::fs::write(dir.0.join("website.yaml"), WEBSITE)?;
    for version in ["v1", "v2", "v3"] {
        std::fs::write(
            dir.0.join(format!("deployments/website-{version}.yaml")),
            website_deployment(version),
        )?;
    }
    let config = dir.0.to_string_lossy().into_owned();
    let mut demo = Demo::start(&["--config", &config, "--nodes", "3"])?;
    ensure!(
        demo.lines
            .iter()
            .filter(|l| l.contains("generic http on :8080"))
            .count()
            == 3,
        "{:#?}",
        demo.lines
    );

    let served = |extra: &[&str]| -> Result<Value> {
        let (status, body) = demo.curl("/index.html", extra)?;
        ensure!(status == 200, "status {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    };
    for _ in 0..3 {
        let json = served(&[])?;
        assert_eq!(json["labels"]["version"], "v3", "{json}");
        assert_eq!(json["labels"]["app"], "website");
        assert_eq!(json["namespace"], "default");
        assert_eq!(json["service"], "web");
        assert_eq!(json["path"], "/index.html");
        ensure!(
            json["pod"]
                .as_str()
                .is_some_and(|p| p.starts_with("website-v3-")),
            "{json}"
        );
        let json = served(&["-H", "x-version: v2"])?;
        assert_eq!(json["labels"]["version"], "v2", "{json}");
    }

    let out = Command::new("python3")
        .args(["-c", WEBSOCKET_CLIENT, &demo.port.to_string(), "/ws/chat"])
        .output()?;
    ensure!(
        out.status.success(),
        "websocket client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ws: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(ws["status"], "HTTP/1.1 101 Switching Protocols", "{ws}");
    assert_eq!(ws["accept_ok"], true, "{ws}");
    assert_eq!(ws["reply"], "hello, mesh", "{ws}");

    deployments_applied_later_run_and_deleted_ones_stop(&mut demo, &dir.0)?;

    let pid = demo.child.id();
    let lab_id = demo.lab_id.clone();
    ensure!(demo.terminate()?.success());
    let left = leftovers(&lab_id, pid, 3)?;
    ensure!(left.is_empty(), "left behind after SIGTERM: {left:#?}");
    Ok(())
}

/// A fourth version of the website, applied to the running demo with its route: the
/// Deployment with `replicas` replicas, the DestinationRule with a v4 subset and the
/// VirtualService sending `x-version: v4` there (both replace the `--config` ones).
fn website_v4(replicas: u32) -> String {
    let deployment =
        website_deployment("v4").replace("replicas: 1", &format!("replicas: {replicas}"));
    let route = WEBSITE
        .split("\n---\n")
        .filter(|doc| doc.contains("kind: DestinationRule") || doc.contains("kind: VirtualService"))
        .map(|doc| {
            doc.replace(
                "  - {name: v3, labels: {version: v3}}",
                "  - {name: v3, labels: {version: v3}}\n  - {name: v4, labels: {version: v4}}",
            )
            .replace(
                "  - route: [{destination: {host: website, subset: v3}}]",
                "  - match: [{headers: {x-version: {exact: v4}}}]\n    route: [{destination: {host: website, subset: v4}}]\n  - route: [{destination: {host: website, subset: v3}}]",
            )
        })
        .collect::<Vec<_>>()
        .join("\n---\n");
    format!("{deployment}\n---\n{route}")
}

/// The website pods the host runs: pod names from the generic workloads' `--pod` argument.
fn running_pods(prefix: &str) -> Result<Vec<String>> {
    let mut pods = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(i) = args.iter().position(|a| a == "--pod")
            && let Some(pod) = args.get(i + 1).filter(|p| p.starts_with(prefix))
        {
            pods.push(pod.clone());
        }
    }
    pods.sort();
    Ok(pods)
}

/// The pods that answer 20 requests routed to website v4.
fn v4_pods(demo: &Demo) -> Result<std::collections::BTreeSet<String>> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = demo.curl("/", &["-H", "x-version: v4"])?;
        ensure!(status == 200, "status {status}: {body}");
        let json: Value = serde_json::from_str(&body)?;
        ensure!(json["labels"]["version"] == "v4", "{json}");
        let pod = json["pod"].as_str().context("no pod in the answer")?;
        seen.insert(pod.to_string());
    }
    Ok(seen)
}

/// Issue 11's live workloads: a Deployment applied to the running demo starts its pods
/// (which serve its route), scaling it down stops one, deleting it stops the rest.
fn deployments_applied_later_run_and_deleted_ones_stop(demo: &mut Demo, dir: &Path) -> Result<()> {
    let file = dir.join("website-v4.yaml");
    std::fs::write(&file, website_v4(2))?;
    let said = demo.control("apply", &file)?;
    ensure!(
        said.contains("Deployment default/website-v4 created"),
        "{said}"
    );
    for _ in 0..2 {
        demo.wait_line(Duration::from_secs(20), |l| {
            l.contains("default/website-v4-") && l.contains("generic http on :8080")
        })?;
    }
    wait_for_within("website v4 serving", Duration::from_secs(20), || {
        Ok(demo
            .curl("/", &["-H", "x-version: v4"])?
            .1
            .contains("\"v4\""))
    })?;
    let serving = v4_pods(demo)?;
    let running = running_pods("website-v4-")?;
    ensure!(running.len() == 2, "two replicas run: {running:?}");
    ensure!(
        serving == running.iter().cloned().collect(),
        "both replicas serve: {serving:?}, running {running:?}"
    );

    std::fs::write(&file, website_v4(1))?;
    ensure!(demo.control("apply", &file)?.contains("configured"));
    demo.wait_line(Duration::from_secs(20), |l| {
        l.contains("default/website-v4-") && l.contains("stopped")
    })?;
    let running = running_pods("website-v4-")?;
    ensure!(running.len() == 1, "one replica left: {running:?}");
    let serving = v4_pods(demo)?;
    ensure!(
        serving == running.iter().cloned().collect(),
        "only the replica left serves: {serving:?}"
    );

    let said = demo.control("delete", &file)?;
    ensure!(
        said.contains("Deployment default/website-v4 deleted"),
        "{said}"
    );
    demo.wait_line(Duration::from_secs(20), |l| {
        l.contains("default/website-v4-") && l.contains("stopped")
    })?;
    ensure!(
        running_pods("website-v4-")?.is_empty(),
        "website v4 still runs"
    );
    wait_for_within("the --config route again", Duration::from_secs(20), || {
        let (status, body) = demo.curl("/", &["-H", "x-version: v4"])?;
        Ok(status == 200 && body.contains("\"v3\""))
    })?;
    Ok(())
}

/// What a user adds to Bookinfo for Istio ambient's L7 tasks: a waypoint
/// (`istioctl waypoint apply`) and the namespace bound to it.
const WAYPOINT: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

/// A configuration directory: Bookinfo's files, the waypoint, and `extra` fixtures.
fn bookinfo_with_waypoint(name: &str, extra: &[&str]) -> Result<ConfigDir> {
    let dir = ConfigDir(
        std::env::temp_dir().join(format!("mesh-test-demo-{name}-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0)?;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/istio-bookinfo");
    let bookinfo = [
        "bookinfo.yaml",
        "bookinfo-gateway.yaml",
        "destination-rule-all.yaml",
    ];
    for file in bookinfo.iter().chain(extra) {
        std::fs::copy(fixtures.join(file), dir.0.join(file))?;
    }
    std::fs::write(dir.0.join("waypoint.yaml"), WAYPOINT)?;
    Ok(dir)
}

/// Bookinfo's "request routing" task as a user runs it: the unchanged Bookinfo files plus
/// a waypoint and `virtual-service-reviews-jason-v2-v3.yaml`; the product page shows
/// black stars (v2) to jason once logged in, red stars (v3) to everyone else. Then
/// `mesh-agent apply -f virtual-service-all-v1.yaml` sends everyone to v1, and
/// `mesh-agent delete -f` the same file brings the jason route back.
#[test]
fn demo_with_a_waypoint_routes_bookinfo_reviews_by_user() -> Result<()> {
    let dir = bookinfo_with_waypoint("waypoint", &["virtual-service-reviews-jason-v2-v3.yaml"])?;
    let config = dir.0.to_string_lossy().into_owned();
    let mut demo = Demo::start(&["--config", &config])?;
    ensure!(
        demo.lines
            .iter()
            .any(|l| l.contains("waypoint default/waypoint")),
        "{:#?}",
        demo.lines
    );
    let page = |extra: &[&str]| -> Result<&'static str> {
        let (status, body) = demo.curl("/productpage", extra)?;
        ensure!(status == 200, "status {status}: {body}");
        reviews_version(&body)
    };
    // The waypoint may take a moment to read the configuration.
    wait_for_within(
        "reviews to be routed to v3",
        Duration::from_secs(15),
        || Ok(page(&[])? == "v3"),
    )?;
    for _ in 0..10 {
        assert_eq!(page(&[])?, "v3");
        assert_eq!(page(&["--cookie", "user=jason"])?, "v2");
    }

    // `mesh-agent apply -f` / `delete -f` reach the running demo, as kubectl its cluster
    // (`--demo`: other tests' demos run beside this one). all-v1's `reviews` replaces the
    // jason route of the same name; deleting it brings that route back.
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/istio-bookinfo");
    let all_v1 = fixtures.join("virtual-service-all-v1.yaml");
    let control = |verb: &str, file: &Path| -> Result<(bool, String)> {
        let out = Command::new(agent_bin())
            .args([verb, "--demo", &demo.child.id().to_string(), "-f"])
            .arg(file)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    };
    let (ok, said) = control("apply", &all_v1)?;
    ensure!(
        ok && said.contains("VirtualService default/reviews created"),
        "{said}"
    );
    wait_for_within("all-v1 to take effect", Duration::from_secs(15), || {
        Ok(page(&["--cookie", "user=jason"])? == "v1")
    })?;
    for _ in 0..10 {
        assert_eq!(page(&[])?, "v1");
        assert_eq!(page(&["--cookie", "user=jason"])?, "v1");
    }
    // A broken file is refused whole, naming it and the field, without a backtrace.
    let broken = dir.0.join("broken.yaml.in");
    std::fs::write(
        &broken,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec: {hostz: [reviews]}\n",
    )?;
    let (ok, said) = control("apply", &broken)?;
    ensure!(
        !ok && said.contains("broken.yaml.in")
            && said.contains("hostz")
            && !said.contains("stack backtrace"),
        "{said}"
    );
    assert_eq!(page(&[])?, "v1");
    let (ok, said) = control("delete", &all_v1)?;
    ensure!(
        ok && said.contains("VirtualService default/reviews deleted"),
        "{said}"
    );
    wait_for_within(
        "the jason route to come back",
        Duration::from_secs(15),
        || Ok(page(&["--cookie", "user=jason"])? == "v2"),
    )?;
    assert_eq!(page(&[])?, "v3");

    let pid = demo.child.id();
    let lab_id = demo.lab_id.clone();
    ensure!(demo.terminate()?.success());
    let left = leftovers(&lab_id, pid, 2)?;
    ensure!(left.is_empty(), "left behind after SIGTERM: {left:#?}");
    Ok(())
}

/// Istio's Bookinfo tasks, each applied to the running demo with `mesh-agent apply -f` as
/// a user follows the docs, checked through the gateway on localhost over enough pages:
/// all-v1; 80/20 (within 5 points over 200 pages); jason to v2 and everyone else to v3;
/// the ratings delay for jason (his page shows the reviews error once the product page
/// gives up, others are served); the ratings abort for jason ("Ratings service is
/// currently unavailable"); the details abort at its 100 %.
#[test]
fn bookinfos_tasks_applied_to_the_running_demo_behave_as_istio_documents() -> Result<()> {
    let dir = bookinfo_with_waypoint("tasks", &[])?;
    let config = dir.0.to_string_lossy().into_owned();
    let mut demo = Demo::start(&["--config", &config])?;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/istio-bookinfo");
    let apply = |file: &str| -> Result<()> {
        let out = Command::new(agent_bin())
            .args(["apply", "--demo", &demo.child.id().to_string(), "-f"])
            .arg(fixtures.join(file))
            .output()?;
        ensure!(
            out.status.success(),
            "apply {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let page = |jason: bool| -> Result<String> {
        let extra: &[&str] = if jason {
            &["--cookie", "user=jason"]
        } else {
            &[]
        };
        let (status, body) = demo.curl("/productpage", extra)?;
        ensure!(status == 200, "status {status}: {body}");
        Ok(body)
    };
    let version = |jason: bool| -> Result<&'static str> { reviews_version(&page(jason)?) };
    // A change is seen once the waypoint has read it: wait for its first sign.
    let until = |what: &str, done: &dyn Fn() -> Result<bool>| {
        wait_for_within(what, Duration::from_secs(20), done)
    };

    apply("virtual-service-all-v1.yaml")?;
    until("all-v1", &|| {
        Ok(version(false)? == "v1" && version(true)? == "v1")
    })?;
    for _ in 0..20 {
        ensure!(version(false)? == "v1", "all-v1 served another version");
    }

    apply("virtual-service-reviews-80-20.yaml")?;
    until("80/20", &|| Ok(version(false)? == "v2"))?;
    let mut v1 = 0;
    const PAGES: usize = 200;
    for _ in 0..PAGES {
        match version(false)? {
            "v1" => v1 += 1,
            "v2" => {}
            other => bail!("80/20 served {other}"),
        }
    }
    let share = v1 as f64 / PAGES as f64;
    ensure!(
        (0.75..=0.85).contains(&share),
        "v1 served {share:.2} of {PAGES} pages, not 0.80 ± 0.05"
    );

    apply("virtual-service-reviews-jason-v2-v3.yaml")?;
    until("jason-v2-v3", &|| Ok(version(false)? == "v3"))?;
    for _ in 0..10 {
        ensure!(version(true)? == "v2" && version(false)? == "v3");
    }

    const REVIEWS_DOWN: &str = "Sorry, product reviews are currently unavailable for this book.";
    apply("virtual-service-ratings-test-delay.yaml")?;
    until("the ratings delay", &|| {
        Ok(page(true)?.contains(REVIEWS_DOWN))
    })?;
    ensure!(page(true)?.contains(REVIEWS_DOWN));
    ensure!(
        version(false)? == "v3",
        "others are affected by jason's delay"
    );

    apply("virtual-service-ratings-test-abort.yaml")?;
    until("the ratings abort", &|| {
        Ok(page(true)?.contains("Ratings service is currently unavailable"))
    })?;
    let others = page(false)?;
    ensure!(
        !others.contains("Ratings service is currently unavailable"),
        "others see jason's abort: {others}"
    );

    const DETAILS_DOWN: &str = "Sorry, product details are currently unavailable for this book.";
    apply("fault-injection-details-v1.yaml")?;
    until("the details abort", &|| {
        Ok(page(false)?.contains(DETAILS_DOWN))
    })?;
    for _ in 0..10 {
        ensure!(
            page(false)?.contains(DETAILS_DOWN),
            "the details abort is at 100 %"
        );
    }

    let pid = demo.child.id();
    let lab_id = demo.lab_id.clone();
    ensure!(demo.terminate()?.success());
    let left = leftovers(&lab_id, pid, 2)?;
    ensure!(left.is_empty(), "left behind after SIGTERM: {left:#?}");
    Ok(())
}

/// One instant query to Prometheus's HTTP API: the result vector.
fn prometheus_query(base: &str, promql: &str) -> Result<Vec<Value>> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-G"])
        .arg(format!("{base}api/v1/query"))
        .args(["--data-urlencode", &format!("query={promql}")])
        .output()?;
    let body: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{promql}: {}", String::from_utf8_lossy(&out.stdout)))?;
    ensure!(body["status"] == "success", "{promql}: {body}");
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The single value of a scalar-like query (a `sum`), 0 when there is no series yet.
fn prometheus_value(base: &str, promql: &str) -> Result<f64> {
    let result = prometheus_query(base, promql)?;
    Ok(result
        .first()
        .and_then(|r| r["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// `--prometheus` runs Debian's real Prometheus against the demo: it scrapes both agents
/// and the gateway, and the gateway's `istio_requests_total` for the product page grows by
/// exactly the requests the test made; the agents' byte counters name the workloads the
/// product page called, by their Deployments' names as Istio's do (`productpage-v1`, not
/// the pod `productpage-v1-<hash>-<suffix>`).
#[test]
fn demo_with_prometheus_counts_what_the_client_did() -> Result<()> {
    let demo = Demo::start(&["--prometheus", "127.0.0.1:0"])?;
    let base = demo
        .lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("prometheus"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(ToString::to_string)
        .with_context(|| format!("no prometheus line: {:?}", demo.lines))?;
    mesh_tests::wait_for("prometheus to scrape both agents and the gateway", || {
        let up = prometheus_value(&base, "sum(up)").unwrap_or(0.0);
        Ok(up == 3.0)
    })?;
    let requests = "sum(istio_requests_total{source_workload=\"istio-ingressgateway\",\
                    destination_workload=\"productpage-v1\",response_code=\"200\"})";
    let before = prometheus_value(&base, requests)?;
    // Counters do not change once idle: wait for one more scrape of the same value.
    std::thread::sleep(Duration::from_secs(3));
    let before = before.max(prometheus_value(&base, requests)?);
    const PAGES: f64 = 20.0;
    for _ in 0..PAGES as usize {
        let (status, _) = demo.curl("/productpage", &[])?;
        ensure!(status == 200, "product page: {status}");
    }
    let mut last = before;
    mesh_tests::wait_for("prometheus to see the test's product pages", || {
        last = prometheus_value(&base, requests)?;
        Ok(last >= before + PAGES)
    })
    .with_context(|| format!("{requests}: {before} before, {last} last"))?;
    std::thread::sleep(Duration::from_secs(3));
    let after = prometheus_value(&base, requests)?;
    ensure!(
        after - before == PAGES,
        "{requests}: {before} -> {after}, the test made {PAGES} requests"
    );
    // The product page's own calls, seen by its agent (L4, reporter="source"): bytes
    // from productpage to the details and reviews Services.
    let edges = prometheus_query(
        &base,
        "sum by (destination_service) (istio_tcp_sent_bytes_total{reporter=\"source\",\
         source_workload=\"productpage-v1\"})",
    )?;
    for callee in ["details", "reviews"] {
        let service = format!("{callee}.default.svc.cluster.local");
        ensure!(
            edges
                .iter()
                .any(|e| e["metric"]["destination_service"] == service.as_str()
                    && e["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)),
            "no bytes from productpage-v1 to {service}: {edges:?}"
        );
    }
    // ... and the workloads behind them: the endpoint the agent dialled is named by its
    // Deployment, as Istio names workloads (not by the pod).
    let workloads = prometheus_query(
        &base,
        "sum by (destination_workload) (istio_tcp_sent_bytes_total{reporter=\"source\",\
         source_workload=\"productpage-v1\"})",
    )?;
    let called: Vec<&str> = workloads
        .iter()
        .filter_map(|e| e["metric"]["destination_workload"].as_str())
        .collect();
    ensure!(
        called.contains(&"details-v1")
            && called.iter().any(|w| w.starts_with("reviews-v"))
            && called
                .iter()
                .all(|w| { ["details-v1", "reviews-v1", "reviews-v2", "reviews-v3"].contains(w) }),
        "productpage's destination_workload are not the Deployments: {called:?}"
    );
    // ... with Kiali's canonical service and revision (the `app` and `version` labels).
    let canonical = prometheus_query(
        &base,
        "sum by (destination_canonical_service, destination_canonical_revision) \
         (istio_tcp_sent_bytes_total{reporter=\"source\",source_canonical_service=\"productpage\",\
         source_canonical_revision=\"v1\"})",
    )?;
    let pairs: Vec<(&str, &str)> = canonical
        .iter()
        .filter_map(|e| {
            Some((
                e["metric"]["destination_canonical_service"].as_str()?,
                e["metric"]["destination_canonical_revision"].as_str()?,
            ))
        })
        .collect();
    ensure!(
        pairs.contains(&("details", "v1"))
            && pairs
                .iter()
                .any(|(s, r)| *s == "reviews" && r.starts_with('v')),
        "productpage's calls by canonical service and revision: {pairs:?}"
    );
    exact_bytes_from_productpage_to_reviews(&demo, &base)
}

/// The L4 counters count exactly what crossed: curl run inside productpage's pod (its
/// cgroup and namespace, so captured as the app's own connections are) calls reviews by
/// name, one connection per request, and says how many bytes it sent and received; the
/// agent's `istio_tcp_*` for productpage → reviews grow by exactly that.
fn exact_bytes_from_productpage_to_reviews(demo: &Demo, base: &str) -> Result<()> {
    let pod = demo
        .lines
        .iter()
        .find(|l| l.contains("pod default/productpage-v1-"))
        .and_then(|l| l.split_whitespace().nth(2))
        .with_context(|| format!("no productpage pod line: {:?}", demo.lines))?
        .to_string();
    let (node, slot) = pod
        .trim_start_matches('n')
        .split_once('p')
        .with_context(|| format!("lab pod name {pod}"))?;
    let cgroup = mesh_testbed::cgroup::cgroup2_mount()?
        .join(format!("mesh-{}", demo.lab_id))
        .join(format!("n{node}"))
        .join(format!("p{slot}"));
    let netns = format!("mt{}-{pod}", demo.lab_id);
    let selector = "reporter=\"source\",source_workload=\"productpage-v1\",\
                    destination_service=\"reviews.default.svc.cluster.local\",\
                    destination_workload=~\"reviews-v[123]\"";
    let metric = |name: &str| format!("sum({name}{{{selector}}})");
    let read_all = || -> Result<[f64; 3]> {
        Ok([
            prometheus_value(base, &metric("istio_tcp_connections_opened_total"))?,
            prometheus_value(base, &metric("istio_tcp_sent_bytes_total"))?,
            prometheus_value(base, &metric("istio_tcp_received_bytes_total"))?,
        ])
    };
    // Idle counters: the same value over two scrapes.
    let mut before = read_all()?;
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let again = read_all()?;
        if again == before {
            break;
        }
        before = again;
    }
    const CALLS: usize = 5;
    let (mut sent, mut received) = (0.0, 0.0);
    for _ in 0..CALLS {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec ip netns exec {netns} curl -sS -o /dev/null \
             --max-time 10 -H 'Connection: close' \
             -w '%{{size_request}} %{{size_header}} %{{size_download}}' \
             http://reviews:9080/reviews/0",
            cgroup.display()
        );
        let out = Command::new("sh").args(["-c", &script]).output()?;
        ensure!(
            out.status.success(),
            "curl in productpage's pod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sizes: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        ensure!(sizes.len() == 3, "curl -w: {sizes:?}");
        sent += sizes[0];
        received += sizes[1] + sizes[2];
    }
    let expected = [
        before[0] + CALLS as f64,
        before[1] + sent,
        before[2] + received,
    ];
    let mut after = before;
    mesh_tests::wait_for("prometheus to see the test's calls to reviews", || {
        after = read_all()?;
        Ok(after[0] >= expected[0] && after[2] >= expected[2])
    })
    .with_context(|| format!("before {before:?}, after {after:?}, expected {expected:?}"))?;
    std::thread::sleep(Duration::from_secs(3));
    let after = read_all()?;
    ensure!(
        after == expected,
        "[opened, sent, received] for productpage -> reviews: before {before:?}, after \
         {after:?}, curl made {CALLS} connections sending {sent} and receiving {received} bytes"
    );
    Ok(())
}

/// The Grafana dashboards of `deploy/grafana/` against the demo's real Prometheus, with a
/// waypoint so that L7 metrics exist between the services too: every panel's PromQL, its
/// variables set to the dashboard's defaults (Bookinfo's product page), returns data
/// while product pages are being fetched. (Grafana itself is not on these machines.)
#[test]
fn every_dashboard_query_returns_data_from_the_demo_prometheus() -> Result<()> {
    let dir = bookinfo_with_waypoint("dashboards", &[])?;
    let config = dir.0.to_string_lossy().into_owned();
    let demo = Demo::start(&["--config", &config, "--prometheus", "127.0.0.1:0"])?;
    let base = demo
        .lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("prometheus"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(ToString::to_string)
        .with_context(|| format!("no prometheus line: {:?}", demo.lines))?;
    let waypoint_seen =
        "sum(istio_requests_total{reporter=\"waypoint\",source_workload=\"productpage-v1\"})";
    mesh_tests::wait_for("prometheus to scrape the waypoint's requests", || {
        for _ in 0..5 {
            demo.curl("/productpage", &[])?;
        }
        Ok(prometheus_value(&base, waypoint_seen)? > 0.0)
    })?;
    // A rate needs two samples of a series: a few more scrapes (every 2 s) with traffic.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        demo.curl("/productpage", &[])?;
    }
    let dashboards = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let mut checked = 0;
    for file in [
        "mesh-dashboard.json",
        "service-dashboard.json",
        "workload-dashboard.json",
    ] {
        let dashboard: Value = serde_json::from_slice(&std::fs::read(dashboards.join(file))?)
            .with_context(|| format!("{file} is not JSON"))?;
        let variables: Vec<(String, String)> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                Some((
                    v["name"].as_str()?.to_string(),
                    v["current"]["value"].as_str()?.to_string(),
                ))
            })
            .collect();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let mut expr = target["expr"]
                    .as_str()
                    .with_context(|| format!("{file}: a target without expr: {target}"))?
                    .replace("$__rate_interval", "30s");
                for (name, value) in &variables {
                    expr = expr.replace(&format!("${name}"), value);
                }
                // Traffic right before each query: the rates look at the last 30 s.
                demo.curl("/productpage", &[])?;
                let result = prometheus_query(&base, &expr)?;
                if result.is_empty() {
                    // What there is instead, to see which label did not match.
                    let metric = expr
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .find(|w| w.starts_with("istio_"))
                        .unwrap_or("istio_requests_total");
                    let series = prometheus_query(
                        &base,
                        &format!(
                            "count by (reporter, source_workload, destination_service, destination_workload) ({metric})"
                        ),
                    )?;
                    let series: Vec<&Value> = series.iter().map(|s| &s["metric"]).collect();
                    bail!(
                        "{file}, panel {:?}: no data for {expr}; {metric} has {series:#?}",
                        panel["title"]
                    );
                }
                checked += 1;
            }
        }
    }
    ensure!(checked >= 20, "only {checked} queries in the dashboards");
    Ok(())
}

/// `GET url` with curl, as JSON.
fn curl_json(url: &str) -> Result<Value> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()?;
    ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Whether the graph has an edge from `from` to `to` (node ids).
fn has_edge(graph: &Value, from: &str, to: &str) -> bool {
    graph["edges"]
        .as_array()
        .is_some_and(|edges| edges.iter().any(|e| e["from"] == from && e["to"] == to))
}

/// Workloads are their Deployments, as in Istio's metrics and Kiali's graph.
const PRODUCTPAGE_NODE: &str = "workload:default/productpage-v1";
const REVIEWS_SERVICE: &str = "service:reviews.default.svc.cluster.local";
const RATINGS_SERVICE: &str = "service:ratings.default.svc.cluster.local";

/// Issue 13's service graph and trace view, and issue 11's product page, in a real
/// browser: the demo runs Bookinfo with a waypoint (so requests between the services are
/// seen at L7), the test drives product pages until reviews v1, v2 and v3 have all
/// answered, then headless Chromium loads the console's graph, a workload's page, the
/// trace list and one trace, and the product page itself. The rendered DOM must hold the
/// nodes and edges productpage → reviews → reviews v1/v2/v3 → ratings → ratings v1, with
/// the padlock on the mutual TLS hops; the screenshots are kept in
/// `target/test-artifacts/` (the README shows copies).
#[test]
fn the_console_draws_bookinfo_in_chromium_and_the_product_page_renders() -> Result<()> {
    let dir = bookinfo_with_waypoint("console", &[])?;
    let config = dir.0.to_string_lossy().into_owned();
    let demo = Demo::start(&["--config", &config])?;
    let console = demo
        .lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("console"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| url.trim_end_matches('/').to_string())
        .with_context(|| format!("no console line: {:?}", demo.lines))?;

    let mut versions = std::collections::BTreeSet::new();
    for i in 0..90 {
        let (status, body) = demo.curl("/productpage", &[])?;
        ensure!(status == 200, "status {status}: {body}");
        versions.insert(reviews_version(&body)?);
        if versions.len() == 3 && i >= 20 {
            break;
        }
    }
    ensure!(versions.len() == 3, "reviews versions seen: {versions:?}");

    let reviews_workload = |v: &str| format!("workload:default/reviews-{v}");
    let mut graph = Value::Null;
    mesh_tests::wait_for("the console's graph to show Bookinfo's calls", || {
        graph = curl_json(&format!("{console}/api/graph"))?;
        Ok(has_edge(&graph, PRODUCTPAGE_NODE, REVIEWS_SERVICE)
            && ["v1", "v2", "v3"]
                .iter()
                .all(|v| has_edge(&graph, REVIEWS_SERVICE, &reviews_workload(v)))
            && has_edge(&graph, &reviews_workload("v2"), RATINGS_SERVICE)
            && has_edge(&graph, RATINGS_SERVICE, "workload:default/ratings-v1"))
    })
    .with_context(|| format!("graph: {graph:#}"))?;
    let mutual_tls = graph["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["from"].as_str() == Some(PRODUCTPAGE_NODE) && e["to"] == REVIEWS_SERVICE)
        .is_some_and(|e| e["mutual_tls"] == true);
    ensure!(
        mutual_tls,
        "productpage → reviews is not mutual TLS: {graph:#}"
    );

    let browser = mesh_tests::browser::Browser::new()?;
    let artifacts = mesh_tests::browser::artifact_dir();
    let dom = browser.dom(&format!("{console}/"))?;
    let drawn_node = |id: &str| dom.contains(&format!("class=\"node\" data-node=\"{id}\""));
    let drawn_edge = |from: &str, to: &str| {
        dom.match_indices("class=\"edge\" data-from=\"")
            .any(|(at, _)| {
                let rest = &dom[at + "class=\"edge\" data-from=\"".len()..];
                let Some((edge_from, rest)) = rest.split_once("\" data-to=\"") else {
                    return false;
                };
                let edge_to = rest.split('"').next().unwrap_or("");
                edge_from == from && edge_to == to
            })
    };
    for node in [PRODUCTPAGE_NODE, REVIEWS_SERVICE, RATINGS_SERVICE] {
        ensure!(drawn_node(node), "node {node} not drawn: {dom}");
    }
    for v in ["v1", "v2", "v3"] {
        ensure!(
            drawn_node(&reviews_workload(v)),
            "reviews {v} not drawn: {dom}"
        );
        ensure!(
            drawn_edge(REVIEWS_SERVICE, &reviews_workload(v)),
            "no edge reviews → {v}: {dom}"
        );
    }
    ensure!(
        drawn_edge(PRODUCTPAGE_NODE, REVIEWS_SERVICE),
        "no edge productpage → reviews: {dom}"
    );
    ensure!(
        drawn_edge(&reviews_workload("v3"), RATINGS_SERVICE),
        "no edge reviews v3 → ratings: {dom}"
    );
    ensure!(dom.contains("\u{1F512} mutual TLS"), "no padlock: {dom}");
    browser.screenshot(
        &format!("{console}/"),
        &artifacts.join("console-graph.png"),
        1600,
        1100,
    )?;

    // A workload's page: its traffic and what configuration applies to it.
    ensure!(
        dom.contains("href=\"/workloads/default/reviews-v2\""),
        "no link to the reviews-v2 workload: {dom}"
    );
    let workload_url = format!("{console}/workloads/default/reviews-v2");
    let workload = browser.dom(&workload_url)?;
    ensure!(
        workload.contains("DestinationRule default/reviews")
            && workload.contains("reviews.default.svc.cluster.local"),
        "reviews-v2's page lacks its DestinationRule or Service: {workload}"
    );
    ensure!(
        workload.contains(&format!("data-to=\"{RATINGS_SERVICE}\"")),
        "reviews-v2's page lacks its calls to ratings: {workload}"
    );
    browser.screenshot(
        &workload_url,
        &artifacts.join("console-workload.png"),
        1400,
        1000,
    )?;

    // The traces: one product page request is one trace across the services.
    let traces = browser.dom(&format!("{console}/traces"))?;
    let trace_ids: Vec<&str> = traces
        .split("class=\"trace\" data-trace=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    ensure!(!trace_ids.is_empty(), "no trace listed: {traces}");
    browser.screenshot(
        &format!("{console}/traces"),
        &artifacts.join("console-traces.png"),
        1400,
        900,
    )?;
    let mut widest = (0, String::new());
    for id in trace_ids.iter().take(20) {
        let page = browser.dom(&format!("{console}/traces/{id}"))?;
        let spans = page.matches("class=\"span\"").count();
        if spans > widest.0 {
            widest = (spans, id.to_string());
        }
    }
    ensure!(
        widest.0 >= 6,
        "no trace has the gateway's, productpage's, reviews' and ratings' spans (most: {})",
        widest.0
    );
    let trace_url = format!("{console}/traces/{}", widest.1);
    let trace = browser.dom(&trace_url)?;
    for service in ["istio-ingressgateway", "waypoint"] {
        ensure!(
            trace.contains(service),
            "trace lacks {service}'s spans: {trace}"
        );
    }
    browser.screenshot(&trace_url, &artifacts.join("console-trace.png"), 1400, 900)?;

    // Issue 11: the product page in the browser, through the gateway.
    let product = browser.dom(&demo.url("/productpage"))?;
    ensure!(
        product.contains("The Comedy of Errors")
            && product.contains("Book Reviews")
            && product.contains("Reviews served by"),
        "the product page lacks its title or reviews: {product}"
    );
    browser.screenshot(
        &demo.url("/productpage"),
        &artifacts.join("productpage.png"),
        1200,
        1000,
    )?;
    Ok(())
}

/// A demo killed with SIGKILL runs no cleanup: its agents, gateway, namespaces, cgroups,
/// pins and files stay. The next demo sweeps them before it starts (the lab's owner
/// record names a process that is gone), and says so.
#[test]
fn a_demo_killed_with_sigkill_is_swept_by_the_next_one() -> Result<()> {
    let mut killed = Demo::start(&["--nodes", "2"])?;
    let (lab_id, pid) = (killed.lab_id.clone(), killed.child.id());
    killed.child.kill()?;
    killed.child.wait()?;
    let left = leftovers(&lab_id, pid, 2)?;
    ensure!(
        left.iter().any(|l| l.starts_with("namespace"))
            && left.iter().any(|l| l.starts_with("process")),
        "a SIGKILLed demo should leave its namespaces and agents: {left:#?}"
    );
    let mut next = Demo::start(&["--nodes", "2"])?;
    ensure!(
        next.lines
            .iter()
            .any(|l| l.starts_with(&format!("removed lab {lab_id} "))),
        "the next demo did not say it swept lab {lab_id}: {:#?}",
        next.lines
    );
    let left = leftovers(&lab_id, pid, 2)?;
    ensure!(left.is_empty(), "left after the sweep: {left:#?}");
    let (status, _) = next.curl("/productpage", &[])?;
    ensure!(status == 200, "the next demo serves: {status}");
    let (next_lab, next_pid) = (next.lab_id.clone(), next.child.id());
    ensure!(next.terminate()?.success());
    let left = leftovers(&next_lab, next_pid, 2)?;
    ensure!(left.is_empty(), "left behind after SIGTERM: {left:#?}");
    Ok(())
}
