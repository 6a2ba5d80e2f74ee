//! A wave's phases, in the order they run: gate, drain, quiesce (in `prestop`, with the
//! last look), stop, apply, start, ready, rejoin and healthy (in `rejoin`).
//!
//! Every phase runs in lockstep over the wave's nodes, for the nodes that start at or
//! before it ([`StartAt`]: a resumed node picks up where it stopped). The watch on the
//! nodes outside the wave wraps the phases ([`Outside`]): before the stop a failure there is
//! ridden out and the wave starts over from its gate; after it the knobs that keep the
//! cluster from healing are released and the wave's own waits go on. From the stop on, a
//! failed phase rolls the wave back (or, paused on a timeout, leaves it for the resume).

use tokio::time::Instant;

use crate::cluster::{Cluster, Node};
use crate::error::{Error, Phase};
use crate::journal::Entry;
use crate::model::Procedure;
use crate::model::{Change, NodeId, RoleKind};
use crate::probe::HealthProbe;
use crate::wave::Wave;

use super::ctx::{Ctx, NodeOutcome, Slot, StartAt};
use super::knobs::Guard;
use super::outside::{Outside, Watch};
use super::probes::{Restarted, Stopped};

/// Runs the phases for every node of `wave`; node `i` starts at `starts[i]` (fresh nodes at
/// the gate, resumed ones where they stopped). Returns how each node ended.
///
/// # Errors
/// The first failed phase, naming its node. Before the stop the wave's drained nodes are
/// given back their replicas (`Ctx::keep`, `Ctx::ride_out`); from the stop on the wave is
/// rolled back, or left for the resume when paused ([`Ctx::fail`]).
pub(super) async fn roll_nodes<C: Cluster>(
    ctx: &Ctx<'_, C>,
    guard: &mut Guard,
    wave: &Wave,
    starts: &[StartAt],
) -> Result<Vec<(NodeId, NodeOutcome)>, Error<C::Error>> {
    let procedure = ctx.spec.policy.get_procedure();
    let mut slots = ctx.slots(wave, starts).await?;
    let mut outcomes = Vec::new();
    // Gate, drain, quiesce and the last look, with a failure outside the wave ridden out.
    if !ctx
        .before_stop(guard, wave, &mut slots, &mut outcomes)
        .await?
    {
        return Ok(outcomes);
    }
    let stopped = ctx.stop(&slots).await;
    ctx.or_roll_back(&slots, stopped).await?;
    let applied = ctx.apply(&mut slots).await;
    ctx.or_roll_back(&slots, applied).await?;
    let started = ctx.start(&slots).await;
    let restarted_at = ctx.or_roll_back(&slots, started).await?;
    // After the stop a data wave's own rejoin may mark a displaced leader's replica dead for a
    // moment: only nodes count then.
    let watch = match (procedure, wave.kind) {
        (Procedure::HighAvailability, RoleKind::Data) => Watch::Nodes,
        (Procedure::HighAvailability, _) => Watch::NodesAndReplicas,
        _ => Watch::Off,
    };
    let after = Outside::new(ctx.cluster, ctx.exempt(&wave.nodes), watch);
    let ready = ctx.ready(guard, &slots, &after, restarted_at).await;
    ctx.or_roll_back(&slots, ready).await?;
    if procedure == Procedure::HighAvailability && wave.kind == RoleKind::Data {
        ctx.release_wave(guard).await?;
    }
    // Rejoin and healthy.
    ctx.back(guard, &slots, &after, procedure).await?;
    ctx.check_applied(&slots).await?;
    outcomes.extend(slots.into_iter().map(|s| (s.id, NodeOutcome::Done)));
    Ok(outcomes)
}

