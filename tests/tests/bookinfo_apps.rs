//! The Bookinfo workloads (`mesh-agent app productpage|details|reviews|ratings`) in
//! enrolled lab pods, calling each other by Service name through the agents: what the
//! user's headers become on the next hop, and what the page shows when a service behind
//! it fails. The generic workload (`app http`) stands in where a test must see what a
//! Bookinfo app sent.
use anyhow::{Result, ensure};
use mesh_testbed::lab::LabChild;
use mesh_tests::{Mesh, Workload, wait_for};
use serde_json::Value;

const PRODUCTPAGE: Workload<'static> = Workload {
    node: 1,
    pod: 1,
    service_account: "bookinfo-productpage",
    labels: &[("app", "productpage"), ("version", "v1")],
};
/// Generic: echoes what productpage sent it.
const DETAILS: Workload<'static> = Workload {
    node: 1,
    pod: 2,
    service_account: "bookinfo-details",
    labels: &[("app", "details"), ("version", "v1")],
};
const REVIEWS: Workload<'static> = Workload {
    node: 2,
    pod: 1,
    service_account: "bookinfo-reviews",
    labels: &[("app", "reviews"), ("version", "v2")],
};
/// Generic: answers JSON without ratings, so reviews cannot show stars.
const RATINGS: Workload<'static> = Workload {
    node: 2,
    pod: 2,
    service_account: "bookinfo-ratings",
    labels: &[("app", "ratings"), ("version", "v1")],
};
/// Never enrolled: a client outside the mesh.
const CLIENT: (usize, usize) = (1, 3);

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec: {selector: {app: productpage}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: details}
spec: {selector: {app: details}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
"#;

fn start_app(mesh: &Mesh, w: &Workload, pod_name: &str, args: &[&str]) -> Result<LabChild> {
    mesh.start_named_app(w, pod_name, args)
}

/// curl from the client pod: (status, body).
fn get(mesh: &Mesh, path: &str, extra: &[&str]) -> Result<(u16, String)> {
    let url = format!(
        "http://{}:9080{path}",
        mesh.pod(PRODUCTPAGE.node, PRODUCTPAGE.pod).ip()
    );
    let mut args = vec!["-sS", "--max-time", "15", "-w", "\n%{http_code}"];
    args.extend(extra);
    args.push(&url);
    let out = mesh.run_in_pod(CLIENT.0, CLIENT.1, "curl", &args)?;
    ensure!(
        out.status.success(),
        "curl {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse()?, body.to_string()))
}

/// productpage → details and reviews → ratings, by name: the signed-in user becomes
/// `end-user` and the trace headers travel on; a ratings answer without stars shows
/// "Ratings service is currently unavailable"; with reviews down the page shows Bookinfo's
/// "Sorry, product reviews are currently unavailable for this book."
#[test]
fn bookinfo_apps_call_by_name_forward_user_and_trace_headers_and_show_failures() -> Result<()> {
    let mesh = Mesh::start(2, 3)?;
    let workloads = [PRODUCTPAGE, DETAILS, REVIEWS, RATINGS];
    mesh.enroll_workloads(&workloads)?;
    mesh.apply_all("services.yaml", SERVICES)?;

    let _productpage = start_app(
        &mesh,
        &PRODUCTPAGE,
        "productpage-v1-t",
        &["productpage", "--listen", "0.0.0.0:9080"],
    )?;
    let generic = |name: &str| -> Vec<String> {
        ["http", "--listen", "0.0.0.0:9080", "--name", name]
            .map(String::from)
            .to_vec()
    };
    let details_args = generic("details");
    let details_args: Vec<&str> = details_args.iter().map(String::as_str).collect();
    let _details = start_app(&mesh, &DETAILS, "details-v1-t", &details_args)?;
    let reviews = start_app(
        &mesh,
        &REVIEWS,
        "reviews-v2-test",
        &["reviews", "--listen", "0.0.0.0:9080", "--stars", "black"],
    )?;
    let ratings_args = generic("ratings");
    let ratings_args: Vec<&str> = ratings_args.iter().map(String::as_str).collect();
    let _ratings = start_app(&mesh, &RATINGS, "ratings-v1-t", &ratings_args)?;
    wait_for("productpage to answer with reviews", || {
        Ok(get(&mesh, "/productpage", &[])
            .is_ok_and(|(s, page)| s == 200 && page.contains("Reviews served by")))
    })?;

    // (a) Signed in as jason (the login form's cookie), with trace headers of the client's:
    // details (by name, through the mesh) receives all of them.
    let (status, body) = get(
        &mesh,
        "/api/v1/products/0",
        &[
            "-b",
            "user=jason",
            "-H",
            "x-request-id: 4f0c6a5e-req",
            "-H",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "-H",
            "tracestate: vendor=1",
            "-H",
            "x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7",
            "-H",
            "x-b3-sampled: 1",
            "-H",
            "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
            "-H",
            "secret-header: not-forwarded",
        ],
    )?;
    ensure!(status == 200, "{status} {body}");
    let json: Value = serde_json::from_str(&body)?;
    assert_eq!(json["service"], "details", "{json}");
    let headers = &json["headers"];
    assert_eq!(headers["end-user"], "jason", "{json}");
    assert_eq!(headers["x-request-id"], "4f0c6a5e-req");
    assert_eq!(
        headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(headers["tracestate"], "vendor=1");
    assert_eq!(headers["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(headers["x-b3-sampled"], "1");
    assert_eq!(
        headers["b3"],
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
    );
    assert!(headers.get("secret-header").is_none(), "{json}");
    assert!(headers.get("cookie").is_none(), "{json}");
    // It came from productpage's pod: the agent delivers as the real client.
    let productpage_ip = mesh.pod(PRODUCTPAGE.node, PRODUCTPAGE.pod).ip().to_string();
    ensure!(
        json["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("{productpage_ip}:"))),
        "{json}"
    );

    // (b) reviews v2 asked ratings (the generic app: no stars in its answer), so each
    // review says the ratings are unavailable; the page names the reviews pod.
    let (status, page) = get(&mesh, "/productpage", &[])?;
    ensure!(status == 200, "{status}");
    ensure!(
        page.matches("Ratings service is currently unavailable")
            .count()
            == 2,
        "{page}"
    );
    ensure!(
        page.contains("Reviews served by: <b>reviews-v2-test</b>"),
        "{page}"
    );

    // (c) reviews down: Bookinfo's apology in place of the reviews, details still shown.
    reviews.kill()?;
    let (status, page) = get(&mesh, "/productpage", &[])?;
    ensure!(status == 200, "{status}");
    ensure!(
        page.contains("Sorry, product reviews are currently unavailable for this book."),
        "{page}"
    );
    ensure!(page.contains("Book Details"), "{page}");
    let (_, health) = get(&mesh, "/health", &[])?;
    ensure!(health.contains("Product page is healthy"), "{health}");
    Ok(())
}
