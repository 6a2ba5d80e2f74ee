//! The simulated cluster's state and its dynamics in virtual time.
//!
//! Time is in microseconds since the simulation began. Nothing runs on its own: every call
//! first [`advance`](World::advance)s the world to the current tokio instant, processing
//! scheduled events and client requests in time order, so the state anyone sees is exactly
//! the state at that instant.
//!
//! The kernel here (event queue, process lifecycle, failure detection by beacons, health
//! timeline, counters) is shared; each flavor's control plane is a [`Model`] that reads like
//! its upstream system, in its own module: [`pegasus`] (meta, PacificA, proposals at the lb
//! tick) and [`openmldb`] (nameserver op queues, asynchronous followers, auto failover). [`clients`] runs the
//! requests, [`ledger`] holds every acknowledged write, [`conditions`] evaluates what the
//! engine waits for, and [`waits`] measures how long the engine idled after a condition held.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollout_core::{NodeId, RoleKind};

use crate::config::{ClientLoad, Flavor, Timings};
use crate::monitor::Monitor;
pub(crate) use model::{Model, ModelEv, Profile};

mod clients;
pub(crate) mod conditions;
mod events;
pub(crate) use conditions::unserving_outside;
pub(crate) mod ledger;
mod lifecycle;
pub(crate) use ledger::serving_replica;
mod model;
pub(crate) mod openmldb;
mod openmldb_fence;
mod openmldb_model;
mod openmldb_op;
mod openmldb_ops;
pub(crate) mod pegasus;
mod pegasus_proposals;
mod state;
pub(crate) mod waits;

pub(crate) use clients::Clients;
pub(crate) use ledger::Log;
pub(crate) use openmldb::{Op, Op as OpenMldbOp, OpenMldb};
pub(crate) use pegasus::Pegasus;
pub(crate) use pegasus_proposals::Proposal as PegasusProposal;
use state::{
    F_DROPPED, F_LEARNER, F_MEMBER, F_NOT_BACK, F_PRIMARY, F_SOLE_PRIMARY, F_STUCK_MEMBER,
    F_UNLOADED, add_counts, add_table_counts,
};
pub(crate) use state::{NodeS, Part, Rep, Replica};

/// Microseconds of virtual time.
pub(crate) type Us = u64;

pub(crate) fn us(d: std::time::Duration) -> Us {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Scheduled cluster events. Stale ones (the node rebooted, or its beacons changed) are
/// ignored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ev {
    Model(ModelEv),
    StopDone {
        node: u32,
        boot: u64,
    },
    Serving {
        node: u32,
        boot: u64,
    },
    Attach {
        node: u32,
        epoch: u64,
    },
    Exit {
        node: u32,
        boot: u64,
    },
    Detect {
        node: u32,
        epoch: u64,
    },
    Unblock {
        part: u32,
    },
    Flushed {
        node: u32,
    },
    Elect,
    /// The leader's election grace has run: its node list means what it says again.
    GraceOver,
    LeaseCheck {
        since: Us,
    },
    LeaseLost {
        node: u32,
        epoch: u64,
    },
    Crash {
        node: u32,
    },
    CrashRestart {
        node: u32,
    },
    ContactLost {
        node: u32,
        until: Us,
    },
    ContactBack {
        node: u32,
    },
    LeaderFailover,
}

