//! `retries`: attempts, per-try timeout and `retryOn` as a typed set, with the decision
//! "may this outcome be retried" as a plain function.

use std::time::Duration;

use mesh_config::istio::HttpRetry;

/// One `retryOn` condition (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RetryCondition {
    /// Any 5xx answer, connect failure, reset or per-try timeout.
    Http5xx = 1 << 0,
    /// 502, 503, 504, connect failure, per-try timeout.
    GatewayError = 1 << 1,
    ConnectFailure = 1 << 2,
    /// The upstream reset or disconnected.
    Reset = 1 << 3,
    /// 409.
    Retriable4xx = 1 << 4,
    /// The codes listed in `retryOn` (e.g. `503`).
    RetriableStatusCodes = 1 << 5,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream = 1 << 6,
    /// A reset before any response byte.
    ResetBeforeRequest = 1 << 7,
    /// gRPC statuses (from `grpc-status`).
    GrpcCancelled = 1 << 8,
    GrpcDeadlineExceeded = 1 << 9,
    GrpcInternal = 1 << 10,
    GrpcResourceExhausted = 1 << 11,
    GrpcUnavailable = 1 << 12,
    /// 429 from Envoy's rate limiter; kept so Istio's configs parse.
    EnvoyRateLimited = 1 << 13,
}

impl RetryCondition {
    fn parse(token: &str) -> Option<RetryCondition> {
        use RetryCondition as C;
        Some(match token {
            "5xx" => C::Http5xx,
            "gateway-error" => C::GatewayError,
            "connect-failure" => C::ConnectFailure,
            "reset" => C::Reset,
            "reset-before-request" => C::ResetBeforeRequest,
            "retriable-4xx" => C::Retriable4xx,
            "retriable-status-codes" => C::RetriableStatusCodes,
            "refused-stream" => C::RefusedStream,
            "cancelled" => C::GrpcCancelled,
            "deadline-exceeded" => C::GrpcDeadlineExceeded,
            "internal" => C::GrpcInternal,
            "resource-exhausted" => C::GrpcResourceExhausted,
            "unavailable" => C::GrpcUnavailable,
            "envoy-ratelimited" => C::EnvoyRateLimited,
            _ => return None,
        })
    }
}

/// The set of `retryOn` conditions and the listed status codes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryOn {
    bits: u32,
    status_codes: Vec<u16>,
}

impl RetryOn {
    /// Parses `5xx,connect-failure,503`; a number is a retriable status code (as Istio
    /// accepts). Unknown names are an error naming them.
    pub fn parse(s: &str) -> Result<RetryOn, String> {
        let mut out = RetryOn::default();
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Ok(code) = token.parse::<u16>() {
                if !(100..=599).contains(&code) {
                    return Err(format!("status code {code} is not in 100..599"));
                }
                out.status_codes.push(code);
                out.insert(RetryCondition::RetriableStatusCodes);
            } else {
                let c = RetryCondition::parse(token)
                    .ok_or_else(|| format!("unknown retryOn condition {token:?}"))?;
                out.insert(c);
            }
        }
        Ok(out)
    }

    pub fn insert(&mut self, c: RetryCondition) {
        self.bits |= c as u32;
    }

    pub fn contains(&self, c: RetryCondition) -> bool {
        self.bits & (c as u32) != 0
    }

    pub fn status_codes(&self) -> &[u16] {
        &self.status_codes
    }
}

/// What one upstream attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response: its status and, for gRPC, the `grpc-status` code.
    Response {
        status: u16,
        grpc_status: Option<u32>,
    },
    ConnectFailure,
    /// Reset or disconnect before the response.
    Reset,
    RefusedStream,
    /// The per-try timeout fired.
    PerTryTimeout,
}

/// `retries` of a route, with Istio's defaults when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Istio's `attempts`).
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    /// `retryRemoteLocalities`; no localities here yet, kept for the caller.
    pub retry_ignore_previous_hosts: bool,
}

impl RetryPolicy {
    /// Istio's default for an HTTP route without `retries`: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` (503),
    /// on other hosts than the previous ones.
    pub fn istio_default() -> RetryPolicy {
        let mut retry_on =
            RetryOn::parse("connect-failure,refused-stream,unavailable,cancelled,503")
                .unwrap_or_default();
        retry_on.insert(RetryCondition::RetriableStatusCodes);
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on,
            retry_ignore_previous_hosts: true,
        }
    }

    pub(crate) fn from_istio(r: Option<&HttpRetry>) -> Result<RetryPolicy, String> {
        let Some(r) = r else {
            return Ok(RetryPolicy::istio_default());
        };
        let attempts = u32::try_from(r.attempts.unwrap_or(0))
            .map_err(|_| "attempts must not be negative".to_string())?;
        let retry_on = match r.retry_on.as_deref() {
            Some(s) => RetryOn::parse(s)?,
            // Istio's default conditions when `retryOn` is left out.
            None => RetryPolicy::istio_default().retry_on,
        };
        Ok(RetryPolicy {
            attempts,
            per_try_timeout: r.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
            retry_on,
            retry_ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
        })
    }

    /// Whether attempt number `attempt` (1 = the first) that ended with `outcome` may be
    /// followed by another.
    pub fn should_retry(&self, attempt: u32, outcome: AttemptOutcome) -> bool {
        attempt <= self.attempts && self.retriable(outcome)
    }

    /// Whether `outcome` is one of the `retryOn` conditions.
    pub fn retriable(&self, outcome: AttemptOutcome) -> bool {
        use RetryCondition as C;
        let on = |c| self.retry_on.contains(c);
        match outcome {
            AttemptOutcome::ConnectFailure => {
                on(C::ConnectFailure) || on(C::Http5xx) || on(C::GatewayError) || on(C::Reset)
            }
            AttemptOutcome::Reset => on(C::Reset) || on(C::Http5xx) || on(C::ResetBeforeRequest),
            AttemptOutcome::RefusedStream => on(C::RefusedStream) || on(C::Http5xx),
            AttemptOutcome::PerTryTimeout => on(C::Http5xx) || on(C::GatewayError),
            AttemptOutcome::Response {
                status,
                grpc_status,
            } => {
                let grpc = grpc_status.is_some_and(|g| match g {
                    1 => on(C::GrpcCancelled),
                    4 => on(C::GrpcDeadlineExceeded),
                    8 => on(C::GrpcResourceExhausted),
                    13 => on(C::GrpcInternal),
                    14 => on(C::GrpcUnavailable),
                    _ => false,
                });
                grpc || (on(C::Http5xx) && (500..=599).contains(&status))
                    || (on(C::GatewayError) && matches!(status, 502..=504))
                    || (on(C::Retriable4xx) && status == 409)
                    || (on(C::EnvoyRateLimited) && status == 429)
                    || (on(C::RetriableStatusCodes) && self.retry_on.status_codes.contains(&status))
            }
        }
    }
}
