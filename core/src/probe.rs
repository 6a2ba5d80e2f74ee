//! Health probes: a condition the engine waits for, with combinators.

use std::future::Future;
use std::sync::Arc;

use crate::model::Health;

/// A condition that can be checked again and again until it holds.
///
/// One required method, [`check`](HealthProbe::check); [`and`](HealthProbe::and) and
/// [`or`](HealthProbe::or) combine probes, [`probe_fn`] wraps a closure and [`probes`] holds
/// ready-made ones.
///
/// [`wake`](HealthProbe::wake) is an optional hint: a future that completes when the state
/// behind the probe may have changed (a ZooKeeper watch, a simulator event).
/// The engine then checks again at once instead of waiting for its next poll.
pub trait HealthProbe: Send + Sync {
    /// The error a check can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Checks the condition once.
    ///
    /// # Errors
    /// When the state could not be read; the engine classifies the error through
    /// [`Cluster::classify`](crate::Cluster::classify).
    fn check(&self) -> impl Future<Output = Result<Health, Self::Error>> + Send;

    /// Completes when the condition may have changed. The default never completes.
    fn wake(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// Holds when both hold; the first that waits gives the reason.
    fn and<P>(self, other: P) -> And<Self, P>
    where
        Self: Sized,
        P: HealthProbe<Error = Self::Error>,
    {
        And(self, other)
    }

    /// Holds when either holds.
    fn or<P>(self, other: P) -> Or<Self, P>
    where
        Self: Sized,
        P: HealthProbe<Error = Self::Error>,
    {
        Or(self, other)
    }
}

/// Both probes hold. Built by [`HealthProbe::and`].
#[derive(Debug, Clone)]
pub struct And<A, B>(A, B);

/// Either probe holds. Built by [`HealthProbe::or`].
#[derive(Debug, Clone)]
pub struct Or<A, B>(A, B);

impl<A, B> HealthProbe for And<A, B>
where
    A: HealthProbe,
    B: HealthProbe<Error = A::Error>,
{
    type Error = A::Error;

    /// Both are asked every time: a `Failed` from either ends the wait whatever the order
    /// (the first one's wins when both fail); otherwise the first one's `Waiting`.
    async fn check(&self) -> Result<Health, Self::Error> {
        let first = self.0.check().await?;
        if matches!(first, Health::Failed(_)) {
            return Ok(first);
        }
        let second = self.1.check().await?;
        Ok(match (first, second) {
            (_, Health::Failed(r)) => Health::Failed(r),
            (Health::Healthy, second) => second,
            (first, _) => first,
        })
    }

    async fn wake(&self) {
        futures_util::future::select(Box::pin(self.0.wake()), Box::pin(self.1.wake())).await;
    }
}

impl<A, B> HealthProbe for Or<A, B>
where
    A: HealthProbe,
    B: HealthProbe<Error = A::Error>,
{
    type Error = A::Error;

    async fn check(&self) -> Result<Health, Self::Error> {
        match self.0.check().await? {
            Health::Healthy => Ok(Health::Healthy),
            first => match self.1.check().await? {
                Health::Healthy => Ok(Health::Healthy),
                Health::Failed(r) if matches!(first, Health::Failed(_)) => Ok(Health::Failed(r)),
                _ => Ok(first),
            },
        }
    }

    async fn wake(&self) {
        futures_util::future::select(Box::pin(self.0.wake()), Box::pin(self.1.wake())).await;
    }
}

impl<P: HealthProbe + ?Sized> HealthProbe for &P {
    type Error = P::Error;

    fn check(&self) -> impl Future<Output = Result<Health, Self::Error>> + Send {
        (**self).check()
    }

    fn wake(&self) -> impl Future<Output = ()> + Send {
        (**self).wake()
    }
}

impl<P: HealthProbe + ?Sized> HealthProbe for Box<P> {
    type Error = P::Error;

    fn check(&self) -> impl Future<Output = Result<Health, Self::Error>> + Send {
        (**self).check()
    }

    fn wake(&self) -> impl Future<Output = ()> + Send {
        (**self).wake()
    }
}

impl<P: HealthProbe + ?Sized> HealthProbe for Arc<P> {
    type Error = P::Error;

    fn check(&self) -> impl Future<Output = Result<Health, Self::Error>> + Send {
        (**self).check()
    }

    fn wake(&self) -> impl Future<Output = ()> + Send {
        (**self).wake()
    }
}

/// A probe made from a closure that returns a future. Built by [`probe_fn`].
#[derive(Clone)]
pub struct ProbeFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for ProbeFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeFn").finish_non_exhaustive()
    }
}

