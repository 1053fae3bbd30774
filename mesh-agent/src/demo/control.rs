//! `mesh-agent apply -f FILE` and `mesh-agent delete -f FILE` against a running demo, as
//! `kubectl` reaches its current context: the demo records itself in
//! `/run/mesh-demo/<pid>.json` once it serves (removed when it stops; a record whose process
//! is gone is ignored and removed), and the commands find it there.
//!
//! Applying writes each document of the file as its own file in the directory the demo's
//! agents, gateway and waypoints watch, named after the object
//! (`zz-applied.<kind>.<namespace>.<name>.yaml`: after every file the demo wrote itself, so
//! an applied object replaces one of the same kind and name, as a second `kubectl apply`
//! does). Deleting removes the files of the objects the file names; an object that came from
//! the demo's `--config` is left alone, and said so. A file that does not load (bad YAML,
//! an unknown field) is refused as a whole, naming file, line and field; nothing is written.
//! The demo watches the directory too: it starts the pods of Deployments (StatefulSets,
//! DaemonSets, ReplicaSets, bare Pods, waypoints) applied this way and stops those of
//! deleted ones ([`super::pods`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where running demos record themselves.
pub const RECORD_DIR: &str = "/run/mesh-demo";
const APPLIED_PREFIX: &str = "zz-applied.";

/// What a running demo says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoRecord {
    pub pid: u32,
    /// The directory its agents, gateway and waypoints watch.
    pub config_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no demo is running (none recorded in {RECORD_DIR}); start one with `mesh-agent demo`")]
    NoDemo,
    #[error("{} demos are running (pids {}): say which with --demo PID", .0.len(), pids(.0))]
    SeveralDemos(Vec<DemoRecord>),
    #[error("no running demo has pid {0} (running: {pids})", pids = pids(.1))]
    NotRunning(u32, Vec<DemoRecord>),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn pids(records: &[DemoRecord]) -> String {
    let pids: Vec<String> = records.iter().map(|r| r.pid.to_string()).collect();
    if pids.is_empty() {
        "none".into()
    } else {
        pids.join(", ")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn record_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.json"))
}

/// Records this demo (once it serves); the returned guard removes the record.
pub fn record(config_dir: &Path) -> Result<RecordGuard, ControlError> {
    let dir = Path::new(RECORD_DIR);
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let record = DemoRecord {
        pid: std::process::id(),
        config_dir: config_dir.to_path_buf(),
    };
    let path = record_path(dir, record.pid);
    let text = serde_json::to_string(&record).unwrap_or_default();
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(RecordGuard(path))
}

pub struct RecordGuard(PathBuf);

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The demos recorded in `dir` whose process still runs (the others' records are removed).
pub fn running_demos(dir: &Path) -> Vec<DemoRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(record) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<DemoRecord>(&b).ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{}", record.pid)).exists() && record.config_dir.is_dir() {
            out.push(record);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    out.sort_by_key(|r| r.pid);
    out
}

/// The demo a command without `--demo` means: the only one running.
pub fn choose(records: Vec<DemoRecord>, pid: Option<u32>) -> Result<DemoRecord, ControlError> {
    match pid {
        Some(pid) => match records.iter().find(|r| r.pid == pid) {
            Some(r) => Ok(r.clone()),
            None => Err(ControlError::NotRunning(pid, records)),
        },
        None => match records.len() {
            0 => Err(ControlError::NoDemo),
            1 => Ok(records.into_iter().next().ok_or(ControlError::NoDemo)?),
            _ => Err(ControlError::SeveralDemos(records)),
        },
    }
}

/// One document of the file and the object it holds: `kind.namespace.name`.
struct Document {
    text: String,
    key: String,
    label: String,
}

/// Splits `text` into its documents and names each one's object; the whole file must load.
fn documents(file: &Path, text: &str) -> Result<Vec<Document>, ControlError> {
    mesh_config::load_str(text, Some(file)).map_err(|e| ControlError::Invalid(e.to_string()))?;
    let mut out = Vec::new();
    let mut current = String::new();
    let mut flush = |doc: &mut String| -> Result<(), ControlError> {
        let loaded = mesh_config::load_str(doc, Some(file))
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        for object in &loaded.objects {
            let meta = object.object.meta();
            let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
            let name = meta.name.clone().unwrap_or_default();
            let kind = object.object.kind();
            out.push(Document {
                text: std::mem::take(doc),
                key: format!("{kind}.{namespace}.{name}"),
                label: format!("{kind} {namespace}/{name}"),
            });
        }
        doc.clear();
        Ok(())
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&mut current)?;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current)?;
    Ok(out)
}

fn applied_path(config_dir: &Path, key: &str) -> PathBuf {
    // Names keep to what a file name may hold.
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    config_dir.join(format!("{APPLIED_PREFIX}{safe}.yaml"))
}

/// Applies `file` to the demo; returns a line per object ("VirtualService default/reviews
/// configured").
pub fn apply(demo: &DemoRecord, file: &Path) -> Result<Vec<String>, ControlError> {
    let text = std::fs::read_to_string(file).map_err(io(file))?;
    let documents = documents(file, &text)?;
    let mut said = Vec::new();
    for doc in documents {
        let path = applied_path(&demo.config_dir, &doc.key);
        let verb = if path.exists() {
            "configured"
        } else {
            "created"
        };
        // Whole or not at all, for the watchers.
        let tmp = demo.config_dir.join(format!(".{}.tmp", doc.key));
        std::fs::write(&tmp, &doc.text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        said.push(format!("{} {verb}", doc.label));
    }
    Ok(said)
}

/// Deletes from the demo the objects `file` names that were applied to it.
pub fn delete(demo: &DemoRecord, file: &Path) -> Result<Vec<String>, ControlError> {
    let text = std::fs::read_to_string(file).map_err(io(file))?;
    let mut said = Vec::new();
    for doc in documents(file, &text)? {
        let path = applied_path(&demo.config_dir, &doc.key);
        match std::fs::remove_file(&path) {
            Ok(()) => said.push(format!("{} deleted", doc.label)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => said.push(format!(
                "{} not deleted: it was not applied with `mesh-agent apply` (the demo's \
                 --config files stay as they are)",
                doc.label
            )),
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(said)
}

#[cfg(test)]
mod tests;
