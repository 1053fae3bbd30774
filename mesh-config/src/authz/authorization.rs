//! AuthorizationPolicy at L4: allow or deny one inbound connection, as ztunnel does for a
//! workload without a waypoint.
//!
//! Which policies: those in the root namespace (mesh-wide) and those in the workload's
//! namespace, whose `selector.matchLabels` (if any) match the workload's labels. Policies with
//! `targetRef`/`targetRefs` attach to waypoints and gateways, not to workloads, and are
//! skipped (istiod never sends them to ztunnel).
//!
//! Order: CUSTOM → DENY → ALLOW; AUDIT changes nothing and is only recorded.
//! * CUSTOM (an external authorizer) is not supported: a CUSTOM policy that applies to the
//!   workload denies every connection to it (fail closed). ztunnel ignores CUSTOM; enforcing
//!   less than the user asked for silently is the worse failure.
//! * Any matching DENY denies.
//! * If any ALLOW applies and none matches, deny. An ALLOW without rules (`spec: {}`) matches
//!   nothing, so it denies all; a rule `{}` matches everything.
//!
//! A rule is `from` (any source) AND `to` (any operation) AND `when` (every condition); in a
//! source or operation every field present must match, and a field matches when one of its
//! values does (and none of its `not` values).
//!
//! HTTP attributes (`requestPrincipals`, `hosts`, `methods`, `paths`, `when` keys other than
//! the L4 ones, including `connection.sni`) need a waypoint. Without one, ztunnel fails closed:
//! in an ALLOW policy a rule using them never matches; in DENY (and AUDIT) they are dropped,
//! so the rule matches more connections. A decision due to such a rule says so
//! ([`DenyReason::L7OnlyRule`]).
//!
//! `remoteIpBlocks` and `remote.ip` are matched against [`Connection::remote_ip`] (at L4 the
//! peer itself); ztunnel, which never knows a client behind a proxy, treats them as HTTP.
//!
//! With a request ([`authorize_request`], for waypoints and gateways) the HTTP attributes are
//! evaluated: `hosts` (case-insensitive, port ignored), `methods`, `paths` (without the query),
//! `when` on `request.headers[<name>]`. What the mesh cannot know (JWT: `requestPrincipals`,
//! `request.auth.*`) is absent, as for a request without a token: a positive value never
//! matches it and a negative one never excludes it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::ip_block::IpBlock;
use super::matcher::{Peer, field, pattern_matches, port_is};
use super::{Target, policies_in, selects};
use crate::istio::{Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source};
use crate::snapshot::{PolicyInfo, Snapshot};

/// L4 attributes of one connection as the destination agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    /// The verified peer identity in Istio's principal form, `td/ns/x/sa/y` (the SPIFFE ID
    /// without `spiffe://`); `None` for plaintext.
    pub source_principal: Option<&'a str>,
    /// The peer's address (`ipBlocks`, `source.ip`).
    pub source_ip: IpAddr,
    /// The original client (`remoteIpBlocks`, `remote.ip`); the same as `source_ip` at L4.
    pub remote_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
}

/// The verdict on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Allow {
        /// `namespace/name` of the first matching AUDIT policy.
        audit: Option<String>,
    },
    Deny {
        /// `namespace/name` of the policy that decided.
        policy: String,
        reason: DenyReason,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Why a connection was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// A CUSTOM policy applies; external authorizers are not supported, so it fails closed.
    CustomUnsupported,
    /// A DENY policy matched.
    DenyPolicy,
    /// ALLOW policies apply and none matched. The policy named is the first of them.
    NotAllowed,
    /// A rule needing HTTP attributes decided, and no waypoint enforces them: a DENY rule
    /// that matched once its HTTP parts were dropped, or, when no ALLOW matched, an ALLOW
    /// rule that was skipped for them (the policy named is the first such).
    L7OnlyRule,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::CustomUnsupported => {
                "CUSTOM action (external authorization) is not supported; denied to fail closed"
            }
            DenyReason::DenyPolicy => "matched a DENY policy",
            DenyReason::NotAllowed => "ALLOW policies apply and none matched",
            DenyReason::L7OnlyRule => {
                "the deciding rule uses HTTP attributes, which need a waypoint; at L4 it fails closed"
            }
        })
    }
}

/// The HTTP attributes of one request, as a waypoint or a gateway sees it.
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    /// The host of `:authority` / `Host` (a port, if any, is ignored).
    pub host: &'a str,
    pub headers: &'a dyn RequestHeaders,
}

