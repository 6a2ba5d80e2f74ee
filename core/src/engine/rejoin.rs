//! The end of a wave: the rejoin and the fully healthy wait.

use std::sync::Mutex;

use crate::cluster::{Cluster, Node};
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::model::Procedure;
use crate::probe::HealthProbe;

use super::ctx::{Ctx, Slot, StartAt};
use super::knobs::Guard;
use super::outside::{NUDGE, Outside};
use super::probes::{Reborn, Restarted};
use crate::error::chain;

/// How many times a wave's nodes are rejoined again after restarting on their own.
const MAX_REJOINS: usize = 2;

impl<C: Cluster> Ctx<'_, C> {
    /// The end of a wave: (high-availability procedure) rejoin every node and wait until it
    /// has its replicas back, then wait until the whole cluster is fully healthy; watching the
    /// nodes outside the wave all along ([`Ctx::watched`]), and rejoining again a node of the
    /// wave that restarts on its own meanwhile (its recovery would otherwise never be issued
    /// again), at most [`MAX_REJOINS`] times.
    pub(super) async fn back(
        &self,
        guard: &mut Guard,
        slots: &[Slot<C::Node>],
        outside: &Outside<'_, C>,
        procedure: Procedure,
    ) -> Result<(), Error<C::Error>> {
        let ha = procedure == Procedure::HighAvailability;
        let deadlines = *self.spec.policy.get_deadlines();
        let mut again = 0;
        loop {
            // Only the high-availability procedure rejoins; with no node to watch the probe
            // holds.
            let mut nodes = Vec::new();
            for s in slots.iter().filter(|_| ha) {
                let status = self
                    .call(Some(&s.id), Phase::Rejoin, || s.node.status())
                    .await?;
                nodes.push((&s.node, status.boot));
            }
            let reborn = Reborn {
                nodes,
                seen: Mutex::new(None),
            };
            let done = self
                .watched(guard, outside, deadlines.rejoin, || async {
                    if ha {
                        self.rejoin(slots, outside, &reborn).await?;
                    }
                    self.healthy(slots, outside, &reborn, again > 0).await
                })
                .await;
            let restarted = reborn
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match (done, restarted) {
                (Err(e), Some(node)) if again < MAX_REJOINS => {
                    again += 1;
                    tracing::warn!(node = node.as_str(), cause = %chain(&e), "rejoining a node that restarted on its own");
                    self.emit(Event::Waiting {
                        node: Some(node.clone()),
                        phase: Phase::WaitRejoined,
                        reason: format!("{}; it is waited for and rejoined again", chain(&e)),
                    });
                    for s in slots {
                        // The incarnation that came back and then died is not the one waited
                        // for: its exit is the cause seen above, not a failed start.
                        let before = reborn
                            .nodes
                            .iter()
                            .find(|(n, _)| n.id() == s.node.id())
                            .and_then(|(_, boot)| boot.clone());
                        let up = Restarted {
                            node: &s.node,
                            before,
                        }
                        .and(self.cluster.ready(&s.id));
                        self.wait(Some(&s.id), Phase::WaitReady, &up, deadlines.ready)
                            .await?;
                    }
                }
                (done, _) => return done,
            }
        }
    }

    /// Rejoin: every node is rejoined, then waited for until it has its replicas back. After
    /// a failure outside the wave the wave's own recovery may fail (its leader was the node
    /// that failed): it is nudged (heal, rejoin again) every [`NUDGE`], [`Ctx::watched`]
    /// calling again until the rejoin deadline.
    async fn rejoin(
        &self,
        slots: &[Slot<C::Node>],
        outside: &Outside<'_, C>,
        reborn: &Reborn<'_, C::Node>,
    ) -> Result<(), Error<C::Error>> {
        let deadline = self.spec.policy.get_deadlines().rejoin;
        let nudging = outside.fired();
        if nudging {
            self.act(None, Phase::Rejoin, || self.cluster.heal())
                .await?;
        }
        self.all(slots, StartAt::WaitReady, Phase::Rejoin, |s| async move {
            self.act(Some(&s.id), Phase::Rejoin, || self.cluster.rejoin(&s.id))
                .await
        })
        .await?;
        let window = if nudging {
            NUDGE.min(deadline)
        } else {
            deadline
        };
        self.all(slots, StartAt::WaitReady, Phase::WaitRejoined, |s| async {
            let probe = outside.and(reborn).and(self.cluster.rejoined(&s.id));
            self.wait(Some(&s.id), Phase::WaitRejoined, &probe, window)
                .await
        })
        .await?;
        Ok(())
    }

    /// Healthy: the whole cluster fully healthy, or, when only stateless waves follow a
    /// coordinator wave, that wait left to the roll's end ([`Ctx::settle_rest`]). After a
    /// failure outside the wave or a node of the wave that restarted on its own
    /// (`rejoined_again`), the backend heals first.
    async fn healthy(
        &self,
        slots: &[Slot<C::Node>],
        outside: &Outside<'_, C>,
        reborn: &Reborn<'_, C::Node>,
        rejoined_again: bool,
    ) -> Result<(), Error<C::Error>> {
        if outside.fired() || rejoined_again {
            // What the released knobs kept from healing, including what the wave's own
            // rejoin left behind meanwhile; after a node of the wave restarted on its own,
            // what its crash cut off outside the node itself (OpenMLDB: a leader displaced by
            // a move back, not yet recovered).
            self.act(None, Phase::WaitHealthy, || self.cluster.heal())
                .await?;
        }
        if self
            .defer_healthy
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Only stateless waves follow: the roll's end waits for it.
            self.healthy_owed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(slots.iter().map(|s| s.id.clone()));
            return Ok(());
        }
        let deadline = self.spec.policy.get_deadlines().healthy;
        let first = slots.first().map(|s| &s.id);
        self.step_opt(first, Phase::WaitHealthy, async {
            let probe = outside.and(reborn).and(self.cluster.fully_healthy());
            self.wait(None, Phase::WaitHealthy, &probe, deadline).await
        })
        .await
    }
}
