//! The cluster model: nodes, roles, partitions, changes, knobs and health.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity: its canonical `host:port`. Cheap to clone (shared text).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(std::sync::Arc<str>);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl NodeId {
    /// Wraps an address such as `10.0.0.7:34801`.
    pub fn new(addr: impl Into<String>) -> Self {
        Self(addr.into().into())
    }

    /// An empty id, for internal placeholders.
    pub(crate) fn empty() -> Self {
        Self("".into())
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// What kind of process a role is, which decides how the engine treats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleKind {
    /// Leader-elected, holds no user data (Pegasus meta, OpenMLDB nameserver).
    /// Standbys are rolled first and the leader last.
    Coordinator,
    /// Holds partition replicas (Pegasus replica server, OpenMLDB tablet).
    Data,
    /// Holds no state (Pegasus collector, OpenMLDB apiserver).
    Stateless,
}

/// A backend-defined role, such as `replica`, `meta` or `tablet`.
///
/// Roles are rolled in ascending `rank`, which the backend gives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Role {
    /// The backend's name for the role.
    pub name: String,
    /// How the engine treats nodes of this role.
    pub kind: RoleKind,
    /// Position in the roll order: lower ranks roll first.
    pub rank: u32,
}

impl Role {
    /// A role with its name, kind and rank in the roll order.
    pub fn new(name: impl Into<String>, kind: RoleKind, rank: u32) -> Self {
        Self {
            name: name.into(),
            kind,
            rank,
        }
    }
}

/// One live node as the control plane sees it.
///
/// ```
/// use rollout_core::{NodeInfo, Role, RoleKind};
///
/// let meta = NodeInfo::new("10.0.0.1:34601", Role::new("meta", RoleKind::Coordinator, 1))
///     .leader(true)
///     .version("2.5.0");
/// assert!(meta.alive && meta.leader);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node's address.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Zone or rack, when known. Only used to order candidates; safety comes from placement.
    pub zone: Option<String>,
    /// Whether the control plane considers it alive.
    pub alive: bool,
    /// For coordinators: whether it is the elected leader.
    pub leader: bool,
    /// The version it reports, when known.
    pub version: Option<String>,
}

impl NodeInfo {
    /// An alive node of `role`, not a leader, with no zone or version.
    pub fn new(id: impl Into<NodeId>, role: Role) -> Self {
        Self {
            id: id.into(),
            role,
            zone: None,
            alive: true,
            leader: false,
            version: None,
        }
    }

    /// Sets its zone or rack.
    #[must_use]
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets whether the control plane considers it alive.
    #[must_use]
    pub fn alive(mut self, alive: bool) -> Self {
        self.alive = alive;
        self
    }

    /// Sets whether it is the elected leader (coordinators).
    #[must_use]
    pub fn leader(mut self, leader: bool) -> Self {
        self.leader = leader;
        self
    }

    /// Sets the version it reports.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

/// A replica's role inside its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaRole {
    /// Serves reads and writes (Pegasus primary, OpenMLDB leader).
    Primary,
    /// Follows the primary.
    Secondary,
    /// Being built or caught up; not yet counted as a member.
    Learner,
}

/// One replica of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Replica {
    /// The node that holds it.
    pub node: NodeId,
    /// Its role.
    pub role: ReplicaRole,
    /// Whether it currently serves (its node is up and the replica is active).
    pub alive: bool,
}

impl Replica {
    /// An alive replica of `role` on `node`.
    pub fn new(node: impl Into<NodeId>, role: ReplicaRole) -> Self {
        Self {
            node: node.into(),
            role,
            alive: true,
        }
    }

    /// Sets whether it serves.
    #[must_use]
    pub fn alive(mut self, alive: bool) -> Self {
        self.alive = alive;
        self
    }
}

