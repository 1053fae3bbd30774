//! The waypoint (`mesh-agent waypoint`) applying Istio's routing and L7 policy to mesh
//! traffic, as in Istio ambient: a real waypoint process in its own enrolled lab pod,
//! Services bound to it with `istio.io/use-waypoint`, clients' agents sending their traffic
//! there over HBONE, Bookinfo's unchanged VirtualServices and DestinationRules, real HTTP
//! servers behind it and curl in the client pods.
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, Workload, agent_bin, counter, wait_for};
use serde_json::Value;

const CLIENT: (usize, usize) = (1, 1);
const WAYPOINT: (usize, usize) = (2, 1);
const INTRUDER: (usize, usize) = (2, 4);
const GATEWAY: (usize, usize) = (1, 5);

const WORKLOADS: [Workload<'static>; 9] = [
    Workload {
        node: 1,
        pod: 1,
        service_account: "sleep",
        labels: &[("app", "sleep")],
    },
    // Istio labels a waypoint's pods with its Gateway's name.
    Workload {
        node: 2,
        pod: 1,
        service_account: "waypoint",
        labels: &[("gateway.networking.k8s.io/gateway-name", "waypoint")],
    },
    Workload {
        node: 1,
        pod: 2,
        service_account: "bookinfo-reviews",
        labels: &[("app", "reviews"), ("version", "v1"), ("tier", "flaky")],
    },
    Workload {
        node: 2,
        pod: 2,
        service_account: "bookinfo-reviews",
        labels: &[("app", "reviews"), ("version", "v2")],
    },
    Workload {
        node: 1,
        pod: 3,
        service_account: "bookinfo-reviews",
        labels: &[("app", "reviews"), ("version", "v3")],
    },
    Workload {
        node: 2,
        pod: 3,
        service_account: "bookinfo-ratings",
        labels: &[("app", "ratings"), ("version", "v1")],
    },
    Workload {
        node: 1,
        pod: 4,
        service_account: "bookinfo-details",
        labels: &[("app", "details"), ("version", "v1")],
    },
    Workload {
        node: 2,
        pod: 4,
        service_account: "intruder",
        // No server listens here: as an endpoint of `flaky` it refuses every connection.
        labels: &[("app", "intruder"), ("tier", "flaky")],
    },
    Workload {
        node: 1,
        pod: 5,
        service_account: "ingressgateway",
        labels: &[("istio", "ingressgateway")],
    },
];

/// The servers, by workload index: what each answers as its `service`.
const SERVERS: [(usize, &str); 5] = [
    (2, "reviews-v1"),
    (3, "reviews-v2"),
    (4, "reviews-v3"),
    (5, "ratings-v1"),
    (6, "details-v1"),
];

/// Bookinfo's Services (fixed VIPs so curl can name them) and the waypoint as
/// `istioctl waypoint apply` creates it. The namespace is bound to it as Istio's docs do
/// (`kubectl label ns default istio.io/use-waypoint=waypoint`, in `workloads.yaml`);
/// `direct` opts out.
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
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 198.19.77.10
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 198.19.77.11
  selector: {app: ratings}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  clusterIP: 198.19.77.12
  selector: {app: details}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: direct
  namespace: default
  labels: {istio.io/use-waypoint: none}
spec:
  clusterIP: 198.19.77.13
  selector: {app: details}
  ports: [{name: http, port: 9080, targetPort: 8080}]
"#;

const REVIEWS_VIP: &str = "198.19.77.10";
const HASHED_VIP: &str = "198.19.77.14";
const FLAKY_VIP: &str = "198.19.77.15";
const SLOW_VIP: &str = "198.19.77.16";
const RATINGS_VIP: &str = "198.19.77.11";
const DETAILS_VIP: &str = "198.19.77.12";
const DIRECT_VIP: &str = "198.19.77.13";

/// Traffic policies at the waypoint: consistent hashing on a header, retries past an
/// endpoint that refuses, a route timeout.
const RESILIENCE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: hashed, namespace: default}
spec:
  clusterIP: 198.19.77.14
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hashed, namespace: default}
spec:
  host: hashed
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
---
apiVersion: v1
kind: Service
metadata: {name: flaky, namespace: default}
spec:
  clusterIP: 198.19.77.15
  selector: {tier: flaky}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: default}
