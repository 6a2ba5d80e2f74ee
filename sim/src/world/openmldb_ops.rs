//! The OpenMLDB nameserver's ops as they change the world: ChangeLeader (unfenced),
//! RecoverTable, and the AddReplica and DelReplica of temporary replicas. Reference:
//! docs/openmldb-interfaces.md ("The nameserver's ops", "A tablet restart").

use rollout_core::Health;

use super::openmldb::{Op, OpenMldb, ReAdd};
use super::{Ev, Rep, Replica, Us, World, us};

impl World {
    /// SelectLeader, ChangeLeader, UpdateLeaderInfo (`NameServerImpl::SelectLeader`,
    /// `ChangeLeader`, `UpdateLeaderInfo` @v0.9.2): an alive follower on a serving tablet
    /// leads (the candidate `to` whatever its offset, else the one with the highest offset),
    /// followers adopt the new term (they hold what replication carried until now), the
    /// replica that was the alive leader is marked not alive but keeps its leader flag and,
    /// if its process still runs, keeps taking the writes of clients that have not
    /// re-routed yet. Nothing happens when another replica leads already, or when no
    /// follower can take over (the op would not have been created). A named candidate that
    /// cannot lead by the time the op runs (down, or nothing loaded) fails it after
    /// SelectLeader already gave the followers a higher term: they refuse the old leader from
    /// then on, which still takes writes (`false`: the op is `kFailed`).
    pub(super) fn change_leader_op(&mut self, part: u32, from: u32, to: Option<u32>) -> bool {
        if self.primary(part).is_some_and(|r| r.node != from) {
            self.touch(part);
            return true;
        }
        self.replicate(part);
        if let Err(bumped) = self.select_leader_reach(part, from) {
            let from_serving = self
                .primary(part)
                .is_some_and(|r| r.node == from && self.serving(r));
            if bumped && from_serving {
                self.parts[part as usize].orphaned = true;
            }
            self.touch(part);
            return false;
        }
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
        let ok = match (pick, to) {
            (Some(c), _) => {
                let from_up = self.nodes[from as usize].up()
                    && p.replicas
                        .iter()
                        .any(|r| r.node == from && r.loaded && r.role == Rep::Primary);
                self.update_leader_info(part, from, c, from_up);
                true
            }
            (None, Some(_)) => {
                self.parts[part as usize].orphaned = true;
                false
            }
            (None, None) => true,
        };
        self.touch(part);
        ok
    }

    /// SelectLeader's reach (`NameServerImpl::CreateChangeLeaderOP` and `SelectLeader`
    /// @v0.9.2): the op lists every replica marked alive and not leader on a tablet the
    /// nameserver holds healthy, and each must answer FollowOfNoOne (its process up, the
    /// partition loaded), in order; the first that does not fails the op, after those asked
    /// before it took the new term. `Err(bumped)`: it fails, and whether some follower took
    /// the new term.
    pub(super) fn select_leader_reach(&self, part: u32, from: u32) -> Result<(), bool> {
        let mut bumped = false;
        for r in &self.parts[part as usize].replicas {
            let n = &self.nodes[r.node as usize];
            let listed = r.node != from && r.role == Rep::Secondary && !n.offline;
            if !listed {
                continue;
            }
            if !(n.up() && r.loaded) {
                return Err(bumped);
            }
            bumped = true;
        }
        Ok(())
    }

    /// `UpdateTableAliveStatus` of the replica of `part` on `node` (or, with auto failover,
    /// `UpdateEndpointTableAlive`): only the alive flag changes; a replica that leads keeps
    /// its leader flag when marked not alive, and one flagged leader leads again when marked
    /// alive while no other does (`NameServerImpl::UpdateTableAliveStatus` @v0.9.2).
    pub(crate) fn update_table_alive(&mut self, part: u32, node: u32, alive: bool) {
        let has_leader = self.primary(part).is_some();
        let Some(r) = self.parts[part as usize]
            .replicas
            .iter_mut()
            .find(|r| r.node == node)
        else {
            return;
        };
        match (alive, r.role) {
            (false, Rep::Primary) => {
                r.role = Rep::Inactive;
                r.ex_leader = true;
            }
            (false, Rep::Secondary | Rep::Learner) => r.role = Rep::Inactive,
            (true, Rep::Inactive) if r.ex_leader && !has_leader => {
                r.role = Rep::Primary;
                r.told_to_follow = false;
                r.ex_leader = false;
            }
            (true, Rep::Inactive) => r.role = Rep::Secondary,
            _ => {}
        }
        self.touch(part);
    }

