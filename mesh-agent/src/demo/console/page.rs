//! The console's HTML: the graph page (an SVG laid out by `layout-rs`, a Rust port of
//! Graphviz's layered layout, so no JavaScript library and no host binary are needed),
//! a workload's page, the trace list and one trace's timeline. maud escapes every value
//! it writes; the SVG's attribute values go through the same escaper.
use std::collections::BTreeSet;
use std::fmt::Write as _;

use layout::{
    backends::svg::SVGWriter,
    core::{base::Orientation, color::Color, style::StyleAttr},
    std_shapes::{
        render::get_shape_size,
        shapes::{Arrow, Element, ShapeKind},
    },
    topo::layout::VisualGraph,
};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::{
    applied::{Applied, Workload},
    graph::{Edge, Graph, NodeId},
};

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
    nav a{margin-right:1em}table{border-collapse:collapse;margin:.5em 0}\
    td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;font-size:90%}\
    .graph svg{max-width:100%;height:auto}.err{color:#b00}.bar{position:relative;height:1.1em;background:#f3f3f3}\
    .bar span{position:absolute;top:0;height:100%;background:#4a90d9;min-width:2px}\
    code{font-size:90%}";

fn frame(title: &str, refresh: bool, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="5"; }
                title { (title) " — mesh console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "Graph" } a href="/traces" { "Traces" } }
                h1 { (title) }
                (body)
            }
        }
    }
    .into_string()
}

fn escape(text: &str) -> String {
    let mut out = String::new();
    let _ = maud::Escaper::new(&mut out).write_str(text);
    out
}

fn workload_href(namespace: &str, name: &str) -> String {
    format!("/workloads/{namespace}/{name}")
}

fn node_link(node: &NodeId) -> Markup {
    match node {
        NodeId::Workload { namespace, name } => {
            html! { a href=(workload_href(namespace, name)) { (name) } }
        }
        other => html! { (other.label()) },
    }
}

fn rate(edge: &Edge) -> String {
    format!("{:.2}/s", edge.requests_per_second)
}

/// Short, so the picture stays readable: the rate, errors when there are any, the
/// padlock; the table under the graph has the rest.
fn edge_label(edge: &Edge) -> String {
    let mut label = format!("{:.1}/s", edge.requests_per_second);
    if edge.error_rate > 0.0 {
        let _ = write!(label, " {:.0}% 5xx", edge.error_rate * 100.0);
    }
    if edge.mutual_tls {
        label.push_str(" \u{1F512}");
    }
    label
}

fn edge_colour(edge: &Edge) -> Color {
    let name = if edge.error_rate > 0.1 {
        "#d0021b"
    } else if edge.error_rate > 0.0 {
        "#f5a623"
    } else if edge.requests_per_second > 0.0 {
        "#2e8540"
    } else {
        "#9b9b9b"
    };
    Color::fast(name)
}

