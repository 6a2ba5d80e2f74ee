//! OpenMLDB: the nameserver's view of tablets and partitions, and its op queues.
//!
//! A leader acks a write at once; followers receive it `replication_lag` later. Ops run on
//! `name_server_task_concurrency` queues (partition id mod the count), one at a time each
//! (`src/nameserver/name_server_impl.cc`). ChangeLeader is not fenced: the nameserver marks the
//! old leader not alive and promotes the candidate (an explicit one regardless of its offset,
//! else the follower with the highest offset), but the old leader keeps taking writes until
//! clients refresh their routing, and those writes are later discarded. RecoverTable reloads a
//! replica and marks it alive while it still catches up. With `auto_failover` on, a tablet
//! that stays offline for `tablet_heartbeat_timeout` has its leaders moved, and a tablet that
//! registers again after a restart is recovered (RecoverEndpoint). Reference:
//! docs/openmldb-interfaces.md ("The nameserver's ops", "A tablet restart").

use std::collections::VecDeque;

pub(crate) use super::openmldb_op::{Op, OpRecord, ReAdd};
use super::{ModelEv, Rep, Us, World, us};

/// The nameserver's state: its op queues and what it remembers of each tablet.
#[derive(Debug)]
pub(crate) struct OpenMldb {
    /// Every queue RecoverEndpoint may use; single ops use the first `concurrency`.
    pub(super) queues: Vec<VecDeque<Op>>,
    /// `name_server_task_concurrency`.
    pub(super) concurrency: usize,
    /// The op running on each queue, when it started and the boot of the node it targets.
    pub(super) running: Vec<Option<(Op, Us, u64)>>,
    /// Ops queued or running that name each node.
    pub(super) node_ops: Vec<u32>,
    /// Partitions each tablet led when the rollout drained it, to hand back on rejoin.
    pub(super) led: Vec<Vec<u32>>,
    /// Auto failover already ran its offline procedure for the tablet.
    pub(super) auto_offlined: Vec<bool>,
    /// Replicas (partition, tablet) to recover once the ChangeLeader moving their
    /// partition away from their tablet, which has nothing loaded, ends.
    recover_after_move: Vec<(u32, u32)>,
    /// Why a fenced move away from each tablet failed (no follower reached the leader's
    /// offset); its drain fails with it.
    pub(super) move_failed: Vec<Option<String>>,
    /// Every op by id, as `ShowOPStatus` lists them (the newest `MAX_OP_NUM`).
    pub(crate) records: VecDeque<OpRecord>,
    next_op_id: u64,
}

/// How long `op` runs once it heads its queue. The nameserver learns that a task on a tablet
/// finished only at its next `get_task_status_interval` poll, every 2 s (a quarter of
/// `Timings::catch_up`, which prices the four tablet tasks of a reload;
/// `NameServerImpl::UpdateTaskStatus` @v0.9.2), so such a task ends at the next poll. A
/// RecoverTable of a follower first drops it from the leader's replicator (one tablet task);
/// a fenced ex-leader comes back through AddReplica on the leader and the binlog check, which
/// passes at once within `check_binlog_sync_progress_delta` (`CheckBinlogSyncProgress`); a
/// replica with nothing loaded reloads its snapshot and binlog and catches up; a new replica
/// copies a snapshot.
fn op_cost(w: &World, op: &Op) -> Us {
    let poll = us(w.t.catch_up) / 4;
    let op_time = us(w.t.op);
    let next_poll = |after: Us| {
        let at = w.now + after;
        match poll {
            0 => after,
            p => at.div_ceil(p) * p - w.now,
        }
    };
    let reload = |part: u32, node: u32| {
        let p = &w.parts[part as usize];
        let have = p
            .replicas
            .iter()
            .find(|r| r.node == node)
            .map_or(0, |r| r.log.len() as u64);
        let missed = u64::from(p.next_seq).saturating_sub(have);
        let n = &w.nodes[node as usize];
        let since_snapshot = n.unflushed / n.parts.len().max(1) as u64;
        us(w.t.catch_up)
            .saturating_add(missed.saturating_mul(us(w.t.catch_up_per_write)))
            .saturating_add(since_snapshot.saturating_mul(us(w.t.replay_per_write)))
    };
    match *op {
        Op::RecoverTable { part, node } => {
            let follower = w.parts[part as usize]
                .replicas
                .iter()
                .any(|r| r.node == node && !r.ex_leader && r.role != Rep::Primary);
            if follower {
                next_poll(op_time) + op_time
            } else {
                op_time
            }
        }
        Op::ReAddReplica {
            how: ReAdd::Simplify,
            ..
        } => next_poll(op_time) + op_time,
        Op::ReAddReplica { part, node, .. } | Op::AddReplica { part, node } => {
            op_time.saturating_add(reload(part, node))
        }
        _ => op_time,
    }
}

