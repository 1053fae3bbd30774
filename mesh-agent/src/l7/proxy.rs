//! One request through the proxy: read it into `mesh_l7::Request`, pick the entry (which
//! Gateway it came through), `decide`, then answer locally or forward, applying the
//! decision's delay, rewrites, header operations and response headers; `x-request-id`
//! is created when absent, and the trace context continued or started ([`super::trace`]). The phases are in [`HttpProxy::handle`]; the I/O is in
//! [`super::forward`] and the answers in [`super::reply`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Version};
use hyper::body::Incoming;
use mesh_config::authz::PolicyScope;
use mesh_config::resolve::Protocol;
use mesh_l7::action::Mirror;
use mesh_l7::{Decision, Entry, LocalReply, ResponseFlag, RouteTable, Source};

use super::Body;
use super::forward::{Outgoing, Plan, RequestBody, Upstream, endpoint_authority};
use super::metrics::{HttpMetrics, ProxyIdentity, RequestRecord};
use super::reply;
use super::routes::Routes;

/// Which VirtualServices a listener's requests see.
#[derive(Debug, Clone)]
pub enum EntryPoint {
    /// An ingress gateway with these labels: the `Gateway` objects selecting it that have
    /// a server on the request's port.
    Gateway { labels: BTreeMap<String, String> },
    /// The waypoint `namespace/name`: mesh traffic (VirtualServices bound to `mesh`) for
    /// the Service each connection was addressed to, its AuthorizationPolicies enforced.
    Waypoint { namespace: String, name: String },
}

/// What the server knows of a connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client: its pod's address at a waypoint (from the hand-off).
    pub peer: SocketAddr,
    /// The listener's port (a Gateway server's port), or the Service port at a waypoint.
    pub port: u16,
    /// `http`, or `https` when the listener terminated TLS.
    pub scheme: &'static str,
    /// At a waypoint: what the node agent handed over with the connection.
    pub mesh: Option<Arc<MeshConnection>>,
}

/// A connection a waypoint took over from the node agent.
#[derive(Debug)]
pub struct MeshConnection {
    /// The Service VIP and port the client connected to.
    pub destination: SocketAddr,
    /// The client's identity, verified by the agent's mutual TLS.
    pub identity: Option<mesh_identity::SpiffeId>,
}

/// Everything a request needs, shared by all listeners.
pub struct HttpProxy {
    pub routes: Arc<Routes>,
    pub upstream: Upstream,
    pub metrics: HttpMetrics,
    pub identity: ProxyIdentity,
    pub entry: EntryPoint,
}

