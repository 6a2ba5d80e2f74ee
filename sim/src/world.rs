//! The simulated cluster's state and its dynamics in virtual time.
//!
//! Time is in microseconds since the simulation began. Nothing runs on its own: every call
//! first [`advance`](World::advance)s the world to the current tokio instant, processing
//! scheduled events and client requests in time order, so the state anyone sees is exactly
//! the state at that instant.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollout_core::{NodeId, RoleKind};

use crate::config::{ClientLoad, Flavor, Timings};
use crate::monitor::Monitor;

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
    /// The data is in the process (OpenMLDB memory tables; always true for Pegasus while up).
    pub(crate) loaded: bool,
    /// The partition's write count when this replica stopped following.
    pub(crate) applied: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Part {
    pub(crate) replicas: Vec<Replica>,
    pub(crate) wanted: u8,
    pub(crate) writes: u64,
    pub(crate) write_block_until: Us,
    /// OpenMLDB: a fenced leader handover is running.
    pub(crate) handover: bool,
    /// OpenMLDB: acks not yet replicated (times).
    pub(crate) recent_acks: VecDeque<Us>,
    /// OpenMLDB: a deposed leader clients still write to, until the time given.
    pub(crate) stale_leader: Option<(u32, Us)>,
    pub(crate) unavailable_since: Option<Us>,
    pub(crate) healthy: bool,
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
    /// OpenMLDB auto failover already ran its offline procedure.
    pub(crate) auto_offlined: bool,
    pub(crate) boot: u64,
    pub(crate) version: String,
    pub(crate) digest: String,
    pub(crate) staged: Option<(String, String)>,
    pub(crate) parts: Vec<u32>,
    pub(crate) unflushed: u64,
    pub(crate) flush_done: Option<Us>,
    pub(crate) draining: bool,
    /// OpenMLDB: partitions it led when drained, to hand back on rejoin.
    pub(crate) led: Vec<u32>,
    pub(crate) contact_lost_until: Us,
    /// When the process last went away.
    pub(crate) down_since: Us,
    pub(crate) restarts: u32,
    pub(crate) crashes: u32,
    pub(crate) fail_start: bool,
    pub(crate) slow_start: Us,
    pub(crate) stuck_drain: bool,
}

impl NodeS {
    pub(crate) fn up(&self) -> bool {
        self.running && self.serving
    }
}

/// Scheduled cluster events. Stale ones (the node has rebooted since) are ignored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ev {
    Tick,
    StopDone { node: u32, boot: u64 },
    Serving { node: u32, boot: u64 },
    Attach { node: u32, boot: u64 },
    Exit { node: u32, boot: u64 },
    Detect { node: u32, boot: u64 },
    AutoOffline { node: u32, boot: u64 },
    LearnDone { part: u32, node: u32, boot: u64 },
    Unblock { part: u32 },
    Flushed { node: u32 },
    Elect,
    LeaseCheck { since: Us },
    LeaseLost { node: u32 },
    OpDone { queue: usize },
    Crash { node: u32 },
    CrashRestart { node: u32 },
    ContactLost { node: u32, until: Us },
    ContactBack { node: u32 },
    LeaderFailover,
    RouteRefresh { part: u32 },
}

/// An OpenMLDB nameserver op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    ChangeLeader {
        part: u32,
        from: u32,
        to: Option<u32>,
        fenced: bool,
    },
    RecoverTable {
        part: u32,
        node: u32,
    },
}

impl Op {
    fn part(&self) -> u32 {
        match self {
            Op::ChangeLeader { part, .. } | Op::RecoverTable { part, .. } => *part,
        }
    }
}

/// A client request waiting for its next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Req {
    pub(crate) part: u32,
    pub(crate) write: bool,
    pub(crate) deadline: Us,
}