/// A partition and its replica placement.
///
/// ```
/// use rollout_core::{Partition, Replica, ReplicaRole};
///
/// let p = Partition::new("1.0", 3, vec![
///     Replica::new("a:1", ReplicaRole::Primary),
///     Replica::new("b:1", ReplicaRole::Secondary),
///     Replica::new("c:1", ReplicaRole::Secondary).alive(false),
/// ]);
/// assert_eq!(p.serving(), 2);
/// assert!(!p.is_fully_healthy());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Partition {
    /// The backend's partition id, such as `3.17` (table 3, partition 17).
    pub id: String,
    /// How many replicas the partition should have.
    pub wanted: u32,
    /// Where its replicas are.
    pub replicas: Vec<Replica>,
    /// The table (Pegasus app, OpenMLDB table) it belongs to, where the backend knows it:
    /// the name an operator uses to accept a table's downtime.
    #[serde(default)]
    pub table: Option<String>,
}

impl Partition {
    /// A partition `id` that should have `wanted` replicas, placed as `replicas` says.
    pub fn new(id: impl Into<String>, wanted: u32, replicas: Vec<Replica>) -> Self {
        Self {
            id: id.into(),
            wanted,
            replicas,
            table: None,
        }
    }

    /// Names the table the partition belongs to.
    #[must_use]
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = Some(name.into());
        self
    }

    /// Replicas that are alive and are full members (primary or secondary).
    pub fn serving(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.alive && r.role != ReplicaRole::Learner)
            .count()
    }

    /// Whether the partition has a live primary and all wanted members.
    pub fn is_fully_healthy(&self) -> bool {
        let primary = self
            .replicas
            .iter()
            .any(|r| r.alive && r.role == ReplicaRole::Primary);
        primary && self.serving() >= self.wanted as usize
    }
}

/// The cluster as read from its control plane at one instant.
///
/// Build one with [`Topology::new`] and [`Topology::min_serving`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Topology {
    /// Every node the control plane knows.
    pub nodes: Vec<NodeInfo>,
    /// Every partition with its placement.
    pub partitions: Vec<Partition>,
    /// How many replicas of a partition must serve for it to take writes (Pegasus 2, from
    /// `mutation_2pc_min_replica_count`; OpenMLDB 1). `0` is read as 1.
    #[serde(default)]
    pub min_serving: u32,
}

impl Topology {
    /// The nodes and partitions as read, with a `min_serving` of 1.
    pub fn new(nodes: Vec<NodeInfo>, partitions: Vec<Partition>) -> Self {
        Self {
            nodes,
            partitions,
            min_serving: 1,
        }
    }

    /// Sets how many replicas of a partition must serve for it to take writes.
    #[must_use]
    pub fn min_serving(mut self, n: u32) -> Self {
        self.min_serving = n;
        self
    }

    /// The node with this id, if the control plane knows it.
    pub fn node(&self, id: &NodeId) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    /// For each node, the indexes of the partitions it holds a replica of.
    pub fn placement(&self) -> BTreeMap<&NodeId, Vec<usize>> {
        let mut map: BTreeMap<&NodeId, Vec<usize>> = BTreeMap::new();
        for (i, p) in self.partitions.iter().enumerate() {
            for r in &p.replicas {
                map.entry(&r.node).or_default().push(i);
            }
        }
        map
    }

    /// The first partition that is not fully healthy, with the reason.
    pub fn first_unhealthy(&self) -> Option<String> {
        self.partitions
            .iter()
            .find(|p| !p.is_fully_healthy())
            .map(|p| {
                format!(
                    "partition {} has {}/{} replicas serving",
                    p.id,
                    p.serving(),
                    p.wanted
                )
            })
    }
}

/// One edit of a named configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ConfigEdit {
    /// Set `key` to `value` in `file`.
    Set {
        /// The config file, such as `conf/tablet.flags`.
        file: String,
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Remove `key` from `file`.
    Unset {
        /// The config file.
        file: String,
        /// The key.
        key: String,
    },
}

/// What a rollout applies to each selected node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Restart the process as it is.
    Restart,
    /// Edit configuration files, then restart.
    Config {
        /// The edits, applied in order.
        edits: Vec<ConfigEdit>,
    },
    /// Install a package or version, then restart.
    Upgrade {
        /// The version (or package reference) to install.
        version: String,
    },
}

