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
    /// Flagged leader: the alive leader, or a leader moved away from (or marked dead by the
    /// offline procedure) until a RecoverTable makes it a follower again.
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

/// A loaded replica's term and offset, as `GetTermPair` answers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TermPair {
    /// The replicator's term.
    pub term: u64,
    /// The replicator's offset (entries).
    pub offset: u64,
    /// It leads on its tablet.
    pub is_leader: bool,
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
    /// `UpdateTableAliveStatus`: the alive flag of the replica on `node`, of partition `pid`
    /// or, without one, of every partition of the table it holds.
    UpdateTableAlive {
        /// Table, 1-based.
        table: u32,
        /// Partition, or every one.
        pid: Option<u32>,
        /// The replica's tablet.
        node: NodeId,
        /// The flag.
        alive: bool,
    },
}

/// A nameserver's or tablet's refusal: its return code (`src/base/status.h`) and message.
pub type Refusal = (i32, String);

pub(crate) fn part_of(w: &World, table: u32, pid: u32) -> Result<u32, String> {
    w.parts
        .iter()
        .position(|p| u32::from(p.table) + 1 == table && p.index == pid)
        .map(|p| p as u32)
        .ok_or_else(|| format!("no partition {pid} of table t{table}"))
}

/// A partition's term: the world's ballot, bumped at every leader change.
fn term_of(p: &crate::world::Part) -> u64 {
    p.ballot + 1
}

