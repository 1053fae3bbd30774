//! The CNI wire format (spec 1.0/1.1) the plugin speaks with a container runtime, as pure
//! functions: the environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`), the network configuration on stdin (with `prevResult` from the
//! plugin before this one in the chain), and the error object printed on stdout.
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// The CNI versions whose configuration and results the plugin accepts: it only passes the
/// previous result on, so every version with `prevResult` chaining (0.3.0 on) works.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Well-known error codes of the spec (section "Error"); 100 and up are the plugin's.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The node agent refused or failed the request.
    pub const AGENT_REFUSED: u32 = 100;
    /// `CHECK`: a pod that must be captured is not enrolled.
    pub const NOT_ENROLLED: u32 = 101;
}

/// A failure reported to the runtime: printed on stdout as the spec's error object, and
/// the plugin exits non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
}

/// What the runtime says in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;` (the kubelet's `K8S_POD_NAME`,
    /// `K8S_POD_NAMESPACE`, ...).
    pub args: BTreeMap<String, String>,
}

impl Invocation {
    /// Reads the environment through `var` (`std::env::var` in the plugin). ADD and CHECK
    /// need the container id, the namespace and the interface; DEL only the container id
    /// (its namespace may be gone already).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let missing = |name: &str| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("{name} is not set"),
                "the runtime must set it for this command",
            )
        };
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    "unknown CNI_COMMAND",
                    other.to_string(),
                ));
            }
            None => return Err(missing("CNI_COMMAND")),
        };
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty());
        let invocation = Invocation {
            command,
            container_id: non_empty("CNI_CONTAINERID"),
            netns: non_empty("CNI_NETNS").map(PathBuf::from),
            ifname: non_empty("CNI_IFNAME"),
            args: parse_args(var("CNI_ARGS").as_deref().unwrap_or("")),
        };
        let needs = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"][..],
            Command::Del => &["CNI_CONTAINERID"][..],
            Command::Status | Command::Version => &[][..],
        };
        for name in needs {
            if non_empty(name).is_none() {
                return Err(missing(name));
            }
        }
        Ok(invocation)
    }

    /// The pod's `(namespace, name)` from the kubelet's `CNI_ARGS`, if both are there.
    pub fn pod(&self) -> Option<(&str, &str)> {
        let ns = self.args.get("K8S_POD_NAMESPACE")?;
        let name = self.args.get("K8S_POD_NAME")?;
        Some((ns.as_str(), name.as_str()))
    }
}

/// `CNI_ARGS`: `A=1;B=2`; pairs without `=` are ignored.
pub fn parse_args(text: &str) -> BTreeMap<String, String> {
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The plugin's network configuration (one entry of the conflist, as the runtime hands
/// it over). Fields the plugin does not know (the runtime's `runtimeConfig`, ...) are
/// allowed, as the spec asks.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// The node agent's API socket.
    #[serde(default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    /// The copy of the agent's dataplane modes, read when the agent is down. Default: the
    /// agent's `dataplane-modes.json` next to its socket (the agent's state directory).
    #[serde(default)]
    pub modes_file: Option<PathBuf>,
    /// The previous plugin's result: passed through, and the pod's addresses read from it.
    #[serde(default)]
    pub prev_result: Option<Value>,
}

fn default_agent_socket() -> PathBuf {
    PathBuf::from("/run/mesh-agent/node/agent.sock")
}

/// The file name of the modes copy in the agent's state directory.
pub const MODES_FILE: &str = "dataplane-modes.json";

impl NetConf {
    /// Parses stdin and checks the version.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "cannot decode the network configuration",
                e.to_string(),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "unsupported cniVersion",
                format!(
                    "{} (supported: {})",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    pub fn modes_file(&self) -> PathBuf {
        self.modes_file.clone().unwrap_or_else(|| {
            self.agent_socket
                .parent()
                .map(|dir| dir.join(MODES_FILE))
                .unwrap_or_else(|| PathBuf::from(MODES_FILE))
        })
    }

    /// The previous result, required: the plugin runs chained after the one that gave
    /// the pod its interface and addresses.
    pub fn require_prev_result(&self) -> Result<&Value, CniError> {
        self.prev_result.as_ref().ok_or_else(|| {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "no prevResult",
                "mesh-cni must be chained after the plugin that sets up the pod's network",
            )
        })
    }
}

/// The pod's addresses in a result (`ips[].address`, `198.18.5.2/24`).
pub fn result_ips(result: &Value) -> Result<Vec<IpAddr>, CniError> {
    let bad =
        |details: String| CniError::new(code::INVALID_NETWORK_CONFIG, "bad prevResult", details);
    let Some(ips) = result.get("ips").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    ips.iter()
        .map(|entry| {
            let text = entry
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("an ips entry has no address: {entry}")))?;
            let addr = text.split_once('/').map_or(text, |(addr, _)| addr);
            addr.parse()
                .map_err(|_| bad(format!("{text:?} is not an address")))
        })
        .collect()
}

#[cfg(test)]
mod tests;
