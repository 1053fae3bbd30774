//! Istio's `cacerts` directory: generated, loaded, shared by agents starting together, and
//! plugged in (an intermediate CA under a separate root); broken layouts name the file.

mod common;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, Barrier},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::connect;
use mesh_identity::{
    CA_CERT, CA_KEY, CERT_CHAIN, CertManager, CertificateAuthority, IdentityError, ROOT_CERT,
    SpiffeId, client_config_for,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, string::PrintableString,
};
use rustls::pki_types::CertificateDer;

const TD: &str = "cluster.local";
const HOUR: Duration = Duration::from_secs(3600);

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_then_load_gives_the_same_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("etc/cacerts");
    let created = CertificateAuthority::load_or_create(&dir, TD).unwrap();
    assert_eq!(created.trust_domain(), TD);
    assert_eq!(created.roots().len(), 1);
    assert!(created.intermediates().is_empty(), "the CA is the root");

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
    for name in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
        assert_eq!(mode(&dir.join(name)), 0o644, "{name}");
    }
    // ca-cert = root-cert = cert-chain for a generated root.
    let root_pem = fs::read_to_string(dir.join(ROOT_CERT)).unwrap();
    assert_eq!(fs::read_to_string(dir.join(CA_CERT)).unwrap(), root_pem);
    assert_eq!(fs::read_to_string(dir.join(CERT_CHAIN)).unwrap(), root_pem);
    let key_pem = fs::read_to_string(dir.join(CA_KEY)).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // Nothing half-written is left behind.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".cacerts.lock", CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT]
    );

    let loaded = CertificateAuthority::load_or_create(&dir, TD).unwrap();
    assert_eq!(loaded.roots(), created.roots());
    assert_eq!(fs::read_to_string(dir.join(CA_KEY)).unwrap(), key_pem);

    // Leaves of either are trusted by the other: one CA.
    let a = CertManager::new(Arc::new(created), HOUR);
    let b = CertManager::new(Arc::new(loaded), HOUR);
    let (client, server) = connect(
        a.client_config(&SpiffeId::new(TD, "a", "a")).unwrap(),
        b.server_config(&SpiffeId::new(TD, "b", "b")).unwrap(),
    )
    .unwrap_both();
    assert_eq!(client.peer.namespace, "b");
    assert_eq!(server.peer.namespace, "a");
}

#[test]
fn agents_starting_together_agree_on_one_ca() {
    for _ in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cacerts");
        let start = Arc::new(Barrier::new(8));
        let agents: Vec<_> = (0..8)
            .map(|_| {
                let (dir, start) = (dir.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    CertificateAuthority::load_or_create(&dir, TD)
                })
            })
            .collect();
        let cas: Vec<CertificateAuthority> = agents
            .into_iter()
            .map(|agent| agent.join().unwrap().unwrap())
            .collect();
        let on_disk = fs::read(dir.join(ROOT_CERT)).unwrap();
        let root = pem::parse(&on_disk).unwrap();
        for ca in &cas {
            assert_eq!(ca.roots(), cas[0].roots());
            assert_eq!(ca.roots()[0].as_ref(), root.contents());
        }
    }
}

/// Istio's "plug in CA certificates": ca-cert.pem is an intermediate, signed by a root that
/// only root-cert.pem holds; cert-chain.pem is the intermediate followed by the root.
#[test]
fn an_intermediate_ca_issues_leaves_that_verify_against_root_cert_pem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugged = PluggedCa::new();
    plugged.write(dir);

    let ca = CertificateAuthority::load_or_create(dir, TD).unwrap();
    assert_eq!(ca.roots(), std::slice::from_ref(&plugged.root_der));
    assert_eq!(ca.intermediates(), [plugged.chain[0].clone()]);

    let certs = CertManager::new(Arc::new(ca), HOUR);
    let client_id = SpiffeId::new(TD, "default", "sleep");
    let server_id = SpiffeId::new(TD, "default", "echo");
    let leaf = certs.certificate(&client_id).unwrap();
    assert_eq!(leaf.chain.len(), 2, "leaf, then the intermediate");
    assert_eq!(leaf.chain[1], plugged.chain[0]);

    // The peer trusts root-cert.pem alone, read back from the file.
    let roots_pem = fs::read(dir.join(ROOT_CERT)).unwrap();
    let roots: Vec<_> = pem::parse_many(&roots_pem)
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents().into())
        .collect();
    let client = client_config_for(&leaf, &roots).unwrap();
    let (client, server) = connect(client, certs.server_config(&server_id).unwrap()).unwrap_both();
    assert_eq!(client.peer, server_id);
    assert_eq!(server.peer, client_id);
}