    /// The child a RecoverTable of `part` on `node` creates when its nameserver task runs
    /// (`NameServerImpl::RecoverEndpointTable` @v0.9.2): none when the replica is alive again
    /// ("need not recover"); a reload as leader for a single replica; the cheap re-add for a
    /// tablet that still has the partition loaded; a reload otherwise.
    ///
    /// # Errors
    /// The partition has followers and no alive leader on a serving tablet: the task fails
    /// ("not has tablet") and the op is `kFailed`.
    pub(super) fn recover_table_child(&mut self, part: u32, node: u32) -> Result<Option<Op>, ()> {
        let p = &self.parts[part as usize];
        let Some(r) = p.replicas.iter().find(|r| r.node == node) else {
            return Ok(None);
        };
        if r.role != Rep::Inactive {
            self.touch(part);
            return Ok(None);
        }
        let leader = self
            .primary(part)
            .is_some_and(|l| l.node != node && self.nodes[l.node as usize].up());
        if p.replicas.len() > 1 && !leader {
            self.touch(part);
            return Err(());
        }
        let (single, loaded) = (p.replicas.len() == 1, r.loaded);
        // The task's first step tells the tablet its replica follows (`ChangeRole`).
        self.tell_to_follow(part, node);
        let how = if single {
            ReAdd::Single
        } else if loaded {
            ReAdd::Simplify
        } else {
            ReAdd::Reload
        };
        Ok(Some(Op::ReAddReplica { part, node, how }))
    }

    /// UpdateLeaderInfo: the leader on `from` is marked not alive and replica `c` leads;
    /// clients that have not re-routed keep sending to `from` while its process runs, for
    /// `route_refresh` plus `route_refresh_per_table` per table (the SDK's watch and catalog
    /// rebuild). Returns whether that window opened.
    pub(super) fn update_leader_info(
        &mut self,
        part: u32,
        from: u32,
        c: usize,
        from_up: bool,
    ) -> bool {
        let refresh = self.t.route_refresh + self.t.route_refresh_per_table * self.tables;
        let until = self.now + us(refresh);
        let now = self.now;
        let p = &mut self.parts[part as usize];
        for r in p.replicas.iter_mut() {
            if r.role == Rep::Primary || (r.node == from && r.ex_leader) {
                r.role = Rep::Inactive;
                r.ex_leader = true;
            }
        }
        p.replicas[c].role = Rep::Primary;
        p.replicas[c].told_to_follow = false;
        p.replicas[c].ex_leader = false;
        p.replicas[c].behind_until = 0;
        p.orphaned = false;
        let stale = from_up && until > now;
        if stale {
            p.stale_leader = Some((from, until));
        }
        stale
    }

