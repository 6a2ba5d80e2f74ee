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
//! shared/reference/openmldb.md sections 2.5, 2.6 and 6.2.

use super::{Ev, Rep, Us, World, us};

/// An OpenMLDB nameserver op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Move the leadership of `part` off `from`: to `to`, or to the follower with the
    /// highest offset.
    ChangeLeader {
        part: u32,
        from: u32,
        to: Option<u32>,
    },
    /// Reload the replica of `part` on `node` and re-attach it to the leader.
    RecoverTable { part: u32, node: u32 },
}

impl Op {
    fn part(&self) -> u32 {
        match self {
            Op::ChangeLeader { part, .. } | Op::RecoverTable { part, .. } => *part,
        }
    }

    fn nodes(&self) -> [Option<u32>; 2] {
        match self {
            Op::ChangeLeader { from, to, .. } => [Some(*from), *to],
            Op::RecoverTable { node, .. } => [Some(*node), None],
        }
    }
}

impl World {
    /// Queues an op on its queue (partition id mod the queue count).
    pub(crate) fn enqueue(&mut self, op: Op) {
        let q = op.part() as usize % self.ops.len();
        for n in op.nodes().into_iter().flatten() {
            self.nodes[n as usize].ops += 1;
        }
        self.ops[q].push_back(op);
        self.start_op(q);
        self.changed();
    }

    fn op_finished(&mut self, op: &Op) {
        for n in op.nodes().into_iter().flatten() {
            let c = &mut self.nodes[n as usize].ops;
            *c = c.saturating_sub(1);
        }
    }

    /// Whether any op is queued or running.
    pub(crate) fn ops_pending(&self) -> bool {
        self.running_op.iter().any(Option::is_some) || self.ops.iter().any(|q| !q.is_empty())
    }

    pub(super) fn start_op(&mut self, q: usize) {
        if self.running_op[q].is_some() || self.leader.is_none() {
            return;
        }
        // A ChangeLeader away from a node with a stuck drain never starts: it blocks its
        // queue, as a stuck op does.
        if let Some(Op::ChangeLeader { from, .. }) = self.ops[q].front()
            && self.nodes[*from as usize].stuck_drain
        {
            return;
        }
        let Some(op) = self.ops[q].pop_front() else {
            return;
        };
        let mut cost = us(self.t.op);
        if let Op::RecoverTable { part, node } = &op {
            let have = self.parts[*part as usize]
                .replicas
                .iter()
                .find(|r| r.node == *node)
                .map_or(0, |r| r.log.len() as u64);
            let missed = (self.parts[*part as usize].acked.len() as u64).saturating_sub(have);
            let since_snapshot = self.nodes[*node as usize].unflushed
                / self.nodes[*node as usize].parts.len().max(1) as u64;
            cost = cost
                .saturating_add(us(self.t.catch_up))
                .saturating_add(missed.saturating_mul(us(self.t.catch_up_per_write)))
                .saturating_add(since_snapshot.saturating_mul(us(self.t.replay_per_write)));
        }
        self.running_op[q] = Some((op, self.now));
        self.after(cost, Ev::OpDone { queue: q });
    }

    pub(super) fn op_done(&mut self, q: usize) {
        let Some((op, started)) = self.running_op[q].take() else {
            return;
        };
        self.op_finished(&op);
        match op {
            Op::ChangeLeader { part, from, to } => self.change_leader(part, from, to),
            Op::RecoverTable { part, node } => self.recover_table(part, node, started),
        }
        self.changed();
        self.start_op(q);
    }

