//! The demo's console, what Kiali and Jaeger's UI are in Istio's addons, on the host's
//! loopback (`--console`, 127.0.0.1:20001 by default, Kiali's port):
//! * `/` — the live service graph (workloads, Services, edges with requests/s, 5xx rate,
//!   p99 and a padlock for mutual TLS) and its edges as a table;
//! * `/workloads/<ns>/<name>` — one workload's inbound and outbound traffic, and the
//!   VirtualServices, DestinationRules and policies applied to it, with what validation
//!   says of them (the configuration directory as it is now);
//! * `/traces`, `/traces/<id>` — the trace store's recent traces, and one on a timeline;
//! * `/api/graph` — the graph as JSON.
//!
//! The graph comes from the components' own `/metrics`, scraped every
//! [`SCRAPE_INTERVAL`] from node 1's namespace ([`scrape`]), so it works without
//! `--prometheus`; the traces from the trace store's query API.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{
    app::{serve, upstream},
    pod::PodSockets,
};

pub mod applied;
pub mod graph;
pub mod page;
pub mod scrape;

pub use applied::Workload;

/// As the demo's Prometheus scrapes.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);

/// What the console shows.
pub struct Sources {
    /// Every agent's, the gateway's and each waypoint's `/metrics`, in the lab.
    pub targets: Vec<scrape::Target>,
    /// The workload names of the gateway and the waypoints.
    pub proxies: BTreeSet<String>,
    pub workloads: Vec<Workload>,
    /// The directory the mesh reads its configuration from.
    pub config_dir: PathBuf,
    /// The trace store's query API (host loopback).
    pub traces: SocketAddr,
}

/// The running console; stopped on drop.
pub struct Console {
    pub url: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Console {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct State {
    sources: Sources,
    history: Mutex<scrape::History>,
}

pub async fn start(node_netns: &Path, listen: SocketAddr, sources: Sources) -> Result<Console> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--console)"))?;
    let url = listener.local_addr()?;
    let node = PodSockets::start(node_netns, "demo-console".into())
        .context("entering node 1's namespace for the console's scrapes")?;
    let state = Arc::new(State {
        sources,
        history: Mutex::new(scrape::History::default()),
    });
    let scraper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (totals, errors) =
                    scrape::round(&node, &state.sources.targets, &state.sources.proxies).await;
                if let Ok(mut history) = state.history.lock() {
                    history.push(Instant::now(), totals, errors);
                }
            }
        })
    };
    let server = tokio::spawn(async move {
        let served = serve::serve_on(listener, move |request, _peer| {
            let state = state.clone();
            async move { route(&state, request.uri().path()).await }
        });
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "demo console stopped");
        }
    });
    Ok(Console {
        url,
        tasks: vec![scraper, server],
    })
}

fn html(body: String) -> serve::Reply {
    serve::reply(200, "text/html; charset=utf-8", body)
}

fn not_found(what: &str) -> serve::Reply {
    serve::reply(404, "text/plain; charset=utf-8", format!("{what}\n"))
}

async fn route(state: &State, path: &str) -> serve::Reply {
    let graph = || match state.history.lock() {
        Ok(history) => (history.graph(), history.errors.clone()),
        Err(_) => Default::default(),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => {
            let (graph, errors) = graph();
            html(page::graph_page(&graph, &errors))
        }
        ["api", "graph"] => serve::json(200, &graph_json(&graph().0)),
        ["workloads", namespace, name] => {
            let Some(workload) = state
                .sources
                .workloads
                .iter()
                .find(|w| w.namespace == *namespace && w.name == *name)
            else {
                return not_found(&format!("no workload {namespace}/{name} in this demo"));
            };
            let (applied, load_errors) = applied_now(&state.sources.config_dir, workload);
            html(page::workload_page(
                workload,
                &graph().0,
                &applied,
                &load_errors,
            ))
        }
        ["traces"] => match fetch_traces(state.sources.traces, "/api/traces").await {
            Ok(answer) => {
                let traces = answer["traces"].as_array().cloned().unwrap_or_default();
                html(page::traces_page(&traces, None))
            }
            Err(e) => html(page::traces_page(&[], Some(&e))),
        },
        ["traces", id] => {
            match fetch_traces(state.sources.traces, &format!("/api/traces/{id}")).await {
                Ok(trace) => html(page::trace_page(&trace)),
                Err(e) => not_found(&e),
            }
        }
        ["healthz"] => serve::reply(200, "text/plain", "ok\n"),
        _ => not_found("not found"),
    }
}

/// The configuration directory as it is now, with validation's messages.
fn applied_now(config_dir: &Path, workload: &Workload) -> (applied::Applied, Vec<String>) {
    let dir = [config_dir.to_path_buf()];
    let report = mesh_config::validate_paths(&dir);
    match mesh_config::load_paths(&dir) {
        Ok(loaded) => (
            applied::applied(&loaded.objects, &report.errors, &report.warnings, workload),
            Vec::new(),
        ),
        Err(errors) => (
            applied::Applied::default(),
            errors.0.iter().map(ToString::to_string).collect(),
        ),
    }
}

async fn fetch_traces(store: SocketAddr, path: &str) -> Result<Value, String> {
    let answer = upstream::get(
        &store.ip().to_string(),
        store.port(),
        path,
        &hyper::HeaderMap::new(),
        Duration::from_secs(2),
    )
    .await
    .map_err(|e| format!("trace store: {e}"))?;
    answer
        .json()
        .ok_or_else(|| format!("trace store answered {} for {path}", answer.status))
}

fn graph_json(graph: &graph::Graph) -> Value {
    let nodes: Vec<Value> = graph
        .nodes
        .iter()
        .map(|n| json!({"id": n.key(), "kind": n.kind(), "label": n.label()}))
        .collect();
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| {
            json!({
                "from": e.key.from.key(),
                "to": e.key.to.key(),
                "protocol": e.key.protocol.name(),
                "requests": e.total_requests,
                "requests_per_second": e.requests_per_second,
                "error_rate": e.error_rate,
                "p99_ms": e.p99_ms,
                "bytes_per_second": e.bytes_per_second,
                "mutual_tls": e.mutual_tls,
            })
        })
        .collect();
    json!({"window_seconds": graph.window_seconds, "nodes": nodes, "edges": edges})
}
