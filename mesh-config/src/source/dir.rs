//! A directory of YAML files, watched for changes (inotify through `notify`), debounced.
//!
//! Each file is one unit of the store's `dir:<path>` source. A file that fails to read keeps
//! its last good objects in the store and its errors in the store's status; a deleted file's
//! objects are removed. Editors that save by rename or in several writes are handled by the
//! debounce: changes are collected until the directory has been quiet for [`DEBOUNCE`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::{ConfigError, ErrorKind, Place};
use crate::store::{ConfigStore, UnitChange, UnitUpdate};
use crate::yaml::{self, LoadOptions};

/// Quiet time before a batch of changes is applied.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum DirSourceError {
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// A running directory source. Dropping it stops the watch.
pub struct DirSource {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
    source: String,
}

impl Drop for DirSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DirSource {
    /// Loads every file of `dir` into `store` (errors are reported through the store, the
    /// source starts anyway), then watches it. Must be called inside a tokio runtime.
    pub fn spawn(
        dir: impl Into<PathBuf>,
        store: Arc<ConfigStore>,
    ) -> Result<DirSource, DirSourceError> {
        let dir = dir.into();
        let source = format!("dir:{}", dir.display());
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    // Reading a file (ours included) raises access events: only changes count.
                    Ok(event) if is_change(&event.kind) => {
                        for path in event.paths {
                            // The receiver is gone only when the source is dropped.
                            let _ = tx.send(path);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("directory watch error: {e}"),
                }
            })
            .map_err(|source| DirSourceError::Watch {
                path: dir.clone(),
                source,
            })?;
        watcher
            .watch(&dir, RecursiveMode::Recursive)
            .map_err(|source| DirSourceError::Watch {
                path: dir.clone(),
                source,
            })?;

        let opts = LoadOptions::default();
        let mut errors = Vec::new();
        let updates: Vec<UnitUpdate> = yaml_files(std::slice::from_ref(&dir), &mut errors)
            .into_iter()
            .map(|file| read_unit(&file, &opts))
            .collect();
        for e in &errors {
            tracing::error!("{e}");
        }
        match store.replace_source(&source, updates) {
            Ok(snap) => tracing::info!(dir = %dir.display(), "config loaded: {}", snap.summary()),
            Err(e) => tracing::error!(dir = %dir.display(), "config refused at start:\n{e}"),
        }

        let task = tokio::spawn(watch_loop(rx, store, source.clone(), opts));
        Ok(DirSource {
            _watcher: watcher,
            task,
            source,
        })
    }

    /// The store source name (`dir:<path>`).
    pub fn source_name(&self) -> &str {
        &self.source
    }
}

async fn watch_loop(
    mut rx: mpsc::UnboundedReceiver<PathBuf>,
    store: Arc<ConfigStore>,
    source: String,
    opts: LoadOptions,
) {
    while let Some(first) = rx.recv().await {
        let mut changed = BTreeSet::from([first]);
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(p)) => {
                    changed.insert(p);
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let updates: Vec<UnitUpdate> = changed
            .iter()
            .filter(|p| is_yaml(p))
            .map(|p| {
                if p.exists() {
                    read_unit(p, &opts)
                } else {
                    UnitUpdate {
                        unit: p.display().to_string(),
                        change: UnitChange::Remove,
                    }
                }
            })
            .collect();
        if updates.is_empty() {
            continue;
        }
        let outcome = store.update(&source, updates, false);
        if outcome.changed_nothing() {
            // A file created and removed between two reads (an editor's, `mesh-agent apply`
            // then `delete`): not a refusal.
            tracing::debug!("config change left the snapshot as it was");
            continue;
        }
        match outcome.into_result() {
            Ok(snap) => tracing::info!("config reloaded: {}", snap.summary()),
            Err(e) => tracing::error!("config change refused, last good kept:\n{e}"),
        }
    }
}

fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Other => false,
    }
}

fn read_unit(file: &Path, opts: &LoadOptions) -> UnitUpdate {
    let load = yaml::load_file(file, opts);
    UnitUpdate {
        unit: file.display().to_string(),
        change: if load.errors.is_empty() {
            UnitChange::Set(load.objects)
        } else {
            UnitChange::Failed(load.errors)
        },
    }
}

/// Files named `*.yaml`/`*.yml` under `paths` (files as given, directories recursively, in
/// name order).
pub fn yaml_files(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out, errors);
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<ConfigError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(ConfigError::new(
                Place {
                    file: Some(dir.to_path_buf()),
                    ..Place::default()
                },
                ErrorKind::Io(e.to_string()),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out, errors);
        } else if is_yaml(&p) {
            out.push(p);
        }
    }
}

/// `*.yaml` or `*.yml`, not an editor's hidden temporary file.
pub fn is_yaml(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}
