//! Responses the proxy makes itself, shaped as Envoy makes them (Istio users and their
//! tools read these bodies and headers): `mesh_l7::LocalReply` into an HTTP response, and
//! the bodies the proxy builds.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use mesh_l7::LocalReply;

use super::Body;

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The response for a local reply. gRPC aborts answer 200 with `grpc-status` in the
/// headers (a trailers-only response), as Envoy's fault filter does.
pub fn local(reply: &LocalReply, grpc_request: bool) -> Response<Body> {
    let mut response = if let Some(code) = reply.grpc_status {
        let mut r = Response::new(empty());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(code));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("fault filter abort"),
        );
        r
    } else if grpc_request && reply.status != StatusCode::OK && reply.flag.is_some() {
        // A gRPC client reads only `grpc-status`: map the HTTP answer as Envoy does.
        let mut r = Response::new(empty());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(grpc_status_for(reply.status)),
        );
        if let Ok(v) = HeaderValue::from_bytes(&reply.body) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(full(reply.body.clone()));
        *r.status_mut() = reply.status;
        if !reply.body.is_empty() {
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        r
    };
    for (name, value) in &reply.headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    response
}

/// Envoy's HTTP → gRPC status mapping for locally answered gRPC requests.
fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// A fresh `x-request-id`: a random UUID (version 4), as Envoy generates.
pub fn request_id(rng: &mut fastrand::Rng) -> String {
    let hi = rng.u64(..);
    let lo = rng.u64(..);
    // Version 4 and the RFC 4122 variant bits.
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let mut rng = fastrand::Rng::with_seed(7);
        let id = request_id(&mut rng);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, request_id(&mut rng));
    }

    #[test]
    fn a_no_route_reply_is_an_empty_404_and_no_healthy_upstream_says_so() {
        let nr = local(&LocalReply::for_flag(mesh_l7::ResponseFlag::NoRoute), false);
        assert_eq!(nr.status(), StatusCode::NOT_FOUND);
        let uh = local(
            &LocalReply::for_flag(mesh_l7::ResponseFlag::NoHealthyUpstream),
            false,
        );
        assert_eq!(uh.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(uh.headers()[header::CONTENT_TYPE], "text/plain");
    }
}