impl fmt::Debug for HttpRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Request headers by (lower-case) name; several values of one header come joined by `,`
/// as Envoy presents them to its RBAC filter.
pub trait RequestHeaders {
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;
}

/// Who a request-level decision is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyScope<'a> {
    /// A workload chosen by `selector` (an ingress gateway's pod, by its labels).
    Workload(Target<'a>),
    /// A waypoint (`namespace`/`name`) serving a request for `service` (`namespace`,
    /// `name`): policies whose `targetRef(s)` name the waypoint's Gateway, the Service, or
    /// (in the root namespace) the `istio-waypoint` GatewayClass.
    Waypoint {
        namespace: &'a str,
        name: &'a str,
        service: Option<(&'a str, &'a str)>,
    },
}

/// The decision for `conn` to `target`.
pub fn authorize(
    snap: &Snapshot,
    root_namespace: &str,
    target: &Target,
    conn: &Connection,
) -> Decision {
    let policies = applicable(&snap.authorization_policies, root_namespace, target);
    decide(&policies, conn, None)
}

/// The decision for one HTTP request over `conn`, with every HTTP attribute evaluated.
pub fn authorize_request(
    snap: &Snapshot,
    root_namespace: &str,
    scope: &PolicyScope,
    conn: &Connection,
    request: &HttpRequest,
) -> Decision {
    let policies = match scope {
        PolicyScope::Workload(target) => {
            applicable(&snap.authorization_policies, root_namespace, target)
        }
        PolicyScope::Waypoint {
            namespace,
            name,
            service,
        } => waypoint_policies(snap, root_namespace, namespace, name, *service),
    };
    decide(&policies, conn, Some(request))
}

fn decide(policies: &[&Policy], conn: &Connection, http: Option<&HttpRequest>) -> Decision {
    let peer = Peer::from_principal(conn.source_principal);
    let (allow_mode, other_mode) = match http {
        Some(h) => (L7::Evaluate(h), L7::Evaluate(h)),
        None => (L7::NeverMatch, L7::Drop),
    };
    let with_action = |action: Action| {
        policies
            .iter()
            .copied()
            .filter(move |p| p.spec.action.unwrap_or(Action::Allow) == action)
    };

    if let Some(p) = with_action(Action::Custom).next() {
        return deny(p, DenyReason::CustomUnsupported);
    }

    for p in with_action(Action::Deny) {
        match policy_matches(p, conn, &peer, other_mode) {
            PolicyMatch::Matched { l7: true } if http.is_none() => {
                return deny(p, DenyReason::L7OnlyRule);
            }
            PolicyMatch::Matched { .. } => return deny(p, DenyReason::DenyPolicy),
            PolicyMatch::NotMatched { .. } => {}
        }
    }

    let allows: Vec<&Policy> = with_action(Action::Allow).collect();
    if let Some(&first) = allows.first() {
        let mut skipped_l7 = None;
        let allowed = allows
            .iter()
            .any(|p| match policy_matches(p, conn, &peer, allow_mode) {
                PolicyMatch::Matched { .. } => true,
                PolicyMatch::NotMatched { l7_skipped } => {
                    if l7_skipped {
                        skipped_l7.get_or_insert(*p);
                    }
                    false
                }
            });
        if !allowed {
            // A skipped HTTP rule is the likelier reason the user expected an allow.
            return match skipped_l7 {
                Some(p) => deny(p, DenyReason::L7OnlyRule),
                None => deny(first, DenyReason::NotAllowed),
            };
        }
    }

    let audit = with_action(Action::Audit)
        .find(|p| {
            matches!(
                policy_matches(p, conn, &peer, other_mode),
                PolicyMatch::Matched { .. }
            )
        })
        .map(key);
    Decision::Allow { audit }
}

type Policy = PolicyInfo<AuthorizationPolicySpec>;

/// The policies that apply to `target`, in `namespace/name` order.
fn applicable<'s>(
    policies: &'s BTreeMap<String, Arc<Policy>>,
    root_namespace: &str,
    target: &Target,
) -> Vec<&'s Policy> {
    let mut namespaces = [root_namespace, target.namespace];
    namespaces.sort_unstable();
    let [first, second] = namespaces;
    let mut out: Vec<&Policy> = policies_in(policies, first).collect();
    if second != first {
        out.extend(policies_in(policies, second));
    }
    out.retain(|p| applies(&p.spec, target));
    out
}

