//! The engine's one retry loop: a control-plane call tried again on transient errors (and
//! while the cluster says "not safe yet"), with backoff in tokio time, bounded by the policy.

use std::future::Future;

use crate::cluster::{Cluster, ErrorClass};
use crate::error::{Error, Phase};
use crate::journal::JournalError;
use crate::model::NodeId;

/// Calls a control-plane step, retrying with exponential backoff in tokio time (from the poll
/// minimum to 5 s): a transient error up to `retries` times, a not-safe-yet one (no leader,
/// busy) for as long as the gate deadline allows. A fatal error, or the last one, becomes
/// [`Error::Backend`] naming the node and phase.
pub(super) async fn retry<C, T, F, Fut>(
    cluster: &C,
    policy: &crate::policy::Policy,
    node: Option<&NodeId>,
    phase: Phase,
    f: F,
) -> Result<T, Error<C::Error>>
where
    C: Cluster,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, C::Error>>,
{
    attempts(policy, |e| cluster.classify(e), f)
        .await
        .map_err(|source| Error::Backend {
            node: node.cloned(),
            phase,
            source,
        })
}

/// Tries `f` until it works, a fatal error (as `classify` says), the policy's transient
/// retries are spent, or the gate deadline passes; backoff in tokio time. The one retry
/// loop of the engine.
pub(super) async fn attempts<T, E, F, Fut>(
    policy: &crate::policy::Policy,
    classify: impl Fn(&E) -> ErrorClass,
    f: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    use backon::{ExponentialBuilder, Retryable};
    let (min, max) = policy.poll_bounds();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max.max(std::time::Duration::from_secs(5)))
        .without_max_times()
        .with_total_delay(Some(policy.get_deadlines().gate));
    let transient = std::sync::atomic::AtomicUsize::new(0);
    f.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| match classify(e) {
            ErrorClass::Fatal => false,
            ErrorClass::NotSafeYet => true,
            ErrorClass::Transient => {
                transient.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < policy.get_retries()
            }
        })
        .await
}

/// Why one attempt of an action failed: the lock was lost before it, or the cluster said no.
pub(super) enum Attempt<E> {
    LockLost(JournalError),
    Failed(E),
}
