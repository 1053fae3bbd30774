//! Arbitrary bytes as an API request: the first line is `METHOD TARGET`, the rest the body.
//! Routing, the config post's unit name, the pod spec's (and the CNI plugin's pod's)
//! decoding and the pod spec's validation must
//! never panic, whatever arrives on the agent's socket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_agent::api::request::{self, Route};

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let (method, target) = head.split_once(' ').unwrap_or((&head, "/"));
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    match Route::parse(method, path, query) {
        Route::Enroll => {
            if let Ok(spec) = request::decode_pod_spec(body) {
                let _ = spec.validate();
                let _ = spec.key().file_name();
            }
        }
        Route::ApplyConfig { file } => assert!(!file.is_empty()),
        Route::CniAdd | Route::CniCheck => {
            let _ = request::decode_cni_pod(body);
        }
        _ => {}
    }
});
