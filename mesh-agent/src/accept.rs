//! Back-off for accept loops. When the process is out of descriptors (`EMFILE`, `ENFILE`)
//! the pending connection stays in the backlog and the listener stays readable, so an
//! accept loop that simply retries spins at 100% CPU without making progress. Each failure
//! here sleeps instead, 10 ms doubling to 1 s, until an accept succeeds; it is counted in
//! `mesh_accept_errors_total{listener,error}` and logged once per burst (the first failure,
//! then a summary on recovery), not once per attempt.

use std::{
    io,
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, family::Family};

use crate::telemetry::metrics::AcceptLabels;

const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The back-off state of one accept loop.
pub struct AcceptBackoff {
    listener: &'static str,
    /// Who the listener serves (a pod, the agent), for the logs.
    scope: String,
    errors: Family<AcceptLabels, Counter>,
    next_delay: Duration,
    /// Failures since the last successful accept, and when the first of them happened.
    burst: Option<(u64, Instant)>,
}

impl AcceptBackoff {
    pub fn new(
        listener: &'static str,
        scope: impl Into<String>,
        errors: &Family<AcceptLabels, Counter>,
    ) -> Self {
        AcceptBackoff {
            listener,
            scope: scope.into(),
            errors: errors.clone(),
            next_delay: FIRST_DELAY,
            burst: None,
        }
    }

    /// After a successful accept: ends a burst of failures (logged once, here).
    pub fn accepted(&mut self) {
        if let Some((failures, since)) = self.burst.take() {
            tracing::info!(
                listener = self.listener,
                scope = %self.scope,
                failures,
                for_ms = since.elapsed().as_millis() as u64,
                "accepting again"
            );
            self.next_delay = FIRST_DELAY;
        }
    }

    /// After a failed accept: counts it, logs the first of a burst, and sleeps.
    pub async fn failed(&mut self, error: &io::Error) {
        let name = errno_name(error);
        self.errors
            .get_or_create(&AcceptLabels {
                listener: self.listener,
                error: name,
            })
            .inc();
        match &mut self.burst {
            Some((failures, _)) => *failures += 1,
            None => {
                tracing::warn!(
                    listener = self.listener,
                    scope = %self.scope,
                    %error,
                    "accept failing; backing off (up to 1 s) until it succeeds"
                );
                self.burst = Some((1, Instant::now()));
            }
        }
        tokio::time::sleep(self.next_delay).await;
        self.next_delay = (self.next_delay * 2).min(MAX_DELAY);
    }
}

/// The errno behind an accept failure, as a metric label.
fn errno_name(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::ECONNABORTED) => "ECONNABORTED",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_double_to_one_second_and_reset_on_success() {
        let family = Family::<AcceptLabels, Counter>::default();
        let mut backoff = AcceptBackoff::new("api", "test", &family);
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let mut slept = Vec::new();
        for _ in 0..10 {
            let before = tokio::time::Instant::now();
            backoff.failed(&emfile).await;
            slept.push(before.elapsed().as_millis());
        }
        assert_eq!(slept, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        let labels = AcceptLabels {
            listener: "api",
            error: "EMFILE",
        };
        assert_eq!(family.get_or_create(&labels).get(), 10);
        backoff.accepted();
        let before = tokio::time::Instant::now();
        backoff.failed(&emfile).await;
        assert_eq!(before.elapsed().as_millis(), 10);
    }
}
