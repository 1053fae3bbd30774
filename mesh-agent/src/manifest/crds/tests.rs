//! The CRDs against the API server's rules and against the fixtures: every valid Istio
//! object of `tests/fixtures` is accepted by the schema of its apiVersion, the structurally
//! broken ones are refused naming the field, and the schema agrees with `mesh-config`'s
//! decoder on every file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mesh_config::object::Kind;
use mesh_config::source::kube::WATCHED;
use mesh_config::yaml::{self, LoadOptions, limits::Limits, value::parse_documents};
use serde_json::{Value, json};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The YAML files of a fixture directory, sorted.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {dir}");
    files
}

/// The kind the mesh decodes a CRD's objects as.
fn mesh_kind(kind: &IstioKind) -> Kind {
    Kind::resolve(&format!("{}/{}", kind.group, kind.storage), kind.kind)
        .unwrap()
        .unwrap()
}

#[test]
fn every_istio_kind_the_agent_watches_has_a_crd_serving_what_the_mesh_reads() {
    let istio_watched: Vec<_> = WATCHED
        .iter()
        .filter(|w| w.group.ends_with(".istio.io"))
        .collect();
    assert_eq!(istio_watched.len(), KINDS.len());
    for w in istio_watched {
        assert!(
            KINDS.iter().any(|k| k.group == w.group
                && k.kind == w.kind.as_str()
                && k.plural == w.plural
                && k.versions.contains(&w.version)),
            "no CRD for {} (or not serving the watched {})",
            w.label(),
            w.version
        );
    }
    // The versions served are exactly those `object.rs` accepts.
    let candidates = ["v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1", "v2"];
    for kind in KINDS {
        let accepted: BTreeSet<&str> = candidates
            .into_iter()
            .filter(|v| {
                Kind::resolve(&format!("{}/{v}", kind.group), kind.kind)
                    .is_ok_and(|k| k == Some(mesh_kind(kind)))
            })
            .collect();
        let served: BTreeSet<&str> = kind.versions.iter().copied().collect();
        assert_eq!(accepted, served, "{}", kind.kind);
    }
}

#[test]
fn each_crd_names_its_kind_as_istio_does_and_stores_one_version() {
    let crds = definitions().unwrap();
    let short: Vec<_> = crds
        .iter()
        .map(|c| {
            c.spec
                .names
                .short_names
                .clone()
                .unwrap_or_default()
                .join(",")
        })
        .collect();
    assert_eq!(short, ["vs", "dr", "gw", "se", "we", "pa", "ap"]);
    for (crd, kind) in crds.iter().zip(KINDS) {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        assert_eq!(
            name,
            format!("{}.{}", crd.spec.names.plural, crd.spec.group)
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, kind.kind);
        assert_eq!(
            crd.spec.names.list_kind.as_deref(),
            Some(format!("{}List", kind.kind).as_str())
        );
        let stored: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(stored, [kind.storage], "{name}");
        let first = &crd.spec.versions[0];
        for version in &crd.spec.versions {
            assert!(version.served, "{name} {}", version.name);
            assert!(
                version
                    .subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some()),
                "{name} {}: no status subresource",
                version.name
            );
            // One schema for every version: the types read them alike.
            assert_eq!(version.schema, first.schema, "{name} {}", version.name);
        }
    }
}

/// The rendered `openAPIV3Schema` of `kind` for `version`, as JSON.
fn rendered_schema(kind: &IstioKind, version: &str) -> Value {
    let crd = definition(kind).unwrap();
    let version = crd
        .spec
        .versions
        .into_iter()
        .find(|v| v.name == version)
        .unwrap_or_else(|| panic!("{} does not serve {version}", kind.kind));
    let schema = version.schema.and_then(|s| s.open_api_v3_schema).unwrap();
    serde_json::to_value(schema).unwrap()
}