    /// RecoverTable and its ReAddReplica child: the replica loads (its own snapshot, the
    /// leader re-ships the rest), is marked alive while the tail it missed during the op is
    /// still streaming, and follows the leader from then on. With no alive leader it fails,
    /// but for a partition's only replica, which reloads its own binlog as leader.
    pub(super) fn recover_table_op(&mut self, part: u32, node: u32, started: Us, boot: u64) {
        // The op fails when its tablet is down or restarted while it ran (what it loaded went
        // with the old process).
        if !self.nodes[node as usize].up() || self.nodes[node as usize].boot != boot {
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
        let single = self.parts[part as usize].replicas.len() == 1;
        let Some(r) = self.parts[part as usize]
            .replicas
            .iter_mut()
            .find(|r| r.node == node)
        else {
            return;
        };
        match leader {
            Some(log) => {
                r.loaded = true;
                r.role = Rep::Secondary;
                r.ex_leader = false;
                // What the leader had when the op began is loaded; what came since streams.
                r.log.follow(&log, started);
                let backlog = (log.len() as u64).saturating_sub(r.log.len() as u64);
                r.behind_until = now.saturating_add(backlog.saturating_mul(per_write));
                let until = r.behind_until;
                if until > now {
                    self.schedule(until, Ev::Unblock { part });
                }
            }
            // No serving leader: a partition's only replica reloads its own binlog as
            // leader; with followers the op fails ("not has tablet"), whatever their logs
            // (`NameServerImpl::RecoverEndpointTable` @v0.9.2, `has_follower`).
            None if single => {
                r.loaded = true;
                r.role = Rep::Primary;
                r.told_to_follow = false;
                r.ex_leader = false;
            }
            None => {}
        }
        self.touch(part);
    }

    /// AddReplicaNS done: the new follower has the snapshot the leader had when the op began
    /// and streams what came since (marked alive meanwhile, as RecoverTable does). Fails
    /// when the target tablet is down or restarted while it ran, or the partition has no
    /// serving leader; a replica already there is left alone.
    pub(super) fn add_replica_op(&mut self, part: u32, node: u32, started: Us, boot: u64) {
        let target_up = self.nodes[node as usize].up() && self.nodes[node as usize].boot == boot;
        let present = self.parts[part as usize]
            .replicas
            .iter()
            .any(|r| r.node == node);
        self.replicate(part);
        let leader = self
            .primary(part)
            .filter(|r| self.serving(r))
            .map(|r| r.log.clone());
        let (true, false, Some(log)) = (target_up, present, leader) else {
            self.touch(part);
            return;
        };
        let mut r = Replica::new(node, Rep::Secondary);
        r.log.follow(&log, started);
        let backlog = (log.len() as u64).saturating_sub(r.log.len() as u64);
        let now = self.now;
        r.behind_until = now.saturating_add(backlog.saturating_mul(us(self.t.catch_up_per_write)));
        let until = r.behind_until;
        self.parts[part as usize].replicas.push(r);
        self.nodes[node as usize].parts.push(part);
        self.mon.replicas_added += 1;
        if until > now {
            self.schedule(until, Ev::Unblock { part });
        }
        self.touch(part);
    }

    /// DelReplicaNS done: the follower on `node` is dropped (the nameserver refuses to delete
    /// a leader: then nothing changes).
    pub(super) fn del_replica_op(&mut self, part: u32, node: u32) {
        let replicas = &mut self.parts[part as usize].replicas;
        if let Some(i) = replicas
            .iter()
            .position(|r| r.node == node && r.role != Rep::Primary)
        {
            replicas.remove(i);
            self.nodes[node as usize].parts.retain(|&p| p != part);
        }
        self.touch(part);
    }
}

impl OpenMldb {
    /// The first op queued or running that concerns `node` (or any op), described.
    pub(super) fn describe(&self, w: &World, node: Option<u32>) -> Option<String> {
        let mentions = |op: &&Op| node.is_none_or(|n| op.nodes().contains(&Some(n)));
        let name = |n: u32| w.nodes[n as usize].id.to_string();
        let op = self
            .running
            .iter()
            .flatten()
            .map(|(op, _, _)| op)
            .find(mentions)
            .map(|op| (op, "running"))
            .or_else(|| {
                self.queues
                    .iter()
                    .flatten()
                    .find(mentions)
                    .map(|op| (op, "queued"))
            })?;
        Some(match op {
            (
                op @ (Op::ChangeLeader { part, from, to } | Op::FencedMove { part, from, to }),
                state,
            ) => format!(
                "{} of partition {part} from {} to {} is {state}",
                op.name(),
                name(*from),
                to.map_or_else(|| "any follower".to_string(), name)
            ),
            (
                op @ (Op::RecoverTable { part, node }
                | Op::ReAddReplica { part, node, .. }
                | Op::AddReplica { part, node }
                | Op::DelReplica { part, node }),
                state,
            ) => format!(
                "{} of partition {part} on {} is {state}",
                op.name(),
                name(*node)
            ),
        })
    }

    /// Whether the temporary replica of `part` on `node` has caught up (`removed` false) or
    /// is gone with the partition led (`removed` true); a failed op fails the wait.
    pub(super) fn temporary_health(
        &self,
        w: &World,
        part: u32,
        node: u32,
        removed: bool,
    ) -> Health {
        let p = &w.parts[part as usize];
        let replica = p.replicas.iter().find(|r| r.node == node);
        let name = &w.nodes[node as usize].id;
        let queued = self.has_op(|op| {
            matches!(op, Op::AddReplica { part: q, node: n } | Op::DelReplica { part: q, node: n }
                if *q == part && *n == node)
        });
        match (removed, replica) {
            (false, Some(r)) if r.loaded && w.serving(r) && r.behind_until <= w.now => {
                Health::Healthy
            }
            (false, Some(_)) => Health::waiting(format!(
                "the temporary replica of partition {part} on {name} is still catching up"
            )),
            (false, None) if queued => Health::waiting(format!(
                "AddReplica of partition {part} on {name} is not done yet"
            )),
            (false, None) => Health::failed(format!(
                "AddReplica of partition {part} on {name} failed: the tablet or the \
                 partition's leader was down while it ran"
            )),
            (true, Some(_)) if queued || self.has_op(|op| op.part() == part) => Health::waiting(
                format!("the temporary replica of partition {part} on {name} is being removed"),
            ),
            (true, Some(_)) => Health::failed(format!(
                "DelReplica of partition {part} on {name} did not remove it: it is still the \
                 leader, no caught-up replica could take over"
            )),
            (true, None) if w.primary(part).is_some_and(|r| w.serving(r)) => Health::Healthy,
            (true, None) => Health::waiting(format!("partition {part} has no serving leader")),
        }
    }
}
