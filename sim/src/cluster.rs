//! [`SimCluster`] and [`SimNode`]: the core traits over the simulated world.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rollout_core::{
    ApplyRecord, Change, Cluster, ConfigEdit, ErrorClass, Health, HealthProbe, Knob, Node, NodeId,
    NodeInfo, NodeStatus, Partition, Procedure, Replica, ReplicaRole, Role, RoleKind, Topology,
};
use tokio::time::Instant;

use crate::config::Flavor;
use crate::monitor::Monitor;
use crate::world::{Ev, Op, Rep, Us, World, us};

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
}

/// A simulated cluster: implements [`Cluster`] over a deterministic world in tokio time.
///
/// Clones share the world. Build one with [`SimBuilder`](crate::SimBuilder).
#[derive(Clone)]
pub struct SimCluster {
    world: Arc<Mutex<World>>,
    start: Instant,
    name: Arc<str>,
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
}

impl SimCluster {
    pub(crate) fn new(world: World, name: String) -> Self {
        Self {
            world: Arc::new(Mutex::new(world)),
            start: Instant::now(),
            name: name.into(),
        }
    }

    fn now_us(&self) -> Us {
        us(Instant::now().saturating_duration_since(self.start))
    }

    /// The world, advanced to now.
    fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.now_us();
        w.advance(now);
        w
    }

    /// The world, advanced to now, after a possible injected transient failure.
    /// Every control-plane call is a yield point, as a network call is: an orchestrator
    /// dropped between two calls (the `orchestrator-crash` fault) stops right there.
    async fn control(&self, call: &'static str) -> Result<MutexGuard<'_, World>, SimError> {
        tokio::task::yield_now().await;
        let mut w = self.world();
        if w.transient() {
            return Err(SimError::Transient(call));
        }
        Ok(w)
    }

    fn index(&self, w: &World, id: &NodeId) -> Option<u32> {
        w.nodes.iter().position(|n| &n.id == id).map(|i| i as u32)
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
        let w = self.world();
        let now = w.now;
        // Close the open unavailability intervals at this instant, without ending them.
        let open: u64 = w
            .parts
            .iter()
            .filter_map(|p| p.unavailable_since.map(|s| now - s))
            .sum();
        let mut monitor = w.mon.clone();
        monitor.unavailable_us += open;
        Truth {
            monitor,
            restarts: w.nodes.iter().map(|n| (n.id.clone(), n.restarts)).collect(),
            crashes: w.nodes.iter().map(|n| (n.id.clone(), n.crashes)).collect(),
            knobs_restored: w.knobs == w.knob_defaults,
            knobs: w.knobs.clone(),
            elapsed: std::time::Duration::from_micros(now),
        }
    }

    fn probe(&self, node: Option<&NodeId>, kind: Kind) -> SimProbe<'_> {
        let w = self.world();
        let node = node.and_then(|id| self.index(&w, id));
        SimProbe {
            sim: self,
            node,
            kind,
            created: w.now,
            done: AtomicBool::new(false),
        }
    }
}

/// A process of a simulated cluster.
#[derive(Clone)]
pub struct SimNode {
    sim: SimCluster,
    index: u32,
    id: NodeId,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode").field("id", &self.id).finish()
    }
}

fn digest(edits: &[ConfigEdit]) -> String {
    // FNV-1a over the edits' JSON: stable across runs and platforms.
    let text = serde_json::to_string(edits).expect("edits always serialize");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn config_files(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Pegasus => &["config.ini"],
        Flavor::OpenMldb => &[
            "conf/nameserver.flags",
            "conf/tablet.flags",
            "conf/apiserver.flags",
            "conf/taskmanager.properties",
        ],
    }
}

impl Node for SimNode {
    type Error = SimError;

    fn id(&self) -> &NodeId {
        &self.id
    }