spec:
  hosts: [flaky]
  http:
  - route: [{destination: {host: flaky}}]
    retries: {attempts: 3, retryOn: "connect-failure,refused-stream,reset,503"}
---
apiVersion: v1
kind: Service
metadata: {name: slow, namespace: default}
spec:
  clusterIP: 198.19.77.16
  selector: {app: ratings}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow, namespace: default}
spec:
  hosts: [slow]
  http:
  - route: [{destination: {host: slow}}]
    timeout: 500ms
"#;

/// A gRPC service (the details pod also runs a gRPC server) behind the waypoint, and the
/// ingress gateway routing gRPC to it.
const GRPC: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: health, namespace: default}
spec:
  clusterIP: 198.19.77.17
  selector: {app: details}
  ports: [{name: grpc, port: 9090, targetPort: 9090}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: grpc-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: grpc, protocol: GRPC}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: health-edge, namespace: default}
spec:
  hosts: ["*"]
  gateways: [grpc-gateway]
  http:
  - route: [{destination: {host: health, port: {number: 9090}}}]
"#;

const HEALTH_VIP: &str = "198.19.77.17";

/// Who may call reviews, attached to the Service (enforced by its waypoint): the sleep
/// workload, reading only, never under `/admin`.
const REVIEWS_POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]
    to: [{operation: {methods: [GET], notPaths: ["/admin*"]}}]
"#;

fn bookinfo(file: &str) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/istio-bookinfo")
        .join(file);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The lab, the servers, the waypoint and its config directory (removed on drop).
struct WaypointLab {
    mesh: Mesh,
    config_dir: PathBuf,
    log: PathBuf,
    passed: bool,
    _children: Vec<LabChild>,
}

impl Drop for WaypointLab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config_dir);
        if self.passed {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("waypoint log kept: {}", self.log.display());
            for node in 1..=2 {
                let kept = self.log.with_extension(format!("agent-n{node}.log"));
                if std::fs::copy(self.mesh.log_path(node), &kept).is_ok() {
                    eprintln!("agent log kept: {}", kept.display());
                }
            }
        }
    }
}