    /// SelectLeader, ChangeLeader, UpdateLeaderInfo: followers adopt the new term (they hold
    /// what replication carried until now), the candidate becomes leader, the old leader is
    /// marked not alive and, if its process still runs, keeps taking the writes of clients that
    /// have not re-routed yet.
    fn change_leader(&mut self, part: u32, from: u32, to: Option<u32>) {
        self.replicate(part);
        let p = &self.parts[part as usize];
        let candidates: Vec<usize> = p
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.node != from
                    && r.role == Rep::Secondary
                    && r.loaded
                    && self.nodes[r.node as usize].up()
            })
            .map(|(i, _)| i)
            .collect();
        let pick = match to {
            Some(t) => candidates
                .iter()
                .copied()
                .find(|&i| p.replicas[i].node == t),
            None => candidates
                .iter()
                .copied()
                .max_by_key(|&i| (p.replicas[i].log.len(), std::cmp::Reverse(i))),
        };
        if let Some(c) = pick {
            let from_up = self.nodes[from as usize].up()
                && p.replicas.iter().any(|r| r.node == from && r.loaded);
            let until = self.now + us(self.t.route_refresh);
            let p = &mut self.parts[part as usize];
            for r in p.replicas.iter_mut() {
                if r.node == from && r.role == Rep::Primary {
                    r.role = Rep::Inactive;
                }
            }
            p.replicas[c].role = Rep::Primary;
            p.replicas[c].behind_until = 0;
            if from_up && until > self.now {
                p.stale_leader = Some((from, until));
            }
        }
        self.touch(part);
    }

    /// RecoverTable and its ReAddReplica child: the replica loads (its own snapshot, the
    /// leader re-ships the rest), is marked alive while the tail it missed during the op is
    /// still streaming, and follows the leader from then on. A leader with no other leader to
    /// follow reloads its own binlog.
    fn recover_table(&mut self, part: u32, node: u32, started: Us) {
        if !self.nodes[node as usize].up() {
            self.touch(part);
            return;
        }
        self.replicate(part);
        let leader = self
            .primary(part)
            .filter(|r| r.node != node && self.serving(r))
            .map(|r| r.log.clone());
        let per_write = us(self.t.catch_up_per_write);
        let now = self.now;
        let Some(r) = self.parts[part as usize]
            .replicas
            .iter_mut()
            .find(|r| r.node == node)
        else {
            return;
        };
        r.loaded = true;
        match leader {
            Some(log) => {
                r.role = Rep::Secondary;
                // What the leader had when the op began is loaded; what came since streams.
                r.log.follow(&log, started);
                let backlog = (log.len() as u64).saturating_sub(r.log.len() as u64);
                r.behind_until = now.saturating_add(backlog.saturating_mul(per_write));
                let until = r.behind_until;
                if until > now {
                    self.schedule(until, Ev::Unblock { part });
                }
            }
            None => {
                if r.role == Rep::Inactive {
                    r.role = Rep::Primary;
                }
            }
        }
        self.touch(part);
    }

    /// The first op queued or running that concerns `node` (or any op), described.
    pub(crate) fn pending_op(&self, node: Option<u32>) -> Option<String> {
        if let Some(n) = node
            && self.nodes[n as usize].ops == 0
        {
            return None;
        }
        let mentions = |op: &&Op| node.is_none_or(|n| op.nodes().contains(&Some(n)));
        let name = |n: u32| self.nodes[n as usize].id.to_string();
        let op = self
            .running_op
            .iter()
            .flatten()
            .map(|(op, _)| op)
            .find(mentions)
            .map(|op| (op, "running"))
            .or_else(|| {
                self.ops
                    .iter()
                    .flatten()
                    .find(mentions)
                    .map(|op| (op, "queued"))
            })?;
        Some(match op {
            (Op::ChangeLeader { part, from, to }, state) => format!(
                "ChangeLeader of partition {part} from {} to {} is {state}",
                name(*from),
                to.map_or_else(|| "any follower".to_string(), name)
            ),
            (Op::RecoverTable { part, node }, state) => {
                format!(
                    "RecoverTable of partition {part} on {} is {state}",
                    name(*node)
                )
            }
        })
    }

    /// Queues a RecoverTable for every replica of `node` that is not loaded or is marked
    /// dead (OpenMLDB RecoverEndpoint, or the ops tool's recoverdata).
    pub(crate) fn recover_replicas(&mut self, node: u32) {
        let parts = self.nodes[node as usize].parts.clone();
        for p in parts {
            let needs = self.parts[p as usize]
                .replicas
                .iter()
                .any(|r| r.node == node && (!r.loaded || r.role == Rep::Inactive));
            if needs {
                self.enqueue(Op::RecoverTable { part: p, node });
            }
        }
    }

    /// Cancels the queued (not running) leader moves away from `node` (OpenMLDB CancelOP).
    pub(crate) fn cancel_moves_from(&mut self, node: u32) {
        let mut cancelled = Vec::new();
        for q in &mut self.ops {
            q.retain(|op| {
                let away = matches!(op, Op::ChangeLeader { from, .. } if *from == node);
                if away {
                    cancelled.push(op.clone());
                }
                !away
            });
        }
        for op in &cancelled {
            self.op_finished(op);
        }
        for q in 0..self.ops.len() {
            self.start_op(q);
        }
    }

    /// A tablet's process is gone: its memory tables with it. Its leaderships stay in the
    /// nameserver's metadata until someone moves them.
    pub(super) fn openmldb_tablet_gone(&mut self, node: u32) {
        let parts = self.nodes[node as usize].parts.clone();
        for p in parts {
            for r in self.parts[p as usize]
                .replicas
                .iter_mut()
                .filter(|r| r.node == node)
            {
                if r.role == Rep::Learner {
                    r.role = Rep::Inactive;
                }
                r.loaded = false;
            }
        }
    }

    /// A tablet's ZooKeeper node is there again. With auto_failover on, a restarted tablet
    /// (`startup_` prefix) gets the offline procedure if it had not yet, then RecoverEndpoint;
    /// a session blip within the heartbeat timeout changes nothing.
    pub(super) fn openmldb_tablet_registered(&mut self, node: u32, fresh_start: bool) {
        let was_auto = self.nodes[node as usize].auto_offlined;
        self.nodes[node as usize].auto_offlined = false;
        if self.knob("auto_failover") != "true" || !(fresh_start || was_auto) {
            return;
        }
        if !was_auto {
            self.auto_offline(node);
            self.nodes[node as usize].auto_offlined = false;
        }
        self.recover_replicas(node);
    }

    /// OpenMLDB's offline procedure: move leaders off `node`, mark its replicas dead.
    pub(super) fn auto_offline(&mut self, node: u32) {
        self.nodes[node as usize].auto_offlined = true;
        let parts = self.nodes[node as usize].parts.clone();
        for p in parts {
            let is_leader = self.primary(p).is_some_and(|r| r.node == node);
            if is_leader {
                self.enqueue(Op::ChangeLeader {
                    part: p,
                    from: node,
                    to: None,
                });
            } else if let Some(r) = self.parts[p as usize]
                .replicas
                .iter_mut()
                .find(|r| r.node == node)
            {
                r.role = Rep::Inactive;
            }
            self.touch(p);
        }
    }
}
