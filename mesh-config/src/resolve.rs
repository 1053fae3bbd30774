//! The naming rules Istio users rely on: short host names, wildcard hosts, `exportTo`,
//! gateway references and protocol selection from port names or `appProtocol`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Mesh-wide settings the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshOptions {
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

impl MeshOptions {
    /// Istio's `ResolveShortnameToFQDN`: a name without a dot is a Service of the namespace of
    /// the object naming it (`reviews` in `default` = `reviews.default.svc.cluster.local`);
    /// `*` and names with a dot are taken as written.
    pub fn fqdn(&self, host: &str, namespace: &str) -> String {
        if host.is_empty() || host == "*" || host.contains('.') {
            return host.to_string();
        }
        format!("{host}.{namespace}.svc.{}", self.cluster_domain)
    }

    /// The FQDN of a Kubernetes Service.
    pub fn service_fqdn(&self, name: &str, namespace: &str) -> String {
        format!("{name}.{namespace}.svc.{}", self.cluster_domain)
    }

    /// A VirtualService's `gateways` entry → `(namespace, name)`; `None` for the reserved
    /// `mesh`. Accepts `name`, `namespace/name` and the old `name.namespace.svc.<domain>`.
    pub fn gateway_ref(&self, reference: &str, namespace: &str) -> Option<(String, String)> {
        if reference == "mesh" {
            return None;
        }
        if let Some((ns, name)) = reference.split_once('/') {
            return Some((ns.to_string(), name.to_string()));
        }
        let mut parts = reference.split('.');
        match (parts.next(), parts.next()) {
            (Some(name), Some(ns)) => Some((ns.to_string(), name.to_string())),
            _ => Some((namespace.to_string(), reference.to_string())),
        }
    }
}

/// Does `pattern` (possibly `*` or `*.suffix`) match the concrete `host`?
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Can two host patterns select a common host?
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.starts_with('*'), b.starts_with('*')) {
        (false, false) => a.eq_ignore_ascii_case(b),
        (true, false) => host_matches(a, b),
        (false, true) => host_matches(b, a),
        (true, true) => {
            let (sa, sb) = (&a[1..], &b[1..]);
            sa.ends_with(sb) || sb.ends_with(sa)
        }
    }
}

/// Is an object of `owner_ns` with this `exportTo` visible to clients in `client_ns`?
/// Empty `exportTo` means everywhere (Istio's default); `.` is the owner's namespace, `*`
/// everywhere, `~` nowhere, anything else a namespace name.
pub fn exported_to(export_to: &[String], owner_ns: &str, client_ns: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to.iter().any(|e| match e.as_str() {
        "*" => true,
        "~" => false,
        "." => owner_ns == client_ns,
        ns => ns == client_ns,
    })
}

/// Checks an `exportTo` list the way Istio's validation does.
pub fn check_export_to(export_to: &[String]) -> Result<(), String> {
    for e in export_to {
        if e == "~" && export_to.len() > 1 {
            return Err("`~` cannot be combined with other exportTo values".into());
        }
        if !matches!(e.as_str(), "*" | "." | "~") && !is_dns_label(e) {
            return Err(format!("invalid exportTo value {e:?}"));
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Application protocol of a port, as Istio's protocol selection decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Http2,
    Https,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Mongo,
    Redis,
    Mysql,
    Udp,
}

impl Protocol {
    /// Parses a protocol name (case-insensitive), as in Gateway servers and ServiceEntry ports.
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "mongo" | "mongodb" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// Kubernetes Service port: `appProtocol` wins, then the name's prefix before the first
    /// `-` (`http-web` → HTTP, `grpc` → gRPC); anything else is TCP (Istio would sniff; the
    /// mesh treats it as opaque bytes). `kubernetes.io/h2c` is HTTP/2, `kubernetes.io/ws[s]`
    /// HTTP.
    pub fn of_service_port(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
        if let Some(app) = app_protocol {
            match app {
                "kubernetes.io/h2c" => return Protocol::Http2,
                "kubernetes.io/ws" | "kubernetes.io/wss" => return Protocol::Http,
                other => {
                    if let Some(p) = Protocol::parse(other) {
                        return p;
                    }
                }
            }
        }
        let Some(name) = name else {
            return Protocol::Tcp;
        };
        if let Some(p) = Protocol::parse(name) {
            return p;
        }
        // `grpc-web` is a protocol of its own; otherwise the prefix before the first `-`.
        if name.to_ascii_lowercase().starts_with("grpc-web-") {
            return Protocol::GrpcWeb;
        }
        name.split_once('-')
            .and_then(|(prefix, _)| Protocol::parse(prefix))
            .unwrap_or(Protocol::Tcp)
    }

    /// Does the mesh apply HTTP rules on this protocol?
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Https => "HTTPS",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
