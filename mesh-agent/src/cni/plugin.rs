//! The `mesh-cni` plugin's commands. The runtime runs it chained after the plugin that set
//! up the pod's network, with the environment and configuration of the CNI spec:
//!
//! * `ADD`: asks the node agent to enroll the pod (the agent decides ambient or `none`) and
//!   passes the previous result on. Agent unreachable: the modes file the agent keeps
//!   decides; a pod that must be captured fails (try again later: fail closed), any other
//!   goes ahead uncaptured. No modes file either: fails, as nothing says the pod may go
//!   uncaptured.
//! * `DEL`: removes the pod from the agent; a pod it does not know, or an agent that is
//!   down (it drops pods whose namespace vanished), is success: DEL is idempotent.
//! * `CHECK`: a pod that must be captured must be enrolled with this network namespace.
//! * `STATUS`: ready when the agent answers.
//! * `VERSION`: the versions this plugin speaks.
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    CniAnswer, CniPod, DataplaneModes, Mode,
    spec::{self, CniError, Command, Invocation, NetConf, code},
};
use crate::api::client::{ApiClient, ClientError, Method};

/// How long the plugin waits for the agent (an enrollment takes milliseconds; a hung
/// agent must not hang the kubelet).
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the plugin prints and how it exits.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// The JSON for stdout (a result, the version object, or the error object); nothing
    /// for DEL, CHECK and STATUS when they succeed.
    pub stdout: Option<Value>,
    pub success: bool,
}

/// The plugin: reads the environment through `var` and the configuration from `stdin`.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // Errors before the configuration is read report the newest version we speak.
    let mut version = spec::SUPPORTED_VERSIONS[spec::SUPPORTED_VERSIONS.len() - 1].to_string();
    let result = (|| {
        let invocation = Invocation::from_env(var)?;
        if invocation.command == Command::Version {
            return Ok(Some(json!({
                "cniVersion": version,
                "supportedVersions": spec::SUPPORTED_VERSIONS,
            })));
        }
        let conf = NetConf::parse(stdin)?;
        version = conf.cni_version.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::new(code::AGENT_REFUSED, "cannot start", e.to_string()))?;
        runtime.block_on(command(&invocation, &conf))
    })();
    match result {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => Outcome {
            stdout: Some(e.to_json(&version)),
            success: false,
        },
    }
}

async fn command(inv: &Invocation, conf: &NetConf) -> Result<Option<Value>, CniError> {
    let agent = ApiClient::new(&conf.agent_socket);
    match inv.command {
        Command::Add => add(inv, conf, &agent).await.map(Some),
        Command::Del => del(inv, &agent).await.map(|()| None),
        Command::Check => check(inv, conf, &agent).await.map(|()| None),
        Command::Status => match call(&agent, Method::GET, "/v1/status", None).await {
            Ok(_) => Ok(None),
            Err(e) => Err(CniError::new(
                code::NOT_AVAILABLE,
                "the node agent is not available",
                e.to_string(),
            )),
        },
        // Answered before the configuration was read.
        Command::Version => Ok(None),
    }
}

/// The pod as the agent wants it, or `None` when the runtime did not say which pod this
/// is (not the kubelet): nothing to enroll.
fn cni_pod(inv: &Invocation, prev: &Value) -> Result<Option<CniPod>, CniError> {
    let Some((namespace, name)) = inv.pod() else {
        return Ok(None);
    };
    Ok(Some(CniPod {
        name: name.to_string(),
        namespace: namespace.to_string(),
        netns: inv.netns.clone().unwrap_or_default(),
        ips: spec::result_ips(prev)?,
        container_id: inv.container_id.clone().unwrap_or_default(),
    }))
}

async fn add(inv: &Invocation, conf: &NetConf, agent: &ApiClient) -> Result<Value, CniError> {
    let prev = conf.require_prev_result()?;
    // The result goes on in the version the runtime asked for.
    let mut result = prev.clone();
    if let Some(object) = result.as_object_mut() {
        object.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    }
    let Some(pod) = cni_pod(inv, prev)? else {
        eprintln!("mesh-cni: no K8S_POD_NAME/K8S_POD_NAMESPACE in CNI_ARGS: pod left alone");
        return Ok(result);
    };
    match ask(agent, "/v1/cni/add", &pod).await {
        Ok(_) => Ok(result),
        Err(e) => {
            fallback(conf, &pod, e)?;
            Ok(result)
        }
    }
}