impl WaypointLab {
    fn start(extra: &[(&str, String)]) -> Result<WaypointLab> {
        let mesh = Mesh::start(2, 5)?;
        let id = mesh.lab.id().to_string();
        let mut lab = WaypointLab {
            config_dir: std::env::temp_dir().join(format!("mesh-test-{id}-waypoint-config")),
            log: std::env::temp_dir().join(format!("mesh-test-{id}-waypoint.log")),
            passed: false,
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
        let mut files = vec![
            ("workloads.yaml", workloads),
            ("services.yaml", SERVICES.to_string()),
            (
                "destination-rule-all.yaml",
                bookinfo("destination-rule-all.yaml")?,
            ),
        ];
        files.extend(extra.iter().map(|(n, y)| (*n, y.clone())));
        for (name, yaml) in &files {
            lab.apply(name, yaml)?;
        }
        let mut children = Vec::new();
        for (index, name) in SERVERS {
            let w = WORKLOADS[index];
            children.push(mesh.serve_in_pod(
                w.node,
                w.pod,
                &["http", "--listen", "0.0.0.0:8080", "--name", name],
                8080,
            )?);
        }
        let log = std::fs::File::create(&lab.log)?;
        let mut waypoint = mesh.pod(WAYPOINT.0, WAYPOINT.1).command(agent_bin());
        waypoint
            .args(["waypoint", "--name", "waypoint", "--namespace", "default"])
            .arg("--config-dir")
            .arg(&lab.config_dir)
            .args(["--metrics-addr", "127.0.0.1:15020"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        children.push(mesh.lab.spawn(&mut waypoint)?);
        lab._children = children;
        let mut last = None;
        wait_for("the waypoint to route", || {
            let answer = lab.get(CLIENT, RATINGS_VIP, "/ready", &[]);
            let ok = answer.as_ref().is_ok_and(|(s, _)| *s == 200);
            last = Some(answer);
            Ok(ok)
        })
        .with_context(|| format!("last answer: {last:?}"))
        .with_context(|| format!("waypoint log: {}", lab.log.display()))?;
        Ok(lab)
    }

    /// What `kubectl apply` does: every agent and the waypoint get the file.
    fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        self.mesh.apply_all(name, yaml)?;
        std::fs::write(self.config_dir.join(name), yaml)?;
        Ok(())
    }

    /// curl from `pod` to `vip:9080`: (status, body).
    fn get(
        &self,
        pod: (usize, usize),
        vip: &str,
        path: &str,
        args: &[&str],
    ) -> Result<(u16, String)> {
        let url = format!("http://{vip}:9080{path}");
        let mut all = vec!["-sS", "--max-time", "15", "-w", "\n%{http_code}"];
        all.extend_from_slice(args);
        all.push(&url);
        let out = self.mesh.run_in_pod(pod.0, pod.1, "curl", &all)?;
        ensure!(
            out.status.success(),
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse()?, body.to_string()))
    }

    /// `count` requests from the client in one curl (one keep-alive connection through
    /// the waypoint); the `service` each one reached.
    fn served_by(&self, vip: &str, count: usize, headers: &[&str]) -> Result<Vec<String>> {
        let url = format!("http://{vip}:9080/reviews/0");
        let mut args: Vec<&str> = vec!["-sS", "--max-time", "60"];
        for h in headers {
            args.extend(["-H", h]);
        }
        let urls = vec![url.as_str(); count];
        args.extend(urls);
        let out = self.mesh.run_in_pod(CLIENT.0, CLIENT.1, "curl", &args)?;
        ensure!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let served: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                let json: Value = serde_json::from_str(line).with_context(|| line.to_string())?;
                Ok(json["service"].as_str().unwrap_or_default().to_string())
            })
            .collect::<Result<_>>()?;
        ensure!(
            served.len() == count,
            "{} answers for {count}",
            served.len()
        );
        Ok(served)
    }

    fn waypoint_metrics(&self) -> Result<String> {
        let out = self.mesh.run_in_pod(
            WAYPOINT.0,
            WAYPOINT.1,
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

fn share(served: &[String], service: &str) -> f64 {
    served.iter().filter(|s| *s == service).count() as f64 / served.len() as f64
}

/// Bookinfo's traffic-management tasks, unchanged YAML, applied live, through a waypoint
/// on another node than the client.
#[test]
fn bookinfo_routing_and_faults_apply_at_the_waypoint() -> Result<()> {
    let mut lab = WaypointLab::start(&[])?;

    // No VirtualService: every version answers, the waypoint balancing over them.
    let served = lab.served_by(REVIEWS_VIP, 30, &[])?;
    for v in ["reviews-v1", "reviews-v2", "reviews-v3"] {
        assert!(
            served.iter().any(|s| s == v),
            "{v} never answered: {served:?}"
        );
    }
    // The request reached the server from the waypoint's pod (its upstream connection),
    // with the client's address forwarded and a request id.
    let (_, body) = lab.get(CLIENT, REVIEWS_VIP, "/headers", &[])?;
    let json: Value = serde_json::from_str(&body)?;
    let waypoint_ip = lab.mesh.pod(WAYPOINT.0, WAYPOINT.1).ip().to_string();
    let client_ip = lab.mesh.pod(CLIENT.0, CLIENT.1).ip().to_string();
    assert!(
        json["peer"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&waypoint_ip),
        "{json}"
    );
    assert_eq!(json["headers"]["x-forwarded-for"], client_ip.as_str());
    assert_eq!(
        json["headers"]["x-request-id"].as_str().map(str::len),
        Some(36)
    );

    // virtual-service-all-v1: only v1.
    lab.apply("vs.yaml", &bookinfo("virtual-service-all-v1.yaml")?)?;
    wait_for("all-v1 to take effect", || {
        Ok(lab
            .served_by(REVIEWS_VIP, 5, &[])?
            .iter()
            .all(|s| s == "reviews-v1"))
    })?;
    let served = lab.served_by(REVIEWS_VIP, 100, &[])?;
    assert!(served.iter().all(|s| s == "reviews-v1"), "{served:?}");

    // virtual-service-reviews-80-20: 80% ± 3 over 2,000 requests.
    lab.apply("vs.yaml", &bookinfo("virtual-service-reviews-80-20.yaml")?)?;
    wait_for("80-20 to take effect", || {
        let served = lab.served_by(REVIEWS_VIP, 20, &[])?;
        Ok(served.iter().any(|s| s == "reviews-v2"))
    })?;
    let served = lab.served_by(REVIEWS_VIP, 2000, &[])?;
    let v1 = share(&served, "reviews-v1");
    let v2 = share(&served, "reviews-v2");
    assert!((0.77..=0.83).contains(&v1), "v1 share {v1}");
    assert!(
        (v1 + v2 - 1.0).abs() < 1e-9,
        "only v1 and v2: v1 {v1} v2 {v2}"
    );

    // virtual-service-reviews-jason-v2-v3: jason to v2, everyone else to v3.
    lab.apply(
        "vs.yaml",
        &bookinfo("virtual-service-reviews-jason-v2-v3.yaml")?,
    )?;
    wait_for("jason-v2-v3 to take effect", || {
        Ok(lab
            .served_by(REVIEWS_VIP, 5, &[])?
            .iter()
            .all(|s| s == "reviews-v3"))
    })?;
    let jason = lab.served_by(REVIEWS_VIP, 50, &["end-user: jason"])?;
    assert!(jason.iter().all(|s| s == "reviews-v2"), "{jason:?}");
    let others = lab.served_by(REVIEWS_VIP, 50, &["end-user: someone"])?;
    assert!(others.iter().all(|s| s == "reviews-v3"), "{others:?}");

    // virtual-service-ratings-test-delay: jason's ratings calls wait 7 s, others do not.
    lab.apply(
        "ratings.yaml",
        &bookinfo("virtual-service-ratings-test-delay.yaml")?,
    )?;
    let timed = |user: &str| -> Result<f64> {
        let header = format!("end-user: {user}");
        let url = format!("http://{RATINGS_VIP}:9080/ratings/0");
        let args = ["-sS", "--max-time", "15", "-H", &header, "-o", "/dev/null"];
        let out = lab.mesh.run_in_pod(
            CLIENT.0,
            CLIENT.1,
            "curl",
            &[&args[..], &["-w", "%{http_code} %{time_total}", &url]].concat(),
        )?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, seconds) = text.split_once(' ').unwrap_or_default();
        ensure!(status == "200", "ratings for {user}: {text}");
        Ok(seconds.trim().parse()?)
    };
    wait_for("the ratings delay to take effect", || {
        Ok(timed("jason")? >= 7.0)
    })?;
    let others = timed("someone")?;
    assert!(others < 2.0, "others delayed too: {others} s");

    // virtual-service-ratings-test-abort: 500 for jason, 200 for others.
    lab.apply(
        "ratings.yaml",
        &bookinfo("virtual-service-ratings-test-abort.yaml")?,
    )?;
    wait_for("the ratings abort to take effect", || {
        Ok(lab
            .get(
                CLIENT,
                RATINGS_VIP,
                "/ratings/0",
                &["-H", "end-user: jason"],
            )?
            .0
            == 500)
    })?;
    let (status, body) = lab.get(
        CLIENT,
        RATINGS_VIP,
        "/ratings/0",
        &["-H", "end-user: jason"],
    )?;
    assert_eq!((status, body.as_str()), (500, "fault filter abort"));
    assert_eq!(lab.get(CLIENT, RATINGS_VIP, "/ratings/0", &[])?.0, 200);

    // fault-injection-details-v1: every details call aborted with 555.
    lab.apply(
        "details.yaml",
        &bookinfo("fault-injection-details-v1.yaml")?,
    )?;
    wait_for("the details abort to take effect", || {
        Ok(lab.get(CLIENT, DETAILS_VIP, "/details/0", &[])?.0 == 555)
    })?;
    for _ in 0..10 {
        assert_eq!(lab.get(CLIENT, DETAILS_VIP, "/details/0", &[])?.0, 555);
    }

    // The waypoint reports each request with the client's identity.
    let metrics = lab.waypoint_metrics()?;
    let client_name = lab.mesh.pod(CLIENT.0, CLIENT.1).name().to_string();
    let from_sleep = [
        ("reporter", "waypoint"),
        ("source_principal", "cluster.local/ns/default/sa/sleep"),
        ("source_workload", &client_name),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("response_code", "200"),
    ];
    let reviews_ok = counter(&metrics, "istio_requests_total", &from_sleep);
    assert!(
        reviews_ok >= 2230,
        "reviews requests counted: {reviews_ok}\n{metrics}"
    );
    let aborted = counter(
        &metrics,
        "istio_requests_total",
        &[
            ("destination_service", "details.default.svc.cluster.local"),
            ("response_code", "555"),
            ("response_flags", "FI"),
        ],
    );
    assert!(aborted >= 10, "aborts counted: {aborted}");
    lab.passed = true;
    Ok(())
}

/// AuthorizationPolicy with HTTP attributes, enforced at the waypoint for the client's
/// own identity; a Service that opts out of the waypoint is reached directly.
#[test]
fn the_waypoint_enforces_l7_policy_for_the_clients_identity() -> Result<()> {
    let mut lab = WaypointLab::start(&[("policy.yaml", REVIEWS_POLICY.to_string())])?;

    let (status, _) = lab.get(CLIENT, REVIEWS_VIP, "/reviews/0", &[])?;
    assert_eq!(status, 200);
    // Istio's answer to a denied request.
    let denied = (403, "RBAC: access denied".to_string());
    assert_eq!(
        lab.get(CLIENT, REVIEWS_VIP, "/reviews/0", &["-X", "POST"])?,
        denied
    );
    assert_eq!(lab.get(CLIENT, REVIEWS_VIP, "/admin/users", &[])?, denied);
    // Another workload, same request: not a principal the policy allows.
    assert_eq!(lab.get(INTRUDER, REVIEWS_VIP, "/reviews/0", &[])?, denied);
    // Services without policy are open to it.
    assert_eq!(lab.get(INTRUDER, RATINGS_VIP, "/ratings/0", &[])?.0, 200);

    let metrics = lab.waypoint_metrics()?;
    let refused = counter(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "waypoint"),
            ("response_code", "403"),
            ("response_flags", "RBAC"),
        ],
    );
    assert_eq!(refused, 3, "{metrics}");
    let intruder_denied = counter(
        &metrics,
        "istio_requests_total",
        &[
            ("source_principal", "cluster.local/ns/default/sa/intruder"),
            ("response_code", "403"),
        ],
    );
    assert_eq!(intruder_denied, 1);

    // `istio.io/use-waypoint: none`: the client's agent goes straight to the endpoint
    // (the server sees the client), and the waypoint never sees the request.
    let before = lab.waypoint_metrics()?;
    let (status, body) = lab.get(CLIENT, DIRECT_VIP, "/details/0", &[])?;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body)?;
    let client_ip = lab.mesh.pod(CLIENT.0, CLIENT.1).ip().to_string();
    assert!(
        json["peer"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&client_ip),
        "{json}"
    );
    let total = |m: &str| counter(m, "istio_requests_total", &[("reporter", "waypoint")]);
    assert_eq!(total(&lab.waypoint_metrics()?), total(&before));

    lab.passed = true;
    Ok(())
}

