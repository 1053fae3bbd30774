//! TLS termination for `Gateway` servers with protocol HTTPS: `tls.mode` SIMPLE (the
//! gateway's certificate) and MUTUAL (the client must present a certificate issued by
//! `caCertificates`), from the certificate files the server names (`serverCertificate`,
//! `privateKey`, `caCertificates`, as Istio's file-mounted gateways do). `credentialName`
//! (Kubernetes Secrets) is not read yet. ALPN offers h2 and http/1.1.

use std::path::PathBuf;
use std::sync::Arc;

use mesh_config::istio::{Server, ServerTlsMode};
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
    #[error("Gateway {gateway} port {port}: {message}: {source}")]
    Rustls {
        gateway: String,
        port: u32,
        message: &'static str,
        #[source]
        source: rustls::Error,
    },
}

/// Whether the server is HTTPS with settings this gateway can terminate.
pub fn terminates(server: &Server) -> bool {
    let Some(tls) = &server.tls else {
        return false;
    };
    let mode_ok = matches!(
        tls.mode,
        None | Some(ServerTlsMode::Simple) | Some(ServerTlsMode::Mutual)
    );
    mode_ok && tls.server_certificate.is_some() && tls.private_key.is_some()
}

/// The rustls configuration of an HTTPS server of Gateway `gateway` (`namespace/name`).
pub fn server_config(
    gateway: &str,
    server: &Server,
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
        .ok_or_else(|| unsupported("tls", "an HTTPS server needs tls settings"))?;
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
    let cert_path = tls.server_certificate.as_deref().ok_or_else(|| {
        unsupported(
            "tls.serverCertificate",
            "required (credentialName is not read yet)",
        )
    })?;
    let key_path = tls.private_key.as_deref().ok_or_else(|| {
        unsupported(
            "tls.privateKey",
            "required (credentialName is not read yet)",
        )
    })?;
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(file_error("tls.serverCertificate", cert_path))?;
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(file_error("tls.privateKey", key_path))?;
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
    let builder = match tls.mode {
        Some(ServerTlsMode::Mutual) => {
            let ca_path = tls.ca_certificates.as_deref().ok_or_else(|| {
                unsupported(
                    "tls.caCertificates",
                    "MUTUAL needs the client CA certificates",
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_path)
                .map_err(file_error("tls.caCertificates", ca_path))?
            {
                let cert = cert.map_err(file_error("tls.caCertificates", ca_path))?;
                roots.add(cert).map_err(rustls_error(
                    "tls.caCertificates holds an unusable certificate",
                ))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| unsupported("tls.caCertificates", &e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None | Some(ServerTlsMode::Simple) => builder.with_no_client_auth(),
        Some(_) => {
            return Err(unsupported(
                "tls.mode",
                "only SIMPLE and MUTUAL are terminated here",
            ));
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(rustls_error("the certificate and key do not go together"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
