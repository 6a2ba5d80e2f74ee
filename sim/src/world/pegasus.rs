//! Pegasus: the meta server's view of replica servers and partitions.
//!
//! PacificA: a write needs the primary and every secondary in the membership (at least
//! `mutation_2pc_min_replica_count`, 2). The meta acts at each `lb_interval_ms` tick: it runs
//! the proposals of draining nodes (move primary, downgrade to inactive; at most one pending
//! per partition, a list's next action sent on the reply to the previous one), promotes a secondary where the primary's node is dead, and cures missing
//! secondaries within add-secondary flow control. Every reconfiguration blocks the
//! partition's writes for `reconfigure` (a primary change blocks reads too). A meta freezes
//! below `min_live_node_count_for_unfreeze` or `node_live_percentage_threshold_for_update`
//! alive replica servers (`src/meta/meta_service.cpp`, `server_state.cpp`, `greedy_load_balancer`).

use std::any::Any;

use rollout_core::{Health, Knob, Procedure, RoleKind};

use super::pegasus_proposals::Proposal;
use super::{Model, ModelEv, Profile, Rep, Replica, Us, World, us};
use crate::config::Flavor;

/// The Pegasus meta server's decisions; its one state of its own is the balancer proposals
/// a client submitted (`RPC_CM_PROPOSE_BALANCER`), run at the next lb tick.
#[derive(Debug, Default)]
pub(crate) struct Pegasus {
    pub(super) proposals: std::collections::BTreeMap<u32, Proposal>,
}

const TICK: u8 = 0;
const LEARN_DONE: u8 = 1;
pub(super) const NEXT_ACTION: u8 = 2;
const TICK_EV: ModelEv = ModelEv {
    code: TICK,
    a: 0,
    b: 0,
    c: 0,
};

impl Model for Pegasus {
    fn profile(&self) -> Profile {
        Profile {
            flavor: Flavor::Pegasus,
            write_quorum: 2,
            synchronous: true,
            lease_drops_replicas: true,
            data_survives_restart: true,
            early_start_exits: false,
            partition_prefix: "",
            min_serving: 2,
            config_files: &["config.ini"],
        }
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        match procedure {
            Procedure::HighAvailability => vec![
                Knob::rollout("meta_level", "steady"),
                Knob::rollout("meta.lb.assign_delay_ms", "3600000").blocks_healing(),
                Knob::rollout("meta.lb.add_secondary_enable_flow_control", "true"),
                Knob::wave("meta.lb.add_secondary_max_count_for_one_node", "0")
                    .then("100")
                    .blocks_healing(),
            ],
            _ => vec![Knob::rollout("meta_level", "steady")],
        }
    }

    fn start(&mut self, w: &mut World) {
        let tick = us(w.t.tick);
        w.after_model(tick, TICK_EV);
    }

    fn on_event(&mut self, w: &mut World, ev: ModelEv) {
        match ev.code {
            TICK => {
                self.run_proposals(w);
                // A draining node's primaries move in two actions, demote then promote, with
                // the downgrade of what stays behind after them in the same list, as the
                // backend proposes them.
                for m in w.meta_tick(|p| self.proposals.contains_key(&p)) {
                    let next = Proposal::Promote {
                        to: Some(m.to),
                        then: m.downgrade.then_some((m.to, m.from)),
                    };
                    self.chain(w, m.part, next);
                }
                let tick = us(w.t.tick);
                w.after_model(tick, TICK_EV);
            }
            LEARN_DONE => w.learn_done(ev.a, ev.b, ev.c),
            NEXT_ACTION => self.next_action(w, ev.a, ev.b),
            _ => {}
        }
    }

    fn data_node_gone(&mut self, w: &mut World, node: u32) {
        w.replica_server_gone(node);
    }

    fn data_node_detected(&mut self, _: &mut World, _: u32) {
        // The next tick promotes and cures.
    }

    fn data_node_registered(&mut self, _: &mut World, _: u32, _: bool) {}

    fn leader_elected(&mut self, w: &mut World) {
        // Meta levels, meta.lb.* values and the balancer's proposals live in the leader's
        // memory: a new leader starts from its config, with no proposal.
        w.knobs = w.knob_defaults.clone();
        self.clear_proposals();
    }

    fn drain(&mut self, w: &mut World, node: u32) {
        // The proposals run at the next ticks, one per partition at a time.
        w.nodes[node as usize].draining = true;
        w.nodes[node as usize].held = true;
        w.nodes[node as usize].move_only = false;
    }

    fn rejoin(&mut self, w: &mut World, node: u32) {
        // add-secondary is back on (a knob): the meta cures the node's replicas by itself.
        w.nodes[node as usize].draining = false;
        w.nodes[node as usize].move_only = false;
    }

