//! The one wait: poll a probe with backoff until it holds or its deadline passes.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::cluster::ErrorClass;
use crate::model::Health;
use crate::probe::HealthProbe;

/// How a wait ended without its condition holding.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E: std::error::Error + 'static> {
    /// The deadline passed; the last reason the probe gave.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The probe said the condition will not hold.
    #[error("failed: {0}")]
    Failed(String),
    /// The probe's error was fatal.
    #[error("the probe failed")]
    Probe(#[source] E),
}

/// Polls `probe` until it holds, in tokio time.
///
/// Polls start every `poll.0` and grow by half up to `poll.1`; the probe's
/// [`wake`](HealthProbe::wake) cuts a poll short.
/// Transient and not-safe-yet errors (by `classify`) count as "not yet";
/// `on_wait` is called whenever the reason changes.
///
/// # Errors
/// [`WaitError`] when the deadline passes, the probe fails or its error is fatal.
///
/// # Cancel safety
/// Dropping the future stops polling; nothing else is held.
pub async fn wait_until<P: HealthProbe>(
    probe: &P,
    deadline: Duration,
    poll: (Duration, Duration),
    classify: impl Fn(&P::Error) -> ErrorClass,
    mut on_wait: impl FnMut(&str),
) -> Result<(), WaitError<P::Error>> {
    // A deadline too far to represent means "no deadline" in practice.
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let start = Instant::now();
    let end = start
        .checked_add(deadline)
        .or_else(|| start.checked_add(far))
        .unwrap_or(start);
    let mut interval = poll.0;
    let mut last = String::new();
    loop {
        let reason = match probe.check().await {
            Ok(Health::Healthy) => return Ok(()),
            Ok(Health::Failed(r)) => return Err(WaitError::Failed(r)),
            Ok(Health::Waiting(r)) => r,
            Err(e) => match classify(&e) {
                ErrorClass::Fatal => return Err(WaitError::Probe(e)),
                ErrorClass::Transient | ErrorClass::NotSafeYet => e.to_string(),
            },
        };
        if reason != last {
            on_wait(&reason);
            last = reason;
        }
        let now = Instant::now();
        if now >= end {
            return Err(WaitError::Timeout(last));
        }
        let next = now.checked_add(interval).map_or(end, |t| t.min(end));
        let sleep = std::pin::pin!(sleep_until(next));
        let wake = std::pin::pin!(probe.wake());
        futures_util::future::select(sleep, wake).await;
        interval = interval.saturating_add(interval / 2).min(poll.1);
    }
}
