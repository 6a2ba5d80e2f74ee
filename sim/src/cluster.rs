//! [`SimCluster`] and [`SimNode`]: the core traits over the simulated world.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rollout_core::{
    Change, ChangeError, Cluster, ConfigEdit, ErrorClass, HealthProbe, Knob, NodeId, NodeInfo,
    Partition, Procedure, Replica, ReplicaRole, Role, RoleKind, TemporaryReplica,
    TemporaryReplicas, Topology,
};
use tokio::time::Instant;

use crate::config::Flavor;
use crate::monitor::Monitor;
use crate::node::SimNode;
use crate::probe::SimProbe;
use crate::world::conditions::Kind;
use crate::world::{Ev, Rep, Us, World, us};

/// What a simulated control-plane call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// An injected transient fault; retrying helps.
    #[error("transient control-plane error (injected) calling {0}")]
    Transient(&'static str),
    /// No coordinator leader answers right now.
    #[error("no coordinator leader answers")]
    NoLeader,
    /// The knob does not exist in this flavor.
    #[error("unknown knob {0:?}")]
    UnknownKnob(String),
    /// `apply` or `revert` on a running node.
    #[error("node {0} still runs; stop it before changing what it runs")]
    Running(NodeId),
    /// A node or partition this cluster does not have.
    #[error("{0} is not in this cluster")]
    Unknown(String),
}

/// A simulated cluster: implements [`Cluster`] over a deterministic world in tokio time.
///
/// Clones share the world. Build one with [`SimBuilder`](crate::SimBuilder).
#[derive(Clone)]
pub struct SimCluster {
    world: Arc<Mutex<World>>,
    start: Instant,
    name: Arc<str>,
    /// Simulated microseconds per microsecond of the tokio clock.
    scale: u64,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Ground truth of a simulated run, for reports and invariant checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// The monitor's counters.
    pub monitor: Monitor,
    /// Orchestrator-initiated starts per node.
    pub restarts: BTreeMap<NodeId, u32>,
    /// Crashes per node.
    pub crashes: BTreeMap<NodeId, u32>,
    /// Whether every knob is at its value from before the rollout.
    pub knobs_restored: bool,
    /// The knobs as they are now.
    pub knobs: BTreeMap<String, String>,
    /// Virtual time since the cluster was built.
    pub elapsed: std::time::Duration,
    /// Virtual time the engine stayed idle after what it waited for held (the union of the
    /// intervals; see `SimReport::lower_bound_secs`).
    pub idle: std::time::Duration,
}

impl SimCluster {
    pub(crate) fn new(world: World, name: String, scale: u64) -> Self {
        Self {
            world: Arc::new(Mutex::new(world)),
            start: Instant::now(),
            name: name.into(),
            scale: scale.max(1),
        }
    }

    fn now_us(&self) -> Us {
        us(Instant::now().saturating_duration_since(self.start)).saturating_mul(self.scale)
    }

    /// The tokio instant at which the world reaches simulated time `t` (microseconds).
    pub(crate) fn instant_at(&self, t: Us) -> Instant {
        self.start + std::time::Duration::from_micros(t / self.scale)
    }

