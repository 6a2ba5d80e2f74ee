//! Wave after wave: the nodes a crash left in progress first, then the plan's waves, each
//! gated by the canary and the operator's control; how a wave's end is recorded, and a pause.

use tracing::Instrument;

use crate::cluster::Cluster;
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::journal::{Entry, Resume};
use crate::model::{KnobScope, NodeId, RoleKind};
use crate::policy::OnTimeout;
use crate::wave::Wave;

use super::ctx::{Ctx, NodeOutcome, StartAt, WavesEnd};
use super::knobs::Guard;
use super::run::Report;
use super::{pipeline, resume};
use crate::error::chain;

impl<C: Cluster> Ctx<'_, C> {
    /// Rolls every wave; `Ok(Some(reason))` means halted.
    pub(super) async fn roll_waves(
        &self,
        guard: &mut Guard,
        waves: &[Wave],
        (replan, todo): (bool, &[NodeId]),
        resume: &Resume,
        report: &mut Report,
    ) -> Result<Option<String>, Error<C::Error>> {
        // A fresh rollout sets its knobs first. A resumed one finishes the nodes it left in
        // progress first: one of them may be the coordinator that answers for the knobs
        // (they were set before the crash, and are checked again before every wave).
        if resume.in_flight.is_empty() {
            self.set(guard, KnobScope::Rollout, None).await?;
        }
        // Nodes the journal shows in progress (the wave a crash interrupted) are finished
        // first, together, each from where it stopped.
        if !resume.in_flight.is_empty() {
            let topology = self.topology(Phase::Plan).await?;
            let mut groups: Vec<(Wave, Vec<StartAt>)> = Vec::new();
            for flight in &resume.in_flight {
                let id = &flight.node;
                let start = resume::resume_point(self, flight).await?;
                let info = topology
                    .node(id)
                    .ok_or_else(|| Error::UnknownNode(id.to_string()))?;
                match groups.iter_mut().find(|(w, _)| w.role == info.role.name) {
                    Some((w, starts)) => {
                        w.nodes.push(id.clone());
                        starts.push(start);
                    }
                    None => groups.push((
                        Wave {
                            role: info.role.name.clone(),
                            kind: info.role.kind,
                            nodes: vec![id.clone()],
                            why: "resumed from the journal".to_string(),
                        },
                        vec![start],
                    )),
                }
            }
            for (wave, starts) in groups {
                self.emit(Event::WaveStarted {
                    index: crate::event::RESUMED_WAVE,
                    nodes: wave.nodes.clone(),
                });
                if let Some(reason) = self
                    .roll_wave(guard, &wave, usize::MAX, &starts, report)
                    .await?
                {
                    return Ok(Some(reason));
                }
            }
        }
        let replanned;
        let waves = if replan {
            replanned = self.replan(todo, report).await?;
            &replanned
        } else {
            waves
        };
        let canary = self.spec.policy.get_canary();
        for (index, wave) in waves.iter().enumerate() {
            if let Some(n) = canary
                && report.rolled.len() >= n
            {
                // Knobs go back only once a settle left running has run out.
                self.settle_rest(WavesEnd::Rolled).await?;
                self.restore(guard, KnobScope::Rollout).await?;
                return Ok(Some(format!(
                    "canary: {} node(s) rolled; run again to go on",
                    report.rolled.len()
                )));
            }
            if let Some(control) = self.run.control {
                if control.is_paused() {
                    self.emit(Event::Waiting {
                        node: wave.nodes.first().cloned(),
                        phase: Phase::Gate,
                        reason: "paused by the operator".into(),
                    });
                }
                if control.checkpoint().await {
                    return Err(Error::Cancelled {
                        node: wave.nodes.first().cloned(),
                    });
                }
            }
            self.reapply(guard).await?;
            let nodes = wave.nodes.iter().filter(|n| {
                !report.rolled.contains(n) && !report.skipped.iter().any(|s| &s.0 == *n)
            });
            let wave = Wave {
                nodes: nodes.cloned().collect(),
                ..wave.clone()
            };
            if wave.nodes.is_empty() {
                continue;
            }
            self.emit(Event::WaveStarted {
                index,
                nodes: wave.nodes.clone(),
            });
            let starts = vec![StartAt::Gate; wave.nodes.len()];
            // A settle only guards what relies on the cluster: the stateless waves after the
            // last stateful one (Pegasus's collector after the metas) roll during it.
            let rest = &waves[index + 1..];
            let tail_stateless =
                !rest.is_empty() && rest.iter().all(|w| w.kind == RoleKind::Stateless);
            self.defer_settle
                .store(tail_stateless, std::sync::atomic::Ordering::Relaxed);
            self.defer_healthy.store(
                tail_stateless && wave.kind == RoleKind::Coordinator,
                std::sync::atomic::Ordering::Relaxed,
            );
            if let Some(reason) = self.roll_wave(guard, &wave, index, &starts, report).await? {
                self.settle_rest(WavesEnd::Halted).await?;
                return Ok(Some(reason));
            }
        }
        self.defer_settle
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.defer_healthy
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.settle_rest(WavesEnd::Rolled).await?;
        Ok(None)
    }

    /// Rolls one wave in lockstep phases; `Ok(Some(reason))` means halted.
    async fn roll_wave(
        &self,
        guard: &mut Guard,
        wave: &Wave,
        index: usize,
        starts: &[StartAt],
        report: &mut Report,
    ) -> Result<Option<String>, Error<C::Error>> {
        let span = tracing::info_span!("wave", index, role = wave.role.as_str());
        let outcome = pipeline::roll_nodes(self, guard, wave, starts)
            .instrument(span)
            .await;
        match outcome {
            Ok(outcomes) => {
                // Every node of the wave serves again (or was never stopped): its temporary
                // replicas go before it counts as done.
                let kept = self.remove_temporaries(Some(&wave.nodes)).await?;
                if let Some(reason) = kept.into_iter().next() {
                    return Err(Error::Unhealthy {
                        node: wave.nodes.first().cloned(),
                        phase: Phase::RemoveReplica,
                        reason,
                    });
                }
                for (id, o) in outcomes {
                    match o {
                        NodeOutcome::Done => {
                            self.append(&Entry::NodeDone { node: id.clone() })?;
                            self.emit(Event::NodeDone { node: id.clone() });
                            report.rolled.push(id);
                        }
                        NodeOutcome::Skipped(reason) => {
                            self.append(&Entry::NodeSkipped {
                                node: id.clone(),
                                reason: reason.clone(),
                            })?;
                            self.emit(Event::NodeSkipped {
                                node: id.clone(),
                                reason: reason.clone(),
                            });
                            report.skipped.push((id, reason));
                        }
                    }
                }
                Ok(None)
            }
            Err(e) => {
                if self.spec.policy.get_on_timeout() == OnTimeout::Pause
                    && matches!(e, Error::Timeout { .. })
                {
                    // A pause may last: the cluster must be able to heal meanwhile. The knobs
                    // that keep it from healing are released (the resume holds them again);
                    // the others stay, so that the resume finds the cluster as it left it.
                    let released = guard.healing_blockers();
                    self.release_healing(guard).await?;
                    let kept = guard.saved_names();
                    let mut reason = format!("paused on timeout: {}", chain(&e));
                    if !released.is_empty() {
                        reason.push_str(&format!(
                            "; released while paused, since they keep the cluster from healing: {}",
                            released.join(", ")
                        ));
                    }
                    if !kept.is_empty() {
                        reason.push_str(&format!(
                            "; kept for the resume (they do not stop healing): {}",
                            kept.join(", ")
                        ));
                    }
                    return Ok(Some(reason));
                }
                Err(e)
            }
        }
    }
}