/// The graph as SVG; `None` when there is nothing to draw or the layout gave up.
pub fn graph_svg(graph: &Graph) -> Option<String> {
    if graph.nodes.is_empty() {
        return None;
    }
    // layout-rs asserts on a second edge between the same two nodes: one arrow per pair,
    // carrying every protocol's label.
    let mut pairs: Vec<((&NodeId, &NodeId), Vec<&Edge>)> = Vec::new();
    for edge in &graph.edges {
        let pair = (&edge.key.from, &edge.key.to);
        match pairs.iter_mut().find(|(p, _)| *p == pair) {
            Some((_, edges)) => edges.push(edge),
            None => pairs.push((pair, vec![edge])),
        }
    }
    let draw = || {
        let mut visual = VisualGraph::new(Orientation::LeftToRight);
        let mut handles = Vec::new();
        for node in &graph.nodes {
            let (shape, fill, rounded) = match node {
                NodeId::Workload { .. } => (ShapeKind::new_box(&node.label()), "#e8f1fb", 0),
                NodeId::Service { .. } => (ShapeKind::new_box(&node.label()), "#fdf3e1", 18),
                NodeId::Unknown => (ShapeKind::new_box("unknown"), "#eeeeee", 0),
            };
            let look = StyleAttr::new(
                Color::fast("#4a4a4a"),
                2,
                Some(Color::fast(fill)),
                rounded,
                14,
            );
            let size = get_shape_size(Orientation::LeftToRight, &shape, 14, false);
            let properties = format!(
                "class=\"node\" data-node=\"{}\" data-kind=\"{}\"",
                escape(&node.key()),
                node.kind()
            );
            let element = Element::create_with_properties(
                shape,
                look,
                Orientation::LeftToRight,
                size,
                properties,
            );
            handles.push((node, visual.add_node(element)));
        }
        let handle = |node: &NodeId| handles.iter().find(|(n, _)| *n == node).map(|(_, h)| *h);
        for ((from, to), edges) in &pairs {
            let (Some(a), Some(b)) = (handle(from), handle(to)) else {
                continue;
            };
            let label: Vec<String> = edges.iter().map(|e| edge_label(e)).collect();
            let properties = format!(
                "class=\"edge\" data-from=\"{}\" data-to=\"{}\" data-protocols=\"{}\"",
                escape(&from.key()),
                escape(&to.key()),
                edges
                    .iter()
                    .map(|e| e.key.protocol.name())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut arrow = Arrow::simple_with_properties(&label.join(" | "), properties);
            arrow.look = StyleAttr::new(edge_colour(edges[0]), 2, None, 0, 12);
            if a == b {
                continue;
            }
            visual.add_edge(arrow, a, b);
        }
        let mut svg = SVGWriter::new();
        visual.do_it(false, false, false, &mut svg);
        svg.finalize()
    };
    // The layout is a library's: a panic in it costs the picture, not the console.
    std::panic::catch_unwind(draw).ok()
}

fn edges_table(edges: &[&Edge]) -> Markup {
    html! {
        table {
            tr { th { "from" } th { "to" } th { "protocol" } th { "requests" } th { "rate" }
                 th { "errors (5xx)" } th { "p99" } th { "mTLS" } }
            @for edge in edges {
                tr class="edge-row" data-from=(edge.key.from.key()) data-to=(edge.key.to.key()) {
                    td { (node_link(&edge.key.from)) }
                    td { (node_link(&edge.key.to)) }
                    td { (edge.key.protocol.name()) }
                    td { (format!("{:.0}", edge.total_requests)) }
                    td { (rate(edge)) }
                    td { (format!("{:.1}%", edge.error_rate * 100.0)) }
                    td { @if let Some(p99) = edge.p99_ms { (format!("{p99:.1} ms")) } @else { "-" } }
                    td { @if edge.mutual_tls { "\u{1F512} mutual TLS" } @else { "plaintext" } }
                }
            }
        }
    }
}

/// `/`: the live graph, its edges, and which scrapes failed.
pub fn graph_page(graph: &Graph, scrape_errors: &[String]) -> String {
    let edges: Vec<&Edge> = graph.edges.iter().collect();
    let workloads: BTreeSet<&NodeId> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n, NodeId::Workload { .. }))
        .collect();
    let body = html! {
        p { "Workloads (boxes) and Services (rounded), from the agents', the gateway's and the
             waypoints' metrics; rates over the last " (format!("{:.0}", graph.window_seconds))
             " s. Refreshes every 5 s." }
        div class="graph" {
            @match graph_svg(graph) {
                Some(svg) => (PreEscaped(svg)),
                None => p { "No traffic yet: open the product page a few times." },
            }
        }
        h2 { "Edges" }
        (edges_table(&edges))
        h2 { "Workloads" }
        ul { @for node in workloads { li { (node_link(node)) } } }
        @if !scrape_errors.is_empty() {
            h2 { "Scrape errors" }
            ul class="err" { @for e in scrape_errors { li { (e) } } }
        }
    };
    frame("Service graph", true, body)
}

/// `/workloads/<ns>/<name>`: the workload's traffic both ways and the configuration
/// applied to it.
pub fn workload_page(
    workload: &Workload,
    graph: &Graph,
    applied: &Applied,
    load_errors: &[String],
) -> String {
    let node = NodeId::Workload {
        namespace: workload.namespace.clone(),
        name: workload.name.clone(),
    };
    let (inbound, outbound) = graph.edges_of(&node);
    // Inbound traffic reaches a workload through its Services.
    let services: Vec<NodeId> = applied
        .services
        .iter()
        .map(|host| NodeId::Service { host: host.clone() })
        .collect();
    let mut into: Vec<&Edge> = inbound;
    into.extend(graph.edges.iter().filter(|e| services.contains(&e.key.to)));
    let body = html! {
        table {
            tr { th { "namespace" } td { (workload.namespace) } }
            tr { th { "service account" } td { (workload.service_account) } }
            tr { th { "labels" } td { @for (k, v) in &workload.labels { code { (k) "=" (v) } " " } } }
            tr { th { "Services" } td { @for s in &applied.services { code { (s) } " " } } }
        }
        h2 { "Inbound" }
        (edges_table(&into))
        h2 { "Outbound" }
        (edges_table(&outbound))
        h2 { "Configuration applied" }
        @if !load_errors.is_empty() {
            p class="err" { "The configuration directory does not load now; the mesh keeps
                             serving the last configuration that did:" }
            ul class="err" { @for e in load_errors { li { (e) } } }
        }
        @if applied.objects.is_empty() {
            p { "No VirtualService, DestinationRule or policy applies to this workload." }
        } @else {
            table {
                tr { th { "object" } th { "applies because it" } th { "validation" } }
                @for object in &applied.objects {
                    tr class="applied" {
                        td { (object.object) }
                        td { (object.because) }
                        td {
                            @if object.messages.is_empty() { "valid" }
                            @for m in &object.messages { div class="err" { (m) } }
                        }
                    }
                }
            }
        }
    };
    frame(
        &format!("Workload {}/{}", workload.namespace, workload.name),
        true,
        body,
    )
}

fn span_duration_ms(span: &Value) -> f64 {
    let start = span["start_unix_nano"].as_u64().unwrap_or(0);
    let end = span["end_unix_nano"].as_u64().unwrap_or(start);
    end.saturating_sub(start) as f64 / 1e6
}

/// A trace's first span (by start) and its extent in nanoseconds.
fn trace_extent(spans: &[Value]) -> (u64, u64) {
    let start = spans
        .iter()
        .filter_map(|s| s["start_unix_nano"].as_u64())
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|s| s["end_unix_nano"].as_u64())
        .max()
        .unwrap_or(start);
    (start, end)
}