impl HttpProxy {
    pub async fn handle(&self, mut req: Request<Incoming>, conn: Connection) -> Response<Body> {
        let mut record = RequestRecord::new(&self.metrics, &self.identity, conn.peer);
        let mut rng = fastrand::Rng::new();
        let grpc = is_grpc(req.headers());
        record.protocol = if grpc { "grpc" } else { "http" };
        record.version = version_name(req.version());
        record.method = req.method().to_string();
        record.path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let request_id = match parts.headers.get("x-request-id") {
            Some(v) => v.to_str().unwrap_or_default().to_string(),
            None => {
                let id = reply::request_id(&mut rng);
                if let Ok(v) = HeaderValue::from_str(&id) {
                    parts.headers.insert("x-request-id", v);
                }
                id
            }
        };
        record.request_id = request_id;
        let table = self.routes.table();
        let snapshot = table.snapshot();
        record.trace = Some(super::trace::continue_or_start(
            &mut parts.headers,
            &mut rng,
            snapshot.mesh_config.trace_sampling_percent(),
        ));
        record.user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let authority = authority_of(&parts);
        record.authority = authority.clone();

        record.collector = snapshot.mesh_config.tracing_collector();
        let mesh = conn.mesh.as_deref();
        // At a waypoint: the Service asked for, and who asked (identity from the agent's
        // TLS, labels from the configuration).
        let service = mesh.and_then(|m| snapshot.service_by_vip(m.destination.ip()));
        let principal = mesh
            .and_then(|m| m.identity.as_ref())
            .map(mesh_identity::SpiffeId::principal);
        let client_workload = mesh.and_then(|_| snapshot.workload_by_ip(conn.peer.ip()));
        record.source = client_workload.map(|w| w.telemetry_names());
        record.source_principal = principal.clone();
        // At a waypoint the Service is known before routing: local answers (faults, policy
        // denials) are reported against it too.
        record.service = service.map(|s| s.hostname.clone());
        let l7_request = |entry| mesh_l7::Request {
            method: parts.method.as_str(),
            scheme: conn.scheme,
            authority: &authority,
            path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &parts.headers,
            port: conn.port,
            service: service.map(|s| s.hostname.as_str()),
            source: Source {
                namespace: mesh
                    .and_then(|m| m.identity.as_ref())
                    .map(|id| id.namespace.as_str())
                    .or(client_workload.map(|w| w.namespace.as_str())),
                labels: client_workload.map(|w| &w.labels),
                principal: principal.as_deref(),
                ip: Some(conn.peer.ip().to_canonical()),
            },
            entry,
        };
        let keys = self.entries(&table, conn.port);
        let entry = match &self.entry {
            // The first Gateway on this port whose routes take the request (several Gateway
            // objects may share a port, each binding its own VirtualServices).
            EntryPoint::Gateway { .. } => keys
                .iter()
                .map(|k| Entry::Gateway(k))
                .find(|e| table.route(&l7_request(*e)).is_ok())
                .or_else(|| keys.first().map(|k| Entry::Gateway(k))),
            EntryPoint::Waypoint { namespace, name } => {
                let Some(service) = service else {
                    return local_answer(
                        &mut record,
                        &LocalReply::for_flag(ResponseFlag::NoRoute),
                        grpc,
                    );
                };
                let scope = PolicyScope::Waypoint {
                    namespace,
                    name,
                    service: Some((&service.namespace, &service.name)),
                };
                let destination = mesh.map_or(conn.peer, |m| m.destination);
                let asked = l7_request(Entry::Mesh);
                match table.authorize(&scope, &asked, (destination.ip(), destination.port())) {
                    Ok(allowed) => {
                        if let Some(policy) = allowed.audit {
                            tracing::info!(%policy, path = %record.path, "request audited");
                        }
                    }
                    Err(denied) => {
                        tracing::info!(policy = %denied.policy, reason = ?denied.reason, path = %record.path, "request denied by AuthorizationPolicy");
                        return local_answer(&mut record, &denied.reply(), grpc);
                    }
                }
                Some(Entry::Mesh)
            }
        };
        let Some(entry) = entry else {
            return local_answer(
                &mut record,
                &LocalReply::for_flag(ResponseFlag::NoRoute),
                grpc,
            );
        };
        let route_req = l7_request(entry);
        let decision = table.decide(&route_req, self.routes.lb(), &mut rng, Instant::now());
        let forward = match decision {
            Decision::Respond(r) => {
                record.route = r.virtual_service.clone();
                if let Some(delay) = r.delay {
                    tokio::time::sleep(delay).await;
                }
                return local_answer(&mut record, &r, grpc);
            }
            Decision::Forward(f) => f,
        };
        record.route = forward.route.virtual_service.map(str::to_string);
        record.service = Some(forward.cluster.host.clone());
        record.upstream_cluster = Some(forward.cluster.name.to_string());
        record.flags = forward.response_flag();
        if let Some(delay) = forward.delay {
            tokio::time::sleep(delay).await;
        }

        let mut headers = parts.headers.clone();
        if upgrade.is_none() {
            remove_hop_by_hop(&mut headers);
        }
        forward.apply_request_headers(&mut headers);
        let host = forward.authority.unwrap_or(&authority);
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
        append_forwarded_for(&mut headers, conn.peer);
        // The upstream sees the client span of this call as its parent.
        if let Some(server) = &record.trace {
            let client = super::trace::client_span(&mut headers, server, &mut rng);
            record.client_span = Some((client, std::time::SystemTime::now()));
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static(conn.scheme));
        let h2 = (grpc && parts.version == Version::HTTP_2)
            || speaks_h2(&table, &forward.cluster.host, forward.cluster.port);
        record.request_bytes = content_length(&parts.headers);
        let body = match RequestBody::prepare(body).await {
            Ok(b) => {
                if let RequestBody::Replayable(bytes) = &b {
                    record.request_bytes = Some(bytes.len() as u64);
                }
                b
            }
            Err(e) => {
                tracing::debug!(error = %e, "the client's request body ended early");
                record.status = 400;
                let mut r = Response::new(reply::empty());
                *r.status_mut() = http::StatusCode::BAD_REQUEST;
                return r;
            }
        };
        let out = Outgoing {
            method: parts.method.clone(),
            path: forward.path.clone().unwrap_or_else(|| record.path.clone()),
            headers,
            body,
            h2,
        };
        if upgrade.is_none() {
            self.mirror(&table, &forward.mirrors, &route_req, &out, &mut rng);
        }
        let result = match upgrade {
            Some(on_upgrade) => {
                record.attempts = 1;
                record.upstream = Some(endpoint_authority(forward.endpoint.endpoint));
                record.workload = forward.endpoint.endpoint.workload.clone();
                record.destination = forward.endpoint.endpoint.telemetry.clone();
                self.upstream
                    .upgrade(forward.endpoint.endpoint, out, on_upgrade)
                    .await
            }
            None => {
                let plan = Plan {
                    cluster: forward.cluster,
                    first: forward.endpoint,
                    timeout: forward.timeout,
                    retry: forward.retry,
                };
                let done = self
                    .upstream
                    .forward(&plan, out, self.routes.lb(), &route_req, &mut rng)
                    .await;
                record.attempts = done.attempts;
                record.upstream = done.upstream;
                record.workload = done.workload;
                record.destination = done.telemetry;
                done.result
            }
        };
        record.destination_principal = record
            .workload
            .as_deref()
            .and_then(|key| snapshot.workloads.get(key))
            .map(|w| {
                mesh_identity::SpiffeId::new(
                    &self.identity.trust_domain,
                    &w.namespace,
                    &w.service_account,
                )
                .principal()
            });
        match result {
            Ok(mut response) => {
                if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                    remove_hop_by_hop(response.headers_mut());
                }
                forward.apply_response_headers(response.headers_mut());
                record.status = response.status().as_u16();
                record.response_bytes = content_length(response.headers());
                response
            }
            Err(flag) => {
                let mut r = LocalReply::for_flag(flag);
                r.headers = forward.cors_headers.clone();
                local_answer(&mut record, &r, grpc)
            }
        }
    }

    /// Copies of the request to the rule's mirrors (percentages already drawn), with
    /// `-shadow` appended to the host as Envoy does.
    fn mirror(
        &self,
        table: &RouteTable,
        mirrors: &[&Mirror],
        req: &mesh_l7::Request<'_>,
        out: &Outgoing,
        rng: &mut fastrand::Rng,
    ) {
        for m in mirrors {
            let Some(cluster) =
                table.destination_cluster(&m.host, m.subset.as_deref(), m.port, req)
            else {
                continue;
            };
            let Ok(choice) = cluster.choose(req, self.routes.lb(), rng, Instant::now(), &[]) else {
                continue;
            };
            let mut copy = Outgoing {
                method: out.method.clone(),
                path: out.path.clone(),
                headers: out.headers.clone(),
                body: match &out.body {
                    RequestBody::Replayable(b) => RequestBody::Replayable(b.clone()),
                    RequestBody::Once(_) => continue,
                },
                h2: out.h2,
            };
            let host = copy
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(shadow_host);
            if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                copy.headers.insert(header::HOST, v);
            }
            self.upstream.mirror(choice.endpoint, &copy);
        }
    }

    /// The Gateway keys (`namespace/name`) a request on `port` may enter through.
    fn entries(&self, table: &RouteTable, port: u16) -> Vec<String> {
        match &self.entry {
            EntryPoint::Gateway { labels } => {
                super::gateway::gateways_on_port(table.snapshot(), labels, port)
            }
            EntryPoint::Waypoint { .. } => Vec::new(),
        }
    }
}