impl Change {
    /// A short name for messages: `restart`, `config` or `upgrade`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Config { .. } => "config",
            Self::Upgrade { .. } => "upgrade",
        }
    }

    /// Checks the change is well formed: no empty edit list, key, file or version.
    ///
    /// # Errors
    /// The malformed part, as a [`ChangeError`].
    pub fn validate(&self) -> Result<(), ChangeError> {
        match self {
            Self::Restart => Ok(()),
            Self::Upgrade { version } if version.trim().is_empty() => Err(ChangeError::NoVersion),
            Self::Upgrade { .. } => Ok(()),
            Self::Config { edits } if edits.is_empty() => Err(ChangeError::NoEdits),
            Self::Config { edits } => {
                for (i, e) in edits.iter().enumerate() {
                    let (file, key) = match e {
                        ConfigEdit::Set { file, key, .. } | ConfigEdit::Unset { file, key } => {
                            (file, key)
                        }
                    };
                    if file.trim().is_empty() {
                        return Err(ChangeError::NoFile { edit: i });
                    }
                    if key.trim().is_empty() || key.contains(['\n', '=']) {
                        return Err(ChangeError::InvalidKey {
                            edit: i,
                            key: key.clone(),
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

/// Why a [`Change`] cannot be applied: malformed ([`Change::validate`]), or refused by the
/// backend (`Cluster::check_change`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// An upgrade with an empty version.
    #[error("upgrade names an empty version")]
    NoVersion,
    /// A config change without edits.
    #[error("config change has no edits")]
    NoEdits,
    /// A config edit with an empty file name.
    #[error("config edit {edit} names no file")]
    NoFile {
        /// The edit's index in the change, from 0.
        edit: usize,
    },
    /// A config edit whose key is empty or holds a newline or `=`.
    #[error("config edit {edit} has an invalid key {key:?}")]
    InvalidKey {
        /// The edit's index in the change, from 0.
        edit: usize,
        /// The key.
        key: String,
    },
    /// An upgrade to a version the backend cannot name, does not support, or cannot reach
    /// from the version the cluster runs (not an upstream upgrade path).
    #[error("{reason}")]
    Version {
        /// The version the change names.
        version: String,
        /// The backend's reason, naming the versions and the upstream path where one exists.
        reason: String,
    },
    /// A config edit the backend cannot make: a file its servers do not read, a key its
    /// format cannot hold, or a removal it does not support.
    #[error("{file}: {reason}")]
    Edit {
        /// The edit's file, as given.
        file: String,
        /// The backend's reason, with the remedy.
        reason: String,
    },
    /// A kind of change the backend does not roll at all (such as a config edit on a
    /// system without config files).
    #[error("{reason}")]
    Unsupported {
        /// The backend's reason.
        reason: String,
    },
}

/// Where a knob applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnobScope {
    /// Set once before the first node and restored after the last.
    Rollout,
    /// Set before each wave's nodes are drained and restored once they are ready again,
    /// before the wait for full health (Pegasus add-secondary flow control).
    Wave,
}

/// A temporary cluster setting the rollout changes and must restore.
///
/// Build one with [`Knob::rollout`] or [`Knob::wave`]:
/// ```
/// use rollout_core::Knob;
///
/// let k = Knob::wave("meta.lb.add_secondary_max_count_for_one_node", "0")
///     .then("100")
///     .blocks_healing();
/// assert!(k.blocks_healing);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Knob {
    /// The backend's name for it, such as `meta.lb.assign_delay_ms`.
    pub name: String,
    /// The value it has while the rollout (or the wave) runs.
    pub during: String,
    /// When it is set and restored.
    pub scope: KnobScope,
    /// For wave knobs: the value once the wave's nodes are up again, until the next wave
    /// (Pegasus sets add-secondary to 100 so that replicas come back fast). `None` puts the
    /// original back. Every knob ends at its original value.
    pub after_wave: Option<String>,
    /// Whether its value during the rollout keeps the cluster from healing a failure by
    /// itself (Pegasus add-secondary at 0, OpenMLDB auto_failover off). The engine releases
    /// such knobs while it rides out a failure outside the wave and while a rollout is paused.
    #[serde(default)]
    pub blocks_healing: bool,
}

impl Knob {
    /// A knob held at `during` for the whole rollout.
    pub fn rollout(name: impl Into<String>, during: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            during: during.into(),
            scope: KnobScope::Rollout,
            after_wave: None,
            blocks_healing: false,
        }
    }

    /// A knob held at `during` around each wave's restarts.
    pub fn wave(name: impl Into<String>, during: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            during: during.into(),
            scope: KnobScope::Wave,
            after_wave: None,
            blocks_healing: false,
        }
    }

    /// Sets the value a wave knob takes once the wave's nodes are up again.
    #[must_use]
    pub fn then(mut self, after_wave: impl Into<String>) -> Self {
        self.after_wave = Some(after_wave.into());
        self
    }

    /// Marks the knob as one that keeps the cluster from healing (see
    /// [`Knob::blocks_healing`](struct@Knob#structfield.blocks_healing)).
    #[must_use]
    pub fn blocks_healing(mut self) -> Self {
        self.blocks_healing = true;
        self
    }
}

/// The result of one health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Health {
    /// The condition holds.
    Healthy,
    /// Not yet; the reason names what blocks, such as "partition 3.17 has 2/3 replicas".
    Waiting(String),
    /// It will not hold without an operator; the reason says why.
    Failed(String),
}

impl Health {
    /// Whether the condition holds.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }

    /// `Waiting` with a reason.
    pub fn waiting(reason: impl Into<String>) -> Self {
        Self::Waiting(reason.into())
    }

    /// `Failed` with a reason.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::Failed(reason.into())
    }
}

