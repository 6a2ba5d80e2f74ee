//! What an OpenMLDB emulator needs from the simulated world: the nameserver's records (tables,
//! replicas with their leader and alive flags and offsets, ops by id), its op RPCs, and the
//! tablet-side calls that fence a leader (`ChangeRole`, `SetMode`) and report offsets
//! (`GetTableStatus`, `GetTableFollower`). Every call acts on the one model of the cluster.

use rollout_core::{NodeId, RoleKind};

use crate::cluster::SimCluster;
use crate::world::{OpenMldb, OpenMldbOp as Op, Rep, World};

/// One replica as the nameserver records it (`ShowTable`'s `partition_meta`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaMeta {
    /// Its tablet.
    pub node: NodeId,
    /// Flagged leader.
    pub is_leader: bool,
    /// Not marked dead.
    pub is_alive: bool,
    /// Its log offset (entries).
    pub offset: u64,
}

/// One partition as the nameserver records it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMeta {
    /// Its table, 1-based (table `t<table>`, tid `table`).
    pub table: u32,
    /// Its partition id within the table.
    pub pid: u32,
    /// Its replicas.
    pub replicas: Vec<ReplicaMeta>,
    /// The current term (bumped by every leader change).
    pub term: u64,
}

/// One op as `ShowOPStatus` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpView {
    /// Its id.
    pub id: u64,
    /// `OPType` name (`kChangeLeaderOP`, `kRecoverTableOP`, `kAddReplicaOP`, `kDelReplicaOP`).
    pub op_type: &'static str,
    /// `TaskStatus` name.
    pub status: &'static str,
    /// Its table, 1-based.
    pub table: u32,
    /// Its partition.
    pub pid: u32,
}

/// A partition as its tablet holds it (`GetTableStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TabletPartition {
    /// Its table, 1-based.
    pub table: u32,
    /// Its partition id.
    pub pid: u32,
    /// The replicator's offset.
    pub offset: u64,
    /// Leader mode on the tablet (a fenced leader is in follower mode).
    pub leader: bool,
}

/// `GetTableFollower`'s answer: the leader's offset and each follower's (entries).
pub type Followers = (u64, Vec<(NodeId, u64)>);

/// A nameserver op a client requests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NsOp {
    /// `ChangeLeader` with an explicit candidate.
    ChangeLeader {
        /// Table, 1-based.
        table: u32,
        /// Partition.
        pid: u32,
        /// The new leader.
        candidate: NodeId,
    },
    /// `RecoverTable` of one replica.
    RecoverTable {
        /// Table, 1-based.
        table: u32,
        /// Partition.
        pid: u32,
        /// The replica's tablet.
        node: NodeId,
    },
    /// `RecoverEndpoint` over `concurrency` queues.
    RecoverEndpoint {
        /// The tablet.
        node: NodeId,
        /// Queues.
        concurrency: u32,
    },
    /// `AddReplicaNS`.
    AddReplica {
        /// Table, 1-based.
        table: u32,
        /// Partition.
        pid: u32,
        /// The new follower's tablet.
        node: NodeId,
    },
    /// `DelReplicaNS`.
    DelReplica {
        /// Table, 1-based.
        table: u32,
        /// Partition.
        pid: u32,
        /// The follower's tablet.
        node: NodeId,
    },
}

fn part_of(w: &World, table: u32, pid: u32) -> Result<u32, String> {
    w.parts
        .iter()
        .position(|p| u32::from(p.table) + 1 == table && p.index == pid)
        .map(|p| p as u32)
        .ok_or_else(|| format!("no partition {pid} of table t{table}"))
}

fn node_of(w: &World, id: &NodeId) -> Result<u32, String> {
    w.nodes
        .iter()
        .position(|n| &n.id == id)
        .map(|i| i as u32)
        .ok_or_else(|| format!("no tablet {id}"))
}

