//! The kinds the mesh reads, as one enum, and the dispatch from `apiVersion`/`kind` to the
//! typed struct: Kubernetes kinds through k8s-openapi, Istio kinds through [`crate::istio`].

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Place;
use crate::istio;
use crate::yaml::value::SpanMap;

/// One typed object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Service(Service),
    Endpoints(Endpoints),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
    Deployment(Deployment),
    StatefulSet(StatefulSet),
    ReplicaSet(ReplicaSet),
    DaemonSet(DaemonSet),
    Gateway(istio::Gateway),
    VirtualService(istio::VirtualService),
    DestinationRule(istio::DestinationRule),
    ServiceEntry(istio::ServiceEntry),
    WorkloadEntry(istio::WorkloadEntry),
    PeerAuthentication(istio::PeerAuthentication),
    AuthorizationPolicy(istio::AuthorizationPolicy),
    /// `gateway.networking.k8s.io` Gateway.
    K8sGateway(istio::K8sGateway),
    /// Read for Istio's mesh configuration (`istio-system/istio`); others are kept unused.
    ConfigMap(ConfigMap),
    /// Read for the gateway's `credentialName`; values never printed ([`crate::secret`]).
    Secret(crate::secret::Secret),
}

/// Which kind of object, without the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Service,
    Endpoints,
    EndpointSlice,
    Pod,
    Deployment,
    StatefulSet,
    ReplicaSet,
    DaemonSet,
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    PeerAuthentication,
    AuthorizationPolicy,
    K8sGateway,
    ConfigMap,
    Secret,
}

