//! What the validator refuses, and the parsers it shares with the evaluator.

use super::*;

fn build_errors(yaml: &str) -> Vec<String> {
    let loaded = crate::load_str(yaml, None).expect("test YAML loads");
    match Snapshot::build(&loaded) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_validator_refuses_what_the_evaluator_cannot_read() {
    let errors = build_errors(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: default}
spec:
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/33", "10.0.0.1"]}}, {source: {}}]
    to: [{operation: {notPorts: ["http"]}}]
    when:
    - {key: source.ip, values: ["not-an-ip"]}
    - {key: destination.port}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: bad, namespace: default}
spec:
  portLevelMtls: {"80a": {mode: STRICT}}
"#,
    );
    let expect = [
        "spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not an IP address or CIDR",
        "spec.rules[0].from[1].source: a source needs at least one field",
        "spec.rules[0].to[0].operation.notPorts[0]: \"http\" is not a port number",
        "spec.rules[0].when[0].values[0]: \"not-an-ip\" is not an IP address or CIDR",
        "spec.rules[0].when[1]: a condition needs values or notValues",
        "spec.portLevelMtls: portLevelMtls needs a selector",
        "spec.portLevelMtls.80a: \"80a\" is not a port number",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.contains(e)),
            "{e} missing in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    assert!(
        errors[0].contains("AuthorizationPolicy default/bad"),
        "{}",
        errors[0]
    );
}

#[test]
fn ip_blocks_parse_and_contain() {
    let block = |s: &str| s.parse::<IpBlock>();
    assert_eq!(
        block("10.1.2.3/8").map(|b| b.to_string()),
        Ok("10.1.2.3/8".into())
    );
    assert!(block("10.1.2.3/8").is_ok_and(|b| b.contains(ip("10.200.0.1"))));
    assert!(block("0.0.0.0/0").is_ok_and(|b| b.contains(ip("1.2.3.4"))));
    assert!(block("::/0").is_ok_and(|b| b.contains(ip("2001:db8::1"))));
    assert!(block("::/0").is_ok_and(|b| !b.contains(ip("1.2.3.4"))));
    assert!(block("2001:db8::1").is_ok_and(|b| !b.contains(ip("2001:db8::2"))));
    assert_eq!(block(""), Err(IpBlockError::Empty));
    assert_eq!(
        block("::1/129"),
        Err(IpBlockError::PrefixTooLong { len: 129, max: 128 })
    );
    assert_eq!(
        block("10.0.0.0/x"),
        Err(IpBlockError::PrefixNotNumber("x".into()))
    );
    assert_eq!(
        block("10.0.0/8"),
        Err(IpBlockError::Address("10.0.0".into()))
    );
    // What the evaluator does with a value the validator would have refused: no match.
    assert!(!IpBlock::value_contains("bogus", ip("10.0.0.1")));
}

#[test]
fn principals_are_read_in_istio_form() {
    use matcher::Peer;
    let p = Peer::from_principal(Some("spiffe://cluster.local/ns/other/sa/ratings"));
    assert_eq!(p.principal, Some(RATINGS));
    assert_eq!(
        (p.namespace, p.service_account),
        (Some("other"), Some("ratings"))
    );
    let odd = Peer::from_principal(Some("example.org/workload/x"));
    assert_eq!(
        (odd.principal, odd.namespace),
        (Some("example.org/workload/x"), None)
    );
    assert_eq!(Peer::from_principal(Some("")), Peer::default());
}
