//! The rollout's zero-loss OpenMLDB leader move, step by step with its windows.
//!
//! TabletServer `ChangeRole(follower)` on a leader refuses its writes from then on
//! (`kTableIsFollower`, 103) but also drops its replicate nodes (`DelAllReplicateNode`): what
//! the followers have not received by then never ships. So the fence goes up only with a
//! follower at the leader's offset. When the followers lag (writes in flight), the move first
//! holds the whole tablet in follower mode (TabletServer `SetMode{follower: true}`: every
//! write refused with `kIsFollowerCluster`, 453, replicate nodes still shipping) for one
//! replication lag, fences the partition once a follower has its offset, and releases the
//! tablet. Then ChangeLeader with that follower as the explicit candidate; clients that
//! still route to the old leader get refusals, never acknowledgements, until they re-route.
//! The old leader keeps its term and offset, so RecoverTable takes the cheap path
//! (`kReAddReplicaSimplifyOP`). Reference: docs/openmldb-interfaces.md,
//! `src/tablet/tablet_impl.cc` (`ChangeRole`, `SetMode`, `Put`), `src/replica/log_replicator.cc`
//! (`DelAllReplicateNode`); the reasoning is in docs/openmldb-fences.md.

use super::openmldb::{FENCE, Op, OpenMldb};
use super::{ModelEv, Rep, Replica, Us, World, us};

/// Fence attempts before the move gives up (a follower that stopped catching up).
const FENCE_TRIES: u64 = 50;

/// Attempts without holding the tablet first: a hold refuses the writes of every partition
/// the tablet leads, so it is the fallback for writes that arrive faster than replication.
const TRIES_UNHELD: u64 = 5;

/// What one fence attempt found.
enum Fence {
    /// Fenced with a follower at the leader's offset.
    Up,
    /// A write was in flight: the fence was lifted; try again.
    Gap,
    /// Nothing to fence (the leader moved or is down) or no follower can take over.
    Gone,
}

impl World {
    /// How long until a follower that may take `part` over from `from` (`to`, or any) has
    /// caught up with what it missed; zero when one has, or when none ever will.
    pub(super) fn catch_up_wait(&self, part: u32, from: u32, to: Option<u32>) -> Us {
        self.parts[part as usize]
            .replicas
            .iter()
            .filter(|r| self.may_take_over(r, from, to))
            .map(|r| r.behind_until.saturating_sub(self.now))
            .min()
            .unwrap_or(0)
    }

    fn may_take_over(&self, r: &Replica, from: u32, to: Option<u32>) -> bool {
        r.node != from
            && r.role == Rep::Secondary
            && r.loaded
            && self.nodes[r.node as usize].up()
            && to.is_none_or(|t| r.node == t)
    }

    /// The index of a follower of `part` at the offset of its leader on `from`.
    fn at_leader_offset(&self, part: u32, from: u32, to: Option<u32>) -> Option<usize> {
        let p = &self.parts[part as usize];
        let offset = p
            .replicas
            .iter()
            .find(|r| r.node == from && r.role == Rep::Primary)?
            .log
            .len();
        p.replicas.iter().position(|r| {
            self.may_take_over(r, from, to) && r.behind_until <= self.now && r.log.len() == offset
        })
    }

    /// One fence attempt on the leader of `part` on `from`.
    fn try_fence(&mut self, part: u32, from: u32, to: Option<u32>) -> Fence {
        let leads = self
            .primary(part)
            .is_some_and(|r| r.node == from && self.serving(r));
        if !leads {
            return Fence::Gone;
        }
        self.replicate(part);
        if self.at_leader_offset(part, from, to).is_some() {
            self.parts[part as usize].fenced = Some(from);
            self.tell_to_follow(part, from);
            self.touch(part);
            return Fence::Up;
        }
        let catching_up = self.parts[part as usize]
            .replicas
            .iter()
            .any(|r| self.may_take_over(r, from, to));
        if catching_up { Fence::Gap } else { Fence::Gone }
    }

    /// The move: ChangeLeader to a follower whose offset equals the fenced leader's.
    ///
    /// # Errors
    /// No follower is at the leader's offset (none caught up, or the one that had went
    /// down): the fence is lifted and the leadership stays where it was.
    pub(super) fn fenced_move_op(
        &mut self,
        part: u32,
        from: u32,
        to: Option<u32>,
    ) -> Result<(), String> {
        let fenced = self.parts[part as usize].fenced == Some(from);
        if self.primary(part).is_none_or(|r| r.node != from) {
            // Someone else moved it (auto failover): nothing to do.
            if fenced {
                self.parts[part as usize].fenced = None;
            }
            self.touch(part);
            return Ok(());
        }
        let Some(c) = self.at_leader_offset(part, from, to).filter(|_| fenced) else {
            self.parts[part as usize].fenced = None;
            self.touch(part);
            return Err(format!(
                "no follower of partition {part} reached the offset of its leader on {} with \
                 the leader fenced; the fence was lifted and the leader stays",
                self.nodes[from as usize].id
            ));
        };
        if let Err(bumped) = self.select_leader_reach(part, from) {
            // SelectLeader failed on a follower that could not answer. With some followers
            // already at the new term the fence stays up (lifting it would have the old
            // leader acknowledge writes they refuse): the backend's heal finishes the move.
            if bumped {
                self.parts[part as usize].orphaned = true;
            } else {
                self.parts[part as usize].fenced = None;
            }
            self.touch(part);
            return Err(format!(
                "the ChangeLeader of partition {part} from {} failed: a follower did not \
                 answer SelectLeader{}",
                self.nodes[from as usize].id,
                if bumped {
                    "; followers took the new term, so the fence stays up"
                } else {
                    "; the fence was lifted and the leader stays"
                }
            ));
        }
        let from_up = self.nodes[from as usize].up();
        // Clients that still route to the old leader get refusals (it stays fenced until they
        // re-route): they retry, then re-route.
        if !self.update_leader_info(part, from, c, from_up) {
            self.parts[part as usize].fenced = None;
        }
        self.touch(part);
        Ok(())
    }
}

