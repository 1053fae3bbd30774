//! Reads every component's `/metrics` (the agents on their nodes, the gateway and the
//! waypoints in their pods) from inside node 1's network namespace, where the lab's
//! addresses are reachable, as the demo's Prometheus does; and keeps the last scrapes so
//! the graph can show rates over a window.
use std::{
    collections::{BTreeSet, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::graph::{Graph, Totals};
use crate::pod::PodSockets;

/// A scrape answer larger than this is cut off (and the target counted as failed).
const MAX_BODY: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(2);
/// The rates are over about this long.
pub const WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0}: {1}")]
    Http(SocketAddr, String),
    #[error("{0}: no answer within {1:?}")]
    Timeout(SocketAddr, Duration),
}

/// `GET /metrics` of `target`, from a socket made in `from`'s namespace.
pub async fn fetch(from: &PodSockets, target: SocketAddr) -> Result<String, ScrapeError> {
    tokio::time::timeout(TIMEOUT, fetch_now(from, target))
        .await
        .map_err(|_| ScrapeError::Timeout(target, TIMEOUT))?
}

async fn fetch_now(from: &PodSockets, target: SocketAddr) -> Result<String, ScrapeError> {
    let connect = |e| ScrapeError::Connect(target, e);
    let socket = from.tcp_socket(&target).await.map_err(connect)?;
    let stream = socket.connect(target).await.map_err(connect)?;
    let http = |e: &dyn std::fmt::Display| ScrapeError::Http(target, e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, target.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(&e))?;
    let response = sender.send_request(request).await.map_err(|e| http(&e))?;
    if !response.status().is_success() {
        return Err(http(&format!("answered {}", response.status())));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| http(&e))
}

/// A `/metrics` to scrape.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The workload name, when the target is the gateway or a waypoint.
    pub proxy_workload: Option<String>,
}

/// The totals of one round over every target; a target that fails is left out of it and
/// its error kept for the page.
pub async fn round(
    from: &PodSockets,
    targets: &[Target],
    proxies: &BTreeSet<String>,
) -> (Totals, Vec<String>) {
    let mut totals = Totals::default();
    let mut errors = Vec::new();
    let answers = futures_util::future::join_all(targets.iter().map(|t| fetch(from, t.addr))).await;
    for (target, answer) in targets.iter().zip(answers) {
        match answer {
            Ok(text) => {
                let lines = text.lines().map(|l| Ok(l.to_string()));
                match prometheus_parse::Scrape::parse(lines) {
                    Ok(scrape) => {
                        totals.add(&scrape.samples, target.proxy_workload.as_deref(), proxies)
                    }
                    Err(e) => errors.push(format!("parsing metrics: {e}")),
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    (totals, errors)
}

/// The scrapes of the last [`WINDOW`], oldest first.
#[derive(Default)]
pub struct History {
    rounds: VecDeque<(Instant, Totals)>,
    /// The errors of the newest round.
    pub errors: Vec<String>,
}

impl History {
    pub fn push(&mut self, at: Instant, totals: Totals, errors: Vec<String>) {
        self.rounds.push_back((at, totals));
        self.errors = errors;
        // Keep one round older than the window, so the window is always covered.
        while self.rounds.len() > 2 && at.duration_since(self.rounds[1].0) > WINDOW {
            self.rounds.pop_front();
        }
    }

    /// The graph of the newest round, rates against the oldest kept.
    pub fn graph(&self) -> Graph {
        match (self.rounds.front(), self.rounds.back()) {
            (Some((t0, oldest)), Some((t1, newest))) => {
                Graph::between(oldest, newest, t1.duration_since(*t0).as_secs_f64())
            }
            _ => Graph::default(),
        }
    }
}