pub(crate) struct World {
    /// The flavor's name, for reports; the kernel never branches on it.
    pub(crate) flavor: Flavor,
    /// The flavor's control plane; taken out while one of its hooks runs.
    model: Option<Box<dyn Model>>,
    pub(crate) profile: Profile,
    pub(crate) t: Timings,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: Us,
    pub(crate) nodes: Vec<NodeS>,
    pub(crate) parts: Vec<Part>,
    /// The data nodes the coordinator does not see alive (not up, or not attached), kept by
    /// [`World::note_liveness`] at every change of either, so that a watch on the nodes
    /// outside a wave does not scan them all.
    pub(crate) down_data: BTreeSet<u32>,
    /// Each node's index in `nodes`, by id (the nodes never change after the build).
    by_id: std::collections::HashMap<NodeId, u32>,
    /// Each partition's id as the topology shows it (`1.5`, `t1.5`), and each table's name
    /// (`t1`), formatted once: a large cluster's topology is read at every wave.
    pub(crate) labels: (Vec<String>, Vec<String>),
    /// How many tables the partitions belong to (the highest table index plus one).
    pub(crate) tables: u32,
    events: BinaryHeap<Reverse<(Us, u64, Ev)>>,
    seq: u64,
    pub(crate) clients: Clients,
    pub(crate) knobs: BTreeMap<String, String>,
    pub(crate) knob_defaults: BTreeMap<String, String>,
    pub(crate) leader: Option<u32>,
    /// The coordinator that led when the world was built.
    pub(crate) first_leader: Option<u32>,
    leaderless_since: Option<Us>,
    /// When the current leader's [`crate::Timings::election_grace`] ends, if it was elected
    /// during the run.
    pub(crate) grace_until: Option<Us>,
    pub(crate) unhealthy: BTreeSet<u32>,
    /// Partitions with no primary, or one on a node the coordinator holds offline (kept by
    /// [`World::touch`]): what a coordinator's promotion looks at.
    pub(crate) headless: BTreeSet<u32>,
    pub(crate) last_change: Us,
    pub(crate) transient_p: f64,
    /// Whether probes wake at the next event (the default) or only poll.
    pub(crate) wake_hints: bool,
    pub(crate) waits: waits::Waits,
    pub(crate) mon: Monitor,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("flavor", &self.flavor)
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("parts", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl World {
    pub(crate) fn new(
        model: Box<dyn Model>,
        t: Timings,
        load: ClientLoad,
        seed: u64,
        nodes: Vec<NodeS>,
        parts: Vec<Part>,
        knobs: BTreeMap<String, String>,
    ) -> Self {
        let leader = nodes
            .iter()
            .position(NodeS::is_elected_coordinator)
            .map(|i| i as u32);
        let profile = model.profile();
        let tables = parts
            .iter()
            .map(|p| u32::from(p.table) + 1)
            .max()
            .unwrap_or(0);
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i as u32))
            .collect();
        let labels = (
            parts
                .iter()
                .map(|p| format!("{}{}.{}", profile.partition_prefix, p.table + 1, p.index))
                .collect(),
            (1..=tables).map(|t| format!("t{t}")).collect(),
        );
        let mut w = Self {
            by_id,
            labels,
            flavor: profile.flavor,
            model: Some(model),
            profile,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            nodes,
            parts,
            down_data: BTreeSet::new(),
            tables,
            events: BinaryHeap::new(),
            seq: 0,
            clients: Clients::new(load),
            knob_defaults: knobs.clone(),
            knobs,
            leader,
            first_leader: leader,
            leaderless_since: None,
            grace_until: None,
            unhealthy: BTreeSet::new(),
            headless: BTreeSet::new(),
            last_change: 0,
            transient_p: 0.0,
            wake_hints: true,
            waits: waits::Waits::default(),
            mon: Monitor::default(),
            t,
        };
        w.with_model(|m, w| m.start(w));
        for p in 0..w.parts.len() as u32 {
            w.touch(p);
        }
        for n in 0..w.nodes.len() as u32 {
            w.note_liveness(n);
        }
        w
    }

    /// Runs `f` with the model taken out of the world, so that it can change the world.
    pub(crate) fn with_model<R>(&mut self, f: impl FnOnce(&mut dyn Model, &mut World) -> R) -> R {
        let mut m = self
            .model
            .take()
            .expect("a model hook never calls back into a hook");
        let r = f(m.as_mut(), self);
        self.model = Some(m);
        r
    }

    /// The model, for its read-only queries.
    pub(crate) fn model(&self) -> &dyn Model {
        self.model
            .as_deref()
            .expect("queries are never asked while a hook runs")
    }

    /// Schedules one of the model's own events `delay` from now.
    pub(crate) fn after_model(&mut self, delay: Us, ev: ModelEv) {
        self.after(delay, Ev::Model(ev));
    }

