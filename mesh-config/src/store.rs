//! `ConfigStore`: the objects of every source, the snapshot built from them, swapped
//! atomically.
//!
//! Objects are kept per source (`dir:/etc/mesh`, `kube`) and per unit within it (a file, or
//! one API object). An update replaces units and rebuilds; if the result does not validate,
//! the update is undone, the errors are recorded (last errors, an error counter for status
//! and metrics) and the last good snapshot stays in place — readers never see a half-applied
//! change, and nothing already holding a snapshot is disturbed. A change touching only
//! Endpoints/EndpointSlices is applied incrementally: the affected Services' endpoints are
//! recomputed and the rest of the snapshot is shared.
//!
//! Inputs refused for being over a budget (`yaml::limits`) are counted per limit as well,
//! including those refused before reaching the store ([`ConfigStore::reject`]: the API).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::error::{ConfigError, ConfigErrors, ConfigWarning};
use crate::object::{Kind, LoadedObject, Object};
use crate::snapshot::{BuildError, BuildOptions, Snapshot};
use crate::yaml::limits::Limit;

/// What happened to one unit (a file, an API object) of a source.
#[derive(Debug, Clone)]
pub enum UnitChange {
    /// The unit now holds these objects.
    Set(Vec<LoadedObject>),
    /// The unit is gone (file deleted, object deleted).
    Remove,
    /// The unit could not be read: keep what it held before, record the errors.
    Failed(Vec<ConfigError>),
}

/// One unit's update.
#[derive(Debug, Clone)]
pub struct UnitUpdate {
    pub unit: String,
    pub change: UnitChange,
}

/// What one [`ConfigStore::update`] did.
#[derive(Debug, Clone)]
pub struct UpdateOutcome {
    /// The snapshot swapped in; `None` when the update was refused (or held only failed
    /// units, which leave the snapshot as it is).
    pub snapshot: Option<Arc<Snapshot>>,
    /// The errors of the units that could not be read ([`UnitChange::Failed`]): those units
    /// keep their last good content, the other units of the update still apply.
    pub read_errors: Vec<ConfigError>,
    /// The errors of the build that refused the whole update (empty when it was accepted).
    pub build_errors: Vec<ConfigError>,
}

impl UpdateOutcome {
    /// Neither swapped in nor refused: the update removed only units never held (a file
    /// created and removed between two reads of a directory).
    pub fn changed_nothing(&self) -> bool {
        self.snapshot.is_none() && self.read_errors.is_empty() && self.build_errors.is_empty()
    }

    /// `Ok` only for an update that was swapped in with no error at all; otherwise every
    /// error, the read ones first (none for an update that changed nothing).
    pub fn into_result(self) -> Result<Arc<Snapshot>, BuildError> {
        match self.snapshot {
            Some(snap) if self.read_errors.is_empty() => Ok(snap),
            _ => {
                let mut errors = self.read_errors;
                errors.extend(self.build_errors);
                Err(BuildError {
                    errors: ConfigErrors(errors),
                })
            }
        }
    }
}

/// What `mesh-agent status` and the metrics read.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// Increases with every snapshot swapped in.
    pub generation: u64,
    /// Updates refused since start.
    pub errors_total: u64,
    /// Inputs refused for being over a budget since start, by limit (`input_bytes`,
    /// `documents`, `depth`, `nodes`, `expanded_bytes`); every limit is listed.
    pub limits_exceeded: BTreeMap<String, u64>,
    /// The errors of the inputs that are currently refused (empty when all is well).
    pub last_errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigWarning>,
    pub last_update: Option<SystemTime>,
    pub summary: String,
}

/// Unit → its objects; shared so that copying a source's table copies pointers only.
type Units = BTreeMap<String, Arc<[LoadedObject]>>;

#[derive(Default)]
struct Inner {
    sources: BTreeMap<String, Units>,
    /// (source, unit) → errors of its last failed read or build.
    failing: BTreeMap<(String, String), Vec<ConfigError>>,
    warnings: Vec<ConfigWarning>,
    last_update: Option<SystemTime>,
}

/// Holds the objects and the current snapshot.
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    inner: Mutex<Inner>,
    opts: BuildOptions,
    generation: AtomicU64,
    errors_total: AtomicU64,
    /// Indexed by [`Limit::index`].
    limits_exceeded: [AtomicU64; Limit::ALL.len()],
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        ConfigStore::new(BuildOptions::default())
    }
}

