//! L7 authorization: the configuration crate's AuthorizationPolicy evaluation with the
//! request's HTTP attributes, and Istio's 403 for a denial.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};
use mesh_config::authz::{
    self, Connection, Decision, DenyReason, HttpRequest, PolicyScope, RequestHeaders,
};

use crate::flags::{RBAC_DENIED_BODY, ResponseFlag};
use crate::request::Request;
use crate::route::LocalReply;
use crate::table::RouteTable;

struct Headers<'a>(&'a HeaderMap);

impl RequestHeaders for Headers<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.0.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            // Several values are seen joined, as Envoy's RBAC filter sees them.
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(Cow::Owned(joined))
            }
        }
    }
}

impl RouteTable {
    /// AuthorizationPolicy for `req` arriving at `destination` (the address and port the
    /// client asked for). `Err` names the deciding policy; its [`Denied::reply`] is the 403.
    pub fn authorize(
        &self,
        scope: &PolicyScope,
        req: &Request,
        destination: (IpAddr, u16),
    ) -> Result<Allowed, Denied> {
        let unknown = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let source_ip = req.source.ip.unwrap_or(unknown);
        let conn = Connection {
            source_principal: req.source.principal,
            source_ip,
            remote_ip: source_ip,
            destination_ip: destination.0,
            destination_port: destination.1,
        };
        let headers = Headers(req.headers);
        let http = HttpRequest {
            method: req.method,
            path: req.path_only(),
            host: req.authority,
            headers: &headers,
        };
        let decision = authz::authorize_request(
            &self.snapshot,
            &self.options.root_namespace,
            scope,
            &conn,
            &http,
        );
        match decision {
            Decision::Allow { audit } => Ok(Allowed { audit }),
            Decision::Deny { policy, reason } => Err(Denied { policy, reason }),
        }
    }
}

/// The request may proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// `namespace/name` of the AUDIT policy that matched, if any.
    pub audit: Option<String>,
}

/// The request is refused, by which policy and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub policy: String,
    pub reason: DenyReason,
}

impl Denied {
    /// Istio's answer: 403 `RBAC: access denied`.
    pub fn reply(&self) -> LocalReply {
        LocalReply {
            status: StatusCode::FORBIDDEN,
            flag: Some(ResponseFlag::RbacDenied),
            headers: vec![(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            body: RBAC_DENIED_BODY.as_bytes().to_vec(),
            grpc_status: None,
            delay: None,
            virtual_service: None,
        }
    }
}