    /// The meta freezes below `min_live_node_count_for_unfreeze` alive replica servers or
    /// `node_live_percentage_threshold_for_update` percent of them (pegasus.md section 6).
    fn data_down_limit(&self, w: &World) -> Option<(usize, String)> {
        let all = w.nodes.iter().filter(|n| n.kind == RoleKind::Data).count();
        let pct = w.t.live_percentage as usize;
        let need = w.t.min_live.max((all * pct).div_ceil(100));
        let most = all.saturating_sub(need);
        let why = format!(
            "the meta freezes (no proposals, no cure) with fewer than {need} of {all} replica \
             servers alive (min_live_node_count_for_unfreeze {}, \
             node_live_percentage_threshold_for_update {pct})",
            w.t.min_live
        );
        Some(if most == 0 {
            (1, format!("{why}; even one down freezes it"))
        } else {
            (most, why)
        })
    }

    fn heal(&mut self, _: &mut World) {
        // Add-secondary back on is all the meta needs: its next tick cures.
    }

    /// No primary or secondary left on the node, but for partitions of tables with fewer
    /// than 3 replicas (accepted as unavailable: the drain cannot downgrade there, nor move a
    /// sole primary).
    fn drained(&self, w: &World, node: u32, describe: bool) -> Health {
        // Kept by `World::touch`: the drain runs while every change re-evaluates this.
        let n = &w.nodes[node as usize];
        let busy = n.counts.members.saturating_sub(n.counts.stuck_members);
        match busy {
            0 => Health::Healthy,
            busy => Health::Waiting(if describe {
                format!(
                    "node {} is still primary or secondary of {busy} partitions",
                    n.id
                )
            } else {
                String::new()
            }),
        }
    }

    fn pending(&self, _: &World, _: Option<u32>) -> Option<String> {
        None
    }

    fn stopped(&self, _: &World, _: u32) -> Option<String> {
        None
    }

