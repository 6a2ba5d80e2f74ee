//! What an emulator needs from the simulated world, so that a backend's emulator serves the
//! one model of the cluster over a real protocol instead of keeping a second one: the
//! coordinator's view ([`SimCluster::view`]), the balancer proposals a client submits
//! ([`SimCluster::propose`]), and the process state behind each listening port
//! ([`NodeView::running`]). Run the world on the wall clock with
//! [`SimBuilder::time_scale`](crate::SimBuilder::time_scale).

use rollout_core::{NodeId, RoleKind};

use crate::cluster::SimCluster;
use crate::config::Flavor;
use crate::world::{Pegasus, PegasusProposal, Rep};

/// One node as the coordinator and the operating system see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeView {
    /// The node's id in the world.
    pub id: NodeId,
    /// Its role (`meta`, `replica`, `collector`, `nameserver`, `tablet`, ...).
    pub role: &'static str,
    /// Its kind.
    pub kind: RoleKind,
    /// A process runs (its port accepts connections).
    pub running: bool,
    /// The process serves requests (started and replayed its log).
    pub serving: bool,
    /// The coordinator counts it alive (Pegasus `NS_ALIVE`): it has not been declared dead.
    /// A data node whose process is gone stays alive to the coordinator until failure
    /// detection declares it dead (Pegasus `fd_grace_seconds` after its last beacon;
    /// `meta_service::set_node_state` is called only from the failure detector,
    /// `meta/meta_service.cpp` @v2.5.0), whatever [`NodeView::running`] says.
    pub alive: bool,
    /// Bumped at every start.
    pub boot: u64,
    /// When the current process started, simulated milliseconds since the world began.
    pub started_ms: u64,
    /// The version it runs.
    pub version: String,
}

/// One partition as the coordinator records it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionView {
    /// Its table, 1-based (table `t<table>`, Pegasus app id `table`).
    pub table: u32,
    /// Its index within the table.
    pub index: u32,
    /// Replicas wanted.
    pub wanted: u32,
    /// The primary (leader), if any.
    pub primary: Option<NodeId>,
    /// The secondaries (followers) that are members.
    pub secondaries: Vec<NodeId>,
    /// Bumped at every reconfiguration.
    pub ballot: u64,
    /// Nodes that hold a replica that is not a member (dropped, learning, unloaded).
    pub others: Vec<NodeId>,
}

/// The coordinator's view of the whole cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterView {
    /// The flavor.
    pub flavor: Flavor,
    /// Every node, in the world's order (data nodes first).
    pub nodes: Vec<NodeView>,
    /// The elected coordinator, if any.
    pub leader: Option<NodeId>,
    /// How many tables.
    pub tables: u32,
    /// Every partition, table by table.
    pub partitions: Vec<PartitionView>,
    /// The knobs as the coordinator holds them.
    pub knobs: std::collections::BTreeMap<String, String>,
    /// The knobs' values from the coordinators' config, which a new leader starts from.
    pub knob_defaults: std::collections::BTreeMap<String, String>,
    /// Simulated milliseconds since the world began.
    pub now_ms: u64,
}

