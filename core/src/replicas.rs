//! Partitions whose only replica a wave would take down: the two choices the OpenMLDB seed
//! offers for single-replica tables (`openmldb_ops.py pre-upgrade`, with or without
//! `--allow_single_replica`).
//!
//! - A **temporary replica**: before the drain the engine adds a replica of each such
//!   partition on another data node ([`TemporaryReplicas::add_temporary_replica`]), waits until it has
//!   caught up, lets the drain move the leadership to it, and removes it once the restarted
//!   node serves its own replica again. Every one is journaled before it is added, so `abort`
//!   and a resume remove it.
//! - **Accepted downtime**: the operator names tables whose partitions may be unavailable
//!   while their node restarts ([`Policy::accept_unavailable`](crate::Policy::accept_unavailable));
//!   the placement rule lets them go and the plan lists them table by table.
//!
//! [`TemporaryReplicas::add_temporary_replica`]: crate::TemporaryReplicas::add_temporary_replica

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{NodeId, Partition, RoleKind, Topology};
use crate::policy::{Policy, PolicyError};

/// A replica the rollout adds so that a single-replica partition keeps serving while the node
/// that holds it restarts, and removes once that node serves it again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TemporaryReplica {
    /// The partition's id, as in [`Partition::id`].
    pub partition: String,
    /// Its table, when the backend names it.
    pub table: Option<String>,
    /// The node that restarts, holding the partition's only replica.
    pub from: NodeId,
    /// The node that holds the temporary replica meanwhile.
    pub to: NodeId,
}

impl TemporaryReplica {
    /// A temporary replica of `partition` on `to` while `from` restarts.
    pub fn new(partition: impl Into<String>, from: NodeId, to: NodeId) -> Self {
        Self {
            partition: partition.into(),
            table: None,
            from,
            to,
        }
    }

    /// Names the partition's table.
    #[must_use]
    pub fn table(mut self, table: Option<String>) -> Self {
        self.table = table;
        self
    }
}

impl std::fmt::Display for TemporaryReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "temporary replica of partition {} on {} (while {} restarts)",
            self.partition, self.to, self.from
        )
    }
}

/// What the placement rule forgives a partition: nothing by default.
///
/// - `accepted`: the tables whose downtime the operator accepted by name; their partitions
///   never hold a wave back.
/// - `temporary`: a single-replica partition (`wanted` 1) counts as keeping one replica up,
///   because the engine adds a temporary one before its node goes down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Relief {
    /// Tables whose downtime is accepted.
    pub accepted: BTreeSet<String>,
    /// Whether single-replica partitions get temporary replicas.
    pub temporary: bool,
}

impl Relief {
    /// The relief `policy` asks for, given whether the backend adds temporary replicas
    /// ([`Cluster::temporary_replicas`](crate::Cluster::temporary_replicas) is `Some`).
    pub fn new(policy: &Policy, backend_adds_replicas: bool) -> Self {
        Self {
            accepted: policy.get_accept_unavailable().iter().cloned().collect(),
            temporary: policy.get_temporary_replicas() && backend_adds_replicas,
        }
    }

    /// Only the accepted tables: what still holds once the temporary replicas exist.
    pub fn accepted_only(&self) -> Self {
        Self {
            accepted: self.accepted.clone(),
            temporary: false,
        }
    }

    /// Whether `p`'s table is accepted as unavailable.
    pub fn accepts(&self, p: &Partition) -> bool {
        p.table.as_ref().is_some_and(|t| self.accepted.contains(t))
    }

    /// Whether `p` gets a temporary replica when its replicas on `in_wave` nodes go down.
    pub fn needs_temporary(&self, p: &Partition, in_wave: &dyn Fn(&NodeId) -> bool) -> bool {
        self.temporary
            && p.wanted == 1
            && !self.accepts(p)
            && p.replicas.iter().any(|r| in_wave(&r.node))
            && !p.replicas.iter().any(|r| r.alive && !in_wave(&r.node))
    }
}

/// Checks that every accepted table exists in `topology`.
///
/// # Errors
/// [`PolicyError::UnknownAcceptedTable`]: the first unknown name, with the tables the
/// cluster has.
pub fn check_accepted(topology: &Topology, policy: &Policy) -> Result<(), PolicyError> {
    let tables: BTreeSet<&str> = topology
        .partitions
        .iter()
        .filter_map(|p| p.table.as_deref())
        .collect();
    match policy
        .get_accept_unavailable()
        .iter()
        .find(|t| !tables.contains(t.as_str()))
    {
        None => Ok(()),
        Some(t) => Err(PolicyError::UnknownAcceptedTable {
            table: t.clone(),
            known: tables.into_iter().map(str::to_string).collect(),
        }),
    }
}

