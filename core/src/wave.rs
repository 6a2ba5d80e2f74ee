//! A wave: nodes that go down together.

use serde::{Deserialize, Serialize};

use crate::model::{NodeId, RoleKind};

/// Nodes that go down together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Wave {
    /// The role of every node in the wave.
    pub role: String,
    /// The role's kind.
    pub kind: RoleKind,
    /// The nodes, in the order they are started.
    pub nodes: Vec<NodeId>,
    /// Why the wave holds these nodes and no more: for data nodes the first node that had to
    /// wait and the partition or limit that kept it out, or that every remaining node joined;
    /// empty where the role's rule alone decides (coordinators one at a time).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}
