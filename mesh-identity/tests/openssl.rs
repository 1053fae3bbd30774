//! Against openssl, the other implementation at hand: a `cacerts` directory made by openssl
//! as Istio's tools make it (RSA keys in PKCS#1, or EC keys in SEC1), and `s_client` as an
//! HBONE client presenting the PEM this crate writes. `cargo xtask setup` installs openssl;
//! without it these tests fail rather than pass unseen.

mod common;

use std::{
    fs, io,
    net::{Ipv4Addr, TcpListener},
    path::Path,
    process::{Command, Output, Stdio},
    sync::Arc,
    thread,
    time::Duration,
};

use common::{Seen, connect};
use mesh_identity::{
    CA_CERT, CA_KEY, CERT_CHAIN, CertManager, CertificateAuthority, ROOT_CERT, SpiffeId,
    client_config_for,
};
use rustls::{ServerConfig, ServerConnection};

const TD: &str = "cluster.local";
const HOUR: Duration = Duration::from_secs(3600);

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("openssl not runnable ({e}); `cargo xtask setup` installs it"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[derive(Clone, Copy, Debug)]
enum KeyKind {
    Rsa,
    Ec,
}

/// Istio's "plug in CA certificates" steps, with openssl: a root, an intermediate signed by
/// it as the CA, cert-chain.pem = ca-cert.pem + root-cert.pem. The root's key stays in
/// `work`, outside the cacerts directory.
fn openssl_cacerts(work: &Path, cacerts: &Path, kind: KeyKind) {
    let genkey = |out: &str| match kind {
        KeyKind::Rsa => openssl(work, &["genrsa", "-traditional", "-out", out, "2048"]),
        KeyKind::Ec => openssl(
            work,
            &["ecparam", "-name", "prime256v1", "-genkey", "-out", out],
        ),
    };
    genkey("root-key.pem");
    openssl(
        work,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root-key.pem",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/O=Istio/CN=Root CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root-cert.pem",
        ],
    );
    genkey("ca-key.pem");
    openssl(
        work,
        &[
            "req",
            "-new",
            "-key",
            "ca-key.pem",
            "-subj",
            "/O=Istio/CN=Intermediate CA/L=cluster1",
            "-out",
            "ca.csr",
        ],
    );
    fs::write(
        work.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\n\
         keyUsage=critical,keyCertSign,cRLSign,digitalSignature\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    openssl(
        work,
        &[
            "x509",
            "-req",
            "-in",
            "ca.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-days",
            "730",
            "-sha256",
            "-extfile",
            "ca.ext",
            "-out",
            "ca-cert.pem",
        ],
    );
    fs::create_dir_all(cacerts).unwrap();
    for name in [CA_CERT, CA_KEY, ROOT_CERT] {
        fs::copy(work.join(name), cacerts.join(name)).unwrap();
    }
    let chain = fs::read_to_string(work.join(CA_CERT)).unwrap()
        + &fs::read_to_string(work.join(ROOT_CERT)).unwrap();
    fs::write(cacerts.join(CERT_CHAIN), chain).unwrap();
}

fn loads_an_openssl_made_intermediate(kind: KeyKind, key_header: &str) {
    let work = tempfile::tempdir().unwrap();
    let cacerts = work.path().join("cacerts");
    openssl_cacerts(work.path(), &cacerts, kind);
    let key = fs::read_to_string(cacerts.join(CA_KEY)).unwrap();
    assert!(key.contains(key_header), "{kind:?} key:\n{key}");

    let ca = CertificateAuthority::load_or_create(&cacerts, TD).unwrap();
    assert_eq!(ca.intermediates().len(), 1);
    let certs = CertManager::new(Arc::new(ca), HOUR);
    let id = SpiffeId::new(TD, "default", "sleep");
    let leaf = certs.certificate(&id).unwrap();

    // openssl agrees the leaf chains to root-cert.pem, for both TLS roles.
    fs::write(work.path().join("leaf.pem"), leaf.chain_pem()).unwrap();
    for purpose in ["sslclient", "sslserver"] {
        let out = openssl(
            work.path(),
            &[
                "verify",
                "-CAfile",
                "cacerts/root-cert.pem",
                "-untrusted",
                "cacerts/ca-cert.pem",
                "-purpose",
                purpose,
                "leaf.pem",
            ],
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("leaf.pem: OK"));
    }
    // And so does rustls, trusting root-cert.pem only.
    let roots = [ca_root(&cacerts)];
    let client = client_config_for(&leaf, &roots).unwrap();
    let (_, server) = connect(client, certs.server_config(&id).unwrap()).unwrap_both();
    assert_eq!(server.peer, id);
}

fn ca_root(cacerts: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let pem = pem::parse(fs::read(cacerts.join(ROOT_CERT)).unwrap()).unwrap();
    pem.into_contents().into()
}

#[test]
fn loads_an_openssl_rsa_intermediate_with_a_pkcs1_key() {
    loads_an_openssl_made_intermediate(KeyKind::Rsa, "-----BEGIN RSA PRIVATE KEY-----");
}

#[test]
fn loads_an_openssl_ec_intermediate_with_a_sec1_key() {
    loads_an_openssl_made_intermediate(KeyKind::Ec, "-----BEGIN EC PRIVATE KEY-----");
}

/// Serves one TLS connection with `config`: the handshake, then close. Returns what the
/// server saw of its client.
fn serve_once(config: Arc<ServerConfig>) -> (u16, thread::JoinHandle<io::Result<Seen>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || -> io::Result<Seen> {
        let (mut tcp, _) = listener.accept()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        let seen = Seen {
            peer: mesh_identity::peer_identity(conn.peer_certificates())
                .map_err(io::Error::other)?,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
        };
        conn.send_close_notify();
        conn.complete_io(&mut tcp)?;
        Ok(seen)
    });
    (port, server)
}

