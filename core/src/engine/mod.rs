//! The rolling engine: plan, guard knobs, roll wave after wave, restore.

mod knobs;
mod node;
mod outside;
mod planning;
mod recover;
mod retry;
mod steps;
mod temporary;

use std::future::Future;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::cluster::{Cluster, ErrorClass};
use crate::control::Control;
use crate::error::{Error, Phase};
use crate::event::{Event, Ignore, Observer};
use crate::journal::{Entry, Journal, JournalError, Resume};
use crate::model::{KnobScope, NodeId, NodeInfo, RoleKind, Topology};
use crate::plan::Wave;
use crate::policy::{OnTimeout, Spec};

use knobs::Guard;
use node::{NodeOutcome, StartAt};
pub use planning::plan;
use planning::{ghosts, make_plan, resolve, split_done, validate, with_ghosts};
pub use recover::abort;
use retry::{Attempt, attempts, retry};

/// How a rollout that returned `Ok` ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// Every planned node is rolled or, under [`OnTimeout::Skip`], listed in
    /// [`Report::skipped`]; knobs are restored.
    Completed,
    /// Stopped on purpose (canary, pause on timeout); run [`roll`] again to resume or
    /// [`abort`] to restore.
    Halted(String),
}

/// What a rollout did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Nodes rolled in this run, in order.
    pub rolled: Vec<NodeId>,
    /// Nodes left out, with the reason.
    pub skipped: Vec<(NodeId, String)>,
    /// Waves in the plan of this run.
    pub waves: usize,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
    /// Whether every knob is back at its original value.
    pub knobs_restored: bool,
}

/// Where a rollout records, reports and takes orders: the journal (required), an observer and
/// a [`Control`].
#[derive(Clone, Copy)]
pub struct Run<'a> {
    journal: &'a dyn Journal,
    observer: &'a dyn Observer,
    control: Option<&'a Control>,
}

impl std::fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").finish_non_exhaustive()
    }
}

impl<'a> Run<'a> {
    /// A run that records to `journal` and reports to nobody.
    pub fn new(journal: &'a dyn Journal) -> Self {
        Self {
            journal,
            observer: &Ignore,
            control: None,
        }
    }

    /// Sends every event to `observer`.
    #[must_use]
    pub fn observe(mut self, observer: &'a dyn Observer) -> Self {
        self.observer = observer;
        self
    }

    /// Takes pause, resume and cancel from `control`.
    #[must_use]
    pub fn control(mut self, control: &'a Control) -> Self {
        self.control = Some(control);
        self
    }
}

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

struct LockGuard<'a>(&'a dyn Journal);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
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

/// An error and its sources on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The engine's private state for one run.
struct Ctx<'a, C> {
    cluster: &'a C,
    spec: &'a Spec,
    run: Run<'a>,
    /// Nodes in progress the live topology does not list (see [`ghosts`]).
    ghosts: Vec<NodeInfo>,
    /// Data nodes down and holding nothing when the rollout began: not failures outside a
    /// wave.
    retired: Vec<NodeId>,
    /// Whether the journal may hold temporary replicas: unknown until first read, then set
    /// by every one this run adds (so a roll that adds none reads the journal once, not at
    /// every wave).
    temporaries: std::sync::Mutex<Option<bool>>,
    /// Whether the wave being rolled is followed only by stateless waves: its settle time
    /// (see [`Cluster::settle`]) then runs alongside them instead of before them.
    defer_settle: std::sync::atomic::AtomicBool,
    /// A settle time left to run before the roll ends: until when, and after which node.
    settling: std::sync::Mutex<Option<(tokio::time::Instant, NodeId)>>,
    /// Whether the wave being rolled is a coordinator wave followed only by stateless waves:
    /// its end then waits for no fully healthy cluster, and neither do the stateless waves'
    /// gates; the roll's end does ([`Self::settle_rest`]). A cluster that shows its health
    /// only a while after a coordinator's restart (Pegasus's meta leader, during its failure
    /// detector's grace) then does not hold up nodes that rely on none of it.
    defer_healthy: std::sync::atomic::AtomicBool,
    /// The coordinators whose wave's end left its fully-healthy wait to the roll's end.
    healthy_owed: std::sync::Mutex<Vec<NodeId>>,
}

/// How the waves ended, for what [`Ctx::settle_rest`] waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WavesEnd {
    /// Every wave rolled, or the canary's did: the roll ends on a fully healthy cluster.
    Rolled,
    /// Halted for the operator (paused on a timeout): the resumed run gates its next wave
    /// on full health anyway.
    Halted,
}

