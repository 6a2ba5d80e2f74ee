//! The per-node sequence, run in lockstep over the nodes of a wave.

use std::future::Future;

use futures_util::future::join_all;

use crate::cluster::{Cluster, Node, Procedure};
use crate::error::{Error, Phase};
use crate::journal::Entry;
use crate::model::{ApplyRecord, Change, Health, KnobScope, NodeId, RoleKind};
use crate::plan::{Wave, wave_is_safe_with};
use crate::policy::OnTimeout;
use crate::probe::{HealthProbe, probe_fn};

use super::Ctx;
use super::knobs::Guard;
use super::outside::{MAX_RIDE_OUTS, Outside};
use super::recover::{Restarted, Stopped};

/// How much the gate checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GateHealth {
    /// Full health, placement, safe to stop: a fresh wave.
    Full,
    /// Placement and safe to stop: a fresh stateless wave after a coordinator wave whose
    /// healthy wait the roll's end does (`Ctx::defer_healthy`); skipped as a fresh wave is.
    Deferred,
    /// Placement and safe to stop: a resumed wave, whose drained nodes keep the cluster from
    /// full health.
    PlacementOnly,
}

/// Where a wave's nodes start their sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum StartAt {
    /// From the safety gate (a fresh node).
    Gate,
    /// From the drain (resumed before its stop; the gate would see its own drain).
    Drain,
    /// From apply (resumed while stopped).
    Apply,
    /// From start (resumed while stopped, change applied).
    Start,
    /// From the wait for readiness (resumed after its restart).
    WaitReady,
}

/// How one node of a wave ended.
pub(super) enum NodeOutcome {
    Done,
    Skipped(String),
}

pub(super) struct Slot<N> {
    pub(super) id: NodeId,
    pub(super) node: N,
    pub(super) start: StartAt,
    pub(super) boot: Option<String>,
    pub(super) record: Option<ApplyRecord>,
}

/// Decides where an in-flight node resumes, from its live status.
pub(super) async fn resume_point<C: Cluster>(
    ctx: &Ctx<'_, C>,
    flight: &crate::journal::InFlight,
) -> Result<StartAt, Error<C::Error>> {
    let (id, boot, record) = (&flight.node, flight.boot.as_ref(), flight.record.as_ref());
    let node = ctx
        .cluster
        .node(id)
        .ok_or_else(|| Error::UnknownNode(id.to_string()))?;
    let status = ctx.call(Some(id), Phase::Plan, || node.status()).await?;
    Ok(if !status.running {
        if flight.started && status.boot.as_ref() != boot {
            // Started by this rollout (the journal says so and the boot id moved) and down
            // again: a crash loop or a slow supervisor. It is not started a second time; the
            // wait for readiness decides.
            StartAt::WaitReady
        } else if record.is_some() {
            StartAt::Start
        } else {
            StartAt::Apply
        }
    } else if status.boot.as_ref() != boot {
        StartAt::WaitReady
    } else if boot.is_none() && record.is_some() {
        // No boot ids from this backend: a running node whose change was applied has been
        // restarted, so it is not restarted again.
        StartAt::WaitReady
    } else {
        StartAt::Drain
    })
}

