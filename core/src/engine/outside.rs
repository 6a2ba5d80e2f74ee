//! Failures the wave did not cause: a node outside the wave crashes, hangs or loses contact
//! while the wave runs, or a node of the wave restarts on its own during its rejoin.
//!
//! The rule (ARCHITECTURE.md, "Failures outside the wave"): the rollout's own knobs and
//! steps must never make such a failure worse than it would be without the rollout, and a
//! dead end is found in seconds.
//! Before the wave's stop, the engine rides the failure out: it gives the wave's nodes back
//! what the drain took, releases the knobs that keep the cluster from healing, lets the
//! backend heal, waits (bounded) until the cluster is fully healthy, then holds the knobs
//! again and starts the wave over from its gate. After the stop it cannot undo the restart,
//! so it releases those knobs at once and goes on waiting for its own nodes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cluster::Cluster;
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::model::KnobScope;
use crate::model::{Health, NodeId};
use crate::probe::HealthProbe;

use super::ctx::{Ctx, Slot, StartAt};
use super::knobs::Guard;
use crate::error::chain;

/// How long a rejoin runs before it is nudged again, after a failure outside the wave.
pub(super) const NUDGE: std::time::Duration = std::time::Duration::from_secs(60);

/// What the watch on the nodes outside the wave looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Watch {
    /// Nothing: the probe always holds (the simple procedure).
    Off,
    /// Nodes only: after a data wave's stop, when its own rejoin may mark a displaced
    /// leader's replica dead for a moment.
    Nodes,
    /// Nodes, and replicas that do not serve (read at most every [`LOOK_EVERY`]).
    NodesAndReplicas,
}

/// A probe that fails the wait it is part of the moment a data node outside the wave is not
/// alive, and remembers which.
pub(super) struct Outside<'a, C> {
    cluster: &'a C,
    /// The wave's nodes and the retired ones, which are not failures.
    exempt: Vec<NodeId>,
    /// Replicas count too (before the wave's stop).
    replicas: bool,
    on: AtomicBool,
    seen: Mutex<Option<(NodeId, String)>>,
    /// When the topology was last read: it is read at most every [`LOOK_EVERY`].
    looked: Mutex<Option<tokio::time::Instant>>,
}

/// How often the watch reads the whole topology for replicas that do not serve (it reads the
/// nodes at every check): a large cluster's topology is not read at every wake of a wait.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl<'a, C: Cluster> Outside<'a, C> {
    /// Watches the nodes outside `exempt` as `watch` says.
    pub(super) fn new(cluster: &'a C, exempt: Vec<NodeId>, watch: Watch) -> Self {
        Self {
            cluster,
            exempt,
            replicas: watch == Watch::NodesAndReplicas,
            on: AtomicBool::new(watch != Watch::Off),
            seen: Mutex::new(None),
            looked: Mutex::new(None),
        }
    }

    /// Stops watching (the failure was handled).
    pub(super) fn disable(&self) {
        self.on.store(false, Ordering::Relaxed);
    }

    /// Whether it saw a failure.
    pub(super) fn fired(&self) -> bool {
        self.seen().is_some()
    }

    /// The failure it saw, if any: the node and why.
    pub(super) fn seen(&self) -> Option<(NodeId, String)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Turns the error of a wait this probe failed into [`Error::OutsideFailure`].
    pub(super) fn explain(&self, e: Error<C::Error>) -> Error<C::Error> {
        match (e, self.seen()) {
            (Error::Unhealthy { phase, .. }, Some((node, reason))) => Error::OutsideFailure {
                node: Some(node),
                phase,
                reason,
            },
            (e, _) => e,
        }
    }
}

impl<C: Cluster> HealthProbe for Outside<'_, C> {
    type Error = C::Error;

    async fn check(&self) -> Result<Health, C::Error> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(Health::Healthy);
        }
        let mut failure = self.cluster.down_outside(&self.exempt).await?;
        if failure.is_none() && self.replicas {
            let now = tokio::time::Instant::now();
            let due = {
                let mut looked = self.looked.lock().unwrap_or_else(|e| e.into_inner());
                let due = looked.is_none_or(|t| now >= t + LOOK_EVERY);
                if due {
                    *looked = Some(now);
                }
                due
            };
            if due {
                failure = self.cluster.unserving_outside(&self.exempt).await?;
            }
        }
        Ok(match failure {
            Some((node, reason)) => {
                *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((node, reason.clone()));
                Health::Failed(reason)
            }
            None => Health::Healthy,
        })
    }
}

