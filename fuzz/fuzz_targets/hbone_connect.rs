//! Arbitrary bytes as what an HBONE peer sends once mutual TLS is up: the HTTP/2 client
//! preface, then whatever frames the input holds, into the server end with the agent's own
//! settings (`hbone::server::h2_settings`), each stream's request through the agent's
//! CONNECT decoding (`hbone::server::connect_target`). Nothing may panic or hang, and a
//! target is only ever an `ip:port` taken from a CONNECT's `:authority`.
//!
//! TLS itself is rustls's and is not fuzzed here: a peer reaches these bytes only with a
//! certificate of the mesh's CA.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mesh_agent::proxy::hbone::server::{connect_target, h2_settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let input = data.to_vec();
    runtime().block_on(async move {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client_io);
        // The peer: preface and frames, then end of input (the TLS stream's close).
        let peer = tokio::spawn(async move {
            let _ = to_server.write_all(PREFACE).await;
            let _ = to_server.write_all(&input).await;
            let _ = to_server.shutdown().await;
        });
        // What the server answers is read and dropped, so it never blocks on a full pipe.
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 16 * 1024];
            while matches!(from_server.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let serve = async {
            let Ok(mut connection) = h2_settings().handshake::<_, bytes::Bytes>(server_io).await
            else {
                return;
            };
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                match connect_target(&request) {
                    Ok(target) => {
                        assert_eq!(request.method(), http::Method::CONNECT);
                        let authority = request.uri().authority().map(|a| a.as_str());
                        assert_eq!(
                            authority.and_then(|a| a.parse().ok()),
                            Some(target),
                            "the target is the CONNECT's :authority"
                        );
                        let _ = respond.send_response(http::Response::new(()), true);
                    }
                    Err(_) => {
                        let refused = http::Response::builder().status(400).body(());
                        if let Ok(refused) = refused {
                            let _ = respond.send_response(refused, true);
                        }
                    }
                }
            }
        };
        // The input ends with the peer's close, so the connection must end too: a hang
        // here is a finding (libFuzzer's -timeout).
        serve.await;
        peer.abort();
        drain.abort();
        // Awaited, so the aborted tasks are freed in this iteration: left on the shared
        // runtime they would be reported as leaks when the run ends.
        let _ = peer.await;
        let _ = drain.await;
    });
});