pub(crate) struct World {
    pub(crate) flavor: Flavor,
    pub(crate) t: Timings,
    pub(crate) load: ClientLoad,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: Us,
    pub(crate) nodes: Vec<NodeS>,
    pub(crate) parts: Vec<Part>,
    events: BinaryHeap<Reverse<(Us, u64, Ev)>>,
    retries: BinaryHeap<Reverse<(Us, u64, Req)>>,
    seq: u64,
    next_req: Us,
    req_interval: Us,
    pub(crate) knobs: BTreeMap<String, String>,
    pub(crate) knob_defaults: BTreeMap<String, String>,
    pub(crate) leader: Option<u32>,
    leaderless_since: Option<Us>,
    pub(crate) ops: [VecDeque<Op>; 2],
    pub(crate) running_op: [Option<Op>; 2],
    pub(crate) unhealthy: BTreeSet<u32>,
    pub(crate) last_change: Us,
    pub(crate) transient_p: f64,
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
        let req_interval = if load.rate == 0 {
            u64::MAX
        } else {
            1_000_000 / u64::from(load.rate)
        };
        let leader = nodes
            .iter()
            .position(|n| n.kind == RoleKind::Coordinator && n.role != "taskmanager")
            .map(|i| i as u32);
        let mut w = Self {
            flavor,
            t,
            load,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            nodes,
            parts,
            events: BinaryHeap::new(),
            retries: BinaryHeap::new(),
            seq: 0,
            next_req: req_interval.min(u64::MAX / 2),
            req_interval,
            knob_defaults: knobs.clone(),
            knobs,
            leader,
            leaderless_since: None,
            ops: [VecDeque::new(), VecDeque::new()],
            running_op: [None, None],
            unhealthy: BTreeSet::new(),
            last_change: 0,
            transient_p: 0.0,
            mon: Monitor::default(),
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

    pub(crate) fn changed(&mut self) {
        self.last_change = self.now;
    }

    pub(crate) fn knob(&self, name: &str) -> &str {
        self.knobs.get(name).map_or("", String::as_str)
    }

    /// Processes every event and client request up to `target`, in time order.
    pub(crate) fn advance(&mut self, target: Us) {
        loop {
            let te = self.next_event().unwrap_or(Us::MAX);
            let tr = self
                .retries
                .peek()
                .map_or(Us::MAX, |Reverse((t, _, _))| *t)
                .min(self.next_req);
            let next = te.min(tr);
            if next > target {
                break;
            }
            self.now = self.now.max(next);
            if tr <= te {
                self.client_step(tr);
            } else {
                let Some(Reverse((_, _, ev))) = self.events.pop() else {
                    break;
                };
                self.handle(ev);
            }
        }
        self.now = self.now.max(target);
    }

    fn client_step(&mut self, at: Us) {
        let req = if self.next_req == at {
            self.next_req = self.next_req.saturating_add(self.req_interval);
            let part = self.rng.random_range(0..self.parts.len() as u32);
            let write = self.rng.random_range(0..1000) < self.load.writes_per_mille;
            Req {
                part,
                write,
                deadline: at + us(self.load.timeout),
            }
        } else {
            let Some(Reverse((_, _, req))) = self.retries.pop() else {
                return;
            };
            req
        };
        self.attempt(req);
    }

    /// One attempt of a request at `self.now`.
    fn attempt(&mut self, req: Req) {
        let ok = if req.write {
            self.try_write(req.part)
        } else {
            self.readable(req.part)
        };
        if ok {
            self.mon.requests_ok += 1;
            return;
        }
        let next = self.now + us(self.load.retry);
        if next <= req.deadline {
            self.seq += 1;
            self.retries.push(Reverse((next, self.seq, req)));
        } else {
            self.mon.requests_failed += 1;
        }
    }

    fn primary(&self, p: u32) -> Option<&Replica> {
        self.parts[p as usize]
            .replicas
            .iter()
            .find(|r| r.role == Rep::Primary)
    }

    fn serving(&self, r: &Replica) -> bool {
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

    pub(crate) fn readable(&self, p: u32) -> bool {
        let part = &self.parts[p as usize];
        if part.handover {
            return false;
        }
        let Some(primary) = self.primary(p) else {
            return false;
        };
        self.serving(primary)
    }

    fn writable(&self, p: u32) -> bool {
        if !self.readable(p) {
            return false;
        }
        match self.flavor {
            Flavor::Pegasus => {
                self.now >= self.parts[p as usize].write_block_until && self.members(p) >= 2
            }
            Flavor::OpenMldb => true,
        }
    }

    fn try_write(&mut self, p: u32) -> bool {
        // A deposed OpenMLDB leader that clients still route to acks writes nobody keeps.
        if let Some((node, until)) = self.parts[p as usize].stale_leader
            && self.now < until
            && self.nodes[node as usize].up()
        {
            self.mon.writes_acked += 1;
            self.mon.writes_lost += 1;
            return true;
        }
        if !self.writable(p) {
            return false;
        }
        self.mon.writes_acked += 1;
        let now = self.now;
        let lag = us(self.t.replication_lag);
        let part = &mut self.parts[p as usize];
        part.writes += 1;
        if lag > 0 {
            while part.recent_acks.front().is_some_and(|t| t + lag <= now) {
                part.recent_acks.pop_front();
            }
            part.recent_acks.push_back(now);
        }
        let nodes: Vec<u32> = part
            .replicas
            .iter()
            .filter(|r| matches!(r.role, Rep::Primary | Rep::Secondary) && r.loaded)
            .map(|r| r.node)
            .collect();
        for n in nodes {
            if self.nodes[n as usize].up() {
                self.nodes[n as usize].unflushed += 1;
            }
        }
        true
    }

    /// Recomputes a partition's health and availability and records them.
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
        let part = &mut self.parts[p as usize];
        let down = wanted.saturating_sub(members);
        self.mon.max_replicas_down = self.mon.max_replicas_down.max(down);
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
            self.last_change = now;
        }
    }

