//! Issue 13's traces: the ingress gateway and the waypoint create spans for every request
//! and export them over OTLP/gRPC to the collector Istio's mesh config names
//! (`extensionProviders` + `defaultProviders.tracing`). With Bookinfo's apps forwarding the
//! trace headers, one product page request is one trace: the gateway's server and client
//! spans, then the waypoint's spans of productpage's calls to details and reviews and of
//! reviews' call to ratings, each hanging under the span of the hop before it. A collector
//! that stops answering costs requests nothing; its spans are dropped and counted. The
//! gateway's access log, in JSON, names the same request and trace.
//!
//! Real parts: the agents, the waypoint and the gateway as processes in enrolled lab pods,
//! Bookinfo's apps, Bookinfo's unchanged gateway file, curl, and the project's OTLP
//! receiver (`mesh-agent app trace-collector`) in a pod outside the mesh.
use std::{path::PathBuf, process::Stdio};

use anyhow::{Context, Result, ensure};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, Workload, agent_bin, counter, tracing_mesh_config, wait_for};
use serde_json::Value;

const PRODUCTPAGE: Workload<'static> = Workload {
    node: 1,
    pod: 1,
    service_account: "bookinfo-productpage",
    labels: &[("app", "productpage"), ("version", "v1")],
};
const REVIEWS: Workload<'static> = Workload {
    node: 1,
    pod: 2,
    service_account: "bookinfo-reviews",
    labels: &[("app", "reviews"), ("version", "v3")],
};
const GATEWAY: Workload<'static> = Workload {
    node: 1,
    pod: 3,
    service_account: "ingressgateway",
    labels: &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
};
// Istio labels a waypoint's pods with its Gateway's name.
const WAYPOINT: Workload<'static> = Workload {
    node: 2,
    pod: 1,
    service_account: "waypoint",
    labels: &[("gateway.networking.k8s.io/gateway-name", "waypoint")],
};
const DETAILS: Workload<'static> = Workload {
    node: 2,
    pod: 2,
    service_account: "bookinfo-details",
    labels: &[("app", "details"), ("version", "v1")],
};
const RATINGS: Workload<'static> = Workload {
    node: 2,
    pod: 3,
    service_account: "bookinfo-ratings",
    labels: &[("app", "ratings"), ("version", "v1")],
};
/// Outside the mesh: the browser's stand-in, and the collector.
const CLIENT: (usize, usize) = (1, 4);
const COLLECTOR: (usize, usize) = (2, 4);

const WORKLOADS: [Workload<'static>; 6] =
    [PRODUCTPAGE, REVIEWS, GATEWAY, WAYPOINT, DETAILS, RATINGS];

/// Bookinfo's Services and the namespace's waypoint as `istioctl waypoint apply` makes it.
const SERVICES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: default
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec: {selector: {app: productpage}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec: {selector: {app: details}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
"#;

fn bookinfo(file: &str) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/istio-bookinfo")
        .join(file);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The lab with Bookinfo, the waypoint, the gateway and the collector running.
struct TracingLab {
    mesh: Mesh,
    config_dir: PathBuf,
    logs: Vec<PathBuf>,
    passed: bool,
    collector: Option<LabChild>,
    _children: Vec<LabChild>,
}

impl Drop for TracingLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config_dir);
        for log in &self.logs {
            if self.passed {
                let _ = std::fs::remove_file(log);
            } else {
                eprintln!("log kept: {}", log.display());
            }
        }
    }
}