impl<C: Cluster> Ctx<'_, C> {
    /// Rides out a failure outside the wave, seen before any node of the wave was stopped:
    /// the wave's drained nodes get their replicas back, the knobs that keep the cluster from
    /// healing are released, the backend heals, and the cluster is waited for until fully
    /// healthy (the `healthy` deadline). The caller then starts the wave over from its gate,
    /// which holds the knobs again.
    ///
    /// # Errors
    /// The cluster does not heal within the deadline (naming the failed node), or a knob or
    /// backend call fails.
    pub(super) async fn ride_out(
        &self,
        guard: &mut Guard,
        slots: &[Slot<C::Node>],
        cause: Error<C::Error>,
    ) -> Result<(), Error<C::Error>> {
        let (failed, phase) = (cause.node().cloned(), cause.phase().unwrap_or(Phase::Gate));
        let why = match &cause {
            Error::OutsideFailure { reason, .. } => reason.clone(),
            other => chain(other),
        };
        tracing::warn!(
            cause = why.as_str(),
            "riding out a failure outside the wave"
        );
        self.emit(Event::Waiting {
            node: failed.clone(),
            phase,
            reason: format!(
                "{why}; the wave's nodes get their replicas back and the knobs that keep the \
                 cluster from healing are released until it is fully healthy again"
            ),
        });
        self.release_healing(guard).await?;
        let deadline = self.spec.policy.get_deadlines().healthy;
        let since = tokio::time::Instant::now();
        let mut held = false;
        loop {
            // Best effort, again at every nudge: the wait for full health is what counts.
            for s in slots.iter().filter(|s| s.start <= StartAt::Drain) {
                let _ = self
                    .act(Some(&s.id), Phase::Rejoin, || self.cluster.rejoin(&s.id))
                    .await;
            }
            let _ = self.act(None, Phase::Rejoin, || self.cluster.heal()).await;
            let window = NUDGE.min(deadline);
            let healed = self
                .wait(
                    None,
                    Phase::WaitHealthy,
                    &self.cluster.fully_healthy(),
                    window,
                )
                .await;
            match healed {
                Ok(()) => return Ok(()),
                Err(Error::Timeout { .. }) if since.elapsed() < deadline => {
                    let ids: Vec<NodeId> = slots.iter().map(|s| s.id.clone()).collect();
                    held = held || self.hold_again(guard, &self.exempt(&ids)).await?;
                }
                Err(e) => {
                    return Err(Error::OutsideFailure {
                        node: failed,
                        phase,
                        reason: format!(
                            "{why}; with the wave's nodes back and the knobs released, the \
                             cluster did not become fully healthy within {deadline:?}: {}",
                            chain(&e)
                        ),
                    });
                }
            }
        }
    }

    /// Releases every knob that keeps the cluster from healing (the wave's, and the rollout's
    /// marked [`blocks_healing`](crate::Knob::blocks_healing)), then lets the backend heal
    /// what they kept it from healing.
    pub(super) async fn release_healing(&self, guard: &mut Guard) -> Result<(), Error<C::Error>> {
        let names = guard.healing_blockers();
        self.restore_names(guard, &names).await?;
        self.act(None, Phase::Restore, || self.cluster.heal()).await
    }

    /// Holds again the knobs [`release_healing`](Self::release_healing) released, once no
    /// data node outside `exempt` is down: the cluster's own recovery has had its window, and
    /// what it left only the backend's heal repairs, which may need them held (OpenMLDB's
    /// nameserver refuses RecoverTable and UpdateTableAliveStatus while auto_failover is on,
    /// and a replica whose RecoverTable ran while its partition's leader was down stays dead;
    /// the upstream `openmldb_ops.py` turns auto_failover off around `recoverdata` likewise).
    /// Journaled as at a gate: a crash leaves them for the resume or `abort` to restore.
    /// Whether it held them.
    async fn hold_again(
        &self,
        guard: &mut Guard,
        exempt: &[NodeId],
    ) -> Result<bool, Error<C::Error>> {
        let down = self
            .call(None, Phase::Guard, || self.cluster.down_outside(exempt))
            .await?;
        if down.is_some() {
            return Ok(false);
        }
        tracing::info!("the failure outside the wave is over: the knobs are held again to heal");
        self.set(guard, KnobScope::Rollout, None).await?;
        self.set(guard, KnobScope::Wave, None).await?;
        Ok(true)
    }

    /// Waits through `wait` while watching the nodes outside the wave: when one fails, the
    /// knobs that keep the cluster from healing are released at once (the wave's nodes are
    /// already down, so it cannot be undone) and `wait` is tried again, one `NUDGE` window
    /// at a time (it nudges the recovery itself when [`Outside::fired`]), until `nudge_for`
    /// has passed. Once the failure is over the knobs are held again (see
    /// [`hold_again`](Self::hold_again)).
    pub(super) async fn watched<T, F, Fut>(
        &self,
        guard: &mut Guard,
        outside: &Outside<'_, C>,
        nudge_for: std::time::Duration,
        mut wait: F,
    ) -> Result<T, Error<C::Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error<C::Error>>>,
    {
        // A failure seen by an earlier wait of the wave (the knobs are released already)
        // is nudged through as well.
        let fired_before = outside.fired();
        let mut result = match wait().await.map_err(|e| outside.explain(e)) {
            Err(e @ Error::OutsideFailure { .. }) => {
                tracing::warn!(cause = %chain(&e), "a failure outside the wave after its stop");
                self.emit(Event::Waiting {
                    node: e.node().cloned(),
                    phase: e.phase().unwrap_or(Phase::WaitReady),
                    reason: format!(
                        "{}; the knobs that keep the cluster from healing are released",
                        chain(&e)
                    ),
                });
                outside.disable();
                self.release_healing(guard).await?;
                wait().await
            }
            other if fired_before => other,
            other => return other,
        };
        let since = tokio::time::Instant::now();
        let mut held = false;
        loop {
            match result {
                Err(Error::Timeout { .. }) if since.elapsed() < nudge_for => {
                    held = held || self.hold_again(guard, &outside.exempt).await?;
                    result = wait().await;
                }
                other => return other,
            }
        }
    }
}