impl Kind {
    /// The `kind:` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Gateway | Kind::K8sGateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }

    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Dispatch on `apiVersion` and `kind`. `Ok(None)`: a kind the mesh does not read.
    /// `Err`: a kind it reads, under an apiVersion it does not accept.
    pub fn resolve(api_version: &str, kind: &str) -> Result<Option<Kind>, String> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let k = match (group, kind) {
            ("", "Namespace") => Kind::Namespace,
            ("", "ServiceAccount") => Kind::ServiceAccount,
            ("", "Service") => Kind::Service,
            ("", "Endpoints") => Kind::Endpoints,
            ("", "Pod") => Kind::Pod,
            ("", "ConfigMap") => Kind::ConfigMap,
            ("", "Secret") => Kind::Secret,
            ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
            ("apps", "Deployment") => Kind::Deployment,
            ("apps", "StatefulSet") => Kind::StatefulSet,
            ("apps", "ReplicaSet") => Kind::ReplicaSet,
            ("apps", "DaemonSet") => Kind::DaemonSet,
            ("networking.istio.io", "Gateway") => Kind::Gateway,
            ("networking.istio.io", "VirtualService") => Kind::VirtualService,
            ("networking.istio.io", "DestinationRule") => Kind::DestinationRule,
            ("networking.istio.io", "ServiceEntry") => Kind::ServiceEntry,
            ("networking.istio.io", "WorkloadEntry") => Kind::WorkloadEntry,
            ("security.istio.io", "PeerAuthentication") => Kind::PeerAuthentication,
            ("security.istio.io", "AuthorizationPolicy") => Kind::AuthorizationPolicy,
            ("gateway.networking.k8s.io", "Gateway") => Kind::K8sGateway,
            _ => return Ok(None),
        };
        let accepted: &[&str] = match group {
            "" | "discovery.k8s.io" | "apps" => &["v1"],
            "networking.istio.io" => &["v1alpha3", "v1beta1", "v1"],
            "security.istio.io" => &["v1beta1", "v1"],
            _ => &["v1", "v1beta1"],
        };
        if accepted.contains(&version) {
            Ok(Some(k))
        } else {
            let group_prefix = if group.is_empty() {
                String::new()
            } else {
                format!("{group}/")
            };
            let list: Vec<String> = accepted
                .iter()
                .map(|v| format!("{group_prefix}{v}"))
                .collect();
            Err(format!(
                "apiVersion {api_version} is not supported for {kind} (accepted: {})",
                list.join(", ")
            ))
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deserialization failure: the field path and serde's message.
#[derive(Debug, Clone)]
pub struct DecodeError {
    pub path: String,
    pub message: String,
}

/// Deserializes `value` into `T`, tracking the field path of a failure and collecting the
/// paths serde ignored (unknown fields of k8s-openapi types, which do not deny them).
pub fn decode_typed<T: DeserializeOwned>(
    value: Value,
    ignored: &mut Vec<String>,
) -> Result<T, DecodeError> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let result = serde_ignored::deserialize(de, |p| ignored.push(ignored_path(&p)));
    result.map_err(|e| {
        let path = track.path().to_string();
        DecodeError {
            path: if path == "." { String::new() } else { path },
            message: e.to_string(),
        }
    })
}

fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => crate::yaml::value::join(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

impl Object {
    /// Decodes a document already known to be of `kind`.
    pub fn decode(
        kind: Kind,
        value: Value,
        ignored: &mut Vec<String>,
    ) -> Result<Self, DecodeError> {
        Ok(match kind {
            Kind::Namespace => Object::Namespace(decode_typed(value, ignored)?),
            Kind::ServiceAccount => Object::ServiceAccount(decode_typed(value, ignored)?),
            Kind::Service => Object::Service(decode_typed(value, ignored)?),
            Kind::Endpoints => Object::Endpoints(decode_typed(value, ignored)?),
            Kind::EndpointSlice => Object::EndpointSlice(decode_typed(value, ignored)?),
            Kind::Pod => Object::Pod(decode_typed(value, ignored)?),
            Kind::Deployment => Object::Deployment(decode_typed(value, ignored)?),
            Kind::StatefulSet => Object::StatefulSet(decode_typed(value, ignored)?),
            Kind::ReplicaSet => Object::ReplicaSet(decode_typed(value, ignored)?),
            Kind::DaemonSet => Object::DaemonSet(decode_typed(value, ignored)?),
            Kind::Gateway => Object::Gateway(decode_typed(value, ignored)?),
            Kind::VirtualService => Object::VirtualService(decode_typed(value, ignored)?),
            Kind::DestinationRule => Object::DestinationRule(decode_typed(value, ignored)?),
            Kind::ServiceEntry => Object::ServiceEntry(decode_typed(value, ignored)?),
            Kind::WorkloadEntry => Object::WorkloadEntry(decode_typed(value, ignored)?),
            Kind::PeerAuthentication => Object::PeerAuthentication(decode_typed(value, ignored)?),
            Kind::AuthorizationPolicy => Object::AuthorizationPolicy(decode_typed(value, ignored)?),
            Kind::K8sGateway => Object::K8sGateway(decode_typed(value, ignored)?),
            Kind::ConfigMap => Object::ConfigMap(decode_typed(value, ignored)?),
            Kind::Secret => Object::Secret(decode_typed(value, ignored)?),
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::Deployment(_) => Kind::Deployment,
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::DaemonSet(_) => Kind::DaemonSet,
            Object::Gateway(_) => Kind::Gateway,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::WorkloadEntry(_) => Kind::WorkloadEntry,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::K8sGateway(_) => Kind::K8sGateway,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::ReplicaSet(o) => &o.metadata,
            Object::DaemonSet(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::DestinationRule(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::WorkloadEntry(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::K8sGateway(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::ServiceAccount(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Endpoints(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::StatefulSet(o) => &mut o.metadata,
            Object::ReplicaSet(o) => &mut o.metadata,
            Object::DaemonSet(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::VirtualService(o) => &mut o.metadata,
            Object::DestinationRule(o) => &mut o.metadata,
            Object::ServiceEntry(o) => &mut o.metadata,
            Object::WorkloadEntry(o) => &mut o.metadata,
            Object::PeerAuthentication(o) => &mut o.metadata,
            Object::AuthorizationPolicy(o) => &mut o.metadata,
            Object::K8sGateway(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let m = self.meta();
        ObjectKey {
            kind: self.kind(),
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

/// Identity of an object: kind, namespace (empty for cluster-scoped kinds), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Where an object came from: its file and the positions of its fields.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub file: Option<Arc<std::path::PathBuf>>,
    pub spans: Arc<SpanMap>,
}

impl Origin {
    /// A place naming this origin's file, the line of `field` and the object.
    pub fn place(&self, key: &ObjectKey, field: &str) -> Place {
        // Objects read from a file have positions (lines start at 1); from the API, none.
        let has_lines = self.spans.start.line > 0;
        let pos = self.spans.lookup(field);
        Place {
            file: self.file.as_deref().cloned(),
            line: has_lines.then_some(pos.line),
            column: has_lines.then_some(pos.column),
            object: Some(key.to_string()),
            field: (!field.is_empty()).then(|| field.to_string()),
        }
    }
}

/// An object and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedObject {
    pub object: Object,
    pub origin: Origin,
}

impl LoadedObject {
    pub fn key(&self) -> ObjectKey {
        self.object.key()
    }

    pub fn place(&self, field: &str) -> Place {
        self.origin.place(&self.key(), field)
    }
}

/// The objects that count when the same kind/namespace/name appears more than once (in two
/// files, or twice in one): the last one, as with successive `kubectl apply`, with a warning.
pub fn latest_by_key<'a>(
    objects: impl IntoIterator<Item = &'a LoadedObject>,
) -> (Vec<&'a LoadedObject>, Vec<crate::error::ConfigWarning>) {
    let mut index: std::collections::HashMap<ObjectKey, usize> = Default::default();
    let mut out: Vec<Option<&LoadedObject>> = Vec::new();
    let mut warnings = Vec::new();
    for o in objects {
        let key = o.key();
        if let Some(&prev) = index.get(&key)
            && let Some(old) = out.get_mut(prev).and_then(Option::take)
        {
            let was = old
                .origin
                .file
                .as_deref()
                .map(|f| format!(" (first defined in {})", f.display()))
                .unwrap_or_default();
            warnings.push(crate::error::ConfigWarning {
                place: o.place(""),
                message: format!("defined again; this definition replaces the earlier one{was}"),
            });
        }
        index.insert(key, out.len());
        out.push(Some(o));
    }
    (out.into_iter().flatten().collect(), warnings)
}
