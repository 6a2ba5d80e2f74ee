//! What each data node's drain moves and what its stop takes down, as the plan shows it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{NodeId, Procedure, ReplicaRole, RoleKind, Topology};
use crate::wave::Wave;

/// One data node's share of its wave, from the topology read when planning: the primaries
/// (Pegasus) or leaders (OpenMLDB) its drain moves away, and the replicas its stop takes
/// down, both by table (`-` where the backend names no table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeDrain {
    /// The node.
    pub node: NodeId,
    /// Primaries or leaders the drain moves to another replica, by table.
    pub moves: BTreeMap<String, usize>,
    /// Replicas the node holds, which its stop takes down, by table.
    pub down: BTreeMap<String, usize>,
}

impl NodeDrain {
    /// All primaries or leaders it moves.
    pub fn moved(&self) -> usize {
        self.moves.values().sum()
    }

    /// All replicas its stop takes down.
    pub fn taken_down(&self) -> usize {
        self.down.values().sum()
    }
}

/// The drains of the data nodes of `waves`, in wave order; `moves` stays empty where the
/// procedure moves nothing (the simplified procedure).
pub(crate) fn drains(topology: &Topology, waves: &[Wave], procedure: Procedure) -> Vec<NodeDrain> {
    let moves_leaders = procedure == Procedure::HighAvailability;
    let mut by_node: BTreeMap<&NodeId, NodeDrain> = BTreeMap::new();
    for w in waves.iter().filter(|w| w.kind == RoleKind::Data) {
        for n in &w.nodes {
            by_node.insert(
                n,
                NodeDrain {
                    node: n.clone(),
                    moves: BTreeMap::new(),
                    down: BTreeMap::new(),
                },
            );
        }
    }
    for p in &topology.partitions {
        let table = p.table.as_deref().unwrap_or("-");
        for r in &p.replicas {
            let Some(d) = by_node.get_mut(&r.node) else {
                continue;
            };
            *d.down.entry(table.to_string()).or_default() += 1;
            if moves_leaders && r.role == ReplicaRole::Primary {
                *d.moves.entry(table.to_string()).or_default() += 1;
            }
        }
    }
    let mut out = Vec::new();
    for w in waves.iter().filter(|w| w.kind == RoleKind::Data) {
        for n in &w.nodes {
            if let Some(d) = by_node.remove(n) {
                out.push(d);
            }
        }
    }
    out
}

/// At most this many tables by name in a line; the rest are counted.
const TABLES_SHOWN: usize = 4;

fn by_table(counts: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<(&String, &usize)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = v
        .iter()
        .take(TABLES_SHOWN)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    if v.len() > TABLES_SHOWN {
        parts.push(format!("{} more tables", v.len() - TABLES_SHOWN));
    }
    parts.join(", ")
}

impl fmt::Display for NodeDrain {
    /// `NODE: moves N primaries/leaders (t1 4, t2 3); takes down M replicas (t1 9, t2 7)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.node)?;
        if !self.moves.is_empty() {
            write!(
                f,
                "moves {} primaries/leaders ({}); ",
                self.moved(),
                by_table(&self.moves)
            )?;
        }
        match self.taken_down() {
            0 => write!(f, "holds no replica"),
            n => write!(f, "takes down {n} replicas ({})", by_table(&self.down)),
        }
    }
}
