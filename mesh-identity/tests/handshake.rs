//! Mutual TLS between configurations of this crate: who gets in and who is refused.

mod common;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use common::{anonymous_client, connect};
use mesh_identity::{
    CertManager, CertificateAuthority, IdentityError, SpiffeId, client_config_for,
    server_config_for,
};
use rustls::{CertificateError, ProtocolVersion};

const TD: &str = "cluster.local";
const HOUR: Duration = Duration::from_secs(3600);

fn manager() -> CertManager {
    let ca = CertificateAuthority::generate(TD).expect("generate CA");
    CertManager::new(Arc::new(ca), Duration::from_secs(24 * 3600))
}

fn client_id() -> SpiffeId {
    SpiffeId::new(TD, "default", "sleep")
}

fn server_id() -> SpiffeId {
    SpiffeId::new(TD, "echo", "echo-sa")
}

#[test]
fn mutual_tls_succeeds_and_each_side_sees_the_other() {
    let certs = manager();
    let outcome = connect(
        certs.client_config(&client_id()).unwrap(),
        certs.server_config(&server_id()).unwrap(),
    );
    let (client, server) = outcome.unwrap_both();
    assert_eq!(client.peer, server_id());
    assert_eq!(server.peer, client_id());
    for end in [&client, &server] {
        assert_eq!(end.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(end.version, Some(ProtocolVersion::TLSv1_3));
    }
}

#[test]
fn one_identity_can_talk_to_itself() {
    let certs = manager();
    let id = client_id();
    let (client, server) = connect(
        certs.client_config(&id).unwrap(),
        certs.server_config(&id).unwrap(),
    )
    .unwrap_both();
    assert_eq!((client.peer, server.peer), (id.clone(), id));
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let certs = manager();
    let refusal = connect(
        anonymous_client(),
        certs.server_config(&server_id()).unwrap(),
    )
    .server_refusal();
    assert_eq!(refusal, rustls::Error::NoCertificatesPresented);
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let certs = manager();
    let other = CertificateAuthority::generate(TD).unwrap();
    let foreign = other.issue(&client_id(), HOUR).unwrap();
    // The client trusts our roots, so only the server's check can refuse.
    let client = client_config_for(&foreign, certs.ca().roots()).unwrap();
    let refusal = connect(client, certs.server_config(&server_id()).unwrap()).server_refusal();
    assert_eq!(
        refusal,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn an_expired_client_certificate_is_refused() {
    let certs = manager();
    let now = SystemTime::now();
    let expired = certs
        .ca()
        .issue_with_validity(&client_id(), now - 2 * HOUR, now - HOUR)
        .unwrap();
    assert!(!expired.is_valid_at(now));
    let client = client_config_for(&expired, certs.ca().roots()).unwrap();
    let refusal = connect(client, certs.server_config(&server_id()).unwrap()).server_refusal();
    assert!(
        matches!(
            refusal,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{refusal:?}"
    );
}

#[test]
fn a_client_certificate_not_yet_valid_is_refused() {
    let certs = manager();
    let now = SystemTime::now();
    let future = certs
        .ca()
        .issue_with_validity(&client_id(), now + HOUR, now + 2 * HOUR)
        .unwrap();
    let client = client_config_for(&future, certs.ca().roots()).unwrap();
    let refusal = connect(client, certs.server_config(&server_id()).unwrap()).server_refusal();
    assert!(
        matches!(
            refusal,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        ),
        "{refusal:?}"
    );
}

#[test]
fn the_client_refuses_a_server_from_another_ca_or_expired() {
    let certs = manager();
    let other = CertificateAuthority::generate(TD).unwrap();
    let foreign = other.issue(&server_id(), HOUR).unwrap();
    let server = server_config_for(&foreign, other.roots()).unwrap();
    let refusal = connect(certs.client_config(&client_id()).unwrap(), server).client_refusal();
    assert_eq!(
        refusal,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );

    let now = SystemTime::now();
    let expired = certs
        .ca()
        .issue_with_validity(&server_id(), now - 2 * HOUR, now - HOUR)
        .unwrap();
    let server = server_config_for(&expired, certs.ca().roots()).unwrap();
    let refusal = connect(certs.client_config(&client_id()).unwrap(), server).client_refusal();
    assert!(
        matches!(
            refusal,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{refusal:?}"
    );
}

/// Two CA objects with one key and root but different trust domains (the same `cacerts`
/// loaded twice): the chain verifies, so only the trust-domain check can refuse.
#[test]
fn an_identity_of_another_trust_domain_is_refused_by_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let ours = CertificateAuthority::load_or_create(dir.path(), "ours.local").unwrap();
    let theirs = CertificateAuthority::load_or_create(dir.path(), "theirs.local").unwrap();
    assert_eq!(ours.roots(), theirs.roots());
    let ours = CertManager::new(Arc::new(ours), HOUR);
    let theirs = CertManager::new(Arc::new(theirs), HOUR);
    let their_id = SpiffeId::new("theirs.local", "ns", "sa");
    let our_id = SpiffeId::new("ours.local", "ns", "sa");

    let refusal = connect(
        theirs.client_config(&their_id).unwrap(),
        ours.server_config(&our_id).unwrap(),
    )
    .client_refusal();
    assert_foreign(refusal, "theirs.local", "ours.local");

    // A client that accepts any server, so only the server's check can refuse.
    let their_cert = theirs.certificate(&their_id).unwrap();
    let refusal = connect(
        common::permissive_client(&their_cert),
        ours.server_config(&our_id).unwrap(),
    )
    .server_refusal();
    assert_foreign(refusal, "ours.local", "theirs.local");
}

fn assert_foreign(refusal: rustls::Error, expected: &str, found: &str) {
    let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = &refusal else {
        panic!("not a refused identity: {refusal:?}");
    };
    let message = other.to_string();
    assert!(
        message.contains(&format!("trust domain \"{expected}\"")) && message.contains(found),
        "{message}"
    );
}

#[test]
fn the_issuer_refuses_identities_outside_its_trust_domain() {
    let ca = CertificateAuthority::generate(TD).unwrap();
    let err = ca
        .issue(&SpiffeId::new("elsewhere.local", "a", "b"), HOUR)
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::ForeignTrustDomain { .. }),
        "{err}"
    );
    let err = ca.issue(&SpiffeId::new(TD, "a/b", "c"), HOUR).unwrap_err();
    assert!(matches!(err, IdentityError::InvalidId { .. }), "{err}");
}
