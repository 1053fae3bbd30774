//! What a matched rule does besides choosing a destination, compiled once per snapshot:
//! faults, rewrites, redirects, direct responses, header operations, mirrors. Each decision
//! is a function of the request (and, for percentages, an injected random source).

use std::time::Duration;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use mesh_config::istio::{
    self, FaultAbort, HeaderOperations, HttpBody, HttpFaultInjection, HttpRedirect, HttpRewrite,
    RedirectPortSelection,
};
use regex::Regex;

use crate::matcher::{Matcher, Place, full_match_regex};
use crate::random::{Random, chance};
use crate::request::{Request, strip_port};

/// `fault`, with percentages resolved (`percentage.value` or the old `percent`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(Abort, f64)>,
}

/// How a fault abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status code (`UNAVAILABLE` = 14), sent as HTTP 200 with `grpc-status`.
    Grpc(u32),
    /// `http2Error`: reset the stream.
    ResetStream,
}

/// The fault decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultDecision {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
}

impl Fault {
    pub(crate) fn compile(f: &HttpFaultInjection, place: &Place) -> Result<Fault, String> {
        let delay = f.delay.as_ref().and_then(|d| {
            let fixed = d.fixed_delay.or(d.exponential_delay)?;
            Some((fixed.0, d.effective_percent()))
        });
        let abort = f
            .abort
            .as_ref()
            .map(|a| Ok::<_, String>((abort_of(a)?, a.effective_percent())))
            .transpose()
            .map_err(|e| format!("{}: {e}", place.field))?;
        Ok(Fault { delay, abort })
    }

    /// Draws the delay and the abort independently, each with its percentage.
    pub fn decide(&self, rng: &mut dyn Random) -> FaultDecision {
        FaultDecision {
            delay: self
                .delay
                .and_then(|(d, pct)| chance(rng, pct).then_some(d)),
            abort: self
                .abort
                .and_then(|(a, pct)| chance(rng, pct).then_some(a)),
        }
    }
}

fn abort_of(a: &FaultAbort) -> Result<Abort, String> {
    if let Some(s) = a.http_status {
        let code = u16::try_from(s)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| format!("httpStatus {s} is not an HTTP status"))?;
        return Ok(Abort::Http(code));
    }
    if let Some(g) = &a.grpc_status {
        return grpc_code(g)
            .map(Abort::Grpc)
            .ok_or_else(|| format!("grpcStatus {g:?} is not a gRPC status name"));
    }
    if a.http2_error.is_some() {
        return Ok(Abort::ResetStream);
    }
    Err("abort needs httpStatus, grpcStatus or http2Error".to_string())
}

/// gRPC status names (and their numbers, as Istio also accepts) → code.
pub fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    if let Ok(n) = name.parse::<u32>() {
        return (n < 17).then_some(n);
    }
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
}

/// `rewrite`.
#[derive(Debug, Clone)]
pub struct Rewrite {
    uri: Option<String>,
    regex: Option<(Regex, String)>,
    pub authority: Option<String>,
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
            && self.authority == other.authority
            && self.regex.as_ref().map(|(r, s)| (r.as_str(), s))
                == other.regex.as_ref().map(|(r, s)| (r.as_str(), s))
    }
}

impl Rewrite {
    pub(crate) fn compile(r: &HttpRewrite, place: &Place) -> Result<Rewrite, crate::L7ConfigError> {
        let regex = r
            .uri_regex_rewrite
            .as_ref()
            .map(|rr| {
                let re = Regex::new(&rr.pattern).map_err(|e| crate::L7ConfigError::Regex {
                    virtual_service: place.virtual_service.to_string(),
                    field: format!("{}.uriRegexRewrite.match", place.field),
                    pattern: rr.pattern.clone(),
                    source: Box::new(e),
                })?;
                Ok::<_, crate::L7ConfigError>((re, re2_substitution(&rr.rewrite)))
            })
            .transpose()?;
        Ok(Rewrite {
            uri: r.uri.clone(),
            regex,
            authority: r.authority.clone(),
        })
    }

    /// The new path and query, if the rewrite changes them. `matched_prefix`: what the
    /// selecting match consumed (its `uri.prefix`, the whole path for `exact`, `/` when it
    /// had no uri condition), which `rewrite.uri` replaces as Envoy's `prefix_rewrite` does.
    pub fn path(&self, req: &Request, matched_prefix: Option<&str>) -> Option<String> {
        let path = req.path_only();
        let query = req.query().map(|q| format!("?{q}")).unwrap_or_default();
        if let Some((re, with)) = &self.regex {
            return Some(format!("{}{query}", re.replace_all(path, with.as_str())));
        }
        let uri = self.uri.as_deref()?;
        let prefix = matched_prefix.unwrap_or("/");
        let rest = path
            .get(prefix.len()..)
            .filter(|_| path.starts_with(prefix));
        Some(match rest {
            Some(rest) => format!("{uri}{rest}{query}"),
            None => format!("{uri}{query}"),
        })
    }
}

