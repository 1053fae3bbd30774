//! Real TLS between a client and a server configuration over a loopback TCP connection,
//! each end on its own thread with rustls's blocking I/O. No mocks: whatever the handshake
//! refuses, a real peer would see refused.
#![allow(dead_code)] // each test binary uses part of this

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    sync::Arc,
    thread,
    time::Duration,
};

use mesh_identity::{SpiffeId, WorkloadCert, crypto_provider, peer_identity};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ProtocolVersion, ServerConfig,
    ServerConnection, SignatureScheme, StreamOwned,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    version::TLS13,
};

/// Bounds every read, so a test that goes wrong fails instead of hanging.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What one end saw of a finished handshake.
#[derive(Debug)]
pub struct Seen {
    pub peer: SpiffeId,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<ProtocolVersion>,
}

/// Both ends' results. An end fails with the `io::Error` rustls's blocking I/O returns,
/// which wraps the `rustls::Error` (see [`tls_error`]).
#[derive(Debug)]
pub struct Outcome {
    pub client: io::Result<Seen>,
    pub server: io::Result<Seen>,
}

impl Outcome {
    /// Both ends finished and exchanged data.
    pub fn unwrap_both(self) -> (Seen, Seen) {
        match (self.client, self.server) {
            (Ok(client), Ok(server)) => (client, server),
            (client, server) => panic!("handshake failed: client {client:?}, server {server:?}"),
        }
    }

    /// The server refused: its error, after checking the client did not get through either.
    pub fn server_refusal(self) -> rustls::Error {
        assert!(
            self.client.is_err(),
            "client got through: {:?}",
            self.client
        );
        let err = self.server.expect_err("the server accepted the client");
        tls_error(&err).unwrap_or_else(|| panic!("not a TLS error: {err}"))
    }

    /// The client refused the server.
    pub fn client_refusal(self) -> rustls::Error {
        assert!(
            self.server.is_err(),
            "server got through: {:?}",
            self.server
        );
        let err = self.client.expect_err("the client accepted the server");
        tls_error(&err).unwrap_or_else(|| panic!("not a TLS error: {err}"))
    }
}

/// The `rustls::Error` inside an I/O error from `complete_io` or a `StreamOwned`.
pub fn tls_error(err: &io::Error) -> Option<rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>().cloned()
}

/// Connects `client` to `server` over loopback TCP: handshake, then the client sends
/// "ping" and the server answers "pong", so a refusal the client only learns of after its
/// own side of the handshake (TLS 1.3 client authentication) shows up as its error too.
pub fn connect(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Outcome {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let server = thread::spawn(move || -> io::Result<Seen> {
        let (tcp, _) = listener.accept()?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        let conn = ServerConnection::new(server).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping)?;
        assert_eq!(&ping, b"ping");
        tls.write_all(b"pong")?;
        tls.flush()?;
        seen(&tls.conn)
    });
    let client = (|| -> io::Result<Seen> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        // The verifier ignores the name; the IP form sends no SNI, as the agent does.
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(client, name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        tls.write_all(b"ping")?;
        tls.flush()?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong)?;
        assert_eq!(&pong, b"pong");
        seen(&tls.conn)
    })();
    let server = server.join().expect("server thread panicked");
    Outcome { client, server }
}

fn seen<D>(conn: &rustls::ConnectionCommon<D>) -> io::Result<Seen> {
    Ok(Seen {
        peer: peer_identity(conn.peer_certificates()).map_err(io::Error::other)?,
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        version: conn.protocol_version(),
    })
}

/// A client that presents no certificate and accepts any server, to see what the server
/// alone decides about a client without one.
pub fn anonymous_client() -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A client that presents `cert` and accepts any server.
pub fn permissive_client(cert: &WorkloadCert) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
        .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
