//! Istio's (Envoy's) answers for requests the proxy ends itself, and the response flags its
//! access logs and `istio_requests_total{response_flags}` carry.

use std::fmt;

/// Envoy response flags the engine or the proxy acting on its decisions produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseFlag {
    /// `NR`: no route matched (404).
    NoRoute,
    /// `UH`: no healthy upstream endpoint (503).
    NoHealthyUpstream,
    /// `UF`: connecting to the upstream failed (503).
    UpstreamConnectionFailure,
    /// `URX`: retries or connect attempts were exhausted.
    UpstreamRetryLimitExceeded,
    /// `UT`: the upstream did not answer in time (504).
    UpstreamRequestTimeout,
    /// `UO`: a connection pool or circuit breaker limit was reached (503).
    UpstreamOverflow,
    /// `UC`: the upstream connection ended (503).
    UpstreamConnectionTermination,
    /// `FI`: a fault abort answered.
    FaultInjected,
    /// `DI`: a fault delay held the request.
    DelayInjected,
    /// `UAEX`/`RBAC` in Envoy; Istio's access log says `-` with `response_code_details`
    /// `rbac_access_denied_matched_policy[...]`. Kept as its own flag for the metrics.
    RbacDenied,
}

impl ResponseFlag {
    /// The short form of Envoy's access log (`%RESPONSE_FLAGS%`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::RbacDenied => "RBAC",
        }
    }

    /// The status the proxy answers with when this flag ends the request itself (a fault
    /// abort carries its own status; a delay is not an answer).
    pub fn status(self) -> Option<http::StatusCode> {
        use http::StatusCode as S;
        Some(match self {
            ResponseFlag::NoRoute => S::NOT_FOUND,
            ResponseFlag::NoHealthyUpstream
            | ResponseFlag::UpstreamConnectionFailure
            | ResponseFlag::UpstreamRetryLimitExceeded
            | ResponseFlag::UpstreamOverflow
            | ResponseFlag::UpstreamConnectionTermination => S::SERVICE_UNAVAILABLE,
            ResponseFlag::UpstreamRequestTimeout => S::GATEWAY_TIMEOUT,
            ResponseFlag::RbacDenied => S::FORBIDDEN,
            ResponseFlag::FaultInjected | ResponseFlag::DelayInjected => return None,
        })
    }

    /// Envoy's body for a locally generated answer.
    pub fn body(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "",
            ResponseFlag::NoHealthyUpstream => "no healthy upstream",
            ResponseFlag::UpstreamConnectionFailure
            | ResponseFlag::UpstreamRetryLimitExceeded
            | ResponseFlag::UpstreamConnectionTermination => {
                "upstream connect error or disconnect/reset before headers"
            }
            ResponseFlag::UpstreamRequestTimeout => "upstream request timeout",
            ResponseFlag::UpstreamOverflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            ResponseFlag::RbacDenied => RBAC_DENIED_BODY,
            ResponseFlag::FaultInjected => "fault filter abort",
            ResponseFlag::DelayInjected => "",
        }
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Istio's body for a request an AuthorizationPolicy denied (status 403).
pub const RBAC_DENIED_BODY: &str = "RBAC: access denied";
