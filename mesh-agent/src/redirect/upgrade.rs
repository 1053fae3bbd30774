//! Kernel programs follow the binary. The pin directory carries the stamp of the object
//! its programs were loaded from: an empty directory `stamp-<hash>` (bpffs holds only pins
//! and directories). An agent whose embedded object has another stamp loads its own
//! programs, points every pinned link at them with `BPF_LINK_UPDATE`, then records its
//! stamp. A link update swaps the program in place: no moment passes with nothing
//! attached, so no connection made during an upgrade escapes capture.
// Two bpf(2) calls aya does not expose for pinned links (BPF_OBJ_GET for a link's fd,
// BPF_LINK_UPDATE); each unsafe block says why it is sound.
#![allow(unsafe_code)]
use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

use super::{RedirectError, io_err};

const STAMP_PREFIX: &str = "stamp-";

/// The stamp of a compiled object: FNV-1a over its bytes (a changed program, map or
/// constant changes it).
pub fn stamp(object: &[u8]) -> String {
    let hash = object.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The stamp recorded in `dir`, if any.
pub fn pinned_stamp(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        name.strip_prefix(STAMP_PREFIX).map(str::to_string)
    })
}

/// Records `stamp` in `dir`, replacing any other.
pub fn write_stamp(dir: &Path, stamp: &str) -> Result<(), RedirectError> {
    if let Some(old) = pinned_stamp(dir).filter(|old| old != stamp) {
        let path = dir.join(format!("{STAMP_PREFIX}{old}"));
        std::fs::remove_dir(&path).map_err(io_err("removing", &path))?;
    }
    let path = dir.join(format!("{STAMP_PREFIX}{stamp}"));
    match std::fs::create_dir(&path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io_err("creating", &path)(e)),
        _ => Ok(()),
    }
}

/// Points every link pinned under `links/<pod>/<program>` at the program of that name in
/// `programs`. Returns how many links were updated.
pub fn retarget_links(
    links: &Path,
    programs: &[(&str, BorrowedFd<'_>)],
) -> Result<usize, RedirectError> {
    let mut updated = 0;
    let Ok(pods) = std::fs::read_dir(links) else {
        return Ok(0);
    };
    for pod in pods.flatten() {
        for (name, program) in programs {
            let path = pod.path().join(name);
            if !path.exists() {
                continue;
            }
            let link = open_pin(&path).map_err(io_err("opening the pinned link", &path))?;
            link_update(link.as_fd(), *program)
                .map_err(io_err("updating the program of the link", &path))?;
            updated += 1;
        }
    }
    Ok(updated)
}

/// `BPF_OBJ_GET`: a file descriptor for a pinned object.
fn open_pin(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `attr` is a valid BPF_OBJ_GET attribute (the kernel zero-extends the shorter
    // struct) whose path pointer outlives the call; the size passed is its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            size_of::<ObjGet>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return of BPF_OBJ_GET is a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_LINK_UPDATE`: the link runs `program` from now on (aya keeps this call private).
fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    const BPF_LINK_UPDATE: libc::c_long = 29;
    let attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: `attr` is a valid BPF_LINK_UPDATE attribute holding two open descriptors
    // borrowed for the call; the size passed is its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &attr as *const LinkUpdate,
            size_of::<LinkUpdate>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_differ_with_the_object_and_are_stable() {
        assert_eq!(stamp(b"abc"), stamp(b"abc"));
        assert_ne!(stamp(b"abc"), stamp(b"abd"));
        assert_eq!(stamp(b"").len(), 16);
    }
}
