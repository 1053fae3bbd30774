//! Connections at a Gateway server that is not HTTP: protocol TCP (VirtualService `tcp`
//! rules, by port) and protocol TLS with `mode: PASSTHROUGH` (`tls` rules, by port and the
//! ClientHello's SNI, matched against `sniHosts`). Only VirtualServices bound to the
//! Gateway whose hosts overlap the server's hosts on that port are looked at, in the
//! table's order; the first matching rule wins and its weighted destinations choose the
//! cluster. A destination without a port takes the host's only port, else the
//! connection's. Nothing matched: `NR`; an unknown destination: `UH`.

use mesh_config::istio::{TlsMatchAttributes, TlsRoute};
use mesh_config::resolve::{host_matches, hosts_overlap};

use crate::cluster::Cluster;
use crate::error::L7ConfigError;
use crate::flags::ResponseFlag;
use crate::matcher::entry_bound;
use crate::random::Random;
use crate::request::{Entry, Source};
use crate::rule::VirtualService;
use crate::table::RouteTable;
use crate::tcp::{Destinations, TcpRequest};

/// A connection accepted on a Gateway server of protocol TCP or TLS.
#[derive(Debug, Clone, Copy)]
pub struct GatewayConnection<'a> {
    /// `namespace/name` of the Gateway.
    pub gateway: &'a str,
    /// The server's port.
    pub port: u16,
    /// The ClientHello's server name (TLS servers; absent when the client sent none).
    pub sni: Option<&'a str>,
    pub source: Source<'a>,
}

/// A compiled `tls` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsRule {
    matches: Vec<TlsMatchAttributes>,
    destinations: Destinations,
}

impl TlsRule {
    pub(crate) fn compile(vs: &str, index: usize, r: &TlsRoute) -> Result<TlsRule, L7ConfigError> {
        Ok(TlsRule {
            matches: r.matches.clone(),
            destinations: Destinations::compile(vs, &format!("spec.tls[{index}]"), &r.route)?,
        })
    }

    fn matches(&self, conn: &GatewayConnection, vs: &VirtualService) -> bool {
        let entry = Entry::Gateway(conn.gateway);
        if self.matches.is_empty() {
            // Istio requires a match; without one, the VirtualService's hosts are the SNIs.
            return entry_bound(&vs.gateways, entry) && sni_matches(&vs.hosts, conn.sni);
        }
        self.matches.iter().any(|m| {
            let gateways = if m.gateways.is_empty() {
                &vs.gateways
            } else {
                &m.gateways
            };
            let sni_hosts = if m.sni_hosts.is_empty() {
                &vs.hosts
            } else {
                &m.sni_hosts
            };
            entry_bound(gateways, entry)
                && m.port.is_none_or(|p| p == u32::from(conn.port))
                && sni_matches(sni_hosts, conn.sni)
                && conn
                    .source
                    .selected_by(m.source_namespace.as_deref(), &m.source_labels)
        })
    }
}

/// Whether `sni` is one of `patterns` (`*`, `*.suffix` or a name; case-insensitive). A
/// client without SNI matches `*` only.
fn sni_matches(patterns: &[String], sni: Option<&str>) -> bool {
    patterns.iter().any(|p| match sni {
        Some(name) => host_matches(p, name),
        None => p == "*",
    })
}

impl RouteTable {
    /// The cluster for a connection on a Gateway server of protocol TCP (or TLS terminated
    /// by the gateway): the first matching `tcp` rule.
    pub fn route_gateway_tcp(
        &self,
        conn: &GatewayConnection,
        rng: &mut dyn Random,
    ) -> Result<&Cluster, ResponseFlag> {
        let req = TcpRequest {
            service: "",
            port: conn.port,
            source: conn.source,
            entry: Entry::Gateway(conn.gateway),
        };
        for vs in self.at_gateway(conn.gateway, conn.port) {
            if let Some(rule) = vs.tcp.iter().find(|r| r.matches(&req, &vs.gateways)) {
                return rule
                    .destinations
                    .pick(self, rng, |h| self.port_of(h, conn.port));
            }
        }
        Err(ResponseFlag::NoRoute)
    }

    /// The cluster for a TLS connection passed through a Gateway server (`PASSTHROUGH`): the
    /// first `tls` rule matching the port and SNI. An SNI the server's `hosts` do not admit
    /// is `NR`, as at Istio's gateway.
    pub fn route_tls(
        &self,
        conn: &GatewayConnection,
        rng: &mut dyn Random,
    ) -> Result<&Cluster, ResponseFlag> {
        let admitted = match conn.sni {
            Some(sni) => self.gateway_serves(conn.gateway, conn.port, sni),
            None => self.server_hosts(conn.gateway, conn.port).any(|h| h == "*"),
        };
        if !admitted {
            return Err(ResponseFlag::NoRoute);
        }
        for vs in self.at_gateway(conn.gateway, conn.port) {
            if let Some(rule) = vs.tls.iter().find(|r| r.matches(conn, vs)) {
                return rule
                    .destinations
                    .pick(self, rng, |h| self.port_of(h, conn.port));
            }
        }
        Err(ResponseFlag::NoRoute)
    }

    /// VirtualServices bound to Gateway `gateway` (by the VirtualService or one of its
    /// rules' matches) with a host overlapping one of the server's hosts on `port`.
    fn at_gateway<'t>(
        &'t self,
        gateway: &'t str,
        port: u16,
    ) -> impl Iterator<Item = &'t VirtualService> + 't {
        let entry = Entry::Gateway(gateway);
        self.virtual_services.iter().filter(move |vs| {
            let bound = entry_bound(&vs.gateways, entry)
                || vs.tcp.iter().any(|r| r.binds(entry))
                || vs.tls.iter().any(|r| r.binds(entry));
            bound
                && vs.hosts.iter().any(|h| {
                    self.server_hosts(gateway, port)
                        .any(|s| hosts_overlap(s, h))
                })
        })
    }

    /// A destination's port when the rule names none: the host's only port, else `port`.
    fn port_of(&self, host: &str, port: u16) -> u16 {
        match self.host_ports.get(host).map(Vec::as_slice) {
            Some([only]) => *only,
            _ => port,
        }
    }
}

impl TlsRule {
    /// Whether a match of this rule names the Gateway (a rule-level binding).
    pub(crate) fn binds(&self, entry: Entry) -> bool {
        self.matches.iter().any(|m| entry_bound(&m.gateways, entry))
    }
}