/// Where the temporary replicas go while `wave` is down: one for every partition that
/// [`Relief::needs_temporary`] and has none in `open` yet, each on the alive data node outside
/// the wave that holds no replica of it and carries the fewest temporary replicas (those in
/// `open` included), then the fewest replicas, then the smallest id. `limit` caps the
/// temporary replicas one node holds at once (its memory: one partition each).
///
/// # Errors
/// A partition with no room anywhere, naming it, its node and why each candidate is out.
pub fn place_temporary_replicas(
    topology: &Topology,
    wave: &[NodeId],
    relief: &Relief,
    limit: Option<usize>,
    open: &[TemporaryReplica],
) -> Result<Vec<TemporaryReplica>, String> {
    let in_wave = |n: &NodeId| wave.contains(n);
    let candidates: Vec<&NodeId> = topology
        .nodes
        .iter()
        .filter(|n| n.role.kind == RoleKind::Data && n.alive && !in_wave(&n.id))
        .map(|n| &n.id)
        .collect();
    let mut held: BTreeMap<&NodeId, usize> = BTreeMap::new();
    for p in &topology.partitions {
        for r in &p.replicas {
            *held.entry(&r.node).or_default() += 1;
        }
    }
    let mut temps: BTreeMap<&NodeId, usize> = BTreeMap::new();
    for t in open {
        *temps.entry(&t.to).or_default() += 1;
    }
    let mut placed: Vec<TemporaryReplica> = Vec::new();
    for p in &topology.partitions {
        if !relief.needs_temporary(p, &in_wave) || open.iter().any(|t| t.partition == p.id) {
            continue;
        }
        let Some(from) = p.replicas.iter().find(|r| in_wave(&r.node)) else {
            continue;
        };
        let room = |n: &&NodeId| {
            !p.replicas.iter().any(|r| &r.node == *n)
                && limit.is_none_or(|l| temps.get(n).copied().unwrap_or(0) < l)
        };
        let best = candidates.iter().copied().filter(room).min_by_key(|n| {
            (
                temps.get(n).copied().unwrap_or(0),
                held.get(n).copied().unwrap_or(0),
                *n,
            )
        });
        let Some(to) = best else {
            let why = if candidates.is_empty() {
                "no other data node is alive".to_string()
            } else {
                format!(
                    "every other alive data node ({}) already holds {} temporary replica(s), \
                     the temporary_replica_limit",
                    candidates
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    limit.unwrap_or(0)
                )
            };
            return Err(format!(
                "no room for a temporary replica of single-replica partition {}{} while {} \
                 restarts: {why}; raise the limit, add a data node, or accept the table's \
                 downtime by name (accept_unavailable)",
                p.id,
                p.table
                    .as_ref()
                    .map(|t| format!(" (table {t})"))
                    .unwrap_or_default(),
                from.node,
            ));
        };
        *temps.entry(to).or_default() += 1;
        placed.push(
            TemporaryReplica::new(p.id.clone(), from.node.clone(), to.clone())
                .table(p.table.clone()),
        );
    }
    Ok(placed)
}

/// A table whose downtime the operator accepted, as the plan lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AcceptedTable {
    /// The table.
    pub table: String,
    /// How many of its partitions go down with some node's restart.
    pub partitions: usize,
    /// The nodes whose restart takes some of its partitions down.
    pub nodes: Vec<NodeId>,
}

/// For each accepted table, the nodes of `selected` whose restart takes one of its
/// partitions down (it keeps no replica up elsewhere, or fewer than it needs to take
/// writes), with how many of its partitions: what the plan lists table by table.
pub fn accepted_downtime(
    topology: &Topology,
    selected: &[NodeId],
    relief: &Relief,
) -> Vec<AcceptedTable> {
    let min_serving = topology.min_serving.max(1) as usize;
    let mut out: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&NodeId>)> = BTreeMap::new();
    for p in topology.partitions.iter().filter(|p| relief.accepts(p)) {
        for r in p.replicas.iter().filter(|r| selected.contains(&r.node)) {
            let up_elsewhere = p
                .replicas
                .iter()
                .filter(|o| o.node != r.node && o.alive)
                .count();
            if up_elsewhere < min_serving.min(p.wanted as usize).max(1) {
                let table = p.table.as_deref().unwrap_or_default();
                let e = out.entry(table).or_default();
                e.0.insert(p.id.as_str());
                e.1.insert(&r.node);
            }
        }
    }
    out.into_iter()
        .map(|(t, (parts, nodes))| AcceptedTable {
            table: t.to_string(),
            partitions: parts.len(),
            nodes: nodes.into_iter().cloned().collect(),
        })
        .collect()
}