impl<C: Cluster> Ctx<'_, C> {
    /// The wave's nodes as slots, resumed ones with their boot id and apply record from the
    /// journal.
    async fn slots(
        &self,
        wave: &Wave,
        starts: &[StartAt],
    ) -> Result<Vec<Slot<C::Node>>, Error<C::Error>> {
        let mut slots = Vec::new();
        for (id, &start) in wave.nodes.iter().zip(starts) {
            let node = self
                .cluster
                .node(id)
                .ok_or_else(|| Error::UnknownNode(id.to_string()))?;
            slots.push(Slot {
                id: id.clone(),
                node,
                start,
                boot: None,
                record: None,
            });
        }
        self.resume_state(&mut slots).await?;
        Ok(slots)
    }

    /// `r`, after rolling the wave back when it failed ([`Ctx::fail`]).
    async fn or_roll_back<T>(
        &self,
        slots: &[Slot<C::Node>],
        r: Result<T, Error<C::Error>>,
    ) -> Result<T, Error<C::Error>> {
        match r {
            Ok(t) => Ok(t),
            Err(e) => Err(self.fail(slots, e).await),
        }
    }

    /// Stop: every node is stopped, then waited for until the control plane has seen its
    /// process go, also a node resumed while stopped (before a new one registers).
    async fn stop(&self, slots: &[Slot<C::Node>]) -> Result<(), Error<C::Error>> {
        let deadline = self.spec.policy.get_deadlines().stop;
        self.all(slots, StartAt::Drain, Phase::Stop, |s| async move {
            self.act(Some(&s.id), Phase::Stop, || s.node.stop()).await
        })
        .await?;
        self.all(slots, StartAt::Start, Phase::WaitStopped, |s| async move {
            let probe = Stopped(&s.node).and(self.cluster.stopped(&s.id));
            self.wait(Some(&s.id), Phase::WaitStopped, &probe, deadline)
                .await
        })
        .await?;
        Ok(())
    }

    /// Apply: the change on every stopped node, each record journaled. Every record that was
    /// made is kept in its slot, also when another node's apply failed, so that a roll back
    /// reverts them all.
    async fn apply(&self, slots: &mut [Slot<C::Node>]) -> Result<(), Error<C::Error>> {
        let applied = futures_util::future::join_all(
            slots.iter().filter(|s| s.start <= StartAt::Apply).map(|s| {
                self.step(&s.id, Phase::Apply, async move {
                    let record = self
                        .act(Some(&s.id), Phase::Apply, || {
                            s.node.apply(&self.spec.change)
                        })
                        .await?;
                    self.append(&Entry::NodeApplied {
                        record: record.clone(),
                    })?;
                    Ok(record)
                })
            }),
        )
        .await;
        let mut failed = None;
        for r in applied {
            match r {
                Ok(record) => {
                    if let Some(s) = slots.iter_mut().find(|s| s.id == record.node) {
                        s.record = Some(record);
                    }
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Start: every node, each start journaled first. When this run issued every start of the
    /// wave, when they returned: the settle runs from then, as the seed's "restart, then
    /// wait" (a node resumed after its start counts from its readiness, later).
    async fn start(&self, slots: &[Slot<C::Node>]) -> Result<Option<Instant>, Error<C::Error>> {
        self.all(slots, StartAt::Start, Phase::Start, |s| async move {
            self.append(&Entry::NodeStarting { node: s.id.clone() })?;
            self.act(Some(&s.id), Phase::Start, || s.node.start()).await
        })
        .await?;
        Ok(slots
            .iter()
            .all(|s| s.start <= StartAt::Start)
            .then(Instant::now))
    }

    /// Ready: every node runs a new incarnation and its backend says it is ready, then the
    /// cluster's settle time runs; all of it watching the nodes outside the wave.
    async fn ready(
        &self,
        guard: &mut Guard,
        slots: &[Slot<C::Node>],
        after: &Outside<'_, C>,
        restarted_at: Option<Instant>,
    ) -> Result<(), Error<C::Error>> {
        let deadline = self.spec.policy.get_deadlines().ready;
        self.watched(guard, after, std::time::Duration::ZERO, || async {
            self.all(slots, StartAt::WaitReady, Phase::WaitReady, |s| async {
                let probe = after.and(
                    Restarted {
                        node: &s.node,
                        before: s.boot.clone(),
                    }
                    .and(self.cluster.ready(&s.id)),
                );
                self.wait(Some(&s.id), Phase::WaitReady, &probe, deadline)
                    .await
            })
            .await?;
            self.settle_after(slots, restarted_at, after, deadline)
                .await
        })
        .await
    }

    /// After a change other than a restart, every node must run with it (asked after every
    /// restart: a node that reverted it, or whose start did not pick it up, fails the roll).
    async fn check_applied(&self, slots: &[Slot<C::Node>]) -> Result<(), Error<C::Error>> {
        if self.spec.change == Change::Restart {
            return Ok(());
        }
        for s in slots {
            let applied = self
                .call(Some(&s.id), Phase::WaitHealthy, || {
                    s.node.is_applied(&self.spec.change)
                })
                .await?;
            if !applied {
                return Err(Error::Unhealthy {
                    node: Some(s.id.clone()),
                    phase: Phase::Apply,
                    reason: "the node runs without the change (it was reverted, or its start \
                             did not pick it up); roll again, or abort"
                        .into(),
                });
            }
        }
        Ok(())
    }
}