#[test]
fn openssl_s_client_with_the_pem_we_write_gets_through() {
    let work = tempfile::tempdir().unwrap();
    let certs = CertManager::new(Arc::new(CertificateAuthority::generate(TD).unwrap()), HOUR);
    let client_id = SpiffeId::new(TD, "default", "curl");
    let client = certs.certificate(&client_id).unwrap();
    fs::write(work.path().join("chain.pem"), client.chain_pem()).unwrap();
    fs::write(work.path().join("key.pem"), client.key_pem()).unwrap();
    let roots_pem: String = certs
        .ca()
        .roots()
        .iter()
        .map(|r| pem::encode(&pem::Pem::new("CERTIFICATE", r.as_ref())))
        .collect();
    fs::write(work.path().join("roots.pem"), roots_pem).unwrap();

    let server_id = SpiffeId::new(TD, "default", "echo");
    let (port, server) = serve_once(certs.server_config(&server_id).unwrap());
    let connect_to = format!("127.0.0.1:{port}");
    let out = openssl(
        work.path(),
        &[
            "s_client",
            "-connect",
            &connect_to,
            "-tls1_3",
            "-alpn",
            "h2",
            "-cert",
            "chain.pem",
            "-cert_chain",
            "chain.pem",
            "-key",
            "key.pem",
            "-CAfile",
            "roots.pem",
            "-verify_return_error",
            "-brief",
        ],
    );
    let seen = server.join().unwrap().expect("the server refused s_client");
    assert_eq!(seen.peer, client_id);
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    // s_client checked our server's chain against the roots and agrees.
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("Verification: OK"), "{report}");
    assert!(report.contains("Protocol version: TLSv1.3"), "{report}");
}

#[test]
fn openssl_s_client_without_a_certificate_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let certs = CertManager::new(Arc::new(CertificateAuthority::generate(TD).unwrap()), HOUR);
    let (port, server) = serve_once(
        certs
            .server_config(&SpiffeId::new(TD, "default", "echo"))
            .unwrap(),
    );
    let connect_to = format!("127.0.0.1:{port}");
    // s_client's own exit status varies with when it notices; the server's verdict counts.
    let _ = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect_to,
            "-tls1_3",
            "-alpn",
            "h2",
            "-brief",
        ])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .output()
        .expect("openssl not runnable; `cargo xtask setup` installs it");
    let err = server
        .join()
        .unwrap()
        .expect_err("the server accepted a client without a certificate");
    assert_eq!(
        common::tls_error(&err),
        Some(rustls::Error::NoCertificatesPresented)
    );
}