/// Wraps a closure as a [`HealthProbe`], like tower's `service_fn`.
///
/// Each check calls the closure and awaits its future, which must be `Send` and must not
/// borrow from the closure itself. Borrow from outside instead: inside a method,
/// `probe_fn(|| async { self.read().await })` captures `&self` and clones nothing. For owned
/// state, clone it into each future: `probe_fn(move || { let c = c.clone(); async move {
/// c.read().await } })`. Async closures (`async || ...`) are not accepted: stable Rust cannot
/// yet require the future of an `AsyncFn` to be `Send`, which every probe's `check` promises.
///
/// # Examples
/// ```
/// use rollout_core::{Health, HealthProbe, probe::probe_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let probe = probe_fn(|| async { Ok::<_, std::io::Error>(Health::Healthy) });
/// assert!(probe.check().await.unwrap().is_healthy());
///
/// // Owned state: one clone per check, moved into its future.
/// let state = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
/// let probe = probe_fn({
///     let state = state.clone();
///     move || {
///         let state = state.clone();
///         async move {
///             Ok::<_, std::io::Error>(if state.load(std::sync::atomic::Ordering::Relaxed) {
///                 Health::Healthy
///             } else {
///                 Health::waiting("not yet")
///             })
///         }
///     }
/// });
/// assert!(!probe.check().await.unwrap().is_healthy());
/// state.store(true, std::sync::atomic::Ordering::Relaxed);
/// assert!(probe.check().await.unwrap().is_healthy());
/// # });
/// ```
pub fn probe_fn<F, Fut, E>(f: F) -> ProbeFn<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<Health, E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    ProbeFn { f }
}

impl<F, Fut, E> HealthProbe for ProbeFn<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<Health, E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    type Error = E;

    fn check(&self) -> impl Future<Output = Result<Health, Self::Error>> + Send {
        (self.f)()
    }
}

/// Ready-made probes.
pub mod probes {
    use std::marker::PhantomData;

    use super::HealthProbe;
    use crate::model::{Health, Topology};

    /// A probe that always gives the same answer; useful in tests and as a neutral element.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct Always<E> {
        health: Health,
        _error: PhantomData<fn() -> E>,
    }

    /// A probe that always holds.
    pub fn always<E: std::error::Error + Send + Sync + 'static>() -> Always<E> {
        Always {
            health: Health::Healthy,
            _error: PhantomData,
        }
    }

    /// A probe that never holds and gives `reason`.
    pub fn never<E: std::error::Error + Send + Sync + 'static>(
        reason: impl Into<String>,
    ) -> Always<E> {
        Always {
            health: Health::Waiting(reason.into()),
            _error: PhantomData,
        }
    }

    /// A probe that fails at once with `reason`: ends any wait that asks it.
    pub fn failed<E: std::error::Error + Send + Sync + 'static>(
        reason: impl Into<String>,
    ) -> Always<E> {
        Always {
            health: Health::Failed(reason.into()),
            _error: PhantomData,
        }
    }

    impl<E: std::error::Error + Send + Sync + 'static> HealthProbe for Always<E> {
        type Error = E;

        async fn check(&self) -> Result<Health, E> {
            Ok(self.health.clone())
        }
    }

    /// A probe that holds once tokio's clock reaches `at` and wakes its wait then; until
    /// then it waits with `reason`. The engine's settle time after a node is one.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct Until<E> {
        at: tokio::time::Instant,
        reason: String,
        _error: PhantomData<fn() -> E>,
    }

    /// A probe that holds from `at` on (see [`Until`]).
    pub fn until<E: std::error::Error + Send + Sync + 'static>(
        at: tokio::time::Instant,
        reason: impl Into<String>,
    ) -> Until<E> {
        Until {
            at,
            reason: reason.into(),
            _error: PhantomData,
        }
    }

    impl<E: std::error::Error + Send + Sync + 'static> HealthProbe for Until<E> {
        type Error = E;

        async fn check(&self) -> Result<Health, E> {
            Ok(if tokio::time::Instant::now() >= self.at {
                Health::Healthy
            } else {
                Health::Waiting(self.reason.clone())
            })
        }

        async fn wake(&self) {
            tokio::time::sleep_until(self.at).await;
        }
    }

    /// Judges a topology: every node is alive, and every partition has a live primary and all
    /// its wanted members.
    ///
    /// Backends use it inside their `fully_healthy` probe after reading the topology.
    pub fn topology_fully_healthy(topology: &Topology) -> Health {
        if let Some(node) = topology.nodes.iter().find(|n| !n.alive) {
            return Health::waiting(format!("node {} is not alive", node.id));
        }
        match topology.first_unhealthy() {
            Some(reason) => Health::Waiting(reason),
            None => Health::Healthy,
        }
    }
}