    fn touch_node(&mut self, n: u32) {
        let parts = self.nodes[n as usize].parts.clone();
        for p in parts {
            self.touch(p);
        }
        self.changed();
    }

    /// Pegasus: the meta freezes (no proposals, no cure) with fewer than `min_live` replica
    /// servers alive, or a smaller share than `live_percentage`.
    fn frozen(&self) -> bool {
        let alive = self.alive_data();
        let all = self
            .nodes
            .iter()
            .filter(|n| n.kind == RoleKind::Data)
            .count();
        alive < self.t.min_live || alive * 100 < all * self.t.live_percentage as usize
    }

    /// Alive data nodes as the coordinator sees them.
    fn alive_data(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.kind == RoleKind::Data && n.attached)
            .count()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => {
                self.tick();
                self.after(us(self.t.tick), Ev::Tick);
            }
            Ev::StopDone { node, boot } => {
                if self.nodes[node as usize].boot == boot && self.nodes[node as usize].running {
                    self.process_gone(node);
                }
            }
            Ev::Serving { node, boot } => {
                let n = &mut self.nodes[node as usize];
                if n.boot == boot && n.running && !n.serving {
                    n.serving = true;
                    n.unflushed = 0;
                    let coordinator = n.kind == RoleKind::Coordinator && n.role != "taskmanager";
                    if coordinator && self.leader.is_none() {
                        // A coordinator that comes up with no leader campaigns at once.
                        self.schedule(self.now, Ev::Elect);
                    }
                    let delay = us(self.t.beacon);
                    self.after(delay, Ev::Attach { node, boot });
                    self.touch_node(node);
                }
            }
            Ev::Attach { node, boot } => {
                if self.nodes[node as usize].boot == boot && self.nodes[node as usize].up() {
                    self.attach(node);
                }
            }
            Ev::Exit { node, boot } => {
                if self.nodes[node as usize].boot == boot && self.nodes[node as usize].running {
                    self.process_gone(node);
                }
            }
            Ev::Detect { node, boot } => {
                let n = &self.nodes[node as usize];
                if (n.boot == boot && !n.up()) || n.contact_lost_until > self.now {
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
            Ev::LearnDone { part, node, boot } => {
                if self.nodes[node as usize].boot != boot {
                    // The learn was cut short by a restart; a new one has its own event.
                    return;
                }
                if self.nodes[node as usize].up() {
                    let writes = self.parts[part as usize].writes;
                    if let Some(r) = self.parts[part as usize]
                        .replicas
                        .iter_mut()
                        .find(|r| r.node == node && r.role == Rep::Learner)
                    {
                        r.role = Rep::Secondary;
                        r.loaded = true;
                        r.applied = writes;
                    }
                } else if let Some(r) = self.parts[part as usize]
                    .replicas
                    .iter_mut()
                    .find(|r| r.node == node && r.role == Rep::Learner)
                {
                    r.role = Rep::Inactive;
                }
                self.touch(part);
                self.changed();
            }
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
            Ev::LeaseLost { node } => {
                if self.nodes[node as usize].contact_lost_until > self.now {
                    self.drop_replicas(node);
                }
            }
            Ev::OpDone { queue } => self.op_done(queue),
            Ev::Crash { node } => {
                if self.nodes[node as usize].running {
                    self.nodes[node as usize].crashes += 1;
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
                self.nodes[node as usize].contact_lost_until = until;
                let boot = self.nodes[node as usize].boot;
                let d = us(self.t.detect);
                self.after(d, Ev::Detect { node, boot });
                if self.flavor == Flavor::Pegasus {
                    self.after(us(self.t.lease), Ev::LeaseLost { node });
                }
                self.after(until - self.now, Ev::ContactBack { node });
            }
            Ev::ContactBack { node } => {
                // An overlapping loss of contact that lasts longer keeps the node away.
                if self.nodes[node as usize].up()
                    && self.nodes[node as usize].contact_lost_until <= self.now
                {
                    self.attach(node);
                }
            }
            Ev::LeaderFailover => {
                if let Some(l) = self.leader {
                    self.nodes[l as usize].crashes += 1;
                    self.process_gone(l);
                    let delay = us(self.t.crash_restart);
                    self.after(delay, Ev::CrashRestart { node: l });
                }
            }
            Ev::RouteRefresh { part } => {
                if self.parts[part as usize]
                    .stale_leader
                    .is_some_and(|(_, t)| t <= self.now)
                {
                    self.parts[part as usize].stale_leader = None;
                }
            }
        }
    }

    /// The process of `node` is gone (stopped, crashed or exited).
    pub(crate) fn process_gone(&mut self, node: u32) {
        let now = self.now;
        let was_serving = self.nodes[node as usize].serving;
        {
            let n = &mut self.nodes[node as usize];
            n.running = false;
            n.serving = false;
            n.flush_done = None;
            n.down_since = now;
        }
        let kind = self.nodes[node as usize].kind;
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
            let parts = self.nodes[node as usize].parts.clone();
            let reconf = us(self.t.reconfigure);
            for p in parts {
                let writes = self.parts[p as usize].writes;
                let lost = if self.flavor == Flavor::OpenMldb
                    && self.primary(p).is_some_and(|r| r.node == node)
                {
                    let lag = us(self.t.replication_lag);
                    let part = &mut self.parts[p as usize];
                    part.recent_acks.retain(|t| t + lag > now);
                    let lost = part.recent_acks.len() as u64;
                    part.recent_acks.clear();
                    lost
                } else {
                    0
                };
                self.mon.writes_lost += lost;
                let flavor = self.flavor;
                let part = &mut self.parts[p as usize];
                let mut secondary_lost = false;
                for r in part.replicas.iter_mut().filter(|r| r.node == node) {
                    if r.role != Rep::Inactive {
                        // It stops following here.
                        r.applied = writes;
                    }
                    match (flavor, r.role) {
                        (Flavor::Pegasus, Rep::Secondary) => {
                            r.role = Rep::Inactive;
                            secondary_lost = true;
                        }
                        (_, Rep::Learner) => r.role = Rep::Inactive,
                        _ => {}
                    }
                    if flavor == Flavor::OpenMldb {
                        r.loaded = false;
                    }
                }
                if secondary_lost && reconf > 0 {
                    part.write_block_until = now + reconf;
                    self.after(reconf, Ev::Unblock { part: p });
                }
            }
        }
        if kind == RoleKind::Data {
            let boot = self.nodes[node as usize].boot;
            let d = us(self.t.detect);
            self.after(d, Ev::Detect { node, boot });
        } else {
            self.nodes[node as usize].attached = false;
        }
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

    /// A started node reports in.
    fn attach(&mut self, node: u32) {
        let was_auto = self.nodes[node as usize].auto_offlined;
        {
            let n = &mut self.nodes[node as usize];
            n.attached = true;
            n.offline = false;
            n.auto_offlined = false;
            n.contact_lost_until = 0;
        }
        if self.flavor == Flavor::OpenMldb
            && self.nodes[node as usize].kind == RoleKind::Data
            && self.knob("auto_failover") == "true"
        {
            // auto_failover: the nameserver offlines the endpoint if it had not yet, then
            // recovers every replica on it (RecoverEndpoint).
            if !was_auto {
                self.auto_offline(node);
            }
            self.recover_replicas(node);
        }
        self.touch_node(node);
    }

    /// OpenMLDB's offline procedure: move leaders off `node`, mark its replicas dead.
    fn auto_offline(&mut self, node: u32) {
        self.nodes[node as usize].auto_offlined = true;
        let parts = self.nodes[node as usize].parts.clone();
        for p in parts {
            let is_leader = self.primary(p).is_some_and(|r| r.node == node);
            if is_leader {
                self.enqueue(Op::ChangeLeader {
                    part: p,
                    from: node,
                    to: None,
                    fenced: false,
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

    fn elect(&mut self) {
        if self.leader.is_some() {
            return;
        }
        let candidate = self
            .nodes
            .iter()
            .position(|n| n.kind == RoleKind::Coordinator && n.role != "taskmanager" && n.up());
        match candidate {
            Some(c) => {
                self.leader = Some(c as u32);
                self.leaderless_since = None;
                if self.flavor == Flavor::Pegasus {
                    // Meta levels and meta.lb.* values live in the leader's memory: a new
                    // leader starts from its config.
                    self.knobs = self.knob_defaults.clone();
                }
                for q in 0..2 {
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

    /// Pegasus: a replica server that saw no meta for fd_lease turns its replicas inactive.
    fn drop_replicas(&mut self, n: u32) {
        let parts = self.nodes[n as usize].parts.clone();
        for p in parts {
            let writes = self.parts[p as usize].writes;
            for r in self.parts[p as usize]
                .replicas
                .iter_mut()
                .filter(|r| r.node == n && r.role != Rep::Inactive)
            {
                r.role = Rep::Inactive;
                r.applied = writes;
            }
            self.touch(p);
        }
        self.changed();
    }

    /// Pegasus meta tick: run proposals of draining nodes, promote, cure.
    fn tick(&mut self) {
        if self.leader.is_none() || self.frozen() {
            return;
        }
        let draining: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&n| self.nodes[n as usize].draining && !self.nodes[n as usize].stuck_drain)
            .collect();
        for n in draining {
            let parts = self.nodes[n as usize].parts.clone();
            for p in parts {
                self.move_primary(p, n);
                self.downgrade(p, n);
                self.touch(p);
            }
        }
        let todo: Vec<u32> = self.unhealthy.iter().copied().collect();
        for p in todo {
            self.promote(p);
            self.cure(p);
            self.touch(p);
        }
    }

    fn move_primary(&mut self, p: u32, from: u32) {
        let part = &self.parts[p as usize];
        let Some(pi) = part
            .replicas
            .iter()
            .position(|r| r.node == from && r.role == Rep::Primary)
        else {
            return;
        };
        let target = part.replicas.iter().position(|r| {
            r.role == Rep::Secondary
                && self.nodes[r.node as usize].up()
                && !self.nodes[r.node as usize].draining
        });
        if let Some(ti) = target {
            let part = &mut self.parts[p as usize];
            part.replicas[pi].role = Rep::Secondary;
            part.replicas[ti].role = Rep::Primary;
        }
    }

    fn downgrade(&mut self, p: u32, node: u32) {
        let members = self.members(p);
        let writes = self.parts[p as usize].writes;
        let part = &mut self.parts[p as usize];
        if let Some(r) = part
            .replicas
            .iter_mut()
            .find(|r| r.node == node && r.role == Rep::Secondary)
        {
            // Only where the partition keeps a primary and another secondary.
            if members >= 3 {
                r.role = Rep::Inactive;
                r.applied = writes;
            }
        }
    }

    /// The meta promotes a secondary where the primary's node is dead.
    fn promote(&mut self, p: u32) {
        let part = &self.parts[p as usize];
        let dead_primary = part
            .replicas
            .iter()
            .position(|r| r.role == Rep::Primary && self.nodes[r.node as usize].offline);
        let has_primary = part.replicas.iter().any(|r| r.role == Rep::Primary);
        if has_primary && dead_primary.is_none() {
            return;
        }
        let candidate = part
            .replicas
            .iter()
            .position(|r| r.role == Rep::Secondary && self.nodes[r.node as usize].up());
        let writes = part.writes;
        if let Some(c) = candidate {
            let part = &mut self.parts[p as usize];
            if let Some(d) = dead_primary {
                part.replicas[d].role = Rep::Inactive;
                part.replicas[d].applied = writes;
            }
            part.replicas[c].role = Rep::Primary;
            self.changed();
        }
    }

    /// The meta adds a secondary where one is missing, within flow control.
    fn cure(&mut self, p: u32) {
        if !self.readable(p) {
            return;
        }
        let flow = self.knob("meta.lb.add_secondary_enable_flow_control") == "true";
        let max: usize = self
            .knob("meta.lb.add_secondary_max_count_for_one_node")
            .parse()
            .unwrap_or(10);
        let assign_delay: Us = self
            .knob("meta.lb.assign_delay_ms")
            .parse::<u64>()
            .unwrap_or(600_000)
            .saturating_mul(1000);
        let wanted = usize::from(self.parts[p as usize].wanted);
        let active = self.parts[p as usize]
            .replicas
            .iter()
            .filter(|r| r.role != Rep::Inactive)
            .count();
        if active >= wanted {
            return;
        }
        let learners_on = |w: &World, n: u32| {
            w.nodes[n as usize]
                .parts
                .iter()
                .filter(|&&q| {
                    w.parts[q as usize]
                        .replicas
                        .iter()
                        .any(|r| r.node == n && r.role == Rep::Learner)
                })
                .count()
        };
        // The last dropped node, if it is alive, gets the replica back.
        let dropped = self.parts[p as usize]
            .replicas
            .iter()
            .position(|r| r.role == Rep::Inactive && self.nodes[r.node as usize].attached);
        if let Some(i) = dropped {
            let n = self.parts[p as usize].replicas[i].node;
            if flow && learners_on(self, n) >= max {
                return;
            }
            let missed = self.parts[p as usize].writes - self.parts[p as usize].replicas[i].applied;
            let cost = us(self.t.catch_up)
                .saturating_add(missed.saturating_mul(us(self.t.catch_up_per_write)));
            self.parts[p as usize].replicas[i].role = Rep::Learner;
            let boot = self.nodes[n as usize].boot;
            self.after(
                cost,
                Ev::LearnDone {
                    part: p,
                    node: n,
                    boot,
                },
            );
            self.changed();
            return;
        }
        // A dropped node that stayed away longer than the assign delay: copy elsewhere.
        let gone = self.parts[p as usize].replicas.iter().position(|r| {
            r.role == Rep::Inactive
                && self.nodes[r.node as usize].offline
                && !self.nodes[r.node as usize].up()
        });
        let Some(g) = gone else { return };
        let gone_node = self.parts[p as usize].replicas[g].node;
        if self
            .now
            .saturating_sub(self.nodes[gone_node as usize].down_since)
            < assign_delay
        {
            return;
        }
        let holders: Vec<u32> = self.parts[p as usize]
            .replicas
            .iter()
            .map(|r| r.node)
            .collect();
        let target = (0..self.nodes.len() as u32).find(|&n| {
            let node = &self.nodes[n as usize];
            node.kind == RoleKind::Data && node.attached && !holders.contains(&n)
        });
        if let Some(t) = target {
            if flow && learners_on(self, t) >= max {
                return;
            }
            let writes = self.parts[p as usize].writes;
            self.parts[p as usize].replicas.remove(g);
            self.nodes[gone_node as usize].parts.retain(|&q| q != p);
            self.parts[p as usize].replicas.push(Replica {
                node: t,
                role: Rep::Learner,
                loaded: false,
                applied: writes,
            });
            self.nodes[t as usize].parts.push(p);
            let cost = us(self.t.copy);
            let boot = self.nodes[t as usize].boot;
            self.after(
                cost,
                Ev::LearnDone {
                    part: p,
                    node: t,
                    boot,
                },
            );
            self.changed();
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

    /// Queues an OpenMLDB op on its queue (partition id mod 2).
    pub(crate) fn enqueue(&mut self, op: Op) {
        let q = (op.part() % 2) as usize;
        self.ops[q].push_back(op);
        self.start_op(q);
    }

    fn start_op(&mut self, q: usize) {
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
        match &op {
            Op::ChangeLeader { part, fenced, .. } => {
                if *fenced {
                    self.parts[*part as usize].handover = true;
                    self.touch(*part);
                }
            }
            Op::RecoverTable { part, node } => {
                let r = self.parts[*part as usize]
                    .replicas
                    .iter()
                    .find(|r| r.node == *node);
                let missed = r.map_or(0, |r| {
                    self.parts[*part as usize].writes
                        - r.applied.min(self.parts[*part as usize].writes)
                });
                let since_snapshot = self.nodes[*node as usize].unflushed
                    / self.nodes[*node as usize].parts.len().max(1) as u64;
                cost = cost
                    .saturating_add(us(self.t.catch_up))
                    .saturating_add(missed.saturating_mul(us(self.t.catch_up_per_write)))
                    .saturating_add(since_snapshot.saturating_mul(us(self.t.replay_per_write)));
            }
        }
        self.running_op[q] = Some(op);
        self.after(cost, Ev::OpDone { queue: q });
    }

    fn op_done(&mut self, q: usize) {
        let Some(op) = self.running_op[q].take() else {
            return;
        };
        match op {
            Op::ChangeLeader {
                part,
                from,
                to,
                fenced,
            } => {
                let writes = self.parts[part as usize].writes;
                let candidates: Vec<usize> = self.parts[part as usize]
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
                let pick = to
                    .and_then(|t| {
                        candidates
                            .iter()
                            .copied()
                            .find(|&i| self.parts[part as usize].replicas[i].node == t)
                    })
                    .or_else(|| to.is_none().then(|| candidates.first().copied()).flatten());
                if let Some(c) = pick {
                    // The old leader keeps taking writes only if it still has the data.
                    let from_up = self.nodes[from as usize].up()
                        && self.parts[part as usize]
                            .replicas
                            .iter()
                            .any(|r| r.node == from && r.loaded);
                    let part_s = &mut self.parts[part as usize];
                    for r in part_s.replicas.iter_mut() {
                        if r.node == from && r.role == Rep::Primary {
                            r.role = if fenced && from_up {
                                Rep::Secondary
                            } else {
                                Rep::Inactive
                            };
                            r.applied = writes;
                        }
                    }
                    part_s.replicas[c].role = Rep::Primary;
                    part_s.recent_acks.clear();
                    if !fenced && from_up {
                        // The old leader is not told: clients keep writing to it until they
                        // re-route.
                        let until = self.now + us(self.t.route_refresh);
                        part_s.stale_leader = Some((from, until));
                        let d = us(self.t.route_refresh);
                        self.after(d, Ev::RouteRefresh { part });
                    }
                }
                self.parts[part as usize].handover = false;
                self.touch(part);
            }
            Op::RecoverTable { part, node } => {
                if self.nodes[node as usize].up() {
                    let writes = self.parts[part as usize].writes;
                    let has_primary = self.primary(part).is_some_and(|r| r.node != node);
                    if let Some(r) = self.parts[part as usize]
                        .replicas
                        .iter_mut()
                        .find(|r| r.node == node)
                    {
                        r.loaded = true;
                        r.applied = writes;
                        if r.role != Rep::Primary || has_primary {
                            r.role = Rep::Secondary;
                        }
                    }
                }
                self.touch(part);
            }
        }
        self.changed();
        self.start_op(q);
    }

    /// The first op queued or running that concerns `node` (or any op), described.
    pub(crate) fn pending_op(&self, node: Option<u32>) -> Option<String> {
        let mentions = |op: &&Op| match (node, op) {
            (None, _) => true,
            (Some(n), Op::ChangeLeader { from, to, .. }) => *from == n || *to == Some(n),
            (Some(n), Op::RecoverTable { node, .. }) => *node == n,
        };
        let name = |n: u32| self.nodes[n as usize].id.to_string();
        let op = self
            .running_op
            .iter()
            .flatten()
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
            (Op::ChangeLeader { part, from, to, .. }, state) => format!(
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
        for q in &mut self.ops {
            q.retain(|op| !matches!(op, Op::ChangeLeader { from, .. } if *from == node));
        }
        for q in 0..2 {
            self.start_op(q);
        }
    }

    /// Draws a transient control-plane failure.
    pub(crate) fn transient(&mut self) -> bool {
        self.transient_p > 0.0 && self.rng.random_bool(self.transient_p)
    }
}
