//! The rolling engine: plan, guard knobs, roll wave after wave, restore.
//!
//! A run reads top to bottom through these modules, each depending only on those above it:
//!
//! - `run`, `retry`, `probes`: what a caller hands a run and gets back, retries with
//!   backoff, and probes on a node's process.
//! - `ctx`: the run's state, and the one way it reads (`call`) and acts (`act`) on the
//!   cluster; `runner`: a step inside its node's span and events, and the one wait.
//! - `planning`, `knobs`: the plan, and the knobs journaled, set, verified and restored.
//! - `outside`: the watch on the nodes outside the wave and the ride-out, which wrap phases.
//! - `temporary`, `recover`, `resume`, `tail`: temporary replicas, roll back and `abort`,
//!   where a resumed node picks up, and the tail of a roll.
//! - `prestop` (gate, drain, quiesce, last look), `rejoin` (rejoin, healthy) and `pipeline`,
//!   which runs a wave's phases in their order: gate, drain, quiesce, stop, apply, start,
//!   ready, rejoin, healthy.
//! - `waves`: wave after wave; this module: [`roll`], from validation to the report.

mod ctx;
mod knobs;
mod outside;
mod pipeline;
mod planning;
mod prestop;
mod probes;
mod recover;
mod rejoin;
mod resume;
mod retry;
mod run;
mod runner;
mod tail;
mod temporary;
mod waves;

use tracing::Instrument;

use crate::cluster::Cluster;
use crate::error::chain;
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::journal::{Entry, JournalError, Resume};
use crate::model::{KnobScope, NodeId};
use crate::policy::Spec;

use ctx::{Ctx, ghosts, with_ghosts};
use knobs::Guard;
pub use planning::plan;
use planning::{make_plan, resolve, split_done, validate};
pub use recover::abort;
use run::LockGuard;
pub use run::{Outcome, Report, Run};

/// Rolls `spec` over the cluster, one safe wave at a time.
///
/// Starts fresh, or resumes the interrupted rollout in the journal (trusting the live cluster:
/// a node that already restarted is not restarted again).
/// Knobs are restored on success, on failure and on cancel; a canary halt restores them too
/// (the cluster is fully healthy there), a pause on timeout keeps those that do not keep the
/// cluster from healing (the resume holds the others again).
///
/// # Errors
/// Bad input before anything is touched, and every failure during the run, naming the node and
/// the phase; knobs are restored before it returns.
///
/// # Cancel safety
/// Dropping the future stops at once (no task is spawned); the journal keeps the saved knob
/// values and the node in progress, so that the next `roll` resumes or [`abort`] restores.
pub async fn roll<C: Cluster>(
    cluster: &C,
    spec: &Spec,
    run: Run<'_>,
) -> Result<Report, Error<C::Error>> {
    let span = tracing::info_span!(
        "rollout",
        cluster = cluster.name(),
        change = spec.change.kind()
    );
    roll_inner(cluster, spec, run).instrument(span).await
}

