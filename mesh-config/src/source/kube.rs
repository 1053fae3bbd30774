//! The Kubernetes API, watched through kube-rs watchers (list, then watch from the list's
//! `resourceVersion`; a re-list when the server answers 410 Gone).
//!
//! One watcher per kind the store reads ([`WATCHED`]), all as [`DynamicObject`]s: the JSON the
//! API server sent, with nothing dropped, so that each object is decoded by the same path as
//! a YAML document ([`yaml::load_api_object`]) with the same unknown-field checks and the same
//! errors, naming the object by a pseudo file `kube://<Kind.group>/<namespace>/<name>`.
//!
//! Every object is one unit of the store's [`SOURCE`] source (unit `<Kind.group>/<ns>/<name>`):
//! an added or modified object sets its unit, a deleted one removes it, a re-list replaces the
//! kind's units (those not listed any more are removed). One task owns what the API says
//! (the watchers send it their events) and feeds the store in batches (changes arriving
//! within [`KubeSourceOptions::debounce`] of each other are applied together):
//!
//! - at start it waits until every kind is listed (or failed to list, or
//!   [`KubeSourceOptions::sync_timeout`] passed) and loads everything in one update, so that
//!   a VirtualService is never judged before the DestinationRule it names is there;
//! - an object that does not decode keeps its last good version in the store, its errors in
//!   the store's status ([`UnitChange::Failed`]);
//! - an update that the store refuses (an object that decodes but does not validate, e.g.
//!   route weights summing to 90) is retried without the objects the errors name, which keep
//!   their last good version and report their errors; the other changes land. Objects the
//!   store refused are offered again after a later accepted change of configuration (not
//!   after mere Endpoints/Pod churn): the object they missed may have arrived since;
//! - a kind the server does not serve (a CRD not installed: 404 on list) is logged once and
//!   retried every [`KubeSourceOptions::missing_retry`] without disturbing the others; other
//!   failures are retried with an exponential backoff up to
//!   [`KubeSourceOptions::max_backoff`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::error::{ConfigError, ErrorKind, Place};
use crate::object::{Kind, LoadedObject};
use crate::store::{ConfigStore, UnitChange, UnitUpdate};
use crate::yaml::{self, LoadOptions};

/// The store source the Kubernetes API feeds.
pub const SOURCE: &str = "kube";

/// One kind the source watches.
#[derive(Debug, Clone, Copy)]
pub struct WatchedKind {
    pub kind: Kind,
    /// API group, empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The resource (plural) name, as in RBAC rules and URLs.
    pub plural: &'static str,
}

impl WatchedKind {
    /// `Kind` for the core group, `Kind.group` otherwise (`VirtualService.networking.istio.io`,
    /// the notation of `kubectl get`): unique, unlike the kind alone (two `Gateway`s).
    pub fn label(&self) -> String {
        if self.group.is_empty() {
            self.kind.as_str().to_string()
        } else {
            format!("{}.{}", self.kind.as_str(), self.group)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: if self.group.is_empty() {
                self.version.to_string()
            } else {
                format!("{}/{}", self.group, self.version)
            },
            kind: self.kind.as_str().to_string(),
            plural: self.plural.to_string(),
        }
    }
}

const fn watched(
    kind: Kind,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
) -> WatchedKind {
    WatchedKind {
        kind,
        group,
        version,
        plural,
    }
}

/// The kinds watched, in the order changes are tried one by one when a batch is refused and
/// its culprits cannot be named: what others refer to first (Services before the routes to
/// them, DestinationRules and Gateways before the VirtualServices naming their subsets).
/// The service account needs `list` and `watch` on each of these resources, cluster-wide.
pub const WATCHED: &[WatchedKind] = &[
    watched(Kind::Namespace, "", "v1", "namespaces"),
    watched(Kind::ServiceAccount, "", "v1", "serviceaccounts"),
    watched(Kind::Service, "", "v1", "services"),
    watched(Kind::Endpoints, "", "v1", "endpoints"),
    watched(
        Kind::EndpointSlice,
        "discovery.k8s.io",
        "v1",
        "endpointslices",
    ),
    watched(Kind::Pod, "", "v1", "pods"),
    watched(Kind::Deployment, "apps", "v1", "deployments"),
    watched(Kind::StatefulSet, "apps", "v1", "statefulsets"),
    watched(Kind::DaemonSet, "apps", "v1", "daemonsets"),
    watched(
        Kind::DestinationRule,
        "networking.istio.io",
        "v1",
        "destinationrules",
    ),
    watched(Kind::Gateway, "networking.istio.io", "v1", "gateways"),
    watched(
        Kind::K8sGateway,
        "gateway.networking.k8s.io",
        "v1",
        "gateways",
    ),
    watched(
        Kind::ServiceEntry,
        "networking.istio.io",
        "v1",
        "serviceentries",
    ),
    watched(
        Kind::WorkloadEntry,
        "networking.istio.io",
        "v1",
        "workloadentries",
    ),
    watched(
        Kind::VirtualService,
        "networking.istio.io",
        "v1",
        "virtualservices",
    ),
    watched(
        Kind::PeerAuthentication,
        "security.istio.io",
        "v1",
        "peerauthentications",
    ),
    watched(
        Kind::AuthorizationPolicy,
        "security.istio.io",
        "v1",
        "authorizationpolicies",
    ),
];