/// The policies attached to a waypoint: in its namespace naming it (kind Gateway), in the
/// Service's namespace naming the Service, in the root namespace naming the waypoint class.
fn waypoint_policies<'s>(
    snap: &'s Snapshot,
    root_namespace: &str,
    namespace: &str,
    name: &str,
    service: Option<(&str, &str)>,
) -> Vec<&'s Policy> {
    let mut namespaces = vec![root_namespace, namespace];
    if let Some((service_ns, _)) = service {
        namespaces.push(service_ns);
    }
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut out = Vec::new();
    for ns in namespaces {
        for p in policies_in(&snap.authorization_policies, ns) {
            let targets = p.spec.target_ref.iter().chain(&p.spec.target_refs);
            let attached = targets.into_iter().any(|t| {
                let t_ns = t.namespace.as_deref().unwrap_or(&p.namespace);
                match t.kind.as_str() {
                    "Gateway" => t_ns == namespace && t.name == name,
                    "Service" => {
                        service.is_some_and(|(s_ns, s_name)| t_ns == s_ns && t.name == s_name)
                    }
                    "GatewayClass" => {
                        p.namespace == root_namespace
                            && t.name == crate::istio::gateway_api::WAYPOINT_CLASS
                    }
                    _ => false,
                }
            });
            if attached {
                out.push(p);
            }
        }
    }
    out
}

fn applies(spec: &AuthorizationPolicySpec, target: &Target) -> bool {
    // Waypoint and gateway policies: not ours (see the module comment).
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        return false;
    }
    selects(spec.selector.as_ref(), target.labels)
}

fn deny(p: &Policy, reason: DenyReason) -> Decision {
    Decision::Deny {
        policy: key(p),
        reason,
    }
}

fn key(p: &Policy) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// What to do with HTTP attributes.
#[derive(Debug, Clone, Copy)]
enum L7<'h> {
    /// At L4, in ALLOW: a rule using them never matches (allowing on a guess would open
    /// too much).
    NeverMatch,
    /// At L4, in DENY and AUDIT: drop them and match on the rest (denying more than asked,
    /// never less).
    Drop,
    /// With a request: evaluate them.
    Evaluate(&'h HttpRequest<'h>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyMatch {
    /// `l7`: the matching rule had HTTP parts that were dropped.
    Matched { l7: bool },
    /// `l7_skipped`: a rule was not considered because of HTTP attributes.
    NotMatched { l7_skipped: bool },
}

/// Whether any rule of `p` matches (no rules: none does).
fn policy_matches(p: &Policy, conn: &Connection, peer: &Peer, l7: L7) -> PolicyMatch {
    let mut l7_skipped = false;
    let http = match l7 {
        L7::Evaluate(h) => Some(h),
        L7::NeverMatch | L7::Drop => None,
    };
    for rule in &p.spec.rules {
        let has_l7 = rule_has_l7(rule);
        if has_l7 && matches!(l7, L7::NeverMatch) {
            l7_skipped = true;
            continue;
        }
        if rule_matches(rule, &p.namespace, conn, peer, http) {
            return PolicyMatch::Matched { l7: has_l7 };
        }
    }
    PolicyMatch::NotMatched { l7_skipped }
}

/// `from` AND `to` AND `when`. Without `http`, HTTP attributes are left out (the caller
/// decided what they mean); with it, they are evaluated.
fn rule_matches(
    rule: &Rule,
    policy_namespace: &str,
    conn: &Connection,
    peer: &Peer,
    http: Option<&HttpRequest>,
) -> bool {
    let from = rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|f| source_matches(&f.source, policy_namespace, conn, peer, http));
    let to = rule.to.is_empty()
        || rule
            .to
            .iter()
            .any(|t| operation_matches(&t.operation, conn, http));
    from && to
        && rule
            .when
            .iter()
            .all(|c| condition_matches(c, conn, peer, http))
}

fn source_matches(
    s: &Source,
    policy_namespace: &str,
    conn: &Connection,
    peer: &Peer,
    http: Option<&HttpRequest>,
) -> bool {
    let principal = |v: &String| pattern_matches(v, peer.principal);
    let namespace = |v: &String| pattern_matches(v, peer.namespace);
    let service_account = |v: &String| peer.is_service_account(v, policy_namespace);
    let source_ip = |v: &String| IpBlock::value_contains(v, conn.source_ip);
    let remote_ip = |v: &String| IpBlock::value_contains(v, conn.remote_ip);
    field(&s.principals, &s.not_principals, principal)
        && field(&s.namespaces, &s.not_namespaces, namespace)
        && field(
            &s.service_accounts,
            &s.not_service_accounts,
            service_account,
        )
        && field(&s.ip_blocks, &s.not_ip_blocks, source_ip)
        && field(&s.remote_ip_blocks, &s.not_remote_ip_blocks, remote_ip)
        // No JWT support: a request has no request principal (see the module comment).
        && (http.is_none()
            || field(&s.request_principals, &s.not_request_principals, |v| {
                pattern_matches(v, None)
            }))
}