/// Finished ops the nameserver keeps (`max_op_num`).
const MAX_OP_NUM: usize = 10_000;

pub(super) const OP_DONE: u8 = 0;
pub(super) const AUTO_OFFLINE: u8 = 1;
pub(super) const FENCE: u8 = 2;

impl OpenMldb {
    /// A nameserver with `concurrency` op queues for single ops
    /// (`name_server_task_concurrency`) and `max` for RecoverEndpoint
    /// (`name_server_task_max_concurrency`; zero: `concurrency`), for `nodes` nodes.
    pub(crate) fn new(concurrency: usize, max: usize, nodes: usize) -> Self {
        let concurrency = concurrency.max(1);
        let queues = max.max(concurrency);
        Self {
            queues: vec![VecDeque::new(); queues],
            concurrency,
            running: vec![None; queues],
            node_ops: vec![0; nodes],
            led: vec![Vec::new(); nodes],
            auto_offlined: vec![false; nodes],
            recover_after_move: Vec::new(),
            move_failed: vec![None; nodes],
            records: VecDeque::new(),
            next_op_id: 0,
        }
    }

    /// Runs `f` on the world's OpenMLDB model, if it has one.
    pub(crate) fn with<R>(
        w: &mut World,
        f: impl FnOnce(&mut OpenMldb, &mut World) -> R,
    ) -> Option<R> {
        w.with_model(|m, w| m.as_any_mut().downcast_mut::<OpenMldb>().map(|m| f(m, w)))
    }

    /// Whether any op is queued or running.
    pub(crate) fn ops_pending(&self) -> bool {
        self.running.iter().any(Option::is_some) || self.queues.iter().any(|q| !q.is_empty())
    }

    /// Queues an op on its queue (partition id mod `name_server_task_concurrency`).
    pub(crate) fn enqueue(&mut self, w: &mut World, op: Op) {
        let c = self.concurrency;
        self.enqueue_on(w, op, c);
    }

    /// Queues an op on queue `pid % concurrency` (RecoverEndpoint's `concurrency`).
    fn enqueue_on(&mut self, w: &mut World, op: Op, concurrency: usize) {
        let q = op.part() as usize % concurrency.clamp(1, self.queues.len());
        for n in op.nodes().into_iter().flatten() {
            self.node_ops[n as usize] += 1;
        }
        self.next_op_id += 1;
        self.records.push_back(OpRecord {
            id: self.next_op_id,
            op: op.clone(),
            status: "kInited",
        });
        if self.records.len() > MAX_OP_NUM {
            self.records.pop_front();
        }
        self.queues[q].push_back(op);
        self.start_op(w, q);
        w.changed();
    }

    /// Queues `op` on queue `pid % concurrency` unless the same op is queued or running
    /// already.
    pub(super) fn enqueue_once(&mut self, w: &mut World, op: Op, concurrency: usize) {
        let pending = self.running.iter().flatten().any(|(o, _, _)| *o == op)
            || self.queues.iter().flatten().any(|o| *o == op);
        if !pending {
            self.enqueue_on(w, op, concurrency);
        }
    }

    /// Whether `op` is queued or running.
    pub(crate) fn has_op(&self, pred: impl Fn(&Op) -> bool) -> bool {
        self.running.iter().flatten().any(|(o, _, _)| pred(o))
            || self.queues.iter().flatten().any(&pred)
    }

