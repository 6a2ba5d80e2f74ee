//! Everything before a wave's stop: the gate, the knobs, the drain, the quiesce and the last
//! look; what a failure there leaves (skipped nodes, or the wave's error).

use std::future::Future;

use futures_util::future::join_all;

use crate::cluster::{Cluster, Node};
use crate::error::{Error, Phase};
use crate::journal::Entry;
use crate::model::Procedure;
use crate::model::{Health, KnobScope, NodeId, RoleKind};
use crate::plan::wave_is_safe_with;
use crate::policy::OnTimeout;
use crate::probe::{HealthProbe, probe_fn};
use crate::wave::Wave;

use super::ctx::{Ctx, NodeOutcome, Slot, StartAt};
use super::knobs::Guard;
use super::outside::{Outside, Watch};
use crate::error::chain;

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
        let reason = chain(&e);
        outcomes.extend(
            ids.iter()
                .map(|id| (id.clone(), NodeOutcome::Skipped(reason.clone()))),
        );
        return Ok(());
    }
    Err(e)
}

/// How many times one wave rides out a failure outside it before it gives up.
const MAX_RIDE_OUTS: usize = 3;

/// What one pass before the stop left to do.
enum Pass {
    /// Nodes are left to stop.
    Stop,
    /// No node is left to stop (all skipped).
    Nothing,
}

