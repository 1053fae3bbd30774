//! The Kubernetes source against a local API server (127.0.0.1, plain HTTP/1.1) that speaks
//! Kubernetes' list/watch protocol with real JSON: lists carrying `metadata.resourceVersion`,
//! `?watch=true&resourceVersion=N` streaming newline-delimited ADDED/MODIFIED/DELETED/BOOKMARK
//! events, and an ERROR event with a 410 `Status` when the version is too old, forcing a
//! re-list. The client is a real `kube::Client` and the watchers are kube-rs's: the code path
//! that runs in a cluster. Kinds not registered answer 404 like an API server without the CRD.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_config::source::kube::{
    KubeSource, KubeSourceError, KubeSourceOptions, kube_client, kube_config,
};
use mesh_config::{ConfigStore, ErrorKind, LoadOptions, Snapshot, yaml};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);
const REVIEWS: &str = "reviews.default.svc.cluster.local";

// ---------------------------------------------------------------------------------------
// The API server.

#[derive(Default)]
struct Resource {
    /// Items of lists and watch events carry apiVersion/kind (custom resources) or not
    /// (built-in kinds in lists, as the real API server sends them).
    api_version: String,
    kind: String,
    builtin: bool,
    objects: BTreeMap<(String, String), Value>,
    /// (resourceVersion, event line) since `oldest`.
    history: Vec<(u64, Bytes)>,
    /// Watches from a version before this get 410 Gone.
    oldest: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

#[derive(Default)]
struct State {
    /// The cluster-wide resourceVersion counter.
    rv: u64,
    /// URL path (`/api/v1/services`) → resource.
    resources: BTreeMap<String, Resource>,
    /// Every request: `path?query`.
    requests: Vec<String>,
}

#[derive(Clone)]
struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    res
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn gone(rv: u64) -> Bytes {
    event_line(
        "ERROR",
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {rv}"),
            "reason": "Expired",
            "code": 410
        }),
    )
}

