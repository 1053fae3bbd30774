//! How the Bookinfo apps call each other: `GET http://<service>:<port><path>` by name
//! (resolved by the system resolver, which in an enrolled pod is answered by the node
//! agent's DNS proxy), a new connection per call, the trace and user headers of the
//! incoming request carried over, one deadline for the whole call.
//!
//! A new connection per call, as Bookinfo's apps make (Python `requests` without a
//! session): the node agent balances connections, so a pooled connection would pin every
//! request to one endpoint and reviews v1/v2/v3 would not alternate.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Request, StatusCode, header::HeaderName};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Headers Bookinfo's apps copy from the request they serve onto the calls they make
/// (the user for routing, the request id and trace context for tracing).
const FORWARDED: [&str; 7] = [
    "end-user",
    "user-agent",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-ot-span-context",
];
/// B3's multi-header form: every `x-b3-*` header.
const FORWARDED_PREFIX: &str = "x-b3-";

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("calling {url}: connect: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("calling {url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("calling {url}: {source}")]
    Request { url: String, source: http::Error },
    #[error("calling {url}: no answer within {} ms", timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
}

/// The headers of `incoming` that go on outbound calls.
pub fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    incoming
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            FORWARDED.contains(&name) || name.starts_with(FORWARDED_PREFIX)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, when the call succeeded and the body is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        if !self.status.is_success() {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
}

/// `GET http://{host}:{port}{path}` with `headers`, all of it within `timeout`.
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<Answer, CallError> {
    let url = format!("http://{host}:{port}{path}");
    match tokio::time::timeout(timeout, call(host, port, path, headers, &url)).await {
        Ok(answer) => answer,
        Err(_) => Err(CallError::Timeout { url, timeout }),
    }
}

async fn call(
    host: &str,
    port: u16,
    path: &str,
    headers: &HeaderMap,
    url: &str,
) -> Result<Answer, CallError> {
    // `(host, port)` goes through getaddrinfo: the pod's resolv.conf, as any app's would.
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|source| CallError::Connect {
            url: url.to_string(),
            source,
        })?;
    let http_err = |source| CallError::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    tokio::spawn(connection);
    let mut request = Request::get(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|source| CallError::Request {
            url: url.to_string(),
            source,
        })?;
    for (name, value) in headers {
        if name != hyper::header::HOST {
            request
                .headers_mut()
                .insert(HeaderName::clone(name), value.clone());
        }
    }
    let response = sender.send_request(request).await.map_err(http_err)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http_err)?
        .to_bytes();
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_trace_headers_are_forwarded_and_nothing_else() {
        let mut incoming = HeaderMap::new();
        for (k, v) in [
            ("end-user", "jason"),
            ("x-request-id", "abc"),
            ("traceparent", "00-1-2-01"),
            ("tracestate", "k=v"),
            ("b3", "1-2-1"),
            ("x-b3-traceid", "1"),
            ("x-b3-sampled", "1"),
            ("cookie", "user=jason"),
            ("host", "productpage:9080"),
            ("content-length", "3"),
        ] {
            incoming.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        let out = forwarded_headers(&incoming);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "b3",
                "end-user",
                "traceparent",
                "tracestate",
                "x-b3-sampled",
                "x-b3-traceid",
                "x-request-id"
            ]
        );
    }
}
