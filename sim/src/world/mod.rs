//! The simulated cluster's state and its dynamics in virtual time.
//!
//! Time is in microseconds since the simulation began. Nothing runs on its own: every call
//! first [`advance`](World::advance)s the world to the current tokio instant, processing
//! scheduled events and client requests in time order, so the state anyone sees is exactly
//! the state at that instant.
//!
//! The kernel here (event queue, process lifecycle, failure detection by beacons, health
//! timeline, counters) is shared; each flavor's control plane reads like its upstream system
//! in its own module: [`pegasus`] (meta, PacificA, proposals at the lb tick) and [`openmldb`]
//! (nameserver op queues, asynchronous followers, auto failover). [`clients`] runs the
//! requests, [`ledger`] holds every acknowledged write, [`conditions`] evaluates what the
//! engine waits for, and [`waits`] measures how long the engine idled after a condition held.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollout_core::{NodeId, RoleKind};

use crate::config::{ClientLoad, Flavor, Timings};
use crate::monitor::Monitor;

mod clients;
pub(crate) mod conditions;
pub(crate) mod ledger;
mod openmldb;
mod pegasus;
pub(crate) mod waits;

pub(crate) use clients::Clients;
pub(crate) use ledger::Log;
pub(crate) use openmldb::Op;

/// Microseconds of virtual time.
pub(crate) type Us = u64;

pub(crate) fn us(d: std::time::Duration) -> Us {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A replica's state as the coordinator records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rep {
    Primary,
    Secondary,
    Learner,
    Inactive,
}

#[derive(Clone, Debug)]
pub(crate) struct Replica {
    pub(crate) node: u32,
    pub(crate) role: Rep,
    /// The data is in the process (OpenMLDB memory tables; Pegasus while the process runs).
    pub(crate) loaded: bool,
    /// The writes this replica has applied.
    pub(crate) log: Log,
    /// OpenMLDB: marked alive by RecoverTable while still behind; it receives nothing new
    /// from the leader before this instant.
    pub(crate) behind_until: Us,
}

impl Replica {
    pub(crate) fn new(node: u32, role: Rep) -> Self {
        Self {
            node,
            role,
            loaded: true,
            log: Log::default(),
            behind_until: 0,
        }
    }
}

/// Per-node counters a partition contributes to (kept by [`World::touch`]).
const F_PRIMARY: u8 = 1;
const F_MEMBER: u8 = 2;
const F_NOT_BACK: u8 = 4;
const F_UNLOADED: u8 = 8;
const F_LEARNER: u8 = 16;

#[derive(Clone, Debug, Default)]
pub(crate) struct Part {
    pub(crate) replicas: Vec<Replica>,
    pub(crate) wanted: u8,
    /// The next write's sequence number.
    pub(crate) next_seq: u32,
    /// Sequence numbers of the writes acknowledged to clients, increasing.
    pub(crate) acked: Vec<u32>,
    /// A reconfiguration is running: writes wait until then.
    pub(crate) write_block_until: Us,
    /// A primary change is running: reads wait too.
    pub(crate) read_block_until: Us,
    /// Pegasus: the meta runs at most one proposal per partition; the next waits for this.
    pub(crate) busy_until: Us,
    /// OpenMLDB: a deposed leader clients still write to, until the time given.
    pub(crate) stale_leader: Option<(u32, Us)>,
    pub(crate) unavailable_since: Option<Us>,
    pub(crate) healthy: bool,
    /// What this partition adds to each node's counters, as of the last touch.
    pub(crate) contrib: Vec<(u32, u8)>,
}

