//! The engine's state for one run ([`Ctx`]) and the one way it reads and acts on the
//! cluster (`call`, `act`), and a wave's nodes as the engine carries them ([`Slot`]).

use std::future::Future;

use crate::cluster::{Cluster, ErrorClass};
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::journal::{Entry, Resume};
use crate::model::{ApplyRecord, NodeId, NodeInfo, Topology};
use crate::policy::Spec;

use super::retry::{Attempt, attempts, retry};
use super::run::Run;
use crate::error::chain;

/// The engine's private state for one run.
pub(super) struct Ctx<'a, C> {
    pub(super) cluster: &'a C,
    pub(super) spec: &'a Spec,
    pub(super) run: Run<'a>,
    /// Nodes in progress the live topology does not list (see [`ghosts`]).
    pub(super) ghosts: Vec<NodeInfo>,
    /// Data nodes down and holding nothing when the rollout began: not failures outside a
    /// wave.
    pub(super) retired: Vec<NodeId>,
    /// Whether the journal may hold temporary replicas: unknown until first read, then set
    /// by every one this run adds (so a roll that adds none reads the journal once, not at
    /// every wave).
    pub(super) temporaries: std::sync::Mutex<Option<bool>>,
    /// Whether the wave being rolled is followed only by stateless waves: its settle time
    /// (see [`Cluster::settle`]) then runs alongside them instead of before them.
    pub(super) defer_settle: std::sync::atomic::AtomicBool,
    /// A settle time left to run before the roll ends: until when, and after which node.
    pub(super) settling: std::sync::Mutex<Option<(tokio::time::Instant, NodeId)>>,
    /// Whether the wave being rolled is a coordinator wave followed only by stateless waves:
    /// its end then waits for no fully healthy cluster, and neither do the stateless waves'
    /// gates; the roll's end does ([`Self::settle_rest`]). A cluster that shows its health
    /// only a while after a coordinator's restart (Pegasus's meta leader, during its failure
    /// detector's grace) then does not hold up nodes that rely on none of it.
    pub(super) defer_healthy: std::sync::atomic::AtomicBool,
    /// The coordinators whose wave's end left its fully-healthy wait to the roll's end.
    pub(super) healthy_owed: std::sync::Mutex<Vec<NodeId>>,
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
    pub(super) fn new(cluster: &'a C, spec: &'a Spec, run: Run<'a>) -> Self {
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
    pub(super) fn exempt(&self, wave: &[NodeId]) -> Vec<NodeId> {
        wave.iter().chain(&self.retired).cloned().collect()
    }

    /// The live topology (read with retries), with this run's [`ghosts`].
    pub(super) async fn topology(&self, phase: Phase) -> Result<Topology, Error<C::Error>> {
        let t = self.call(None, phase, || self.cluster.topology()).await?;
        Ok(self.with_ghosts(t))
    }

    /// The topology around `nodes` ([`Cluster::topology_around`], read with retries), with
    /// this run's [`ghosts`].
    pub(super) async fn topology_around(
        &self,
        nodes: &[NodeId],
        phase: Phase,
    ) -> Result<Topology, Error<C::Error>> {
        let t = self
            .call(None, phase, || self.cluster.topology_around(nodes))
            .await?;
        Ok(self.with_ghosts(t))
    }

    pub(super) fn with_ghosts(&self, topology: Topology) -> Topology {
        with_ghosts(topology, &self.ghosts)
    }

    pub(super) fn emit(&self, event: Event) {
        self.run.observer.on_event(&event);
    }

    pub(super) fn append(&self, entry: &Entry) -> Result<(), Error<C::Error>> {
        self.run.journal.append(entry).map_err(Error::Journal)
    }

    /// Calls a control-plane step, retrying transient errors with backoff in tokio time.
    pub(super) async fn call<T, F, Fut>(
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
    pub(super) async fn act<T, F, Fut>(
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
    pub(super) async fn heal_best_effort(&self) {
        if let Err(e) = self.act(None, Phase::Restore, || self.cluster.heal()).await {
            tracing::warn!(error = %chain(&e), "heal after restoring the knobs failed");
        }
    }
}

/// The in-flight nodes of `resume` that `topology` does not list and whose role the
/// journal recorded, as nodes that are down.
pub(super) fn ghosts(resume: &Resume, topology: &Topology) -> Vec<NodeInfo> {
    resume
        .in_flight
        .iter()
        .filter(|f| topology.node(&f.node).is_none())
        .filter_map(|f| {
            let role = f.role.clone()?;
            tracing::info!(node = %f.node, "the live topology does not list a node this rollout left in progress; taken from the journal");
            Some(NodeInfo::new(f.node.clone(), role).alive(false))
        })
        .collect()
}

/// `topology` with the `ghosts` it does not list (once a ghost is back, the live entry wins).
pub(super) fn with_ghosts(mut topology: Topology, ghosts: &[NodeInfo]) -> Topology {
    for g in ghosts {
        if topology.node(&g.id).is_none() {
            topology.nodes.push(g.clone());
        }
    }
    topology
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
