//! CA keys in the forms openssl writes (PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`) as
//! PKCS#8, the only form rcgen reads on ring. Istio's own sample `ca-key.pem` is PKCS#1.
//!
//! A PKCS#8 `PrivateKeyInfo` is `SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING
//! <the PKCS#1 or SEC1 key> }`, and the AlgorithmIdentifier it needs (rsaEncryption with
//! NULL, or id-ecPublicKey with the curve) is exactly the one in the CA certificate's public
//! key: so the wrapping takes it from there rather than knowing any algorithm itself. A key
//! that does not belong to the certificate still fails, at the key comparison that follows.

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;

/// `key` as PKCS#8; `spki` is the DER SubjectPublicKeyInfo of the certificate it belongs to.
pub(crate) fn to_pkcs8(
    key: &PrivateKeyDer<'_>,
    spki: &[u8],
) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    let inner = match key {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            return Ok(PrivatePkcs8KeyDer::from(pkcs8.secret_pkcs8_der().to_vec()));
        }
        PrivateKeyDer::Pkcs1(rsa) => rsa.secret_pkcs1_der(),
        PrivateKeyDer::Sec1(ec) => ec.secret_sec1_der(),
        _ => return Err("unsupported private key format".to_string()),
    };
    let algorithm = first_element(spki)
        .ok_or("the certificate's public key is not a DER SubjectPublicKeyInfo")?;
    let mut body = tlv(INTEGER, &[0]);
    body.extend_from_slice(algorithm);
    body.extend(tlv(OCTET_STRING, inner));
    Ok(PrivatePkcs8KeyDer::from(tlv(SEQUENCE, &body)))
}

/// The first element (tag, length and value) inside the DER SEQUENCE `der`.
fn first_element(der: &[u8]) -> Option<&[u8]> {
    let (tag, contents, _) = split_tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, value, rest) = split_tlv(contents)?;
    let header = contents.len() - rest.len() - value.len();
    Some(&contents[..header + value.len()])
}

/// One DER element at the start of `der`: its tag, its value, and what follows it.
fn split_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits count the length bytes that follow (DER: at most a few).
        let count = usize::from(first & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

/// A DER element with definite length.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests;
