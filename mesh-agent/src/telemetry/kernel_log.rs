//! Kernel log records (aya-log ring buffer) forwarded to `tracing`.
// The only unsafe of the agent library: registering the ring buffer's fd with tokio.
#![allow(unsafe_code)]

use crate::redirect::ProgramIds;

/// Forwards the kernel programs' aya-log records to `tracing` (through the `log` bridge
/// that tracing-subscriber installs). Found through a program id, so it also works for
/// programs reused from pins. Failing to set it up costs only the kernel's log lines.
pub fn forward(ids: &ProgramIds) {
    let Some(&id) = ids.0.values().next() else {
        return;
    };
    let logger = match aya_log::EbpfLogger::init_from_id(id) {
        Ok(logger) => logger,
        Err(e) => {
            tracing::warn!(error = %e, "kernel program logs will not be forwarded");
            return;
        }
    };
    // SAFETY: the logger owns the ring buffer's fd for as long as the AsyncFd holds it,
    // and flushing reads records without closing or replacing that fd.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "kernel program logs will not be forwarded");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
