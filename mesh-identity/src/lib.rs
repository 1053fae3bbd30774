//! Workload identities and the mutual TLS material of the mesh's HBONE tunnels (HTTP/2
//! CONNECT over mTLS on port 15008, as Istio's ztunnel speaks it). Knows nothing of sockets,
//! eBPF or the agent: it issues certificates and builds rustls configurations.
//!
//! Modules, one job each: [`spiffe`] parses and prints SPIFFE IDs; `cacerts` reads and
//! writes Istio's `cacerts` directory, `pemfile` the PEM in it and `pkcs8` turns openssl's
//! key forms into the one rcgen reads; `ca` is the CA that issues leaves; `x509` reads the
//! facts (URI SANs, validity) out of certificates; `verify` is what each end checks about the
//! other; `tls` builds the rustls configurations; `manager` keeps one certificate per
//! identity and rotates it.
//!
//! # Crypto provider: ring
//!
//! rustls and rcgen both use ring, and every configuration is built with
//! [`crypto_provider`], so nothing here depends on a process-wide default.
//!
//! aws-lc-rs was tried first and builds here with the C compiler alone (about 15 s once on
//! two cores). Measured on this machine (release, one core, both ends in one thread), it
//! moves AES-256-GCM records at about 3.2 GB/s against ring's 2.45 GB/s, and a full mutual
//! TLS 1.3 handshake with P-256 certificates takes about 0.55 ms with either. It is not
//! used because enabling rustls's `aws_lc_rs` feature next to the `ring` one that kube turns
//! on leaves rustls without a provider of its own choosing: kube-client builds its TLS
//! configuration with `ClientConfig::builder()`, which then panics in every binary of a
//! workspace build (the agent with `--kubernetes`, mesh-config's kube tests) unless each one
//! installs a process default first. ring is already built for kube, adds nothing to the
//! build, and keeps one provider in the agent.
//!
//! To switch later: install aws-lc-rs as the process default at the start of every binary
//! that makes a kube client (and the tests that do), then change `ring` to `aws_lc_rs` in
//! this crate's rustls and rcgen features and in [`crypto_provider`].

#![forbid(unsafe_code)]

mod ca;
mod cacerts;
mod cert;
mod error;
mod manager;
mod pemfile;
mod pkcs8;
pub mod spiffe;
mod tls;
mod verify;
mod x509;

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

pub use ca::{CertificateAuthority, ROOT_LIFETIME};
pub use cacerts::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
pub use cert::WorkloadCert;
pub use error::{BoxError, IdentityError};
pub use manager::{CertManager, DEFAULT_CERT_LIFETIME};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use tls::{ALPN_H2, client_config_for, server_config_for};
pub use x509::peer_identity;

/// How far before its issuance a certificate's validity starts, for peers whose clock is a
/// little behind ours. Lab nodes share one clock and Kubernetes nodes run NTP; a minute
/// covers ordinary drift without noticeably lengthening a certificate's life.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

static PROVIDER: LazyLock<Arc<rustls::crypto::CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// The crypto provider of every configuration this crate builds (ring). Installing it as
/// rustls's process default is not needed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    PROVIDER.clone()
}