    /// The oldest record of `op` in status `from` moves to `to`.
    fn mark(&mut self, op: &Op, from: &str, to: &'static str) {
        if let Some(r) = self
            .records
            .iter_mut()
            .find(|r| r.status == from && r.op == *op)
        {
            r.status = to;
        }
    }

    fn op_finished(&mut self, op: &Op) {
        for n in op.nodes().into_iter().flatten() {
            let c = &mut self.node_ops[n as usize];
            *c = c.saturating_sub(1);
        }
    }

    pub(super) fn start_op(&mut self, w: &mut World, q: usize) {
        if self.running[q].is_some() || w.leader.is_none() {
            return;
        }
        // A ChangeLeader away from a node with a stuck drain (with or without a candidate: the
        // upstream tool's, or a backend's through an emulator) never starts: it blocks its
        // queue, as a stuck op does.
        if let Some(Op::ChangeLeader { from, .. } | Op::FencedMove { from, to: None, .. }) =
            self.queues[q].front()
            && w.nodes[*from as usize].stuck_drain
        {
            return;
        }
        let Some(op) = self.queues[q].pop_front() else {
            return;
        };
        self.mark(&op, "kInited", "kDoing");
        let cost = op_cost(w, &op);
        let boot = op.nodes()[0].map_or(0, |n| w.nodes[n as usize].boot);
        if let Op::FencedMove { part, from, to } = op {
            // The fence waits for a caught-up follower; the ChangeLeader follows it.
            let wait = w.catch_up_wait(part, from, to);
            self.running[q] = Some((op, w.now, boot));
            w.after_model(
                wait,
                ModelEv {
                    code: FENCE,
                    a: q as u32,
                    b: 0,
                    c: 0,
                },
            );
            return;
        }
        self.running[q] = Some((op, w.now, boot));
        w.after_model(
            cost,
            ModelEv {
                code: OP_DONE,
                a: q as u32,
                b: 0,
                c: 0,
            },
        );
    }

    pub(super) fn op_done(&mut self, w: &mut World, q: usize) {
        let Some((op, started, boot)) = self.running.get_mut(q).and_then(Option::take) else {
            return;
        };
        self.op_finished(&op);
        // An op on a tablet that went down or restarted while it ran fails.
        let lost = |n: u32| !w.nodes[n as usize].up() || w.nodes[n as usize].boot != boot;
        let failed = match &op {
            Op::RecoverTable { node, .. }
            | Op::ReAddReplica { node, .. }
            | Op::AddReplica { node, .. } => lost(*node),
            _ => false,
        };
        self.mark(&op, "kDoing", if failed { "kFailed" } else { "kDone" });
        match op {
            _ if failed => w.touch(op.part()),
            Op::ChangeLeader { part, from, to } => {
                if !w.change_leader_op(part, from, to) {
                    self.mark(&op, "kDone", "kFailed");
                }
                if let Some(i) = self
                    .recover_after_move
                    .iter()
                    .position(|&x| x == (part, from))
                {
                    self.recover_after_move.swap_remove(i);
                    let max = self.queues.len();
                    self.enqueue_once(w, Op::RecoverTable { part, node: from }, max);
                }
            }
            Op::RecoverTable { part, node } => match w.recover_table_child(part, node) {
                // Inserted right behind its parent in the same queue
                // (`NameServerImpl::AddOPData` @v0.9.2).
                Ok(Some(child)) => self.enqueue_front(w, q, child),
                Ok(None) => {}
                Err(()) => self.mark(&op, "kDone", "kFailed"),
            },
            Op::ReAddReplica { part, node, .. } => w.recover_table_op(part, node, started, boot),
            Op::AddReplica { part, node } => w.add_replica_op(part, node, started, boot),
            Op::DelReplica { part, node } => w.del_replica_op(part, node),
            Op::FencedMove { part, from, to } => match w.fenced_move_op(part, from, to) {
                Err(why) => {
                    self.mark(&op, "kDone", "kFailed");
                    if to.is_none() {
                        self.move_failed[from as usize] = Some(why);
                    }
                }
                // A leadership moved: the displaced leader, flagged leader and not alive, is
                // recovered as a follower (pre-upgrade's `recovertable` after each
                // `changeleader`, `tools/openmldb_ops.py` @v0.9.2), so that its partition
                // keeps its replicas until the tablet stops. It runs next on its queue, ahead
                // of the moves still queued there, as the backend sends each round's
                // recoveries before its next round of moves (`moves` in
                // `backends/openmldb/src/view.rs`). A temporary replica about to be deleted
                // is not recovered.
                Ok(()) => {
                    let deleted = self.has_op(|o| {
                        matches!(o, Op::DelReplica { part: p, node: n } if *p == part && *n == from)
                    });
                    if !deleted {
                        self.enqueue_front(w, q, Op::RecoverTable { part, node: from });
                    }
                }
            },
        }
        w.changed();
        self.start_op(w, q);
    }

