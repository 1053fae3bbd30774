//! Kubernetes `Secret` (v1): read for the gateway's `credentialName` (a server's certificate,
//! key and client CA). Its own type rather than k8s-openapi's so that the values can never
//! be printed: `Debug` and `Serialize` (the config dump) show the keys only, and decoding
//! errors name the key, never the value.
//!
//! `data` values are base64 (decoded here with the `base64` crate; a value that is not
//! base64 is an error naming `data.<key>`), `stringData` values are plain text and win over
//! `data` for the same key, as the API server merges them.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize, Serializer};

/// A `Secret` as written (values still encoded).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    #[serde(default, serialize_with = "keys_only")]
    pub data: BTreeMap<String, String>,
    #[serde(default, serialize_with = "keys_only")]
    pub string_data: BTreeMap<String, String>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("type", &self.type_)
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("string_data", &self.string_data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A value of `data` is not base64: names the key only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data.{key}: not base64 (the value is not shown)")]
pub struct SecretDecodeError {
    pub key: String,
}

impl Secret {
    /// The values, decoded: `data` from base64, then `stringData` over it.
    pub fn decoded(&self) -> Result<SecretData, SecretDecodeError> {
        let mut out = BTreeMap::new();
        for (key, value) in &self.data {
            // The API server accepts no whitespace, but YAML folded scalars bring some.
            let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| SecretDecodeError { key: key.clone() })?;
            out.insert(key.clone(), bytes);
        }
        for (key, value) in &self.string_data {
            out.insert(key.clone(), value.as_bytes().to_vec());
        }
        Ok(SecretData(out))
    }
}

/// A Secret's decoded values by key. `Debug` and `Serialize` list the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(BTreeMap<String, Vec<u8>>);

impl SecretData {
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Serialize for SecretData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.keys())
    }
}

fn keys_only<S: Serializer>(map: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(map.keys())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Secret {
            api_version: "v1".into(),
            kind: "Secret".into(),
            metadata: ObjectMeta::default(),
            type_: Some("kubernetes.io/tls".into()),
            immutable: None,
            data: map(data),
            string_data: map(string_data),
        }
    }

    #[test]
    fn data_is_base64_and_string_data_wins() {
        let s = secret(
            &[("tls.crt", "Y2VydA=="), ("tls.key", "a2V5\n")],
            &[("tls.key", "plain")],
        );
        let d = s.decoded().expect("valid");
        assert_eq!(d.get("tls.crt"), Some(&b"cert"[..]));
        assert_eq!(d.get("tls.key"), Some(&b"plain"[..]));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["tls.crt", "tls.key"]);
    }

    #[test]
    fn values_are_never_shown() {
        let s = secret(
            &[("tls.key", "c2VjcmV0LWtleQ==")],
            &[("ca.crt", "hidden-ca")],
        );
        let debug = format!("{s:?} {:?}", s.decoded().expect("valid"));
        let json = serde_json::to_string(&s).expect("serializes");
        for text in [&debug, &json] {
            assert!(!text.contains("c2VjcmV0LWtleQ"), "{text}");
            assert!(!text.contains("secret-key"), "{text}");
            assert!(!text.contains("hidden-ca"), "{text}");
            assert!(text.contains("tls.key"), "{text}");
        }
        let bad = secret(&[("tls.key", "not base64 !!secret")], &[]);
        let err = bad.decoded().expect_err("not base64").to_string();
        assert_eq!(err, "data.tls.key: not base64 (the value is not shown)");
    }

    #[test]
    fn secrets_reach_the_snapshot_decoded_and_bad_ones_are_refused() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: web-cert, namespace: edge}\n\
                    type: kubernetes.io/tls\ndata: {tls.crt: Y2VydA==}\nstringData: {tls.key: key}\n";
        let loaded = crate::load_str(yaml, None).unwrap_or_else(|e| panic!("{e}"));
        let snap = crate::Snapshot::build(&loaded).unwrap_or_else(|e| panic!("{e}"));
        let info = &snap.secrets["edge/web-cert"];
        assert_eq!(info.data.get("tls.crt"), Some(&b"cert"[..]));
        assert_eq!(info.data.get("tls.key"), Some(&b"key"[..]));

        let bad = yaml.replace("Y2VydA==", "not!base64secretvalue");
        let err = match crate::load_str(&bad, None) {
            Ok(loaded) => crate::Snapshot::build(&loaded)
                .map(|_| ())
                .expect_err("bad base64 is refused")
                .to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("Secret edge/web-cert"), "{err}");
        assert!(err.contains("data.tls.crt"), "{err}");
        assert!(!err.contains("secretvalue"), "{err}");
    }
}