/// A balancer proposal a client submits for one partition (Pegasus
/// `RPC_CM_PROPOSE_BALANCER`): run at the meta's next lb tick, dropped when it no longer
/// applies then.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proposal {
    /// `move_primary`: `DOWNGRADE_TO_SECONDARY` of `from`, then, on the reply to that
    /// reconfiguration, `UPGRADE_TO_PRIMARY` of `to`: two reconfigurations, the partition
    /// without a primary between them. Each is checked when it runs
    /// (`partition_guardian::from_proposals` @v2.5.0): dropped when `from` is no longer the
    /// primary or not alive to the meta; when `to` is no longer an alive secondary the list
    /// is cleared and the same `cure` promotes a secondary at once (`on_missing_primary`).
    MovePrimary {
        /// The primary when proposed.
        from: NodeId,
        /// The new primary.
        to: NodeId,
    },
    /// `DOWNGRADE_TO_INACTIVE`: the member on `node` leaves the membership. Checked when it
    /// runs (`partition_guardian::from_proposals` @v2.5.0): `target` must then be the
    /// primary and `node` a member, both alive to the meta, or it is dropped; it runs
    /// whatever the member count.
    Downgrade {
        /// The node the action is sent to: the primary when proposed.
        target: NodeId,
        /// The member to downgrade.
        node: NodeId,
    },
    /// `DOWNGRADE_TO_SECONDARY` of the primary with nothing promoted (a move-primary whose
    /// second action a 2.4/2.5 meta lost reading it): the partition has no primary until
    /// the meta promotes one of its secondaries, which may be the same node: right after the
    /// demote's remote write it runs `cure()`
    /// (`server_state::on_update_configuration_on_remote_reply` @v2.5.0), which clears the
    /// invalid second action and calls `partition_guardian::on_missing_primary`.
    Demote {
        /// The primary when proposed: the demote is dropped when it is no longer the primary
        /// or not alive to the meta when it runs.
        from: NodeId,
    },
    /// `move_primary` and then, in the same action list, `DOWNGRADE_TO_INACTIVE` of the
    /// member on `node` sent to `target`: the move runs at the tick and the downgrade right
    /// after the move's reconfiguration, as the meta sends a list's next action on the reply
    /// to the previous one (`server_state::on_update_configuration_on_remote_reply`
    /// @v2.5.0); checked then as [`Proposal::Downgrade`] is, and dropped when it no longer
    /// applies.
    MoveThenDowngrade {
        /// The primary when proposed.
        from: NodeId,
        /// The new primary.
        to: NodeId,
        /// The node the downgrade is sent to: the new primary when well formed.
        target: NodeId,
        /// The member to downgrade: the old primary when well formed.
        node: NodeId,
    },
    /// An action list the meta runs nothing of (an action naming a node it does not know,
    /// a list of a kind this model does not run): registered all the same, so that it holds
    /// the partition's slot (a second proposal is refused) until the next tick drops it.
    Unrunnable,
}

impl SimCluster {
    /// One node's view now, without the partitions (cheap: for a data path's every
    /// request).
    pub fn node_view(&self, id: &NodeId) -> Option<NodeView> {
        let w = self.world();
        w.index(id).map(|i| node_view(&w.nodes[i as usize]))
    }

    /// The coordinator's view now (the world advanced to the current time).
    pub fn view(&self) -> ClusterView {
        let w = self.world();
        let id = |n: u32| w.nodes[n as usize].id.clone();
        let nodes = w.nodes.iter().map(node_view).collect();
        let partitions = w
            .parts
            .iter()
            .map(|p| {
                let mut v = PartitionView {
                    table: u32::from(p.table) + 1,
                    index: p.index,
                    wanted: u32::from(p.wanted),
                    primary: None,
                    secondaries: Vec::new(),
                    ballot: p.ballot,
                    others: Vec::new(),
                };
                for r in &p.replicas {
                    match r.role {
                        Rep::Primary => v.primary = Some(id(r.node)),
                        Rep::Secondary if r.loaded => v.secondaries.push(id(r.node)),
                        _ => v.others.push(id(r.node)),
                    }
                }
                v
            })
            .collect();
        ClusterView {
            flavor: w.profile.flavor,
            nodes,
            leader: w.leader.map(id),
            tables: w
                .parts
                .iter()
                .map(|p| u32::from(p.table) + 1)
                .max()
                .unwrap_or(0),
            partitions,
            knobs: w.knobs.clone(),
            knob_defaults: w.knob_defaults.clone(),
            now_ms: w.now / 1000,
        }
    }

    /// Submits `proposal` for partition `index` of table `table` (1-based), as a Pegasus
    /// meta accepts `RPC_CM_PROPOSE_BALANCER` without `force`: it runs at the next lb tick,
    /// and is refused while one of the partition's is still pending
    /// (`server_load_balancer::register_proposals` @v2.5.0).
    ///
    /// # Errors
    /// Not a Pegasus world, an unknown partition or node, a proposal pending.
    pub fn propose(&self, table: u32, index: u32, proposal: &Proposal) -> Result<(), String> {
        let mut w = self.world();
        let part =
            part_of(&w, table, index).ok_or_else(|| format!("no partition {table}.{index}"))?;
        let node = |w: &crate::world::World, n: &NodeId| {
            w.nodes
                .iter()
                .position(|x| &x.id == n)
                .map(|i| i as u32)
                .ok_or_else(|| format!("no node {n}"))
        };
        let p = match proposal {
            Proposal::MovePrimary { from, to } => PegasusProposal::MovePrimary {
                from: node(&w, from)?,
                to: node(&w, to)?,
            },
            Proposal::Unrunnable => PegasusProposal::Unrunnable,
            Proposal::Downgrade { target, node: n } => PegasusProposal::Downgrade {
                target: node(&w, target)?,
                node: node(&w, n)?,
            },
            Proposal::Demote { from } => PegasusProposal::Demote {
                from: node(&w, from)?,
            },
            Proposal::MoveThenDowngrade {
                from,
                to,
                target,
                node: n,
            } => PegasusProposal::MoveThenDowngrade {
                from: node(&w, from)?,
                to: node(&w, to)?,
                target: node(&w, target)?,
                node: node(&w, n)?,
            },
        };
        let taken = w.with_model(|m, _| {
            m.as_any_mut()
                .downcast_mut::<Pegasus>()
                .map(|m| m.propose(part, p))
        });
        match taken {
            Some(true) => Ok(()),
            Some(false) => Err(format!("a proposal of {table}.{index} is pending")),
            None => Err("only a Pegasus world takes balancer proposals".into()),
        }
    }

