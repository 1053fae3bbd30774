//! What the engine reads of one request: the attributes VirtualService matches,
//! consistent hashing and AuthorizationPolicy look at, borrowed from the proxy's own request
//! (a hyper `Request` gives them without copying).

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::HeaderMap;

/// One HTTP request as the waypoint or the gateway received it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `:authority` / `Host`, as sent (`reviews:9080`).
    pub authority: &'a str,
    /// Path and query, as sent (`/api/v1/products?x=1`).
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The port the request was sent to: the Service port for mesh traffic (the
    /// VirtualService `port` match and the default destination port), the Gateway server's
    /// port at a gateway.
    pub port: u16,
    /// The FQDN of the Service the connection was addressed to, when the proxy knows it (a
    /// waypoint learns it from the HBONE target). Without it the host of `authority` is used.
    pub service: Option<&'a str>,
    pub source: Source<'a>,
    pub entry: Entry<'a>,
}

/// The client: what `sourceLabels`, `sourceNamespace`, `useSourceIp` and policies read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Source<'a> {
    pub namespace: Option<&'a str>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Istio's principal form, `cluster.local/ns/x/sa/y`.
    pub principal: Option<&'a str>,
    pub ip: Option<IpAddr>,
}

impl Source<'_> {
    /// Whether a match's `sourceNamespace` and `sourceLabels` select this client (unset
    /// ones select everyone; labels need a client whose labels are known).
    pub(crate) fn selected_by(
        &self,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        namespace.is_none_or(|ns| self.namespace == Some(ns))
            && (labels.is_empty()
                || self
                    .labels
                    .is_some_and(|l| labels.iter().all(|(k, v)| l.get(k) == Some(v))))
    }
}

/// Where the request entered: the mesh (a waypoint) or an Istio Gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Mesh,
    /// `namespace/name` of the Gateway object the server belongs to.
    Gateway(&'a str),
}

impl<'a> Request<'a> {
    /// The path without the query string (what `uri` matches and policies' `paths` see).
    pub fn path_only(&self) -> &'a str {
        self.path.split_once('?').map_or(self.path, |(p, _)| p)
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The value of query parameter `name` (first occurrence, not percent-decoded; a key
    /// without `=` has the empty value).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The authority without its port, lower-case is up to the caller.
    pub fn host(&self) -> &'a str {
        strip_port(self.authority)
    }

    /// A header's first value, if it is text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The namespace whose view of `exportTo` applies: the client's in the mesh, the
    /// Gateway's at a gateway.
    pub fn viewer_namespace(&self) -> Option<&'a str> {
        match self.entry {
            Entry::Mesh => self.source.namespace,
            Entry::Gateway(key) => key.split_once('/').map(|(ns, _)| ns),
        }
    }
}

/// `host:80` → `host`, `[::1]:80` → `[::1]`; a bare IPv6 address is left alone.
pub fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => authority,
    }
}
