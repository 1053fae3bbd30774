//! Decoding an API request, apart from serving it: which endpoint a method and path name,
//! the pod spec of an enrollment, the unit name of a config post. Pure functions of the
//! request's bytes (the fuzz target `api_request` feeds them arbitrary input).

use crate::pod::{PodKey, PodSpec};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Status,
    Pods,
    Metrics,
    ConfigDump,
    /// `POST /v1/config?file=NAME`: the unit the YAML replaces.
    ApplyConfig {
        file: String,
    },
    Enroll,
    Remove(PodKey),
    /// `POST /v1/cni/add`: the CNI plugin's ADD (the agent decides whether to enroll).
    CniAdd,
    /// `POST /v1/cni/check`: the CNI plugin's CHECK.
    CniCheck,
    NotFound,
}

impl Route {
    /// The endpoint of `method` and the request target's `path` and `query`.
    pub fn parse(method: &str, path: &str, query: Option<&str>) -> Route {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["v1", "status"]) => Route::Status,
            ("GET", ["v1", "pods"]) => Route::Pods,
            ("GET", ["metrics"]) => Route::Metrics,
            ("GET", ["v1", "config_dump"]) => Route::ConfigDump,
            ("POST", ["v1", "config"]) => Route::ApplyConfig {
                file: config_file_name(query),
            },
            ("POST", ["v1", "pods"]) => Route::Enroll,
            ("POST", ["v1", "cni", "add"]) => Route::CniAdd,
            ("POST", ["v1", "cni", "check"]) => Route::CniCheck,
            ("DELETE", ["v1", "pods", namespace, name]) => Route::Remove(PodKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            _ => Route::NotFound,
        }
    }
}

/// The `file=` of a config post's query (the name errors carry), `applied.yaml` without.
pub fn config_file_name(query: Option<&str>) -> String {
    query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("file=")))
        .filter(|name| !name.is_empty())
        .unwrap_or("applied.yaml")
        .to_string()
}

/// The body of a CNI plugin's request (see `cni::CniPod`).
pub fn decode_cni_pod(body: &[u8]) -> Result<crate::cni::CniPod, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed CNI pod: {e}"))
}

/// An enrollment's body: a JSON [`PodSpec`] (enrollment then checks it with
/// [`PodSpec::validate`] before touching the kernel).
pub fn decode_pod_spec(body: &[u8]) -> Result<PodSpec, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed pod spec: {e}"))
}