async fn check(inv: &Invocation, conf: &NetConf, agent: &ApiClient) -> Result<(), CniError> {
    let prev = conf.require_prev_result()?;
    let Some(pod) = cni_pod(inv, prev)? else {
        return Ok(());
    };
    match ask(agent, "/v1/cni/check", &pod).await {
        Ok(CniAnswer {
            mode: Mode::Ambient,
            enrolled: false,
        }) => Err(CniError::new(
            code::NOT_ENROLLED,
            "the pod must be captured but is not enrolled with the node agent",
            format!("{}/{}", pod.namespace, pod.name),
        )),
        Ok(_) => Ok(()),
        Err(e) => fallback(conf, &pod, e),
    }
}

async fn del(inv: &Invocation, agent: &ApiClient) -> Result<(), CniError> {
    let Some((namespace, name)) = inv.pod() else {
        return Ok(());
    };
    match call(
        agent,
        Method::DELETE,
        &format!("/v1/pods/{namespace}/{name}"),
        None,
    )
    .await
    {
        Ok(_) => Ok(()),
        // Not enrolled (never, or already removed): nothing to do.
        Err(AgentError::Api(ClientError::Status { status: 404, .. })) => Ok(()),
        Err(AgentError::Unreachable(e)) => {
            eprintln!(
                "mesh-cni: DEL {namespace}/{name}: agent unreachable ({e}); it removes pods whose namespace is gone"
            );
            Ok(())
        }
        Err(e) => Err(CniError::new(
            code::AGENT_REFUSED,
            "the node agent failed to remove the pod",
            e.to_string(),
        )),
    }
}

/// The agent could not be asked (`error`): the modes file decides whether the pod may go
/// on uncaptured. An agent that answered with a refusal is an error as it is.
fn fallback(conf: &NetConf, pod: &CniPod, error: AgentError) -> Result<(), CniError> {
    let key = format!("{}/{}", pod.namespace, pod.name);
    let unreachable = match error {
        AgentError::Unreachable(e) => e,
        AgentError::Api(e) => {
            return Err(CniError::new(
                code::AGENT_REFUSED,
                format!("the node agent refused pod {key}"),
                e.to_string(),
            ));
        }
    };
    let path = conf.modes_file();
    let modes = DataplaneModes::load(&path).map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "the node agent is unavailable and nothing says whether pod {key} may go uncaptured"
            ),
            format!("agent: {unreachable}; modes file {}: {e}", path.display()),
        )
    })?;
    match modes.decide(&pod.namespace, &pod.name) {
        Mode::None => Ok(()),
        Mode::Ambient => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("the node agent is unavailable and pod {key} must be captured"),
            unreachable,
        )),
    }
}

/// Why asking the agent failed.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    /// No answer: not running, socket missing, timed out.
    #[error("{0}")]
    Unreachable(String),
    /// It answered, with an error.
    #[error("{0}")]
    Api(ClientError),
}

async fn call(
    agent: &ApiClient,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<bytes::Bytes, AgentError> {
    match tokio::time::timeout(AGENT_TIMEOUT, agent.call(method, path, body)).await {
        Err(_) => Err(AgentError::Unreachable(format!(
            "no answer within {} s",
            AGENT_TIMEOUT.as_secs()
        ))),
        Ok(Err(e @ ClientError::Status { .. })) => Err(AgentError::Api(e)),
        Ok(Err(e)) => Err(AgentError::Unreachable(e.to_string())),
        Ok(Ok(body)) => Ok(body),
    }
}

async fn ask(agent: &ApiClient, path: &str, pod: &CniPod) -> Result<CniAnswer, AgentError> {
    let body = serde_json::to_vec(pod).map_err(|e| AgentError::Unreachable(e.to_string()))?;
    let answer = call(agent, Method::POST, path, Some(body)).await?;
    serde_json::from_slice(&answer)
        .map_err(|e| AgentError::Unreachable(format!("unreadable answer from the agent: {e}")))
}