/// Consistent hashing keeps a user on one pod, retries get past an endpoint that refuses,
/// and a route timeout answers 504, all decided at the waypoint.
#[test]
fn the_waypoint_hashes_retries_and_times_out() -> Result<()> {
    let mut lab = WaypointLab::start(&[("resilience.yaml", RESILIENCE.to_string())])?;

    for user in ["alice", "bob", "carol", "dave"] {
        let header = format!("x-user: {user}");
        let served = lab.served_by(HASHED_VIP, 20, &[&header])?;
        assert!(served.iter().all(|s| *s == served[0]), "{user}: {served:?}");
    }

    // Half of `flaky`'s endpoints refuse; every request still succeeds on the other.
    let served = lab.served_by(FLAKY_VIP, 30, &[])?;
    assert!(served.iter().all(|s| s == "reviews-v1"), "{served:?}");

    let (status, body) = lab.get(CLIENT, SLOW_VIP, "/ratings/0?delay_ms=2000", &[])?;
    assert_eq!((status, body.as_str()), (504, "upstream request timeout"));
    assert_eq!(lab.get(CLIENT, SLOW_VIP, "/ratings/0", &[])?.0, 200);

    let metrics = lab.waypoint_metrics()?;
    let retried_ok = counter(
        &metrics,
        "istio_requests_total",
        &[
            ("destination_service", "flaky.default.svc.cluster.local"),
            ("response_code", "200"),
        ],
    );
    assert_eq!(retried_ok, 30, "{metrics}");
    let timed_out = counter(
        &metrics,
        "istio_requests_total",
        &[("response_code", "504"), ("response_flags", "UT")],
    );
    assert_eq!(timed_out, 1);
    lab.passed = true;
    Ok(())
}