impl World {
    /// TabletServer `ChangeRole` to follower reached the replica of `part` on `node`.
    pub(crate) fn tell_to_follow(&mut self, part: u32, node: u32) {
        if let Some(r) = self.parts[part as usize]
            .replicas
            .iter_mut()
            .find(|r| r.node == node)
        {
            r.told_to_follow = true;
        }
    }

    /// Whether the replica of `part` on `node` leads on its tablet (`Table::IsLeader`,
    /// what `TabletImpl::Put`, `GetTableStatus` and `GetTermPair` read): loaded, not
    /// fenced, and the leader, or a leader moved away from that was never told.
    pub(crate) fn leads_on_tablet(&self, part: u32, node: u32) -> bool {
        let p = &self.parts[part as usize];
        p.fenced != Some(node)
            && self.nodes[node as usize].up()
            && p.replicas.iter().any(|r| {
                r.node == node
                    && r.loaded
                    && (r.role == Rep::Primary
                        || (r.role == Rep::Inactive && r.ex_leader && !r.told_to_follow))
            })
    }
}

impl OpenMldb {
    /// The backend's heal of fences no move is running on (`lift_stale_fences` and
    /// `unfence` in `backends/openmldb/src/unfence.rs`): one over followers at a newer term
    /// is finished into a move to a follower at the fenced leader's offset (ChangeLeader, so
    /// only with auto_failover off, and a RecoverTable of the old leader after it); any
    /// other is lifted (a tablet RPC, whatever auto_failover).
    pub(super) fn heal_fences(&mut self, w: &mut World) {
        for part in 0..w.parts.len() as u32 {
            let Some(from) = w.parts[part as usize].fenced else {
                continue;
            };
            if self.has_op(|o| o.part() == part) || !w.nodes[from as usize].up() {
                continue;
            }
            if !w.parts[part as usize].orphaned {
                w.parts[part as usize].fenced = None;
                w.touch(part);
                continue;
            }
            if w.knob("auto_failover") != "false" {
                continue;
            }
            w.replicate(part);
            let at = w
                .primary(part)
                .filter(|r| r.node == from)
                .map(|r| r.log.len());
            let to = w.parts[part as usize]
                .replicas
                .iter()
                .find(|r| {
                    r.node != from
                        && r.role == Rep::Secondary
                        && r.loaded
                        && at == Some(r.log.len())
                })
                .map(|r| r.node);
            if let Some(to) = to {
                self.recover_after_move_of(part, from);
                self.enqueue(
                    w,
                    Op::ChangeLeader {
                        part,
                        from,
                        to: Some(to),
                    },
                );
            }
        }
    }

    /// A fence attempt of the fenced move running on queue `q` (attempt `tries`, `holding`
    /// when this move holds its tablet in follower mode): fenced, the ChangeLeader runs one op
    /// later; followers behind, the attempt repeats one replication lag later, from the
    /// `TRIES_UNHELD`th on with the tablet held; nothing to fence, the op ends now (and fails
    /// when the leader is still there).
    pub(super) fn fence(&mut self, w: &mut World, q: usize, tries: u64, holding: bool) {
        let Some((Op::FencedMove { part, from, to }, _, _)) =
            self.running.get(q).and_then(|r| r.clone())
        else {
            return;
        };
        let result = w.try_fence(part, from, to);
        let again = matches!(result, Fence::Gap) && tries + 1 < FENCE_TRIES;
        let hold = again && (holding || tries + 1 >= TRIES_UNHELD);
        if hold != holding {
            let n = &mut w.nodes[from as usize];
            n.write_hold = if hold {
                n.write_hold + 1
            } else {
                n.write_hold.saturating_sub(1)
            };
            w.touch_node(from);
        }
        if again {
            w.after_model(
                us(w.t.replication_lag).max(1_000),
                ModelEv {
                    code: FENCE,
                    a: q as u32,
                    b: tries + 1,
                    c: u64::from(hold),
                },
            );
            return;
        }
        let done_in = match result {
            Fence::Up => us(w.t.op),
            Fence::Gap | Fence::Gone => 0,
        };
        w.after_model(
            done_in,
            ModelEv {
                code: super::openmldb::OP_DONE,
                a: q as u32,
                b: 0,
                c: 0,
            },
        );
    }
}