    /// The world, advanced to now.
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now_us();
        w.advance(now);
        w
    }

    /// The world, advanced to now, after a possible injected transient failure.
    /// Every control-plane call is a yield point, as a network call is: an orchestrator
    /// dropped between two calls (the `orchestrator-crash` fault) stops right there.
    pub(crate) async fn control(
        &self,
        call: &'static str,
    ) -> Result<MutexGuard<'_, World>, SimError> {
        tokio::task::yield_now().await;
        let mut w = self.world();
        let now = w.now;
        w.waits.call(now);
        if w.transient() {
            w.waits.transient(now);
            return Err(SimError::Transient(call));
        }
        Ok(w)
    }

    fn index(&self, w: &World, id: &NodeId) -> Option<u32> {
        w.index(id)
    }

    /// The flavor.
    pub fn flavor(&self) -> Flavor {
        self.world().flavor
    }

    /// How many nodes the cluster has, of every role.
    pub fn node_count(&self) -> usize {
        self.world().nodes.len()
    }

    /// Every node id, data nodes first.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.world().nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// Ground truth now: counters, restarts, knobs.
    pub fn truth(&self) -> Truth {
        let mut w = self.world();
        let now = w.now;
        // Close the open unavailability intervals at this instant, without ending them.
        let open: u64 = w
            .parts
            .iter()
            .filter_map(|p| p.unavailable_since.map(|s| now - s))
            .sum();
        let writes_lost = w.writes_lost();
        let mut monitor = w.mon.clone();
        monitor.unavailable_us += open;
        for p in &w.parts {
            if let Some(since) = p.unavailable_since {
                crate::world::add_table_us(&mut monitor.unavailable_table_us, p.table, now - since);
            }
        }
        monitor.writes_lost = writes_lost;
        monitor.extra_replicas = w
            .parts
            .iter()
            .map(|p| p.replicas.len().saturating_sub(usize::from(p.wanted)) as u64)
            .sum();
        // The histogram rounds to three significant digits: no percentile above the exact max.
        let h = &w.clients.latency;
        let max = w.clients.latency_max;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q).min(max)
            }
        };
        monitor.latency_p50_us = q(0.5);
        monitor.latency_p99_us = q(0.99);
        monitor.latency_p999_us = q(0.999);
        monitor.latency_max_us = w.clients.latency_max;
        Truth {
            monitor,
            restarts: w.nodes.iter().map(|n| (n.id.clone(), n.restarts)).collect(),
            crashes: w.nodes.iter().map(|n| (n.id.clone(), n.crashes)).collect(),
            knobs_restored: w.knobs == w.knob_defaults,
            knobs: w.knobs.clone(),
            elapsed: std::time::Duration::from_micros(now),
            idle: std::time::Duration::from_micros(w.waits.idle_us()),
        }
    }

    /// The process of `node` dies at once, as under SIGKILL: what it had not flushed or
    /// replicated is gone as in a crash, and nothing starts it again (no supervisor) until
    /// a start. `false` when the cluster has no such node or it was not running. For
    /// emulators whose processes are real OS processes.
    pub fn kill(&self, node: &NodeId) -> bool {
        let mut w = self.world();
        let Some(i) = self.index(&w, node) else {
            return false;
        };
        if !w.nodes[i as usize].running {
            return false;
        }
        w.nodes[i as usize].crashes += 1;
        w.nodes[i as usize].exit_reason = Some("the process was killed".into());
        w.process_gone(i);
        true
    }

    /// The operator fixes what made `node` fail at start (clears an injected `fail-start`):
    /// its next start works. `false` when the cluster has no such node.
    pub fn fix_start(&self, node: &str) -> bool {
        let mut w = self.world();
        match w.nodes.iter_mut().find(|n| n.id.as_str() == node) {
            Some(n) => {
                n.fail_start = false;
                true
            }
            None => false,
        }
    }

    /// Whether the replica of partition `part` (0-based) on `node` holds write `seq`: one
    /// replica's answer, for checks that replay a run's acknowledged writes against the
    /// replica they pick themselves (from [`Cluster::topology`]). `None` when the partition
    /// has no replica there.
    pub fn replica_holds(&self, part: usize, node: &NodeId, seq: u32) -> Option<bool> {
        let w = self.world();
        let i = self.index(&w, node)?;
        let r = w.parts.get(part)?.replicas.iter().find(|r| r.node == i)?;
        Some(r.log.holds(seq))
    }

    /// The sequence numbers of the writes acknowledged on partition `part`, in order.
    pub fn acked(&self, part: usize) -> Vec<u32> {
        self.world()
            .parts
            .get(part)
            .map(|p| (0..p.next_seq).collect())
            .unwrap_or_default()
    }

    /// The partition index and node index of a temporary replica.
    fn temporary_at(&self, w: &World, t: &TemporaryReplica) -> Result<(u32, u32), SimError> {
        let node = self
            .index(w, &t.to)
            .ok_or_else(|| SimError::Unknown(t.to.to_string()))?;
        let part = part_index(w, &t.partition)
            .ok_or_else(|| SimError::Unknown(format!("partition {}", t.partition)))?;
        Ok((part, node))
    }

    fn temporary_probe(&self, t: &TemporaryReplica, removed: bool) -> SimProbe<'_> {
        let w = self.world();
        match self.temporary_at(&w, t) {
            Ok((part, _)) => {
                drop(w);
                let kind = if removed {
                    Kind::TemporaryRemoved(part)
                } else {
                    Kind::TemporaryReady(part)
                };
                self.probe(Some(&t.to), kind)
            }
            Err(_) => SimProbe::new(self, None, Kind::TemporaryReady(0), None),
        }
    }

    fn probe(&self, node: Option<&NodeId>, kind: Kind) -> SimProbe<'_> {
        let mut w = self.world();
        let node = node.and_then(|id| self.index(&w, id));
        let known = node.is_some() || kind == Kind::FullyHealthy;
        let wait = known.then(|| w.waits.register(kind, node));
        SimProbe::new(self, node, kind, wait)
    }

    /// The world, advanced to now (for the probes and the upstream-tool strategies).
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world()
    }

    /// The world, after a possible injected transient failure (a control-plane call).
    pub(crate) async fn call(&self, name: &'static str) -> Result<MutexGuard<'_, World>, SimError> {
        self.control(name).await
    }

    /// Where the cluster's clock started.
    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    /// Adds an idle interval to the lower-bound measurement: the orchestrator could have
    /// acted from `from` and did only at `to`.
    pub fn note_idle(&self, from: std::time::Duration, to: std::time::Duration) {
        self.world().waits.idle(us(from), us(to));
    }
}