/// A node's counters over its partitions, for conditions that must not scan them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) primaries: u32,
    pub(crate) members: u32,
    pub(crate) not_back: u32,
    pub(crate) unloaded: u32,
    pub(crate) learners: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct NodeS {
    pub(crate) id: NodeId,
    pub(crate) role: &'static str,
    pub(crate) kind: RoleKind,
    pub(crate) rank: u32,
    pub(crate) zone: Option<String>,
    /// The process exists.
    pub(crate) running: bool,
    /// The process serves (start and replay finished).
    pub(crate) serving: bool,
    /// The coordinator considers it alive.
    pub(crate) attached: bool,
    /// The coordinator has noticed it is gone (Pegasus dead, OpenMLDB kOffline).
    pub(crate) offline: bool,
    /// Its beacons (Pegasus) or ZooKeeper session (OpenMLDB) reach the coordinator.
    pub(crate) beaconing: bool,
    /// Bumped whenever `beaconing` changes: detection and attach events carry it.
    pub(crate) fd_epoch: u64,
    /// The boot the coordinator last saw attach.
    pub(crate) attached_boot: u64,
    /// OpenMLDB auto failover already ran its offline procedure.
    pub(crate) auto_offlined: bool,
    pub(crate) boot: u64,
    pub(crate) version: String,
    pub(crate) digest: String,
    pub(crate) staged: Option<(String, String)>,
    pub(crate) parts: Vec<u32>,
    pub(crate) counts: Counts,
    pub(crate) unflushed: u64,
    pub(crate) flush_done: Option<Us>,
    pub(crate) draining: bool,
    /// Pegasus: only its primaries are moved (the upstream script's migrate step).
    pub(crate) move_only: bool,
    /// OpenMLDB: partitions it led when drained, to hand back on rejoin.
    pub(crate) led: Vec<u32>,
    /// OpenMLDB: ops queued or running that name this node.
    pub(crate) ops: u32,
    pub(crate) contact_lost_until: Us,
    /// When the process last went away.
    pub(crate) down_since: Us,
    pub(crate) restarts: u32,
    pub(crate) crashes: u32,
    pub(crate) fail_start: bool,
    /// Why the last process exited on its own, if it did.
    pub(crate) exit_reason: Option<String>,
    pub(crate) slow_start: Us,
    pub(crate) stuck_drain: bool,
}

impl NodeS {
    pub(crate) fn new(
        id: NodeId,
        role: &'static str,
        kind: RoleKind,
        rank: u32,
        zone: Option<String>,
    ) -> Self {
        Self {
            id,
            role,
            kind,
            rank,
            zone,
            running: true,
            serving: true,
            attached: true,
            offline: false,
            beaconing: true,
            fd_epoch: 0,
            attached_boot: 1,
            auto_offlined: false,
            boot: 1,
            version: "1.0.0".into(),
            digest: "initial".into(),
            staged: None,
            parts: Vec::new(),
            counts: Counts::default(),
            unflushed: 0,
            flush_done: None,
            draining: false,
            move_only: false,
            led: Vec::new(),
            ops: 0,
            contact_lost_until: 0,
            down_since: 0,
            restarts: 0,
            crashes: 0,
            fail_start: false,
            exit_reason: None,
            slow_start: 0,
            stuck_drain: false,
        }
    }

    pub(crate) fn up(&self) -> bool {
        self.running && self.serving
    }

    /// An elected coordinator role (not the taskmanager, which has its own election).
    pub(crate) fn is_elected_coordinator(&self) -> bool {
        self.kind == RoleKind::Coordinator && self.role != "taskmanager"
    }
}

/// Scheduled cluster events. Stale ones (the node rebooted, or its beacons changed) are
/// ignored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ev {
    Tick,
    StopDone { node: u32, boot: u64 },
    Serving { node: u32, boot: u64 },
    Attach { node: u32, epoch: u64 },
    Exit { node: u32, boot: u64 },
    Detect { node: u32, epoch: u64 },
    AutoOffline { node: u32, boot: u64 },
    LearnDone { part: u32, node: u32, boot: u64 },
    Unblock { part: u32 },
    Flushed { node: u32 },
    Elect,
    LeaseCheck { since: Us },
    LeaseLost { node: u32, epoch: u64 },
    OpDone { queue: usize },
    Crash { node: u32 },
    CrashRestart { node: u32 },
    ContactLost { node: u32, until: Us },
    ContactBack { node: u32 },
    LeaderFailover,
}

pub(crate) struct World {
    pub(crate) flavor: Flavor,
    pub(crate) t: Timings,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: Us,
    pub(crate) nodes: Vec<NodeS>,
    pub(crate) parts: Vec<Part>,
    events: BinaryHeap<Reverse<(Us, u64, Ev)>>,
    seq: u64,
    pub(crate) clients: Clients,
    pub(crate) knobs: BTreeMap<String, String>,
    pub(crate) knob_defaults: BTreeMap<String, String>,
    pub(crate) leader: Option<u32>,
    leaderless_since: Option<Us>,
    pub(crate) ops: Vec<VecDeque<Op>>,
    pub(crate) running_op: Vec<Option<(Op, Us)>>,
    pub(crate) unhealthy: BTreeSet<u32>,
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
        flavor: Flavor,
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
        let queues = t.op_queues.max(1);
        let mut w = Self {
            flavor,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            nodes,
            parts,
            events: BinaryHeap::new(),
            seq: 0,
            clients: Clients::new(load),
            knob_defaults: knobs.clone(),
            knobs,
            leader,
            leaderless_since: None,
            ops: vec![VecDeque::new(); queues],
            running_op: vec![None; queues],
            unhealthy: BTreeSet::new(),
            last_change: 0,
            transient_p: 0.0,
            wake_hints: true,
            waits: waits::Waits::default(),
            mon: Monitor::default(),
            t,
        };
        if w.flavor == Flavor::Pegasus {
            let tick = us(w.t.tick);
            w.schedule(tick, Ev::Tick);
        }
        for p in 0..w.parts.len() as u32 {
            w.touch(p);
        }
        w
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

