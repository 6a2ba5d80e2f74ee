//! The planner: ordered waves from the live topology, and the one placement check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Procedure;
use crate::model::{Change, KnobScope, NodeId, NodeInfo, RoleKind, Topology};
use crate::policy::{Policy, Selection};
use crate::replicas::{AcceptedTable, Relief, TemporaryReplica};
use crate::safety::partition_is_safe;
pub use crate::safety::{
    UnsafeWave, outside_failure, outside_node_failure, wave_is_safe, wave_is_safe_with,
};
use crate::steps::{steps_for, with_temporaries};
pub use crate::wave::Wave;

/// A knob as the plan shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlannedKnob {
    /// The knob's name.
    pub name: String,
    /// Its value now, as read when planning.
    pub original: String,
    /// Its value during the rollout.
    pub during: String,
    /// When it is set and restored.
    pub scope: KnobScope,
    /// For wave knobs: the value between waves, if not the original.
    pub after_wave: Option<String>,
}

/// A selected node that the planner will not roll, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Blocked {
    /// The node.
    pub node: NodeId,
    /// Why it cannot be made safe.
    pub reason: String,
}

/// A whole rollout as it would run, computed without touching anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Plan {
    /// The cluster's name.
    pub cluster: String,
    /// The change.
    pub change: Change,
    /// The procedure.
    pub procedure: Procedure,
    /// The steps every node goes through, in order.
    pub steps: Vec<String>,
    /// The knobs and their values.
    pub knobs: Vec<PlannedKnob>,
    /// The waves, in order.
    pub waves: Vec<Wave>,
    /// Selected nodes that cannot be made safe.
    pub blocked: Vec<Blocked>,
    /// Selected nodes left out because they already run the change.
    pub already_done: Vec<NodeId>,
    /// Risks the plan takes that an operator should know of, such as a coordinator role with
    /// no standby.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Limits the backend put on the waves, with their reasons (such as the most data nodes a
    /// Pegasus meta tolerates down before it freezes).
    #[serde(default)]
    pub limits: Vec<String>,
    /// The temporary replicas the rollout adds (as placed on the topology read when
    /// planning; the engine places them again on the live one right before each drain).
    /// Each costs its node the memory of one partition until it is removed.
    #[serde(default)]
    pub temporary_replicas: Vec<TemporaryReplica>,
    /// Tables whose downtime the policy accepts, with the nodes that take them down.
    #[serde(default)]
    pub accepted_unavailable: Vec<AcceptedTable>,
    /// Each data node's drain and stop: the primaries or leaders it moves and the replicas
    /// it takes down, by table, in wave order.
    #[serde(default)]
    pub drains: Vec<crate::drains::NodeDrain>,
}