async fn roll_inner<C: Cluster>(
    cluster: &C,
    spec: &Spec,
    run: Run<'_>,
) -> Result<Report, Error<C::Error>> {
    let topology = validate(cluster, spec).await?;
    run.journal
        .lock(&format!("rollout of {}", cluster.name()))
        .map_err(Error::Journal)?;
    let _lock = LockGuard(run.journal);
    let resume = Resume::from_entries(&run.journal.load().map_err(Error::Journal)?);
    // Nodes this rollout left stopped that the live topology no longer lists (a stopped
    // coordinator is known only to whoever stopped it) are put back in, from the journal.
    let ghosts = ghosts(&resume, &topology);
    let topology = with_ghosts(topology, &ghosts);
    // Nodes down and holding nothing when the rollout began are left out and not watched; a
    // resume keeps the ones it began with, so that its selection is the same.
    let retired = if resume.active {
        resume.retired.clone()
    } else {
        crate::plan::retired(&topology)
    };
    let selected = resolve(&topology, spec, &retired)?;
    if let Some((name, change, nodes, procedure)) = &resume.begin {
        if name != cluster.name() {
            return Err(Error::Journal(JournalError::WrongCluster {
                expected: cluster.name().into(),
                found: name.clone(),
            }));
        }
        if change != &spec.change || nodes != &selected || *procedure != spec.policy.get_procedure()
        {
            return Err(Error::Journal(JournalError::OtherRollout));
        }
    }
    let in_flight: Vec<NodeId> = resume.in_flight.iter().map(|f| f.node.clone()).collect();
    let remaining: Vec<NodeId> = selected
        .iter()
        .filter(|n| !resume.finished.contains(n))
        .cloned()
        .collect();
    let (todo, done) = split_done(cluster, spec, &remaining, &in_flight).await?;
    let mut ctx = Ctx::new(cluster, spec, run);
    ctx.ghosts = ghosts;
    ctx.retired.clone_from(&retired);
    let mut guard = Guard::from_journal(&resume, cluster.knobs(spec.policy.get_procedure()));
    let planned = guard.planned(cluster, &spec.policy).await?;
    let plan = make_plan(cluster, spec, &topology, &todo, done.clone(), planned);
    // A node this rollout left in progress may be what makes another unsafe to stop now (its
    // replicas were dropped while it was down): with nodes in progress, the check waits
    // until they are done and the plan is made again.
    let replan = !in_flight.is_empty() && !plan.blocked.is_empty();
    if let Some(b) = plan.blocked.first().filter(|_| !replan) {
        return Err(Error::Unsafe {
            node: b.node.clone(),
            reason: b.reason.clone(),
        });
    }
    ctx.emit(Event::PlanReady {
        plan: Box::new(plan.clone()),
    });
    if resume.active {
        ctx.emit(Event::Resumed {
            finished: resume.finished.clone(),
            in_flight: in_flight.clone(),
        });
    } else {
        ctx.append(&Entry::Begin {
            cluster: cluster.name().into(),
            change: spec.change.clone(),
            nodes: selected.clone(),
            procedure: spec.policy.get_procedure(),
            retired,
        })?;
    }
    for n in &done {
        ctx.append(&Entry::NodeSkipped {
            node: n.clone(),
            reason: "already at the target".into(),
        })?;
    }
    let mut report = Report {
        outcome: Outcome::Completed,
        rolled: Vec::new(),
        skipped: done
            .iter()
            .map(|n| (n.clone(), "already at the target".into()))
            .collect(),
        waves: plan.waves.len(),
        resumed: resume.active,
        knobs_restored: false,
    };
    match ctx
        .roll_waves(
            &mut guard,
            &plan.waves,
            (replan, &todo),
            &resume,
            &mut report,
        )
        .await
    {
        Ok(Some(reason)) => {
            report.knobs_restored = guard.is_clear();
            ctx.append(&Entry::Halted {
                reason: reason.clone(),
            })?;
            ctx.emit(Event::Halted {
                reason: reason.clone(),
            });
            report.outcome = Outcome::Halted(reason);
            Ok(report)
        }
        Ok(None) => {
            // Temporary replicas left open (after a resume) go first; whatever happens to
            // them, the knobs are restored before the run returns. One that cannot go keeps
            // the journal open for `abort`.
            let removed = ctx.remove_temporaries(None).await;
            ctx.restore(&mut guard, KnobScope::Rollout).await?;
            ctx.heal_best_effort().await;
            if let Some(reason) = removed?.into_iter().next() {
                return Err(Error::Unhealthy {
                    node: None,
                    phase: Phase::RemoveReplica,
                    reason,
                });
            }
            report.knobs_restored = true;
            ctx.append(&Entry::End {
                outcome: "completed".into(),
            })?;
            ctx.emit(Event::Done {
                rolled: report.rolled.len(),
            });
            Ok(report)
        }
        Err(e) => {
            // An orchestrator that lost its lock (its session expired while it hung) changes
            // nothing more: another may hold the rollout now. That is what it says, whatever
            // failed meanwhile.
            if let Err(lost @ JournalError::LockLost { .. }) = ctx.run.journal.fence() {
                let lost = Error::Journal(lost);
                ctx.emit(Event::Failed {
                    error: format!("{}; the run had failed with: {}", chain(&lost), chain(&e)),
                    node: e.node().cloned(),
                    phase: e.phase(),
                });
                return Err(lost);
            }
            let outcome = if matches!(e, Error::Cancelled { .. }) {
                "cancelled"
            } else {
                "aborted"
            };
            // Restore before reporting; a restore failure is reported as well, and the journal
            // keeps the originals for `abort`.
            let restored = ctx.restore(&mut guard, KnobScope::Rollout).await;
            // With the cluster's own settings back, every running node the failed wave
            // touched gets its replicas back and is waited for; what does not come back keeps
            // the journal open for `abort`.
            ctx.settle().await;
            let mut stranded = ctx.stranded().await;
            match ctx.remove_temporaries(None).await {
                Ok(kept) => stranded.extend(kept),
                Err(r) => stranded.push(format!("temporary replicas not removed: {}", chain(&r))),
            }
            let mut msg = chain(&e);
            if let Err(r) = &restored {
                msg.push_str(&format!("; knobs not restored: {}", chain(r)));
            }
            if !stranded.is_empty() {
                msg.push_str(&format!(
                    "; not back: {}; the journal stays open: run `abort` to bring them back",
                    stranded.join("; ")
                ));
            }
            if restored.is_ok() && stranded.is_empty() {
                ctx.append(&Entry::End {
                    outcome: outcome.into(),
                })?;
            }
            ctx.emit(Event::Failed {
                error: msg,
                node: e.node().cloned(),
                phase: e.phase(),
            });
            Err(e)
        }
    }
}
