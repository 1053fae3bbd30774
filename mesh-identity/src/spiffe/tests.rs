use super::*;

fn parse(s: &str) -> Result<SpiffeId, SpiffeIdError> {
    s.parse()
}

#[test]
fn parses_istio_ids_and_prints_them_back() {
    let id = parse("spiffe://cluster.local/ns/default/sa/sleep").unwrap();
    assert_eq!(id, SpiffeId::new("cluster.local", "default", "sleep"));
    assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
    assert_eq!(id.principal(), "cluster.local/ns/default/sa/sleep");
    assert_eq!(id.validate(), Ok(()));

    let dotted = parse("spiffe://td_1.example-x/ns/kube-system/sa/sa.with.dots").unwrap();
    assert_eq!(dotted.service_account, "sa.with.dots");
}

#[test]
fn rejects_other_schemes_and_shapes() {
    assert_eq!(
        parse("http://cluster.local/ns/a/sa/b"),
        Err(SpiffeIdError::MissingScheme)
    );
    assert_eq!(
        parse("SPIFFE://cluster.local/ns/a/sa/b"),
        Err(SpiffeIdError::MissingScheme)
    );
    assert_eq!(
        parse("spiffe:///ns/a/sa/b"),
        Err(SpiffeIdError::EmptyTrustDomain)
    );
    for path in [
        "",
        "/",
        "/ns/a",
        "/ns/a/sa/b/",
        "/ns/a/sa/b/extra",
        "/sa/b/ns/a",
        "/namespace/a/sa/b",
        "//ns/a/sa/b",
        "/ns/a/sa/b?x=1",
    ] {
        let id = format!("spiffe://cluster.local{path}");
        match parse(&id) {
            Err(SpiffeIdError::Path { path: reported }) => assert_eq!(reported, path, "{id}"),
            // A query lands in the service account and fails its character check instead.
            Err(SpiffeIdError::PartCharacter { character: '?', .. }) => {}
            other => panic!("{id}: {other:?}"),
        }
    }
}

#[test]
fn names_the_bad_trust_domain_character() {
    for (td, bad) in [
        ("Cluster.local", 'C'),
        ("td:8080", ':'),
        ("user@td", '@'),
        ("t%64", '%'),
    ] {
        assert_eq!(
            parse(&format!("spiffe://{td}/ns/a/sa/b")),
            Err(SpiffeIdError::TrustDomainCharacter {
                trust_domain: td.to_string(),
                character: bad
            })
        );
    }
}

#[test]
fn names_the_bad_part() {
    assert_eq!(
        parse("spiffe://td/ns//sa/b"),
        Err(SpiffeIdError::EmptyPart {
            part: IdPart::Namespace
        })
    );
    assert_eq!(
        parse("spiffe://td/ns/a/sa/"),
        Err(SpiffeIdError::EmptyPart {
            part: IdPart::ServiceAccount
        })
    );
    assert_eq!(
        parse("spiffe://td/ns/../sa/b"),
        Err(SpiffeIdError::DotPart {
            part: IdPart::Namespace
        })
    );
    let err = parse("spiffe://td/ns/a/sa/b%2Fc").unwrap_err();
    assert_eq!(
        err,
        SpiffeIdError::PartCharacter {
            part: IdPart::ServiceAccount,
            value: "b%2Fc".to_string(),
            character: '%'
        }
    );
    assert!(
        err.to_string().contains("service account \"b%2Fc\""),
        "{err}"
    );
}

#[test]
fn length_is_bounded() {
    let long = "a".repeat(MAX_ID_LEN);
    assert_eq!(
        parse(&format!("spiffe://td/ns/a/sa/{long}")),
        Err(SpiffeIdError::TooLong)
    );
    let td = "t".repeat(MAX_TRUST_DOMAIN_LEN + 1);
    assert_eq!(
        parse(&format!("spiffe://{td}/ns/a/sa/b")),
        Err(SpiffeIdError::TrustDomainTooLong)
    );
}

#[test]
fn validate_applies_the_parse_rules_to_built_ids() {
    assert_eq!(
        SpiffeId::new("td", "a/b", "c").validate(),
        Err(SpiffeIdError::PartCharacter {
            part: IdPart::Namespace,
            value: "a/b".to_string(),
            character: '/'
        })
    );
    assert_eq!(
        SpiffeId::new("", "a", "c").validate(),
        Err(SpiffeIdError::EmptyTrustDomain)
    );
}

#[test]
fn orders_by_trust_domain_then_namespace_then_account() {
    let mut ids = [
        SpiffeId::new("b", "a", "a"),
        SpiffeId::new("a", "b", "a"),
        SpiffeId::new("a", "a", "b"),
    ];
    ids.sort();
    assert_eq!(ids[0], SpiffeId::new("a", "a", "b"));
    assert_eq!(ids[2], SpiffeId::new("b", "a", "a"));
}
