//! The per-request decisions: which rule (`route`), which destination and cluster
//! (`destination`), and all of it at once (`decide`), which is what a proxy calls before
//! acting: answer locally (no route, fault abort, redirect, direct response, CORS
//! preflight, no healthy upstream) or forward to one endpoint with the rule's actions.

use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use mesh_config::resolve::{exported_to, host_matches};

use crate::action::{Abort, Mirror};
use crate::cluster::{Cluster, EndpointChoice};
use crate::cors::CorsDecision;
use crate::flags::ResponseFlag;
use crate::random::{Random, below, chance};
use crate::request::{Entry, Request, strip_port};
use crate::retry::RetryPolicy;
use crate::rule::{HttpRule, RuleTarget, VirtualService, WeightedDestination};
use crate::table::RouteTable;

/// The rule that matched a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route<'t> {
    /// `namespace/name` of the VirtualService whose rule matched (the delegate's, when a
    /// rule delegated); `None` for the default route of a Service without one.
    pub virtual_service: Option<&'t str>,
    pub rule: &'t HttpRule,
    /// Which of the rule's matches admitted the request (`None`: the rule has none).
    pub matched: Option<usize>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'t> {
    /// Answer here.
    Respond(LocalReply),
    /// Send upstream.
    Forward(Box<Forward<'t>>),
}

impl<'t> Decision<'t> {
    pub fn forward(&self) -> Option<&Forward<'t>> {
        match self {
            Decision::Forward(f) => Some(f),
            Decision::Respond(_) => None,
        }
    }

    pub fn reply(&self) -> Option<&LocalReply> {
        match self {
            Decision::Respond(r) => Some(r),
            Decision::Forward(_) => None,
        }
    }
}

/// A response the proxy makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: StatusCode,
    pub flag: Option<ResponseFlag>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    /// For gRPC aborts: sent as `grpc-status` (HTTP status 200).
    pub grpc_status: Option<u32>,
    /// Wait this long first (a fault delay before a fault abort).
    pub delay: Option<Duration>,
    /// `namespace/name` of the VirtualService whose rule answered, if any.
    pub virtual_service: Option<String>,
}

impl LocalReply {
    /// The answer for a flag with its own status (`NR`, `UH`, `UT`, ...).
    pub fn for_flag(flag: ResponseFlag) -> LocalReply {
        LocalReply {
            status: flag.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            flag: Some(flag),
            headers: Vec::new(),
            body: flag.body().as_bytes().to_vec(),
            grpc_status: None,
            delay: None,
            virtual_service: None,
        }
    }
}