    fn cluster_health(&self, _: &World) -> Option<Health> {
        None
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl World {
    /// The meta freezes (no proposals, no cure) with fewer than `min_live` replica servers
    /// alive, or a smaller share than `live_percentage`.
    pub(crate) fn frozen(&self) -> bool {
        let alive = self.alive_data();
        let all = self
            .nodes
            .iter()
            .filter(|n| n.kind == RoleKind::Data)
            .count();
        alive < self.t.min_live || alive * 100 < all * self.t.live_percentage as usize
    }

    /// Meta tick: run one proposal per partition of each draining node, promote, cure.
    /// Returns the partitions whose primary on a draining node was demoted, each with that
    /// node, the secondary to promote, and whether the node's downgrade follows the promote
    /// in the same list (a full membership, not a move-only drain).
    fn meta_tick(&mut self, pending: impl Fn(u32) -> bool) -> Vec<Moved> {
        let mut moved = Vec::new();
        if self.leader.is_none() || self.frozen() {
            return moved;
        }
        let draining: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&n| self.nodes[n as usize].draining && !self.nodes[n as usize].stuck_drain)
            .collect();
        for n in draining {
            let move_only = self.nodes[n as usize].move_only;
            let parts = self.nodes[n as usize].parts.clone();
            for p in parts {
                if self.parts[p as usize].busy_until > self.now {
                    continue;
                }
                let full = self.members(p) >= 3;
                if let Some(to) = self.move_target(p, n) {
                    self.demote(p, self.move_action());
                    moved.push(Moved {
                        part: p,
                        from: n,
                        to,
                        downgrade: full && !move_only,
                    });
                } else if !move_only {
                    self.downgrade(p, n);
                }
                self.touch(p);
            }
        }
        // Promotions first, then secondaries added while some node may take a learner: a
        // tick over a node's whole rejoin must not visit every partition it lacks while flow
        // control lets a hundred of them in.
        let headless: Vec<u32> = self.headless.iter().copied().collect();
        let took = us(self.t.reconfigure);
        for p in headless {
            // A partition whose list still holds an action the meta sends again promotes
            // nothing else meanwhile (`cure` takes the list's action first).
            if pending(p) {
                continue;
            }
            if self.parts[p as usize].busy_until <= self.now && self.promote(p, took) {
                self.touch(p);
            }
        }
        let knobs = CureKnobs::of(self);
        // A replica dropped on a node that serves again is added back there: each such node
        // is searched from where its last search stopped, until flow control fills it.
        for n in 0..self.nodes.len() as u32 {
            let node = &self.nodes[n as usize];
            if node.kind != RoleKind::Data
                || !node.attached
                || !node.up()
                || node.counts.dropped == 0
            {
                continue;
            }
            let len = node.parts.len();
            let start = node.cure_cursor.min(len);
            let mut left = node.counts.dropped;
            for k in (start..len).chain(0..start) {
                if left == 0 || !self.has_room(n, &knobs) {
                    self.nodes[n as usize].cure_cursor = k;
                    break;
                }
                let p = self.nodes[n as usize].parts[k];
                let dropped = self.parts[p as usize]
                    .replicas
                    .iter()
                    .any(|r| r.node == n && r.role == Rep::Inactive);
                if !dropped {
                    continue;
                }
                left -= 1;
                if self.parts[p as usize].busy_until <= self.now && self.cure(p, &knobs) {
                    self.touch(p);
                }
            }
        }
        // Copies elsewhere only once a node has been gone the assign delay.
        let overdue = self.nodes.iter().any(|n| {
            n.kind == RoleKind::Data
                && n.offline
                && !n.up()
                && self.now.saturating_sub(n.down_since) >= knobs.assign_delay
        });
        if overdue {
            let todo: Vec<u32> = self.unhealthy.iter().copied().collect();
            for p in todo {
                if self.parts[p as usize].busy_until <= self.now && self.cure(p, &knobs) {
                    self.touch(p);
                }
            }
        }
        moved
    }

    /// Whether node `n` may take another learner now (flow control off, or below its
    /// `add_secondary_max_count_for_one_node`).
    fn has_room(&self, n: u32, knobs: &CureKnobs) -> bool {
        !knobs.flow || self.nodes[n as usize].counts.learners < knobs.max
    }

    /// Where a move of `p`'s primary off `from` (`balance --gpid -p move_pri`) would go:
    /// the first secondary on a live, not draining node; `None` when `from` is not the
    /// primary, its process is down (the demote would be lost), or no such secondary exists.
    fn move_target(&self, p: u32, from: u32) -> Option<u32> {
        let part = &self.parts[p as usize];
        (self.nodes[from as usize].up()
            && part
                .replicas
                .iter()
                .any(|r| r.node == from && r.role == Rep::Primary))
        .then(|| {
            part.replicas.iter().find(|r| {
                r.role == Rep::Secondary
                    && self.nodes[r.node as usize].up()
                    && !self.nodes[r.node as usize].draining
            })
        })
        .flatten()
        .map(|r| r.node)
    }

    /// How long each of a move-primary's two actions takes: half a reconfiguration, since
    /// the upstream rolling-update doc gives the whole migration ("proactive migration ...
    /// typically takes less than 1 second", `Timings::reconfigure`) and the meta runs it as
    /// two configuration changes (`DOWNGRADE_TO_SECONDARY`, then `UPGRADE_TO_PRIMARY`).
    pub(crate) fn move_action(&self) -> Us {
        us(self.t.reconfigure) / 2
    }

    /// `DOWNGRADE_TO_SECONDARY` of the primary, one reconfiguration taking `took`: the
    /// partition has no primary until the promote that follows it in its action list
    /// ([`Proposal::Promote`](super::pegasus_proposals::Proposal::Promote)). Whether it ran
    /// (the partition had a primary).
    pub(crate) fn demote(&mut self, p: u32, took: Us) -> bool {
        let Some(i) = self.parts[p as usize]
            .replicas
            .iter()
            .position(|r| r.role == Rep::Primary)
        else {
            return false;
        };
        self.replicate(p);
        self.parts[p as usize].replicas[i].role = Rep::Secondary;
        self.reconfigure_for(p, took);
        true
    }

    /// `propose -p DOWNGRADE_TO_INACTIVE`: only where the partition keeps a primary and
    /// another secondary.
    pub(crate) fn downgrade(&mut self, p: u32, node: u32) {
        let has_primary = self.readable(p);
        if !has_primary || self.members(p) < 3 {
            return;
        }
        let Some(i) = self.parts[p as usize]
            .replicas
            .iter()
            .position(|r| r.node == node && r.role == Rep::Secondary)
        else {
            return;
        };
        self.replicate(p);
        self.parts[p as usize].replicas[i].role = Rep::Inactive;
        self.reconfigure(p);
    }

    /// A replica server's process is gone: its secondaries are kicked out by the primary at
    /// the next write (reconciliation blocks writes meanwhile) and its learns die; its
    /// primaries stay until the meta declares it dead. A partition with no primary has no one
    /// to kick a secondary out: it stays a member (the meta too leaves a secondary alone while
    /// its partition has no primary, `server_state::on_partition_node_dead` @v2.5.0).
    fn replica_server_gone(&mut self, node: u32) {
        let parts = self.nodes[node as usize].parts.clone();
        for p in parts {
            let headless = self.primary(p).is_none();
            let mut secondary_lost = false;
            for r in self.parts[p as usize]
                .replicas
                .iter_mut()
                .filter(|r| r.node == node)
            {
                match r.role {
                    Rep::Secondary if !headless => {
                        r.role = Rep::Inactive;
                        secondary_lost = true;
                    }
                    Rep::Secondary => {}
                    Rep::Learner => r.role = Rep::Inactive,
                    Rep::Primary | Rep::Inactive => {}
                }
            }
            if secondary_lost {
                self.reconfigure(p);
            }
        }
    }

    /// How loaded node `n` looks to the meta picking a primary for a partition of `table`
    /// (`newly_partitions::less_primaries`): the table's primaries, the table's replicas, all
    /// primaries, all replicas; learners count as replicas. Less is preferred.
    pub(crate) fn meta_load(&self, n: u32, table: u16) -> (u32, u32, u32, u32) {
        let node = &self.nodes[n as usize];
        let (tp, tm) = node
            .table_counts
            .get(usize::from(table))
            .copied()
            .unwrap_or_default();
        (
            tp,
            tm,
            node.counts.primaries,
            node.counts.members + node.counts.learners,
        )
    }

    /// The meta promotes a secondary where the primary's node is dead or the partition has
    /// none (`partition_guardian::on_missing_primary` @v2.5.0, the same in v2.4.0 and master):
    /// of the secondaries alive to it, the one whose node holds the fewest primaries of the
    /// partition's table, then the fewest replicas of that table, then the fewest primaries
    /// and replicas in all, then the first in the membership (`newly_partitions::less_primaries`,
    /// `server_load_balancer.cpp`). A learner counts as a replica, as the meta counts a
    /// secondary it is adding from the cure that assigned it; a promotion counts at once, as
    /// its pending count does;
    /// where every member went inactive it recovers from the last one (the longest log) once
    /// its node is alive. The promotion is a reconfiguration taking `took`. Whether it
    /// promoted.
    pub(crate) fn promote(&mut self, p: u32, took: Us) -> bool {
        let part = &self.parts[p as usize];
        let dead_primary = part
            .replicas
            .iter()
            .position(|r| r.role == Rep::Primary && self.nodes[r.node as usize].offline);
        let has_primary = part.replicas.iter().any(|r| r.role == Rep::Primary);
        if has_primary && dead_primary.is_none() {
            return false;
        }
        let alive =
            |r: &Replica| self.nodes[r.node as usize].up() && self.nodes[r.node as usize].attached;
        let to_meta = |r: &Replica| {
            let n = &self.nodes[r.node as usize];
            n.attached && !n.offline
        };
        let chosen = part
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.role == Rep::Secondary && to_meta(r))
            .min_by_key(|(i, r)| (self.meta_load(r.node, part.table), *i))
            .map(|(i, _)| i);
        // The upgrade sent to a process that is down (the meta does not know yet) is lost:
        // the meta picks the same node again at its next check.
        if chosen.is_some_and(|i| !alive(&part.replicas[i])) {
            return false;
        }
        let candidate = chosen.or_else(|| {
            // No secondary: the last member to drop holds the most.
            let last = part
                .replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| r.role == Rep::Inactive)
                .max_by_key(|(_, r)| r.log.len())?;
            (alive(last.1) && !part.replicas.iter().any(|r| r.role == Rep::Secondary))
                .then_some(last.0)
        });
        let Some(c) = candidate else { return false };
        let part = &mut self.parts[p as usize];
        if let Some(d) = dead_primary {
            part.replicas[d].role = Rep::Inactive;
        }
        part.replicas[c].role = Rep::Primary;
        part.replicas[c].loaded = true;
        self.reconfigure_for(p, took);
        self.changed();
        true
    }

    /// The meta adds a secondary where one is missing, within flow control: back on the last
    /// dropped node if it is alive, elsewhere once that node has been gone the assign delay.
    fn cure(&mut self, p: u32, knobs: &CureKnobs) -> bool {
        if !self.readable(p) {
            return false;
        }
        let CureKnobs {
            flow,
            max,
            assign_delay,
        } = *knobs;
        let wanted = usize::from(self.parts[p as usize].wanted);
        let active = self.parts[p as usize]
            .replicas
            .iter()
            .filter(|r| r.role != Rep::Inactive)
            .count();
        if active >= wanted {
            return false;
        }
        let full = |w: &World, n: u32| flow && w.nodes[n as usize].counts.learners >= max;
        // The add-secondary goes to the node's process: a node that does not serve cannot
        // take it, whatever the meta last heard.
        let dropped = self.parts[p as usize].replicas.iter().position(|r| {
            let n = &self.nodes[r.node as usize];
            r.role == Rep::Inactive && n.attached && n.up()
        });
        if let Some(i) = dropped {
            let n = self.parts[p as usize].replicas[i].node;
            if full(self, n) {
                return false;
            }
            let behind = u64::from(self.parts[p as usize].next_seq);
            let have = self.parts[p as usize].replicas[i].log.len() as u64;
            let missed = behind.saturating_sub(have);
            let cost = us(self.t.catch_up)
                .saturating_add(missed.saturating_mul(us(self.t.catch_up_per_write)));
            self.parts[p as usize].replicas[i].role = Rep::Learner;
            let boot = self.nodes[n as usize].boot;
            self.after_model(
                cost,
                ModelEv {
                    code: LEARN_DONE,
                    a: p,
                    b: u64::from(n),
                    c: boot,
                },
            );
            return true;
        }
        // A dropped node that stayed away longer than the assign delay: copy elsewhere.
        let gone = self.parts[p as usize].replicas.iter().position(|r| {
            r.role == Rep::Inactive
                && self.nodes[r.node as usize].offline
                && !self.nodes[r.node as usize].up()
        });
        let Some(g) = gone else { return false };
        let gone_node = self.parts[p as usize].replicas[g].node;
        if self
            .now
            .saturating_sub(self.nodes[gone_node as usize].down_since)
            < assign_delay
        {
            return false;
        }
        let holders: Vec<u32> = self.parts[p as usize]
            .replicas
            .iter()
            .map(|r| r.node)
            .collect();
        let target = (0..self.nodes.len() as u32).find(|&n| {
            let node = &self.nodes[n as usize];
            node.kind == RoleKind::Data && node.attached && node.up() && !holders.contains(&n)
        });
        let Some(t) = target else { return false };
        if full(self, t) {
            return false;
        }
        self.parts[p as usize].replicas.remove(g);
        self.nodes[gone_node as usize].parts.retain(|&q| q != p);
        let mut learner = Replica::new(t, Rep::Learner);
        learner.loaded = false;
        self.parts[p as usize].replicas.push(learner);
        self.nodes[t as usize].parts.push(p);
        let cost = us(self.t.copy);
        let boot = self.nodes[t as usize].boot;
        self.after_model(
            cost,
            ModelEv {
                code: LEARN_DONE,
                a: p,
                b: u64::from(t),
                c: boot,
            },
        );
        self.touch_node(gone_node);
        true
    }

    /// A learn finished: the learner holds everything the primary has and becomes a
    /// secondary. A learn whose process went away (or restarted) died with it.
    fn learn_done(&mut self, part: u32, node: u64, boot: u64) {
        let node = node as u32;
        let Some(i) = self.parts[part as usize]
            .replicas
            .iter()
            .position(|r| r.node == node && r.role == Rep::Learner)
        else {
            return;
        };
        let live = self.nodes[node as usize].boot == boot && self.nodes[node as usize].up();
        let primary = self
            .primary(part)
            .filter(|r| self.serving(r))
            .map(|r| r.log.clone());
        match primary {
            Some(log) if live => {
                let r = &mut self.parts[part as usize].replicas[i];
                r.log.follow(&log, Us::MAX);
                r.role = Rep::Secondary;
                r.loaded = true;
                // Adding a secondary is a configuration change too.
                self.reconfigure(part);
            }
            _ => self.parts[part as usize].replicas[i].role = Rep::Inactive,
        }
        self.touch(part);
    }
}

/// The meta's add-secondary settings, read once per tick.
#[derive(Clone, Copy, Debug)]
struct CureKnobs {
    flow: bool,
    max: u32,
    assign_delay: Us,
}

impl CureKnobs {
    fn of(w: &World) -> Self {
        Self {
            flow: w.knob("meta.lb.add_secondary_enable_flow_control") == "true",
            max: w
                .knob("meta.lb.add_secondary_max_count_for_one_node")
                .parse()
                .unwrap_or(10),
            assign_delay: w
                .knob("meta.lb.assign_delay_ms")
                .parse::<u64>()
                .unwrap_or(600_000)
                .saturating_mul(1000),
        }
    }
}

/// A primary the tick demoted off a draining node ([`World::meta_tick`]).
struct Moved {
    part: u32,
    from: u32,
    /// The secondary the promote goes to.
    to: u32,
    /// Whether `from`'s downgrade follows the promote.
    downgrade: bool,
}