pub(crate) fn node_of(w: &World, id: &NodeId) -> Result<u32, String> {
    w.index(id).ok_or_else(|| format!("no tablet {id}"))
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
                term: term_of(p),
                replicas: p
                    .replicas
                    .iter()
                    .map(|r| ReplicaMeta {
                        node: w.nodes[r.node as usize].id.clone(),
                        is_leader: r.role == Rep::Primary
                            || (r.role == Rep::Inactive && r.ex_leader),
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
                        op_type: r.op.op_type(),
                        status: r.status,
                        table,
                        pid,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// A nameserver op RPC: its checks, in the nameserver's order, then the op queued (or,
    /// for `UpdateTableAliveStatus`, the flag set), as `NameServerImpl` does at v0.8.5 and
    /// v0.9.x (docs/upstream/openmldb.md §2). `Ok` is code 0, which the nameserver also
    /// answers when it creates no op: a RecoverTable of a follower whose partition has no
    /// alive leader elsewhere.
    ///
    /// # Errors
    /// The nameserver's code and message: 301 with auto_failover on (ChangeLeader,
    /// RecoverTable, RecoverEndpoint, UpdateTableAliveStatus), 302 an unknown endpoint, 303 a
    /// tablet that is not healthy, 100 an unknown table, 308 a pid it does not have, 134 a
    /// single replica to move, 310 no alive follower, 305 a candidate that is not an alive
    /// follower on a healthy tablet, 311 a RecoverTable of an alive replica, 307 a
    /// RecoverEndpoint concurrency above `name_server_task_max_concurrency`, 317 an
    /// AddReplicaNS where a replica is, 102 a DelReplicaNS of a replica flagged leader, 321
    /// an UpdateTableAliveStatus that matched no replica.
    pub fn openmldb_op(&self, op: &NsOp) -> Result<(), Refusal> {
        let mut w = self.world();
        let gated = matches!(
            op,
            NsOp::ChangeLeader { .. }
                | NsOp::RecoverTable { .. }
                | NsOp::RecoverEndpoint { .. }
                | NsOp::UpdateTableAlive { .. }
        );
        if gated && w.knob("auto_failover") == "true" {
            return Err((301, "auto_failover is enabled".into()));
        }
        let healthy = |w: &World, n: u32| {
            let n = &w.nodes[n as usize];
            n.attached && !n.offline
        };
        let endpoint = |w: &World, id: &NodeId| {
            node_of(w, id).map_err(|_| (302, format!("endpoint {id} is not exist")))
        };
        let partition = |w: &World, table: u32, pid: u32| {
            if !w.parts.iter().any(|p| u32::from(p.table) + 1 == table) {
                return Err((100, format!("table t{table} is not exist")));
            }
            part_of(w, table, pid).map_err(|_| (308, format!("pid {pid} is not exist")))
        };
        let model_op = match op {
            NsOp::ChangeLeader {
                table,
                pid,
                candidate,
            } => {
                let part = partition(&w, *table, *pid)?;
                let p = &w.parts[part as usize];
                if p.replicas.len() == 1 {
                    return Err((134, "table has no followers".into()));
                }
                if !p.replicas.iter().any(|r| r.role == Rep::Secondary) {
                    return Err((310, "no alive follower".into()));
                }
                let to = endpoint(&w, candidate)?;
                let ok = p
                    .replicas
                    .iter()
                    .any(|r| r.node == to && r.role == Rep::Secondary && healthy(&w, to));
                if !ok {
                    return Err((
                        305,
                        format!(
                            "change leader failed: {candidate} is not an alive follower on a healthy tablet"
                        ),
                    ));
                }
                let from = w
                    .primary(part)
                    .map(|r| r.node)
                    .or_else(|| p.replicas.iter().find(|r| r.ex_leader).map(|r| r.node))
                    .unwrap_or(to);
                Op::ChangeLeader {
                    part,
                    from,
                    to: Some(to),
                }
            }
            NsOp::RecoverTable { table, pid, node } => {
                let n = endpoint(&w, node)?;
                if !healthy(&w, n) {
                    return Err((303, format!("tablet {node} is not healthy")));
                }
                let part = partition(&w, *table, *pid)?;
                let p = &w.parts[part as usize];
                let Some(r) = p.replicas.iter().find(|r| r.node == n) else {
                    return Err((308, format!("pid {pid} is not in {node}")));
                };
                if r.role != Rep::Inactive {
                    return Err((311, "table is alive, need not recover".into()));
                }
                let follower = !r.ex_leader;
                let leader_elsewhere = p
                    .replicas
                    .iter()
                    .any(|x| x.role == Rep::Primary && x.node != n);
                if follower && !leader_elsewhere {
                    // The task cannot be built; the RPC answers 0 all the same.
                    return Ok(());
                }
                Op::RecoverTable { part, node: n }
            }
            NsOp::AddReplica { table, pid, node } => {
                let n = endpoint(&w, node)?;
                if !healthy(&w, n) {
                    return Err((303, format!("tablet {node} is not healthy")));
                }
                let part = partition(&w, *table, *pid)?;
                if w.parts[part as usize].replicas.iter().any(|r| r.node == n) {
                    return Err((317, format!("pid {pid} exists in {node}")));
                }
                if !serving_leader(&w, part) {
                    // `CreateAddReplicaOPTask` finds no alive leader: no op.
                    return Err((305, "create op failed: no alive leader".into()));
                }
                Op::AddReplica { part, node: n }
            }
            NsOp::DelReplica { table, pid, node } => {
                let part = partition(&w, *table, *pid)?;
                let n = endpoint(&w, node)?;
                if !healthy(&w, n) {
                    return Err((303, format!("tablet {node} is not healthy")));
                }
                let Some(r) = w.parts[part as usize].replicas.iter().find(|r| r.node == n) else {
                    return Err((308, format!("pid {pid} is not in {node}")));
                };
                if r.role == Rep::Primary || r.ex_leader {
                    return Err((102, "can not del leader".into()));
                }
                if !serving_leader(&w, part) {
                    // `CreateDelReplicaOPTask` finds no alive leader: no op.
                    return Err((305, "create op failed: no alive leader".into()));
                }
                Op::DelReplica { part, node: n }
            }
            NsOp::RecoverEndpoint { node, concurrency } => {
                let max = w.t.op_queues_max.max(w.t.op_queues);
                if *concurrency as usize > max {
                    return Err((
                        307,
                        format!("concurrency {concurrency} is greater than the max {max}"),
                    ));
                }
                let n = endpoint(&w, node)?;
                if !healthy(&w, n) {
                    return Err((303, format!("tablet {node} is not healthy")));
                }
                let c = match *concurrency as usize {
                    0 => max,
                    c => c,
                };
                return OpenMldb::with(&mut w, |m, w| m.recover_endpoint(w, n, c))
                    .ok_or((-1, "not an OpenMLDB world".to_string()));
            }
            NsOp::UpdateTableAlive {
                table,
                pid,
                node,
                alive,
            } => {
                let n = endpoint(&w, node)?;
                if !w.parts.iter().any(|p| u32::from(p.table) + 1 == *table) {
                    return Err((100, format!("table t{table} is not exist")));
                }
                let parts: Vec<u32> = (0..w.parts.len() as u32)
                    .filter(|&p| {
                        let part = &w.parts[p as usize];
                        u32::from(part.table) + 1 == *table
                            && pid.is_none_or(|pid| part.index == pid)
                            && part.replicas.iter().any(|r| r.node == n)
                    })
                    .collect();
                if parts.is_empty() {
                    return Err((321, "no pid has update".into()));
                }
                for p in parts {
                    w.update_table_alive(p, n, *alive);
                }
                return Ok(());
            }
        };
        OpenMldb::with(&mut w, |m, w| m.enqueue(w, model_op))
            .ok_or((-1, "not an OpenMLDB world".to_string()))
    }

    /// TabletServer `ChangeRole` on `node`'s replica (`TabletImpl::ChangeRole` @v0.9.2): to
    /// follower fences a leader (writes refused, replication stopped); to leader lifts that
    /// fence with `term` (absent: 0). A leader re-led with a lower term than the
    /// partition's followers hold ships nothing they accept (`TabletImpl::AppendEntries`):
    /// what it acknowledges from then on is on no follower.
    ///
    /// # Errors
    /// `(100, ..)` no such replica loaded on the tablet; `(102, ..)` to leader on a leader.
    pub fn openmldb_change_role(
        &self,
        table: u32,
        pid: u32,
        node: &NodeId,
        leader: bool,
        term: Option<u64>,
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
        let followers_term = term_of(p) + u64::from(p.orphaned);
        match (leader, primary, fenced) {
            // To follower: a leader is fenced; a follower already is one.
            (false, true, _) => {
                w.replicate(part);
                w.parts[part as usize].fenced = Some(n);
                w.tell_to_follow(part, n);
            }
            (false, false, _) => w.tell_to_follow(part, n),
            (true, true, false) => return Err((102, "table is leader".into())),
            (true, _, true) => {
                let p = &mut w.parts[part as usize];
                p.fenced = None;
                if term.unwrap_or(0) < followers_term {
                    p.orphaned = true;
                }
            }
            (true, false, false) => return Err((307, "not the partition's leader".into())),
        }
        w.touch(part);
        Ok(())
    }

    /// TabletServer `GetTermPair` on `node` (`TabletImpl::GetTermPair` @v0.9.2): for a loaded
    /// partition its replicator's term and offset and whether it leads; `None` when the
    /// tablet has not loaded it (the tablet then reads its snapshot's MANIFEST).
    ///
    /// # Errors
    /// `(100, ..)` an unknown partition or tablet.
    pub fn openmldb_term_pair(
        &self,
        table: u32,
        pid: u32,
        node: &NodeId,
    ) -> Result<Option<TermPair>, (i32, String)> {
        let mut w = self.world();
        let part = part_of(&w, table, pid).map_err(|e| (100, e))?;
        let n = node_of(&w, node).map_err(|e| (100, e))?;
        if !w.nodes[n as usize].up() {
            return Ok(None);
        }
        w.replicate(part);
        let p = &w.parts[part as usize];
        let Some(r) = p.replicas.iter().find(|r| r.node == n && r.loaded) else {
            return Ok(None);
        };
        let leads = w.leads_on_tablet(part, n);
        Ok(Some(TermPair {
            term: term_of(p) + u64::from(p.orphaned && r.role != Rep::Primary),
            offset: r.log.len() as u64,
            is_leader: leads,
        }))
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
                    leader: w.leads_on_tablet(p, n),
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

/// Whether `part` has an alive leader on a tablet the nameserver holds healthy.
fn serving_leader(w: &World, part: u32) -> bool {
    w.primary(part)
        .is_some_and(|r| !w.nodes[r.node as usize].offline && w.nodes[r.node as usize].up())
}
