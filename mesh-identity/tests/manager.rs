//! The node's certificate cache: lazy issuance, rotation at half-life, generations, and
//! certificates handed out before a rotation staying usable.

mod common;

use std::{
    sync::{Arc, Barrier},
    thread,
    time::Duration,
};

use common::connect;
use mesh_identity::{CertManager, CertificateAuthority, SpiffeId, client_config_for};

const TD: &str = "cluster.local";

fn manager(lifetime: Duration) -> CertManager {
    let ca = CertificateAuthority::generate(TD).unwrap();
    CertManager::new(Arc::new(ca), lifetime)
}

#[test]
fn issues_once_per_identity_and_caches_configs() {
    let certs = manager(Duration::from_secs(3600));
    let a = SpiffeId::new(TD, "ns", "a");
    let b = SpiffeId::new(TD, "ns", "b");
    assert_eq!(certs.generation(&a), 0, "nothing issued yet");
    let cert = certs.certificate(&a).unwrap();
    assert_eq!(cert.id, a);
    let generation = certs.generation(&a);
    assert_ne!(generation, 0);
    assert!(Arc::ptr_eq(&cert, &certs.certificate(&a).unwrap()));
    assert!(Arc::ptr_eq(
        &certs.server_config(&a).unwrap(),
        &certs.server_config(&a).unwrap()
    ));
    assert!(Arc::ptr_eq(
        &certs.client_config(&a).unwrap(),
        &certs.client_config(&a).unwrap()
    ));
    assert_eq!(certs.generation(&a), generation);

    let other = certs.certificate(&b).unwrap();
    assert_ne!(other.chain[0], cert.chain[0]);
    assert_ne!(certs.generation(&b), generation);
    assert_eq!(certs.identities(), vec![a, b]);
}

#[test]
fn concurrent_first_uses_share_one_certificate() {
    let certs = Arc::new(manager(Duration::from_secs(3600)));
    let id = SpiffeId::new(TD, "ns", "busy");
    let start = Arc::new(Barrier::new(8));
    let handed_out: Vec<_> = (0..8)
        .map(|_| {
            let (certs, id, start) = (certs.clone(), id.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                certs.certificate(&id).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for cert in &handed_out {
        assert!(Arc::ptr_eq(cert, &handed_out[0]));
    }
    assert_eq!(certs.generation(&id), 1);
}

#[test]
fn rotates_after_half_the_lifetime_and_old_certificates_stay_usable() {
    let certs = manager(Duration::from_secs(2));
    let id = SpiffeId::new(TD, "ns", "rotating");
    let peer = SpiffeId::new(TD, "ns", "peer");
    let old = certs.certificate(&id).unwrap();
    let old_generation = certs.generation(&id);
    let old_server = certs.server_config(&id).unwrap();
    assert!(Arc::ptr_eq(&old, &certs.certificate(&id).unwrap()));

    thread::sleep(Duration::from_millis(1100));
    let new = certs.certificate(&id).unwrap();
    assert!(!Arc::ptr_eq(&old, &new));
    assert_ne!(new.chain[0], old.chain[0]);
    assert_ne!(new.key.secret_der(), old.key.secret_der());
    assert!(new.not_after > old.not_after);
    assert!(certs.generation(&id) > old_generation);
    assert!(!Arc::ptr_eq(
        &old_server,
        &certs.server_config(&id).unwrap()
    ));
    // The new one is cached until its own half-life.
    assert!(Arc::ptr_eq(&new, &certs.certificate(&id).unwrap()));

    // The old certificate, still within its validity, still gets through.
    assert!(old.is_valid_at(std::time::SystemTime::now()));
    let client = client_config_for(&old, certs.ca().roots()).unwrap();
    let (client, server) = connect(client, certs.server_config(&peer).unwrap()).unwrap_both();
    assert_eq!(server.peer, id);
    assert_eq!(client.peer, peer);
    // And a configuration built before the rotation still serves.
    let (_, server) = connect(certs.client_config(&peer).unwrap(), old_server).unwrap_both();
    assert_eq!(server.peer, peer);
}

#[test]
fn forget_drops_the_certificate_and_a_new_one_has_a_new_generation() {
    let certs = manager(Duration::from_secs(3600));
    let id = SpiffeId::new(TD, "ns", "gone");
    let before = certs.certificate(&id).unwrap();
    let generation = certs.generation(&id);
    certs.forget(&id);
    assert_eq!(certs.generation(&id), 0);
    assert!(certs.identities().is_empty());
    let after = certs.certificate(&id).unwrap();
    assert_ne!(after.chain[0], before.chain[0]);
    assert!(certs.generation(&id) > generation);
}

#[test]
fn an_invalid_identity_gets_no_certificate() {
    let certs = manager(Duration::from_secs(3600));
    assert!(certs.certificate(&SpiffeId::new(TD, "", "sa")).is_err());
    assert!(
        certs
            .server_config(&SpiffeId::new("other.td", "ns", "sa"))
            .is_err()
    );
    assert!(certs.identities().is_empty());
}
