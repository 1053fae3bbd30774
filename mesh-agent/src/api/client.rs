//! A client for the local API, used by the CLI (`status`, `enroll`, `unenroll`), the demo
//! and the tests.
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the agent: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the agent answered {status}: {body}")]
    Status { status: u16, body: String },
}

pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        ApiClient {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    /// Sends one request; a non-2xx answer is an error carrying the agent's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "mesh-agent")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(ClientError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }

    pub async fn status(&self) -> Result<serde_json::Value, ClientError> {
        let body = self.call(Method::GET, "/v1/status", None).await?;
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    pub async fn enroll(&self, spec: &crate::pod::PodSpec) -> Result<(), ClientError> {
        let body = serde_json::to_vec(spec).unwrap_or_default();
        self.call(Method::POST, "/v1/pods", Some(body))
            .await
            .map(|_| ())
    }

    /// Applies multi-document YAML under the name `file`; returns the agent's answer.
    pub async fn apply_config(
        &self,
        file: &str,
        yaml: Vec<u8>,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!(
            "/v1/config?file={}",
            file.replace(['&', ' ', '?', '#'], "_")
        );
        let body = self.call(Method::POST, &path, Some(yaml)).await?;
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// The Prometheus text exposition.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let body = self.call(Method::GET, "/metrics", None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn config_dump(&self) -> Result<serde_json::Value, ClientError> {
        let body = self.call(Method::GET, "/v1/config_dump", None).await?;
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    pub async fn unenroll(&self, namespace: &str, name: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/pods/{namespace}/{name}"),
            None,
        )
        .await
        .map(|_| ())
    }
}