fn key_of(object: &Value) -> (String, String) {
    let m = &object["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&m["namespace"]), s(&m["name"]))
}

impl ApiServer {
    async fn start() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ApiServer {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.handle(req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        server
    }

    /// A kubeconfig naming this server (plain HTTP, no credentials).
    fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: http://{}
contexts:
- name: local
  context:
    cluster: local
    user: anonymous
current-context: local
users:
- name: anonymous
  user: {{}}
",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Serves `path` (e.g. `/apis/networking.istio.io/v1/virtualservices`).
    fn register(&self, path: &str, api_version: &str, kind: &str, objects: Vec<Value>) {
        let mut st = self.state.lock().unwrap();
        let builtin = !api_version.contains(".istio.io") && !api_version.contains("gateway.");
        st.resources.insert(
            path.to_string(),
            Resource {
                api_version: api_version.into(),
                kind: kind.into(),
                builtin,
                ..Resource::default()
            },
        );
        for o in objects {
            Self::upsert_locked(&mut st, path, o);
        }
    }

    fn with_type(r: &Resource, mut object: Value) -> Value {
        object["apiVersion"] = json!(r.api_version);
        object["kind"] = json!(r.kind);
        object
    }

    fn upsert_locked(st: &mut State, path: &str, mut object: Value) {
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let r = st.resources.get_mut(path).unwrap();
        object = Self::with_type(r, object);
        let key = key_of(&object);
        let kind = if r.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        r.objects.insert(key, object.clone());
        Self::broadcast(r, rv, event_line(kind, &object));
    }

    fn broadcast(r: &mut Resource, rv: u64, line: Bytes) {
        r.history.push((rv, line.clone()));
        r.watchers.retain(|w| w.send(line.clone()).is_ok());
    }

    /// ADDED or MODIFIED.
    fn upsert(&self, path: &str, object: Value) {
        let mut st = self.state.lock().unwrap();
        Self::upsert_locked(&mut st, path, object);
    }

    fn delete(&self, path: &str, namespace: &str, name: &str) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        let r = st.resources.get_mut(path).unwrap();
        let mut object = r
            .objects
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        Self::broadcast(r, rv, event_line("DELETED", &object));
    }

    /// The history is compacted while the objects change without events reaching anyone: open
    /// watches get a 410 ERROR event and are closed, and so is any watch resuming from before.
    fn compact_and_replace(&self, path: &str, objects: Vec<Value>) {
        let mut st = self.state.lock().unwrap();
        let mut stamped = Vec::new();
        for mut o in objects {
            st.rv += 1;
            o["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            stamped.push(o);
        }
        let rv = st.rv;
        let r = st.resources.get_mut(path).unwrap();
        r.objects = stamped
            .into_iter()
            .map(|o| (key_of(&o), Self::with_type(r, o)))
            .collect();
        r.history.clear();
        r.oldest = rv;
        for w in r.watchers.drain(..) {
            let _ = w.send(gone(rv));
        }
    }

    fn requests(&self, prefix: &str, watch: bool) -> usize {
        let st = self.state.lock().unwrap();
        st.requests
            .iter()
            .filter(|r| r.starts_with(&format!("{prefix}?")) && r.contains("watch=true") == watch)
            .count()
    }

    fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut st = self.state.lock().unwrap();
        st.requests
            .push(format!("{path}?{}", req.uri().query().unwrap_or_default()));
        let current = st.rv;
        let Some(r) = st.resources.get_mut(&path) else {
            // What the API server answers for a group/resource it does not serve.
            let mut res = full(StatusCode::NOT_FOUND, "404 page not found\n");
            res.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return res;
        };
        if req.method() != hyper::Method::GET {
            return full(StatusCode::METHOD_NOT_ALLOWED, "{}");
        }
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        if !watch {
            let items: Vec<Value> = r
                .objects
                .values()
                .map(|o| {
                    let mut o = o.clone();
                    if r.builtin
                        && let Some(map) = o.as_object_mut()
                    {
                        map.remove("apiVersion");
                        map.remove("kind");
                    }
                    o
                })
                .collect();
            let list = json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version,
                "metadata": { "resourceVersion": current.to_string() },
                "items": items,
            });
            return full(StatusCode::OK, serde_json::to_vec(&list).unwrap());
        }

        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(current);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        if from < r.oldest {
            // The real API server answers 200 and a single ERROR event, then closes.
            let _ = tx.send(gone(from));
        } else {
            for (rv, line) in &r.history {
                if *rv > from {
                    let _ = tx.send(line.clone());
                }
            }
            if query.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
                let bookmark = json!({
                    "apiVersion": r.api_version,
                    "kind": r.kind,
                    "metadata": { "resourceVersion": current.to_string() },
                });
                let _ = tx.send(event_line("BOOKMARK", &bookmark));
            }
            r.watchers.push(tx);
        }
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let mut res = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        res.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        res
    }
}

// ---------------------------------------------------------------------------------------
// Objects, as the API server returns them (JSON, server-filled fields included).

const SERVICES: &str = "/api/v1/services";
const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
const DESTINATION_RULES: &str = "/apis/networking.istio.io/v1/destinationrules";
const AUTHORIZATION_POLICIES: &str = "/apis/security.istio.io/v1/authorizationpolicies";

fn service(name: &str, cluster_ip: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": { "app": name },
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": { "f:spec": { "f:ports": {} } }
            }]
        },
        "spec": {
            "ports": [{ "name": "http", "protocol": "TCP", "port": 9080, "targetPort": 9080 }],
            "selector": { "app": name },
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster"
        },
        "status": { "loadBalancer": {} }
    })
}

fn destination_rule(host: &str, subsets: &[&str]) -> Value {
    let subsets: Vec<Value> = subsets
        .iter()
        .map(|s| json!({ "name": s, "labels": { "version": s } }))
        .collect();
    json!({
        "metadata": { "name": host, "namespace": "default", "generation": 1 },
        "spec": { "host": host, "subsets": subsets }
    })
}

fn virtual_service(host: &str, routes: &[(&str, i64)]) -> Value {
    let route: Vec<Value> = routes
        .iter()
        .map(
            |(subset, w)| json!({ "destination": { "host": host, "subset": subset }, "weight": w }),
        )
        .collect();
    json!({
        "metadata": { "name": host, "namespace": "default", "generation": 1 },
        "spec": { "hosts": [host], "http": [{ "route": route }] }
    })
}