impl TracingLab {
    fn start() -> Result<TracingLab> {
        let mesh = Mesh::start(2, 4)?;
        let id = mesh.lab.id().to_string();
        let tmp = std::env::temp_dir();
        let mut lab = TracingLab {
            config_dir: tmp.join(format!("mesh-test-{id}-tracing-config")),
            logs: vec![
                tmp.join(format!("mesh-test-{id}-tracing-waypoint.log")),
                tmp.join(format!("mesh-test-{id}-tracing-gateway.log")),
            ],
            passed: false,
            collector: None,
            _children: Vec::new(),
            mesh,
        };
        std::fs::create_dir_all(&lab.config_dir)?;
        let mesh = &lab.mesh;
        mesh.enroll_workloads(&WORKLOADS)?;
        let workloads = mesh.workloads_yaml(&WORKLOADS).replacen(
            "labels: {istio.io/dataplane-mode: ambient}",
            "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
            1,
        );
        ensure!(workloads.contains("use-waypoint"), "{workloads}");
        let collector_ip = mesh.pod(COLLECTOR.0, COLLECTOR.1).ip().to_string();
        let files = [
            ("workloads.yaml", workloads),
            ("services.yaml", SERVICES.to_string()),
            ("bookinfo-gateway.yaml", bookinfo("bookinfo-gateway.yaml")?),
            ("mesh-config.yaml", tracing_mesh_config(&collector_ip, 4317)),
        ];
        for (name, yaml) in &files {
            mesh.apply_all(name, yaml)?;
            std::fs::write(lab.config_dir.join(name), yaml)?;
        }
        lab.collector = Some(mesh.serve_in_pod(
            COLLECTOR.0,
            COLLECTOR.1,
            &[
                "trace-collector",
                "--otlp",
                "0.0.0.0:4317",
                "--http",
                "0.0.0.0:16686",
            ],
            16686,
        )?);
        let mut children = vec![
            mesh.start_named_app(
                &PRODUCTPAGE,
                "productpage-v1-trace",
                &["productpage", "--listen", "0.0.0.0:9080"],
            )?,
            mesh.start_named_app(
                &DETAILS,
                "details-v1-trace",
                &["details", "--listen", "0.0.0.0:9080"],
            )?,
            mesh.start_named_app(
                &REVIEWS,
                "reviews-v3-trace",
                &["reviews", "--listen", "0.0.0.0:9080", "--stars", "red"],
            )?,
            mesh.start_named_app(
                &RATINGS,
                "ratings-v1-trace",
                &["ratings", "--listen", "0.0.0.0:9080"],
            )?,
        ];
        let proxies: [(&Workload, Vec<&str>); 2] = [
            (
                &WAYPOINT,
                vec!["waypoint", "--name", "waypoint", "--namespace", "default"],
            ),
            (
                &GATEWAY,
                vec![
                    "gateway",
                    "--labels",
                    "istio=ingressgateway,app=istio-ingressgateway",
                    "--namespace",
                    "default",
                    // A log collector's format, checked below.
                    "--access-log-format",
                    "json",
                ],
            ),
        ];
        for ((w, args), log) in proxies.iter().zip(&lab.logs) {
            let mut cmd = mesh.pod(w.node, w.pod).command(agent_bin());
            cmd.args(args)
                .arg("--config-dir")
                .arg(&lab.config_dir)
                .args(["--metrics-addr", "127.0.0.1:15020"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log)?);
            children.push(mesh.lab.spawn(&mut cmd)?);
        }
        lab._children = children;
        wait_for("the product page through the gateway", || {
            Ok(lab
                .page("ready")
                .is_ok_and(|(s, page)| s == 200 && page.contains("Reviews served by")))
        })?;
        Ok(lab)
    }

    /// The product page through the gateway, sent with this `x-request-id`.
    fn page(&self, request_id: &str) -> Result<(u16, String)> {
        let gateway = self.mesh.pod(GATEWAY.node, GATEWAY.pod).ip();
        let url = format!("http://{gateway}/productpage");
        let header = format!("x-request-id: {request_id}");
        let args = [
            "-sS",
            "--max-time",
            "15",
            "-H",
            &header,
            "-w",
            "\n%{http_code}",
            &url,
        ];
        let out = self.mesh.run_in_pod(CLIENT.0, CLIENT.1, "curl", &args)?;
        ensure!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse()?, body.to_string()))
    }

    /// The collector's traces (`GET /api/traces`).
    fn traces(&self) -> Result<Vec<Value>> {
        let out = self.mesh.run_in_pod(
            COLLECTOR.0,
            COLLECTOR.1,
            "curl",
            &[
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:16686/api/traces",
            ],
        )?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout)?;
        Ok(json["traces"].as_array().cloned().unwrap_or_default())
    }

    fn gateway_metrics(&self) -> Result<String> {
        let out = self.mesh.run_in_pod(
            GATEWAY.node,
            GATEWAY.pod,
            "curl",
            &["-sS", "--max-time", "5", "http://127.0.0.1:15020/metrics"],
        )?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a str {
    span["attributes"][key].as_str().unwrap_or_default()
}

/// The span of `kind` from the proxy whose `service.name` starts with `service`, whose
/// upstream cluster is for `host`.
fn span_to<'a>(spans: &'a [Value], kind: &str, service: &str, host: &str) -> Result<&'a Value> {
    spans
        .iter()
        .find(|s| {
            s["kind"] == kind
                && s["service"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(service))
                && attr(s, "upstream_cluster").ends_with(&format!("|{host}"))
        })
        .with_context(|| format!("no {kind} span of {service} to {host} in {spans:#?}"))
}