    /// Writes commit: Pegasus needs the primary and `mutation_2pc_min_replica_count` members
    /// (2, or the table's replica count when smaller); OpenMLDB only its leader.
    pub(crate) fn writable(&self, p: u32) -> bool {
        if !self.readable(p) || self.now < self.parts[p as usize].write_block_until {
            return false;
        }
        match self.flavor {
            Flavor::Pegasus => {
                let need = usize::from(self.parts[p as usize].wanted).min(2);
                self.members(p) >= need
            }
            Flavor::OpenMldb => true,
        }
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
        let upto = self.now.saturating_sub(lag);
        let now = self.now;
        let leader_up = {
            let r = &self.parts[p as usize].replicas[pi];
            r.loaded && self.nodes[r.node as usize].up()
        };
        if !leader_up {
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
        for r in &self.parts[p as usize].replicas {
            let member = matches!(r.role, Rep::Primary | Rep::Secondary);
            let mut f = 0;
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
            for &(n, f) in &contrib {
                add_counts(&mut self.nodes[n as usize].counts, f, false);
            }
            for &(n, f) in &fresh[..len] {
                add_counts(&mut self.nodes[n as usize].counts, f, true);
            }
            contrib.clear();
            contrib.extend_from_slice(&fresh[..len]);
        }
        self.parts[p as usize].contrib = contrib;
        let part = &mut self.parts[p as usize];
        if wanted > 0 {
            let down = wanted.saturating_sub(members);
            self.mon.max_replicas_down = self.mon.max_replicas_down.max(down);
        }
        match (available, part.unavailable_since) {
            (false, None) => part.unavailable_since = Some(now),
            (true, Some(since)) => {
                self.mon.unavailable_us += now - since;
                part.unavailable_since = None;
            }
            _ => {}
        }
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
        let parts = self.nodes[n as usize].parts.clone();
        for p in parts {
            self.touch(p);
        }
        self.changed();
    }

    /// Alive data nodes as the coordinator sees them.
    pub(crate) fn alive_data(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.kind == RoleKind::Data && n.attached)
            .count()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                self.pegasus_tick();
                self.after(us(self.t.tick), Ev::Tick);
            }
            Ev::StopDone { node, boot } | Ev::Exit { node, boot } => {
                let n = &self.nodes[node as usize];
                if n.boot == boot && n.running {
                    if matches!(ev, Ev::Exit { .. }) {
                        self.nodes[node as usize].exit_reason = Some(if n.fail_start {
                            "the process exited during start (injected crash loop)".into()
                        } else {
                            "the process exited with ZNODEEXISTS: its old ZooKeeper session \
                             still existed when it started"
                                .into()
                        });
                    }
                    self.process_gone(node);
                }
            }
            Ev::Serving { node, boot } => {
                let n = &mut self.nodes[node as usize];
                if n.boot == boot && n.running && !n.serving {
                    n.serving = true;
                    n.unflushed = 0;
                    if n.is_elected_coordinator() && self.leader.is_none() {
                        // A coordinator that comes up with no leader campaigns at once.
                        self.schedule(self.now, Ev::Elect);
                    }
                    self.beacons_changed(node);
                    self.touch_node(node);
                }
            }
            Ev::Attach { node, epoch } => {
                let n = &self.nodes[node as usize];
                if n.fd_epoch == epoch && n.beaconing {
                    self.attach(node);
                }
            }
            Ev::Detect { node, epoch } => {
                let n = &self.nodes[node as usize];
                if n.fd_epoch == epoch && !n.beaconing {
                    self.detect(node);
                }
            }
            Ev::AutoOffline { node, boot } => {
                let n = &self.nodes[node as usize];
                if n.boot == boot
                    && n.offline
                    && !n.auto_offlined
                    && self.knob("auto_failover") == "true"
                {
                    self.auto_offline(node);
                }
            }
            Ev::LearnDone { part, node, boot } => self.learn_done(part, node, boot),
            Ev::Unblock { part } => self.touch(part),
            Ev::Flushed { node } => {
                let n = &mut self.nodes[node as usize];
                if n.flush_done.is_some_and(|t| t <= self.now) {
                    n.unflushed = 0;
                    self.changed();
                }
            }
            Ev::Elect => self.elect(),
            Ev::LeaseCheck { since } => {
                if self.leader.is_none() && self.leaderless_since == Some(since) {
                    let data: Vec<u32> = (0..self.nodes.len() as u32)
                        .filter(|&n| self.nodes[n as usize].kind == RoleKind::Data)
                        .collect();
                    for n in data {
                        self.drop_replicas(n);
                    }
                }
            }
            Ev::LeaseLost { node, epoch } => {
                let n = &self.nodes[node as usize];
                if n.fd_epoch == epoch && !n.beaconing && n.running {
                    self.drop_replicas(node);
                }
            }
            Ev::OpDone { queue } => self.op_done(queue),
            Ev::Crash { node } => {
                if self.nodes[node as usize].running {
                    self.nodes[node as usize].crashes += 1;
                    self.nodes[node as usize].exit_reason = Some("the process crashed".into());
                    self.process_gone(node);
                    let delay = us(self.t.crash_restart);
                    self.after(delay, Ev::CrashRestart { node });
                }
            }
            Ev::CrashRestart { node } => {
                if !self.nodes[node as usize].running {
                    self.launch(node);
                }
            }
            Ev::ContactLost { node, until } => {
                let n = &mut self.nodes[node as usize];
                n.contact_lost_until = n.contact_lost_until.max(until);
                self.beacons_changed(node);
                let back = self.nodes[node as usize].contact_lost_until - self.now;
                self.after(back, Ev::ContactBack { node });
            }
            Ev::ContactBack { node } => self.beacons_changed(node),
            Ev::LeaderFailover => {
                if let Some(l) = self.leader {
                    self.nodes[l as usize].crashes += 1;
                    self.process_gone(l);
                    let delay = us(self.t.crash_restart);
                    self.after(delay, Ev::CrashRestart { node: l });
                }
            }
        }
    }

    /// Failure detection: a node beacons (Pegasus) or holds its ZooKeeper session (OpenMLDB)
    /// while its process serves and the network reaches the coordinators, whatever its boot.
    /// When that stops, the coordinator declares it dead `detect` later unless it resumes;
    /// when it resumes, the node attaches after one beacon interval.
    pub(crate) fn beacons_changed(&mut self, node: u32) {
        let n = &self.nodes[node as usize];
        let now_beaconing = n.up() && self.now >= n.contact_lost_until;
        if now_beaconing == n.beaconing {
            return;
        }
        let data = n.kind == RoleKind::Data;
        let n = &mut self.nodes[node as usize];
        n.beaconing = now_beaconing;
        n.fd_epoch += 1;
        let epoch = n.fd_epoch;
        if now_beaconing {
            let d = us(self.t.beacon);
            self.after(d, Ev::Attach { node, epoch });
        } else {
            let d = us(self.t.detect);
            self.after(d, Ev::Detect { node, epoch });
            if self.flavor == Flavor::Pegasus && data {
                // A replica server that hears from no meta for fd_lease drops its replicas.
                let l = us(self.t.lease);
                self.after(l, Ev::LeaseLost { node, epoch });
            }
        }
    }

    /// The process of `node` is gone (stopped, crashed or exited).
    pub(crate) fn process_gone(&mut self, node: u32) {
        let now = self.now;
        let was_serving = self.nodes[node as usize].serving;
        let kind = self.nodes[node as usize].kind;
        if kind == RoleKind::Data {
            // Followers keep exactly what replication had carried at this instant.
            let parts = self.nodes[node as usize].parts.clone();
            for &p in &parts {
                self.replicate(p);
            }
        }
        {
            let n = &mut self.nodes[node as usize];
            n.running = false;
            n.serving = false;
            n.flush_done = None;
            n.down_since = now;
        }
        if kind == RoleKind::Coordinator && self.leader == Some(node) {
            self.leader = None;
            self.leaderless_since = Some(now);
            let e = us(self.t.election);
            self.after(e, Ev::Elect);
            if self.flavor == Flavor::Pegasus {
                let l = us(self.t.lease);
                self.after(l, Ev::LeaseCheck { since: now });
            }
        }
        if kind == RoleKind::Data && was_serving {
            match self.flavor {
                Flavor::Pegasus => self.pegasus_replica_server_gone(node),
                Flavor::OpenMldb => self.openmldb_tablet_gone(node),
            }
        }
        if kind != RoleKind::Data {
            self.nodes[node as usize].attached = false;
        }
        self.beacons_changed(node);
        self.touch_node(node);
    }

    /// The coordinator notices `node` is gone.
    fn detect(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        if n.offline {
            return;
        }
        n.offline = true;
        n.attached = false;
        let boot = n.boot;
        if self.flavor == Flavor::OpenMldb {
            let d = us(self.t.heartbeat_timeout);
            self.after(d, Ev::AutoOffline { node, boot });
        }
        self.touch_node(node);
    }

    /// A node's beacons (or session) reach the coordinator again.
    fn attach(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        let fresh_start = n.attached_boot != n.boot;
        n.attached = true;
        n.offline = false;
        n.attached_boot = n.boot;
        if self.flavor == Flavor::OpenMldb && n.kind == RoleKind::Data {
            self.openmldb_tablet_registered(node, fresh_start);
        }
        self.touch_node(node);
    }

    fn elect(&mut self) {
        if self.leader.is_some() {
            return;
        }
        let candidate = self
            .nodes
            .iter()
            .position(|n| n.is_elected_coordinator() && n.up());
        match candidate {
            Some(c) => {
                self.leader = Some(c as u32);
                self.leaderless_since = None;
                if self.flavor == Flavor::Pegasus {
                    // Meta levels and meta.lb.* values live in the leader's memory: a new
                    // leader starts from its config.
                    self.knobs = self.knob_defaults.clone();
                }
                for q in 0..self.ops.len() {
                    self.start_op(q);
                }
                self.changed();
            }
            None => {
                let e = us(self.t.election);
                self.after(e, Ev::Elect);
            }
        }
    }

    /// Launches the process of `node`: it serves after start plus replay.
    pub(crate) fn launch(&mut self, node: u32) {
        let replay = self.nodes[node as usize]
            .unflushed
            .saturating_mul(us(self.t.replay_per_write));
        let n = &mut self.nodes[node as usize];
        n.running = true;
        n.serving = false;
        n.boot += 1;
        n.flush_done = None;
        n.exit_reason = None;
        if let Some((v, d)) = n.staged.take() {
            n.version = v;
            n.digest = d;
        }
        let boot = n.boot;
        let zk_race = self.flavor == Flavor::OpenMldb && n.kind == RoleKind::Data && !n.offline;
        if n.fail_start || zk_race {
            // Crash loop, or OpenMLDB's ZNODEEXISTS exit when the old session still exists.
            let d = 3_000_000;
            self.after(d, Ev::Exit { node, boot });
        } else {
            let d = us(self.t.start)
                .saturating_add(replay)
                .saturating_add(self.nodes[node as usize].slow_start);
            self.after(d, Ev::Serving { node, boot });
        }
        self.changed();
    }

    /// Draws a transient control-plane failure.
    pub(crate) fn transient(&mut self) -> bool {
        self.transient_p > 0.0 && self.rng.random_bool(self.transient_p)
    }

    /// Acknowledged writes absent from what each partition serves now: its primary, or,
    /// with none, the member recovery would promote (the longest log).
    pub(crate) fn writes_lost(&mut self) -> u64 {
        let mut lost = 0;
        for p in 0..self.parts.len() as u32 {
            self.replicate(p);
            let part = &self.parts[p as usize];
            let serving = part
                .replicas
                .iter()
                .find(|r| r.role == Rep::Primary && r.loaded)
                .or_else(|| part.replicas.iter().max_by_key(|r| r.log.len()));
            lost += match serving {
                Some(r) => ledger::missing(&part.acked, &r.log),
                None => part.acked.len() as u64,
            };
        }
        lost
    }
}

fn add_counts(c: &mut Counts, f: u8, add: bool) {
    let step = |v: &mut u32, on: bool| {
        if on {
            *v = if add { *v + 1 } else { v.saturating_sub(1) };
        }
    };
    step(&mut c.primaries, f & F_PRIMARY != 0);
    step(&mut c.members, f & F_MEMBER != 0);
    step(&mut c.not_back, f & F_NOT_BACK != 0);
    step(&mut c.unloaded, f & F_UNLOADED != 0);
    step(&mut c.learners, f & F_LEARNER != 0);
}

#[cfg(test)]
mod tests;