/// Timings of the source; the defaults suit a cluster, tests shorten them.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// How often a kind the server does not serve (404: CRD not installed) is tried again.
    pub missing_retry: Duration,
    /// The longest wait between retries after other failures (doubling from 500 ms).
    pub max_backoff: Duration,
    /// How long the first load waits for every kind to be listed before loading what came.
    pub sync_timeout: Duration,
    /// Changes arriving within this of each other are applied as one update (at most ten
    /// times this is waited before applying).
    pub debounce: Duration,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            missing_retry: Duration::from_secs(60),
            max_backoff: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(30),
            debounce: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("the Kubernetes source must be started inside a tokio runtime")]
    NoRuntime,
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration (no --kubeconfig, $KUBECONFIG, ~/.kube/config, nor in-cluster service account): {0}"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client for the cluster of `kubeconfig` (its current context), or, without one, of
/// `$KUBECONFIG` / `~/.kube/config`, or the in-cluster service account (what
/// [`kube::Config::infer`] finds).
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeSourceError> {
    ensure_crypto_provider();
    kube::Client::try_from(kube_config(kubeconfig).await?).map_err(KubeSourceError::Client)
}

/// kube-client builds its TLS configuration from rustls's process default provider, and
/// the workspace compiles in two (ring for kube, aws-lc-rs for the mesh's own TLS), so
/// rustls will not choose: a binary installs one at start (the agent installs aws-lc-rs);
/// if none did, this installs ring before a client is made.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The configuration [`kube_client`] builds its client from.
pub async fn kube_config(kubeconfig: Option<&Path>) -> Result<kube::Config, KubeSourceError> {
    match kubeconfig {
        Some(path) => {
            let err = |source| KubeSourceError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)
        }
        None => kube::Config::infer().await.map_err(KubeSourceError::Infer),
    }
}

/// A running Kubernetes source. Dropping it stops the watchers.
pub struct KubeSource {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    synced: watch::Receiver<bool>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl KubeSource {
    /// Starts one watcher per kind of [`WATCHED`] and the task feeding `store`. Returns at
    /// once; [`wait_synced`](Self::wait_synced) tells when the first load is in the store.
    /// Must be called inside a tokio runtime.
    pub fn spawn(
        client: kube::Client,
        store: Arc<ConfigStore>,
    ) -> Result<KubeSource, KubeSourceError> {
        Self::spawn_with(client, store, KubeSourceOptions::default())
    }

    pub fn spawn_with(
        client: kube::Client,
        store: Arc<ConfigStore>,
        opts: KubeSourceOptions,
    ) -> Result<KubeSource, KubeSourceError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| KubeSourceError::NoRuntime)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (synced_tx, synced) = watch::channel(false);
        let mut tasks = Vec::with_capacity(WATCHED.len() + 1);
        for (index, kind) in WATCHED.iter().enumerate() {
            tasks.push(runtime.spawn(watch_kind(
                client.clone(),
                index,
                *kind,
                tx.clone(),
                opts.clone(),
            )));
        }
        let feeder = Feeder {
            store,
            desired: BTreeMap::new(),
            dirty: BTreeSet::new(),
            rejected: BTreeSet::new(),
        };
        tasks.push(runtime.spawn(feeder.run(rx, synced_tx, opts)));
        Ok(KubeSource { tasks, synced })
    }

    /// The store source name.
    pub fn source_name(&self) -> &'static str {
        SOURCE
    }

    /// Whether the first load (every kind listed, or the sync timeout passed) was handed to
    /// the store.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first load.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        // An error means the feeding task is gone: nothing more to wait for.
        let _ = rx.wait_for(|synced| *synced).await;
    }
}