impl Plan {
    /// The plan as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serializes")
    }

    /// The steps each node of `wave` goes through (with the temporary-replica steps where
    /// the plan adds temporary replicas for one of its nodes).
    pub fn wave_steps(&self, wave: &Wave) -> Vec<String> {
        let steps = steps_for(self.procedure, wave.kind);
        if self
            .temporary_replicas
            .iter()
            .any(|t| wave.nodes.contains(&t.from))
        {
            with_temporaries(steps)
        } else {
            steps
        }
    }

    /// How many nodes the plan rolls.
    pub fn node_count(&self) -> usize {
        self.waves.iter().map(|w| w.nodes.len()).sum()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rollout plan for {}: {} of {} nodes in {} waves ({} procedure)",
            self.cluster,
            self.change.kind(),
            self.node_count(),
            self.waves.len(),
            match self.procedure {
                Procedure::HighAvailability => "high-availability",
                Procedure::Simple => "simple",
            }
        )?;
        writeln!(f, "steps per node: {}", self.steps.join(" -> "))?;
        for kind in [RoleKind::Coordinator, RoleKind::Stateless] {
            if let Some(w) = self.waves.iter().find(|w| w.kind == kind) {
                let steps = self.wave_steps(w);
                if steps != self.steps {
                    writeln!(f, "steps per {} node: {}", w.role, steps.join(" -> "))?;
                }
            }
        }
        if !self.knobs.is_empty() {
            writeln!(f, "knobs:")?;
            for k in &self.knobs {
                match (k.scope, &k.after_wave) {
                    (KnobScope::Rollout, _) => writeln!(
                        f,
                        "  {} = {} during the rollout, then back to {}",
                        k.name, k.during, k.original
                    )?,
                    (KnobScope::Wave, None) => writeln!(
                        f,
                        "  {} = {} during each data wave's restarts, back to {} after each",
                        k.name, k.during, k.original
                    )?,
                    (KnobScope::Wave, Some(after)) => writeln!(
                        f,
                        "  {} = {} during each data wave's restarts, {} after each, back to {} at the end",
                        k.name, k.during, after, k.original
                    )?,
                }
            }
        }
        for (i, w) in self.waves.iter().enumerate() {
            let names: Vec<&str> = w.nodes.iter().map(NodeId::as_str).collect();
            writeln!(f, "wave {:>3} [{}]: {}", i + 1, w.role, names.join(", "))?;
            if !w.why.is_empty() {
                writeln!(f, "           why: {}", w.why)?;
            }
            for d in self.drains.iter().filter(|d| w.nodes.contains(&d.node)) {
                writeln!(f, "           {d}")?;
            }
        }
        for n in &self.already_done {
            writeln!(f, "already done: {n}")?;
        }
        for b in &self.blocked {
            writeln!(f, "cannot be made safe: {}: {}", b.node, b.reason)?;
        }
        let mut by_from: BTreeMap<&NodeId, BTreeMap<&NodeId, usize>> = BTreeMap::new();
        for t in &self.temporary_replicas {
            *by_from
                .entry(&t.from)
                .or_default()
                .entry(&t.to)
                .or_default() += 1;
        }
        for (from, to) in by_from {
            let total: usize = to.values().sum();
            let spread: Vec<String> = to.iter().map(|(n, c)| format!("{n} x{c}")).collect();
            writeln!(
                f,
                "while {from} restarts: {total} temporary replica(s), each costing its node one \
                 partition's memory: {}; removed once it serves again",
                spread.join(", ")
            )?;
        }
        for a in &self.accepted_unavailable {
            let nodes: Vec<&str> = a.nodes.iter().map(NodeId::as_str).collect();
            writeln!(
                f,
                "accepted unavailable: table {} ({} partition(s)) while {} restart(s)",
                a.table,
                a.partitions,
                nodes.join(", ")
            )?;
        }
        for l in &self.limits {
            writeln!(f, "limit: {l}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Resolves a selection against the topology.
///
/// # Errors
/// The first name that matches no node or role, or a message when the selection is empty.
pub fn resolve_selection(
    topology: &Topology,
    selection: &Selection,
) -> Result<Vec<NodeId>, SelectionError> {
    resolve_selection_except(topology, selection, &retired(topology))
}

/// Data nodes that are down and hold no replica in any partition: decommissioned, or dead
/// and copied elsewhere long ago. Nothing they hold can go down, so no partition can get
/// worse through them; a rollout leaves them out of `All` and role selections (the plan warns
/// of each) and does not take them for failures outside its waves. A node named in the
/// selection is rolled all the same.
pub fn retired(topology: &Topology) -> Vec<NodeId> {
    let holding: BTreeSet<&NodeId> = topology
        .partitions
        .iter()
        .flat_map(|p| p.replicas.iter().map(|r| &r.node))
        .collect();
    topology
        .nodes
        .iter()
        .filter(|n| n.role.kind == RoleKind::Data && !n.alive && !holding.contains(&n.id))
        .map(|n| n.id.clone())
        .collect()
}

/// [`resolve_selection`] with the retired nodes given (a resume takes those the rollout
/// began with).
///
/// # Errors
/// A node or role the topology does not have, or a selection that names no node.
pub fn resolve_selection_except(
    topology: &Topology,
    selection: &Selection,
    retired: &[NodeId],
) -> Result<Vec<NodeId>, SelectionError> {
    let ids = match selection {
        Selection::All => topology
            .nodes
            .iter()
            .filter(|n| !retired.contains(&n.id))
            .map(|n| n.id.clone())
            .collect(),
        Selection::Nodes(ids) => {
            if let Some(missing) = ids.iter().find(|id| topology.node(id).is_none()) {
                return Err(SelectionError::Unknown(missing.to_string()));
            }
            ids.clone()
        }
        Selection::Roles(roles) => {
            if let Some(r) = roles
                .iter()
                .find(|r| !topology.nodes.iter().any(|n| &n.role.name == *r))
            {
                return Err(SelectionError::UnknownRole(r.clone()));
            }
            topology
                .nodes
                .iter()
                .filter(|n| roles.contains(&n.role.name) && !retired.contains(&n.id))
                .map(|n| n.id.clone())
                .collect()
        }
    };
    let ids: Vec<NodeId> = ids
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Err(SelectionError::Empty);
    }
    Ok(ids)
}

/// Why a selection could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectionError {
    /// Nothing selected.
    #[error("the selection is empty")]
    Empty,
    /// A node name matched nothing.
    #[error("unknown node {0}")]
    Unknown(String),
    /// A role name matched no node.
    #[error("unknown role {0}")]
    UnknownRole(String),
}