/// A request to send upstream, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward<'t> {
    pub route: Route<'t>,
    pub destination: &'t WeightedDestination,
    pub cluster: &'t Cluster,
    pub endpoint: EndpointChoice<'t>,
    /// A fault delay to wait first (`DI`).
    pub delay: Option<Duration>,
    /// The rewritten path and query, if `rewrite` changes them.
    pub path: Option<String>,
    /// The rewritten authority, if `rewrite.authority` is set.
    pub authority: Option<&'t str>,
    pub timeout: Option<Duration>,
    pub retry: &'t RetryPolicy,
    /// Mirrors to send a copy to (their percentages already drawn).
    pub mirrors: Vec<&'t Mirror>,
    /// Headers the CORS policy adds to the response.
    pub cors_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Forward<'_> {
    /// `DI` when a fault delay applies (the proxy logs it once it has waited).
    pub fn response_flag(&self) -> Option<ResponseFlag> {
        self.delay.map(|_| ResponseFlag::DelayInjected)
    }

    /// The rule's then the destination's request header operations.
    pub fn apply_request_headers(&self, headers: &mut HeaderMap) {
        self.route.rule.headers.request.apply(headers);
        self.destination.headers.request.apply(headers);
    }

    /// The rule's and destination's response header operations, then the CORS headers.
    pub fn apply_response_headers(&self, headers: &mut HeaderMap) {
        self.route.rule.headers.response.apply(headers);
        self.destination.headers.response.apply(headers);
        for (name, value) in &self.cors_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

impl RouteTable {
    /// The rule for `req`: the VirtualServices of its host (exact host, else the most
    /// specific wildcard) that are exported to the viewer and bound to the entry, their
    /// `http` rules in order, first match wins; a delegating rule tries its delegate's
    /// rules there. A known host without VirtualService gets its default route. `Err(NR)`:
    /// nothing matched.
    pub fn route<'t>(&'t self, req: &Request) -> Result<Route<'t>, ResponseFlag> {
        let lower;
        let host = match req.service {
            Some(s) => s,
            None => {
                let h = strip_port(req.authority);
                if h.bytes().any(|b| b.is_ascii_uppercase()) {
                    lower = h.to_ascii_lowercase();
                    lower.as_str()
                } else {
                    h
                }
            }
        };
        if let Entry::Gateway(key) = req.entry
            && !self.gateway_serves(key, req.port, host)
        {
            return Err(ResponseFlag::NoRoute);
        }
        let expanded;
        let mut candidates: [Option<&str>; 2] = [Some(host), None];
        if req.entry == Entry::Mesh && req.service.is_none() {
            expanded = self.expand_short_name(host, req.source.namespace);
            candidates[1] = expanded.as_deref();
        }
        let candidates = || candidates.into_iter().flatten();
        // Exact hosts under every spelling first, then wildcards, then a Service's default
        // route: `*.default.svc.cluster.local` must not win over `reviews` written short.
        for host in candidates() {
            if let Some(list) = self.exact.get(host).filter(|l| self.any_visible(l, req)) {
                return self.first_match(list, req);
            }
        }
        for host in candidates() {
            let wildcard = self
                .wildcards
                .iter()
                .filter(|(pattern, _)| host_matches(pattern, host))
                .map(|(_, list)| list)
                .find(|l| self.any_visible(l, req));
            if let Some(list) = wildcard {
                return self.first_match(list, req);
            }
        }
        // No VirtualService: the Service itself, for mesh traffic (a gateway serves only
        // what a VirtualService binds to it).
        match (req.entry, candidates().find_map(|h| self.defaults.get(h))) {
            (Entry::Mesh, Some(rule)) => Ok(Route {
                virtual_service: None,
                rule,
                matched: None,
            }),
            _ => Err(ResponseFlag::NoRoute),
        }
    }

    /// `reviews` / `reviews.default` / `reviews.default.svc` as a client in `namespace`
    /// writes them → the FQDN, when that differs from the name itself.
    fn expand_short_name(&self, host: &str, namespace: Option<&str>) -> Option<String> {
        let domain = &self.options.cluster_domain;
        match host.matches('.').count() {
            0 => namespace.map(|ns| format!("{host}.{ns}.svc.{domain}")),
            1 => Some(format!("{host}.svc.{domain}")),
            2 if host.ends_with(".svc") => Some(format!("{host}.{domain}")),
            _ => None,
        }
    }

    /// A VirtualService applies to the request: exported to its viewer, bound to its entry.
    fn visible(&self, vs: &VirtualService, req: &Request) -> bool {
        let exported = match req.viewer_namespace() {
            Some(ns) => exported_to(&vs.export_to, &vs.namespace, ns),
            None => vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*"),
        };
        exported && bound(vs, req.entry)
    }

    fn any_visible(&self, list: &[usize], req: &Request) -> bool {
        list.iter()
            .any(|&i| self.visible(&self.virtual_services[i], req))
    }

    /// The first rule of the VirtualServices in `list` (creation order) that matches; a
    /// delegating rule tries its delegate's rules, then the root's next rules.
    fn first_match<'t>(&'t self, list: &[usize], req: &Request) -> Result<Route<'t>, ResponseFlag> {
        let services = list
            .iter()
            .map(|&i| &self.virtual_services[i])
            .filter(|vs| self.visible(vs, req));
        for vs in services {
            for rule in &vs.http {
                let Some(matched) = rule.matching(req, &vs.gateways) else {
                    continue;
                };
                if let RuleTarget::Delegate(d) = rule.target {
                    let delegate = &self.delegates[d];
                    for inner in &delegate.http {
                        if let Some(m) = inner.matching(req, &vs.gateways) {
                            return Ok(Route {
                                virtual_service: Some(&delegate.key),
                                rule: inner,
                                matched: m,
                            });
                        }
                    }
                    continue;
                }
                return Ok(Route {
                    virtual_service: Some(&vs.key),
                    rule,
                    matched,
                });
            }
        }
        Err(ResponseFlag::NoRoute)
    }

    /// One of the rule's destinations, by weight.
    pub fn pick_destination<'t>(
        &'t self,
        route: &Route<'t>,
        rng: &mut dyn Random,
    ) -> Option<&'t WeightedDestination> {
        let RuleTarget::Forward(destinations) = &route.rule.target else {
            return None;
        };
        let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut draw = below(rng, total);
        for d in destinations {
            let w = u64::from(d.weight);
            if draw < w {
                return Some(d);
            }
            draw -= w;
        }
        destinations.last()
    }

    /// The cluster a destination goes to for `req`: its port, else the request's port when
    /// the host has it, else the host's only port.
    pub fn destination_cluster(
        &self,
        host: &str,
        subset: Option<&str>,
        port: Option<u16>,
        req: &Request,
    ) -> Option<&Cluster> {
        let port = port.unwrap_or_else(|| {
            let ports = self
                .host_ports
                .get(host)
                .map(Vec::as_slice)
                .unwrap_or_default();
            match ports {
                [only] if !ports.contains(&req.port) => *only,
                _ => req.port,
            }
        });
        self.cluster(host, subset, port)
    }

    /// Every decision for `req` at once (see [`Decision`]).
    pub fn decide<'t>(
        &'t self,
        req: &Request,
        state: &crate::state::LbState,
        rng: &mut dyn Random,
        now: Instant,
    ) -> Decision<'t> {
        let route = match self.route(req) {
            Ok(r) => r,
            Err(flag) => return Decision::Respond(LocalReply::for_flag(flag)),
        };
        let rule = route.rule;
        let reply = |status: StatusCode, flag: Option<ResponseFlag>| LocalReply {
            status,
            flag,
            headers: Vec::new(),
            body: Vec::new(),
            grpc_status: None,
            delay: None,
            virtual_service: route.virtual_service.map(str::to_string),
        };
        let mut cors_headers = Vec::new();
        if let Some(cors) = &rule.cors {
            match cors.decide(req) {
                CorsDecision::Continue => {}
                CorsDecision::Preflight { status, headers } => {
                    return Decision::Respond(LocalReply {
                        headers,
                        ..reply(status, None)
                    });
                }
                CorsDecision::AddResponseHeaders(h) => cors_headers = h,
            }
        }
        let fault = rule
            .fault
            .as_ref()
            .map(|f| f.decide(rng))
            .unwrap_or_default();
        if let Some(abort) = fault.abort {
            let mut r = reply(StatusCode::OK, Some(ResponseFlag::FaultInjected));
            r.delay = fault.delay;
            match abort {
                Abort::Http(status) => {
                    r.status = status;
                    r.body = ResponseFlag::FaultInjected.body().as_bytes().to_vec();
                }
                Abort::Grpc(code) => r.grpc_status = Some(code),
                // No HTTP answer: the proxy resets the stream; 503 is what the access log
                // would record for it.
                Abort::ResetStream => r.status = StatusCode::SERVICE_UNAVAILABLE,
            }
            return Decision::Respond(r);
        }
        match &rule.target {
            RuleTarget::Redirect(redirect) => {
                let mut r = reply(redirect.status, None);
                r.delay = fault.delay;
                if let Ok(location) = HeaderValue::from_str(&redirect.location(req)) {
                    r.headers.push((header::LOCATION, location));
                }
                return Decision::Respond(r);
            }
            RuleTarget::DirectResponse(d) => {
                let mut r = reply(d.status, None);
                r.delay = fault.delay;
                r.body = d.body.clone();
                return Decision::Respond(r);
            }
            RuleTarget::Forward(_) | RuleTarget::Delegate(_) => {}
        }
        let no_upstream = || {
            let mut r = LocalReply::for_flag(ResponseFlag::NoHealthyUpstream);
            r.virtual_service = route.virtual_service.map(str::to_string);
            r.delay = fault.delay;
            Decision::Respond(r)
        };
        let Some(destination) = self.pick_destination(&route, rng) else {
            return no_upstream();
        };
        let Some(cluster) = self.destination_cluster(
            &destination.host,
            destination.subset.as_deref(),
            destination.port,
            req,
        ) else {
            return no_upstream();
        };
        let endpoint = match cluster.choose(req, state, rng, now, &[]) {
            Ok(e) => e,
            Err(_) => return no_upstream(),
        };
        let mirrors = rule
            .mirrors
            .iter()
            .filter(|m| chance(rng, m.percent))
            .collect();
        Decision::Forward(Box::new(Forward {
            route,
            destination,
            cluster,
            endpoint,
            delay: fault.delay,
            path: rule
                .rewrite
                .as_ref()
                .and_then(|rw| rw.path(req, rule.rewrite_prefix(route.matched))),
            authority: rule.rewrite.as_ref().and_then(|rw| rw.authority.as_deref()),
            timeout: rule.timeout,
            retry: &rule.retry,
            mirrors,
            cors_headers,
        }))
    }
}

fn bound(vs: &VirtualService, entry: Entry) -> bool {
    // A rule-level `gateways` can widen a VirtualService's binding; look at those too.
    crate::matcher::entry_bound(&vs.gateways, entry) || vs.http.iter().any(|r| r.binds(entry))
}