impl Cluster for SimCluster {
    type Node = SimNode;
    type Error = SimError;

    fn name(&self) -> &str {
        &self.name
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, SimError> {
        let w = self.control("nodes").await?;
        Ok(node_infos(&w))
    }

    /// The nodes as `nodes` shows them, from the set of data nodes seen down.
    async fn down_outside(&self, exempt: &[NodeId]) -> Result<Option<(NodeId, String)>, SimError> {
        let w = self.control("nodes").await?;
        Ok(w.down_data
            .iter()
            .map(|&i| &w.nodes[i as usize])
            .find(|n| !exempt.contains(&n.id))
            .map(|n| {
                (
                    n.id.clone(),
                    format!("node {} ({}) outside the wave is not alive", n.id, n.role),
                )
            }))
    }

    /// From the per-node counts `World::touch` keeps: a replica the topology would show as
    /// a primary or secondary that does not serve (a dropped one, or a member with nothing
    /// loaded) on a live data node outside `exempt`; the partition found from where the last
    /// search stopped. The same answer as the default's, without building the topology.
    async fn unserving_outside(
        &self,
        exempt: &[NodeId],
    ) -> Result<Option<(NodeId, String)>, SimError> {
        let w = self.control("topology").await?;
        Ok(crate::world::unserving_outside(&w, exempt))
    }

    async fn topology(&self) -> Result<Topology, SimError> {
        let w = self.control("topology").await?;
        let partitions = (0..w.parts.len() as u32)
            .map(|p| partition(&w, p))
            .collect();
        Ok(Topology::new(node_infos(&w), partitions).min_serving(w.profile.min_serving))
    }

    /// From each node's list of the partitions it holds: only `nodes` and their partitions
    /// are built.
    async fn topology_around(&self, nodes: &[NodeId]) -> Result<Topology, SimError> {
        let w = self.control("topology").await?;
        let at: Vec<u32> = nodes.iter().filter_map(|id| self.index(&w, id)).collect();
        let mut parts: Vec<u32> = at
            .iter()
            .flat_map(|&i| w.nodes[i as usize].parts.iter().copied())
            .collect();
        parts.sort_unstable();
        parts.dedup();
        let infos = at.iter().map(|&i| node_info(&w, i as usize)).collect();
        let partitions = parts.into_iter().map(|p| partition(&w, p)).collect();
        Ok(Topology::new(infos, partitions).min_serving(w.profile.min_serving))
    }

    fn node(&self, id: &NodeId) -> Option<SimNode> {
        let w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let index = self.index(&w, id)?;
        Some(SimNode {
            sim: self.clone(),
            index,
            id: id.clone(),
        })
    }

    fn check_change(&self, change: &Change) -> Result<(), ChangeError> {
        change.validate()?;
        if let Change::Config { edits } = change {
            let files = self.world().profile.config_files;
            for e in edits {
                let (ConfigEdit::Set { file, .. } | ConfigEdit::Unset { file, .. }) = e;
                if !files.contains(&file.as_str()) {
                    return Err(ChangeError::Edit {
                        file: file.clone(),
                        reason: format!(
                            "unknown config file; this cluster has {}",
                            files.join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        self.world().model().knobs(procedure)
    }

    async fn read_knob(&self, name: &str) -> Result<String, SimError> {
        let w = self.control("read_knob").await?;
        if w.leader.is_none() {
            return Err(SimError::NoLeader);
        }
        w.knobs
            .get(name)
            .cloned()
            .ok_or_else(|| SimError::UnknownKnob(name.into()))
    }

    async fn write_knob(&self, name: &str, value: &str) -> Result<(), SimError> {
        let mut w = self.control("write_knob").await?;
        if w.leader.is_none() {
            return Err(SimError::NoLeader);
        }
        if !w.knobs.contains_key(name) {
            return Err(SimError::UnknownKnob(name.into()));
        }
        w.knobs.insert(name.into(), value.into());
        w.changed();
        Ok(())
    }

    async fn drain(&self, node: &NodeId) -> Result<(), SimError> {
        let mut w = self.control("drain").await?;
        let Some(i) = self.index(&w, node) else {
            return Ok(());
        };
        if w.nodes[i as usize].kind != RoleKind::Data || w.nodes[i as usize].draining {
            return Ok(());
        }
        w.with_model(|m, w| m.drain(w, i));
        w.changed();
        Ok(())
    }

    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = SimError> + 'a {
        self.probe(Some(node), Kind::Drained)
    }

    async fn quiesce(&self, node: &NodeId) -> Result<(), SimError> {
        let mut w = self.control("quiesce").await?;
        let Some(i) = self.index(&w, node) else {
            return Ok(());
        };
        if w.nodes[i as usize].kind == RoleKind::Data && w.nodes[i as usize].flush_done.is_none() {
            let d = us(w.t.flush);
            let at = w.now + d;
            w.nodes[i as usize].flush_done = Some(at);
            w.schedule(at, Ev::Flushed { node: i });
        }
        Ok(())
    }

    fn quiesced<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = SimError> + 'a {
        self.probe(Some(node), Kind::Quiesced)
    }

    fn stopped<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = SimError> + 'a {
        self.probe(Some(node), Kind::Stopped)
    }

    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = SimError> + 'a {
        self.probe(Some(node), Kind::Ready)
    }

    async fn rejoin(&self, node: &NodeId) -> Result<(), SimError> {
        let mut w = self.control("rejoin").await?;
        let Some(i) = self.index(&w, node) else {
            return Ok(());
        };
        if w.nodes[i as usize].kind == RoleKind::Data && w.nodes[i as usize].up() {
            w.with_model(|m, w| m.rejoin(w, i));
            w.changed();
        }
        Ok(())
    }

    fn temporary_replicas(&self) -> Option<&impl TemporaryReplicas<Error = SimError>> {
        self.world().model().temporary_replicas().then_some(self)
    }

    fn settle(&self, node: &NodeId) -> std::time::Duration {
        let w = self.world();
        match self.index(&w, node) {
            // In the engine's clock: the world runs `scale` times faster.
            // Only after the coordinator that led: a Pegasus replica server beacons to the
            // leader alone and switches on its loss (`slave_failure_detector_with_multimaster`,
            // `src/failure_detector/failure_detector_multimaster.cpp`); a standby's restart
            // leaves the beacons as they were.
            Some(i)
                if w.nodes[i as usize].kind == RoleKind::Coordinator
                    && w.nodes[i as usize].led_at_stop =>
            {
                std::time::Duration::from_micros(us(w.t.coordinator_settle) / self.scale)
            }
            _ => std::time::Duration::ZERO,
        }
    }

    fn data_down_limit(&self, _: &Topology) -> Option<(usize, String)> {
        let w = self.world();
        w.model().data_down_limit(&w)
    }

    async fn heal(&self) -> Result<(), SimError> {
        let mut w = self.control("heal").await?;
        w.with_model(|m, w| m.heal(w));
        Ok(())
    }

    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = SimError> + 'a {
        self.probe(Some(node), Kind::Rejoined)
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = SimError> + '_ {
        self.probe(None, Kind::FullyHealthy)
    }

    fn safe_to_stop<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = SimError> + 'a {
        self.probe(Some(node), Kind::SafeToStop)
    }

    fn classify(&self, error: &SimError) -> ErrorClass {
        match error {
            SimError::Transient(_) => ErrorClass::Transient,
            SimError::NoLeader => ErrorClass::NotSafeYet,
            SimError::UnknownKnob(_) | SimError::Running(_) | SimError::Unknown(_) => {
                ErrorClass::Fatal
            }
        }
    }
}

/// The nodes as the control plane sees them.
/// Partition `p` as the topology shows it.
fn partition(w: &World, p: u32) -> Partition {
    let part = &w.parts[p as usize];
    let replicas = part
        .replicas
        .iter()
        .map(|r| {
            let up = w.nodes[r.node as usize].up() && r.loaded;
            let role = match r.role {
                Rep::Primary => ReplicaRole::Primary,
                Rep::Learner => ReplicaRole::Learner,
                Rep::Secondary | Rep::Inactive => ReplicaRole::Secondary,
            };
            Replica::new(w.nodes[r.node as usize].id.clone(), role)
                .alive(up && r.role != Rep::Inactive)
        })
        .collect();
    Partition::new(
        w.labels.0[p as usize].clone(),
        u32::from(part.wanted),
        replicas,
    )
    .table(w.labels.1[usize::from(part.table)].clone())
}

fn node_infos(w: &World) -> Vec<NodeInfo> {
    (0..w.nodes.len()).map(|i| node_info(w, i)).collect()
}

/// Node `i` as the topology shows it.
fn node_info(w: &World, i: usize) -> NodeInfo {
    let n = &w.nodes[i];
    let info = NodeInfo::new(n.id.clone(), Role::new(n.role, n.kind, n.rank))
        .alive(n.up() && (n.kind != RoleKind::Data || n.attached))
        .leader(w.leader == Some(i as u32) || (n.role == "taskmanager" && n.up()))
        .version(n.version.clone());
    match &n.zone {
        Some(z) => info.zone(z.clone()),
        None => info,
    }
}

/// The index of the partition a topology names `id` (`<prefix><table>.<index>`).
fn part_index(w: &World, id: &str) -> Option<u32> {
    let rest = id.strip_prefix(w.profile.partition_prefix)?;
    let (table, index) = rest.split_once('.')?;
    let (table, index): (u64, u32) = (table.parse().ok()?, index.parse().ok()?);
    let tables = u64::from(w.parts.iter().map(|p| p.table).max()?) + 1;
    let first = (table.checked_sub(1)? * w.parts.len() as u64).div_ceil(tables);
    let p = u32::try_from(first).ok()?.checked_add(index)?;
    let part = w.parts.get(p as usize)?;
    (u64::from(part.table) + 1 == table && part.index == index).then_some(p)
}

impl TemporaryReplicas for SimCluster {
    type Error = SimError;

    async fn add_temporary_replica(&self, t: &TemporaryReplica) -> Result<(), SimError> {
        let mut w = self.control("add_temporary_replica").await?;
        let (part, node) = self.temporary_at(&w, t)?;
        w.with_model(|m, w| m.add_replica(w, part, node));
        Ok(())
    }

    fn temporary_replica_ready<'a>(
        &'a self,
        t: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = SimError> + 'a {
        self.temporary_probe(t, false)
    }

    async fn remove_temporary_replica(&self, t: &TemporaryReplica) -> Result<(), SimError> {
        let mut w = self.control("remove_temporary_replica").await?;
        let (part, node) = self.temporary_at(&w, t)?;
        let back = self
            .index(&w, &t.from)
            .ok_or_else(|| SimError::Unknown(t.from.to_string()))?;
        w.with_model(|m, w| m.remove_replica(w, part, node, back));
        Ok(())
    }

    fn temporary_replica_removed<'a>(
        &'a self,
        t: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = SimError> + 'a {
        self.temporary_probe(t, true)
    }
}
