//! The CNI installer (`mesh-agent cni install` / `uninstall`), run by the DaemonSet as an
//! init container with the node's CNI directories mounted, as istio-cni's installer is:
//!
//! * copies `mesh-cni` into the node's plugin directory (`/opt/cni/bin`), atomically (a
//!   temporary file renamed over the old one, so a runtime never executes half a binary);
//! * appends the plugin to the chain of the node's *primary* network configuration, the
//!   file the runtime uses: the first `*.conf`, `*.conflist` or `*.json` of the
//!   configuration directory in lexical order (libcni's rule). A single-plugin `.conf` is
//!   turned into a `.conflist` with its plugin first. Running it again replaces the
//!   mesh's entry instead of adding a second one.
//! * waits for that file if the pod network's own installer has not written it yet;
//! * `uninstall` takes the entry out again and removes the binary.
//!
//! The editing itself ([`insert`], [`remove`], [`primary_config`]) is pure, so the rules are
//! tested without a node.
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};

/// The plugin's `type` in the chain: the runtime runs `<bin dir>/mesh-cni`.
pub const PLUGIN_TYPE: &str = "mesh-cni";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a CNI network configuration: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error(
        "no CNI network configuration (*.conf, *.conflist, *.json) appeared in {dir} within {waited:?}: is the pod network installed?"
    )]
    NoNetwork { dir: PathBuf, waited: Duration },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the installer works.
#[derive(Debug, Clone)]
pub struct Installer {
    /// The `mesh-cni` binary to copy.
    pub plugin: PathBuf,
    /// The node's plugin directory (the runtime's `CNI_PATH`).
    pub bin_dir: PathBuf,
    /// The node's network configuration directory.
    pub conf_dir: PathBuf,
    /// The mesh's entry in the chain (`type` is set to [`PLUGIN_TYPE`]).
    pub plugin_config: Map<String, Value>,
}

/// What `install` changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub binary: PathBuf,
    /// The configuration file now holding the mesh's entry.
    pub config: PathBuf,
    /// The single-plugin file it replaced, if it was one.
    pub replaced: Option<PathBuf>,
}

impl Installer {
    /// Copies the plugin, then adds it to the primary configuration, waiting up to `wait`
    /// for that configuration to appear.
    pub fn install(&self, wait: Duration) -> Result<Installed, InstallError> {
        let binary = self.bin_dir.join(PLUGIN_TYPE);
        copy_atomically(&self.plugin, &binary, 0o755)?;
        let primary = self.wait_for_primary(wait)?;
        let conf = read_json(&primary)?;
        let chain = insert(&conf, &self.entry()).map_err(|message| InstallError::BadConfig {
            path: primary.clone(),
            message,
        })?;
        let (config, replaced) = if is_conflist(&conf) {
            (primary, None)
        } else {
            (primary.with_extension("conflist"), Some(primary))
        };
        write_json_atomically(&config, &chain)?;
        if let Some(old) = &replaced {
            fs::remove_file(old).map_err(io_error(old))?;
        }
        Ok(Installed {
            binary,
            config,
            replaced,
        })
    }

    /// Takes the mesh's entry out of every configuration that has one and removes the
    /// binary. Idempotent: nothing installed is success. Returns the files changed.
    pub fn uninstall(&self) -> Result<Vec<PathBuf>, InstallError> {
        let mut changed = Vec::new();
        for path in config_files(&self.conf_dir)? {
            let conf = read_json(&path)?;
            if let Some(without) = remove(&conf) {
                write_json_atomically(&path, &without)?;
                changed.push(path);
            }
        }
        let binary = self.bin_dir.join(PLUGIN_TYPE);
        match fs::remove_file(&binary) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&binary)(e)),
        }
        Ok(changed)
    }

    fn entry(&self) -> Value {
        let mut entry = self.plugin_config.clone();
        entry.insert("type".into(), json!(PLUGIN_TYPE));
        Value::Object(entry)
    }

    fn wait_for_primary(&self, wait: Duration) -> Result<PathBuf, InstallError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(primary) = primary_config(config_files(&self.conf_dir)?) {
                return Ok(primary);
            }
            if Instant::now() >= deadline {
                return Err(InstallError::NoNetwork {
                    dir: self.conf_dir.clone(),
                    waited: wait,
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The configuration files of `dir` (a missing directory has none).
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(dir))?.path();
        let is_config = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "conf" | "conflist" | "json"));
        if is_config && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The file a runtime uses among `files`: the first by name, as libcni sorts them.
pub fn primary_config(mut files: Vec<PathBuf>) -> Option<PathBuf> {
    files.sort();
    files.into_iter().next()
}

fn is_conflist(conf: &Value) -> bool {
    conf.get("plugins").is_some()
}

/// `conf` (a conflist, or a single plugin's `.conf`) as a conflist whose chain ends with
/// `entry`, any earlier mesh entry dropped. Err: what makes `conf` unusable.
pub fn insert(conf: &Value, entry: &Value) -> Result<Value, String> {
    let object = conf.as_object().ok_or("not a JSON object")?;
    let mut list = if is_conflist(conf) {
        object.clone()
    } else {
        // A single plugin: its version and name go to the list, the rest is the plugin.
        if !object.contains_key("type") {
            return Err("neither `plugins` nor `type`".into());
        }
        let mut plugin = object.clone();
        let mut list = Map::new();
        for key in ["cniVersion", "name"] {
            if let Some(value) = plugin.remove(key) {
                list.insert(key.into(), value);
            }
        }
        list.insert("plugins".into(), json!([plugin]));
        list
    };
    let plugins = list
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or("`plugins` is not a list")?;
    plugins.retain(|p| !is_mesh_entry(p));
    if plugins.is_empty() {
        return Err("the chain has no network plugin to follow".into());
    }
    plugins.push(entry.clone());
    Ok(Value::Object(list))
}

/// `conf` without the mesh's entries; `None` when it has none (nothing to write).
pub fn remove(conf: &Value) -> Option<Value> {
    let plugins = conf.get("plugins")?.as_array()?;
    if !plugins.iter().any(is_mesh_entry) {
        return None;
    }
    let mut without = conf.clone();
    if let Some(list) = without.get_mut("plugins").and_then(Value::as_array_mut) {
        list.retain(|p| !is_mesh_entry(p));
    }
    Some(without)
}

fn is_mesh_entry(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

fn read_json(path: &Path) -> Result<Value, InstallError> {
    let text = fs::read(path).map_err(io_error(path))?;
    serde_json::from_slice(&text).map_err(|e| InstallError::BadConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A temporary file in `to`'s directory, renamed over `to`: readers see the old or the new
/// file, never a part.
fn replace_atomically(
    to: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), InstallError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.mesh-tmp"));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        fill(&mut file)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, to)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_error(to))
}

fn copy_atomically(from: &Path, to: &Path, mode: u32) -> Result<(), InstallError> {
    let mut source = fs::File::open(from).map_err(io_error(from))?;
    replace_atomically(to, mode, |file| io::copy(&mut source, file).map(drop))
}

fn write_json_atomically(to: &Path, value: &Value) -> Result<(), InstallError> {
    replace_atomically(to, 0o644, |file| {
        serde_json::to_writer_pretty(&mut *file, value).map_err(io::Error::other)?;
        file.write_all(b"\n")
    })
}

#[cfg(test)]
mod tests;
