//! The one placement rule (may these nodes be down at once?) and the reading of a failure
//! outside a wave. Public through [`crate::plan`].

use std::collections::BTreeSet;

use crate::model::{NodeId, NodeInfo, Partition, ReplicaRole, RoleKind, Topology};
use crate::replicas::Relief;

/// Why a wave may not go down ([`wave_is_safe`]): the first partition that would break the
/// rule, and how. Its text names the partition and, for a table whose downtime could be
/// accepted, how to accept it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeWave {
    /// Every replica of the partition is on the wave or already down.
    #[error("partition {partition} would have no replica left ({going} of {wanted} on this wave){}", accept_hint(.table.as_deref()))]
    NoReplicaLeft {
        /// The partition's id ([`Partition::id`]).
        partition: String,
        /// Its table, where the backend names one.
        table: Option<String>,
        /// Its replicas on the wave.
        going: usize,
        /// The replicas it should have ([`Partition::wanted`]).
        wanted: usize,
    },
    /// Fewer replicas would stay serving than the cluster needs to take writes
    /// ([`Topology::min_serving`]).
    #[error("partition {partition} would keep {serving} replica(s) serving, fewer than the {min_serving} it needs to take writes{}", accept_hint(.table.as_deref()))]
    TooFewServing {
        /// The partition's id.
        partition: String,
        /// Its table, where the backend names one.
        table: Option<String>,
        /// Replicas alive outside the wave (a temporary replica to come counts).
        serving: usize,
        /// [`Topology::min_serving`], at least 1.
        min_serving: usize,
    },
    /// More replicas would be down than the policy allows (`max_unavailable`).
    #[error("partition {partition} would have {down} of {wanted} replicas down (limit {limit})")]
    TooManyDown {
        /// The partition's id.
        partition: String,
        /// Its table, where the backend names one.
        table: Option<String>,
        /// Replicas that would be down: its wanted count less those up outside the wave.
        down: usize,
        /// The replicas it should have.
        wanted: usize,
        /// The policy's `max_unavailable`.
        limit: usize,
    },
}

impl UnsafeWave {
    /// The partition that would break the rule.
    pub fn partition(&self) -> &str {
        match self {
            Self::NoReplicaLeft { partition, .. }
            | Self::TooFewServing { partition, .. }
            | Self::TooManyDown { partition, .. } => partition,
        }
    }
}

/// How to roll a table's partitions anyway: accept their downtime by name.
fn accept_hint(table: Option<&str>) -> String {
    table
        .map(|t| {
            format!(
                " (table {t}; to roll anyway, accept its downtime by name: accept_unavailable, \
                 --accept-unavailable {t} on the command line)"
            )
        })
        .unwrap_or_default()
}

/// The single placement check: may the nodes of `wave` be down at the same time?
///
/// For every partition with a replica on a node of the wave, the replicas that would be down
/// (those already not serving plus those on the wave) must not exceed `max_unavailable`, and at
/// least [`Topology::min_serving`] replicas (at least one) must stay up.
/// Every place in the engine and the planner that decides "may these go down" calls this.
///
/// # Errors
/// [`UnsafeWave`]: the first partition that would break the rule, and how.
pub fn wave_is_safe(
    topology: &Topology,
    wave: &[NodeId],
    max_unavailable: usize,
) -> Result<(), UnsafeWave> {
    wave_is_safe_with(topology, wave, max_unavailable, &Relief::default())
}

/// [`wave_is_safe`], forgiving what `relief` says: partitions of accepted tables, and
/// single-replica partitions that get a temporary replica before the wave goes down.
///
/// # Errors
/// [`UnsafeWave`]: the first partition that would break the rule, and how.
pub fn wave_is_safe_with(
    topology: &Topology,
    wave: &[NodeId],
    max_unavailable: usize,
    relief: &Relief,
) -> Result<(), UnsafeWave> {
    let wave: BTreeSet<&NodeId> = wave.iter().collect();
    let min_serving = topology.min_serving.max(1) as usize;
    topology.partitions.iter().try_for_each(|p| {
        partition_is_safe(
            p,
            &|n| wave.contains(n),
            max_unavailable,
            min_serving,
            relief,
        )
    })
}

/// A failure outside `wave`: the first data node not in the wave that the control plane
/// does not see alive, or else the first primary or secondary replica on a node outside the
/// wave that does not serve (a node that came back without its data), with the reason. The
/// engine rides such a failure out (it releases the knobs that keep the cluster from
/// healing, waits until it is fully healthy, and drains again) rather than stop a node while
/// another is down. The replica part is for before the wave's stop, when the wave cannot have
/// caused it (after it, the wave's own rejoin may mark a displaced leader dead for a moment):
/// [`outside_node_failure`] is the node part alone.
pub fn outside_failure(topology: &Topology, wave: &[NodeId]) -> Option<(NodeId, String)> {
    outside_node_failure(&topology.nodes, wave).or_else(|| {
        topology.partitions.iter().find_map(|p| {
            p.replicas
                .iter()
                .find(|r| {
                    !r.alive
                        && matches!(r.role, ReplicaRole::Primary | ReplicaRole::Secondary)
                        && !wave.contains(&r.node)
                })
                .map(|r| {
                    (
                        r.node.clone(),
                        format!(
                            "partition {}'s replica on {} outside the wave does not serve",
                            p.id, r.node
                        ),
                    )
                })
        })
    })
}

/// The node part of [`outside_failure`], for a reading of the nodes alone
/// ([`Cluster::nodes`](crate::Cluster::nodes)).
pub fn outside_node_failure(nodes: &[NodeInfo], wave: &[NodeId]) -> Option<(NodeId, String)> {
    nodes
        .iter()
        .find(|n| n.role.kind == RoleKind::Data && !n.alive && !wave.contains(&n.id))
        .map(|n| {
            (
                n.id.clone(),
                format!(
                    "node {} ({}) outside the wave is not alive",
                    n.id, n.role.name
                ),
            )
        })
}

/// The rule itself, for one partition, with `in_wave` saying which nodes go down: the only
/// place it is written. [`wave_is_safe`] applies it to every partition; the planner applies
/// it to the partitions of the node it considers adding (the others cannot change).
pub(crate) fn partition_is_safe(
    p: &Partition,
    in_wave: &dyn Fn(&NodeId) -> bool,
    max_unavailable: usize,
    min_serving: usize,
    relief: &Relief,
) -> Result<(), UnsafeWave> {
    let going = p.replicas.iter().filter(|r| in_wave(&r.node)).count();
    if going == 0 || relief.accepts(p) {
        return Ok(());
    }
    let up_outside = p
        .replicas
        .iter()
        .filter(|r| r.alive && !in_wave(&r.node))
        .count()
        + usize::from(relief.needs_temporary(p, in_wave));
    let (partition, table) = (p.id.clone(), p.table.clone());
    let wanted = p.wanted as usize;
    let down = wanted.saturating_sub(up_outside);
    if up_outside == 0 {
        return Err(UnsafeWave::NoReplicaLeft {
            partition,
            table,
            going,
            wanted,
        });
    }
    if up_outside < min_serving {
        return Err(UnsafeWave::TooFewServing {
            partition,
            table,
            serving: up_outside,
            min_serving,
        });
    }
    if down > max_unavailable {
        return Err(UnsafeWave::TooManyDown {
            partition,
            table,
            down,
            wanted,
            limit: max_unavailable,
        });
    }
    Ok(())
}
