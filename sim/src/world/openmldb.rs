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

use std::any::Any;
use std::collections::VecDeque;

use rollout_core::{Health, Knob, Procedure, RoleKind};

pub(crate) use super::openmldb_op::{Op, OpRecord, ReAdd};
use super::{Model, ModelEv, Profile, Rep, Us, World, us};
use crate::config::Flavor;

/// The nameserver's state: its op queues and what it remembers of each tablet.
#[derive(Debug)]
pub(crate) struct OpenMldb {
    /// Every queue RecoverEndpoint may use; single ops use the first `concurrency`.
    pub(super) queues: Vec<VecDeque<Op>>,
    /// `name_server_task_concurrency`.
    concurrency: usize,
    /// The op running on each queue, when it started and the boot of the node it targets.
    pub(super) running: Vec<Option<(Op, Us, u64)>>,
    /// Ops queued or running that name each node.
    node_ops: Vec<u32>,
    /// Partitions each tablet led when the rollout drained it, to hand back on rejoin.
    led: Vec<Vec<u32>>,
    /// Auto failover already ran its offline procedure for the tablet.
    auto_offlined: Vec<bool>,
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
const AUTO_OFFLINE: u8 = 1;
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
    fn enqueue_once(&mut self, w: &mut World, op: Op, concurrency: usize) {
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

    fn start_op(&mut self, w: &mut World, q: usize) {
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

    fn op_done(&mut self, w: &mut World, q: usize) {
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
    fn cancel_moves_from(&mut self, w: &mut World, node: u32) {
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
    fn auto_offline(&mut self, w: &mut World, node: u32) {
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

impl Model for OpenMldb {
    fn profile(&self) -> Profile {
        Profile {
            flavor: Flavor::OpenMldb,
            write_quorum: 1,
            synchronous: false,
            lease_drops_replicas: false,
            data_survives_restart: false,
            early_start_exits: true,
            partition_prefix: "t",
            min_serving: 1,
            config_files: &[
                "conf/nameserver.flags",
                "conf/tablet.flags",
                "conf/apiserver.flags",
                "conf/taskmanager.properties",
            ],
        }
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        match procedure {
            Procedure::HighAvailability => {
                vec![Knob::rollout("auto_failover", "false").blocks_healing()]
            }
            _ => Vec::new(),
        }
    }

    fn start(&mut self, _: &mut World) {}

    fn on_event(&mut self, w: &mut World, ev: ModelEv) {
        match ev.code {
            OP_DONE => self.op_done(w, ev.a as usize),
            FENCE => self.fence(w, ev.a as usize, ev.b, ev.c == 1),
            AUTO_OFFLINE => {
                let node = ev.a;
                let n = &w.nodes[node as usize];
                if n.boot == ev.c
                    && n.offline
                    && !self.auto_offlined[node as usize]
                    && w.knob("auto_failover") == "true"
                {
                    self.auto_offline(w, node);
                }
            }
            _ => {}
        }
    }

    /// A tablet's process is gone: its memory tables with it (the kernel unloads them); its
    /// leaderships stay in the nameserver's metadata until someone moves them.
    fn data_node_gone(&mut self, w: &mut World, node: u32) {
        let parts = w.nodes[node as usize].parts.clone();
        for p in parts {
            for r in w.parts[p as usize]
                .replicas
                .iter_mut()
                .filter(|r| r.node == node && r.role == Rep::Learner)
            {
                r.role = Rep::Inactive;
            }
        }
    }

    /// The tablet's ZooKeeper session expired: `tablet_heartbeat_timeout` later, auto failover
    /// runs the offline procedure.
    fn data_node_detected(&mut self, w: &mut World, node: u32) {
        let boot = w.nodes[node as usize].boot;
        let d = us(w.t.heartbeat_timeout);
        w.after_model(
            d,
            ModelEv {
                code: AUTO_OFFLINE,
                a: node,
                b: 0,
                c: boot,
            },
        );
    }

    /// A tablet's ZooKeeper node is there again. With auto_failover on, a restarted tablet
    /// (`startup_` prefix) gets the offline procedure if it had not yet, then
    /// RecoverEndpoint; a session blip within the heartbeat timeout changes nothing.
    fn data_node_registered(&mut self, w: &mut World, node: u32, fresh_start: bool) {
        let was_auto = std::mem::take(&mut self.auto_offlined[node as usize]);
        if w.knob("auto_failover") != "true" || !(fresh_start || was_auto) {
            return;
        }
        // A new process runs the offline procedure again, whether or not it ran at the
        // heartbeat timeout (`OnTabletOnline` calls `OnTabletOffline(endpoint, true)`), then
        // RecoverEndpoint recovers what it marked (`RecoverEndpointInternal`, need_restore
        // false, `name_server_task_concurrency` queues).
        if fresh_start {
            self.auto_offline(w, node);
        }
        self.auto_offlined[node as usize] = false;
        let c = self.concurrency;
        self.recover_endpoint(w, node, c);
    }

    fn leader_elected(&mut self, w: &mut World) {
        for q in 0..self.queues.len() {
            self.start_op(w, q);
        }
    }

    /// pre-upgrade, fenced: for each partition it leads, a fenced move to a follower with the
    /// leader's offset (see `openmldb_fence.rs`; the upstream tool's unfenced ChangeLeader
    /// loses the writes clients send the old leader until they re-route, openmldb.md 2.5),
    /// each followed by a RecoverTable of the old leader, as pre-upgrade does: the nameserver
    /// marks a moved leader not alive, and without it the partition would run a replica short
    /// from the move until after the restart.
    fn drain(&mut self, w: &mut World, node: u32) {
        self.move_failed[node as usize] = None;
        w.nodes[node as usize].draining = true;
        w.nodes[node as usize].held = true;
        let led: Vec<u32> = w.nodes[node as usize]
            .parts
            .iter()
            .copied()
            .filter(|&p| w.primary(p).is_some_and(|r| r.node == node))
            .collect();
        self.led[node as usize] = led.clone();
        // A single-replica partition with no temporary replica (its downtime accepted) has
        // no one to take over: it goes down with the tablet.
        let led: Vec<u32> = led
            .into_iter()
            .filter(|&p| w.parts[p as usize].replicas.len() > 1)
            .collect();
        for p in led {
            self.enqueue(
                w,
                Op::FencedMove {
                    part: p,
                    from: node,
                    to: None,
                },
            );
        }
    }

    /// recoverdata for every replica not loaded, then post-upgrade: a fenced move back once
    /// the node's replica has the leader's offset (upstream's explicit candidate is taken
    /// whatever its offset), then RecoverTable of the displaced leader, which the nameserver
    /// marked not alive.
    fn rejoin(&mut self, w: &mut World, node: u32) {
        let i = node as usize;
        if !w.nodes[i].up() {
            // Not back yet: nothing to give it; `rejoined` keeps waiting.
            return;
        }
        w.nodes[i].draining = false;
        // A drain that never finished (the node was skipped) must not block the queues.
        self.cancel_moves_from(w, node);
        // With auto_failover on (a failure being ridden out released it) the nameserver
        // refuses every call below (301) and recovers the tablet itself; the leaderships it
        // had wait for a later rejoin.
        if w.knob("auto_failover") == "true" {
            w.changed();
            return;
        }
        // Idempotent: a tablet that restarted again since its last rejoin is recovered again.
        // With auto_failover off the nameserver still marks the restarted tablet's replicas
        // alive, and RecoverEndpoint skips those: see `recover_unloaded`.
        self.recover_unloaded(w, node);
        for p in std::mem::take(&mut self.led[i]) {
            // A leader that is down is auto failover's to move, not post-upgrade's.
            let from = w.primary(p).map(|r| r.node);
            if let Some(from) = from.filter(|&f| f != node && w.nodes[f as usize].up()) {
                self.enqueue(
                    w,
                    Op::FencedMove {
                        part: p,
                        from,
                        to: Some(node),
                    },
                );
            }
        }
        w.changed();
    }

    fn data_down_limit(&self, _: &World) -> Option<(usize, String)> {
        None
    }

    /// recoverdata for the tablets that no one recovers: those that came back while
    /// auto_failover was off (turning it back on does not reload a tablet that already
    /// registered), and replicas left marked dead by an op that ran while their tablet or
    /// their partition's leader was down. Nothing while auto_failover is on: the nameserver
    /// refuses UpdateTableAliveStatus and RecoverTable then (301, `NameServerImpl` @v0.9.2).
    fn heal(&mut self, w: &mut World) {
        self.heal_fences(w);
        if w.knob("auto_failover") != "false" {
            return;
        }
        for node in 0..w.nodes.len() as u32 {
            let n = &w.nodes[node as usize];
            // Every registered tablet, as the backend's heal does.
            let stranded =
                n.kind == RoleKind::Data && n.up() && n.attached && n.counts.not_back > 0;
            if stranded {
                self.recover_unloaded(w, node);
            }
        }
    }

    /// The node leads nothing, but single-replica partitions with no other replica
    /// (accepted as unavailable: pre-upgrade with `--allow_single_replica` skips them).
    fn drained(&self, w: &World, node: u32, describe: bool) -> Health {
        // Kept by `World::touch`: the drain runs while every change re-evaluates this.
        let n = &w.nodes[node as usize];
        let leads = n.counts.primaries.saturating_sub(n.counts.sole_primaries);
        if let Some(why) = &self.move_failed[node as usize] {
            return Health::failed(why.clone());
        }
        if leads > 0 {
            return Health::Waiting(if describe {
                format!("node {} is still leader of {leads} partitions", n.id)
            } else {
                String::new()
            });
        }
        match self.pending(w, Some(node)) {
            Some(op) => Health::Waiting(op),
            None => Health::Healthy,
        }
    }

    fn pending(&self, w: &World, node: Option<u32>) -> Option<String> {
        match node {
            Some(n) if self.node_ops[n as usize] == 0 => None,
            None if !self.ops_pending() => None,
            _ => self.describe(w, node),
        }
    }

    fn stopped(&self, w: &World, node: u32) -> Option<String> {
        let n = &w.nodes[node as usize];
        (n.kind == RoleKind::Data && !n.offline).then(|| {
            format!(
                "tablet {} still has a ZooKeeper session; the nameserver has not seen it offline",
                n.id
            )
        })
    }

    /// With auto failover off nothing reloads a tablet that restarted on its own.
    fn cluster_health(&self, w: &World) -> Option<Health> {
        if w.knob("auto_failover") != "false" {
            return None;
        }
        let stranded = w.nodes.iter().enumerate().find(|(i, n)| {
            n.kind == RoleKind::Data
                && !n.draining
                && self.led[*i].is_empty()
                && n.counts.unloaded > 0
        })?;
        Some(Health::failed(format!(
            "tablet {} restarted outside the rollout and auto_failover is off, so nothing \
             reloads its replicas: recover them (recoverdata) or abort to turn auto_failover \
             back on",
            stranded.1.id
        )))
    }

    fn temporary_replicas(&self) -> bool {
        true
    }

    /// pre-upgrade for a single-replica table: AddReplicaNS on another tablet.
    fn add_replica(&mut self, w: &mut World, part: u32, node: u32) {
        let present = w.parts[part as usize]
            .replicas
            .iter()
            .any(|r| r.node == node);
        if !present {
            // AddReplicaNS runs with concurrency 1: queue 0 (openmldb.md 2.6).
            self.enqueue_once(w, Op::AddReplica { part, node }, 1);
        }
    }

    /// post-upgrade for a single-replica table: the leadership back to `back` if the
    /// temporary replica holds it (a fenced move to that candidate), then DelReplicaNS.
    fn remove_replica(&mut self, w: &mut World, part: u32, node: u32, back: u32) {
        if !w.parts[part as usize]
            .replicas
            .iter()
            .any(|r| r.node == node)
        {
            return;
        }
        if w.primary(part).is_some_and(|r| r.node == node) {
            let c = self.concurrency;
            self.enqueue_once(
                w,
                Op::FencedMove {
                    part,
                    from: node,
                    to: Some(back),
                },
                c,
            );
        }
        let c = self.concurrency;
        self.enqueue_once(w, Op::DelReplica { part, node }, c);
    }

    fn temporary(&self, w: &World, part: u32, node: u32, removed: bool) -> Health {
        self.temporary_health(w, part, node, removed)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