#[test]
fn every_intermediate_of_cert_chain_pem_follows_the_leaf() {
    let tmp = tempfile::tempdir().unwrap();
    let plugged = PluggedCa::with_levels(2);
    plugged.write(tmp.path());
    let ca = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    let certs = CertManager::new(Arc::new(ca), HOUR);
    let id = SpiffeId::new(TD, "default", "sleep");
    let leaf = certs.certificate(&id).unwrap();
    assert_eq!(&leaf.chain[1..], plugged.chain.as_slice());
    let client = client_config_for(&leaf, std::slice::from_ref(&plugged.root_der)).unwrap();
    let (client, _) = connect(client, certs.server_config(&id).unwrap()).unwrap_both();
    assert_eq!(client.peer, id);
}

/// During a root rotation root-cert.pem holds the old and the new root: both are trusted.
#[test]
fn root_cert_pem_may_hold_several_roots() {
    let tmp = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    let other = CertificateAuthority::generate(TD).unwrap();
    let both = fs::read_to_string(tmp.path().join(ROOT_CERT)).unwrap() + &pem_of(&other.roots()[0]);
    fs::write(tmp.path().join(ROOT_CERT), both).unwrap();
    let ca = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    assert_eq!(ca.roots().len(), 2);
    assert!(
        ca.intermediates().is_empty(),
        "ca-cert.pem is one of the roots"
    );
    let certs = CertManager::new(Arc::new(ca), HOUR);
    let id = SpiffeId::new(TD, "a", "b");
    // A peer whose leaf comes from the other root gets in too (its client would not trust
    // us, which is not the point here).
    let theirs = other.issue(&SpiffeId::new(TD, "c", "d"), HOUR).unwrap();
    let (_, server) = connect(
        common::permissive_client(&theirs),
        certs.server_config(&id).unwrap(),
    )
    .unwrap_both();
    assert_eq!(server.peer.namespace, "c");
}

#[test]
fn a_leaf_never_outlives_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let expiry = SystemTime::now() + Duration::from_secs(600);
    PluggedCa::build(1, Some(expiry)).write(tmp.path());
    let ca = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    let leaf = ca.issue(&SpiffeId::new(TD, "a", "b"), 24 * HOUR).unwrap();
    let whole_seconds = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(whole_seconds(leaf.not_after), whole_seconds(expiry));
}

#[test]
fn a_partial_layout_names_the_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    fs::remove_file(tmp.path().join(CA_KEY)).unwrap();
    fs::remove_file(tmp.path().join(CERT_CHAIN)).unwrap();
    let err = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap_err();
    let IdentityError::PartialLayout {
        dir,
        missing,
        present,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(dir, tmp.path());
    assert_eq!(missing, &[CA_KEY, CERT_CHAIN]);
    assert_eq!(present, &[CA_CERT, ROOT_CERT]);
    assert!(
        err.to_string()
            .contains("ca-key.pem, cert-chain.pem missing"),
        "{err}"
    );
    // Nothing was generated over the remains.
    assert!(!tmp.path().join(CA_KEY).exists());
}

#[test]
fn a_key_of_another_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    let stranger = KeyPair::generate().unwrap();
    fs::write(tmp.path().join(CA_KEY), stranger.serialize_pem()).unwrap();
    let err = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap_err();
    let IdentityError::KeyMismatch { key, cert } = &err else {
        panic!("{err}");
    };
    assert_eq!(key, &tmp.path().join(CA_KEY));
    assert_eq!(cert, &tmp.path().join(CA_CERT));
}

#[test]
fn unreadable_pem_names_the_file() {
    let cases: [(&str, &str, &str); 5] = [
        (
            ROOT_CERT,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
            "unreadable PEM",
        ),
        (CERT_CHAIN, "", "holds no certificate"),
        (CA_KEY, "just text\n", "holds no private key"),
        (
            CA_KEY,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted",
        ),
        (
            CA_CERT,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "unexpected \"PRIVATE KEY\" block",
        ),
    ];
    for (name, contents, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
        fs::write(tmp.path().join(name), contents).unwrap();
        let err = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap_err();
        let IdentityError::Pem { path, reason } = &err else {
            panic!("{name}: {err}");
        };
        assert_eq!(path, &tmp.path().join(name));
        assert!(reason.contains(expected), "{name}: {reason}");
    }
}

