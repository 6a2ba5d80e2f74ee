//! The one wait: poll a probe with backoff until it holds or its deadline passes.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::cluster::ErrorClass;
use crate::model::Health;
use crate::probe::HealthProbe;

/// How a wait ended without its condition holding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
/// `deadline` is a window without progress: a `Waiting` reason the wait has not seen before
/// is progress (a probe says "17 replicas not serving yet", then "12 ..."), and it starts the
/// window again, so a long piece of work that keeps moving is not cut off, however long it
/// is, while a stuck one is caught after one window. A reason seen before (a probe that
/// flips between two states, a count that goes back up) is not progress. A backend's reasons
/// should therefore change only when something moved (no clocks in them).
///
/// # Errors
/// [`WaitError`] when a deadline passes without progress, the probe fails
/// or its error is fatal.
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
    let after = |from: Instant, d: Duration| {
        from.checked_add(d)
            .or_else(|| from.checked_add(far))
            .unwrap_or(from)
    };
    let mut end = after(start, deadline);
    let mut interval = poll.0;
    let mut last = String::new();
    let mut progressed = false;
    // Hashes of the reasons given so far: only a new one is progress.
    let mut seen = std::collections::HashSet::new();
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
        let now = Instant::now();
        if reason != last {
            on_wait(&reason);
            let new = seen.insert(hash_of(&reason));
            if !last.is_empty() && new {
                // Progress: the window starts again.
                end = after(now, deadline);
                progressed = true;
            }
            last = reason;
        }
        if now >= end {
            return Err(WaitError::Timeout(if progressed {
                format!("no progress for the last {deadline:?}: {last}")
            } else {
                last
            }));
        }
        let next = now.checked_add(interval).map_or(end, |t| t.min(end));
        let sleep = std::pin::pin!(sleep_until(next));
        let wake = std::pin::pin!(probe.wake());
        futures_util::future::select(sleep, wake).await;
        interval = interval.saturating_add(interval / 2).min(poll.1);
    }
}

/// A reason's hash, the same in every run (SipHash with fixed keys).
fn hash_of(reason: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    reason.hash(&mut h);
    h.finish()
}
