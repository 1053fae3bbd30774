//! The CustomResourceDefinitions of the Istio kinds the mesh reads, so a cluster without
//! Istio can hold them: one per kind of `mesh-config`'s `istio` module, its `spec` schema
//! generated from that very type (schemars), so the API server refuses what the agent would
//! refuse to decode instead of storing it and leaving the agent to report it.
//!
//! The schema is made structural, as the API server requires of a CRD (every node typed, no
//! `$ref`, `oneOf` branches holding only value checks), by kube-core's rewriter, the one
//! `#[derive(CustomResource)]` applies: `Option<T>` becomes `nullable`, externally tagged
//! enums (`StringMatch`: one of `exact`, `prefix`, `regex`) become one object whose
//! `oneOf` branches each require one key. `deny_unknown_fields` cannot be said in a
//! structural schema (`additionalProperties` beside `properties` is not allowed): the API
//! server prunes unknown fields instead, and `kubectl apply --validate=strict` refuses them.
//!
//! Names, versions and storage versions are Istio's own (`vs`, `dr`, `gw`, `se`, `we`, `pa`,
//! `ap`; `networking.istio.io` serves v1, v1beta1 and v1alpha3 and stores v1alpha3,
//! `security.istio.io` serves v1 and v1beta1 and stores v1beta1), so objects written against
//! Istio's CRDs read the same here and one set can replace the other without migrating
//! stored objects. Where Istio itself is installed, render with `--set crds=false`.
//!
//! Not here: the Kubernetes Gateway API's `Gateway`, whose CRDs come from that project.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceSubresourceStatus, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps,
};
use kube_core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
use mesh_config::istio;
use schemars::{JsonSchema, Schema, generate::SchemaSettings, transform::RecursiveTransform};
use serde_json::{Value, json};

use super::{ManifestError, meta};

const NETWORKING: &str = "networking.istio.io";
const SECURITY: &str = "security.istio.io";
/// Istio's served versions, newest first; the stored one is [`IstioKind::storage`].
const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// One Istio kind served as a custom resource.
#[derive(Debug, Clone, Copy)]
pub struct IstioKind {
    pub group: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub short_name: &'static str,
    pub versions: &'static [&'static str],
    /// The version objects are stored as (one of `versions`).
    pub storage: &'static str,
    /// The JSON Schema of the kind's `spec` type, as schemars derives it.
    spec_schema: fn() -> Value,
}

impl IstioKind {
    /// `<plural>.<group>`, the name the API server requires of the CRD.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// `group/version` of each served version.
    pub fn api_versions(&self) -> impl Iterator<Item = String> + '_ {
        self.versions.iter().map(|v| format!("{}/{v}", self.group))
    }
}

/// Every kind of `mesh-config`'s `istio` module that `object.rs` reads, in the order the
/// CRDs are rendered.
pub const KINDS: &[IstioKind] = &[
    IstioKind {
        group: NETWORKING,
        kind: "VirtualService",
        plural: "virtualservices",
        short_name: "vs",
        versions: NETWORKING_VERSIONS,
        storage: "v1alpha3",
        spec_schema: raw_schema::<istio::VirtualServiceSpec>,
    },
    IstioKind {
        group: NETWORKING,
        kind: "DestinationRule",
        plural: "destinationrules",
        short_name: "dr",
        versions: NETWORKING_VERSIONS,
        storage: "v1alpha3",
        spec_schema: raw_schema::<istio::DestinationRuleSpec>,
    },
    IstioKind {
        group: NETWORKING,
        kind: "Gateway",
        plural: "gateways",
        short_name: "gw",
        versions: NETWORKING_VERSIONS,
        storage: "v1alpha3",
        spec_schema: raw_schema::<istio::GatewaySpec>,
    },
    IstioKind {
        group: NETWORKING,
        kind: "ServiceEntry",
        plural: "serviceentries",
        short_name: "se",
        versions: NETWORKING_VERSIONS,
        storage: "v1alpha3",
        spec_schema: raw_schema::<istio::ServiceEntrySpec>,
    },
    IstioKind {
        group: NETWORKING,
        kind: "WorkloadEntry",
        plural: "workloadentries",
        short_name: "we",
        versions: NETWORKING_VERSIONS,
        storage: "v1alpha3",
        spec_schema: raw_schema::<istio::WorkloadEntrySpec>,
    },
    IstioKind {
        group: SECURITY,
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        short_name: "pa",
        versions: SECURITY_VERSIONS,
        storage: "v1beta1",
        spec_schema: raw_schema::<istio::PeerAuthenticationSpec>,
    },
    IstioKind {
        group: SECURITY,
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        short_name: "ap",
        versions: SECURITY_VERSIONS,
        storage: "v1beta1",
        spec_schema: raw_schema::<istio::AuthorizationPolicySpec>,
    },
];

