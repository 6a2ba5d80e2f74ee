//! Bringing nodes back after a failure: roll back a failed wave, settle, find what is
//! stranded, bring a node back for `abort`; and the process probes these share with the
//! node sequence.

use futures_util::future::join_all;

use crate::cluster::{Cluster, Node};
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::journal::{Entry, InFlight, JournalError, Resume};
use crate::model::{ApplyRecord, Change, Health, KnobScope, NodeId, NodeStatus};
use crate::policy::{OnTimeout, Spec};
use crate::probe::HealthProbe;

use super::ctx::{Ctx, Slot};
use super::knobs::Guard;
use super::probes::{Restarted, Stopped};
use super::run::{LockGuard, Run};
use crate::error::chain;

/// Ends an interrupted, halted or failed rollout in the journal: knobs are restored, a node
/// caught stopped gets its previous version or config back and is started and waited for,
/// every node caught in progress is rejoined, and the rollout is marked aborted.
/// Returns `false` when no rollout was in progress.
///
/// # Errors
/// Journal errors, a journal of another cluster, a knob that cannot be restored, or a node
/// that does not come back; the journal then stays open so that `abort` can run again.
pub async fn abort<C: Cluster>(cluster: &C, run: Run<'_>) -> Result<bool, Error<C::Error>> {
    run.journal
        .lock(&format!("abort of {}", cluster.name()))
        .map_err(Error::Journal)?;
    let _lock = LockGuard(run.journal);
    let resume = Resume::from_entries(&run.journal.load().map_err(Error::Journal)?);
    let Some((name, ..)) = &resume.begin else {
        return Ok(false);
    };
    if name != cluster.name() {
        return Err(Error::Journal(JournalError::WrongCluster {
            expected: cluster.name().into(),
            found: name.clone(),
        }));
    }
    let mut guard = Guard::from_journal(&resume, cluster.knobs(resume.begin_procedure()));
    let change = resume
        .begin
        .as_ref()
        .map_or(Change::Restart, |b| b.1.clone());
    let spec = Spec::new(change);
    let ctx = Ctx::new(cluster, &spec, run);
    // Knobs first: a node that comes back should find the cluster's own recovery on again
    // (OpenMLDB reloads a re-registering tablet only with auto_failover on).
    let mut first_err = ctx.restore(&mut guard, KnobScope::Rollout).await.err();
    if first_err.is_none() {
        ctx.heal_best_effort().await;
    }
    for f in &resume.in_flight {
        let id = &f.node;
        if let Err(e) = ctx.bring_back(f).await {
            tracing::error!(node = id.as_str(), error = %chain(&e), "abort could not bring the node back");
            first_err.get_or_insert(e);
        }
    }
    // With every node back, the temporary replicas go; one whose node does not serve its
    // partition is kept (it may be the only copy) and keeps the journal open.
    match ctx.remove_temporaries(None).await {
        Ok(kept) => {
            if let Some(reason) = kept.into_iter().next() {
                first_err.get_or_insert(Error::Unhealthy {
                    node: None,
                    phase: Phase::RemoveReplica,
                    reason,
                });
            }
        }
        Err(e) => {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        // The journal stays open, so that `abort` can be run again once the cause is fixed.
        Some(e) => Err(e),
        None => {
            ctx.append(&Entry::End {
                outcome: "aborted".into(),
            })?;
            ctx.emit(Event::AbortDone {
                nodes: resume.in_flight.iter().map(|f| f.node.clone()).collect(),
            });
            Ok(true)
        }
    }
}

impl<C: Cluster> Ctx<'_, C> {
    /// Brings a node caught mid-procedure back for [`abort`](super::abort): a stopped one
    /// waits until the control plane saw it go, gets back what apply replaced and is started;
    /// then every one is waited for until ready, rejoined and waited for. One the rollout
    /// never stopped is only rejoined: there is no restart to wait for.
    pub(super) async fn bring_back(&self, f: &InFlight) -> Result<(), Error<C::Error>> {
        let (id, record) = (&f.node, f.record.as_ref());
        let node = self
            .cluster
            .node(id)
            .ok_or_else(|| Error::UnknownNode(id.to_string()))?;
        let deadlines = self.spec.policy.get_deadlines();
        let status = self.call(Some(id), Phase::Revert, || node.status()).await?;
        if untouched(f, &status) {
            return self.rejoin_and_wait(id).await;
        }
        if !status.running {
            let stopped = Stopped(&node).and(self.cluster.stopped(id));
            self.wait(Some(id), Phase::WaitStopped, &stopped, deadlines.stop)
                .await?;
            if let Some(record) = record.filter(|_| self.spec.change != Change::Restart) {
                self.revert(id, &node, record).await?;
            }
            self.append(&Entry::NodeStarting { node: id.clone() })?;
            self.act(Some(id), Phase::Start, || node.start()).await?;
        }
        let up = Restarted {
            node: &node,
            before: None,
        }
        .and(self.cluster.ready(id));
        self.wait(Some(id), Phase::WaitReady, &up, deadlines.ready)
            .await?;
        self.rejoin_and_wait(id).await
    }

    /// Rejoins `id` and waits for it.
    pub(super) async fn rejoin_and_wait(&self, id: &NodeId) -> Result<(), Error<C::Error>> {
        self.act(Some(id), Phase::Rejoin, || self.cluster.rejoin(id))
            .await?;
        let deadline = self.spec.policy.get_deadlines().rejoin;
        self.wait(
            Some(id),
            Phase::WaitRejoined,
            &self.cluster.rejoined(id),
            deadline,
        )
        .await
    }

    /// Puts back what apply replaced, and journals it once it is done.
    pub(super) async fn revert(
        &self,
        id: &NodeId,
        node: &C::Node,
        record: &ApplyRecord,
    ) -> Result<(), Error<C::Error>> {
        tracing::warn!(node = id.as_str(), "reverting the change");
        self.act(Some(id), Phase::Revert, || node.revert(record))
            .await?;
        self.append(&Entry::NodeReverted { node: id.clone() })?;
        self.emit(Event::NodeReverted { node: id.clone() });
        Ok(())
    }

    /// After a failure: every node the journal shows in progress that runs is waited for
    /// until ready, then rejoined and waited for, all at once. Best effort: [`stranded`]
    /// says what did not come back.
    ///
    /// [`stranded`]: Ctx::stranded
    pub(super) async fn settle(&self) {
        let Ok(entries) = self.run.journal.load() else {
            return;
        };
        let in_flight = crate::journal::Resume::from_entries(&entries).in_flight;
        let deadline = self.spec.policy.get_deadlines().ready;
        join_all(in_flight.iter().map(|f| async move {
            let id = &f.node;
            let Some(node) = self.cluster.node(id) else {
                return;
            };
            let Ok(status) = node.status().await else {
                return;
            };
            if !status.running {
                return;
            }
            if untouched(f, &status) {
                // Drained, never stopped: its replicas back is all it needs.
                if let Err(e) = self.rejoin_and_wait(id).await {
                    tracing::warn!(node = id.as_str(), error = %chain(&e), "not back after a failure");
                }
                return;
            }
            let up = Restarted {
                node: &node,
                before: None,
            }
            .and(self.cluster.ready(id));
            let back = async {
                self.wait(Some(id), Phase::WaitReady, &up, deadline).await?;
                self.rejoin_and_wait(id).await
            };
            if let Err(e) = back.await {
                tracing::warn!(node = id.as_str(), error = %chain(&e), "not back after a failure");
            }
        }))
        .await;
    }

    /// Why the nodes the journal shows in progress are not all back (running, ready and
    /// rejoined), one reason each; empty when they are. A journal that cannot be read is a
    /// reason too: nothing can be confirmed then.
    pub(super) async fn stranded(&self) -> Vec<String> {
        let entries = match self.run.journal.load() {
            Ok(entries) => entries,
            Err(e) => return vec![format!("the journal cannot be read: {}", chain(&e))],
        };
        let mut out = Vec::new();
        for f in crate::journal::Resume::from_entries(&entries).in_flight {
            let id = f.node.clone();
            let Some(node) = self.cluster.node(&id) else {
                out.push(format!("{id} is unknown"));
                continue;
            };
            // One the rollout never stopped has no restart to be back from.
            let never_stopped = node.status().await.is_ok_and(|s| untouched(&f, &s));
            let back = if never_stopped {
                self.cluster.rejoined(&id).check().await
            } else {
                Restarted {
                    node: &node,
                    before: None,
                }
                .and(self.cluster.ready(&id))
                .and(self.cluster.rejoined(&id))
                .check()
                .await
            };
            match back {
                Ok(Health::Healthy) => {}
                Ok(Health::Waiting(r) | Health::Failed(r)) => out.push(format!("{id}: {r}")),
                Err(e) => out.push(format!("{id}: {e}")),
            }
        }
        out
    }

    /// The end of a failed wave. With the pause policy a timeout leaves everything as it is
    /// for the resume; otherwise the wave is rolled back.
    pub(super) async fn fail(
        &self,
        slots: &[Slot<C::Node>],
        e: Error<C::Error>,
    ) -> Error<C::Error> {
        if self.spec.policy.get_on_timeout() == OnTimeout::Pause
            && matches!(e, Error::Timeout { .. })
        {
            return e;
        }
        self.roll_back(slots, e).await
    }

    /// After a failure between stop and ready, so that nothing is left half-changed, for each
    /// node of the wave at once:
    /// - a node that was started is given its time to come up (the one that timed out
    ///   already had it); one that comes up is left as it is;
    /// - one that does not is stopped, reverted and started again, but only when there is a
    ///   change to revert (starting the same thing again is left to the operator, so that no
    ///   node restarts twice);
    /// - a node that was not started yet (its boot id is the one from before the stop) gets
    ///   back what apply replaced and is started;
    /// - every node started here is waited for until ready.
    ///
    /// Best effort; returns `e`.
    pub(super) async fn roll_back(
        &self,
        slots: &[Slot<C::Node>],
        e: Error<C::Error>,
    ) -> Error<C::Error> {
        let revertible = self.spec.change != Change::Restart;
        let deadlines = *self.spec.policy.get_deadlines();
        let nodes: Vec<NodeId> = slots.iter().map(|s| s.id.clone()).collect();
        self.emit(Event::RollbackStarted {
            nodes: nodes.clone(),
        });
        let timed_out = match &e {
            Error::Timeout { node, .. } => node.clone(),
            _ => None,
        };
        join_all(slots.iter().map(|s| async {
            let Ok(status) = self
                .call(Some(&s.id), Phase::Revert, || s.node.status())
                .await
            else {
                return;
            };
            let record = s.record.as_ref().filter(|_| revertible);
            let up = Restarted {
                node: &s.node,
                before: s.boot.clone(),
            }
            .and(self.cluster.ready(&s.id));
            if status.boot != s.boot {
                let patience = if timed_out.as_ref() == Some(&s.id) {
                    std::time::Duration::from_millis(1)
                } else {
                    deadlines.ready
                };
                if self
                    .wait(Some(&s.id), Phase::Revert, &up, patience)
                    .await
                    .is_ok()
                {
                    return;
                }
                let Some(record) = record else { return };
                let _ = self.act(Some(&s.id), Phase::Revert, || s.node.stop()).await;
                let stopped = Stopped(&s.node).and(self.cluster.stopped(&s.id));
                if self
                    .wait(Some(&s.id), Phase::Revert, &stopped, deadlines.stop)
                    .await
                    .is_err()
                    || self.revert(&s.id, &s.node, record).await.is_err()
                {
                    return;
                }
            } else if status.running {
                return;
            } else if let Some(record) = record
                && self.revert(&s.id, &s.node, record).await.is_err()
            {
                return;
            }
            // The control plane must have seen the old process go before a new one registers.
            let stopped = Stopped(&s.node).and(self.cluster.stopped(&s.id));
            if self
                .wait(Some(&s.id), Phase::Revert, &stopped, deadlines.stop)
                .await
                .is_err()
            {
                return;
            }
            let before = self
                .call(Some(&s.id), Phase::Revert, || s.node.status())
                .await
                .ok()
                .and_then(|st| st.boot);
            // No start that the journal does not record first.
            if self
                .append(&Entry::NodeStarting { node: s.id.clone() })
                .is_err()
            {
                return;
            }
            if self
                .act(Some(&s.id), Phase::Revert, || s.node.start())
                .await
                .is_ok()
            {
                let up = Restarted {
                    node: &s.node,
                    before,
                }
                .and(self.cluster.ready(&s.id));
                let _ = self
                    .wait(Some(&s.id), Phase::Revert, &up, deadlines.ready)
                    .await;
            }
        }))
        .await;
        self.emit(Event::RollbackDone { nodes });
        e
    }
}

/// Whether the journal shows `f` as never stopped by this rollout: it runs the incarnation
/// recorded before its stop (or, without boot ids, any) and no start of it was recorded, so
/// there is no restart to wait for.
fn untouched(f: &InFlight, status: &NodeStatus) -> bool {
    status.running && !f.started && (f.boot.is_none() || status.boot == f.boot)
}