/// `reviews:9080` → `reviews-shadow:9080`.
fn shadow_host(host: &str) -> String {
    let name = mesh_l7::request::strip_port(host);
    format!("{name}-shadow{}", &host[name.len()..])
}

fn local_answer(record: &mut RequestRecord, r: &LocalReply, grpc: bool) -> Response<Body> {
    let response = reply::local(r, grpc);
    record.status = response.status().as_u16();
    record.response_bytes = content_length(response.headers()).or(Some(r.body.len() as u64));
    record.flags = r.flag.or(record.flags);
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `:authority` (h2) or `Host` (HTTP/1.1).
fn authority_of(parts: &http::request::Parts) -> String {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// An HTTP/1.1 `Upgrade` request (WebSocket and the like).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The Service port speaks HTTP/2 (`grpc`, `http2` by name or `appProtocol`).
fn speaks_h2(table: &RouteTable, host: &str, port: u16) -> bool {
    table
        .snapshot()
        .services
        .get(host)
        .and_then(|s| s.ports.iter().find(|p| p.port == port))
        .is_some_and(|p| matches!(p.protocol, Protocol::Grpc | Protocol::Http2))
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), and those
/// the `Connection` header names. `te: trailers` stays (gRPC needs it).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TRAILER,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `x-forwarded-for` with the client appended, as Envoy does at the edge.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_canonical().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("end-user", HeaderValue::from_static("jason"));
        remove_hop_by_hop(&mut h);
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key("keep-alive"));
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["end-user"], "jason");
    }

    #[test]
    fn mirrored_requests_go_to_the_shadow_host() {
        assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_host("edge.example.com"), "edge.example.com-shadow");
    }

    #[test]
    fn the_client_is_appended_to_x_forwarded_for() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "198.18.1.2:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "198.18.1.2");
        append_forwarded_for(&mut h, "[::ffff:198.18.1.3]:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "198.18.1.2, 198.18.1.3");
    }
}
