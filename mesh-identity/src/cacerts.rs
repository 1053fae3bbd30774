//! Istio's `cacerts` directory on disk ("plug in CA certificates"): which of the four files
//! exist, reading them, and writing a generated set so that several agents starting at once
//! on one directory (one per lab node) agree on a single CA.
//!
//! Agreement rests on two things. An exclusive `flock` on a lock file in the directory is
//! held by whoever finds files missing, so exactly one caller generates while the others
//! wait and then find the complete set. Each file is written under a temporary name, synced,
//! and renamed into place, so no reader ever sees a half-written file. A complete directory
//! is read without the lock, which keeps read-only mounts (a Kubernetes secret) working.
//! flock, unlike an `O_EXCL` lock file, is released by the kernel if its holder dies.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{IdentityError, pemfile};

/// The CA's own certificate: the issuer of every leaf.
pub const CA_CERT: &str = "ca-cert.pem";
/// The CA's private key (mode 0600 when generated here).
pub const CA_KEY: &str = "ca-key.pem";
/// The trust anchors: one or more roots.
pub const ROOT_CERT: &str = "root-cert.pem";
/// ca-cert.pem followed by its issuers up to the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The four files, in the order errors list them.
pub const FILES: [&str; 4] = [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN];
/// Serialises generation between processes (and threads) sharing the directory.
const LOCK_FILE: &str = ".cacerts.lock";

/// The four files, decoded but not yet checked against each other.
pub(crate) struct CaFiles {
    pub ca_cert: CertificateDer<'static>,
    pub ca_key: PrivateKeyDer<'static>,
    pub roots: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
}

/// A newly generated self-signed CA, as PEM, to be written as all four files.
pub(crate) struct GeneratedCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Reads the CA files in `dir`; if there are none, writes the ones `generate` makes first.
pub(crate) fn load_or_create(
    dir: &Path,
    generate: impl FnOnce() -> Result<GeneratedCa, IdentityError>,
) -> Result<CaFiles, IdentityError> {
    if matches!(layout(dir)?, Layout::Complete) {
        return read(dir);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| IdentityError::io(dir, "create the CA directory", e))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| IdentityError::io(&lock_path, "open the lock file", e))?;
    lock.lock()
        .map_err(|e| IdentityError::io(&lock_path, "lock", e))?;
    // Looked at again under the lock: another agent may have finished meanwhile.
    match layout(dir)? {
        Layout::Complete => {}
        Layout::Empty => write(dir, &generate()?)?,
        Layout::Partial { missing, present } => {
            return Err(IdentityError::PartialLayout {
                dir: dir.to_path_buf(),
                missing,
                present,
            });
        }
    }
    let files = read(dir);
    drop(lock);
    files
}

enum Layout {
    Complete,
    Empty,
    Partial {
        missing: Vec<String>,
        present: Vec<String>,
    },
}

fn layout(dir: &Path) -> Result<Layout, IdentityError> {
    let (mut missing, mut present) = (Vec::new(), Vec::new());
    for name in FILES {
        let path = dir.join(name);
        // `try_exists` follows symlinks, as the `..data/` links of a mounted secret need.
        let exists = path
            .try_exists()
            .map_err(|e| IdentityError::io(&path, "look for", e))?;
        if exists {
            present.push(name.to_string());
        } else {
            missing.push(name.to_string());
        }
    }
    Ok(if missing.is_empty() {
        Layout::Complete
    } else if present.is_empty() {
        Layout::Empty
    } else {
        Layout::Partial { missing, present }
    })
}

fn read(dir: &Path) -> Result<CaFiles, IdentityError> {
    let file = |name: &str| -> Result<(PathBuf, Vec<u8>), IdentityError> {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| IdentityError::io(&path, "read", e))?;
        Ok((path, bytes))
    };
    let (path, bytes) = file(CA_CERT)?;
    let mut ca_certs = pemfile::certificates(&path, &bytes)?;
    if ca_certs.len() != 1 {
        return Err(IdentityError::Pem {
            path,
            reason: format!("holds {} certificates, expected one", ca_certs.len()),
        });
    }
    let ca_cert = ca_certs.remove(0);
    let (path, bytes) = file(CA_KEY)?;
    let ca_key = pemfile::private_key(&path, &bytes)?;
    let (path, bytes) = file(ROOT_CERT)?;
    let roots = pemfile::certificates(&path, &bytes)?;
    let (path, bytes) = file(CERT_CHAIN)?;
    let chain = pemfile::certificates(&path, &bytes)?;
    Ok(CaFiles {
        ca_cert,
        ca_key,
        roots,
        chain,
    })
}

/// A generated root is its own issuer, anchor and chain: the same PEM goes to three files.
fn write(dir: &Path, ca: &GeneratedCa) -> Result<(), IdentityError> {
    let files = [
        (ROOT_CERT, &ca.cert_pem, 0o644),
        (CERT_CHAIN, &ca.cert_pem, 0o644),
        (CA_KEY, &ca.key_pem, 0o600),
        (CA_CERT, &ca.cert_pem, 0o644),
    ];
    // All four are complete on disk before the first rename, so a crash can leave a partial
    // set only in the moment between renames.
    let mut staged = Vec::with_capacity(files.len());
    for (name, contents, mode) in files {
        let temp = dir.join(format!(".{name}.tmp"));
        write_synced(&temp, contents.as_bytes(), mode)?;
        staged.push((temp, dir.join(name)));
    }
    for (temp, path) in staged {
        fs::rename(&temp, &path).map_err(|e| IdentityError::io(&path, "rename into place", e))?;
    }
    // The renames are durable once the directory itself is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IdentityError::io(dir, "sync the CA directory", e))
}

fn write_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    // A leftover from a generator that died may have other permissions; start afresh so the
    // mode below applies (it only does on creation).
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(IdentityError::io(path, "remove a stale temporary file", e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| IdentityError::io(path, "create", e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| IdentityError::io(path, "write", e))
}
