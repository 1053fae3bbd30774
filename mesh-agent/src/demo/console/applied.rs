//! Which of the user's objects apply to one workload, as Kiali's workload page lists
//! them: the Services selecting its pod, the VirtualServices and DestinationRules of those
//! Services' hosts, and the PeerAuthentications and AuthorizationPolicies that select the
//! pod (by labels, by namespace, mesh-wide from the root namespace) or target one of its
//! Services; with what validation says of each.
use std::collections::BTreeMap;

use mesh_config::{ConfigWarning, LoadedObject, Object, error::ConfigError};

/// A workload the demo runs (one pod).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
}

/// One object applying to the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedObject {
    /// `VirtualService default/reviews`, as validation messages name objects.
    pub object: String,
    /// Why it applies.
    pub because: String,
    /// What validation says of it: errors first, then warnings.
    pub messages: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The FQDNs of the Services selecting the pod.
    pub services: Vec<String>,
    pub objects: Vec<AppliedObject>,
}

/// Istio's root namespace: policies there apply mesh-wide.
const ROOT_NAMESPACE: &str = "istio-system";

pub fn applied(
    objects: &[LoadedObject],
    errors: &[ConfigError],
    warnings: &[ConfigWarning],
    workload: &Workload,
) -> Applied {
    let ns = workload.namespace.as_str();
    let selects = |labels: &BTreeMap<String, String>| {
        labels
            .iter()
            .all(|(k, v)| workload.labels.get(k) == Some(v))
    };
    let mut services = Vec::new();
    let mut service_names = Vec::new();
    for object in objects {
        if let Object::Service(service) = &object.object {
            let meta = &service.metadata;
            let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
            if meta.namespace.as_deref().unwrap_or("default") == ns
                && selector.is_some_and(|s| !s.is_empty() && selects(s))
            {
                let name = meta.name.clone().unwrap_or_default();
                services.push(format!("{name}.{ns}.svc.cluster.local"));
                service_names.push(name);
            }
        }
    }
    let names_a_service = |host: &str, object_ns: &str| {
        service_names.iter().any(|name| {
            let fqdn = format!("{name}.{ns}.svc.cluster.local");
            host == fqdn
                || host == format!("{name}.{ns}")
                || (host == name && object_ns == ns)
                || host == "*"
        })
    };
    let mut applied = Vec::new();
    for object in objects {
        let meta = object.object.meta();
        let object_ns = meta.namespace.as_deref().unwrap_or("default");
        let because = match &object.object {
            Object::VirtualService(vs) => {
                // Bound to the mesh (no `gateways`, or `mesh` among them), its hosts are
                // the traffic it routes; bound to gateways only, it applies to what its
                // routes send to.
                let mesh_bound =
                    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
                let routed = mesh_bound
                    .then(|| vs.spec.hosts.iter().find(|h| names_a_service(h, object_ns)))
                    .flatten()
                    .map(|h| format!("routes host {h}"));
                routed.or_else(|| {
                    let spec = serde_json::to_value(&vs.spec).unwrap_or_default();
                    destination_hosts(&spec)
                        .into_iter()
                        .find(|h| *h != "*" && names_a_service(h, object_ns))
                        .map(|h| format!("sends to {h}"))
                })
            }
            Object::DestinationRule(dr) => {
                names_a_service(&dr.spec.host, object_ns).then(|| format!("host {}", dr.spec.host))
            }
            Object::PeerAuthentication(pa) => policy_reason(
                object_ns,
                ns,
                pa.spec.selector.as_ref().map(|s| &s.match_labels),
                &selects,
            ),
            Object::AuthorizationPolicy(ap) => {
                let targets: Vec<_> = ap
                    .spec
                    .target_ref
                    .iter()
                    .chain(&ap.spec.target_refs)
                    .collect();
                if targets.is_empty() {
                    policy_reason(
                        object_ns,
                        ns,
                        ap.spec.selector.as_ref().map(|s| &s.match_labels),
                        &selects,
                    )
                } else {
                    targets
                        .iter()
                        .find(|t| {
                            t.kind == "Service"
                                && object_ns == ns
                                && service_names.contains(&t.name)
                        })
                        .map(|t| format!("targets Service {}", t.name))
                }
            }
            _ => None,
        };
        let Some(because) = because else { continue };
        let name = format!(
            "{} {object_ns}/{}",
            object.object.kind(),
            meta.name.as_deref().unwrap_or("")
        );
        let about =
            |place: &mesh_config::error::Place| place.object.as_deref() == Some(name.as_str());
        let messages = errors
            .iter()
            .filter(|e| about(&e.place))
            .map(|e| format!("error: {e}"))
            .chain(
                warnings
                    .iter()
                    .filter(|w| about(&w.place))
                    .map(|w| format!("warning: {w}")),
            )
            .collect();
        applied.push(AppliedObject {
            object: name,
            because,
            messages,
        });
    }
    Applied {
        services,
        objects: applied,
    }
}