/// `/traces`: the store's traces, most recent first.
pub fn traces_page(traces: &[Value], error: Option<&str>) -> String {
    let body = html! {
        @if let Some(e) = error { p class="err" { (e) } }
        table {
            tr { th { "trace" } th { "root" } th { "services" } th { "spans" } th { "duration" } }
            @for trace in traces {
                @let spans = trace["spans"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                @let id = trace["trace_id"].as_str().unwrap_or("");
                @let root = spans.iter().find(|s| s["parent_span_id"].as_str().unwrap_or("").is_empty()).or(spans.first());
                @let services: BTreeSet<&str> = spans.iter().filter_map(|s| s["service"].as_str()).collect();
                @let (start, end) = trace_extent(spans);
                tr class="trace" data-trace=(id) {
                    td { a href=(format!("/traces/{id}")) { code { (id) } } }
                    td { (root.and_then(|r| r["name"].as_str()).unwrap_or("")) }
                    td { (services.into_iter().collect::<Vec<_>>().join(", ")) }
                    td { (spans.len()) }
                    td { (format!("{:.2} ms", end.saturating_sub(start) as f64 / 1e6)) }
                }
            }
        }
    };
    frame("Traces", true, body)
}

/// `/traces/<id>`: every span on one timeline, children under their parents.
pub fn trace_page(trace: &Value) -> String {
    let spans = trace["spans"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let (start, end) = trace_extent(spans);
    let extent = end.saturating_sub(start).max(1) as f64;
    let ordered = tree_order(spans);
    let body = html! {
        p { (spans.len()) " spans, " (format!("{:.2} ms", extent / 1e6)) }
        table {
            tr { th { "span" } th { "service" } th { "kind" } th { "duration" } th style="width:40%" { "timeline" } }
            @for (depth, span) in &ordered {
                @let offset = span["start_unix_nano"].as_u64().unwrap_or(start).saturating_sub(start) as f64;
                @let width = span_duration_ms(span) * 1e6;
                tr class="span" data-span=(span["span_id"].as_str().unwrap_or("")) data-parent=(span["parent_span_id"].as_str().unwrap_or("")) {
                    td style=(format!("padding-left:{}em", 0.6 + *depth as f64 * 1.2)) {
                        (span["name"].as_str().unwrap_or(""))
                        @if let Some(code) = span["attributes"]["http.status_code"].as_str() { " " code { (code) } }
                    }
                    td { (span["service"].as_str().unwrap_or("")) }
                    td { (span["kind"].as_str().unwrap_or("")) }
                    td { (format!("{:.2} ms", span_duration_ms(span))) }
                    td { div class="bar" { span style=(format!("left:{:.2}%;width:{:.2}%", offset / extent * 100.0, width / extent * 100.0)) {} } }
                }
            }
        }
        h2 { "Attributes" }
        @for (_, span) in &ordered {
            details {
                summary { (span["name"].as_str().unwrap_or("")) " (" (span["service"].as_str().unwrap_or("")) ")" }
                table { @if let Some(attributes) = span["attributes"].as_object() {
                    @for (k, v) in attributes { tr { th { (k) } td { (v.as_str().unwrap_or("")) } } }
                } }
            }
        }
    };
    let id = trace["trace_id"].as_str().unwrap_or("");
    frame(&format!("Trace {id}"), false, body)
}

/// Depth-first from the roots (spans without a parent in the trace), each level by start.
fn tree_order(spans: &[Value]) -> Vec<(usize, &Value)> {
    let id = |s: &Value| s["span_id"].as_str().unwrap_or("").to_string();
    let parent = |s: &Value| s["parent_span_id"].as_str().unwrap_or("").to_string();
    let ids: BTreeSet<String> = spans.iter().map(id).collect();
    let mut out = Vec::new();
    let mut stack: Vec<(usize, &Value)> = spans
        .iter()
        .filter(|s| !ids.contains(&parent(s)))
        .rev()
        .map(|s| (0, s))
        .collect();
    while let Some((depth, span)) = stack.pop() {
        out.push((depth, span));
        let me = id(span);
        let mut children: Vec<&Value> = spans.iter().filter(|s| parent(s) == me).collect();
        children.sort_by_key(|s| std::cmp::Reverse(s["start_unix_nano"].as_u64().unwrap_or(0)));
        // Guard against a span naming itself as its parent.
        stack.extend(
            children
                .into_iter()
                .filter(|c| id(c) != me)
                .map(|c| (depth + 1, c)),
        );
        if out.len() > spans.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;
