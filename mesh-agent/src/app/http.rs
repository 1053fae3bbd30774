//! `mesh-agent app http --listen ADDR... --name NAME`: the generic workload. Every image
//! the demo has no Bookinfo role for runs as this, one `--listen` per container port.
//!
//! It answers every request with a small JSON document naming itself (`service`, and the
//! pod, namespace and `labels.app`/`labels.version` it was given) and what it received:
//! method, path, headers, HTTP version (`version`) and the peer address it saw (so tests and users can see
//! where a request went, from where, and what a proxy added or rewrote); a client that
//! asks for `text/plain` gets one line instead. It speaks HTTP/1.1 and h2c; `?delay_ms=N`
//! makes it answer late (timeouts); a WebSocket upgrade gets an echo
//! ([`super::websocket`]). With `--tls-cert`/`--tls-key` it speaks HTTPS instead (a backend
//! that terminates TLS itself, behind a gateway's TLS passthrough).
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc};

use hyper::{Request, body::Incoming, header};

use super::serve::{self, Reply};
use super::websocket;

/// Who this workload is, as its answers say.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `service` in the answers (what the tests match on).
    pub name: String,
    /// The pod's name and namespace (empty outside the demo).
    pub pod: String,
    pub namespace: String,
    /// The pod's labels (`app` and `version` are reported).
    pub labels: BTreeMap<String, String>,
}

/// `--tls-cert` and `--tls-key`: PEM files of the certificate chain and its key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// An acceptor offering h2 and HTTP/1.1 (the process's default crypto provider).
    pub fn acceptor(&self) -> std::io::Result<tokio_rustls::TlsAcceptor> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read_error = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |e: rustls::pki_types::pem::Error| {
                std::io::Error::other(format!("reading {path}: {e}"))
            }
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(read_error(&self.cert))?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(read_error(&self.key))?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| std::io::Error::other(format!("certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Serves on every address, behind TLS with `tls`.
pub async fn run_workload(
    listen: Vec<SocketAddr>,
    identity: Identity,
    tls: Option<TlsFiles>,
) -> std::io::Result<()> {
    let identity = Arc::new(identity);
    let acceptor = tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    super::serve_all_with(listen, acceptor, move |req, peer| {
        let identity = identity.clone();
        async move { answer(req, &identity, peer).await }
    })
    .await
}

async fn answer(mut req: Request<Incoming>, identity: &Identity, peer: SocketAddr) -> Reply {
    if websocket::is_upgrade(&req) {
        return websocket::accept(&mut req);
    }
    let delay_ms = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|p| p.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let label = |key: &str| identity.labels.get(key).cloned().unwrap_or_default();
    if wants_text(&req) {
        let line = format!(
            "{} pod={} namespace={} app={} version={} {} {}\n",
            identity.name,
            identity.pod,
            identity.namespace,
            label("app"),
            label("version"),
            req.method(),
            req.uri().path()
        );
        return serve::reply(200, "text/plain; charset=utf-8", line);
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.into())))
        .collect();
    let body = serde_json::json!({
        "service": identity.name,
        "pod": identity.pod,
        "namespace": identity.namespace,
        "labels": {"app": label("app"), "version": label("version")},
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "peer": peer.to_string(),
        "headers": headers,
        // The HTTP version (what the tests of h2c check), not the `version` label.
        "version": format!("{:?}", req.version()),
    });
    serve::json(200, &body)
}

/// `Accept: text/plain` (and not JSON first): curl users who want a line, not a document.
fn wants_text<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            let text = accept.find("text/plain");
            let json = accept.find("application/json");
            match (text, json) {
                (Some(t), Some(j)) => t < j,
                (Some(_), None) => true,
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_plain_only_when_asked_for_before_json() {
        let with = |accept: &str| {
            let req = Request::get("/").header("accept", accept).body(()).unwrap();
            wants_text(&req)
        };
        assert!(with("text/plain"));
        assert!(with("text/plain, application/json;q=0.5"));
        assert!(!with("application/json, text/plain"));
        assert!(!with("*/*"));
        assert!(!wants_text(&Request::get("/").body(()).unwrap()));
    }
}