#[test]
fn one_product_page_request_is_one_trace_across_gateway_waypoint_and_services() -> Result<()> {
    let mut lab = TracingLab::start()?;
    let request_id = "trace-test-productpage-1";
    let (status, page) = lab.page(request_id)?;
    ensure!(
        status == 200 && page.contains("Reviews served by"),
        "{status} {page}"
    );

    // The trace the collector received for that request.
    let mut trace = None;
    wait_for("the request's spans at the collector", || {
        let found = lab.traces()?.into_iter().find(|t| {
            t["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| attr(s, "guid:x-request-id") == request_id))
        });
        // Each proxy sends its spans in its own batches (≤ 1 s apart): wait for all eight,
        // the gateway's two and the waypoint's two for each of details, reviews and ratings.
        let complete = found
            .as_ref()
            .and_then(|t| t["spans"].as_array())
            .is_some_and(|s| s.len() >= 8);
        trace = found;
        Ok(complete)
    })?;
    let trace = trace.context("the trace")?;
    let spans: Vec<Value> = trace["spans"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();

    // One trace: every span carries the client's request id, exactly one is the root, and
    // every other's parent is a span of the same trace.
    for span in &spans {
        assert_eq!(attr(span, "guid:x-request-id"), request_id, "{span}");
        assert_eq!(span["trace_id"], trace["trace_id"]);
    }
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent_span_id"] == "").collect();
    assert_eq!(roots.len(), 1, "one root span: {spans:#?}");
    for span in &spans {
        let parent = span["parent_span_id"].as_str().unwrap_or_default();
        assert!(
            parent.is_empty() || ids.contains(&parent),
            "orphan span {span}"
        );
    }

    // The gateway: its server span is the root, its client span the call to productpage.
    let productpage = "productpage.default.svc.cluster.local";
    // `service.name` is Istio's `<canonical service>.<namespace>`.
    let gw_server = span_to(
        &spans,
        "server",
        "istio-ingressgateway.default",
        productpage,
    )?;
    let gw_client = span_to(
        &spans,
        "client",
        "istio-ingressgateway.default",
        productpage,
    )?;
    assert_eq!(gw_server["parent_span_id"], "", "{gw_server}");
    assert_eq!(gw_client["parent_span_id"], gw_server["span_id"]);
    assert_eq!(attr(gw_server, "http.status_code"), "200");
    assert_eq!(gw_server["name"], format!("{productpage}:9080/*"));

    // productpage's calls through the waypoint hang under the gateway's client span (the
    // app forwarded the headers it got); reviews' call to ratings under the waypoint's
    // client span of the call to reviews.
    for host in ["details", "reviews"] {
        let host = format!("{host}.default.svc.cluster.local");
        let server = span_to(&spans, "server", "waypoint.default", &host)?;
        assert_eq!(server["parent_span_id"], gw_client["span_id"], "{server}");
        let client = span_to(&spans, "client", "waypoint.default", &host)?;
        assert_eq!(client["parent_span_id"], server["span_id"], "{client}");
        assert_eq!(attr(server, "http.status_code"), "200");
    }
    let to_reviews = span_to(
        &spans,
        "client",
        "waypoint.default",
        "reviews.default.svc.cluster.local",
    )?;
    let ratings = span_to(
        &spans,
        "server",
        "waypoint.default",
        "ratings.default.svc.cluster.local",
    )?;
    assert_eq!(
        ratings["parent_span_id"], to_reviews["span_id"],
        "{ratings}"
    );
    // Istio's attributes on every span.
    for span in &spans {
        for key in [
            "istio.canonical_service",
            "upstream_cluster",
            "http.status_code",
            "response_flags",
        ] {
            assert!(!attr(span, key).is_empty(), "{key} missing on {span}");
        }
    }

    // The gateway's access log line for the request, as JSON with Envoy's field names.
    let log = std::fs::read_to_string(&lab.logs[1])?;
    let line = log
        .lines()
        .find(|l| l.starts_with('{') && l.contains(request_id))
        .with_context(|| format!("no JSON access log line for {request_id} in\n{log}"))?;
    let entry: Value = serde_json::from_str(line).with_context(|| line.to_string())?;
    assert_eq!(entry["target"], "access", "{entry}");
    assert_eq!(entry["x_request_id"], request_id, "{entry}");
    assert_eq!(entry["method"], "GET", "{entry}");
    assert_eq!(entry["path"], "/productpage", "{entry}");
    assert_eq!(entry["response_code"], 200, "{entry}");
    assert_eq!(entry["upstream_cluster"], productpage, "{entry}");
    assert!(
        entry["start_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{entry}"
    );
    assert_eq!(
        entry["trace_id"].as_str(),
        trace["trace_id"].as_str(),
        "{entry}"
    );

    // A collector that stops answering (its process stopped: connections to it hang)
    // costs requests nothing: every page is served, and the spans are dropped and counted.
    let collector = lab.collector.take().context("the collector")?;
    let pid = collector.pid().to_string();
    ensure!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()?
            .success(),
        "SIGSTOP to the collector"
    );
    for i in 0..20 {
        let (status, _) = lab.page(&format!("trace-test-stopped-{i}"))?;
        ensure!(
            status == 200,
            "request {i} with the collector stopped: {status}"
        );
    }
    wait_for("the gateway to count spans it could not deliver", || {
        let metrics = lab.gateway_metrics()?;
        Ok(counter(
            &metrics,
            "mesh_spans_dropped_total",
            &[("reason", "export_failed")],
        ) > 0)
    })?;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    drop(collector);
    lab.passed = true;
    Ok(())
}