impl ConfigStore {
    pub fn new(opts: BuildOptions) -> Self {
        ConfigStore {
            current: ArcSwap::from_pointee(Snapshot::default()),
            inner: Mutex::new(Inner::default()),
            opts,
            generation: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            limits_exceeded: Default::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// The current snapshot (cheap: one atomic load and a reference count).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Notified with the generation after each swap.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> StoreStatus {
        let inner = self.lock();
        StoreStatus {
            generation: self.generation(),
            errors_total: self.errors_total(),
            limits_exceeded: Limit::ALL
                .iter()
                .map(|l| {
                    let n = self.limits_exceeded[l.index()].load(Ordering::Relaxed);
                    (l.as_str().to_string(), n)
                })
                .collect(),
            last_errors: inner.failing.values().flatten().cloned().collect(),
            warnings: inner.warnings.clone(),
            last_update: inner.last_update,
            summary: self.snapshot().summary(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (updates are built aside and
        // committed at the end), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces all units of `source` (an initial load, or a relist).
    pub fn replace_source(
        &self,
        source: &str,
        units: Vec<UnitUpdate>,
    ) -> Result<Arc<Snapshot>, BuildError> {
        self.update(source, units, true).into_result()
    }

    /// Applies changes to some units of `source`.
    pub fn apply(&self, source: &str, units: Vec<UnitUpdate>) -> Result<Arc<Snapshot>, BuildError> {
        self.update(source, units, false).into_result()
    }

    /// [`apply`](Self::apply) (or, with `replace`, [`replace_source`](Self::replace_source))
    /// telling apart what happened: whether a snapshot was swapped in, the errors of the
    /// units that could not be read and those of a build that refused the update. A source
    /// that must find out which of its units a refusal is due to (the Kubernetes source,
    /// whose objects are not re-sent later) reads this.
    pub fn update(&self, source: &str, updates: Vec<UnitUpdate>, replace: bool) -> UpdateOutcome {
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Units are changed in place; `undo` remembers what each changed unit held, to put it
        // back if the result does not validate. A replace swaps in a fresh table.
        let mut replaced: Option<Units> = None;
        if replace {
            replaced = Some(inner.sources.remove(source).unwrap_or_default());
        }
        let units = inner.sources.entry(source.to_string()).or_default();
        let mut undo: Vec<(String, Option<Arc<[LoadedObject]>>)> = Vec::new();
        let mut read_errors = Vec::new();
        let mut set = Vec::new();
        for u in updates {
            let key = (source.to_string(), u.unit.clone());
            match u.change {
                UnitChange::Set(objects) => {
                    let old = units.insert(u.unit.clone(), Arc::from(objects));
                    undo.push((u.unit, old));
                    set.push(key);
                }
                UnitChange::Remove => {
                    inner.failing.remove(&key);
                    if let Some(old) = units.remove(&u.unit) {
                        undo.push((u.unit, Some(old)));
                    }
                }
                UnitChange::Failed(errors) => {
                    // Keep the last good content of the unit (from before a replace, too).
                    if let Some(old) = replaced.as_ref().and_then(|r| r.get(&u.unit)) {
                        units.insert(u.unit.clone(), old.clone());
                    }
                    read_errors.extend(errors.iter().cloned());
                    inner.failing.insert(key, errors);
                }
            }
        }

        if !replace && undo.is_empty() {
            // Only failed reads (or removals of units never held): nothing to rebuild, the
            // current snapshot stays as it is. Only failed reads count as refused.
            if !read_errors.is_empty() {
                self.refused(&read_errors);
            }
            return UpdateOutcome {
                snapshot: None,
                read_errors,
                build_errors: Vec::new(),
            };
        }
        let incremental = !replace && read_errors.is_empty() && endpoints_only(units, &undo);
        let result = if incremental {
            Ok(self.incremental(&inner.sources, &undo, source))
        } else {
            let all: Vec<&LoadedObject> = inner
                .sources
                .values()
                .flat_map(|units| units.values().flat_map(|v| v.iter()))
                .collect();
            Snapshot::build_from_refs(&all, &self.opts).map(|(snap, warnings)| {
                inner.warnings = warnings;
                snap
            })
        };
        match result {
            Ok(snap) => {
                for key in &set {
                    inner.failing.remove(key);
                }
                inner.last_update = Some(SystemTime::now());
                let snap = Arc::new(snap);
                self.current.store(snap.clone());
                let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                self.changed.send_replace(generation);
                if !read_errors.is_empty() {
                    self.refused(&read_errors);
                }
                UpdateOutcome {
                    snapshot: Some(snap),
                    read_errors,
                    build_errors: Vec::new(),
                }
            }
            Err(e) => {
                // Put everything back as it was.
                if let Some(old) = replaced {
                    inner.sources.insert(source.to_string(), old);
                } else if let Some(units) = inner.sources.get_mut(source) {
                    for (unit, old) in undo.into_iter().rev() {
                        match old {
                            Some(objects) => units.insert(unit, objects),
                            None => units.remove(&unit),
                        };
                    }
                }
                for key in &set {
                    inner.failing.insert(key.clone(), e.errors.0.clone());
                }
                let build_errors = e.errors.0;
                self.refused(read_errors.iter().chain(&build_errors));
                UpdateOutcome {
                    snapshot: None,
                    read_errors,
                    build_errors,
                }
            }
        }
    }

    /// Counts and logs input refused before it reached the store (a request body that did
    /// not load): the snapshot and the units are untouched.
    pub fn reject(&self, errors: &[ConfigError]) {
        if !errors.is_empty() {
            self.refused(errors);
        }
    }

    /// Counts and logs a refused update (and each budget it was over).
    fn refused<'a>(&self, errors: impl IntoIterator<Item = &'a ConfigError>) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        for e in errors {
            if let Some(limit) = e.kind.limit() {
                self.limits_exceeded[limit.index()].fetch_add(1, Ordering::Relaxed);
            }
            tracing::error!("config rejected, keeping the last good version: {e}");
        }
    }

    /// Recomputes the endpoints of the Services named by the changed units.
    fn incremental(
        &self,
        sources: &BTreeMap<String, Units>,
        undo: &[(String, Option<Arc<[LoadedObject]>>)],
        source: &str,
    ) -> Snapshot {
        let old = self.snapshot();
        let mut snap = Snapshot::clone(&old);
        let current = sources.get(source);
        // Services whose endpoints may have changed: those named by old and new objects.
        let mut names: BTreeSet<(String, String)> = BTreeSet::new();
        for (unit, before) in undo {
            let now = current.and_then(|u| u.get(unit));
            for o in before.iter().chain(now).flat_map(|v| v.iter()) {
                if let Some((ns, name)) = endpoints_service(&o.object) {
                    names.insert((ns.to_string(), name.to_string()));
                }
            }
        }
        for (ns, name) in names {
            let fqdn = self.opts.mesh.service_fqdn(&name, &ns);
            let Some(svc) = snap.services.get(&fqdn) else {
                continue;
            };
            let mut eps = Vec::new();
            let mut slices = Vec::new();
            let all = sources
                .values()
                .flat_map(|units| units.values().flat_map(|v| v.iter()));
            for o in all {
                if endpoints_service(&o.object) != Some((ns.as_str(), name.as_str())) {
                    continue;
                }
                match &o.object {
                    Object::Endpoints(e) => eps.push(e),
                    Object::EndpointSlice(s) => slices.push(s),
                    _ => {}
                }
            }
            let endpoints = crate::snapshot::service_endpoints(
                &ns,
                &svc.selector,
                &eps,
                &slices,
                &snap.workloads,
            );
            let mut updated = (**svc).clone();
            updated.endpoints = endpoints;
            snap.services.insert(fqdn, Arc::new(updated));
        }
        snap
    }
}

/// `(namespace, service name)` an Endpoints or EndpointSlice object belongs to.
fn endpoints_service(o: &Object) -> Option<(&str, &str)> {
    let m = o.meta();
    let ns = m.namespace.as_deref().unwrap_or_default();
    match o {
        Object::Endpoints(_) => Some((ns, m.name.as_deref()?)),
        Object::EndpointSlice(_) => Some((
            ns,
            m.labels
                .as_ref()?
                .get(crate::snapshot::SERVICE_NAME_LABEL)?
                .as_str(),
        )),
        _ => None,
    }
}

/// Did only Endpoints/EndpointSlice objects change (before and after)?
fn endpoints_only(units: &Units, undo: &[(String, Option<Arc<[LoadedObject]>>)]) -> bool {
    let is_ep = |o: &LoadedObject| matches!(o.object.kind(), Kind::Endpoints | Kind::EndpointSlice);
    !undo.is_empty()
        && undo.iter().all(|(unit, before)| {
            before.iter().flat_map(|v| v.iter()).all(is_ep)
                && units
                    .get(unit)
                    .into_iter()
                    .flat_map(|v| v.iter())
                    .all(is_ep)
        })
}