fn operation_matches(op: &Operation, conn: &Connection, http: Option<&HttpRequest>) -> bool {
    let port = |v: &String| port_is(v, conn.destination_port);
    let ports = field(&op.ports, &op.not_ports, port);
    let Some(h) = http else {
        return ports;
    };
    let host = h.host.rsplit_once(':').map_or(h.host, |(host, port)| {
        // `[::1]:80` and `host:80` lose the port; a bare IPv6 address keeps its colons.
        if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') {
            host
        } else {
            h.host
        }
    });
    let host = host.to_ascii_lowercase();
    ports
        && field(&op.hosts, &op.not_hosts, |v| {
            pattern_matches(&v.to_ascii_lowercase(), Some(&host))
        })
        && field(&op.methods, &op.not_methods, |v| {
            pattern_matches(v, Some(h.method))
        })
        && field(&op.paths, &op.not_paths, |v| {
            pattern_matches(v, Some(h.path))
        })
}

/// A `when` condition. Without `http` only L4 keys are evaluated and any other key is left
/// to the caller (true); with it, `request.headers[...]` is read and the other HTTP keys
/// (JWT claims, ...) have no value.
fn condition_matches(
    c: &Condition,
    conn: &Connection,
    peer: &Peer,
    http: Option<&HttpRequest>,
) -> bool {
    let ip = |ip: IpAddr| field(&c.values, &c.not_values, |v| IpBlock::value_contains(v, ip));
    match WhenKey::parse(&c.key) {
        Some(WhenKey::SourceIp) => ip(conn.source_ip),
        Some(WhenKey::RemoteIp) => ip(conn.remote_ip),
        Some(WhenKey::DestinationIp) => ip(conn.destination_ip),
        Some(WhenKey::SourceNamespace) => field(&c.values, &c.not_values, |v| {
            pattern_matches(v, peer.namespace)
        }),
        Some(WhenKey::SourcePrincipal) => field(&c.values, &c.not_values, |v| {
            pattern_matches(v, peer.principal)
        }),
        Some(WhenKey::DestinationPort) => field(&c.values, &c.not_values, |v| {
            port_is(v, conn.destination_port)
        }),
        None => match http {
            None => true,
            Some(h) => {
                let value = request_header_key(&c.key).and_then(|name| h.headers.header(name));
                let value = value.as_deref();
                field(&c.values, &c.not_values, |v| pattern_matches(v, value))
            }
        },
    }
}

/// `request.headers[x-user]` → `x-user`.
fn request_header_key(key: &str) -> Option<&str> {
    key.strip_prefix("request.headers[")?.strip_suffix(']')
}

/// The `when` keys L4 can evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenKey {
    SourceIp,
    RemoteIp,
    DestinationIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationPort,
}

impl WhenKey {
    pub(crate) fn parse(key: &str) -> Option<WhenKey> {
        Some(match key {
            "source.ip" => WhenKey::SourceIp,
            "remote.ip" => WhenKey::RemoteIp,
            "destination.ip" => WhenKey::DestinationIp,
            "source.namespace" => WhenKey::SourceNamespace,
            "source.principal" => WhenKey::SourcePrincipal,
            "destination.port" => WhenKey::DestinationPort,
            _ => return None,
        })
    }
}

/// Whether a rule uses anything only HTTP can answer.
fn rule_has_l7(rule: &Rule) -> bool {
    let source =
        |s: &Source| !s.request_principals.is_empty() || !s.not_request_principals.is_empty();
    let operation = |o: &Operation| {
        !(o.hosts.is_empty()
            && o.not_hosts.is_empty()
            && o.methods.is_empty()
            && o.not_methods.is_empty()
            && o.paths.is_empty()
            && o.not_paths.is_empty())
    };
    rule.from.iter().any(|f| source(&f.source))
        || rule.to.iter().any(|t| operation(&t.operation))
        || rule.when.iter().any(|c| WhenKey::parse(&c.key).is_none())
}
