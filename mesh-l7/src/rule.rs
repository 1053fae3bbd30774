//! One VirtualService `http` rule compiled: its matches, what it does (forward to weighted
//! destinations, redirect, answer directly, delegate) and its per-route actions.

use std::time::Duration;

use mesh_config::istio::{HttpRoute, StringMatch};
use mesh_config::snapshot::VirtualServiceRoutes;

use crate::action::{DirectResponse, Fault, HeaderRules, Mirror, Redirect, Rewrite};
use crate::cors::Cors;
use crate::error::L7ConfigError;
use crate::matcher::{Place, RequestMatcher};
use crate::request::Request;
use crate::retry::RetryPolicy;

/// A compiled VirtualService.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualService {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub export_to: Vec<String>,
    pub http: Vec<HttpRule>,
    pub tcp: Vec<crate::tcp::TcpRule>,
    pub tls: Vec<crate::tls::TlsRule>,
}

/// One `http` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRule {
    pub name: Option<String>,
    /// Position in the VirtualService's `http` list.
    pub index: usize,
    /// Empty: matches every request.
    pub matches: Vec<RequestMatcher>,
    /// Per match, what `rewrite.uri` replaces (the `uri.prefix`, the exact path, or `/`).
    rewrite_prefixes: Vec<Option<String>>,
    pub target: RuleTarget,
    pub fault: Option<Fault>,
    pub retry: RetryPolicy,
    /// `timeout`; `None` (or `0s`): none.
    pub timeout: Option<Duration>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
    pub headers: HeaderRules,
}

/// What a rule does with a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleTarget {
    Forward(Vec<WeightedDestination>),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
    /// Index into the table's delegates.
    Delegate(usize),
}

/// One `route` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedDestination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    pub weight: u32,
    pub headers: HeaderRules,
}