impl<'a, C: Cluster> Ctx<'a, C> {
    fn new(cluster: &'a C, spec: &'a Spec, run: Run<'a>) -> Self {
        Self {
            cluster,
            spec,
            run,
            ghosts: Vec::new(),
            retired: Vec::new(),
            temporaries: std::sync::Mutex::new(None),
            defer_settle: std::sync::atomic::AtomicBool::new(false),
            settling: std::sync::Mutex::new(None),
            defer_healthy: std::sync::atomic::AtomicBool::new(false),
            healthy_owed: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The nodes a wave's outside watch leaves alone: the wave's own and the retired.
    fn exempt(&self, wave: &[NodeId]) -> Vec<NodeId> {
        wave.iter().chain(&self.retired).cloned().collect()
    }

    /// The live topology (read with retries), with this run's [`ghosts`].
    async fn topology(&self, phase: Phase) -> Result<Topology, Error<C::Error>> {
        let t = self.call(None, phase, || self.cluster.topology()).await?;
        Ok(self.with_ghosts(t))
    }

    /// The topology around `nodes` ([`Cluster::topology_around`], read with retries), with
    /// this run's [`ghosts`].
    async fn topology_around(
        &self,
        nodes: &[NodeId],
        phase: Phase,
    ) -> Result<Topology, Error<C::Error>> {
        let t = self
            .call(None, phase, || self.cluster.topology_around(nodes))
            .await?;
        Ok(self.with_ghosts(t))
    }

    fn with_ghosts(&self, topology: Topology) -> Topology {
        with_ghosts(topology, &self.ghosts)
    }

    fn emit(&self, event: Event) {
        self.run.observer.on_event(&event);
    }

    fn append(&self, entry: &Entry) -> Result<(), Error<C::Error>> {
        self.run.journal.append(entry).map_err(Error::Journal)
    }

    /// Calls a control-plane step, retrying transient errors with backoff in tokio time.
    async fn call<T, F, Fut>(
        &self,
        node: Option<&NodeId>,
        phase: Phase,
        f: F,
    ) -> Result<T, Error<C::Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, C::Error>>,
    {
        retry(self.cluster, &self.spec.policy, node, phase, f).await
    }

    /// An action on the cluster (a knob written, a drain, a stop, a start, an apply...),
    /// retried as [`call`](Self::call) does, with the journal's lock checked right before
    /// every attempt ([`Journal::fence`](crate::Journal::fence)): once it is lost, nothing
    /// more is tried. Every change the engine makes to the cluster goes through here; reads
    /// go through `call`.
    async fn act<T, F, Fut>(
        &self,
        node: Option<&NodeId>,
        phase: Phase,
        f: F,
    ) -> Result<T, Error<C::Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, C::Error>>,
    {
        // The lock is checked before every attempt, retries included: a retry may come
        // after the session expired.
        let mut f = f;
        let result = attempts(
            &self.spec.policy,
            |e: &Attempt<C::Error>| match e {
                Attempt::LockLost(_) => ErrorClass::Fatal,
                Attempt::Failed(e) => self.cluster.classify(e),
            },
            || {
                let attempt = self.run.journal.fence().map(|()| f());
                async move {
                    match attempt {
                        Ok(fut) => fut.await.map_err(Attempt::Failed),
                        Err(lost) => Err(Attempt::LockLost(lost)),
                    }
                }
            },
        )
        .await;
        result.map_err(|e| match e {
            Attempt::LockLost(j) => Error::Journal(j),
            Attempt::Failed(source) => Error::Backend {
                node: node.cloned(),
                phase,
                source,
            },
        })
    }

    /// With the knobs back, repairs what they kept the cluster from repairing
    /// ([`Cluster::heal`]); a failure is logged, the health checks that follow decide.
    async fn heal_best_effort(&self) {
        if let Err(e) = self.act(None, Phase::Restore, || self.cluster.heal()).await {
            tracing::warn!(error = %chain(&e), "heal after restoring the knobs failed");
        }
    }

    /// Rolls every wave; `Ok(Some(reason))` means halted.
    async fn roll_waves(
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
            let mut groups: Vec<(Wave, Vec<node::StartAt>)> = Vec::new();
            for flight in &resume.in_flight {
                let id = &flight.node;
                let start = node::resume_point(self, flight).await?;
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
        let outcome = node::roll_nodes(self, guard, wave, starts)
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