#[test]
fn files_that_do_not_fit_together_are_refused() {
    // root-cert.pem of another CA: every leaf would fail at its first handshake.
    let tmp = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    let other = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(other.path(), TD).unwrap();
    fs::copy(other.path().join(ROOT_CERT), tmp.path().join(ROOT_CERT)).unwrap();
    let err = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap_err();
    assert!(
        matches!(&err, IdentityError::ChainDoesNotVerify { dir, .. } if dir == tmp.path()),
        "{err}"
    );

    // cert-chain.pem that does not start with ca-cert.pem.
    let tmp = tempfile::tempdir().unwrap();
    PluggedCa::new().write(tmp.path());
    fs::copy(tmp.path().join(ROOT_CERT), tmp.path().join(CERT_CHAIN)).unwrap();
    let err = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap_err();
    assert!(
        matches!(&err, IdentityError::BadCertificate { path, index: 0, .. } if path == &tmp.path().join(CERT_CHAIN)),
        "{err}"
    );

    // Root → intermediate → CA, with the middle certificate missing from cert-chain.pem.
    let tmp = tempfile::tempdir().unwrap();
    let plugged = PluggedCa::with_levels(2);
    plugged.write(tmp.path());
    let short_chain = pem_of(&plugged.chain[0]) + &pem_of(&plugged.root_der);
    fs::write(tmp.path().join(CERT_CHAIN), short_chain).unwrap();
    let err = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap_err();
    assert!(
        matches!(err, IdentityError::ChainDoesNotVerify { .. }),
        "{err}"
    );
}

#[test]
fn a_leaf_is_not_a_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap();
    let leaf = ca.issue(&SpiffeId::new(TD, "a", "b"), HOUR).unwrap();
    fs::write(tmp.path().join(CA_CERT), pem_of(&leaf.chain[0])).unwrap();
    fs::write(tmp.path().join(CA_KEY), leaf.key_pem()).unwrap();
    let err = CertificateAuthority::load_or_create(tmp.path(), TD).unwrap_err();
    assert!(
        matches!(&err, IdentityError::BadCertificate { path, reason, .. }
            if path == &tmp.path().join(CA_CERT) && reason.contains("not a CA")),
        "{err}"
    );
}

fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// A root and intermediates made the way Istio's tools make them (names with a
/// PrintableString, as openssl writes); the last intermediate made is the CA.
struct PluggedCa {
    root_der: CertificateDer<'static>,
    /// From the CA up to (not including) the root: cert-chain.pem less the root.
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
}

impl PluggedCa {
    fn new() -> Self {
        Self::with_levels(1)
    }

    fn with_levels(levels: usize) -> Self {
        Self::build(levels, None)
    }

    /// `expiry`: when the CA (the last intermediate) expires.
    fn build(levels: usize, expiry: Option<SystemTime>) -> Self {
        let root_params = ca_params("Root CA");
        let root_key = KeyPair::generate().unwrap();
        let root_der = root_params.self_signed(&root_key).unwrap().der().clone();
        let mut issuer = Issuer::new(root_params, root_key);
        let mut chain = Vec::new();
        for level in 1..=levels {
            let mut params = ca_params(&format!("Intermediate CA {level}"));
            params
                .distinguished_name
                .push(DnType::LocalityName, "cluster1");
            if let (Some(expiry), true) = (expiry, level == levels) {
                params.not_after = expiry.into();
            }
            let key = KeyPair::generate().unwrap();
            chain.insert(0, params.signed_by(&key, &issuer).unwrap().der().clone());
            issuer = Issuer::new(params, key);
        }
        let key = KeyPair::try_from(issuer.key().serialized_der()).unwrap();
        PluggedCa {
            root_der,
            chain,
            key,
        }
    }

    fn write(&self, dir: &Path) {
        let chain: String = self.chain.iter().map(|cert| pem_of(cert)).collect();
        fs::write(dir.join(CA_CERT), pem_of(&self.chain[0])).unwrap();
        fs::write(dir.join(CA_KEY), self.key.serialize_pem()).unwrap();
        fs::write(dir.join(ROOT_CERT), pem_of(&self.root_der)).unwrap();
        fs::write(dir.join(CERT_CHAIN), chain + &pem_of(&self.root_der)).unwrap();
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::OrganizationName,
        DnValue::PrintableString(PrintableString::try_from("Istio").unwrap()),
    );
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}
