//! The step runners every part of the engine shares: a step inside its node's span and
//! phase events, every slot of a wave at once, and the one wait with its error mapping.

use std::future::Future;

use futures_util::future::join_all;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::model::NodeId;
use crate::probe::HealthProbe;
use crate::wait::{WaitError, wait_until};

use super::ctx::{Ctx, Slot, StartAt};

impl<C: Cluster> Ctx<'_, C> {
    /// Runs `f` at once for every slot that starts at or before `from`, each inside its
    /// node's span and phase events.
    pub(super) async fn all<'s, T, F, Fut>(
        &self,
        slots: &'s [Slot<C::Node>],
        from: StartAt,
        phase: Phase,
        f: F,
    ) -> Result<Vec<T>, Error<C::Error>>
    where
        F: Fn(&'s Slot<C::Node>) -> Fut,
        Fut: Future<Output = Result<T, Error<C::Error>>>,
    {
        let results = join_all(
            slots
                .iter()
                .filter(|s| s.start <= from)
                .map(|s| self.step(&s.id, phase, f(s))),
        )
        .await;
        results.into_iter().collect()
    }

    pub(super) async fn step<T>(
        &self,
        id: &NodeId,
        phase: Phase,
        fut: impl Future<Output = Result<T, Error<C::Error>>>,
    ) -> Result<T, Error<C::Error>> {
        self.step_opt(Some(id), phase, fut).await
    }

    pub(super) async fn step_opt<T>(
        &self,
        id: Option<&NodeId>,
        phase: Phase,
        fut: impl Future<Output = Result<T, Error<C::Error>>>,
    ) -> Result<T, Error<C::Error>> {
        let node = id.cloned();
        self.emit(Event::PhaseStarted {
            node: node.clone(),
            phase,
        });
        let t0 = Instant::now();
        let span = tracing::info_span!("phase", node = node.as_ref().map(|n| n.as_str()), %phase);
        let r = fut.instrument(span).await;
        if r.is_ok() {
            self.emit(Event::PhaseFinished {
                node,
                phase,
                took: t0.elapsed(),
            });
        }
        r
    }

    /// Waits for `probe` through the one wait function, mapping its end to an error that
    /// names the node and phase.
    pub(super) async fn wait<P: HealthProbe<Error = C::Error>>(
        &self,
        node: Option<&NodeId>,
        phase: Phase,
        probe: &P,
        deadline: std::time::Duration,
    ) -> Result<(), Error<C::Error>> {
        let on_wait = |reason: &str| {
            tracing::debug!(reason, "waiting");
            self.emit(Event::Waiting {
                node: node.cloned(),
                phase,
                reason: reason.to_string(),
            });
        };
        wait_until(
            probe,
            deadline,
            self.spec.policy.poll_bounds(),
            |e| self.cluster.classify(e),
            on_wait,
        )
        .await
        .map_err(|e| match e {
            WaitError::Timeout(reason) => Error::Timeout {
                node: node.cloned(),
                phase,
                after: deadline,
                reason,
            },
            WaitError::Failed(reason) => Error::Unhealthy {
                node: node.cloned(),
                phase,
                reason,
            },
            WaitError::Probe(source) => Error::Backend {
                node: node.cloned(),
                phase,
                source,
            },
        })
    }
}
