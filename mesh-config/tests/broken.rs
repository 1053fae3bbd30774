//! Each broken variant gives one precise error naming the file, the line and the field.

mod common;

use common::fixture;
use mesh_config::{ErrorKind, validate_paths};

/// Validates one broken fixture; returns its single error's parts.
fn only_error(name: &str) -> mesh_config::ConfigError {
    let path = fixture(&format!("broken/{name}"));
    let report = validate_paths(std::slice::from_ref(&path));
    assert_eq!(report.errors.len(), 1, "{name}:\n{report}");
    let e = report.errors[0].clone();
    assert_eq!(e.place.file.as_deref(), Some(path.as_path()));
    let line = e.to_string();
    assert!(line.contains(&format!("broken/{name}:")), "{line}");
    e
}

#[test]
fn tab_indentation_names_the_line() {
    let e = only_error("tab-indentation.yaml");
    assert_eq!(e.kind, ErrorKind::TabIndentation);
    assert_eq!(e.place.line, Some(9));
    assert!(
        e.to_string()
            .contains("tab-indentation.yaml:9:1: tab character in indentation"),
        "{e}"
    );
}

#[test]
fn wrong_type_names_the_field() {
    let e = only_error("wrong-type.yaml");
    assert_eq!(
        e.place.field.as_deref(),
        Some("spec.http[0].route[0].weight")
    );
    assert_eq!(e.place.line, Some(14));
    assert_eq!(
        e.place.object.as_deref(),
        Some("VirtualService default/reviews")
    );
    assert!(
        e.to_string().contains("invalid type: string \"eighty\""),
        "{e}"
    );
}

#[test]
fn unknown_istio_field_names_the_field() {
    let e = only_error("unknown-field.yaml");
    assert_eq!(
        e.place.field.as_deref(),
        Some("spec.http[0].route[0].destination.subsets")
    );
    assert_eq!(e.place.line, Some(13));
    assert!(e.to_string().contains("unknown field `subsets`"), "{e}");
}

#[test]
fn unknown_kubernetes_field_is_not_silently_dropped() {
    let e = only_error("unknown-field-k8s.yaml");
    assert_eq!(e.place.field.as_deref(), Some("spec.replica"));
    assert_eq!(e.place.line, Some(7));
    assert_eq!(
        e.place.object.as_deref(),
        Some("Deployment default/details-v1")
    );
}

#[test]
fn missing_name_names_metadata_name() {
    let e = only_error("missing-name.yaml");
    assert_eq!(e.place.field.as_deref(), Some("metadata.name"));
    assert_eq!(e.place.line, Some(3));
    assert!(
        e.to_string()
            .contains("Service (unnamed): metadata.name: required field is missing"),
        "{e}"
    );
}

#[test]
fn undefined_subset_names_the_subset_field() {
    let e = only_error("subset-not-defined.yaml");
    assert_eq!(
        e.place.field.as_deref(),
        Some("spec.http[0].route[0].destination.subset")
    );
    assert_eq!(e.place.line, Some(27));
    assert!(e.to_string().contains("subset \"v4\""), "{e}");
    assert!(e.to_string().contains("defines: v1, v2"), "{e}");
}

#[test]
fn weights_summing_to_90_name_the_weight() {
    let e = only_error("weights-90.yaml");
    assert_eq!(
        e.place.field.as_deref(),
        Some("spec.http[0].route[1].weight")
    );
    assert_eq!(e.place.line, Some(18));
    assert!(
        e.to_string().ends_with(
            "weights-90.yaml:18:7: VirtualService default/reviews: spec.http[0].route[1].weight: weights sum to 90, expected 100"
        ),
        "{e}"
    );
}

#[test]
fn unnamed_port_of_a_multi_port_service() {
    let e = only_error("service-port-no-name.yaml");
    assert_eq!(e.place.field.as_deref(), Some("spec.ports[1].name"));
    assert_eq!(e.place.line, Some(9));
}

#[test]
fn virtual_service_bound_to_missing_gateway() {
    let e = only_error("missing-gateway.yaml");
    assert_eq!(e.place.field.as_deref(), Some("spec.gateways[0]"));
    assert!(
        e.to_string()
            .contains("Gateway default/bookinfo-gateway does not exist"),
        "{e}"
    );
}

#[test]
fn two_virtual_services_for_one_host() {
    let e = only_error("duplicate-host.yaml");
    assert_eq!(e.place.field.as_deref(), Some("spec.hosts[0]"));
    assert_eq!(
        e.place.object.as_deref(),
        Some("VirtualService default/reviews-b")
    );
    assert!(
        e.to_string()
            .contains("also claimed by VirtualService default/reviews-a"),
        "{e}"
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let load = mesh_config::yaml::load_str(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: [a\n",
        None,
        &Default::default(),
    );
    assert_eq!(load.errors.len(), 1);
    assert!(
        matches!(load.errors[0].kind, ErrorKind::Syntax(_)),
        "{:?}",
        load.errors
    );
    assert!(load.errors[0].place.line.is_some());
}

#[test]
fn unknown_kind_is_a_warning_not_an_error() {
    let load = mesh_config::yaml::load_str(
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: x\nspec:\n  limits: []\n",
        None,
        &Default::default(),
    );
    assert!(load.errors.is_empty());
    assert!(load.objects.is_empty());
    assert_eq!(load.warnings.len(), 1);
    assert!(load.warnings[0].message.contains("LimitRange"));
}

#[test]
fn bad_duration_and_enum_are_errors() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [r]\n  http:\n  - timeout: 7 seconds\n    route:\n    - destination:\n        host: r\n";
    let load = mesh_config::yaml::load_str(vs, None, &Default::default());
    assert_eq!(load.errors.len(), 1);
    assert_eq!(
        load.errors[0].place.field.as_deref(),
        Some("spec.http[0].timeout")
    );
    assert!(
        load.errors[0].to_string().contains("invalid duration"),
        "{}",
        load.errors[0]
    );

    let se = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: x\nspec:\n  hosts: [a.example]\n  resolution: DYNAMIC\n";
    let load = mesh_config::yaml::load_str(se, None, &Default::default());
    assert_eq!(
        load.errors[0].place.field.as_deref(),
        Some("spec.resolution")
    );

    let wrong_version = "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: x\nspec: {}\n";
    let load = mesh_config::yaml::load_str(wrong_version, None, &Default::default());
    assert!(
        load.errors[0].to_string().contains("not supported"),
        "{}",
        load.errors[0]
    );
}
