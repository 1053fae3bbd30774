//! The agent's local API: JSON over HTTP/1.1 on a unix socket (the CNI plugin, the demo,
//! the tests and `mesh-agent status` call it; `curl --unix-socket` works too).
//!
//! | method and path                      | does                                 |
//! |--------------------------------------|--------------------------------------|
//! | `GET /v1/status`                     | programs, counters, pods, connections|
//! | `GET /v1/pods`                       | enrolled pods                        |
//! | `POST /v1/pods` (a `PodSpec`)        | enroll a pod: 201, 400, 409, 500     |
//! | `DELETE /v1/pods/{namespace}/{name}` | remove a pod: 200, 404               |
//! | `POST /v1/cni/add` (a `CniPod`)      | CNI ADD: enroll if ambient: 200 + mode|
//! | `POST /v1/cni/check` (a `CniPod`)    | CNI CHECK: mode, enrolled or not     |
//! | `GET /v1/config_dump`                | the configuration snapshot (JSON)    |
//! | `GET /metrics`                       | Prometheus text (Istio metric names) |
//! | `POST /v1/config?file=NAME` (YAML)   | apply resources: 200, or 400 + errors|
pub mod client;
pub mod request;
pub mod server;

/// Error body of every non-2xx answer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub error: String,
}
