//! PEM in and out: certificates and private keys as Istio's `cacerts` files and openssl hold
//! them, with errors naming the file.

use std::path::Path;

use pem::{EncodeConfig, LineEnding, Pem};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use crate::IdentityError;

const CERTIFICATE: &str = "CERTIFICATE";
const PKCS8_KEY: &str = "PRIVATE KEY";
const PKCS1_KEY: &str = "RSA PRIVATE KEY";
const SEC1_KEY: &str = "EC PRIVATE KEY";
/// `openssl ecparam -genkey` writes this block before the key; it carries nothing the key
/// does not.
const EC_PARAMETERS: &str = "EC PARAMETERS";

/// Every certificate in a PEM file, in order; anything but certificates is an error, and so
/// is a file with none.
pub(crate) fn certificates(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let blocks = decode(path, bytes)?;
    let mut certs = Vec::with_capacity(blocks.len());
    for block in blocks {
        if block.tag() != CERTIFICATE {
            return Err(pem_error(
                path,
                format!("unexpected {:?} block among certificates", block.tag()),
            ));
        }
        certs.push(CertificateDer::from(block.into_contents()));
    }
    if certs.is_empty() {
        return Err(pem_error(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The one private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), unencrypted.
pub(crate) fn private_key(
    path: &Path,
    bytes: &[u8],
) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let mut keys = Vec::new();
    for block in decode(path, bytes)? {
        let der = block.contents().to_vec();
        let key = match block.tag() {
            PKCS8_KEY => PrivateKeyDer::from(PrivatePkcs8KeyDer::from(der)),
            PKCS1_KEY => PrivateKeyDer::from(PrivatePkcs1KeyDer::from(der)),
            SEC1_KEY => PrivateKeyDer::from(PrivateSec1KeyDer::from(der)),
            EC_PARAMETERS => continue,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(pem_error(
                    path,
                    "the key is encrypted; the CA key must be stored unencrypted (mode 0600)",
                ));
            }
            other => {
                return Err(pem_error(
                    path,
                    format!("unexpected {other:?} block where a private key should be"),
                ));
            }
        };
        keys.push(key);
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err(pem_error(path, "holds no private key")),
        n => Err(pem_error(
            path,
            format!("holds {n} private keys, expected one"),
        )),
    }
}

/// Certificates as PEM with LF line endings (what openssl and Istio write).
pub(crate) fn encode_certificates<'a>(
    certs: impl IntoIterator<Item = &'a CertificateDer<'a>>,
) -> String {
    let blocks: Vec<Pem> = certs
        .into_iter()
        .map(|cert| Pem::new(CERTIFICATE, cert.as_ref()))
        .collect();
    pem::encode_many_config(&blocks, config())
}

/// A private key as PEM, labelled by its format.
pub(crate) fn encode_key(key: &PrivateKeyDer<'_>) -> String {
    let tag = match key {
        PrivateKeyDer::Pkcs1(_) => PKCS1_KEY,
        PrivateKeyDer::Sec1(_) => SEC1_KEY,
        _ => PKCS8_KEY,
    };
    pem::encode_config(&Pem::new(tag, key.secret_der()), config())
}

fn config() -> EncodeConfig {
    EncodeConfig::new().set_line_ending(LineEnding::LF)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<Pem>, IdentityError> {
    pem::parse_many(bytes).map_err(|e| pem_error(path, format!("unreadable PEM: {e}")))
}

fn pem_error(path: &Path, reason: impl Into<String>) -> IdentityError {
    IdentityError::Pem {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
