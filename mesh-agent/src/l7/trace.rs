//! Trace context at the waypoint and the gateway: every request leaves with a W3C
//! `traceparent` and B3 headers naming this proxy's span, so the applications (which
//! copy the headers onto their own calls, as Bookinfo's do) and the next proxy continue one
//! trace. A request that carries a context keeps its trace id and sampling decision; one
//! that carries none starts a trace, sampled at the mesh config's percentage
//! (`defaultConfig.tracing.sampling`, Istio's 1% when unset). Both formats are written, from whichever the client
//! sent (`traceparent` first), as Envoy does with both propagators on.

use http::HeaderMap;
use http::header::HeaderValue;

/// One trace context: 128-bit trace id, 64-bit span ids, sampled or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// This proxy's span.
    pub span_id: u64,
    /// The span the request came from (none for a trace started here).
    pub parent_id: Option<u64>,
    pub sampled: bool,
}

/// Reads the incoming context (if any), makes this proxy's span its child, and writes
/// both formats onto `headers`. A trace started here is sampled with probability
/// `sampling_percent` / 100; the decision travels in the headers, so every later hop keeps it.
pub fn continue_or_start(
    headers: &mut HeaderMap,
    rng: &mut fastrand::Rng,
    sampling_percent: f64,
) -> TraceContext {
    let span_id = nonzero_u64(rng);
    let context = match incoming(headers) {
        Some((trace_id, parent, sampled)) => TraceContext {
            trace_id,
            span_id,
            parent_id: Some(parent),
            sampled,
        },
        None => TraceContext {
            trace_id: loop {
                let id = rng.u128(..);
                if id != 0 {
                    break id;
                }
            },
            span_id,
            parent_id: None,
            sampled: rng.f64() * 100.0 < sampling_percent,
        },
    };
    write(headers, &context);
    context
}

/// The client span of the call to the upstream, a child of this proxy's server span
/// `server`: its ids go onto the upstream request's headers, so the next hop's spans hang
/// under it (Envoy's server/client span pair).
pub fn client_span(
    headers: &mut HeaderMap,
    server: &TraceContext,
    rng: &mut fastrand::Rng,
) -> TraceContext {
    let client = TraceContext {
        trace_id: server.trace_id,
        span_id: nonzero_u64(rng),
        parent_id: Some(server.span_id),
        sampled: server.sampled,
    };
    write(headers, &client);
    client
}

fn nonzero_u64(rng: &mut fastrand::Rng) -> u64 {
    rng.u64(1..)
}

/// (trace id, parent span id, sampled) from `traceparent`, else from B3 (multi-header or
/// single `b3`). Malformed values are ignored, as the W3C spec asks.
fn incoming(headers: &HeaderMap) -> Option<(u128, u64, bool)> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(parsed) = text("traceparent").and_then(parse_traceparent) {
        return Some(parsed);
    }
    if let (Some(trace), Some(span)) = (text("x-b3-traceid"), text("x-b3-spanid")) {
        let sampled = text("x-b3-sampled").is_none_or(|s| s == "1" || s == "true");
        return Some((parse_b3_trace(trace)?, parse_hex64(span)?, sampled));
    }
    let single = text("b3")?;
    let mut parts = single.split('-');
    let trace = parse_b3_trace(parts.next()?)?;
    let span = parse_hex64(parts.next()?)?;
    let sampled = parts.next().is_none_or(|s| s == "1" || s == "d");
    Some((trace, span, sampled))
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; all-zero ids are invalid.
fn parse_traceparent(value: &str) -> Option<(u128, u64, bool)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || parent.len() != 16 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let parent = parse_hex64(parent)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace, parent, flags & 1 == 1))
}

/// B3 trace ids are 64 or 128 bits.
fn parse_b3_trace(value: &str) -> Option<u128> {
    if value.len() != 16 && value.len() != 32 {
        return None;
    }
    u128::from_str_radix(value, 16).ok().filter(|t| *t != 0)
}

fn parse_hex64(value: &str) -> Option<u64> {
    if value.len() != 16 {
        return None;
    }
    u64::from_str_radix(value, 16).ok().filter(|s| *s != 0)
}

