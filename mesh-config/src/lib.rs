//! Configuration of the mesh: Kubernetes and Istio resources read from YAML files (and, by the
//! same typed path, from the Kubernetes API), validated like `istioctl analyze`, and turned
//! into one immutable [`Snapshot`] that a [`ConfigStore`] swaps atomically.
//!
//! Modules, one job each: [`yaml`] reads files into typed [`object::Object`]s with positions;
//! [`istio`] holds the Istio kinds; [`resolve`] names hosts and protocols as Istio does;
//! [`validate`] runs the analyzers; [`snapshot`] builds the plain-data state; [`store`] keeps
//! the objects per source and the last good snapshot; [`source`] feeds the store.
//!
//! Two sources feed a store: a directory of YAML files watched for changes ([`DirSource`],
//! the default) and the Kubernetes API ([`KubeSource`]: one kube-rs watcher per kind, with a
//! client from `--kubeconfig` or in-cluster through [`source::kube::kube_client`]). An API
//! object is decoded from its JSON by the same path as a YAML document
//! ([`yaml::load_api_object`]), so a bad object gets the same precise error, naming it as
//! `kube://<Kind.group>/<namespace>/<name>`; it keeps its last good version in the store.

#![forbid(unsafe_code)]

pub mod authz;
pub mod canonical;
pub mod duration;
pub mod error;
pub mod istio;
pub mod object;
pub mod resolve;
pub mod secret;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod validate;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors, ConfigWarning, ErrorKind, Place, Report};
pub use object::{Kind, LoadedObject, Object, ObjectKey, Origin};
pub use snapshot::Snapshot;
pub use source::dir::DirSource;
pub use source::kube::KubeSource;
pub use store::ConfigStore;
pub use yaml::LoadOptions;

/// Objects read from files, with the warnings (skipped kinds, assumptions) met on the way.
#[derive(Debug, Clone, Default)]
pub struct LoadedConfig {
    pub objects: Vec<LoadedObject>,
    pub warnings: Vec<ConfigWarning>,
}

/// Reads files and directories (recursively, `*.yaml` and `*.yml`, in name order).
/// Any decoding error fails the load, with every error found.
pub fn load_paths(paths: &[PathBuf]) -> Result<LoadedConfig, ConfigErrors> {
    load_paths_with(paths, &LoadOptions::default())
}

pub fn load_paths_with(
    paths: &[PathBuf],
    opts: &LoadOptions,
) -> Result<LoadedConfig, ConfigErrors> {
    let (config, errors) = read_paths(paths, opts);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads and validates: every error of every file, then the cross-object checks.
pub fn validate_paths(paths: &[PathBuf]) -> Report {
    let (mut config, mut errors) = read_paths(paths, &LoadOptions::default());
    let (more, warnings) = validate::validate(&config.objects, &resolve::MeshOptions::default());
    errors.extend(more);
    config.warnings.extend(warnings);
    Report {
        errors,
        warnings: config.warnings,
        objects: config.objects.len(),
    }
}

fn read_paths(paths: &[PathBuf], opts: &LoadOptions) -> (LoadedConfig, Vec<ConfigError>) {
    let mut config = LoadedConfig::default();
    let mut errors = Vec::new();
    for file in source::dir::yaml_files(paths, &mut errors) {
        let load = yaml::load_file(&file, opts);
        config.objects.extend(load.objects);
        config.warnings.extend(load.warnings);
        errors.extend(load.errors);
    }
    (config, errors)
}

/// Reads YAML text (e.g. `mesh-agent apply -` from stdin); `file` names it in errors.
pub fn load_str(text: &str, file: Option<&Path>) -> Result<LoadedConfig, ConfigErrors> {
    let load = yaml::load_str(text, file, &LoadOptions::default());
    if load.errors.is_empty() {
        Ok(LoadedConfig {
            objects: load.objects,
            warnings: load.warnings,
        })
    } else {
        Err(ConfigErrors(load.errors))
    }
}
