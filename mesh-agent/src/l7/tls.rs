//! TLS termination for `Gateway` servers with protocol HTTPS (then HTTP) or TLS (then TCP
//! routes): `tls.mode` SIMPLE (the gateway's certificate) and MUTUAL (the client must
//! present a certificate issued by the server's CA). The material comes from the files the
//! server names (`serverCertificate`, `privateKey`, `caCertificates`, as Istio's
//! file-mounted gateways do) or from the Kubernetes Secret `credentialName` in the
//! Gateway's namespace (Istio's forms: `tls.crt`/`tls.key`/`ca.crt`, or the generic
//! `cert`/`key`/`cacert`; a MUTUAL server's CA may sit in `<name>-cacert` instead).
//! Secret values never appear in errors or logs: only the Secret's and the key's names.

use std::path::PathBuf;
use std::sync::Arc;

use mesh_config::Snapshot;
use mesh_config::istio::{Server, ServerTlsMode, ServerTlsSettings};
use mesh_config::snapshot::SecretInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a server's TLS settings cannot be served; names the Gateway, port and field.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Gateway {gateway} port {port}: {field}: {message}")]
    Unsupported {
        gateway: String,
        port: u32,
        field: &'static str,
        message: String,
    },
    #[error("Gateway {gateway} port {port}: {field}: cannot read {path}: {source}")]
    File {
        gateway: String,
        port: u32,
        field: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// Never carries a value of the Secret: its name and the key's.
    #[error(
        "Gateway {gateway} port {port} (server {server}): tls.credentialName: Secret {secret}: {message}"
    )]
    Secret {
        gateway: String,
        port: u32,
        server: String,
        secret: String,
        message: String,
    },
    #[error("Gateway {gateway} port {port}: {message}: {source}")]
    Rustls {
        gateway: String,
        port: u32,
        message: &'static str,
        #[source]
        source: rustls::Error,
    },
}

/// Whether the server's TLS settings are ones this gateway terminates: SIMPLE or MUTUAL,
/// with certificate files or a `credentialName`.
pub fn terminates(server: &Server) -> bool {
    let Some(tls) = &server.tls else {
        return false;
    };
    let mode_ok = matches!(
        tls.mode,
        None | Some(ServerTlsMode::Simple) | Some(ServerTlsMode::Mutual)
    );
    let files = tls.server_certificate.is_some() && tls.private_key.is_some();
    mode_ok && (files || tls.credential_name.is_some())
}

/// `namespace/name` of the Secrets a server's `credentialName` may read (the credential and
/// its `-cacert` companion).
fn secret_keys(gateway: &str, tls: &ServerTlsSettings) -> Option<(String, String)> {
    let name = tls.credential_name.as_deref()?;
    let namespace = gateway.split_once('/').map_or("", |(ns, _)| ns);
    Some((
        format!("{namespace}/{name}"),
        format!("{namespace}/{name}-cacert"),
    ))
}

/// The Secrets the server's TLS reads that exist now: a listener re-opens when they change
/// (or appear).
pub fn secrets_read(gateway: &str, server: &Server, snapshot: &Snapshot) -> Vec<Arc<SecretInfo>> {
    let Some((credential, ca)) = server.tls.as_ref().and_then(|t| secret_keys(gateway, t)) else {
        return Vec::new();
    };
    [credential, ca]
        .iter()
        .filter_map(|k| snapshot.secrets.get(k).cloned())
        .collect()
}

/// What a server presents and, for MUTUAL, the CA its clients' certificates must chain to.
struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
}