/// What a node reports about its own process.
///
/// Build one with [`NodeStatus::running`] or [`NodeStatus::stopped`] and the setters, so that
/// a field added later breaks no backend:
/// ```
/// use rollout_core::NodeStatus;
///
/// let up = NodeStatus::running().boot("pid 4242 since 1700000000").version("2.5.0");
/// let crashed = NodeStatus::stopped().exited("exit code 1: bind: address in use");
/// assert!(up.running && !crashed.running);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Whether the process runs.
    pub running: bool,
    /// An identifier of the current process incarnation (start time, pid or boot counter):
    /// it changes on every start, which is how a restart is recognised.
    pub boot: Option<String>,
    /// The running version, when known.
    pub version: Option<String>,
    /// A digest of the effective configuration, when known.
    pub config_digest: Option<String>,
    /// Why the process of the current incarnation exited on its own (a crash, an exit code,
    /// a supervisor's report), when it did. The engine ends a wait for readiness at once on
    /// it, rather than at its deadline.
    #[serde(default)]
    pub exited: Option<String>,
}

impl NodeStatus {
    /// A running process.
    pub fn running() -> Self {
        Self {
            running: true,
            ..Self::default()
        }
    }

    /// A process that does not run.
    pub fn stopped() -> Self {
        Self::default()
    }

    /// Sets the incarnation identifier.
    #[must_use]
    pub fn boot(mut self, boot: impl Into<String>) -> Self {
        self.boot = Some(boot.into());
        self
    }

    /// Sets the running version.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets the configuration digest.
    #[must_use]
    pub fn config_digest(mut self, digest: impl Into<String>) -> Self {
        self.config_digest = Some(digest.into());
        self
    }

    /// Says why the process exited on its own.
    #[must_use]
    pub fn exited(mut self, reason: impl Into<String>) -> Self {
        self.exited = Some(reason.into());
        self
    }
}

/// What [`Node::apply`](crate::Node::apply) replaced, so that it can be reverted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApplyRecord {
    /// The node it was applied to.
    pub node: NodeId,
    /// Backend-defined backup data (a backup file path, the previous version).
    pub backup: BTreeMap<String, String>,
}

impl ApplyRecord {
    /// What apply replaced on `node`, as `backup`.
    pub fn new(node: impl Into<NodeId>, backup: BTreeMap<String, String>) -> Self {
        Self {
            node: node.into(),
            backup,
        }
    }
}

/// Which steps the engine runs for each node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Procedure {
    /// The upstream high-availability steps: wave knobs, drain, quiesce, stop, apply, start,
    /// rejoin, each verified.
    #[default]
    HighAvailability,
    /// The upstream simplified steps: stop, apply, start, wait until healthy.
    /// Kept for comparison; clients notice it.
    Simple,
}
