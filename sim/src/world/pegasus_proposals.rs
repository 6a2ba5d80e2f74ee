//! The Pegasus meta's balancer proposals: what a client submits (`RPC_CM_PROPOSE_BALANCER`),
//! queued one per partition as `server_load_balancer::register_proposals` queues them, run at
//! the lb tick, each action checked when it runs (`partition_guardian::from_proposals`) and a
//! list's next action sent on the reply to the previous one
//! (`server_state::on_update_configuration_on_remote_reply`; all @v2.5.0, the same in v2.4.0
//! and master).

use super::pegasus::{NEXT_ACTION, Pegasus};
use super::{ModelEv, Rep, Us, World};

/// A balancer proposal for one partition, as a client submits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proposal {
    /// `move_primary` from `from` to `to`: `DOWNGRADE_TO_SECONDARY` of `from`, then, once
    /// that reconfiguration is done, `UPGRADE_TO_PRIMARY` of `to` ([`Proposal::Promote`]),
    /// each checked when it runs (`partition_guardian::from_proposals` @v2.5.0): `from` must
    /// still be the primary, alive to the meta, or the list is dropped.
    MovePrimary { from: u32, to: u32 },
    /// `DOWNGRADE_TO_INACTIVE` of the member on `node`, sent to `target` (the primary when
    /// proposed).
    Downgrade { target: u32, node: u32 },
    /// `DOWNGRADE_TO_SECONDARY` of the primary on `from` alone (a move whose second action a
    /// 2.4/2.5 meta lost reading it), checked when it runs as a move's demote is: once done,
    /// the meta's `cure` promotes a secondary at once ([`Proposal::Promote`] with no `to`).
    Demote { from: u32 },
    /// `move_primary` followed in the same action list by `DOWNGRADE_TO_INACTIVE` of the
    /// member on `node`, sent to `target`: the move runs at the tick, the downgrade as soon
    /// as the move's reconfiguration is done, since the meta sends the next action of a
    /// partition's list on the reply to the previous one
    /// (`server_state::on_update_configuration_on_remote_reply` calls
    /// `partition_guardian::reconfig`, which pops the done action, then `cure`, which sends
    /// the next; `src/meta/server_state.cpp` @v2.5.0, `src/rdsn/src/meta/server_state.cpp`
    /// @v2.4.0, the same on master).
    MoveThenDowngrade {
        from: u32,
        to: u32,
        target: u32,
        node: u32,
    },
    /// An action list the meta runs nothing of (an unknown node, a list this model does not
    /// know): registered all the same, holding the partition's slot until the tick drops it.
    Unrunnable,
    /// The second action of a move: `UPGRADE_TO_PRIMARY` of `to`, sent on the reply to the
    /// demote (`server_state::on_update_configuration_on_remote_reply` calls
    /// `partition_guardian::cure`, which takes the list's next action through
    /// `from_proposals` @v2.5.0, the same in v2.4.0 and master). Checked when it runs: a `to`
    /// that is no longer an alive secondary (or none: a demote alone) clears the list, and
    /// the same `cure` call promotes a secondary at once (`on_missing_primary`). `then`, a
    /// downgrade `(target, node)`, follows in the same list once the promote is done.
    Promote {
        to: Option<u32>,
        then: Option<(u32, u32)>,
    },
}

/// What became of an action the meta sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// It ran: the list's next action follows on its reply.
    Done,
    /// Its replica server's process is down but still alive to the meta: nothing happened,
    /// and the list is sent again at the next tick.
    Lost,
    /// It no longer applies: the list is dropped.
    Invalid,
}

impl Pegasus {
    /// Queues `p` for partition `part`; `false` (refused) while one of the partition's is
    /// still pending, as `register_proposals` refuses one without `force`.
    pub(crate) fn propose(&mut self, part: u32, p: Proposal) -> bool {
        if self.proposals.contains_key(&part) {
            return false;
        }
        self.proposals.insert(part, p);
        true
    }