    pub(crate) fn schedule(&mut self, at: Us, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    pub(crate) fn after(&mut self, delay: Us, ev: Ev) {
        let at = self.now.saturating_add(delay);
        self.schedule(at, ev);
    }

    /// The time of the next scheduled cluster event, if any.
    pub(crate) fn next_event(&self) -> Option<Us> {
        self.events.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Something changed at this instant: the conditions the engine waits for are evaluated
    /// again.
    pub(crate) fn changed(&mut self) {
        self.last_change = self.now;
        self.waits.dirty = true;
    }

    /// Sets a knob directly, as a test's precondition.
    #[cfg(test)]
    pub(crate) fn set_knob_for_test(&mut self, name: &str, value: &str) {
        self.knobs.insert(name.into(), value.into());
    }

    /// The index of node `id`, if it is in this world.
    pub(crate) fn index(&self, id: &NodeId) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub(crate) fn knob(&self, name: &str) -> &str {
        self.knobs.get(name).map_or("", String::as_str)
    }

    /// Processes every event and client request up to `target`, in time order.
    pub(crate) fn advance(&mut self, target: Us) {
        loop {
            let te = self.next_event().unwrap_or(Us::MAX);
            let tr = self.clients.next_due();
            let next = te.min(tr);
            if next > target {
                break;
            }
            // The state has not changed since the last event: conditions that hold now held
            // from then on.
            self.settle();
            self.now = self.now.max(next);
            if tr <= te {
                self.client_step();
            } else {
                let Some(Reverse((_, _, ev))) = self.events.pop() else {
                    break;
                };
                self.handle(ev);
            }
        }
        self.settle();
        self.now = self.now.max(target);
    }

    /// Evaluates the engine's pending waits if the state changed.
    pub(crate) fn settle(&mut self) {
        if self.waits.dirty {
            self.waits.dirty = false;
            waits::evaluate(self);
        }
    }

    fn primary_index(&self, p: u32) -> Option<usize> {
        self.parts[p as usize]
            .replicas
            .iter()
            .position(|r| r.role == Rep::Primary)
    }

    pub(crate) fn primary(&self, p: u32) -> Option<&Replica> {
        self.primary_index(p)
            .map(|i| &self.parts[p as usize].replicas[i])
    }

    pub(crate) fn serving(&self, r: &Replica) -> bool {
        let n = &self.nodes[r.node as usize];
        n.up() && r.loaded && matches!(r.role, Rep::Primary | Rep::Secondary)
    }

    /// Members that serve: a live primary or secondary with its data.
    pub(crate) fn members(&self, p: u32) -> usize {
        self.parts[p as usize]
            .replicas
            .iter()
            .filter(|r| self.serving(r))
            .count()
    }

    /// The primary serves reads (no primary change is running).
    pub(crate) fn readable(&self, p: u32) -> bool {
        let Some(primary) = self.primary(p) else {
            return false;
        };
        self.serving(primary) && self.now >= self.parts[p as usize].read_block_until
    }

    /// Writes commit: the primary serves, no reconfiguration holds them, and the model's write
    /// quorum of members serves (never more than the table's replica count).
    pub(crate) fn writable(&self, p: u32) -> bool {
        if !self.readable(p) || self.now < self.parts[p as usize].write_block_until {
            return false;
        }
        if let Some(r) = self.primary(p)
            && (self.parts[p as usize].fenced == Some(r.node)
                || self.nodes[r.node as usize].write_hold > 0)
        {
            return false;
        }
        let need = usize::from(self.parts[p as usize].wanted).min(self.profile.write_quorum);
        need <= 1 || self.members(p) >= need
    }

    /// Delivers the leader's writes to its connected followers, up to what replication has
    /// carried by now: PacificA prepares on every member before the ack (no lag); OpenMLDB
    /// followers receive a write `replication_lag` after the leader acked it. Called before
    /// any change to a partition's roles, so each follower holds exactly what it had then.
    pub(crate) fn replicate(&mut self, p: u32) {
        let Some(pi) = self.primary_index(p) else {
            return;
        };
        let lag = us(self.t.replication_lag);
        // Without a lag everything the leader holds has been acked by now: exact, whatever
        // the logs' rounding of ack times.
        let upto = if lag == 0 {
            Us::MAX
        } else {
            self.now.saturating_sub(lag)
        };
        let now = self.now;
        let leader_up = {
            let r = &self.parts[p as usize].replicas[pi];
            r.loaded && self.nodes[r.node as usize].up()
        };
        // A leader fenced by ChangeRole(follower) dropped its replicate nodes: nothing ships;
        // nor does anything reach followers whose term is above the leader's.
        if !leader_up
            || self.parts[p as usize].orphaned
            || self.parts[p as usize].fenced == Some(self.parts[p as usize].replicas[pi].node)
        {
            return;
        }
        let n = self.parts[p as usize].replicas.len();
        let mut leader = std::mem::take(&mut self.parts[p as usize].replicas[pi].log);
        for i in (0..n).filter(|&i| i != pi) {
            let r = &self.parts[p as usize].replicas[i];
            let connected = r.role == Rep::Secondary
                && r.loaded
                && r.behind_until <= now
                && self.nodes[r.node as usize].up();
            if connected {
                self.parts[p as usize].replicas[i].log.follow(&leader, upto);
            }
        }
        std::mem::swap(&mut self.parts[p as usize].replicas[pi].log, &mut leader);
    }

    /// Starts a reconfiguration of `p` (`Timings::reconfigure`; zero where the system has no
    /// such window): reads and writes wait. A Pegasus primary turns `PS_INACTIVE` while its
    /// configuration update is at the meta, whatever it changes, and refuses reads then
    /// (`replica::update_configuration_on_meta_server`, `replica::on_client_read`,
    /// `src/replica/replica_config.cpp` and `replica.cpp` @v2.5.0; the same in v2.4.0 and
    /// master).
    pub(crate) fn reconfigure(&mut self, p: u32) {
        self.reconfigure_for(p, us(self.t.reconfigure));
    }

    /// A reconfiguration of partition `p` that takes `took` (see [`Self::reconfigure`]).
    pub(crate) fn reconfigure_for(&mut self, p: u32, took: Us) {
        let until = self.now + took;
        let part = &mut self.parts[p as usize];
        part.ballot += 1;
        part.write_block_until = part.write_block_until.max(until);
        part.read_block_until = part.read_block_until.max(until);
        part.busy_until = part.busy_until.max(until);
        if until > self.now {
            self.schedule(until, Ev::Unblock { part: p });
        }
    }

    /// Recomputes a partition's health, availability and node counters, and records them.
    pub(crate) fn touch(&mut self, p: u32) {
        let members = self.members(p);
        let available = self.writable(p);
        let now = self.now;
        let wanted = usize::from(self.parts[p as usize].wanted);
        let has_primary = self.readable(p);
        let healthy = has_primary
            && members >= wanted
            && self.parts[p as usize]
                .replicas
                .iter()
                .all(|r| self.serving(r));
        let mut contrib = std::mem::take(&mut self.parts[p as usize].contrib);
        let mut fresh = [(0u32, 0u8); 8];
        let mut len = 0;
        let sole = self.parts[p as usize].replicas.len() == 1;
        let small = wanted < 3;
        let live_secondary = small
            && self.parts[p as usize]
                .replicas
                .iter()
                .any(|r| r.role == Rep::Secondary && self.nodes[r.node as usize].up());
        for r in &self.parts[p as usize].replicas {
            let member = matches!(r.role, Rep::Primary | Rep::Secondary);
            let mut f = 0;
            if small && member && !(r.role == Rep::Primary && live_secondary) {
                f |= F_STUCK_MEMBER;
            }
            if sole && r.role == Rep::Primary {
                f |= F_SOLE_PRIMARY;
            }
            if r.role == Rep::Inactive {
                f |= F_DROPPED;
            }
            if r.role == Rep::Primary {
                f |= F_PRIMARY;
            }
            if member {
                f |= F_MEMBER;
            }
            if !(r.loaded && member) {
                f |= F_NOT_BACK;
            }
            if !r.loaded {
                f |= F_UNLOADED;
            }
            if r.role == Rep::Learner {
                f |= F_LEARNER;
            }
            if len < fresh.len() {
                fresh[len] = (r.node, f);
                len += 1;
            }
        }
        if contrib[..] != fresh[..len] {
            let table = self.parts[p as usize].table;
            for &(n, f) in &contrib {
                let node = &mut self.nodes[n as usize];
                add_counts(&mut node.counts, f, false);
                add_table_counts(&mut node.table_counts, table, f, false);
            }
            for &(n, f) in &fresh[..len] {
                let node = &mut self.nodes[n as usize];
                add_counts(&mut node.counts, f, true);
                add_table_counts(&mut node.table_counts, table, f, true);
            }
            contrib.clear();
            contrib.extend_from_slice(&fresh[..len]);
        }
        for &(n, _) in &fresh[..len] {
            let node = &mut self.nodes[n as usize];
            if node.held && !node.draining && node.up() && node.counts.not_back == 0 {
                node.held = false;
            }
        }
        // Of the replicas the partition misses, those on nodes the rollout holds (a
        // temporary replica standing in for one makes up for it).
        let held_down = self.parts[p as usize]
            .replicas
            .iter()
            .filter(|r| self.nodes[r.node as usize].held && !self.serving(r))
            .count();
        let by_rollout = held_down.min(wanted.saturating_sub(members));
        self.mon.max_replicas_down_by_rollout =
            self.mon.max_replicas_down_by_rollout.max(by_rollout);
        self.parts[p as usize].contrib = contrib;
        let part = &mut self.parts[p as usize];
        if wanted > 0 {
            let down = wanted.saturating_sub(members);
            if down > self.mon.max_replicas_down {
                tracing::debug!(
                    at = self.now as f64 / 1e6,
                    partition = p,
                    down,
                    replicas = ?part
                        .replicas
                        .iter()
                        .map(|r| (r.node, r.role, r.loaded))
                        .collect::<Vec<_>>(),
                    "the most replicas of a partition down so far"
                );
            }
            self.mon.max_replicas_down = self.mon.max_replicas_down.max(down);
        }
        match (available, part.unavailable_since) {
            (false, None) => part.unavailable_since = Some(now),
            (true, Some(since)) => {
                self.mon.unavailable_us += now - since;
                add_table_us(&mut self.mon.unavailable_table_us, part.table, now - since);
                part.unavailable_since = None;
            }
            _ => {}
        }
        let headless = !part
            .replicas
            .iter()
            .any(|r| r.role == Rep::Primary && !self.nodes[r.node as usize].offline);
        if headless {
            self.headless.insert(p);
        } else {
            self.headless.remove(&p);
        }
        let part = &mut self.parts[p as usize];
        if part.healthy != healthy {
            part.healthy = healthy;
            if healthy {
                self.unhealthy.remove(&p);
            } else {
                self.unhealthy.insert(p);
            }
        }
        self.changed();
    }

    pub(crate) fn touch_node(&mut self, n: u32) {
        self.note_liveness(n);
        let parts = self.nodes[n as usize].parts.clone();
        for p in parts {
            self.touch(p);
        }
        self.changed();
    }

    /// Keeps [`World::down_data`] true for node `n` after its process or attachment changed.
    pub(crate) fn note_liveness(&mut self, n: u32) {
        let node = &self.nodes[n as usize];
        if node.kind == RoleKind::Data && !(node.up() && node.attached) {
            self.down_data.insert(n);
        } else {
            self.down_data.remove(&n);
        }
    }

    /// Alive data nodes as the coordinator sees them.
    pub(crate) fn alive_data(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.kind == RoleKind::Data && n.attached)
            .count()
    }

    /// Draws a transient control-plane failure.
    pub(crate) fn transient(&mut self) -> bool {
        self.transient_p > 0.0 && self.rng.random_bool(self.transient_p)
    }
}

#[cfg(test)]
mod tests;

/// Adds `us` to table `table`'s unavailability.
pub(crate) fn add_table_us(per_table: &mut Vec<u64>, table: u16, us: Us) {
    let t = usize::from(table);
    if per_table.len() <= t {
        per_table.resize(t + 1, 0);
    }
    per_table[t] += us;
}
