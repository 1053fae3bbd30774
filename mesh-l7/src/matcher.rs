//! VirtualService `match` conditions compiled once per snapshot: regexes are built when the
//! table is (anchored, so they match the whole value as RE2's FullMatch does), and a request
//! is tested without allocating.

use std::collections::BTreeMap;

use mesh_config::istio::{HttpMatchRequest, StringMatch};
use regex::Regex;

use crate::error::L7ConfigError;
use crate::request::{Entry, Request};

/// A compiled `StringMatch`.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Matcher::Exact(a), Matcher::Exact(b)) | (Matcher::Prefix(a), Matcher::Prefix(b)) => {
                a == b
            }
            (Matcher::Regex(a), Matcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// Names the VirtualService and field when a regex does not compile.
pub(crate) struct Place<'a> {
    pub virtual_service: &'a str,
    pub field: String,
}

impl Matcher {
    pub(crate) fn compile(m: &StringMatch, place: &Place) -> Result<Matcher, L7ConfigError> {
        Ok(match m {
            StringMatch::Exact(s) => Matcher::Exact(s.clone()),
            StringMatch::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatch::Regex(r) => Matcher::Regex(full_match_regex(r, place)?),
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => value == s,
            Matcher::Prefix(s) => value.starts_with(s.as_str()),
            Matcher::Regex(r) => r.is_match(value),
        }
    }

    /// `ignoreUriCase`: exact and prefix compare ASCII case-insensitively (Envoy's
    /// `ignore_case`); a regex is as written.
    fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => value.eq_ignore_ascii_case(s),
            Matcher::Prefix(s) => value
                .get(..s.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(s)),
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

/// `pattern` must match the whole value (RE2 FullMatch, as Envoy's `safe_regex`).
pub(crate) fn full_match_regex(pattern: &str, place: &Place) -> Result<Regex, L7ConfigError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| L7ConfigError::Regex {
        virtual_service: place.virtual_service.to_string(),
        field: place.field.clone(),
        pattern: pattern.to_string(),
        source: Box::new(e),
    })
}

/// One `HTTPMatchRequest`: every condition present must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestMatcher {
    pub name: Option<String>,
    uri: Option<Matcher>,
    ignore_uri_case: bool,
    scheme: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    /// Lower-case header names.
    headers: Vec<(String, Matcher)>,
    without_headers: Vec<(String, Matcher)>,
    query_params: Vec<(String, Matcher)>,
    port: Option<u32>,
    source_labels: BTreeMap<String, String>,
    source_namespace: Option<String>,
    /// Resolved Gateway keys (`namespace/name`) and `mesh`; empty: the VirtualService's.
    gateways: Vec<String>,
}

impl RequestMatcher {
    pub(crate) fn compile(
        m: &HttpMatchRequest,
        vs: &str,
        base: &str,
    ) -> Result<Self, L7ConfigError> {
        let one =
            |sm: &Option<StringMatch>, field: &str| -> Result<Option<Matcher>, L7ConfigError> {
                sm.as_ref()
                    .map(|sm| {
                        Matcher::compile(
                            sm,
                            &Place {
                                virtual_service: vs,
                                field: format!("{base}.{field}.regex"),
                            },
                        )
                    })
                    .transpose()
            };
        let map = |m: &BTreeMap<String, StringMatch>, field: &str| {
            m.iter()
                .map(|(k, sm)| {
                    let place = Place {
                        virtual_service: vs,
                        field: format!("{base}.{field}.{k}.regex"),
                    };
                    Ok((k.to_ascii_lowercase(), Matcher::compile(sm, &place)?))
                })
                .collect::<Result<Vec<_>, L7ConfigError>>()
        };
        Ok(RequestMatcher {
            name: m.name.clone(),
            uri: one(&m.uri, "uri")?,
            ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
            scheme: one(&m.scheme, "scheme")?,
            method: one(&m.method, "method")?,
            authority: one(&m.authority, "authority")?,
            headers: map(&m.headers, "headers")?,
            without_headers: map(&m.without_headers, "withoutHeaders")?,
            query_params: map(&m.query_params, "queryParams")?,
            port: m.port,
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
            gateways: m.gateways.clone(),
        })
    }

    /// Whether the match's own `gateways` name the entry.
    pub(crate) fn names_entry(&self, entry: Entry) -> bool {
        !self.gateways.is_empty() && entry_bound(&self.gateways, entry)
    }

    /// Whether `req` satisfies every condition. `vs_gateways`: the VirtualService's
    /// gateways, used when the match names none.
    pub fn matches(&self, req: &Request, vs_gateways: &[String]) -> bool {
        let gateways = if self.gateways.is_empty() {
            vs_gateways
        } else {
            &self.gateways
        };
        if !entry_bound(gateways, req.entry) {
            return false;
        }
        if let Some(uri) = &self.uri {
            let path = req.path_only();
            let ok = if self.ignore_uri_case {
                uri.matches_ignore_case(path)
            } else {
                uri.matches(path)
            };
            if !ok {
                return false;
            }
        }
        let holds = |m: &Option<Matcher>, v: &str| m.as_ref().is_none_or(|m| m.matches(v));
        if !holds(&self.scheme, req.scheme)
            || !holds(&self.method, req.method)
            || !holds(&self.authority, req.authority)
        {
            return false;
        }
        if self.port.is_some_and(|p| p != u32::from(req.port)) {
            return false;
        }
        if !self
            .headers
            .iter()
            .all(|(name, m)| req.header(name).is_some_and(|v| m.matches(v)))
        {
            return false;
        }
        if self
            .without_headers
            .iter()
            .any(|(name, m)| req.header(name).is_some_and(|v| m.matches(v)))
        {
            return false;
        }
        if !self
            .query_params
            .iter()
            .all(|(name, m)| req.query_param(name).is_some_and(|v| m.matches(v)))
        {
            return false;
        }
        req.source
            .selected_by(self.source_namespace.as_deref(), &self.source_labels)
    }
}

/// Whether a list of gateways (resolved keys and `mesh`) admits the request's entry.
pub(crate) fn entry_bound(gateways: &[String], entry: Entry) -> bool {
    match entry {
        Entry::Mesh => gateways.iter().any(|g| g == "mesh"),
        Entry::Gateway(key) => gateways.iter().any(|g| g == key),
    }
}