/// One object as the API sent it, decoded.
#[derive(Debug)]
struct Decoded {
    unit: String,
    resource_version: Option<String>,
    result: Result<Vec<LoadedObject>, Vec<ConfigError>>,
}

/// What a watcher tells the feeding task.
#[derive(Debug)]
enum Msg {
    /// A (re-)list: the complete set of this kind's objects.
    Listed {
        kind: usize,
        objects: Vec<Decoded>,
    },
    Applied {
        kind: usize,
        object: Decoded,
    },
    Deleted {
        kind: usize,
        unit: String,
    },
    /// Listing failed (not served, forbidden, unreachable): the first load need not wait.
    ListFailed {
        kind: usize,
    },
}

fn unit_name(kind: &WatchedKind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{}/{ns}/{name}", kind.label()),
        _ => format!("{}/{name}", kind.label()),
    }
}

/// The kind index of a unit name (its first segment).
fn unit_kind(unit: &str) -> usize {
    let label = unit.split('/').next().unwrap_or_default();
    WATCHED
        .iter()
        .position(|k| k.label() == label)
        .unwrap_or(WATCHED.len())
}

fn decode(kind: &WatchedKind, object: DynamicObject) -> Decoded {
    let name = object.metadata.name.clone().unwrap_or_default();
    let unit = unit_name(kind, object.metadata.namespace.as_deref(), &name);
    let resource_version = object.metadata.resource_version.clone();
    let file = PathBuf::from(format!("kube://{unit}"));
    let result = match serde_json::to_value(&object) {
        Ok(Value::Object(mut map)) => {
            // List items of built-in kinds come without apiVersion/kind.
            let ar = kind.api_resource();
            map.entry("apiVersion")
                .or_insert_with(|| Value::String(ar.api_version));
            map.entry("kind").or_insert_with(|| Value::String(ar.kind));
            let load =
                yaml::load_api_object(Value::Object(map), Some(&file), &LoadOptions::default());
            for w in &load.warnings {
                tracing::warn!("{w}");
            }
            if load.errors.is_empty() {
                Ok(load.objects)
            } else {
                Err(load.errors)
            }
        }
        Ok(_) => Err(vec![decode_error(&file, "not a JSON object")]),
        Err(e) => Err(vec![decode_error(&file, &e.to_string())]),
    };
    Decoded {
        unit,
        resource_version,
        result,
    }
}

fn decode_error(file: &Path, message: &str) -> ConfigError {
    ConfigError::new(
        Place {
            file: Some(file.to_path_buf()),
            ..Place::default()
        },
        ErrorKind::Decode(message.to_string()),
    )
}

/// Watches one kind forever, sending what happens to the feeding task.
async fn watch_kind(
    client: kube::Client,
    index: usize,
    kind: WatchedKind,
    tx: mpsc::UnboundedSender<Msg>,
    opts: KubeSourceOptions,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.api_resource());
    // `any_semantic`: the first list may come from the API server's cache (resourceVersion=0),
    // as client-go's informers do; the watch that follows brings it up to date.
    let config = watcher::Config::default().any_semantic();
    let mut stream = std::pin::pin!(watcher::watcher(api, config));
    let label = kind.label();
    let mut listing: Vec<Decoded> = Vec::new();
    let mut backoff = Duration::ZERO;
    let mut missing = false;
    while let Some(event) = stream.next().await {
        let msg = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                None
            }
            Ok(watcher::Event::InitApply(object)) => {
                listing.push(decode(&kind, object));
                None
            }
            Ok(watcher::Event::InitDone) => {
                if missing {
                    tracing::info!(kind = %label, "now served; watching");
                }
                missing = false;
                backoff = Duration::ZERO;
                tracing::debug!(kind = %label, objects = listing.len(), "listed");
                Some(Msg::Listed {
                    kind: index,
                    objects: std::mem::take(&mut listing),
                })
            }
            Ok(watcher::Event::Apply(object)) => {
                backoff = Duration::ZERO;
                Some(Msg::Applied {
                    kind: index,
                    object: decode(&kind, object),
                })
            }
            Ok(watcher::Event::Delete(object)) => {
                backoff = Duration::ZERO;
                let name = object.metadata.name.unwrap_or_default();
                Some(Msg::Deleted {
                    kind: index,
                    unit: unit_name(&kind, object.metadata.namespace.as_deref(), &name),
                })
            }
            Err(e) => {
                let (delay, list_failed) = match &e {
                    watcher::Error::InitialListFailed(kube::Error::Api(status))
                        if status.code == 404 =>
                    {
                        if !missing {
                            tracing::warn!(
                                kind = %label,
                                "not served by the API server (CRD not installed?); trying again every {:?}",
                                opts.missing_retry
                            );
                        }
                        missing = true;
                        (opts.missing_retry, true)
                    }
                    watcher::Error::WatchError(status) if status.code == 410 => {
                        tracing::info!(kind = %label, "resourceVersion expired; listing again");
                        (Duration::ZERO, false)
                    }
                    other => {
                        backoff = (backoff * 2)
                            .max(Duration::from_millis(500))
                            .min(opts.max_backoff);
                        tracing::warn!(kind = %label, "watch failed, retrying in {backoff:?}: {other}");
                        (
                            backoff,
                            matches!(other, watcher::Error::InitialListFailed(_)),
                        )
                    }
                };
                if list_failed && tx.send(Msg::ListFailed { kind: index }).is_err() {
                    return;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                None
            }
        };
        if let Some(msg) = msg
            && tx.send(msg).is_err()
        {
            // The feeding task is gone (the source was dropped).
            return;
        }
    }
}

