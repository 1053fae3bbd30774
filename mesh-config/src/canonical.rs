//! The names Istio's telemetry gives a pod: its *workload* (the controller it belongs to,
//! so the three pods of `reviews-v1` are one `destination_workload="reviews-v1"`, not three
//! series that change with every rollout), its *canonical service* and its *canonical
//! revision* (what Kiali groups by). The rules are Istio's (`GetDeployMetaFromPod` and the
//! `service.istio.io/canonical-*` label defaults), written here as plain functions.

use std::collections::BTreeMap;

/// What telemetry says of one workload: Istio's `*_workload`, `*_workload_namespace`,
/// `*_canonical_service` and `*_canonical_revision` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TelemetryNames {
    pub workload: String,
    pub namespace: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

impl TelemetryNames {
    /// A pod known only by its name and labels (no owner references).
    pub fn from_pod(name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> Self {
        Self::from_workload(workload_name(name, labels, None), namespace, labels)
    }

    /// A workload whose name is known (a proxy told its own), canonical names from `labels`.
    pub fn from_workload(
        workload: String,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        TelemetryNames {
            canonical_service: canonical_service(labels, &workload),
            canonical_revision: canonical_revision(labels),
            namespace: namespace.to_string(),
            workload,
        }
    }

    /// What Istio reports when the other end is not a known workload.
    pub fn unknown() -> Self {
        let unknown = || "unknown".to_string();
        TelemetryNames {
            workload: unknown(),
            namespace: unknown(),
            canonical_service: unknown(),
            canonical_revision: unknown(),
        }
    }
}

/// The label Kubernetes puts on a Deployment's pods: the hash its ReplicaSet is named by.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The controller a pod names in `metadata.ownerReferences`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub kind: &'a str,
    pub name: &'a str,
}

/// The workload a pod belongs to:
/// - a ReplicaSet's pod that carries `pod-template-hash` belongs to the Deployment the
///   ReplicaSet is named after (`reviews-v1-7d8f9c` → `reviews-v1`);
/// - a Job's pod whose Job is named `<cronjob>-<8 to 10 digits>` belongs to that CronJob;
/// - any other owner (StatefulSet, DaemonSet, bare ReplicaSet, Job) is the workload;
/// - with no owner, a pod named `<deployment>-<pod-template-hash>-<suffix>` (as a
///   Deployment's pods are named) belongs to that Deployment: off-cluster YAML and
///   enrollment calls carry labels but no owners;
/// - else the pod is its own workload.
pub fn workload_name(
    pod_name: &str,
    labels: &BTreeMap<String, String>,
    owner: Option<Owner<'_>>,
) -> String {
    let hash = labels.get(POD_TEMPLATE_HASH).filter(|h| !h.is_empty());
    match owner {
        Some(Owner {
            kind: "ReplicaSet",
            name,
        }) => match hash.and_then(|h| name.strip_suffix(h.as_str())?.strip_suffix('-')) {
            Some(deployment) if !deployment.is_empty() => deployment.to_string(),
            _ => name.to_string(),
        },
        Some(Owner { kind: "Job", name }) => cron_job(name).unwrap_or(name).to_string(),
        Some(Owner { name, .. }) => name.to_string(),
        None => hash
            .and_then(|h| {
                let (before, _suffix) = pod_name.rsplit_once('-')?;
                before.strip_suffix(h.as_str())?.strip_suffix('-')
            })
            .filter(|d| !d.is_empty())
            .unwrap_or(pod_name)
            .to_string(),
    }
}

/// `nightly-29012345` → `nightly`: a CronJob names its Jobs with the scheduled minute.
fn cron_job(job: &str) -> Option<&str> {
    let (name, stamp) = job.rsplit_once('-')?;
    let digits = stamp.len();
    ((8..=10).contains(&digits) && stamp.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty())
        .then_some(name)
}

/// `service.istio.io/canonical-name`, else `app.kubernetes.io/name`, else `app`, else
/// the workload's name.
pub fn canonical_service(labels: &BTreeMap<String, String>, workload: &str) -> String {
    [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
    .map_or_else(|| workload.to_string(), Clone::clone)
}

/// `service.istio.io/canonical-revision`, else `app.kubernetes.io/version`, else
/// `version`, else `latest`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> String {
    [
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ]
    .iter()
    .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
    .map_or_else(|| "latest".to_string(), Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_deployments_pod_is_named_after_the_deployment() {
        let l = labels(&[(POD_TEMPLATE_HASH, "7d8f9c6b5")]);
        let rs = Owner {
            kind: "ReplicaSet",
            name: "reviews-v1-7d8f9c6b5",
        };
        assert_eq!(
            workload_name("reviews-v1-7d8f9c6b5-x2k4p", &l, Some(rs)),
            "reviews-v1"
        );
        // Without owners (enrollment, off-cluster YAML) the pod's name tells the same.
        assert_eq!(
            workload_name("reviews-v1-7d8f9c6b5-x2k4p", &l, None),
            "reviews-v1"
        );
    }

    #[test]
    fn other_owners_are_the_workload_and_a_bare_pod_is_its_own() {
        let none = labels(&[]);
        let owner = |kind, name| Some(Owner { kind, name });
        assert_eq!(
            workload_name("db-0", &none, owner("StatefulSet", "db")),
            "db"
        );
        assert_eq!(
            workload_name(
                "node-exporter-abcde",
                &none,
                owner("DaemonSet", "node-exporter")
            ),
            "node-exporter"
        );
        // A ReplicaSet of its own (no hash label): the ReplicaSet.
        assert_eq!(
            workload_name("web-x2k4p", &none, owner("ReplicaSet", "web")),
            "web"
        );
        assert_eq!(
            workload_name(
                "backup-29012345-abcde",
                &none,
                owner("Job", "backup-29012345")
            ),
            "backup"
        );
        assert_eq!(
            workload_name("migrate-abcde", &none, owner("Job", "migrate")),
            "migrate"
        );
        assert_eq!(workload_name("sleep", &none, None), "sleep");
        // A hash label the name does not carry is not taken apart.
        let l = labels(&[(POD_TEMPLATE_HASH, "abc")]);
        assert_eq!(workload_name("curl-xyz-12345", &l, None), "curl-xyz-12345");
        assert_eq!(workload_name("abc-12345", &l, None), "abc-12345");
    }

    #[test]
    fn canonical_names_follow_istios_label_order() {
        let l = labels(&[("app", "reviews"), ("version", "v2")]);
        assert_eq!(canonical_service(&l, "reviews-v2"), "reviews");
        assert_eq!(canonical_revision(&l), "v2");
        let l = labels(&[
            ("app", "reviews"),
            ("app.kubernetes.io/name", "bookinfo-reviews"),
            ("service.istio.io/canonical-revision", "2024"),
        ]);
        assert_eq!(canonical_service(&l, "x"), "bookinfo-reviews");
        assert_eq!(canonical_revision(&l), "2024");
        let none = labels(&[]);
        assert_eq!(canonical_service(&none, "sleep"), "sleep");
        assert_eq!(canonical_revision(&none), "latest");
    }
}