/// gRPC unary and server-streaming calls, with their statuses and trailers, through the
/// waypoint (mesh traffic to the Service) and through the ingress gateway.
#[test]
fn grpc_calls_pass_through_the_waypoint_and_the_gateway() -> Result<()> {
    let mut lab = WaypointLab::start(&[("grpc.yaml", GRPC.to_string())])?;
    let details = WORKLOADS[6];
    let grpc = lab.mesh.serve_in_pod(
        details.node,
        details.pod,
        &["grpc", "--listen", "0.0.0.0:9090", "--name", "details"],
        9090,
    )?;
    let log = std::fs::File::create(lab.log.with_extension("gateway.log"))?;
    let mut gateway = lab.mesh.pod(GATEWAY.0, GATEWAY.1).command(agent_bin());
    gateway
        .args(["gateway", "--namespace", "default", "--config-dir"])
        .arg(&lab.config_dir)
        .stdout(Stdio::null())
        .stderr(log);
    let gateway = lab.mesh.lab.spawn(&mut gateway)?;
    lab._children.extend([grpc, gateway]);

    let call = |target: &str, args: &[&str]| -> Result<Value> {
        let bin = agent_bin();
        let bin = bin.to_string_lossy();
        let mut all = vec![&*bin, "app", "grpc-client", "--target", target];
        all.extend_from_slice(args);
        let out = lab.mesh.run_in_pod(CLIENT.0, CLIENT.1, all[0], &all[1..])?;
        ensure!(
            out.status.success(),
            "grpc-client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let waypoint = format!("http://{HEALTH_VIP}:9090");
    let gateway = format!("http://{}:8080", lab.mesh.pod(GATEWAY.0, GATEWAY.1).ip());
    wait_for("the gateway to route gRPC", || {
        Ok(call(&gateway, &[]).is_ok_and(|v| v["code"] == 0))
    })?;
    for target in [&waypoint, &gateway] {
        // Unary: OK with its message.
        let ok = call(target, &["--service", "details"])?;
        assert_eq!(ok["code"], 0, "{target}: {ok}");
        assert_eq!(ok["statuses"], serde_json::json!(["SERVING"]));
        // Unary ending in an error status (in the trailers of an HTTP 200 response).
        let missing = call(target, &["--service", "nope"])?;
        assert_eq!(
            missing["code"], 5,
            "{target}: NOT_FOUND expected: {missing}"
        );
        // Server streaming: message after message on one stream.
        let watched = call(target, &["--service", "flapping", "--watch", "4"])?;
        assert_eq!(watched["code"], 0, "{target}: {watched}");
        let statuses = watched["statuses"].as_array().map_or(0, Vec::len);
        assert_eq!(statuses, 4, "{target}: {watched}");
    }
    let metrics = lab.waypoint_metrics()?;
    let grpc_requests = counter(
        &metrics,
        "istio_requests_total",
        &[
            ("request_protocol", "grpc"),
            ("destination_service", "health.default.svc.cluster.local"),
        ],
    );
    assert!(grpc_requests >= 3, "{metrics}");
    lab.passed = true;
    Ok(())
}