/// Every `destination.host` in a route, wherever it is (http, tcp, tls, mirror).
fn destination_hosts(value: &serde_json::Value) -> Vec<&str> {
    let mut hosts = Vec::new();
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                if matches!(key.as_str(), "destination" | "mirror")
                    && let Some(host) = inner.get("host").and_then(|h| h.as_str())
                {
                    hosts.push(host);
                }
                hosts.extend(destination_hosts(inner));
            }
        }
        serde_json::Value::Array(items) => {
            hosts.extend(items.iter().flat_map(destination_hosts));
        }
        _ => {}
    }
    hosts
}

/// A workload-selector policy: applies by labels in the pod's namespace, to the whole
/// namespace without a selector, mesh-wide from the root namespace without one.
fn policy_reason(
    object_ns: &str,
    pod_ns: &str,
    selector: Option<&BTreeMap<String, String>>,
    selects: &dyn Fn(&BTreeMap<String, String>) -> bool,
) -> Option<String> {
    match selector.filter(|s| !s.is_empty()) {
        Some(labels) if object_ns == pod_ns && selects(labels) => {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Some(format!("selects {}", pairs.join(",")))
        }
        Some(_) => None,
        None if object_ns == pod_ns => Some(format!("namespace-wide in {pod_ns}")),
        None if object_ns == ROOT_NAMESPACE => Some("mesh-wide (root namespace)".into()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Vec<LoadedObject> {
        mesh_config::load_str(yaml, None).unwrap().objects
    }

    #[test]
    fn a_reviews_pod_gets_its_service_routes_rules_and_policies() {
        let objects = load(
            r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http: [{route: [{destination: {host: productpage, port: {number: 9080}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-only, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
"#,
        );
        let workload = Workload {
            namespace: "default".into(),
            name: "reviews-v1-abc".into(),
            labels: BTreeMap::from([
                ("app".into(), "reviews".into()),
                ("version".into(), "v1".into()),
            ]),
            service_account: "bookinfo-reviews".into(),
        };
        let warning = ConfigWarning {
            place: mesh_config::error::Place {
                object: Some("VirtualService default/reviews".into()),
                ..Default::default()
            },
            message: "a test warning".into(),
        };
        let applied = applied(&objects, &[], &[warning], &workload);
        assert_eq!(applied.services, ["reviews.default.svc.cluster.local"]);
        let names: Vec<(&str, &str)> = applied
            .objects
            .iter()
            .map(|o| (o.object.as_str(), o.because.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("VirtualService default/reviews", "routes host reviews"),
                ("VirtualService default/edge", "sends to reviews"),
                (
                    "DestinationRule default/reviews",
                    "host reviews.default.svc.cluster.local"
                ),
                (
                    "PeerAuthentication istio-system/default",
                    "mesh-wide (root namespace)"
                ),
                (
                    "AuthorizationPolicy default/reviews-viewer",
                    "selects app=reviews"
                ),
            ]
        );
        assert_eq!(applied.objects[0].messages.len(), 1);
        assert!(applied.objects[0].messages[0].contains("a test warning"));
    }
}
