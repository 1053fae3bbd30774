//! VirtualService `tcp` routes: for a connection that is not HTTP (a Service port of
//! protocol TCP, or a Gateway server of protocol TCP), which cluster by port, source and
//! gateway, with weights. Rules in order, first match wins; no VirtualService, or none with
//! `tcp` rules, is the Service itself on the connection's port.

use mesh_config::istio::{L4MatchAttributes, RouteDestination, TcpRoute};

use crate::cluster::Cluster;
use crate::error::L7ConfigError;
use crate::flags::ResponseFlag;
use crate::matcher::entry_bound;
use crate::random::{Random, below};
use crate::request::{Entry, Source};
use crate::table::RouteTable;

/// One TCP connection as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct TcpRequest<'a> {
    /// FQDN of the Service (or ServiceEntry host) connected to.
    pub service: &'a str,
    pub port: u16,
    pub source: Source<'a>,
    pub entry: Entry<'a>,
}

/// A compiled `tcp` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRule {
    matches: Vec<L4MatchAttributes>,
    pub(crate) destinations: Destinations,
}

/// A rule's weighted `route` list: (host, subset, port, weight), shared by `tcp` and `tls`
/// rules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Destinations(Vec<(String, Option<String>, Option<u16>, u32)>);

impl Destinations {
    /// `field` is the rule's path (`spec.tcp[0]`), for errors.
    pub(crate) fn compile(
        vs: &str,
        field: &str,
        route: &[RouteDestination],
    ) -> Result<Destinations, L7ConfigError> {
        let all_unset = route.iter().all(|d| d.weight.is_none());
        let list = route
            .iter()
            .enumerate()
            .map(|(j, d)| {
                let invalid = |message: &str| L7ConfigError::Invalid {
                    virtual_service: vs.to_string(),
                    field: format!("{field}.route[{j}]"),
                    message: message.to_string(),
                };
                let weight = match d.weight {
                    _ if route.len() == 1 || all_unset => 1,
                    Some(w) => u32::try_from(w).map_err(|_| invalid("negative weight"))?,
                    None => 0,
                };
                let port = d
                    .destination
                    .port
                    .map(|p| u16::try_from(p.number).map_err(|_| invalid("port out of range")))
                    .transpose()?;
                Ok((
                    d.destination.host.clone(),
                    d.destination.subset.clone(),
                    port,
                    weight,
                ))
            })
            .collect::<Result<_, L7ConfigError>>()?;
        Ok(Destinations(list))
    }

    /// One destination by weight, as its cluster. A destination without a port takes
    /// `default_port(host)`. `UH` when the weights sum to zero or the cluster is unknown.
    pub(crate) fn pick<'t>(
        &self,
        table: &'t RouteTable,
        rng: &mut dyn Random,
        default_port: impl Fn(&str) -> u16,
    ) -> Result<&'t Cluster, ResponseFlag> {
        let total: u64 = self.0.iter().map(|d| u64::from(d.3)).sum();
        if total == 0 {
            return Err(ResponseFlag::NoHealthyUpstream);
        }
        let mut draw = below(rng, total);
        let (host, subset, port, _) = self
            .0
            .iter()
            .find(|d| {
                let w = u64::from(d.3);
                let hit = draw < w;
                draw = draw.saturating_sub(w);
                hit
            })
            .ok_or(ResponseFlag::NoHealthyUpstream)?;
        table
            .cluster(
                host,
                subset.as_deref(),
                port.unwrap_or_else(|| default_port(host)),
            )
            .ok_or(ResponseFlag::NoHealthyUpstream)
    }
}

impl TcpRule {
    /// Whether a match of this rule names the Gateway (a rule-level binding).
    pub(crate) fn binds(&self, entry: Entry) -> bool {
        self.matches.iter().any(|m| entry_bound(&m.gateways, entry))
    }

    pub(crate) fn compile(vs: &str, index: usize, r: &TcpRoute) -> Result<TcpRule, L7ConfigError> {
        Ok(TcpRule {
            matches: r.matches.clone(),
            destinations: Destinations::compile(vs, &format!("spec.tcp[{index}]"), &r.route)?,
        })
    }

    pub(crate) fn matches(&self, req: &TcpRequest, vs_gateways: &[String]) -> bool {
        if self.matches.is_empty() {
            return entry_bound(vs_gateways, req.entry);
        }
        self.matches.iter().any(|m| {
            let gateways = if m.gateways.is_empty() {
                vs_gateways
            } else {
                &m.gateways
            };
            entry_bound(gateways, req.entry)
                && m.port.is_none_or(|p| p == u32::from(req.port))
                && req
                    .source
                    .selected_by(m.source_namespace.as_deref(), &m.source_labels)
        })
    }
}

impl RouteTable {
    /// The cluster for a TCP connection. `Err(NR)`: a VirtualService has `tcp` rules for
    /// the host and none matched; `Err(UH)`: the chosen destination is unknown.
    pub fn route_tcp(
        &self,
        req: &TcpRequest,
        rng: &mut dyn Random,
    ) -> Result<&Cluster, ResponseFlag> {
        let mut had_rules = false;
        for &i in self.exact.get(req.service).into_iter().flatten() {
            let vs = &self.virtual_services[i];
            for rule in &vs.tcp {
                had_rules = true;
                if !rule.matches(req, &vs.gateways) {
                    continue;
                }
                return rule.destinations.pick(self, rng, |_| req.port);
            }
        }
        if had_rules {
            return Err(ResponseFlag::NoRoute);
        }
        self.cluster(req.service, None, req.port)
            .ok_or(ResponseFlag::NoHealthyUpstream)
    }
}