/// What the API says an object is.
#[derive(Debug)]
struct Entry {
    resource_version: Option<String>,
    result: Result<Vec<LoadedObject>, Vec<ConfigError>>,
}

/// Owns the API's view and feeds the store.
struct Feeder {
    store: Arc<ConfigStore>,
    /// Unit → the latest version the API sent (absent: deleted).
    desired: BTreeMap<String, Entry>,
    /// Units changed since the last update, as (kind index, unit): the kind orders them.
    dirty: BTreeSet<(usize, String)>,
    /// Units whose latest change the store refused (it keeps their last good version).
    rejected: BTreeSet<(usize, String)>,
}

impl Feeder {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        synced: watch::Sender<bool>,
        opts: KubeSourceOptions,
    ) {
        // The first load: wait until every kind has been listed or has failed to list.
        let mut waiting: BTreeSet<usize> = (0..WATCHED.len()).collect();
        let deadline = Instant::now() + opts.sync_timeout;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(msg)) => {
                    if let Msg::Listed { kind, .. } | Msg::ListFailed { kind } = &msg {
                        waiting.remove(kind);
                    }
                    self.handle(msg);
                }
                Ok(None) => return,
                Err(_) => {
                    let names: Vec<String> = waiting.iter().map(|&i| WATCHED[i].label()).collect();
                    tracing::warn!(
                        "not listed after {:?}, loading without them for now: {}",
                        opts.sync_timeout,
                        names.join(", ")
                    );
                    break;
                }
            }
        }
        self.flush();
        tracing::info!(
            "Kubernetes config loaded: {}",
            self.store.snapshot().summary()
        );
        synced.send_replace(true);

        let debounce = opts.debounce.max(Duration::from_millis(1));
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
            let until = Instant::now() + debounce * 10;
            loop {
                let quiet = (Instant::now() + debounce).min(until);
                match tokio::time::timeout_at(quiet, rx.recv()).await {
                    Ok(Some(msg)) => self.handle(msg),
                    Ok(None) => {
                        self.flush();
                        return;
                    }
                    Err(_) => break,
                }
            }
            self.flush();
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Listed { kind, objects } => {
                let listed: BTreeSet<&str> = objects.iter().map(|o| o.unit.as_str()).collect();
                let gone: Vec<String> = self
                    .desired
                    .keys()
                    .filter(|u| unit_kind(u) == kind && !listed.contains(u.as_str()))
                    .cloned()
                    .collect();
                for unit in gone {
                    self.desired.remove(&unit);
                    self.dirty.insert((kind, unit));
                }
                for object in objects {
                    self.set(kind, object);
                }
            }
            Msg::Applied { kind, object } => self.set(kind, object),
            Msg::Deleted { kind, unit } => {
                let known = self.desired.remove(&unit).is_some();
                let key = (kind, unit);
                if known || self.rejected.contains(&key) {
                    self.dirty.insert(key);
                }
            }
            Msg::ListFailed { .. } => {}
        }
    }

    fn set(&mut self, kind: usize, object: Decoded) {
        let unchanged = object.resource_version.is_some()
            && self.desired.get(&object.unit).map(|e| &e.resource_version)
                == Some(&object.resource_version);
        if unchanged {
            return;
        }
        self.dirty.insert((kind, object.unit.clone()));
        self.desired.insert(
            object.unit,
            Entry {
                resource_version: object.resource_version,
                result: object.result,
            },
        );
    }

    /// What the store should do with a unit, from the API's view.
    fn change(&self, unit: &str) -> UnitUpdate {
        UnitUpdate {
            unit: unit.to_string(),
            change: match self.desired.get(unit).map(|e| &e.result) {
                Some(Ok(objects)) => UnitChange::Set(objects.clone()),
                Some(Err(errors)) => UnitChange::Failed(errors.clone()),
                None => UnitChange::Remove,
            },
        }
    }

    /// Applies the dirty units; then, if configuration changed, offers the refused ones again.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        if dirty.is_empty() {
            return;
        }
        let config_changed = dirty.iter().any(|(kind, _)| {
            !matches!(
                WATCHED.get(*kind).map(|k| k.kind),
                Some(Kind::Endpoints | Kind::EndpointSlice | Kind::Pod)
            )
        });
        let swapped = self.push(dirty.into_iter().collect());
        if swapped && config_changed && !self.rejected.is_empty() {
            let retry: Vec<(usize, String)> = self.rejected.iter().cloned().collect();
            tracing::debug!(units = retry.len(), "offering refused objects again");
            self.push(retry);
        }
    }

    /// Hands `units` to the store in one update. When the build refuses it, the units whose
    /// objects the errors name are turned into failed units (keeping their last good version,
    /// reporting the errors) and the rest tried again; when no unit can be blamed, the units
    /// are tried one by one. Returns whether a snapshot was swapped in.
    fn push(&mut self, units: Vec<(usize, String)>) -> bool {
        let mut updates: Vec<(usize, UnitUpdate)> =
            units.iter().map(|(k, u)| (*k, self.change(u))).collect();
        let mut blamed: BTreeSet<String> = BTreeSet::new();
        loop {
            let batch: Vec<UnitUpdate> = updates.iter().map(|(_, u)| u.clone()).collect();
            let outcome = self.store.update(SOURCE, batch, false);
            if outcome.build_errors.is_empty() {
                for (kind, u) in &updates {
                    let key = (*kind, u.unit.clone());
                    if blamed.contains(&u.unit) {
                        self.rejected.insert(key);
                    } else {
                        self.rejected.remove(&key);
                    }
                }
                return outcome.snapshot.is_some();
            }
            // Which of the changed units do the errors name?
            let named: BTreeSet<&str> = outcome
                .build_errors
                .iter()
                .filter_map(|e| e.place.object.as_deref())
                .collect();
            let mut progress = false;
            for (_, u) in updates.iter_mut() {
                let UnitChange::Set(objects) = &u.change else {
                    continue;
                };
                let labels: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
                if !labels.iter().any(|l| named.contains(l.as_str())) {
                    continue;
                }
                let errors: Vec<ConfigError> = outcome
                    .build_errors
                    .iter()
                    .filter(|e| e.place.object.as_ref().is_some_and(|o| labels.contains(o)))
                    .cloned()
                    .collect();
                blamed.insert(u.unit.clone());
                u.change = UnitChange::Failed(errors);
                progress = true;
            }
            if progress {
                continue;
            }
            // The errors name no changed object (a removal broke another, or no object named).
            let changing: Vec<(usize, String)> = updates
                .iter()
                .filter(|(_, u)| !matches!(u.change, UnitChange::Failed(_)))
                .map(|(k, u)| (*k, u.unit.clone()))
                .collect();
            if changing.len() <= 1 {
                self.rejected.extend(changing);
                for (kind, u) in &updates {
                    if blamed.contains(&u.unit) {
                        self.rejected.insert((*kind, u.unit.clone()));
                    }
                }
                return false;
            }
            let mut swapped = false;
            updates.sort_by_key(|(kind, _)| *kind);
            for (kind, u) in updates {
                if blamed.contains(&u.unit) {
                    // Already known bad: record its errors, keep its last good version.
                    self.store.update(SOURCE, vec![u.clone()], false);
                    self.rejected.insert((kind, u.unit));
                } else {
                    swapped |= self.push(vec![(kind, u.unit)]);
                }
            }
            return swapped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_units_map_back_to_their_kind() {
        let labels: BTreeSet<String> = WATCHED.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), WATCHED.len());
        for (i, k) in WATCHED.iter().enumerate() {
            assert_eq!(unit_kind(&unit_name(k, Some("default"), "x")), i);
            let ar = k.api_resource();
            assert_eq!(
                Kind::resolve(&ar.api_version, &ar.kind),
                Ok(Some(k.kind)),
                "{}",
                k.label()
            );
        }
        assert_eq!(
            unit_name(&WATCHED[0], None, "istio-system"),
            "Namespace/istio-system"
        );
    }
}