// ---------------------------------------------------------------------------------------

fn weights(snap: &Snapshot, fqdn: &str) -> Vec<Option<i32>> {
    snap.routes_for(fqdn)
        .first()
        .map(|vs| vs.http[0].route.iter().map(|d| d.weight).collect())
        .unwrap_or_default()
}

/// Waits (bounded) until `check` holds for the store; returns the snapshot it held for.
async fn eventually(
    store: &ConfigStore,
    what: &str,
    check: impl Fn(&ConfigStore) -> bool,
) -> Arc<Snapshot> {
    let mut changed = store.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check(store) {
            return store.snapshot();
        }
        // Errors are recorded without a new snapshot: poll as well as wait for swaps.
        let tick = tokio::time::Instant::now() + Duration::from_millis(50);
        let _ = tokio::time::timeout_at(tick.min(deadline), changed.changed()).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {:#?}",
            store.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_source_follows_list_watch_and_relists_after_410() {
    let api = ApiServer::start().await;
    // Built-in kinds served, empty; some Istio kinds served; security.istio.io and the
    // Gateway API not installed (404) until later.
    for (path, api_version, kind) in [
        ("/api/v1/namespaces", "v1", "Namespace"),
        ("/api/v1/serviceaccounts", "v1", "ServiceAccount"),
        ("/api/v1/endpoints", "v1", "Endpoints"),
        ("/api/v1/pods", "v1", "Pod"),
        (
            "/apis/discovery.k8s.io/v1/endpointslices",
            "discovery.k8s.io/v1",
            "EndpointSlice",
        ),
        ("/apis/apps/v1/deployments", "apps/v1", "Deployment"),
        ("/apis/apps/v1/statefulsets", "apps/v1", "StatefulSet"),
        ("/apis/apps/v1/daemonsets", "apps/v1", "DaemonSet"),
        (
            "/apis/networking.istio.io/v1/gateways",
            "networking.istio.io/v1",
            "Gateway",
        ),
        (
            "/apis/networking.istio.io/v1/serviceentries",
            "networking.istio.io/v1",
            "ServiceEntry",
        ),
        (
            "/apis/networking.istio.io/v1/workloadentries",
            "networking.istio.io/v1",
            "WorkloadEntry",
        ),
    ] {
        api.register(path, api_version, kind, vec![]);
    }
    api.register(
        SERVICES,
        "v1",
        "Service",
        vec![service("reviews", "10.96.0.10")],
    );
    api.register(
        DESTINATION_RULES,
        "networking.istio.io/v1",
        "DestinationRule",
        vec![destination_rule("reviews", &["v1", "v2", "v3"])],
    );
    api.register(
        VIRTUAL_SERVICES,
        "networking.istio.io/v1",
        "VirtualService",
        vec![virtual_service("reviews", &[("v1", 80), ("v3", 20)])],
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = kube_config(Some(&api.kubeconfig(dir.path())))
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string(),
        format!("http://{}/", api.addr)
    );
    config.proxy_url = None; // whatever HTTPS_PROXY says: 127.0.0.1 only
    mesh_config::source::kube::ensure_crypto_provider();
    let client = kube::Client::try_from(config).unwrap();
    let store = Arc::new(ConfigStore::default());
    let source = KubeSource::spawn_with(
        client,
        store.clone(),
        KubeSourceOptions {
            missing_retry: Duration::from_millis(300),
            max_backoff: Duration::from_millis(500),
            sync_timeout: Duration::from_secs(10),
            debounce: Duration::from_millis(20),
        },
    )
    .unwrap();

    // The initial list lands, in one update.
    tokio::time::timeout(WAIT, source.wait_synced())
        .await
        .expect("first load");
    let snap = store.snapshot();
    let reviews = &snap.services[REVIEWS];
    assert_eq!(reviews.vip.to_string(), "10.96.0.10");
    assert_eq!(reviews.ports[0].port, 9080);
    assert_eq!(reviews.ports[0].name.as_deref(), Some("http"));
    assert_eq!(weights(&snap, REVIEWS), [Some(80), Some(20)]);
    assert_eq!(store.generation(), 1, "one update for the first load");
    assert!(store.status().last_errors.is_empty());
    // The kinds without CRD were asked for, got 404, and did not hold the load up.
    assert!(api.requests("/apis/security.istio.io/v1/peerauthentications", false) >= 1);
    assert!(api.requests("/apis/gateway.networking.k8s.io/v1/gateways", false) >= 1);

    // MODIFIED: 80/20 → 50/50.
    api.upsert(
        VIRTUAL_SERVICES,
        virtual_service("reviews", &[("v1", 50), ("v3", 50)]),
    );
    eventually(&store, "50/50", |s| {
        weights(&s.snapshot(), REVIEWS) == [Some(50), Some(50)]
    })
    .await;

    // ADDED, then DELETED.
    let ratings = "ratings.default.svc.cluster.local";
    api.upsert(SERVICES, service("ratings", "10.96.0.11"));
    let snap = eventually(&store, "ratings added", |s| {
        s.snapshot().services.contains_key(ratings)
    })
    .await;
    assert_eq!(snap.services[ratings].vip.to_string(), "10.96.0.11");
    api.delete(SERVICES, "default", "ratings");
    eventually(&store, "ratings deleted", |s| {
        !s.snapshot().services.contains_key(ratings)
    })
    .await;

    // A malformed object (unknown field): the error, precise, in the status; the last good
    // snapshot keeps serving.
    let good = store.snapshot();
    let errors_before = store.errors_total();
    let mut bad = virtual_service("reviews", &[("v1", 30), ("v3", 70)]);
    bad["spec"]["http"][0]["retires"] = json!({ "attempts": 3 });
    api.upsert(VIRTUAL_SERVICES, bad.clone());
    eventually(&store, "the unknown field reported", |s| {
        !s.status().last_errors.is_empty()
    })
    .await;
    let status = store.status();
    let err = &status.last_errors[0];
    assert_eq!(
        err.place.file.as_deref(),
        Some(std::path::Path::new(
            "kube://VirtualService.networking.istio.io/default/reviews"
        ))
    );
    assert_eq!(
        err.place.object.as_deref(),
        Some("VirtualService default/reviews")
    );
    assert_eq!(err.place.field.as_deref(), Some("spec.http[0].retires"));
    assert!(err.to_string().contains("unknown field `retires`"), "{err}");
    assert_eq!(err.place.line, None);
    assert_eq!(store.errors_total(), errors_before + 1);
    assert!(Arc::ptr_eq(&good, &store.snapshot()));
    assert_eq!(weights(&store.snapshot(), REVIEWS), [Some(50), Some(50)]);
    // The same error as the YAML loader gives for the same object in a file, but the place.
    bad["apiVersion"] = json!("networking.istio.io/v1");
    bad["kind"] = json!("VirtualService");
    let text = serde_saphyr::to_string(&bad).unwrap();
    let from_file = yaml::load_str(&text, None, &LoadOptions::default());
    assert_eq!(from_file.errors.len(), 1, "{:?}", from_file.errors);
    assert_eq!(from_file.errors[0].kind, err.kind);
    assert_eq!(from_file.errors[0].place.field, err.place.field);
    assert_eq!(from_file.errors[0].place.object, err.place.object);

    // Decodes, but does not validate (weights sum to 90): refused, reported, last good kept.
    api.upsert(
        VIRTUAL_SERVICES,
        virtual_service("reviews", &[("v1", 50), ("v3", 40)]),
    );
    eventually(&store, "the bad weights reported", |s| {
        s.status()
            .last_errors
            .iter()
            .any(|e| e.to_string().contains("weights sum to 90"))
    })
    .await;
    assert_eq!(weights(&store.snapshot(), REVIEWS), [Some(50), Some(50)]);
    // Fixed: lands, errors cleared.
    api.upsert(
        VIRTUAL_SERVICES,
        virtual_service("reviews", &[("v1", 70), ("v3", 30)]),
    );
    eventually(&store, "70/30 and no errors", |s| {
        weights(&s.snapshot(), REVIEWS) == [Some(70), Some(30)] && s.status().last_errors.is_empty()
    })
    .await;

    // A route to a subset whose DestinationRule comes after it: refused first, then, once
    // the rule is there, offered again and accepted.
    let details = "details.default.svc.cluster.local";
    api.upsert(SERVICES, service("details", "10.96.0.12"));
    api.upsert(VIRTUAL_SERVICES, virtual_service("details", &[("v9", 100)]));
    eventually(&store, "the missing subset reported", |s| {
        s.snapshot().services.contains_key(details) && !s.status().last_errors.is_empty()
    })
    .await;
    assert!(store.snapshot().routes_for(details).is_empty());
    api.upsert(DESTINATION_RULES, destination_rule("details", &["v9"]));
    eventually(&store, "details route accepted once its rule came", |s| {
        weights(&s.snapshot(), details) == [Some(100)] && s.status().last_errors.is_empty()
    })
    .await;

    // 410: the history is compacted while objects change unseen; the watchers re-list and
    // the snapshot matches the new lists (details' route gone, a new Service, new weights).
    let lists_before = api.requests(SERVICES, false);
    let productpage = "productpage.default.svc.cluster.local";
    api.compact_and_replace(
        SERVICES,
        vec![
            service("reviews", "10.96.0.10"),
            service("details", "10.96.0.12"),
            service("productpage", "10.96.0.13"),
        ],
    );
    api.compact_and_replace(
        VIRTUAL_SERVICES,
        vec![virtual_service("reviews", &[("v1", 10), ("v3", 90)])],
    );
    let snap = eventually(&store, "the re-listed state", |s| {
        let snap = s.snapshot();
        snap.services.contains_key(productpage)
            && weights(&snap, REVIEWS) == [Some(10), Some(90)]
            && snap.routes_for(details).is_empty()
    })
    .await;
    assert_eq!(snap.services.len(), 3);
    assert_eq!(snap.routes.len(), 1);
    assert!(api.requests(SERVICES, false) > lists_before, "re-listed");
    assert!(store.status().last_errors.is_empty());

    // A CRD installed later: its watcher, retrying slowly, picks it up.
    api.register(
        AUTHORIZATION_POLICIES,
        "security.istio.io/v1",
        "AuthorizationPolicy",
        vec![json!({
            "metadata": { "name": "deny-all", "namespace": "default" },
            "spec": {}
        })],
    );
    eventually(&store, "the AuthorizationPolicy", |s| {
        s.snapshot()
            .authorization_policies
            .contains_key("default/deny-all")
    })
    .await;
    // The uninstalled Gateway API keeps being asked for, slowly, and breaks nothing.
    assert!(api.requests("/apis/gateway.networking.k8s.io/v1/gateways", false) >= 2);
    assert_eq!(weights(&store.snapshot(), REVIEWS), [Some(10), Some(90)]);

    drop(source);
}

#[tokio::test]
async fn a_missing_kubeconfig_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope");
    let Err(err) = kube_client(Some(&path)).await else {
        panic!("a client from a missing kubeconfig");
    };
    assert!(matches!(err, KubeSourceError::Kubeconfig { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn an_api_object_decodes_like_a_yaml_document() {
    // `status` fields unknown to the types (a newer API server) are warnings only; spec
    // fields stay errors.
    let mut svc = service("reviews", "10.96.0.10");
    svc["apiVersion"] = json!("v1");
    svc["kind"] = json!("Service");
    svc["status"]["futureField"] = json!(true);
    let file = std::path::Path::new("kube://Service/default/reviews");
    let load = yaml::load_api_object(svc.clone(), Some(file), &LoadOptions::default());
    assert!(load.errors.is_empty(), "{:?}", load.errors);
    assert_eq!(load.objects.len(), 1);
    assert_eq!(load.warnings.len(), 1, "{:?}", load.warnings);

    svc["spec"]["clusterIp"] = json!("10.0.0.1");
    let load = yaml::load_api_object(svc, Some(file), &LoadOptions::default());
    assert_eq!(load.errors.len(), 1, "{:?}", load.errors);
    let e = &load.errors[0];
    assert_eq!(e.place.field.as_deref(), Some("spec.clusterIp"));
    assert!(matches!(&e.kind, ErrorKind::Invalid(m) if m.contains("clusterIp")));
    assert_eq!(
        e.to_string(),
        "kube://Service/default/reviews: Service default/reviews: spec.clusterIp: unknown field `clusterIp`"
    );
}