/// The API server's structural-schema rules, as far as a walk can tell: every node states
/// its type (or is int-or-string, or keeps unknown fields), nothing refers elsewhere, and
/// `oneOf`/`anyOf`/`allOf`/`not` branches only add value checks (no type, description,
/// default, nullable or additionalProperties of their own).
fn assert_structural(node: &Value, path: &str) {
    let Some(map) = node.as_object() else {
        panic!("{path}: not a schema object: {node}");
    };
    for forbidden in ["$ref", "definitions", "$defs", "$schema"] {
        assert!(!map.contains_key(forbidden), "{path}: has {forbidden}");
    }
    let typed = map.get("type").is_some_and(Value::is_string)
        || map.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    assert!(typed, "{path}: no single type: {node}");
    if let Some(properties) = map.get("properties") {
        assert!(
            map.get("additionalProperties").is_none(),
            "{path}: additionalProperties beside properties"
        );
        for (name, child) in properties.as_object().unwrap() {
            assert_structural(child, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = map.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(values) = map.get("additionalProperties")
        && values.is_object()
    {
        assert_structural(values, &format!("{path}{{}}"));
    }
    for junction in ["oneOf", "anyOf", "allOf"] {
        for (i, branch) in map
            .get(junction)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            assert_value_checks_only(branch, &format!("{path}.{junction}[{i}]"));
        }
    }
    if let Some(not) = map.get("not") {
        assert_value_checks_only(not, &format!("{path}.not"));
    }
}

fn assert_value_checks_only(branch: &Value, path: &str) {
    let Some(map) = branch.as_object() else {
        panic!("{path}: not a schema object: {branch}");
    };
    for forbidden in [
        "type",
        "description",
        "default",
        "nullable",
        "additionalProperties",
        "$ref",
        "x-kubernetes-preserve-unknown-fields",
    ] {
        assert!(!map.contains_key(forbidden), "{path}: has {forbidden}");
    }
    for child in map
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.values())
    {
        assert_value_checks_only(child, path);
    }
}

#[test]
fn every_schema_is_structural() {
    for kind in KINDS {
        for version in kind.versions {
            let schema = rendered_schema(kind, version);
            assert_structural(&schema, &format!("{}/{version}", kind.kind));
            assert_eq!(
                schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"],
                true
            );
        }
    }
}

/// The schema as the tests validate with: the API server prunes fields a structural schema
/// does not name (and `kubectl apply --validate=strict` refuses them), which a plain JSON
/// Schema validator cannot do, so every object node that lists its properties gets
/// `additionalProperties: false`, as the types' `deny_unknown_fields` says. And `nullable`
/// (OpenAPI 3.0, unknown to JSON Schema) becomes a `null` type, and a `null` value of an
/// enum, as the API server lets a `nullable` field be null whatever its other checks.
fn for_validation(node: &Value) -> Value {
    let Some(map) = node.as_object() else {
        return node.clone();
    };
    let mut out = serde_json::Map::new();
    for (key, value) in map {
        let value = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), for_validation(v)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => for_validation(value),
            "oneOf" | "anyOf" | "allOf" => Value::Array(
                value
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(for_validation)
                    .collect(),
            ),
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    if out.contains_key("properties")
        && !out.contains_key("additionalProperties")
        && out.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
    {
        out.insert("additionalProperties".into(), json!(false));
    }
    if out.remove("nullable") == Some(json!(true))
        && let Some(Value::String(t)) = out.get("type").cloned()
    {
        out.insert("type".into(), json!([t, "null"]));
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

/// The CRD kind of a document, with its version, when it is one of ours.
fn crd_kind_of(doc: &Value) -> Option<(&'static IstioKind, String)> {
    let api_version = doc["apiVersion"].as_str()?;
    let (group, version) = api_version.rsplit_once('/')?;
    let kind = KINDS
        .iter()
        .find(|k| k.group == group && k.kind == doc["kind"])?;
    Some((kind, version.to_string()))
}

/// What validating one document said: the JSON pointer and message of each error.
fn validate(doc: &Value) -> Vec<(String, String)> {
    let (kind, version) = crd_kind_of(doc).unwrap();
    assert!(
        kind.versions.contains(&version.as_str()),
        "{} {version}: not served",
        kind.kind
    );
    let schema = for_validation(&rendered_schema(kind, &version));
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(doc)
        .map(|e| (e.instance_path().as_str().to_string(), e.to_string()))
        .collect()
}

/// The CRD-kind documents of a file, as the API server would receive them (YAML → JSON).
fn crd_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let (docs, syntax) = parse_documents(&text, &Limits::default()).unwrap();
    if let Some(e) = syntax {
        // Only the seeds' pasted fragments (`...` elisions) fail the plain parse; the loader
        // tolerates them. What is read before the error is still checked, and the count
        // below against the loader says whether an Istio object was lost after it.
        eprintln!("{}: {} (line {})", path.display(), e.message, e.pos.line);
    }
    docs.into_iter()
        .filter_map(|d| d.value)
        .filter(|v| crd_kind_of(v).is_some())
        .collect()
}

/// How many objects of a CRD kind `mesh-config`'s loader decodes from a file, and its errors.
fn loader_verdict(path: &Path) -> (usize, usize) {
    let kinds: Vec<Kind> = KINDS.iter().map(mesh_kind).collect();
    let load = yaml::load_file(path, &LoadOptions::default());
    let objects = load
        .objects
        .iter()
        .filter(|o| kinds.contains(&o.object.kind()))
        .count();
    (objects, load.errors.len())
}

#[test]
fn every_valid_fixture_is_accepted_by_its_crd() {
    let mut checked = 0;
    for dir in ["istio-bookinfo", "seeds", "ambient"] {
        for path in yaml_files(dir) {
            let docs = crd_documents(&path);
            for doc in &docs {
                let errors = validate(doc);
                assert!(
                    errors.is_empty(),
                    "{} {}: refused: {errors:?}",
                    path.display(),
                    doc["metadata"]["name"]
                );
            }
            let (decoded, _) = loader_verdict(&path);
            assert_eq!(
                decoded,
                docs.len(),
                "{}: the loader reads other Istio objects than were validated",
                path.display()
            );
            checked += docs.len();
        }
    }
    // Bookinfo's Gateway, DestinationRules and VirtualServices, its ServiceEntry, and the
    // seeds' Gateways, VirtualServices and ServiceEntry.
    assert!(
        checked >= 15,
        "only {checked} Istio objects in the fixtures"
    );
}

/// What the schema says of a broken fixture.
enum Expect {
    /// A CRD kind broken in its structure: the schema refuses it at this instance path, with
    /// a message naming this field.
    Refused {
        at: &'static str,
        naming: &'static str,
    },
    /// Broken across objects or in a sum (weights, a missing subset or Gateway, a duplicate
    /// host): a schema sees one object at a time and cannot tell; the mesh's validator does.
    Semantic,
    /// Not a CRD kind (core Kubernetes objects): the API server's own validation applies.
    NotOurs,
    /// Not YAML at all: never reaches a schema.
    NotYaml,
}

#[test]
fn broken_fixtures_are_refused_by_the_schema_when_structural() {
    use Expect::*;
    let expectations: &[(&str, Expect)] = &[
        (
            "unknown-field.yaml",
            Refused {
                at: "/spec/http/0/route/0/destination",
                naming: "subsets",
            },
        ),
        (
            "wrong-type.yaml",
            Refused {
                at: "/spec/http/0/route/0/weight",
                naming: "eighty",
            },
        ),
        ("duplicate-host.yaml", Semantic),
        ("missing-gateway.yaml", Semantic),
        ("subset-not-defined.yaml", Semantic),
        ("weights-90.yaml", Semantic),
        ("missing-name.yaml", NotOurs),
        ("service-port-no-name.yaml", NotOurs),
        ("unknown-field-k8s.yaml", NotOurs),
        ("tab-indentation.yaml", NotYaml),
    ];
    let files: Vec<String> = yaml_files("broken")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: Vec<String> = {
        let mut l: Vec<String> = expectations.iter().map(|(f, _)| f.to_string()).collect();
        l.sort();
        l
    };
    assert_eq!(
        files, listed,
        "every broken fixture needs an expectation here"
    );

    for (file, expect) in expectations {
        let path = fixtures().join("broken").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let (docs, syntax) = parse_documents(&text, &Limits::default()).unwrap();
        let docs: Vec<Value> = docs.into_iter().filter_map(|d| d.value).collect();
        let ours: Vec<&Value> = docs.iter().filter(|d| crd_kind_of(d).is_some()).collect();
        match expect {
            Refused { at, naming } => {
                assert_eq!(ours.len(), 1, "{file}");
                let errors = validate(ours[0]);
                assert!(
                    errors
                        .iter()
                        .any(|(path, message)| path == at && message.contains(naming)),
                    "{file}: expected a refusal at {at} naming {naming}, got {errors:?}"
                );
                // The mesh's decoder refuses it as well.
                assert_eq!(loader_verdict(&path), (0, 1), "{file}");
            }
            Semantic => {
                assert!(!ours.is_empty(), "{file}");
                for doc in ours {
                    assert_eq!(validate(doc), [], "{file}");
                }
                // Decoded fine: the error is found later, by `validate.rs`.
                assert_eq!(loader_verdict(&path).1, 0, "{file}");
            }
            NotOurs => {
                assert!(syntax.is_none() && !docs.is_empty(), "{file}");
                assert!(ours.is_empty(), "{file}");
            }
            NotYaml => assert!(syntax.is_some(), "{file}"),
        }
    }
}

/// One VirtualService around an HTTP route.
fn virtual_service(route: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": "reviews" },
        "spec": { "hosts": ["reviews"], "http": [route] },
    })
}