impl<C: Cluster> Ctx<'_, C> {
    /// Everything before a wave's stop, in order: the gate, then (high-availability
    /// procedure, data wave) the wave's knobs, drain, quiesce, the knobs checked again and
    /// the last look; a coordinator's drain (a leader stepping down) where the procedure
    /// asks for it. A failure outside the wave seen meanwhile is ridden out
    /// ([`Ctx::ride_out`]) and the pass starts over from a gate that asks for full health,
    /// at most [`MAX_RIDE_OUTS`] times. `Ok(false)` when no node is left to stop.
    pub(super) async fn before_stop(
        &self,
        guard: &mut Guard,
        wave: &Wave,
        slots: &mut Vec<Slot<C::Node>>,
        outcomes: &mut Vec<(NodeId, NodeOutcome)>,
    ) -> Result<bool, Error<C::Error>> {
        let fresh = slots.iter().all(|s| s.start == StartAt::Gate);
        // A stateless wave after a coordinator wave whose end left its healthy wait to the
        // roll's end relies on nothing that wait would show.
        let owed = wave.kind == RoleKind::Stateless
            && !self
                .healthy_owed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
        let mut health = match (fresh, owed) {
            (true, false) => GateHealth::Full,
            (true, true) => GateHealth::Deferred,
            (false, _) => GateHealth::PlacementOnly,
        };
        // The high-availability procedure watches the nodes outside the wave, replicas
        // included, and rides a failure there out.
        let watch = match self.spec.policy.get_procedure() {
            Procedure::HighAvailability => Watch::NodesAndReplicas,
            _ => Watch::Off,
        };
        let mut ride_outs = 0;
        let mut begun = false;
        loop {
            let outside = Outside::new(self.cluster, self.exempt(&wave.nodes), watch);
            let pass = self
                .pass_before_stop(guard, wave, slots, outcomes, health, &outside, &mut begun)
                .await;
            match pass {
                Ok(Pass::Stop) => return Ok(true),
                Ok(Pass::Nothing) => return Ok(false),
                Err(e @ Error::OutsideFailure { .. }) if ride_outs < MAX_RIDE_OUTS => {
                    ride_outs += 1;
                    self.ride_out(guard, slots, e).await?;
                    health = GateHealth::Full;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One pass of [`Ctx::before_stop`]. A failure outside the wave ends it with
    /// [`Error::OutsideFailure`], every slot kept, so that the caller can ride it out and
    /// start over.
    #[allow(clippy::too_many_arguments)]
    async fn pass_before_stop(
        &self,
        guard: &mut Guard,
        wave: &Wave,
        slots: &mut Vec<Slot<C::Node>>,
        outcomes: &mut Vec<(NodeId, NodeOutcome)>,
        health: GateHealth,
        outside: &Outside<'_, C>,
        begun: &mut bool,
    ) -> Result<Pass, Error<C::Error>> {
        let ha = self.spec.policy.get_procedure() == Procedure::HighAvailability;
        let data = wave.kind == RoleKind::Data;
        let to_stop = |slots: &[Slot<C::Node>]| -> Vec<NodeId> {
            slots
                .iter()
                .filter(|s| s.start <= StartAt::Drain)
                .map(|s| s.id.clone())
                .collect()
        };
        match health {
            GateHealth::Full | GateHealth::Deferred => {
                if let Err(e) = self.gate(wave, health, outside).await {
                    let e = outside.explain(e);
                    if matches!(e, Error::OutsideFailure { .. }) {
                        return Err(e);
                    }
                    skip_or_fail(self, e, &wave.nodes, outcomes)?;
                    return Ok(Pass::Nothing);
                }
            }
            GateHealth::PlacementOnly => {
                let nodes = to_stop(slots);
                if !nodes.is_empty() {
                    let part = Wave {
                        nodes,
                        ..wave.clone()
                    };
                    self.gate(&part, GateHealth::PlacementOnly, outside)
                        .await
                        .map_err(|e| outside.explain(e))?;
                }
            }
        }
        if !*begun {
            self.begin(wave, slots).await?;
            *begun = true;
        }
        if ha && wave.kind == RoleKind::Coordinator {
            // A leader steps down first where the backend has a way (the default drain does
            // nothing and its probe holds at once).
            self.drain_slots(slots, outcomes, outside).await?;
            return Ok(if slots.is_empty() {
                Pass::Nothing
            } else {
                Pass::Stop
            });
        }
        if !(ha && data) {
            return Ok(Pass::Stop);
        }
        // Held again after a ride-out released them; a no-op read otherwise.
        self.reapply(guard).await?;
        self.set(guard, KnobScope::Wave, None).await?;
        self.add_temporaries(&to_stop(slots), outside).await?;
        self.drain_slots(slots, outcomes, outside).await?;
        self.quiesce_slots(slots, outcomes, outside).await?;
        if slots.is_empty() {
            self.restore(guard, KnobScope::Wave).await?;
            return Ok(Pass::Nothing);
        }
        // A coordinator failover during the drain loses in-memory settings: check them all
        // again right before the stop, and put back what was lost.
        self.reapply(guard).await?;
        self.set(guard, KnobScope::Wave, None).await?;
        self.last_look(&to_stop(slots)).await?;
        Ok(Pass::Stop)
    }

    /// Journals the start of every node still to be stopped, with its boot id and role.
    async fn begin(&self, wave: &Wave, slots: &mut [Slot<C::Node>]) -> Result<(), Error<C::Error>> {
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
        Ok(())
    }

    /// Quiesces every slot and waits until each is quiesced, watching the nodes outside the
    /// wave; keeps the slots that quiesced (the others are skipped or fail the wave).
    async fn quiesce_slots(
        &self,
        slots: &mut Vec<Slot<C::Node>>,
        outcomes: &mut Vec<(NodeId, NodeOutcome)>,
        outside: &Outside<'_, C>,
    ) -> Result<(), Error<C::Error>> {
        let deadline = self.spec.policy.get_deadlines().quiesce;
        let results = self
            .prepare(
                slots,
                Phase::Quiesce,
                Phase::WaitQuiesced,
                deadline,
                |id| self.cluster.quiesce(id),
                |id| outside.and(self.cluster.quiesced(id)),
            )
            .await;
        self.kept_after(slots, results, outcomes, outside).await
    }

    /// The last look before the stop of `to_stop` (the nodes not yet past it; a resumed
    /// wave's others are): no node outside the wave down or with unserving replicas, and
    /// placement still safe on a fresh topology. Either failure is
    /// [`Error::OutsideFailure`], to be ridden out.
    async fn last_look(&self, to_stop: &[NodeId]) -> Result<(), Error<C::Error>> {
        if to_stop.is_empty() {
            return Ok(());
        }
        let exempt = self.exempt(to_stop);
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
        let topology = self.topology_around(to_stop, Phase::Stop).await?;
        let max_unavailable = self.spec.policy.get_max_unavailable();
        let relief = self.relief().accepted_only();
        if let Err(reason) = wave_is_safe_with(&topology, to_stop, max_unavailable, &relief) {
            return Err(Error::OutsideFailure {
                node: None,
                phase: Phase::Stop,
                reason: format!("right before the stop: {reason}"),
            });
        }
        Ok(())
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
        self.kept_after(slots, results, outcomes, outside).await
    }

    /// What a pre-stop step left: a failure the outside watch saw ends the pass (to be
    /// ridden out); otherwise the slots whose step worked are kept ([`Ctx::keep`]).
    async fn kept_after(
        &self,
        slots: &mut Vec<Slot<C::Node>>,
        results: Vec<Result<(), Error<C::Error>>>,
        outcomes: &mut Vec<(NodeId, NodeOutcome)>,
        outside: &Outside<'_, C>,
    ) -> Result<(), Error<C::Error>> {
        if let Some(e) = first_outside(outside, results.iter()) {
            return Err(e);
        }
        *slots = self.keep(std::mem::take(slots), results, outcomes).await?;
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
                    Err(reason) => Health::Waiting(reason.to_string()),
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