impl SimCluster {
    /// Every partition as the nameserver records it.
    pub fn openmldb_partitions(&self) -> Vec<PartitionMeta> {
        let w = self.world();
        w.parts
            .iter()
            .map(|p| PartitionMeta {
                table: u32::from(p.table) + 1,
                pid: p.index,
                term: p.ballot + 1,
                replicas: p
                    .replicas
                    .iter()
                    .map(|r| ReplicaMeta {
                        node: w.nodes[r.node as usize].id.clone(),
                        is_leader: r.role == Rep::Primary,
                        is_alive: r.role != Rep::Inactive,
                        offset: r.log.len() as u64,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The nameserver's ops, oldest first.
    pub fn openmldb_ops(&self) -> Vec<OpView> {
        let mut w = self.world();
        let parts: Vec<(u32, u32)> = w
            .parts
            .iter()
            .map(|p| (u32::from(p.table) + 1, p.index))
            .collect();
        OpenMldb::with(&mut w, |m, _| {
            m.records
                .iter()
                .map(|r| {
                    let (table, pid) = parts[r.op.part() as usize];
                    OpView {
                        id: r.id,
                        op_type: match r.op {
                            Op::ChangeLeader { .. } | Op::FencedMove { .. } => "kChangeLeaderOP",
                            Op::RecoverTable { .. } => "kRecoverTableOP",
                            Op::AddReplica { .. } => "kAddReplicaOP",
                            Op::DelReplica { .. } => "kDelReplicaOP",
                        },
                        status: r.status,
                        table,
                        pid,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Queues a nameserver op, as the nameserver's RPC does.
    ///
    /// # Errors
    /// Not an OpenMLDB world, an unknown partition or tablet, or the checks the nameserver
    /// makes first: the candidate must be an alive follower on a serving tablet.
    pub fn openmldb_op(&self, op: &NsOp) -> Result<(), String> {
        let mut w = self.world();
        let model_op = match op {
            NsOp::ChangeLeader {
                table,
                pid,
                candidate,
            } => {
                let part = part_of(&w, *table, *pid)?;
                let to = node_of(&w, candidate)?;
                let from = w
                    .primary(part)
                    .map(|r| r.node)
                    .ok_or_else(|| format!("partition {pid} of t{table} has no leader"))?;
                let ok = w.parts[part as usize].replicas.iter().any(|r| {
                    r.node == to
                        && r.role == Rep::Secondary
                        && r.loaded
                        && w.nodes[to as usize].up()
                });
                if !ok {
                    return Err(format!(
                        "{candidate} is not an alive follower of partition {pid}"
                    ));
                }
                Op::ChangeLeader {
                    part,
                    from,
                    to: Some(to),
                }
            }
            NsOp::RecoverTable { table, pid, node } => Op::RecoverTable {
                part: part_of(&w, *table, *pid)?,
                node: node_of(&w, node)?,
            },
            NsOp::AddReplica { table, pid, node } => Op::AddReplica {
                part: part_of(&w, *table, *pid)?,
                node: node_of(&w, node)?,
            },
            NsOp::DelReplica { table, pid, node } => Op::DelReplica {
                part: part_of(&w, *table, *pid)?,
                node: node_of(&w, node)?,
            },
            NsOp::RecoverEndpoint { node, concurrency } => {
                let n = node_of(&w, node)?;
                let c = *concurrency as usize;
                return OpenMldb::with(&mut w, |m, w| m.recover_endpoint(w, n, c.max(1)))
                    .ok_or_else(|| "not an OpenMLDB world".to_string());
            }
        };
        OpenMldb::with(&mut w, |m, w| m.enqueue(w, model_op))
            .ok_or_else(|| "not an OpenMLDB world".to_string())
    }

    /// TabletServer `ChangeRole` on `node`'s replica: to follower fences a leader (writes
    /// refused, replication stopped); to leader lifts that fence. `Err` carries the tablet's
    /// return code and message.
    ///
    /// # Errors
    /// `(100, ..)` no such replica on the tablet; `(102, ..)` to leader on a leader.
    pub fn openmldb_change_role(
        &self,
        table: u32,
        pid: u32,
        node: &NodeId,
        leader: bool,
    ) -> Result<(), (i32, String)> {
        let mut w = self.world();
        let part = part_of(&w, table, pid).map_err(|e| (100, e))?;
        let n = node_of(&w, node).map_err(|e| (100, e))?;
        let p = &w.parts[part as usize];
        let Some(r) = p.replicas.iter().find(|r| r.node == n && r.loaded) else {
            return Err((100, "table is not exist".into()));
        };
        let fenced = p.fenced == Some(n);
        let primary = r.role == Rep::Primary;
        match (leader, primary, fenced) {
            // To follower: a leader is fenced; a follower already is one.
            (false, true, _) => {
                w.replicate(part);
                w.parts[part as usize].fenced = Some(n);
            }
            (false, false, _) => {}
            (true, true, false) => return Err((102, "table is leader".into())),
            (true, _, true) => w.parts[part as usize].fenced = None,
            (true, false, false) => return Err((307, "not the partition's leader".into())),
        }
        w.touch(part);
        Ok(())
    }

    /// TabletServer `SetMode{follower}`: the whole tablet refuses writes while its replicas
    /// keep shipping.
    ///
    /// # Errors
    /// An unknown tablet.
    pub fn openmldb_set_mode(&self, node: &NodeId, follower: bool) -> Result<(), String> {
        let mut w = self.world();
        let n = node_of(&w, node)?;
        let hold = &mut w.nodes[n as usize].write_hold;
        *hold = if follower {
            hold.saturating_add(1).min(1)
        } else {
            0
        };
        w.touch_node(n);
        Ok(())
    }

    /// The partitions `node` has loaded (`GetTableStatus`); empty for a tablet that is not
    /// serving.
    pub fn openmldb_tablet(&self, node: &NodeId) -> Vec<TabletPartition> {
        let mut w = self.world();
        let Ok(n) = node_of(&w, node) else {
            return Vec::new();
        };
        if !w.nodes[n as usize].up() {
            return Vec::new();
        }
        let parts = w.nodes[n as usize].parts.clone();
        let mut out = Vec::new();
        for p in parts {
            w.replicate(p);
            let part = &w.parts[p as usize];
            if let Some(r) = part.replicas.iter().find(|r| r.node == n && r.loaded) {
                out.push(TabletPartition {
                    table: u32::from(part.table) + 1,
                    pid: part.index,
                    offset: r.log.len() as u64,
                    leader: r.role == Rep::Primary && part.fenced != Some(n),
                });
            }
        }
        out
    }

    /// `GetTableFollower` asked of `node`: its offset and each connected follower's.
    ///
    /// # Errors
    /// `(103, ..)` when `node` is not the partition's leader (or is fenced), `(134, ..)`
    /// without followers.
    pub fn openmldb_followers(
        &self,
        table: u32,
        pid: u32,
        node: &NodeId,
    ) -> Result<Followers, (i32, String)> {
        let mut w = self.world();
        let part = part_of(&w, table, pid).map_err(|e| (100, e))?;
        let n = node_of(&w, node).map_err(|e| (100, e))?;
        w.replicate(part);
        let p = &w.parts[part as usize];
        let leads = p
            .replicas
            .iter()
            .any(|r| r.node == n && r.role == Rep::Primary && r.loaded)
            && p.fenced != Some(n);
        if !leads {
            return Err((103, "table is follower".into()));
        }
        let offset = p
            .replicas
            .iter()
            .find(|r| r.node == n)
            .map_or(0, |r| r.log.len() as u64);
        let followers: Vec<(NodeId, u64)> = p
            .replicas
            .iter()
            .filter(|r| {
                r.node != n && r.role == Rep::Secondary && r.loaded && r.behind_until <= w.now
            })
            .map(|r| (w.nodes[r.node as usize].id.clone(), r.log.len() as u64))
            .collect();
        if followers.is_empty() {
            return Err((134, "has no follower".into()));
        }
        Ok((offset, followers))
    }

    /// Whether `node` is a registered, healthy tablet to the nameserver (`ShowTablet`
    /// `kHealthy`, also for a while after its process stopped; `kOffline` once its ZooKeeper
    /// session expired).
    pub fn openmldb_tablet_healthy(&self, node: &NodeId) -> Option<bool> {
        let w = self.world();
        w.nodes
            .iter()
            .find(|n| &n.id == node && n.kind == RoleKind::Data)
            .map(|n| n.attached && !n.offline)
    }
}