    /// A client's write to partition `index` of table `table` (1-based) through `server`:
    /// taken only when `server` is the partition's primary and the partition takes writes
    /// now, then acknowledged and recorded in the world's ledger like the world's own
    /// clients' writes. Returns the write's sequence number.
    ///
    /// # Errors
    /// Why it is refused: an unknown partition, `server` not its primary, the partition not
    /// writable now.
    pub fn write(&self, table: u32, index: u32, server: &NodeId) -> Result<u32, WriteRefused> {
        let mut w = self.world();
        let p = part_of(&w, table, index).ok_or(WriteRefused::NoPartition)?;
        let primary = w.primary(p).map(|r| w.nodes[r.node as usize].id.clone());
        if primary.as_ref() != Some(server) {
            return Err(WriteRefused::NotPrimary);
        }
        w.external_write(p).ok_or(WriteRefused::NotWritable)
    }

    /// Whether `server` may serve a read of the partition now (it is the primary, and no
    /// reconfiguration is running).
    pub fn readable(&self, table: u32, index: u32, server: &NodeId) -> bool {
        let w = self.world();
        part_of(&w, table, index).is_some_and(|p| {
            w.readable(p)
                && w.primary(p)
                    .is_some_and(|r| &w.nodes[r.node as usize].id == server)
        })
    }

    /// Whether the replica serving the partition holds write `seq` (a write it lacks is
    /// lost).
    pub fn holds(&self, table: u32, index: u32, seq: u32) -> bool {
        let w = self.world();
        part_of(&w, table, index).is_some_and(|p| {
            crate::world::serving_replica(&w.parts[p as usize]).is_some_and(|r| r.log.holds(seq))
        })
    }

    /// Forgets every pending balancer proposal, as a Pegasus meta's
    /// `server_state::clear_proposals` does: `meta_service::on_control_meta_level` queues it
    /// for any requested level at or below steady, even an unchanged one
    /// (`meta/meta_service.cpp` @v2.4.0, @v2.5.0). A new leader starts with none by itself.
    /// Nothing for another flavor.
    pub fn clear_proposals(&self) {
        let mut w = self.world();
        w.with_model(|m, _| {
            if let Some(m) = m.as_any_mut().downcast_mut::<Pegasus>() {
                m.clear_proposals();
            }
        });
    }

    /// Whether `id`'s process runs (an emulator closes its port when it does not).
    pub fn running(&self, id: &NodeId) -> Option<bool> {
        let w = self.world();
        w.index(id).map(|i| w.nodes[i as usize].running)
    }
}

/// Why a client's write is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteRefused {
    /// No such partition.
    #[error("no such partition")]
    NoPartition,
    /// The server is not the partition's primary.
    #[error("not the partition's primary")]
    NotPrimary,
    /// The partition takes no writes now (a reconfiguration, too few members).
    #[error("the partition takes no writes now")]
    NotWritable,
}

fn part_of(w: &crate::world::World, table: u32, index: u32) -> Option<u32> {
    w.parts
        .iter()
        .position(|p| u32::from(p.table) + 1 == table && p.index == index)
        .map(|p| p as u32)
}

fn node_view(n: &crate::world::NodeS) -> NodeView {
    NodeView {
        id: n.id.clone(),
        role: n.role,
        kind: n.kind,
        running: n.running,
        serving: n.up(),
        alive: n.kind != RoleKind::Data || (n.attached && !n.offline),
        boot: n.boot,
        started_ms: n.started_at / 1000,
        version: n.version.clone(),
    }
}