    async fn stop(&self) -> Result<(), SimError> {
        let mut w = self.sim.control("stop").await?;
        let n = &w.nodes[self.index as usize];
        if n.running {
            let boot = n.boot;
            let d = us(w.t.stop);
            w.after(
                d,
                Ev::StopDone {
                    node: self.index,
                    boot,
                },
            );
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), SimError> {
        let mut w = self.sim.control("start").await?;
        if !w.nodes[self.index as usize].running {
            w.nodes[self.index as usize].restarts += 1;
            w.launch(self.index);
        }
        Ok(())
    }

    async fn status(&self) -> Result<NodeStatus, SimError> {
        let w = self.sim.world();
        let n = &w.nodes[self.index as usize];
        Ok(NodeStatus {
            running: n.running,
            boot: Some(n.boot.to_string()),
            version: Some(n.version.clone()),
            config_digest: Some(n.digest.clone()),
        })
    }

    async fn apply(&self, change: &Change) -> Result<ApplyRecord, SimError> {
        let mut w = self.sim.control("apply").await?;
        let n = &mut w.nodes[self.index as usize];
        if n.running {
            return Err(SimError::Running(self.id.clone()));
        }
        let (version, digest) = n
            .staged
            .clone()
            .unwrap_or_else(|| (n.version.clone(), n.digest.clone()));
        let backup = BTreeMap::from([
            ("version".to_string(), n.version.clone()),
            ("digest".to_string(), n.digest.clone()),
        ]);
        n.staged = match change {
            Change::Restart => None,
            Change::Upgrade { version: v } => Some((v.clone(), digest)),
            Change::Config { edits } => Some((version, self::digest(edits))),
        };
        Ok(ApplyRecord {
            node: self.id.clone(),
            backup,
        })
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), SimError> {
        let mut w = self.sim.control("revert").await?;
        let n = &mut w.nodes[self.index as usize];
        if n.running {
            return Err(SimError::Running(self.id.clone()));
        }
        let get = |k: &str| record.backup.get(k).cloned().unwrap_or_default();
        n.staged = Some((get("version"), get("digest")));
        Ok(())
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, SimError> {
        let w = self.sim.world();
        let n = &w.nodes[self.index as usize];
        Ok(match change {
            Change::Restart => false,
            Change::Upgrade { version } => &n.version == version,
            Change::Config { edits } => n.digest == digest(edits),
        })
    }
}

impl Cluster for SimCluster {
    type Node = SimNode;
    type Error = SimError;

    fn name(&self) -> &str {
        &self.name
    }

    async fn topology(&self) -> Result<Topology, SimError> {
        let w = self.control("topology").await?;
        let leader = w.leader;
        let nodes = w
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo {
                id: n.id.clone(),
                role: Role::new(n.role, n.kind, n.rank),
                zone: n.zone.clone(),
                alive: n.up() && (n.kind != RoleKind::Data || n.attached),
                leader: leader == Some(i as u32) || (n.role == "taskmanager" && n.up()),
                version: Some(n.version.clone()),
            })
            .collect();
        let prefix = match w.flavor {
            Flavor::Pegasus => "1.",
            Flavor::OpenMldb => "t1.",
        };
        let partitions = w
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| Partition {
                id: format!("{prefix}{i}"),
                wanted: u32::from(p.wanted),
                replicas: p
                    .replicas
                    .iter()
                    .map(|r| {
                        let up = w.nodes[r.node as usize].up() && r.loaded;
                        Replica {
                            node: w.nodes[r.node as usize].id.clone(),
                            role: match r.role {
                                Rep::Primary => ReplicaRole::Primary,
                                Rep::Learner => ReplicaRole::Learner,
                                Rep::Secondary | Rep::Inactive => ReplicaRole::Secondary,
                            },
                            alive: up && r.role != Rep::Inactive,
                        }
                    })
                    .collect(),
            })
            .collect();
        let min_serving = match w.flavor {
            Flavor::Pegasus => 2,
            Flavor::OpenMldb => 1,
        };
        Ok(Topology {
            nodes,
            partitions,
            min_serving,
        })
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

    fn check_change(&self, change: &Change) -> Result<(), String> {
        change.validate()?;
        if let Change::Config { edits } = change {
            let files = config_files(self.flavor());
            for e in edits {
                let (ConfigEdit::Set { file, .. } | ConfigEdit::Unset { file, .. }) = e;
                if !files.contains(&file.as_str()) {
                    return Err(format!(
                        "unknown config file {file:?}; this cluster has {}",
                        files.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        match (self.flavor(), procedure) {
            (Flavor::Pegasus, Procedure::HighAvailability) => vec![
                Knob::rollout("meta_level", "steady"),
                Knob::rollout("meta.lb.assign_delay_ms", "3600000"),
                Knob::rollout("meta.lb.add_secondary_enable_flow_control", "true"),
                Knob::wave("meta.lb.add_secondary_max_count_for_one_node", "0").then("100"),
            ],
            (Flavor::Pegasus, Procedure::Simple) => vec![Knob::rollout("meta_level", "steady")],
            (Flavor::OpenMldb, Procedure::HighAvailability) => {
                vec![Knob::rollout("auto_failover", "false")]
            }
            (Flavor::OpenMldb, Procedure::Simple) => Vec::new(),
        }
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
        w.nodes[i as usize].draining = true;
        if w.flavor == Flavor::OpenMldb {
            // pre-upgrade, fenced: for each partition it leads, a ChangeLeader op that first
            // turns the old leader into a follower (it rejects writes, clients retry), then
            // promotes a follower whose offset matches.
            let led: Vec<u32> = w.nodes[i as usize]
                .parts
                .iter()
                .copied()
                .filter(|&p| {
                    w.parts[p as usize]
                        .replicas
                        .iter()
                        .any(|r| r.node == i && r.role == Rep::Primary)
                })
                .collect();
            w.nodes[i as usize].led = led.clone();
            for p in led {
                w.enqueue(Op::ChangeLeader {
                    part: p,
                    from: i,
                    to: None,
                    fenced: true,
                });
            }
        }
        w.changed();
        Ok(())
    }

    fn drained(&self, node: &NodeId) -> impl HealthProbe<Error = SimError> + '_ {
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

    fn quiesced(&self, node: &NodeId) -> impl HealthProbe<Error = SimError> + '_ {
        self.probe(Some(node), Kind::Quiesced)
    }

    fn stopped(&self, node: &NodeId) -> impl HealthProbe<Error = SimError> + '_ {
        self.probe(Some(node), Kind::Stopped)
    }

    fn ready(&self, node: &NodeId) -> impl HealthProbe<Error = SimError> + '_ {
        self.probe(Some(node), Kind::Ready)
    }

    async fn rejoin(&self, node: &NodeId) -> Result<(), SimError> {
        let mut w = self.control("rejoin").await?;
        let Some(i) = self.index(&w, node) else {
            return Ok(());
        };
        if !w.nodes[i as usize].draining && w.nodes[i as usize].led.is_empty() {
            return Ok(());
        }
        if !w.nodes[i as usize].up() {
            // Not back yet: nothing to give it; `rejoined` keeps waiting.
            return Ok(());
        }
        w.nodes[i as usize].draining = false;
        if w.flavor == Flavor::OpenMldb && w.nodes[i as usize].kind == RoleKind::Data {
            // A drain that never finished (the node was skipped) must not block the queues.
            w.cancel_moves_from(i);
            // recoverdata for every replica not loaded, then post-upgrade: leaders back.
            if w.nodes[i as usize].up() {
                w.recover_replicas(i);
            }
            let led = std::mem::take(&mut w.nodes[i as usize].led);
            for p in led {
                let from = w.parts[p as usize]
                    .replicas
                    .iter()
                    .find(|r| r.role == Rep::Primary)
                    .map(|r| r.node);
                if let Some(from) = from.filter(|&f| f != i) {
                    w.enqueue(Op::ChangeLeader {
                        part: p,
                        from,
                        to: Some(i),
                        fenced: true,
                    });
                }
            }
        }
        w.changed();
        Ok(())
    }

    fn rejoined(&self, node: &NodeId) -> impl HealthProbe<Error = SimError> + '_ {
        self.probe(Some(node), Kind::Rejoined)
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = SimError> + '_ {
        self.probe(None, Kind::FullyHealthy)
    }

    fn safe_to_stop(&self, node: &NodeId) -> impl HealthProbe<Error = SimError> + '_ {
        self.probe(Some(node), Kind::SafeToStop)
    }

    fn classify(&self, error: &SimError) -> ErrorClass {
        match error {
            SimError::Transient(_) => ErrorClass::Transient,
            SimError::NoLeader => ErrorClass::NotSafeYet,
            SimError::UnknownKnob(_) | SimError::Running(_) => ErrorClass::Fatal,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Drained,
    Quiesced,
    Stopped,
    Ready,
    Rejoined,
    FullyHealthy,
    SafeToStop,
}

/// A probe over the simulated world. Its `wake` completes at the next scheduled cluster
/// event, so waits end at the instant their condition first holds.
struct SimProbe<'a> {
    sim: &'a SimCluster,
    node: Option<u32>,
    kind: Kind,
    created: Us,
    done: AtomicBool,
}

impl SimProbe<'_> {
    fn eval(&self, w: &World) -> Health {
        let name = |i: u32| w.nodes[i as usize].id.to_string();
        let Some(i) = self.node.or(match self.kind {
            Kind::FullyHealthy => Some(u32::MAX),
            _ => None,
        }) else {
            return Health::failed("the node is not in this cluster");
        };
        match self.kind {
            Kind::FullyHealthy => fully_healthy(w),
            Kind::SafeToStop => {
                if w.leader.is_none() {
                    Health::waiting("no coordinator leader")
                } else {
                    Health::Healthy
                }
            }
            Kind::Drained => {
                let n = &w.nodes[i as usize];
                if n.kind != RoleKind::Data {
                    return Health::Healthy;
                }
                let busy = n.parts.iter().find(|&&p| {
                    w.parts[p as usize].replicas.iter().any(|r| {
                        r.node == i
                            && match w.flavor {
                                Flavor::Pegasus => matches!(r.role, Rep::Primary | Rep::Secondary),
                                Flavor::OpenMldb => r.role == Rep::Primary,
                            }
                    })
                });
                match busy {
                    Some(p) => Health::waiting(format!(
                        "node {} still serves partition {p} as a member",
                        name(i)
                    )),
                    None => match w.pending_op(Some(i)) {
                        Some(op) => Health::Waiting(op),
                        None => Health::Healthy,
                    },
                }
            }
            Kind::Quiesced => {
                let n = &w.nodes[i as usize];
                match n.flush_done {
                    _ if n.kind != RoleKind::Data => Health::Healthy,
                    Some(t) if t <= w.now => Health::Healthy,
                    Some(_) => Health::waiting(format!("node {} is still flushing", name(i))),
                    None => {
                        Health::waiting(format!("node {} has not been asked to flush", name(i)))
                    }
                }
            }
            Kind::Stopped => {
                let n = &w.nodes[i as usize];
                if n.running {
                    Health::waiting(format!("node {} still runs", name(i)))
                } else if w.flavor == Flavor::OpenMldb && n.kind == RoleKind::Data && !n.offline {
                    Health::waiting(format!(
                        "tablet {} still has a ZooKeeper session; the nameserver has not seen it offline",
                        name(i)
                    ))
                } else {
                    Health::Healthy
                }
            }
            Kind::Ready => {
                let n = &w.nodes[i as usize];
                if !n.up() {
                    Health::waiting(format!("node {} is not serving yet", name(i)))
                } else if n.kind != RoleKind::Stateless && !n.attached {
                    Health::waiting(format!(
                        "node {} is not attached to the coordinator",
                        name(i)
                    ))
                } else if n.kind == RoleKind::Coordinator
                    && n.role != "taskmanager"
                    && w.leader.is_none()
                {
                    Health::waiting("no coordinator leader has been elected")
                } else {
                    Health::Healthy
                }
            }
            Kind::Rejoined => {
                let n = &w.nodes[i as usize];
                if n.kind != RoleKind::Data {
                    return Health::Healthy;
                }
                let missing = n.parts.iter().find(|&&p| {
                    w.parts[p as usize].replicas.iter().any(|r| {
                        r.node == i
                            && !(r.loaded && matches!(r.role, Rep::Primary | Rep::Secondary))
                    })
                });
                match missing {
                    Some(p) => Health::waiting(format!(
                        "node {} has not got partition {p} back yet",
                        name(i)
                    )),
                    None => match w.pending_op(Some(i)) {
                        Some(op) => Health::Waiting(op),
                        None => Health::Healthy,
                    },
                }
            }
        }
    }
}

fn fully_healthy(w: &World) -> Health {
    if w.leader.is_none() {
        return Health::waiting("no coordinator leader");
    }
    if let Some(n) = w
        .nodes
        .iter()
        .find(|n| !n.up() || (n.kind == RoleKind::Data && !n.attached))
    {
        return Health::waiting(format!("node {} is not alive", n.id));
    }
    if let Some(op) = w.pending_op(None) {
        return Health::Waiting(op);
    }
    if w.flavor == Flavor::OpenMldb && w.knob("auto_failover") == "false" {
        // With auto failover off nothing reloads a tablet that restarted on its own.
        let stranded = w.nodes.iter().enumerate().find(|(i, n)| {
            n.kind == RoleKind::Data
                && !n.draining
                && n.led.is_empty()
                && n.parts.iter().any(|&p| {
                    w.parts[p as usize]
                        .replicas
                        .iter()
                        .any(|r| r.node == *i as u32 && !r.loaded)
                })
        });
        if let Some((_, n)) = stranded {
            return Health::failed(format!(
                "tablet {} restarted outside the rollout and auto_failover is off, so nothing \
                 reloads its replicas: recover them (recoverdata) or abort to turn \
                 auto_failover back on",
                n.id
            ));
        }
    }
    if let Some(&p) = w.unhealthy.iter().next() {
        let part = &w.parts[p as usize];
        return Health::waiting(format!(
            "partition {p} has {}/{} replicas serving",
            w.members(p),
            part.wanted
        ));
    }
    if let Some(n) = w.nodes.iter().find(|n| n.draining) {
        return Health::waiting(format!("node {} is drained", n.id));
    }
    Health::Healthy
}

impl HealthProbe for SimProbe<'_> {
    type Error = SimError;

    async fn check(&self) -> Result<Health, SimError> {
        let mut w = self.sim.world();
        let health = self.eval(&w);
        if health.is_healthy() && !self.done.swap(true, Ordering::Relaxed) {
            let since = self.created.max(w.last_change);
            w.mon.slack_us += w.now.saturating_sub(since);
        }
        Ok(health)
    }

    async fn wake(&self) {
        let next = self.sim.world().next_event();
        match next {
            Some(t) => {
                tokio::time::sleep_until(self.sim.start + std::time::Duration::from_micros(t))
                    .await;
            }
            None => std::future::pending().await,
        }
    }
}