/// `T`'s schema in OpenAPI 3.0 form, every subschema inlined (a CRD has nowhere to put
/// definitions), made structural.
fn raw_schema<T: JsonSchema>() -> Value {
    let mut schema = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(OptionalEnum)
        .with_transform(OptionalIntOrString)
        .with_transform(StructuralSchemaRewriter)
        .with_transform(RecursiveTransform(for_the_api_server as fn(&mut Schema)))
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    // The Rust type's name says nothing to a cluster's user.
    if let Some(root) = schema.as_object_mut() {
        root.remove("title");
    }
    schema
}

/// Formats the API server knows (others it ignores; `minimum: 0` still says "unsigned").
const KUBERNETES_FORMATS: &[&str] = &["int32", "int64", "float", "double"];

/// What schemars writes that suits a JSON Schema but not a CRD: `default` (the API server
/// would write `hosts: []` or `value: 0` into every stored object, where the mesh's decoder
/// supplies the same defaults when reading), `null` among the values of a `nullable` enum
/// (said once by `nullable`), formats of Rust integer types (`uint32`).
fn for_the_api_server(schema: &mut Schema) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    node.remove("default");
    if node.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::Array(values)) = node.get_mut("enum")
    {
        values.retain(|v| !v.is_null());
    }
    if node
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !KUBERNETES_FORMATS.contains(&f))
    {
        node.remove("format");
    }
}

/// The whole object's schema around a kind's `spec`: `apiVersion`, `kind` and `metadata`
/// are checked by the API server itself; `status` is written by controllers (Istio's
/// analyzers) and kept as it comes.
fn object_schema(spec: Value) -> Value {
    json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string" },
            "metadata": { "type": "object" },
            "spec": spec,
            "status": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
    })
}

/// The kind's typed `openAPIV3Schema`. k8s-openapi drops what `JSONSchemaProps` has no
/// field for, so the typed schema is compared with the generated one: a keyword lost on
/// the way would otherwise be a check the cluster silently does not make.
pub fn schema(kind: &IstioKind) -> Result<JSONSchemaProps, ManifestError> {
    let generated = object_schema((kind.spec_schema)());
    let error = |message: String| ManifestError::Schema {
        kind: kind.kind,
        message,
    };
    let typed: JSONSchemaProps =
        serde_json::from_value(generated.clone()).map_err(|e| error(e.to_string()))?;
    let back = serde_json::to_value(&typed).map_err(|e| error(e.to_string()))?;
    if let Some(path) = first_difference(&generated, &back, "") {
        return Err(error(format!(
            "{path} does not survive the typed JSONSchemaProps"
        )));
    }
    Ok(typed)
}

/// Where two JSON values differ (numbers compared by value: `JSONSchemaProps` holds
/// `minimum`/`maximum` as floats, schemars writes integers).
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64() != y.as_f64()).then(|| path.into()),
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                let missing = x
                    .keys()
                    .chain(y.keys())
                    .find(|k| !(x.contains_key(*k) && y.contains_key(*k)));
                return Some(format!("{path}/{}", missing.map_or("?", String::as_str)));
            }
            x.iter().find_map(|(k, v)| match y.get(k) {
                Some(w) => first_difference(v, w, &format!("{path}/{k}")),
                None => Some(format!("{path}/{k}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}/{i}"))),
        _ => (a != b).then(|| path.into()),
    }
}

/// The CRD of one kind: every served version with the same schema (the types accept every
/// version alike) and the status subresource.
pub fn definition(kind: &IstioKind) -> Result<CustomResourceDefinition, ManifestError> {
    let schema = schema(kind)?;
    let category = kind.group.replace('.', "-");
    let versions = kind
        .versions
        .iter()
        .map(|version| CustomResourceDefinitionVersion {
            name: version.to_string(),
            served: true,
            storage: *version == kind.storage,
            schema: Some(CustomResourceValidation {
                open_api_v3_schema: Some(schema.clone()),
            }),
            subresources: Some(CustomResourceSubresources {
                status: Some(CustomResourceSubresourceStatus(json!({}))),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Ok(CustomResourceDefinition {
        metadata: meta(&kind.crd_name(), None),
        spec: CustomResourceDefinitionSpec {
            group: kind.group.into(),
            names: CustomResourceDefinitionNames {
                kind: kind.kind.into(),
                list_kind: Some(format!("{}List", kind.kind)),
                plural: kind.plural.into(),
                singular: Some(kind.kind.to_lowercase()),
                short_names: Some(vec![kind.short_name.into()]),
                // As Istio's: `kubectl get istio-io` lists them all.
                categories: Some(vec!["istio-io".into(), category]),
            },
            scope: "Namespaced".into(),
            versions,
            ..Default::default()
        },
        status: None,
    })
}

/// Every kind's CRD, in [`KINDS`] order.
pub fn definitions() -> Result<Vec<CustomResourceDefinition>, ManifestError> {
    KINDS.iter().map(definition).collect()
}

#[cfg(test)]
mod tests;
