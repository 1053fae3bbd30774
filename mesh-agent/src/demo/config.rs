//! The configuration a demo runs: the user's YAML (`--config DIR`, repeatable) or, with
//! none, Istio's unchanged Bookinfo (embedded, see `bookinfo/README.md`), copied into the
//! demo's own directory that its agents and gateway watch; plus `demo-pods.yaml`, the pods
//! the demo created with their addresses (what the API server would list: off-cluster,
//! nothing else knows pod IPs) and their namespaces enrolled in ambient mode, as
//! `kubectl label namespace default istio.io/dataplane-mode=ambient` does in Istio's
//! tutorial.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Pod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use mesh_config::{LoadedObject, Object};

use super::plan::PodPlan;

/// Istio's Bookinfo, unchanged.
pub const BOOKINFO: [(&str, &str); 3] = [
    ("bookinfo.yaml", include_str!("bookinfo/bookinfo.yaml")),
    (
        "bookinfo-gateway.yaml",
        include_str!("bookinfo/bookinfo-gateway.yaml"),
    ),
    (
        "destination-rule-all.yaml",
        include_str!("bookinfo/destination-rule-all.yaml"),
    ),
];
pub const PODS_FILE: &str = "demo-pods.yaml";
const AMBIENT_LABEL: &str = "istio.io/dataplane-mode";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} has no *.yaml or *.yml file")]
    Empty(PathBuf),
    /// The loader's errors, naming the user's files (not the demo's copies).
    #[error("the configuration has errors:\n{0}")]
    Invalid(String),
    #[error("writing the demo's pods: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the configuration into `dir` (the user's files flattened to
/// `<n>-<path with _>`, so two directories cannot clash) and loads it.
pub fn prepare(dir: &Path, sources: &[PathBuf]) -> Result<Vec<LoadedObject>, ConfigError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if sources.is_empty() {
        for (name, text) in BOOKINFO {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
    }
    let mut copies = Vec::new();
    for (n, source) in sources.iter().enumerate() {
        let files = yaml_files(source)?;
        if files.is_empty() {
            return Err(ConfigError::Empty(source.clone()));
        }
        for file in files {
            let relative = file.strip_prefix(source).unwrap_or(&file);
            let flat = relative.to_string_lossy().replace('/', "_");
            let flat = if flat.is_empty() {
                file.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                flat
            };
            let target = dir.join(format!("{n}-{flat}"));
            std::fs::copy(&file, &target).map_err(io(&file))?;
            copies.push((target, file));
        }
    }
    mesh_config::load_paths(&[dir.to_path_buf()])
        .map(|loaded| loaded.objects)
        .map_err(|errors| {
            let mut text = errors.to_string();
            for (copy, original) in &copies {
                text = text.replace(&copy.display().to_string(), &original.display().to_string());
            }
            ConfigError::Invalid(text)
        })
}

/// `*.yaml`/`*.yml` under `path` (a file as given), in name order.
fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io(path))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files.extend(yaml_files(&entry)?);
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Writes [`PODS_FILE`]: every pod with its addresses, and an ambient `Namespace` for
/// each namespace of a pod the configuration does not declare itself.
pub fn write_pods(
    dir: &Path,
    objects: &[LoadedObject],
    pods: &[(&PodPlan, Ipv4Addr, Ipv6Addr)],
) -> Result<(), ConfigError> {
    let declared: BTreeSet<String> = objects
        .iter()
        .filter(|o| matches!(o.object, Object::Namespace(_)))
        .filter_map(|o| o.object.meta().name.clone())
        .collect();
    let mut documents = Vec::new();
    let namespaces: BTreeSet<&str> = pods.iter().map(|(p, _, _)| p.namespace.as_str()).collect();
    for ns in namespaces.into_iter().filter(|ns| !declared.contains(*ns)) {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_string()),
                labels: Some(BTreeMap::from([(AMBIENT_LABEL.into(), "ambient".into())])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        documents.push(with_type(serde_json::to_value(namespace)?, "Namespace"));
    }
    for (plan, ip, ip6) in pods {
        documents.push(with_type(
            serde_json::to_value(pod(plan, *ip, *ip6))?,
            "Pod",
        ));
    }
    // JSON is YAML: one document per object.
    let text: Vec<String> = documents.iter().map(ToString::to_string).collect();
    write_whole(dir, PODS_FILE, &(text.join("\n---\n") + "\n"))
}

/// Writes `file` in the watched `dir` whole and renames it into place, so the watchers
/// never read half of it.
pub fn write_whole(dir: &Path, file: &str, text: &str) -> Result<(), ConfigError> {
    let path = dir.join(file);
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

fn with_type(mut value: serde_json::Value, kind: &str) -> serde_json::Value {
    value["apiVersion"] = "v1".into();
    value["kind"] = kind.into();
    value
}

fn pod(plan: &PodPlan, ip: Ipv4Addr, ip6: Ipv6Addr) -> Pod {
    let containers = if plan.containers.is_empty() {
        // The gateway's pod: its one container is `mesh-agent gateway`.
        vec![Container {
            name: "istio-proxy".into(),
            image: Some("mesh-agent".into()),
            ..Container::default()
        }]
    } else {
        plan.containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                image: Some(c.image.clone()),
                ports: Some(
                    c.ports
                        .iter()
                        .map(|p| ContainerPort {
                            container_port: i32::from(p.number),
                            name: p.name.clone(),
                            ..ContainerPort::default()
                        })
                        .collect(),
                ),
                ..Container::default()
            })
            .collect()
    };
    // As the controllers write them, so the agents name workloads from the Pods as they do
    // on a cluster. No API server assigns uids here: the demo's own are its names.
    let owner_references = plan.controller().map(|(kind, name)| {
        vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            uid: format!("demo-{kind}-{}-{name}", plan.namespace).to_lowercase(),
            name,
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(plan.name.clone()),
            namespace: Some(plan.namespace.clone()),
            labels: Some(plan.labels.clone()),
            owner_references,
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(plan.service_account.clone()),
            containers,
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some(ip.to_string()),
            pod_ips: Some(vec![
                PodIP { ip: ip.to_string() },
                PodIP {
                    ip: ip6.to_string(),
                },
            ]),
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    }
}
