//! The node's certificates: one per identity of a workload on this node, issued on first
//! use and reissued once less than half the lifetime remains, with the rustls configurations
//! built from each.
//!
//! Rotation is lazy: it happens inside `certificate`, `server_config` and `client_config`,
//! which every new handshake calls, so no timer is needed and no certificate that is past
//! its half-life is used for a new connection. Open TLS sessions keep the keys they were
//! established with, so rotating never breaks a connection; a pool that wants to move its
//! tunnels to the new certificate compares [`CertManager::generation`].
//!
//! Issuing is pure computation (a key and a signature, well under a millisecond), so it
//! happens under the write lock: concurrent first callers for one identity wait for a
//! single issuance instead of each minting a certificate.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use rustls::{ClientConfig, ServerConfig};

use crate::{CertificateAuthority, IdentityError, SpiffeId, WorkloadCert, crypto_provider, tls};

/// The lifetime the agent gives workload certificates (Istio's default as well).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

pub struct CertManager {
    ca: Arc<CertificateAuthority>,
    lifetime: Duration,
    entries: RwLock<HashMap<SpiffeId, Arc<Entry>>>,
    /// Source of generation numbers; 0 is never handed out (it means "no certificate").
    last_generation: AtomicU64,
}

/// One identity's current certificate and what was built from it.
struct Entry {
    cert: Arc<WorkloadCert>,
    generation: u64,
    rotate_at: SystemTime,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl CertManager {
    /// `lifetime` is that of each leaf; the agent uses [`DEFAULT_CERT_LIFETIME`].
    pub fn new(ca: Arc<CertificateAuthority>, lifetime: Duration) -> Self {
        CertManager {
            ca,
            lifetime,
            entries: RwLock::new(HashMap::new()),
            last_generation: AtomicU64::new(0),
        }
    }

    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// `id`'s current certificate, issued or reissued if needed. An `Arc` handed out before a
    /// rotation stays usable: it is only dropped from the cache.
    pub fn certificate(&self, id: &SpiffeId) -> Result<Arc<WorkloadCert>, IdentityError> {
        Ok(self.current(id)?.cert.clone())
    }

    /// Server side of HBONE for a workload: TLS 1.3 only, ALPN `h2`, the workload's chain,
    /// a client certificate required, verified against the CA roots and carrying one SPIFFE
    /// ID of this trust domain. Cached per identity, rebuilt on rotation.
    pub fn server_config(&self, id: &SpiffeId) -> Result<Arc<ServerConfig>, IdentityError> {
        Ok(self.current(id)?.server.clone())
    }

    /// Client side of HBONE: TLS 1.3 only, ALPN `h2`, presents `id`'s chain, verifies the
    /// server's chain and validity against the roots and requires a SPIFFE ID of this trust
    /// domain, whatever the server name. Check the exact peer with [`crate::peer_identity`]
    /// after the handshake.
    pub fn client_config(&self, id: &SpiffeId) -> Result<Arc<ClientConfig>, IdentityError> {
        Ok(self.current(id)?.client.clone())
    }

    /// A number that changes whenever a certificate is (re)issued for `id`; 0 while it has
    /// none. Reading it does not rotate.
    pub fn generation(&self, id: &SpiffeId) -> u64 {
        self.read_entries()
            .get(id)
            .map_or(0, |entry| entry.generation)
    }

    /// Drops `id`'s certificate (its pod was removed); a later use issues a new one.
    pub fn forget(&self, id: &SpiffeId) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// The identities that currently hold a certificate, sorted.
    pub fn identities(&self) -> Vec<SpiffeId> {
        let mut ids: Vec<SpiffeId> = self.read_entries().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn current(&self, id: &SpiffeId) -> Result<Arc<Entry>, IdentityError> {
        if let Some(entry) = self.read_entries().get(id)
            && !Self::due(entry, SystemTime::now())
        {
            return Ok(entry.clone());
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        // Another caller may have issued while this one waited for the lock.
        if let Some(entry) = entries.get(id)
            && !Self::due(entry, SystemTime::now())
        {
            return Ok(entry.clone());
        }
        let entry = Arc::new(self.issue(id)?);
        entries.insert(id.clone(), entry.clone());
        Ok(entry)
    }

    fn issue(&self, id: &SpiffeId) -> Result<Entry, IdentityError> {
        let issued = SystemTime::now();
        let cert = self.ca.issue(id, self.lifetime)?;
        let rotate_at = rotation_time(issued, self.lifetime, cert.not_after);
        let provider = crypto_provider();
        let server = tls::server_config(&cert, self.ca.trust(), &provider)?;
        let client = tls::client_config(&cert, self.ca.trust(), &provider)?;
        Ok(Entry {
            cert: Arc::new(cert),
            generation: self.last_generation.fetch_add(1, Ordering::Relaxed) + 1,
            rotate_at,
            server,
            client,
        })
    }

    /// A clock that went back before the certificate's start also calls for a new one.
    fn due(entry: &Entry, now: SystemTime) -> bool {
        now >= entry.rotate_at || now < entry.cert.not_before
    }

    /// Readers never leave the map half-updated (entries are inserted whole), so a lock
    /// poisoned by a panic elsewhere still guards consistent data.
    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<SpiffeId, Arc<Entry>>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When less than half of the certificate's life will be left: half the lifetime asked for
/// after issuance (the clock-skew allowance before it does not count), or sooner if the CA's
/// own expiry cut the certificate short.
pub(crate) fn rotation_time(
    issued: SystemTime,
    lifetime: Duration,
    not_after: SystemTime,
) -> SystemTime {
    let actual = not_after.duration_since(issued).unwrap_or_default();
    issued + lifetime.min(actual) / 2
}

#[cfg(test)]
mod tests;
