//! `corsPolicy`: the answer to a preflight and the headers of an actual cross-origin
//! response, decided from the request's `Origin` and the policy.

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use mesh_config::istio::{CorsPolicy, UnmatchedPreflights};

use crate::matcher::{Matcher, Place};
use crate::request::Request;

#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    origins: Vec<Matcher>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<Duration>,
    allow_credentials: bool,
    forward_unmatched_preflights: bool,
}

/// What to do with a request under a CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsDecision {
    /// Not a CORS request, or a preflight to forward: go on, nothing to add.
    Continue,
    /// Answer this preflight here with these headers (status 200).
    Preflight {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Forward, then add these headers to the response.
    AddResponseHeaders(Vec<(HeaderName, HeaderValue)>),
}

impl Cors {
    pub(crate) fn compile(c: &CorsPolicy, place: &Place) -> Result<Cors, crate::L7ConfigError> {
        let join = |v: &[String]| {
            (!v.is_empty())
                .then(|| HeaderValue::from_str(&v.join(",")))
                .transpose()
                .map_err(|_| crate::L7ConfigError::Invalid {
                    virtual_service: place.virtual_service.to_string(),
                    field: place.field.clone(),
                    message: "a CORS list is not a valid header value".to_string(),
                })
        };
        Ok(Cors {
            origins: crate::action::origin_matchers(c, place)?,
            allow_methods: join(&c.allow_methods)?,
            allow_headers: join(&c.allow_headers)?,
            expose_headers: join(&c.expose_headers)?,
            max_age: c.max_age.map(|d| d.0),
            allow_credentials: c.allow_credentials.unwrap_or(false),
            forward_unmatched_preflights: c.unmatched_preflights
                != Some(UnmatchedPreflights::Ignore),
        })
    }

    fn allowed_origin<'r>(&self, req: &Request<'r>) -> Option<&'r str> {
        let origin = req.header(header::ORIGIN.as_str())?;
        self.origins
            .iter()
            .any(|m| m.matches(origin))
            .then_some(origin)
    }

    pub fn decide(&self, req: &Request) -> CorsDecision {
        let is_preflight = req.method == Method::OPTIONS.as_str()
            && req.header(header::ORIGIN.as_str()).is_some()
            && req
                .header(header::ACCESS_CONTROL_REQUEST_METHOD.as_str())
                .is_some();
        let origin = self.allowed_origin(req);
        let mut headers = Vec::new();
        if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
            headers.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
            if self.allow_credentials {
                headers.push((
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                ));
            }
        }
        if !is_preflight {
            if headers.is_empty() {
                return CorsDecision::Continue;
            }
            if let Some(v) = &self.expose_headers {
                headers.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone()));
            }
            return CorsDecision::AddResponseHeaders(headers);
        }
        if headers.is_empty() {
            // An origin the policy does not allow: forwarded by default, or answered
            // without CORS headers (the browser then refuses) with `IGNORE`.
            return if self.forward_unmatched_preflights {
                CorsDecision::Continue
            } else {
                CorsDecision::Preflight {
                    status: StatusCode::OK,
                    headers,
                }
            };
        }
        if let Some(v) = &self.allow_methods {
            headers.push((header::ACCESS_CONTROL_ALLOW_METHODS, v.clone()));
        }
        if let Some(v) = &self.allow_headers {
            headers.push((header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone()));
        }
        if let Some(age) = self.max_age {
            headers.push((
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(age.as_secs()),
            ));
        }
        CorsDecision::Preflight {
            status: StatusCode::OK,
            headers,
        }
    }
}