/// Runs the node sequence for every node of `wave`, phase by phase; node `i` starts at
/// `starts[i]` (fresh nodes at the gate, resumed ones where they stopped), and a phase runs
/// only for the nodes that start at or before it.
pub(super) async fn roll_nodes<C: Cluster>(
    ctx: &Ctx<'_, C>,
    guard: &mut Guard,
    wave: &Wave,
    starts: &[StartAt],
) -> Result<Vec<(NodeId, NodeOutcome)>, Error<C::Error>> {
    let ha = ctx.spec.policy.get_procedure() == Procedure::HighAvailability;
    let data = wave.kind == RoleKind::Data;
    let deadlines = *ctx.spec.policy.get_deadlines();
    let mut slots = Vec::new();
    for (id, &start) in wave.nodes.iter().zip(starts) {
        let node = ctx
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
    let mut outcomes = Vec::new();
    ctx.resume_state(&mut slots).await?;

    let fresh = slots.iter().all(|s| s.start == StartAt::Gate);
    // The high-availability procedure watches the data nodes outside the wave and rides a
    // failure there out (see the `outside` module).
    let watch = ha;
    // A stateless wave after a coordinator wave whose end left its healthy wait to the
    // roll's end relies on nothing that wait would show.
    let owed = wave.kind == RoleKind::Stateless
        && !ctx
            .healthy_owed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
    let mut health = match (fresh, owed) {
        (true, false) => GateHealth::Full,
        (true, true) => GateHealth::Deferred,
        (false, _) => GateHealth::PlacementOnly,
    };
    let mut ride_outs = 0;
    let mut begun = false;
    loop {
        let outside = Outside::new(ctx.cluster, ctx.exempt(&wave.nodes), watch, true);
        let prepared = ctx
            .before_stop(
                guard,
                wave,
                &mut slots,
                &mut outcomes,
                health,
                &outside,
                &mut begun,
            )
            .await;
        match prepared {
            Ok(true) => break,
            Ok(false) => return Ok(outcomes),
            Err(e @ Error::OutsideFailure { .. }) if ride_outs < MAX_RIDE_OUTS => {
                ride_outs += 1;
                ctx.ride_out(guard, &slots, e).await?;
                health = GateHealth::Full;
            }
            Err(e) => return Err(e),
        }
    }
    let down = async {
        ctx.all(&slots, StartAt::Drain, Phase::Stop, |s| async move {
            ctx.act(Some(&s.id), Phase::Stop, || s.node.stop()).await
        })
        .await?;
        // Also for nodes resumed while stopped: the control plane must have seen the old
        // process go before a new one registers.
        ctx.all(&slots, StartAt::Start, Phase::WaitStopped, |s| async move {
            let probe = Stopped(&s.node).and(ctx.cluster.stopped(&s.id));
            ctx.wait(Some(&s.id), Phase::WaitStopped, &probe, deadlines.stop)
                .await
        })
        .await
    };
    if let Err(e) = down.await {
        return Err(ctx.fail(&slots, e).await);
    }
    let applied = join_all(slots.iter().filter(|s| s.start <= StartAt::Apply).map(|s| {
        ctx.step(&s.id, Phase::Apply, async move {
            let record = ctx
                .act(Some(&s.id), Phase::Apply, || s.node.apply(&ctx.spec.change))
                .await?;
            ctx.append(&Entry::NodeApplied {
                record: record.clone(),
            })?;
            Ok(record)
        })
    }))
    .await;
    // Keep every record that was made, so that a roll back reverts them all.
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
    if let Some(e) = failed {
        return Err(ctx.fail(&slots, e).await);
    }
    let started = ctx
        .all(&slots, StartAt::Start, Phase::Start, |s| async move {
            ctx.append(&Entry::NodeStarting { node: s.id.clone() })?;
            ctx.act(Some(&s.id), Phase::Start, || s.node.start()).await
        })
        .await;
    if let Err(e) = started {
        return Err(ctx.fail(&slots, e).await);
    }
    // The settle runs from the restart, as the seed's "restart, then wait": known only when
    // this run issued every start of the wave (a node resumed after its start counts from
    // its readiness, later).
    let restarted_at = slots
        .iter()
        .all(|s| s.start <= StartAt::Start)
        .then(tokio::time::Instant::now);
    // After the stop a data wave's own rejoin may mark a displaced leader's replica dead for a
    // moment: only nodes count then.
    let after = Outside::new(ctx.cluster, ctx.exempt(&wave.nodes), watch, !data);
    let ready = ctx
        .watched(guard, &after, std::time::Duration::ZERO, || async {
            ctx.all(&slots, StartAt::WaitReady, Phase::WaitReady, |s| async {
                let probe = (&after).and(
                    Restarted {
                        node: &s.node,
                        before: s.boot.clone(),
                    }
                    .and(ctx.cluster.ready(&s.id)),
                );
                ctx.wait(Some(&s.id), Phase::WaitReady, &probe, deadlines.ready)
                    .await
            })
            .await?;
            ctx.settle_after(&slots, restarted_at, &after, deadlines.ready)
                .await
        })
        .await;
    if let Err(e) = ready {
        return Err(ctx.fail(&slots, e).await);
    }
    if ha && data {
        ctx.release_wave(guard).await?;
    }
    ctx.back(guard, &slots, &after, ha).await?;
    if ctx.spec.change != Change::Restart {
        for s in &slots {
            let applied = ctx
                .call(Some(&s.id), Phase::WaitHealthy, || {
                    s.node.is_applied(&ctx.spec.change)
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
    }
    outcomes.extend(slots.into_iter().map(|s| (s.id, NodeOutcome::Done)));
    Ok(outcomes)
}

/// When the outside watch failed one of the steps' waits: that failure, as
/// [`Error::OutsideFailure`] in the phase of the first failed step.
fn first_outside<'r, C: Cluster>(
    outside: &Outside<'_, C>,
    results: impl Iterator<Item = &'r Result<(), Error<C::Error>>>,
) -> Option<Error<C::Error>> {
    let (node, reason) = outside.seen()?;
    let phase = results
        .filter_map(|r| r.as_ref().err())
        .find_map(Error::phase)
        .unwrap_or(Phase::WaitDrained);
    Some(Error::OutsideFailure {
        node: Some(node),
        phase,
        reason,
    })
}

/// With the skip policy a timeout before the stop leaves the nodes out; anything else fails.
fn skip_or_fail<E: std::error::Error + 'static>(
    ctx_policy: &Ctx<'_, impl Cluster<Error = E>>,
    e: Error<E>,
    ids: &[NodeId],
    outcomes: &mut Vec<(NodeId, NodeOutcome)>,
) -> Result<(), Error<E>> {
    if ctx_policy.spec.policy.get_on_timeout() == OnTimeout::Skip
        && matches!(e, Error::Timeout { .. })
    {
        let reason = super::chain(&e);
        outcomes.extend(
            ids.iter()
                .map(|id| (id.clone(), NodeOutcome::Skipped(reason.clone()))),
        );
        return Ok(());
    }
    Err(e)
}

impl<C: Cluster> Ctx<'_, C> {
    /// Everything before a wave's stop: the gate, then (high-availability procedure, data
    /// wave) the wave's knobs, drain, quiesce, the knobs checked again and a last placement
    /// check on a fresh topology. `Ok(false)` when no node is left to stop (all skipped).
    /// A failure outside the wave ends it with [`Error::OutsideFailure`], every slot kept, so
    /// that the caller can ride it out and start over.
    #[allow(clippy::too_many_arguments)]
    async fn before_stop(
        &self,
        guard: &mut Guard,
        wave: &Wave,
        slots: &mut Vec<Slot<C::Node>>,
        outcomes: &mut Vec<(NodeId, NodeOutcome)>,
        health: GateHealth,
        outside: &Outside<'_, C>,
        begun: &mut bool,
    ) -> Result<bool, Error<C::Error>> {
        let ha = self.spec.policy.get_procedure() == Procedure::HighAvailability;
        let data = wave.kind == RoleKind::Data;
        let deadlines = *self.spec.policy.get_deadlines();
        match health {
            GateHealth::Full | GateHealth::Deferred => {
                if let Err(e) = self.gate(wave, health, outside).await {
                    let e = outside.explain(e);
                    if matches!(e, Error::OutsideFailure { .. }) {
                        return Err(e);
                    }
                    skip_or_fail(self, e, &wave.nodes, outcomes)?;
                    return Ok(false);
                }
            }
            GateHealth::PlacementOnly => {
                let to_stop: Vec<NodeId> = slots
                    .iter()
                    .filter(|s| s.start <= StartAt::Drain)
                    .map(|s| s.id.clone())
                    .collect();
                if !to_stop.is_empty() {
                    let part = Wave {
                        nodes: to_stop,
                        ..wave.clone()
                    };
                    self.gate(&part, GateHealth::PlacementOnly, outside)
                        .await
                        .map_err(|e| outside.explain(e))?;
                }
            }
        }
        if !*begun {
            let topology = self.topology_around(&wave.nodes, Phase::Gate).await?;
            for s in slots.iter_mut().filter(|s| s.start <= StartAt::Drain) {
                let status = self
                    .call(Some(&s.id), Phase::Gate, || s.node.status())
                    .await?;
                s.boot = status.boot;
                self.append(&Entry::NodeBegin {
                    node: s.id.clone(),
                    boot: s.boot.clone(),
                    role: topology.node(&s.id).map(|n| n.role.clone()),
                })?;
            }
            *begun = true;
        }
        if ha && wave.kind == RoleKind::Coordinator {
            // A leader steps down first where the backend has a way (the default drain does
            // nothing and its probe holds at once).
            self.drain_slots(slots, outcomes, outside).await?;
            return Ok(!slots.is_empty());
        }
        if !(ha && data) {
            return Ok(true);
        }
        // Held again after a ride-out released them; a no-op read otherwise.
        self.reapply(guard).await?;
        self.set(guard, KnobScope::Wave, None).await?;
        let draining: Vec<NodeId> = slots
            .iter()
            .filter(|s| s.start <= StartAt::Drain)
            .map(|s| s.id.clone())
            .collect();
        self.add_temporaries(&draining, outside).await?;
        self.drain_slots(slots, outcomes, outside).await?;
        let results = self
            .prepare(
                slots,
                Phase::Quiesce,
                Phase::WaitQuiesced,
                deadlines.quiesce,
                |id| self.cluster.quiesce(id),
                |id| outside.and(self.cluster.quiesced(id)),
            )
            .await;
        if let Some(e) = first_outside(outside, results.iter()) {
            return Err(e);
        }
        *slots = self.keep(std::mem::take(slots), results, outcomes).await?;
        if slots.is_empty() {
            self.restore(guard, KnobScope::Wave).await?;
            return Ok(false);
        }
        // A coordinator failover during the drain loses in-memory settings: check them all
        // again right before the stop, and put back what was lost.
        self.reapply(guard).await?;
        self.set(guard, KnobScope::Wave, None).await?;
        // The last look before the stop: no node outside the wave down, placement still safe,
        // for the nodes still to be stopped (a resumed wave's others are already past it).
        let to_stop: Vec<NodeId> = slots
            .iter()
            .filter(|s| s.start <= StartAt::Drain)
            .map(|s| s.id.clone())
            .collect();
        if to_stop.is_empty() {
            return Ok(true);
        }
        let exempt = self.exempt(&to_stop);
        // Unserving replicas first, then down nodes: `unserving_outside` leaves out what a
        // down node explains, so a node that goes down between the two reads is still seen.
        let failure = match self
            .call(None, Phase::Stop, || {
                self.cluster.unserving_outside(&exempt)
            })
            .await?
        {
            Some(unserving) => Some(unserving),
            None => {
                self.call(None, Phase::Stop, || self.cluster.down_outside(&exempt))
                    .await?
            }
        };
        if let Some((node, reason)) = failure {
            return Err(Error::OutsideFailure {
                node: Some(node),
                phase: Phase::Stop,
                reason,
            });
        }
        let topology = self.topology_around(&to_stop, Phase::Stop).await?;
        let max_unavailable = self.spec.policy.get_max_unavailable();
        let relief = self.relief().accepted_only();
        if let Err(reason) = wave_is_safe_with(&topology, &to_stop, max_unavailable, &relief) {
            return Err(Error::OutsideFailure {
                node: None,
                phase: Phase::Stop,
                reason: format!("right before the stop: {reason}"),
            });
        }
        Ok(true)
    }

    /// Drains every slot and waits until each is drained, watching the nodes outside the
    /// wave; keeps the slots that drained (the others are skipped or fail the wave).
    async fn drain_slots(
        &self,
        slots: &mut Vec<Slot<C::Node>>,
        outcomes: &mut Vec<(NodeId, NodeOutcome)>,
        outside: &Outside<'_, C>,
    ) -> Result<(), Error<C::Error>> {
        let deadline = self.spec.policy.get_deadlines().drain;
        let results = self
            .prepare(
                slots,
                Phase::Drain,
                Phase::WaitDrained,
                deadline,
                |id| self.cluster.drain(id),
                |id| outside.and(self.cluster.drained(id)),
            )
            .await;
        if let Some(e) = first_outside(outside, results.iter()) {
            return Err(e);
        }
        *slots = self.keep(std::mem::take(slots), results, outcomes).await?;
        Ok(())
    }

    /// Resumed nodes take their boot id and apply record from the journal.
    pub(super) async fn resume_state(
        &self,
        slots: &mut [Slot<C::Node>],
    ) -> Result<(), Error<C::Error>> {
        if slots.iter().all(|s| s.start == StartAt::Gate) {
            return Ok(());
        }
        let entries = self.run.journal.load().map_err(Error::Journal)?;
        let resume = crate::journal::Resume::from_entries(&entries);
        for s in slots.iter_mut().filter(|s| s.start != StartAt::Gate) {
            if let Some(f) = resume.in_flight.iter().find(|f| f.node == s.id) {
                s.boot = f.boot.clone();
                s.record = f.record.clone();
            }
        }
        Ok(())
    }

    /// The safety gate: fully healthy (for a fresh wave), the nodes still to be stopped pass
    /// the placement check on a fresh topology, and the backend says each is safe to stop.
    /// A resumed wave skips full health (its own drained nodes keep the cluster from it) but
    /// not placement: another node may have failed while the orchestrator was away.
    async fn gate(
        &self,
        wave: &Wave,
        health: GateHealth,
        outside: &Outside<'_, C>,
    ) -> Result<(), Error<C::Error>> {
        let max_unavailable = self.spec.policy.get_max_unavailable();
        let relief = &self.relief();
        let placement = probe_fn(|| async move {
            let topology = self.with_ghosts(self.cluster.topology_around(&wave.nodes).await?);
            Ok::<Health, C::Error>(
                match wave_is_safe_with(&topology, &wave.nodes, max_unavailable, relief) {
                    Ok(()) => Health::Healthy,
                    Err(reason) => Health::Waiting(reason),
                },
            )
        });
        let first = wave.nodes.first();
        let deadline = self.spec.policy.get_deadlines().gate;
        self.step_opt(first, Phase::Gate, async {
            match health {
                GateHealth::Full => {
                    let probe = outside.and(self.cluster.fully_healthy()).and(placement);
                    self.wait(first, Phase::Gate, &probe, deadline).await?;
                }
                GateHealth::PlacementOnly | GateHealth::Deferred => {
                    let probe = outside.and(placement);
                    self.wait(first, Phase::Gate, &probe, deadline).await?;
                }
            }
            for id in &wave.nodes {
                self.wait(
                    Some(id),
                    Phase::Gate,
                    &self.cluster.safe_to_stop(id),
                    deadline,
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// Runs a pre-stop step and its wait on every slot at once.
    pub(super) async fn prepare<'s, A, AF, W, WP>(
        &self,
        slots: &'s [Slot<C::Node>],
        act: Phase,
        wait: Phase,
        deadline: std::time::Duration,
        step: A,
        probe: W,
    ) -> Vec<Result<(), Error<C::Error>>>
    where
        A: Fn(&'s NodeId) -> AF,
        AF: Future<Output = Result<(), C::Error>>,
        W: Fn(&'s NodeId) -> WP,
        WP: HealthProbe<Error = C::Error>,
    {
        join_all(slots.iter().map(|s| async {
            if s.start > StartAt::Drain {
                return Ok(());
            }
            self.step(&s.id, act, self.act(Some(&s.id), act, || step(&s.id)))
                .await?;
            let p = probe(&s.id);
            self.step(&s.id, wait, self.wait(Some(&s.id), wait, &p, deadline))
                .await
        }))
        .await
    }

    /// Keeps the slots whose pre-stop step worked; the others are skipped (and get their
    /// replicas back) when the policy allows it, else the wave fails.
    pub(super) async fn keep(
        &self,
        slots: Vec<Slot<C::Node>>,
        results: Vec<Result<(), Error<C::Error>>>,
        outcomes: &mut Vec<(NodeId, NodeOutcome)>,
    ) -> Result<Vec<Slot<C::Node>>, Error<C::Error>> {
        let mut kept = Vec::new();
        let mut failed = None;
        for (s, r) in slots.into_iter().zip(results) {
            match r {
                Ok(()) => kept.push(s),
                Err(e) => {
                    let ids = [s.id.clone()];
                    match skip_or_fail(self, e, &ids, outcomes) {
                        Ok(()) => {
                            // Best effort: the node gets its primaries back before the wave
                            // goes on; the next gate checks the cluster anyway.
                            let _ = self
                                .act(Some(&s.id), Phase::Rejoin, || self.cluster.rejoin(&s.id))
                                .await;
                        }
                        Err(e) => {
                            failed.get_or_insert(e);
                            kept.push(s);
                        }
                    }
                }
            }
        }
        match failed {
            Some(e) => {
                // Nothing of this wave was stopped here: give the nodes drained here their
                // replicas back (resumed ones already past their stop are left to `abort`).
                for s in kept.iter().filter(|s| s.start <= StartAt::Drain) {
                    let _ = self
                        .act(Some(&s.id), Phase::Rejoin, || self.cluster.rejoin(&s.id))
                        .await;
                }
                Err(e)
            }
            None => Ok(kept),
        }
    }
}