/// The rustls configuration of a server of Gateway `gateway` (`namespace/name`), offering
/// `alpn` (h2 and http/1.1 for HTTPS, nothing for TLS servers routed as TCP).
pub fn server_config(
    gateway: &str,
    server: &Server,
    snapshot: &Snapshot,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let port = server.port.number;
    let unsupported = |field: &'static str, message: &str| TlsError::Unsupported {
        gateway: gateway.to_string(),
        port,
        field,
        message: message.to_string(),
    };
    let tls = server
        .tls
        .as_ref()
        .ok_or_else(|| unsupported("tls", "a server that terminates TLS needs tls settings"))?;
    let mutual = match tls.mode {
        Some(ServerTlsMode::Mutual) => true,
        None | Some(ServerTlsMode::Simple) => false,
        Some(_) => {
            return Err(unsupported(
                "tls.mode",
                "only SIMPLE and MUTUAL are terminated here",
            ));
        }
    };
    let material = match secret_keys(gateway, tls) {
        Some((credential, ca)) => from_secret(gateway, server, snapshot, &credential, &ca, mutual)?,
        None => from_files(gateway, port, tls, mutual)?,
    };
    let rustls_error = |message: &'static str| {
        let gateway = gateway.to_string();
        move |source| TlsError::Rustls {
            gateway,
            port,
            message,
            source,
        }
    };
    let builder = rustls::ServerConfig::builder();
    let builder = match material.client_ca {
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in cas {
                roots
                    .add(cert)
                    .map_err(rustls_error("the client CA holds an unusable certificate"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| unsupported("tls.caCertificates", &e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(material.chain, material.key)
        .map_err(rustls_error("the certificate and key do not go together"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `serverCertificate`, `privateKey` and (MUTUAL) `caCertificates` files.
fn from_files(
    gateway: &str,
    port: u32,
    tls: &ServerTlsSettings,
    mutual: bool,
) -> Result<Material, TlsError> {
    let unsupported = |field: &'static str, message: &str| TlsError::Unsupported {
        gateway: gateway.to_string(),
        port,
        field,
        message: message.to_string(),
    };
    let file_error = |field: &'static str, path: &str| {
        let gateway = gateway.to_string();
        let path = PathBuf::from(path);
        move |source| TlsError::File {
            gateway,
            port,
            field,
            path,
            source,
        }
    };
    let cert_path = tls
        .server_certificate
        .as_deref()
        .ok_or_else(|| unsupported("tls.serverCertificate", "required (or tls.credentialName)"))?;
    let key_path = tls
        .private_key
        .as_deref()
        .ok_or_else(|| unsupported("tls.privateKey", "required (or tls.credentialName)"))?;
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(file_error("tls.serverCertificate", cert_path))?;
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(file_error("tls.privateKey", key_path))?;
    let client_ca = if mutual {
        let ca_path = tls.ca_certificates.as_deref().ok_or_else(|| {
            unsupported(
                "tls.caCertificates",
                "MUTUAL needs the client CA certificates",
            )
        })?;
        let cas = CertificateDer::pem_file_iter(ca_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(file_error("tls.caCertificates", ca_path))?;
        Some(cas)
    } else {
        None
    };
    Ok(Material {
        chain,
        key,
        client_ca,
    })
}

/// The Secret `credential` (and, for a MUTUAL server without a CA in it, `ca_secret`).
fn from_secret(
    gateway: &str,
    server: &Server,
    snapshot: &Snapshot,
    credential: &str,
    ca_secret: &str,
    mutual: bool,
) -> Result<Material, TlsError> {
    let secret_error = |secret: &str, message: String| TlsError::Secret {
        gateway: gateway.to_string(),
        port: server.port.number,
        server: server
            .name
            .clone()
            .or_else(|| server.port.name.clone())
            .unwrap_or_else(|| "unnamed".to_string()),
        secret: secret.to_string(),
        message,
    };
    let secret = snapshot.secrets.get(credential).ok_or_else(|| {
        secret_error(
            credential,
            "not found (the Secret must be in the Gateway's namespace)".to_string(),
        )
    })?;
    // Istio's TLS form first, then the generic one.
    let (cert_key, cert) = first_key(secret, ["tls.crt", "cert"])
        .ok_or_else(|| secret_error(credential, "has neither tls.crt nor cert".to_string()))?;
    let (key_key, key) = first_key(secret, ["tls.key", "key"])
        .ok_or_else(|| secret_error(credential, "has neither tls.key nor key".to_string()))?;
    // The PEM parser's messages are not passed on: they could quote the value.
    let chain = pem_certificates(cert)
        .ok_or_else(|| secret_error(credential, format!("{cert_key} is not a PEM certificate")))?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|_| secret_error(credential, format!("{key_key} is not a PEM private key")))?;
    let client_ca = if mutual {
        let ca_keys = ["ca.crt", "cacert"];
        let (from, (ca_key, ca)) = match first_key(secret, ca_keys) {
            Some(found) => (credential, found),
            None => {
                let companion = snapshot.secrets.get(ca_secret);
                match companion.and_then(|s| first_key(s, ca_keys)) {
                    Some(found) => (ca_secret, found),
                    None => {
                        return Err(secret_error(
                            credential,
                            format!(
                                "MUTUAL needs the client CA: ca.crt or cacert in it, or in the Secret {ca_secret}"
                            ),
                        ));
                    }
                }
            }
        };
        let cas = pem_certificates(ca)
            .ok_or_else(|| secret_error(from, format!("{ca_key} is not a PEM certificate")))?;
        Some(cas)
    } else {
        None
    };
    Ok(Material {
        chain,
        key,
        client_ca,
    })
}

/// The PEM certificates in a Secret's value; `None` for none or unparsable ones (the
/// parser's message is not kept: it could quote the value).
fn pem_certificates(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|c| !c.is_empty())
}

/// The first of `keys` the Secret has, with its value.
fn first_key<'s>(
    secret: &'s SecretInfo,
    keys: [&'static str; 2],
) -> Option<(&'static str, &'s [u8])> {
    keys.into_iter()
        .find_map(|k| secret.data.get(k).map(|v| (k, v)))
}