    /// Queues `op` at the head of queue `q`, to run next there.
    fn enqueue_front(&mut self, w: &mut World, q: usize, op: Op) {
        for n in op.nodes().into_iter().flatten() {
            self.node_ops[n as usize] += 1;
        }
        self.next_op_id += 1;
        self.records.push_back(OpRecord {
            id: self.next_op_id,
            op: op.clone(),
            status: "kInited",
        });
        if self.records.len() > MAX_OP_NUM {
            self.records.pop_front();
        }
        self.queues[q].push_front(op);
        w.changed();
    }

    /// `recoverdata` for `node` (`tools/openmldb_ops.py` `RecoverData` @v0.9.2): every replica
    /// it holds but has not loaded is marked not alive (`UpdateTableAliveStatus`), then
    /// recovered by RecoverTable on `name_server_task_concurrency` queues; a replica still
    /// flagged the alive leader is reloaded in place (the tool's `LoadTable` on the leader).
    pub(crate) fn recover_data(&mut self, w: &mut World, node: u32) {
        let parts = w.nodes[node as usize].parts.clone();
        for p in parts {
            let Some(r) = w.parts[p as usize].replicas.iter().find(|r| r.node == node) else {
                continue;
            };
            if r.loaded && r.role != Rep::Inactive {
                continue;
            }
            if r.role == Rep::Primary {
                let c = self.concurrency;
                let how = ReAdd::Reload;
                self.enqueue_once(w, Op::ReAddReplica { part: p, node, how }, c);
                continue;
            }
            w.update_table_alive(p, node, false);
            let c = self.concurrency;
            self.enqueue_once(w, Op::RecoverTable { part: p, node }, c);
        }
    }

    /// What the backend's rejoin and heal do for a tablet (`recover_unloaded` in
    /// `backends/openmldb/src/recover.rs`): a partition it still leads in the records with
    /// nothing loaded is moved to a follower first (ChangeLeader without candidate), its
    /// replica recovered once that ends; every other replica it has not loaded is marked not
    /// alive (UpdateTableAliveStatus), then RecoverEndpoint recovers every replica marked not
    /// alive over `name_server_task_max_concurrency` queues.
    pub(crate) fn recover_unloaded(&mut self, w: &mut World, node: u32) {
        let parts = w.nodes[node as usize].parts.clone();
        for p in parts {
            let part = &w.parts[p as usize];
            let Some(r) = part.replicas.iter().find(|r| r.node == node) else {
                continue;
            };
            match (r.loaded, r.role) {
                (_, Rep::Inactive) | (true, _) => {}
                (false, Rep::Primary) if part.replicas.len() > 1 => {
                    if !self.recover_after_move.contains(&(p, node)) {
                        self.recover_after_move.push((p, node));
                        let op = Op::ChangeLeader {
                            part: p,
                            from: node,
                            to: None,
                        };
                        self.enqueue(w, op);
                    }
                }
                (false, _) => w.update_table_alive(p, node, false),
            }
        }
        let max = self.queues.len();
        self.recover_endpoint(w, node, max);
    }

