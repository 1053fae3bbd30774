//! What an issued leaf contains, read back with x509-parser.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_identity::{CLOCK_SKEW_ALLOWANCE, CertificateAuthority, IdentityError, SpiffeId};
use x509_parser::{
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_X509_EXT_SUBJECT_ALT_NAME},
    prelude::{FromDer, X509Certificate},
};

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn the_leaf_has_one_uri_san_and_the_lifetime_asked_for() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let id = SpiffeId::new("cluster.local", "default", "sleep");
    let lifetime = Duration::from_secs(6 * 3600);
    let before = SystemTime::now();
    let cert = ca.issue(&id, lifetime).unwrap();
    let after = SystemTime::now();
    assert_eq!(cert.id, id);
    // The CA is the root: nothing follows the leaf.
    assert_eq!(cert.chain.len(), 1);

    let (rest, leaf) = X509Certificate::from_der(&cert.chain[0]).unwrap();
    assert!(rest.is_empty());
    assert_eq!(leaf.subject().iter().count(), 0, "the subject is empty");

    let sans: Vec<_> = leaf
        .extensions()
        .iter()
        .filter(|ext| ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
        .collect();
    assert_eq!(sans.len(), 1);
    assert!(sans[0].critical, "an empty subject needs a critical SAN");
    let ParsedExtension::SubjectAlternativeName(san) = sans[0].parsed_extension() else {
        panic!("SAN does not parse");
    };
    assert_eq!(
        san.general_names,
        vec![GeneralName::URI(
            "spiffe://cluster.local/ns/default/sa/sleep"
        )]
    );

    // Valid from a little before now until now + lifetime, rounded out to seconds.
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    assert!(not_before <= unix(before - CLOCK_SKEW_ALLOWANCE));
    assert!(not_before >= unix(before - CLOCK_SKEW_ALLOWANCE) - 1);
    assert!(not_after >= unix(before + lifetime));
    assert!(not_after <= unix(after + lifetime) + 1);
    assert_eq!(unix(cert.not_before), not_before);
    assert_eq!(unix(cert.not_after), not_after);
    assert!(cert.is_valid_at(SystemTime::now()));

    let constraints = leaf.basic_constraints().unwrap().expect("basicConstraints");
    assert!(!constraints.value.ca);
    let eku = leaf
        .extended_key_usage()
        .unwrap()
        .expect("extendedKeyUsage");
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(leaf.key_usage().unwrap().unwrap().value.digital_signature());

    let spki = leaf.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, OID_EC_P256);

    // Issued by the CA: its issuer is the root's subject.
    let (_, root) = X509Certificate::from_der(&ca.roots()[0]).unwrap();
    assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
    assert!(leaf.verify_signature(Some(root.public_key())).is_ok());
}

#[test]
fn every_leaf_gets_its_own_key_and_serial() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let id = SpiffeId::new("cluster.local", "a", "b");
    let one = ca.issue(&id, Duration::from_secs(60)).unwrap();
    let two = ca.issue(&id, Duration::from_secs(60)).unwrap();
    assert_ne!(one.key.secret_der(), two.key.secret_der());
    let serial = |der: &[u8]| X509Certificate::from_der(der).unwrap().1.serial.clone();
    assert_ne!(serial(&one.chain[0]), serial(&two.chain[0]));
}

#[test]
fn pem_output_round_trips() {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let cert = ca
        .issue(
            &SpiffeId::new("cluster.local", "a", "b"),
            Duration::from_secs(60),
        )
        .unwrap();
    let chain = pem::parse_many(cert.chain_pem()).unwrap();
    assert_eq!(chain.len(), cert.chain.len());
    assert_eq!(chain[0].tag(), "CERTIFICATE");
    assert_eq!(chain[0].contents(), cert.chain[0].as_ref());
    let key = pem::parse(cert.key_pem()).unwrap();
    assert_eq!(key.tag(), "PRIVATE KEY");
    assert_eq!(key.contents(), cert.key.secret_der());
    assert!(!cert.chain_pem().contains('\r'));
}

#[test]
fn explicit_validity_is_checked_and_kept() {
    let ca = CertificateAuthority::generate("td").unwrap();
    let id = SpiffeId::new("td", "a", "b");
    let start = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let cert = ca
        .issue_with_validity(&id, start, start + Duration::from_millis(3_500))
        .unwrap();
    assert_eq!(cert.not_before, start);
    assert_eq!(cert.not_after, start + Duration::from_secs(3));

    for (not_before, not_after) in [
        (start, start),
        (start + Duration::from_secs(10), start),
        (UNIX_EPOCH - Duration::from_secs(1), start),
    ] {
        let err = ca
            .issue_with_validity(&id, not_before, not_after)
            .unwrap_err();
        assert!(
            matches!(err, IdentityError::InvalidValidity { .. }),
            "{err}"
        );
    }
    let err = ca.issue(&id, Duration::ZERO).unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidValidity { .. }),
        "{err}"
    );
}

#[test]
fn a_bad_trust_domain_is_refused_up_front() {
    let err = CertificateAuthority::generate("Cluster.Local").unwrap_err();
    assert!(
        matches!(err, IdentityError::InvalidTrustDomain { .. }),
        "{err}"
    );
}
