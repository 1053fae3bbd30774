//! What can go wrong with one proxied connection, typed: the access log's `result`, the
//! `response_flags` label (Envoy's flags, which Istio's dashboards already know) and the
//! `reason` of `mesh_connections_refused_total` all come from here, so a failure is named
//! the same way everywhere.
use std::{io, net::SocketAddr};

use mesh_identity::SpiffeId;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no original destination recorded for this connection")]
    NoOriginalDestination,
    #[error("destination {0} is the agent's own listener")]
    Loop(SocketAddr),
    #[error("{service}: port {port} is not a port of the service")]
    PortNotInService { service: String, port: u16 },
    #[error("{service}: no ready endpoint")]
    NoEndpoint { service: String },
    #[error("{service}: its waypoint {waypoint} has no pod with an address")]
    NoWaypoint { service: String, waypoint: String },
    #[error(
        "{0} is not registered (outboundTrafficPolicy REGISTRY_ONLY): not a Service, a mesh workload or a ServiceEntry"
    )]
    NotRegistered(SocketAddr),
    #[error("{target} is not a Service waypoint {waypoint} serves")]
    NotThisWaypoint {
        target: SocketAddr,
        waypoint: String,
    },
    #[error("{service}: no container port named {name:?} on {endpoint}")]
    NoTargetPort {
        service: String,
        name: String,
        endpoint: std::net::IpAddr,
    },
    #[error("resolving {name}: {reason}")]
    Resolve { name: String, reason: String },
    #[error("connect {target}: {source}")]
    Connect {
        target: SocketAddr,
        source: io::Error,
    },
    #[error("TLS with {peer}: {source}")]
    Tls { peer: SocketAddr, source: io::Error },
    #[error("{peer} presented {}, expected {}", .ids.1, .ids.0)]
    WrongIdentity {
        peer: SocketAddr,
        /// (expected, presented); boxed to keep the error small on the happy path.
        ids: Box<(SpiffeId, SpiffeId)>,
    },
    #[error("identity: {0}")]
    Identity(#[from] mesh_identity::IdentityError),
    #[error("HBONE with {peer}: {source}")]
    Hbone { peer: SocketAddr, source: h2::Error },
    #[error("HBONE tunnel {peer} answered {status} for {target}")]
    TunnelRefused {
        peer: SocketAddr,
        target: SocketAddr,
        status: u16,
    },
    #[error("HBONE request: {0}")]
    BadRequest(String),
    #[error("{0} is not an address of this pod")]
    NotThisPod(SocketAddr),
    #[error("denied by AuthorizationPolicy {policy}: {why}")]
    Denied { policy: String, why: String },
    #[error("plaintext refused: PeerAuthentication mode STRICT for port {port}")]
    PlaintextRefused { port: u16 },
    #[error("{0}")]
    Copy(io::Error),
}

impl ProxyError {
    /// Short, stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoOriginalDestination => "no_original_destination",
            ProxyError::Loop(_) => "loop",
            ProxyError::PortNotInService { .. } => "port_not_in_service",
            ProxyError::NoEndpoint { .. } => "no_endpoint",
            ProxyError::NoWaypoint { .. } => "no_waypoint",
            ProxyError::NotRegistered(_) => "registry_only",
            ProxyError::NotThisWaypoint { .. } => "not_this_waypoint",
            ProxyError::NoTargetPort { .. } => "no_target_port",
            ProxyError::Resolve { .. } => "dns_failed",
            ProxyError::Connect { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => "connect_refused",
                io::ErrorKind::TimedOut => "connect_timeout",
                _ => "connect_failed",
            },
            ProxyError::Tls { source, .. } => tls_reason(source),
            ProxyError::WrongIdentity { .. } => "wrong_identity",
            ProxyError::Identity(_) => "identity",
            ProxyError::Hbone { .. } => "hbone",
            ProxyError::TunnelRefused { status: 401, .. } => "denied_by_peer",
            ProxyError::TunnelRefused { .. } => "tunnel_refused",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::NotThisPod(_) => "not_this_pod",
            ProxyError::Denied { .. } => "denied_by_policy",
            ProxyError::PlaintextRefused { .. } => "plaintext_refused",
            ProxyError::Copy(e) if e.kind() == io::ErrorKind::ConnectionReset => "reset",
            ProxyError::Copy(_) => "io",
        }
    }

    /// Envoy's response flag for this failure (Istio's `response_flags` label).
    pub fn response_flag(&self) -> &'static str {
        match self {
            ProxyError::NoOriginalDestination
            | ProxyError::Loop(_)
            | ProxyError::PortNotInService { .. }
            | ProxyError::NoTargetPort { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::NotThisPod(_)
            | ProxyError::NotThisWaypoint { .. }
            | ProxyError::NotRegistered(_) => "NR",
            ProxyError::NoEndpoint { .. } | ProxyError::NoWaypoint { .. } => "UH",
            ProxyError::Resolve { .. } => "DF",
            ProxyError::Connect { .. }
            | ProxyError::Tls { .. }
            | ProxyError::WrongIdentity { .. }
            | ProxyError::Identity(_)
            | ProxyError::Hbone { .. } => "UF",
            ProxyError::TunnelRefused { .. } => "UF",
            ProxyError::Denied { .. } | ProxyError::PlaintextRefused { .. } => "RBAC",
            ProxyError::Copy(_) => "UC",
        }
    }
}

/// The TLS failure as the peer's mistake it usually is: no certificate, an unknown CA,
/// an expired certificate.
fn tls_reason(e: &io::Error) -> &'static str {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "tls";
    };
    use rustls::{CertificateError, Error};
    match tls {
        Error::NoCertificatesPresented => "tls_no_client_certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => "tls_unknown_ca",
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "tls_expired_certificate"
        }
        Error::InvalidCertificate(_) => "tls_bad_certificate",
        Error::AlertReceived(_) => "tls_alert",
        _ => "tls",
    }
}