fn write(headers: &mut HeaderMap, c: &TraceContext) {
    let sampled = u8::from(c.sampled);
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(
        "traceparent",
        format!("00-{:032x}-{:016x}-{sampled:02x}", c.trace_id, c.span_id),
    );
    set("x-b3-traceid", format!("{:032x}", c.trace_id));
    set("x-b3-spanid", format!("{:016x}", c.span_id));
    set("x-b3-sampled", sampled.to_string());
    match c.parent_id {
        Some(parent) => set("x-b3-parentspanid", format!("{parent:016x}")),
        None => {
            headers.remove("x-b3-parentspanid");
        }
    }
    // The single-header form would now disagree with the multi-header one.
    headers.remove("b3");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> fastrand::Rng {
        fastrand::Rng::with_seed(7)
    }

    #[test]
    fn the_upstream_call_is_a_child_span_of_the_server_span() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let mut rng = rng();
        let server = continue_or_start(&mut h, &mut rng, 100.0);
        let client = client_span(&mut h, &server, &mut rng);
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent_id, Some(server.span_id));
        assert_ne!(client.span_id, server.span_id);
        let sent = h["traceparent"].to_str().unwrap();
        assert_eq!(
            sent,
            format!("00-{:032x}-{:016x}-01", server.trace_id, client.span_id)
        );
        assert_eq!(
            h["x-b3-parentspanid"].to_str().unwrap(),
            format!("{:016x}", server.span_id)
        );
    }

    #[test]
    fn a_request_without_context_starts_a_sampled_trace_in_both_formats() {
        let mut h = HeaderMap::new();
        let c = continue_or_start(&mut h, &mut rng(), 100.0);
        assert!(c.parent_id.is_none() && c.sampled);
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(tp, format!("00-{:032x}-{:016x}-01", c.trace_id, c.span_id));
        assert_eq!(h["x-b3-traceid"], format!("{:032x}", c.trace_id).as_str());
        assert_eq!(h["x-b3-spanid"], format!("{:016x}", c.span_id).as_str());
        assert!(!h.contains_key("x-b3-parentspanid"));
    }

    #[test]
    fn new_traces_are_sampled_at_the_configured_percentage_and_say_so_downstream() {
        let mut rng = rng();
        let sampled = (0..10_000)
            .filter(|_| continue_or_start(&mut HeaderMap::new(), &mut rng, 10.0).sampled)
            .count();
        // 10% of 10,000: 1,000 with a standard deviation of 30.
        assert!((850..1150).contains(&sampled), "{sampled} of 10000 at 10%");
        let mut h = HeaderMap::new();
        let c = continue_or_start(&mut h, &mut rng, 0.0);
        assert!(!c.sampled);
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
        assert_eq!(h["x-b3-sampled"], "0");
    }

    #[test]
    fn a_traceparent_is_continued_with_this_span_as_the_child() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let c = continue_or_start(&mut h, &mut rng(), 100.0);
        assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(c.parent_id, Some(0x00f067aa0ba902b7));
        assert!(!c.sampled, "the caller's decision is kept");
        assert_ne!(c.span_id, 0x00f067aa0ba902b7);
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
        assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
    }

    #[test]
    fn b3_multi_and_single_headers_are_continued() {
        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", HeaderValue::from_static("80f198ee56343ba8"));
        h.insert("x-b3-spanid", HeaderValue::from_static("e457b5a2e4d86bd1"));
        h.insert("x-b3-sampled", HeaderValue::from_static("1"));
        let c = continue_or_start(&mut h, &mut rng(), 100.0);
        assert_eq!(c.trace_id, 0x80f198ee56343ba8);
        assert_eq!(c.parent_id, Some(0xe457b5a2e4d86bd1));
        assert!(
            h["traceparent"]
                .to_str()
                .unwrap()
                .starts_with("00-000000000000000080f198ee56343ba8-")
        );

        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        let c = continue_or_start(&mut h, &mut rng(), 100.0);
        assert_eq!(c.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert!(!h.contains_key("b3"));
    }

    #[test]
    fn malformed_contexts_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_static(bad));
            let c = continue_or_start(&mut h, &mut rng(), 100.0);
            assert!(c.parent_id.is_none(), "{bad} was accepted");
        }
    }
}
