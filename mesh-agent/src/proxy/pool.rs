//! The HBONE tunnel pool: many CONNECT streams share one mutual-TLS HTTP/2 connection.
//!
//! Rules:
//! * A tunnel is keyed by (source identity, destination identity, destination address):
//!   a tunnel authenticates both ends once, so it may only carry streams of the same pair
//!   of workloads, never another pod's traffic.
//! * A tunnel carries at most [`MAX_STREAMS_PER_TUNNEL`] streams at once; the pool opens
//!   another when all are full, so heavy pairs spread over several connections (and cores).
//! * Opening is serialised per key: a burst of new connections to one destination waits
//!   for the first tunnel instead of opening one each.
//! * A tunnel built with a certificate that has since rotated takes no new streams (its
//!   open streams finish on it); closed tunnels are dropped on the next checkout, idle ones
//!   by [`Pool::sweep`].
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::client::SendRequest;
use mesh_identity::SpiffeId;

use super::{error::ProxyError, hbone::MAX_STREAMS_PER_TUNNEL};

/// Idle tunnels (no stream) older than this are closed by [`Pool::sweep`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub source: SpiffeId,
    pub destination: SpiffeId,
    pub peer: SocketAddr,
}

/// A freshly opened tunnel, as `hbone::client::open_tunnel` returns it.
pub struct OpenTunnel {
    pub sender: SendRequest<Bytes>,
    /// Set by the connection's driver task when the tunnel is gone.
    pub closed: Arc<AtomicBool>,
}

struct Tunnel {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// Streams in flight (leases not yet dropped).
    active: Arc<AtomicUsize>,
    /// The source certificate's generation when the tunnel was opened.
    generation: u64,
    last_used: Instant,
}

/// One stream's claim on a tunnel; the tunnel counts it until dropped.
pub struct Lease {
    active: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

type Slot = Arc<tokio::sync::Mutex<Vec<Tunnel>>>;

#[derive(Default)]
pub struct Pool {
    slots: Mutex<HashMap<PoolKey, Slot>>,
    opened: AtomicUsize,
}

impl Pool {
    /// A tunnel for `key` with room for one more stream, opening one with `open` if none
    /// has; `generation` is the source certificate's current generation.
    pub async fn checkout<F, Fut>(
        &self,
        key: &PoolKey,
        generation: u64,
        open: F,
    ) -> Result<(SendRequest<Bytes>, Lease), ProxyError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<OpenTunnel, ProxyError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key.clone()).or_default().clone()
        };
        let mut tunnels = slot.lock().await;
        tunnels.retain(|t| !t.closed.load(Ordering::Relaxed) && t.generation == generation);
        let limit = MAX_STREAMS_PER_TUNNEL as usize;
        let tunnel = match tunnels
            .iter_mut()
            .find(|t| t.active.load(Ordering::Relaxed) < limit)
        {
            Some(tunnel) => tunnel,
            None => {
                let opened = open().await?;
                self.opened.fetch_add(1, Ordering::Relaxed);
                tunnels.push(Tunnel {
                    sender: opened.sender,
                    closed: opened.closed,
                    active: Arc::default(),
                    generation,
                    last_used: Instant::now(),
                });
                tunnels.last_mut().expect("just pushed")
            }
        };
        tunnel.active.fetch_add(1, Ordering::Relaxed);
        tunnel.last_used = Instant::now();
        Ok((
            tunnel.sender.clone(),
            Lease {
                active: tunnel.active.clone(),
            },
        ))
    }

    /// Drops tunnels that are closed, or idle for longer than [`IDLE_TIMEOUT`]; dropping
    /// the last handle of an idle tunnel lets h2 close it gracefully.
    pub fn sweep(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| {
            // A slot being opened right now is busy: keep it.
            let Ok(mut tunnels) = slot.try_lock() else {
                return true;
            };
            tunnels.retain(|t| {
                let idle =
                    t.active.load(Ordering::Relaxed) == 0 && t.last_used.elapsed() > IDLE_TIMEOUT;
                !t.closed.load(Ordering::Relaxed) && !idle
            });
            !tunnels.is_empty()
        });
    }

    /// Tunnels opened since start, and tunnels currently pooled.
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let pooled = slots
            .values()
            .map(|s| s.try_lock().map(|t| t.len()).unwrap_or(0))
            .sum();
        (self.opened.load(Ordering::Relaxed), pooled)
    }
}
