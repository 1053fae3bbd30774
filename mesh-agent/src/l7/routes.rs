//! The routing table the proxy reads per request, rebuilt from every configuration
//! snapshot the store swaps in. A snapshot the engine refuses (a bad regex, a missing
//! delegate) keeps the previous table serving; the error, which names the VirtualService
//! and the field, is logged and counted. The balancing state (`LbState`: round robin,
//! active requests, ejections) lives here too, across tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use mesh_config::{ConfigStore, Snapshot};

pub use crate::config_source::ConfigSources;
use crate::config_source::Watching;
use mesh_l7::{LbState, RouteTable, TableOptions};

/// The current table, the state kept across tables, and the store they come from.
pub struct Routes {
    table: ArcSwap<RouteTable>,
    lb: LbState,
    options: TableOptions,
    /// Snapshots whose table was refused since start.
    refused: AtomicU64,
    /// Bumped after each table swap (listeners follow the Gateway servers through it).
    changed: tokio::sync::watch::Sender<u64>,
}

impl Routes {
    /// A table for the store's current snapshot (an empty one if the engine refuses it).
    pub fn new(store: &ConfigStore, options: TableOptions) -> Arc<Routes> {
        let snapshot = store.snapshot();
        let table = match RouteTable::build(snapshot, options.clone()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("routing refused the configuration, serving no routes: {e}");
                empty_table(&options)
            }
        };
        Arc::new(Routes {
            table: ArcSwap::from_pointee(table),
            lb: LbState::new(),
            options,
            refused: AtomicU64::new(0),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// Rebuilds the table on every snapshot the store swaps in, until the store is gone.
    pub fn follow(self: &Arc<Self>, store: Arc<ConfigStore>) -> tokio::task::JoinHandle<()> {
        let routes = self.clone();
        let mut generations = store.subscribe();
        tokio::spawn(async move {
            // A snapshot swapped in between `new` and here is picked up by this first pass.
            loop {
                routes.rebuild(store.snapshot());
                if generations.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// Builds a table from `snapshot` and swaps it in; keeps the current one if refused.
    pub fn rebuild(&self, snapshot: Arc<Snapshot>) -> bool {
        if Arc::ptr_eq(self.table.load().snapshot(), &snapshot) {
            return true;
        }
        match RouteTable::build(snapshot, self.options.clone()) {
            Ok(table) => {
                self.table.store(Arc::new(table));
                self.changed.send_modify(|g| *g += 1);
                tracing::info!("routing table rebuilt");
                true
            }
            Err(e) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "routing refused the new configuration, keeping the previous routes: {e}"
                );
                false
            }
        }
    }

    /// The current table (one atomic load).
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub fn lb(&self) -> &LbState {
        &self.lb
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Notified after each table swap.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// A table following its configuration sources: their watchers and the rebuild task live
/// as long as this value (what the gateway and the waypoint both run on).
pub struct FollowedRoutes {
    pub routes: Arc<Routes>,
    _sources: Watching,
    follow: tokio::task::JoinHandle<()>,
}

impl FollowedRoutes {
    /// Loads the sources, watches them, and rebuilds the table on every change.
    pub async fn watch(
        sources: &ConfigSources,
        options: TableOptions,
    ) -> anyhow::Result<FollowedRoutes> {
        anyhow::ensure!(
            sources.dir.is_some() || sources.kubernetes.is_some(),
            "no configuration source: give --config-dir, --kubernetes or --kubeconfig"
        );
        let store = Arc::new(ConfigStore::default());
        let watching = sources.watch(&store).await?;
        let routes = Routes::new(&store, options);
        let follow = routes.follow(store);
        Ok(FollowedRoutes {
            routes,
            _sources: watching,
            follow,
        })
    }
}

impl Drop for FollowedRoutes {
    fn drop(&mut self) {
        self.follow.abort();
    }
}

fn empty_table(options: &TableOptions) -> RouteTable {
    // An empty snapshot has no regex and no delegate: the engine cannot refuse it.
    match RouteTable::build(Arc::new(Snapshot::default()), options.clone()) {
        Ok(t) => t,
        Err(e) => unreachable!("an empty snapshot was refused: {e}"),
    }
}