/// Builds the ordered waves for `selected` nodes.
///
/// Waves are packed against the placement as if every replica were up: whether a wave may go
/// down now is the engine's gate, which calls [`wave_is_safe`] on a fresh topology before each
/// wave. (A node caught down by a crashed rollout must not block its neighbours' plan.)
/// Roles go in ascending rank. Coordinators go one at a time, standbys first and the leader
/// last. Stateless nodes go up to `max_parallel` at a time. Data nodes are packed first-fit,
/// candidates ordered by zone then id, into waves of at most `max_parallel` nodes that pass
/// [`wave_is_safe`]. A data node that cannot pass even alone is returned as blocked.
pub fn build_waves(
    topology: &Topology,
    selected: &[NodeId],
    policy: &Policy,
) -> (Vec<Wave>, Vec<Blocked>) {
    build_waves_limited(topology, selected, policy, None, &Relief::default())
}

/// [`build_waves`] with at most `data_limit` data nodes in a wave (a backend's
/// [`Cluster::data_down_limit`](crate::Cluster::data_down_limit)), forgiving what `relief`
/// says (see [`wave_is_safe_with`]).
pub fn build_waves_limited(
    topology: &Topology,
    selected: &[NodeId],
    policy: &Policy,
    data_limit: Option<usize>,
    relief: &Relief,
) -> (Vec<Wave>, Vec<Blocked>) {
    let mut placement = topology.clone();
    for p in &mut placement.partitions {
        for r in &mut p.replicas {
            r.alive = true;
        }
    }
    let topology = &placement;
    let selected: BTreeSet<&NodeId> = selected.iter().collect();
    let mut by_role: BTreeMap<(u32, &str), Vec<&NodeInfo>> = BTreeMap::new();
    for n in topology.nodes.iter().filter(|n| selected.contains(&n.id)) {
        by_role
            .entry((n.role.rank, n.role.name.as_str()))
            .or_default()
            .push(n);
    }
    let max_parallel = policy.get_max_parallel().max(1);
    let mut waves = Vec::new();
    let mut blocked = Vec::new();
    for ((_, role), mut nodes) in by_role {
        let kind = nodes[0].role.kind;
        let wave = |nodes: Vec<NodeId>| Wave {
            role: role.to_string(),
            kind,
            nodes,
            why: String::new(),
        };
        match kind {
            RoleKind::Coordinator => {
                nodes.sort_by(|a, b| a.leader.cmp(&b.leader).then(a.id.cmp(&b.id)));
                waves.extend(nodes.iter().map(|n| wave(vec![n.id.clone()])));
            }
            RoleKind::Stateless => {
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                for chunk in nodes.chunks(max_parallel) {
                    waves.push(wave(chunk.iter().map(|n| n.id.clone()).collect()));
                }
            }
            RoleKind::Data => {
                nodes.sort_by(|a, b| a.zone.cmp(&b.zone).then(a.id.cmp(&b.id)));
                let packer = Packer::new(topology, policy.get_max_unavailable(), relief);
                let mut left: Vec<NodeId> = Vec::new();
                for n in nodes {
                    match packer.may_join(&BTreeSet::new(), &n.id) {
                        Ok(()) => left.push(n.id.clone()),
                        Err(reason) => blocked.push(Blocked {
                            node: n.id.clone(),
                            reason: reason.to_string(),
                        }),
                    }
                }
                let limit = match data_limit {
                    Some(l) if l.max(1) < max_parallel => Limit::Backend(l.max(1)),
                    _ => Limit::MaxParallel(max_parallel),
                };
                for (group, why) in packer.pack(left, limit) {
                    waves.push(Wave { why, ..wave(group) });
                }
            }
        }
    }
    (waves, blocked)
}