    /// Forgets every queued proposal (`server_state::clear_proposals`): what a new leader
    /// starts with, since the proposals live in the leader's memory
    /// (`config_context::lb_actions`), and what `meta_service::on_control_meta_level` queues
    /// for any level at or below steady (`meta/meta_service.cpp` @v2.5.0).
    pub(crate) fn clear_proposals(&mut self) {
        self.proposals.clear();
    }

    /// Runs the queued proposals whose partition is not busy; one that no longer applies
    /// is dropped, as the meta drops it (`partition_guardian::from_proposals` @v2.5.0): a
    /// move-primary whose target is not a live secondary, a downgrade whose `target` is not
    /// the primary or whose `node` is not a member.
    pub(super) fn run_proposals(&mut self, w: &mut World) {
        if w.leader.is_none() || w.frozen() {
            return;
        }
        let now = w.now;
        let due: Vec<(u32, Proposal)> = self
            .proposals
            .iter()
            .filter(|(p, _)| w.parts[**p as usize].busy_until <= now)
            .map(|(p, x)| (*p, *x))
            .collect();
        for (p, x) in due {
            self.proposals.remove(&p);
            self.run_one(w, p, x);
        }
    }

    /// Runs proposal `x` of partition `p` now; a list's next action is queued to run when
    /// this one's reconfiguration is done. An action sent to a process that is down but not
    /// yet declared dead is lost: the list stays queued and is sent again at the next tick
    /// (`check_all_partitions` calls `cure`, whose `from_proposals` finds it still valid), until
    /// the meta declares the node dead and the action no longer applies.
    fn run_one(&mut self, w: &mut World, p: u32, x: Proposal) {
        let next = match x {
            Proposal::MovePrimary { from, to } => (
                w.demote_proposed(p, from),
                Proposal::Promote {
                    to: Some(to),
                    then: None,
                },
            ),
            Proposal::MoveThenDowngrade {
                from,
                to,
                target,
                node,
            } => (
                w.demote_proposed(p, from),
                Proposal::Promote {
                    to: Some(to),
                    then: Some((target, node)),
                },
            ),
            Proposal::Demote { from } => (
                w.demote_proposed(p, from),
                Proposal::Promote {
                    to: None,
                    then: None,
                },
            ),
            Proposal::Promote { to, then } => {
                let sent = w.promote_proposed(p, to);
                match then {
                    Some((target, node)) => (sent, Proposal::Downgrade { target, node }),
                    None if sent == Sent::Done => {
                        w.touch(p);
                        return;
                    }
                    None => (sent, x),
                }
            }
            Proposal::Unrunnable => (Sent::Invalid, x),
            Proposal::Downgrade { target, node } => (w.downgrade_proposed(p, target, node), x),
        };
        match next {
            // A downgrade ends its list.
            (Sent::Done, Proposal::Downgrade { .. }) if matches!(x, Proposal::Downgrade { .. }) => {
            }
            (Sent::Done, next) => self.chain(w, p, next),
            (Sent::Lost, _) => {
                self.proposals.insert(p, x);
            }
            (Sent::Invalid, _) => {}
        }
        w.touch(p);
    }

    /// Queues `next` as partition `p`'s next action, sent once its reconfiguration in
    /// flight is done (see [`Proposal::MoveThenDowngrade`]).
    pub(super) fn chain(&mut self, w: &mut World, p: u32, next: Proposal) {
        self.proposals.insert(p, next);
        let done = w.parts[p as usize].busy_until;
        w.after_model(
            done.saturating_sub(w.now),
            ModelEv {
                code: NEXT_ACTION,
                a: p,
                b: done,
                c: 0,
            },
        );
    }