/// Refusals no fixture shows: a missing required field, a value outside an enum, two keys
/// of a one-of, durations the decoder rejects; and the duration forms it accepts.
#[test]
fn required_fields_enums_one_ofs_and_durations_follow_the_types() {
    let errors = validate(&virtual_service(json!({
        "route": [{ "destination": { "subset": "v1" } }],
    })));
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "/spec/http/0/route/0/destination" && m.contains("\"host\"")),
        "{errors:?}"
    );

    let no_spec = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": { "name": "default" },
    });
    assert!(
        validate(&no_spec)
            .iter()
            .any(|(_, m)| m.contains("\"spec\"")),
        "a missing spec is accepted"
    );
    let decoded = yaml::load_api_object(no_spec, None, &LoadOptions::default());
    assert!(
        decoded.objects.is_empty(),
        "the decoder reads it without spec"
    );

    let lb = json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": { "name": "reviews" },
        "spec": { "host": "reviews", "trafficPolicy": { "loadBalancer": { "simple": "FASTEST" } } },
    });
    let errors = validate(&lb);
    assert!(
        errors
            .iter()
            .any(|(p, _)| p == "/spec/trafficPolicy/loadBalancer/simple"),
        "{errors:?}"
    );

    let two_of_one = virtual_service(json!({
        "match": [{ "uri": { "exact": "/a", "prefix": "/" } }],
        "route": [{ "destination": { "host": "reviews" } }],
    }));
    let errors = validate(&two_of_one);
    assert!(
        errors.iter().any(|(p, _)| p == "/spec/http/0/match/0/uri"),
        "{errors:?}"
    );

    for good in ["7s", "0.5s", "100ms", "1h30m", "250us", ".5s"] {
        let vs = virtual_service(json!({
            "route": [{ "destination": { "host": "reviews" } }],
            "timeout": good,
        }));
        assert_eq!(validate(&vs), [], "{good}");
        assert!(mesh_config::duration::IstioDuration::parse(good).is_ok());
    }
    for bad in ["", "7", "s", "7x", "-1s", "1.2.3s"] {
        let vs = virtual_service(json!({
            "route": [{ "destination": { "host": "reviews" } }],
            "timeout": bad,
        }));
        assert!(
            validate(&vs)
                .iter()
                .any(|(p, _)| p == "/spec/http/0/timeout"),
            "{bad:?} accepted"
        );
        assert!(mesh_config::duration::IstioDuration::parse(bad).is_err());
    }
}