    /// Recovers the replica of `part` on `from` once the ChangeLeader moving `part` away
    /// from it ends.
    pub(super) fn recover_after_move_of(&mut self, part: u32, from: u32) {
        if !self.recover_after_move.contains(&(part, from)) {
            self.recover_after_move.push((part, from));
        }
    }

    /// RecoverEndpoint with `concurrency` (at most `name_server_task_max_concurrency`): a
    /// RecoverTable for every replica of `node` the nameserver marks not alive, on queue
    /// `pid % concurrency`; a replica it still marks alive is skipped, loaded or not
    /// (`NameServerImpl::RecoverEndpointDBInternal` @v0.9.2).
    pub(crate) fn recover_endpoint(&mut self, w: &mut World, node: u32, concurrency: usize) {
        let parts = w.nodes[node as usize].parts.clone();
        for p in parts {
            let dead = w.parts[p as usize]
                .replicas
                .iter()
                .any(|r| r.node == node && r.role == Rep::Inactive);
            if dead {
                self.enqueue_once(w, Op::RecoverTable { part: p, node }, concurrency);
            }
        }
    }

    /// Cancels the queued (not running) leader moves away from `node` (OpenMLDB CancelOP).
    pub(super) fn cancel_moves_from(&mut self, w: &mut World, node: u32) {
        let mut cancelled = Vec::new();
        for q in &mut self.queues {
            q.retain(|op| {
                let away = matches!(op, Op::ChangeLeader { from, .. } | Op::FencedMove { from, .. }
                    if *from == node);
                if away {
                    cancelled.push(op.clone());
                }
                !away
            });
        }
        for op in &cancelled {
            self.op_finished(op);
            self.mark(op, "kInited", "kCanceled");
        }
        for q in 0..self.queues.len() {
            self.start_op(w, q);
        }
    }

    /// OpenMLDB's offline procedure (`NameServerImpl::OnTabletOffline` @v0.9.2): every replica
    /// on `node` is marked not alive, but in a partition whose last alive replica it is
    /// (`UpdateEndpointTableAlive`) unless it is the only replica; then a ChangeLeader without
    /// candidate for each partition it led or whose leader is dead, when a follower is listed
    /// (`OfflineEndpointDBInternal`; its followers' `kOfflineReplicaOP` only marks what is
    /// marked already).
    pub(super) fn auto_offline(&mut self, w: &mut World, node: u32) {
        self.auto_offlined[node as usize] = true;
        let parts = w.nodes[node as usize].parts.clone();
        for p in parts {
            let part = &w.parts[p as usize];
            let was_leader = w.primary(p).is_some_and(|r| r.node == node);
            let others_alive = part
                .replicas
                .iter()
                .any(|r| r.node != node && r.role != Rep::Inactive);
            // A partition's only replica is marked dead too (`kUpdatePartitionStatusOP`), so
            // that RecoverEndpoint reloads it.
            let single = part.replicas.len() == 1;
            // A follower whose partition has no alive leader elsewhere gets a ChangeLeader
            // as well (`OfflineEndpointDBInternal`).
            let leaderless = !was_leader
                && !part
                    .replicas
                    .iter()
                    .any(|r| r.node != node && r.role == Rep::Primary);
            let follower_listed = part.replicas.iter().any(|r| {
                r.node != node && r.role == Rep::Secondary && !w.nodes[r.node as usize].offline
            });
            if others_alive || single {
                w.update_table_alive(p, node, false);
            }
            // With no follower to take over, CreateChangeLeaderOP creates no op.
            if (was_leader || leaderless) && follower_listed {
                let from = if was_leader {
                    node
                } else {
                    w.parts[p as usize]
                        .replicas
                        .iter()
                        .find(|r| r.ex_leader || r.role == Rep::Primary)
                        .map_or(node, |r| r.node)
                };
                self.enqueue(
                    w,
                    Op::ChangeLeader {
                        part: p,
                        from,
                        to: None,
                    },
                );
            }
            w.touch(p);
        }
    }
}