/// RE2's `\1` in a substitution → the regex crate's `${1}`.
fn re2_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// `redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    spec: HttpRedirect,
    pub status: StatusCode,
}

impl Redirect {
    pub(crate) fn compile(r: &HttpRedirect) -> Result<Redirect, String> {
        let code = r.redirect_code.unwrap_or(301);
        let status = u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(StatusCode::is_redirection)
            .ok_or_else(|| format!("redirectCode {code} is not a 3xx status"))?;
        Ok(Redirect {
            spec: r.clone(),
            status,
        })
    }

    /// The `Location` for `req`: the request's own scheme, host, port and path, each
    /// replaced when the redirect says so.
    pub fn location(&self, req: &Request) -> String {
        let r = &self.spec;
        let scheme = r.scheme.as_deref().unwrap_or(req.scheme);
        let host = r
            .authority
            .as_deref()
            .map_or_else(|| strip_port(req.authority), strip_port);
        let request_port = req
            .authority
            .strip_prefix(strip_port(req.authority))
            .and_then(|p| p.strip_prefix(':'));
        let port: Option<String> = match (r.port, r.derive_port) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(RedirectPortSelection::FromRequestPort)) => Some(req.port.to_string()),
            (None, Some(RedirectPortSelection::FromProtocolDefault)) => None,
            // Only the request's explicit port survives, and not across a scheme change.
            (None, None) if r.scheme.is_none() && r.authority.is_none() => {
                request_port.map(str::to_string)
            }
            (None, None) => r
                .authority
                .as_deref()
                .and_then(|a| a.strip_prefix(strip_port(a)))
                .and_then(|p| p.strip_prefix(':'))
                .map(str::to_string),
        };
        let path = match &r.uri {
            Some(uri) => uri.clone(),
            None => req.path.to_string(),
        };
        match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}"),
            None => format!("{scheme}://{host}{path}"),
        }
    }
}

/// `directResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl DirectResponse {
    pub(crate) fn compile(d: &istio::HttpDirectResponse) -> Result<DirectResponse, String> {
        let status = u16::try_from(d.status)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| format!("status {} is not an HTTP status", d.status))?;
        let body = match &d.body {
            None => Vec::new(),
            Some(HttpBody::String(s)) => s.clone().into_bytes(),
            Some(HttpBody::Bytes(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("body.bytes is not base64: {e}"))?,
        };
        Ok(DirectResponse { status, body })
    }
}

/// `headers.request` or `headers.response`: names and values checked once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub(crate) fn compile(ops: Option<&HeaderOperations>) -> Result<HeaderOps, String> {
        let Some(ops) = ops else {
            return Ok(HeaderOps::default());
        };
        let pair = |(k, v): (&String, &String)| {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{k:?} is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("the value of {k:?} is not a header value"))?;
            Ok::<_, String>((name, value))
        };
        Ok(HeaderOps {
            set: ops.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: ops.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: ops
                .remove
                .iter()
                .map(|k| {
                    HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("{k:?} is not a header name"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Istio's order: remove, then set (replacing), then add (appending).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Request and response header operations of a rule or a destination.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

impl HeaderRules {
    pub(crate) fn compile(h: Option<&istio::Headers>) -> Result<HeaderRules, String> {
        Ok(HeaderRules {
            request: HeaderOps::compile(h.and_then(|h| h.request.as_ref()))?,
            response: HeaderOps::compile(h.and_then(|h| h.response.as_ref()))?,
        })
    }
}

/// One mirror target: a copy of the request goes there (fire and forget) with `percent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    pub percent: f64,
}

/// The string-match of a CORS origin, compiled.
pub(crate) fn origin_matchers(
    c: &istio::CorsPolicy,
    place: &Place,
) -> Result<Vec<Matcher>, crate::L7ConfigError> {
    let mut out: Vec<Matcher> = c.allow_origin.iter().cloned().map(Matcher::Exact).collect();
    for (i, m) in c.allow_origins.iter().enumerate() {
        let place = Place {
            virtual_service: place.virtual_service,
            field: format!("{}.allowOrigins[{i}].regex", place.field),
        };
        out.push(match m {
            istio::StringMatch::Regex(r) => Matcher::Regex(full_match_regex(r, &place)?),
            other => Matcher::compile(other, &place)?,
        });
    }
    Ok(out)
}