impl HttpRule {
    /// Compiles rule `index` of `vs`; `delegate` resolves a delegate reference to an index.
    pub(crate) fn compile(
        vs: &VirtualServiceRoutes,
        key: &str,
        index: usize,
        r: &HttpRoute,
        delegate: &mut dyn FnMut(&str, &str) -> Result<usize, L7ConfigError>,
    ) -> Result<HttpRule, L7ConfigError> {
        let base = format!("spec.http[{index}]");
        let invalid = |field: &str, message: String| L7ConfigError::Invalid {
            virtual_service: key.to_string(),
            field: format!("{base}{field}"),
            message,
        };
        let matches = r
            .matches
            .iter()
            .enumerate()
            .map(|(j, m)| RequestMatcher::compile(m, key, &format!("{base}.match[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let rewrite_prefixes = r
            .matches
            .iter()
            .map(|m| match &m.uri {
                Some(StringMatch::Prefix(p)) => Some(p.clone()),
                Some(StringMatch::Exact(p)) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let target = if let Some(d) = &r.delegate {
            let ns = d.namespace.as_deref().unwrap_or(&vs.namespace);
            RuleTarget::Delegate(delegate(
                &format!("{ns}/{}", d.name),
                &format!("{base}.delegate"),
            )?)
        } else if let Some(redirect) = &r.redirect {
            RuleTarget::Redirect(Redirect::compile(redirect).map_err(|m| invalid(".redirect", m))?)
        } else if let Some(d) = &r.direct_response {
            RuleTarget::DirectResponse(
                DirectResponse::compile(d).map_err(|m| invalid(".directResponse", m))?,
            )
        } else {
            let all_unset = r.route.iter().all(|d| d.weight.is_none());
            let destinations = r
                .route
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    let weight = match d.weight {
                        // One destination, or none weighted: an equal share each.
                        _ if r.route.len() == 1 || all_unset => 1,
                        Some(w) => u32::try_from(w).map_err(|_| {
                            invalid(&format!(".route[{j}].weight"), "negative weight".into())
                        })?,
                        None => 0,
                    };
                    Ok(WeightedDestination {
                        host: d.destination.host.clone(),
                        subset: d.destination.subset.clone(),
                        port: port_of(d.destination.port.map(|p| p.number))
                            .map_err(|m| invalid(&format!(".route[{j}].destination.port"), m))?,
                        weight,
                        headers: HeaderRules::compile(d.headers.as_ref())
                            .map_err(|m| invalid(&format!(".route[{j}].headers"), m))?,
                    })
                })
                .collect::<Result<Vec<_>, L7ConfigError>>()?;
            RuleTarget::Forward(destinations)
        };
        let place = |field: &str| Place {
            virtual_service: key,
            field: format!("{base}.{field}"),
        };
        let fault = r
            .fault
            .as_ref()
            .map(|f| Fault::compile(f, &place("fault")))
            .transpose()
            .map_err(|m| invalid("", m))?;
        let retry =
            RetryPolicy::from_istio(r.retries.as_ref()).map_err(|m| invalid(".retries", m))?;
        let mut mirrors = Vec::new();
        if let Some(m) = &r.mirror {
            let percent = match (r.mirror_percentage, r.mirror_percent) {
                (Some(p), _) => p.value,
                (None, Some(p)) => f64::from(p),
                (None, None) => 100.0,
            };
            mirrors.push(Mirror {
                host: m.host.clone(),
                subset: m.subset.clone(),
                port: port_of(m.port.map(|p| p.number)).map_err(|e| invalid(".mirror.port", e))?,
                percent,
            });
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            mirrors.push(Mirror {
                host: m.destination.host.clone(),
                subset: m.destination.subset.clone(),
                port: port_of(m.destination.port.map(|p| p.number))
                    .map_err(|e| invalid(&format!(".mirrors[{j}].destination.port"), e))?,
                percent: m.percentage.map_or(100.0, |p| p.value),
            });
        }
        Ok(HttpRule {
            name: r.name.clone(),
            index,
            matches,
            rewrite_prefixes,
            target,
            fault,
            retry,
            timeout: r.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
            rewrite: r
                .rewrite
                .as_ref()
                .map(|rw| Rewrite::compile(rw, &place("rewrite")))
                .transpose()?,
            mirrors,
            cors: r
                .cors_policy
                .as_ref()
                .map(|c| Cors::compile(c, &place("corsPolicy")))
                .transpose()?,
            headers: HeaderRules::compile(r.headers.as_ref())
                .map_err(|m| invalid(".headers", m))?,
        })
    }

    /// A rule that forwards everything to `host` on the request's port: the route of a
    /// Service no VirtualService names.
    pub(crate) fn default_for(host: &str) -> HttpRule {
        HttpRule {
            name: Some("default".to_string()),
            index: 0,
            matches: Vec::new(),
            rewrite_prefixes: Vec::new(),
            target: RuleTarget::Forward(vec![WeightedDestination {
                host: host.to_string(),
                subset: None,
                port: None,
                weight: 1,
                headers: HeaderRules::default(),
            }]),
            fault: None,
            retry: RetryPolicy::istio_default(),
            timeout: None,
            rewrite: None,
            mirrors: Vec::new(),
            cors: None,
            headers: HeaderRules::default(),
        }
    }

    /// Which match admits `req` (`Some(None)` for a rule without matches), if any.
    pub fn matching(&self, req: &Request, vs_gateways: &[String]) -> Option<Option<usize>> {
        if self.matches.is_empty() {
            return crate::matcher::entry_bound(vs_gateways, req.entry).then_some(None);
        }
        self.matches
            .iter()
            .position(|m| m.matches(req, vs_gateways))
            .map(Some)
    }

    /// Whether one of the rule's matches names the entry in its own `gateways`.
    pub(crate) fn binds(&self, entry: crate::request::Entry) -> bool {
        self.matches.iter().any(|m| m.names_entry(entry))
    }

    /// What `rewrite.uri` replaces when match `m` selected the request.
    pub fn rewrite_prefix(&self, m: Option<usize>) -> Option<&str> {
        m.and_then(|m| self.rewrite_prefixes.get(m)?.as_deref())
    }
}

fn port_of(n: Option<u32>) -> Result<Option<u16>, String> {
    n.map(|n| {
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {n} is not in 1..65535"))
    })
    .transpose()
}