/// Applies the placement rule incrementally: nodes already in a wave passed it, so adding
/// `candidate` can only break the partitions `candidate` holds.
struct Packer<'t> {
    topology: &'t Topology,
    holds: BTreeMap<&'t NodeId, Vec<usize>>,
    max_unavailable: usize,
    min_serving: usize,
    relief: &'t Relief,
}

impl<'t> Packer<'t> {
    fn new(topology: &'t Topology, max_unavailable: usize, relief: &'t Relief) -> Self {
        Self {
            topology,
            holds: topology.placement(),
            max_unavailable,
            min_serving: topology.min_serving.max(1) as usize,
            relief,
        }
    }

    fn may_join(&self, wave: &BTreeSet<&NodeId>, candidate: &NodeId) -> Result<(), UnsafeWave> {
        let in_wave = |n: &NodeId| n == candidate || wave.contains(n);
        self.holds
            .get(candidate)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .try_for_each(|&i| {
                partition_is_safe(
                    &self.topology.partitions[i],
                    &in_wave,
                    self.max_unavailable,
                    self.min_serving,
                    self.relief,
                )
            })
    }

    /// First-fit packing of `left` into safe waves within `limit`, each with why it holds
    /// no more (the first node that had to wait, and what kept it out).
    fn pack(&self, mut left: Vec<NodeId>, limit: Limit) -> Vec<(Vec<NodeId>, String)> {
        let most = limit.most();
        let mut waves = Vec::new();
        while !left.is_empty() {
            let mut wave: Vec<NodeId> = Vec::new();
            let mut rest = Vec::new();
            let mut why = None;
            for n in left {
                let members: BTreeSet<&NodeId> = wave.iter().collect();
                if wave.len() >= most {
                    why.get_or_insert_with(|| format!("{n} waits: {}", limit.reason()));
                    rest.push(n);
                    continue;
                }
                match self.may_join(&members, &n) {
                    Ok(()) => wave.push(n),
                    Err(e) => {
                        why.get_or_insert_with(|| format!("{n} waits: {e}"));
                        rest.push(n);
                    }
                }
            }
            let why = why.unwrap_or_else(|| match wave.len() {
                1 => "the last node of its role".to_string(),
                n => format!("all {n} remaining nodes proven safe together from placement"),
            });
            waves.push((wave, why));
            left = rest;
        }
        waves
    }
}

/// What bounds a data wave's size besides placement.
#[derive(Clone, Copy)]
enum Limit {
    /// The policy's `max_parallel`.
    MaxParallel(usize),
    /// The backend's [`Cluster::data_down_limit`](crate::Cluster::data_down_limit), lower.
    Backend(usize),
}

impl Limit {
    fn most(self) -> usize {
        match self {
            Self::MaxParallel(n) | Self::Backend(n) => n.max(1),
        }
    }

    fn reason(self) -> String {
        match self {
            Self::MaxParallel(1) => "max_parallel is 1 (one node at a time)".to_string(),
            Self::MaxParallel(n) => format!("the wave is full at max_parallel {n}"),
            Self::Backend(n) => format!(
                "the wave is full at the backend's limit of {n} data node(s) down at once (see \"limit\" below)"
            ),
        }
    }
}

/// Risks of rolling `selected`: a [`retired`] node left out of it, and a coordinator role
/// with a single node, which has no standby, so that the cluster has no coordinator while
/// that node restarts.
pub fn warnings(topology: &Topology, selected: &[NodeId]) -> Vec<String> {
    let mut out: Vec<String> = retired(topology)
        .into_iter()
        .filter(|n| !selected.contains(n))
        .map(|n| {
            format!(
                "{n} is down and holds no replica (decommissioned?): it is left out of the plan \
                 and not watched; name it in the selection to roll it"
            )
        })
        .collect();
    let mut by_role: BTreeMap<&str, (usize, Vec<&NodeId>)> = BTreeMap::new();
    for n in &topology.nodes {
        if n.role.kind == RoleKind::Coordinator {
            let e = by_role.entry(n.role.name.as_str()).or_default();
            e.0 += 1;
            if selected.contains(&n.id) {
                e.1.push(&n.id);
            }
        }
    }
    out.extend(
        by_role
            .into_iter()
            .filter(|(_, (count, chosen))| *count == 1 && !chosen.is_empty())
            .map(|(role, (_, chosen))| {
                format!(
                    "{} is the only {role}: while it restarts the cluster has no {role}; \
                     make sure the restart is short, or add a standby first",
                    chosen[0]
                )
            }),
    );
    out
}