    /// The reply to partition `p`'s last action, whose reconfiguration was to end at `done`:
    /// its next one, if still queued, is sent. Any other change of the partition's
    /// configuration meanwhile pops the queued action unsent, as `partition_guardian::reconfig`
    /// pops the front action on every configuration update (@v2.5.0): it is dropped here too.
    pub(super) fn next_action(&mut self, w: &mut World, p: u32, done: Us) {
        if !self.proposals.contains_key(&p) {
            return;
        }
        if w.parts[p as usize].busy_until != done {
            self.proposals.remove(&p);
            return;
        }
        if w.leader.is_none() || w.frozen() {
            return;
        }
        if let Some(x) = self.proposals.remove(&p) {
            self.run_one(w, p, x);
        }
    }
}

impl World {
    /// The first action of a proposed move of the primary off `from`:
    /// `DOWNGRADE_TO_SECONDARY`, checked when it runs (`partition_guardian::from_proposals`
    /// @v2.5.0): invalid when `from` is no longer the primary or not alive to the meta; lost
    /// when its process is down (the meta does not know yet). Once done the partition has no
    /// primary until the promote ([`Proposal::Promote`]).
    pub(crate) fn demote_proposed(&mut self, p: u32, from: u32) -> Sent {
        if self.primary(p).map(|r| r.node) != Some(from) || !self.alive_to_meta(from) {
            return Sent::Invalid;
        }
        if !self.nodes[from as usize].up() {
            return Sent::Lost;
        }
        self.demote(p, self.move_action());
        Sent::Done
    }

    /// The promote of a move ([`Proposal::Promote`]): `to` becomes the primary when the
    /// partition has none and `to` is a secondary alive to the meta (lost when its process
    /// is down); otherwise (or with no `to`) the list is cleared and, with no primary, the
    /// same `cure` promotes a secondary at once (`on_missing_primary`), and `Invalid` says so.
    pub(crate) fn promote_proposed(&mut self, p: u32, to: Option<u32>) -> Sent {
        if self.primary(p).is_some() {
            return Sent::Invalid;
        }
        let target = to.filter(|&t| self.alive_to_meta(t)).and_then(|t| {
            self.parts[p as usize]
                .replicas
                .iter()
                .position(|r| r.node == t && r.role == Rep::Secondary)
        });
        let Some(i) = target else {
            self.promote(p, self.move_action());
            return Sent::Invalid;
        };
        let node = self.parts[p as usize].replicas[i].node;
        if !self.nodes[node as usize].up() {
            return Sent::Lost;
        }
        let part = &mut self.parts[p as usize];
        part.replicas[i].role = Rep::Primary;
        part.replicas[i].loaded = true;
        self.reconfigure_for(p, self.move_action());
        self.changed();
        Sent::Done
    }

    /// Whether the meta sees node `n` alive: attached to it and not declared dead, whatever
    /// its process does meanwhile.
    fn alive_to_meta(&self, n: u32) -> bool {
        let n = &self.nodes[n as usize];
        n.attached && !n.offline
    }

    /// A proposed `DOWNGRADE_TO_INACTIVE`, checked when it runs as
    /// `partition_guardian::from_proposals` checks it (@v2.5.0): `target` and `node` alive to
    /// the meta, `target` the primary and `node` a member; lost when `target`'s process is
    /// down. It then runs whatever the member count, even down to the primary alone (which
    /// takes no writes then).
    pub(crate) fn downgrade_proposed(&mut self, p: u32, target: u32, node: u32) -> Sent {
        let alive = |n: u32| self.alive_to_meta(n);
        let part = &self.parts[p as usize];
        let target_leads = part
            .replicas
            .iter()
            .any(|r| r.node == target && r.role == Rep::Primary);
        let member = part.replicas.iter().position(|r| {
            r.node == node && (r.role == Rep::Primary || (r.role == Rep::Secondary && r.loaded))
        });
        let Some(i) = member.filter(|_| target_leads && alive(target) && alive(node)) else {
            return Sent::Invalid;
        };
        if !self.nodes[target as usize].up() {
            return Sent::Lost;
        }
        self.replicate(p);
        self.parts[p as usize].replicas[i].role = Rep::Inactive;
        self.reconfigure(p);
        Sent::Done
    }
}
