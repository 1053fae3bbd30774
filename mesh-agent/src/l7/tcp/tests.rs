//! The ClientHello reader of TLS passthrough, on a real rustls client's first flight.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::ReadBuf;

use super::*;

/// A client's first flight for `server_name`, as it goes on the wire.
fn client_hello(server_name: &str) -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let config = rustls::ClientConfig::builder_with_provider(mesh_identity::crypto_provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

/// Gives its bytes `chunk` at a time, as a slow network would.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let end = (self.at + self.chunk)
            .min(self.bytes.len())
            .min(self.at + buf.remaining());
        let at = self.at;
        buf.put_slice(&self.bytes[at..end]);
        self.at = end;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn the_sni_is_read_and_every_byte_is_kept() {
    let hello = client_hello("A.Example.com");
    let mut stream = Trickle {
        bytes: hello.clone(),
        at: 0,
        chunk: 7,
    };
    let (seen, sni) = read_client_hello(&mut stream).await.expect("a ClientHello");
    assert_eq!(sni.as_deref(), Some("a.example.com"));
    assert_eq!(seen, hello, "the bytes forwarded are the bytes received");
}

#[tokio::test]
async fn a_truncated_hello_or_plain_text_is_refused() {
    let hello = client_hello("a.example.com");
    let mut cut = &hello[..hello.len() / 2];
    assert!(matches!(
        read_client_hello(&mut cut).await,
        Err(HelloError::Closed)
    ));
    let mut http = &b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"[..];
    let err = read_client_hello(&mut http).await.expect_err("not TLS");
    assert!(matches!(err, HelloError::Tls(_)), "{err}");
}

#[tokio::test]
async fn an_endless_hello_is_cut_off() {
    // A handshake record header announcing 16 KiB, then more such records, never whole.
    let mut bytes = Vec::new();
    for _ in 0..4 {
        bytes.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00]);
        bytes.extend_from_slice(&[0x01, 0xff, 0xff, 0xff]);
        bytes.resize(bytes.len() + 16 * 1024 - 4, 0);
    }
    let mut stream = &bytes[..];
    let err = read_client_hello(&mut stream).await.expect_err("too large");
    assert!(
        matches!(err, HelloError::TooLarge | HelloError::Tls(_)),
        "{err}"
    );
}
