//! What the kernel keeps per replica, partition and node.

use rollout_core::{NodeId, RoleKind};

use super::{Log, Us};

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
    /// OpenMLDB: the nameserver still flags it leader while it is not alive (`is_leader`
    /// with `is_alive` false): the leader a ChangeLeader moved away from keeps the flag
    /// (`NameServerImpl::UpdateLeaderInfo`), as does one the offline procedure marked dead,
    /// until a RecoverTable makes it a follower again.
    pub(crate) ex_leader: bool,
    /// OpenMLDB: its tablet was told it follows (TabletServer `ChangeRole` to follower: the
    /// rollout's fence, or the first step of a RecoverTable, `RecoverEndpointTable`
    /// @v0.9.2). A leader a ChangeLeader moved away from without one was never told and
    /// still leads on its tablet (`NameServerImpl::ChangeLeader` tells the new leader only).
    pub(crate) told_to_follow: bool,
}

impl Replica {
    pub(crate) fn new(node: u32, role: Rep) -> Self {
        Self {
            node,
            role,
            loaded: true,
            log: Log::default(),
            behind_until: 0,
            ex_leader: false,
            told_to_follow: false,
        }
    }
}

/// Per-node counters a partition contributes to (kept by [`World::touch`]).
pub(super) const F_PRIMARY: u8 = 1;
pub(super) const F_MEMBER: u8 = 2;
pub(super) const F_NOT_BACK: u8 = 4;
pub(super) const F_UNLOADED: u8 = 8;
pub(super) const F_LEARNER: u8 = 16;
/// A member of a partition with fewer than 3 replicas wanted that the Pegasus drain cannot
/// take it out of (not a primary with a live secondary to move to).
pub(super) const F_STUCK_MEMBER: u8 = 32;
/// The primary of a partition with no other replica (nothing to move it to).
pub(super) const F_SOLE_PRIMARY: u8 = 64;
/// A replica out of its partition's membership (`Rep::Inactive`).
pub(super) const F_DROPPED: u8 = 128;

#[derive(Clone, Debug, Default)]
pub(crate) struct Part {
    pub(crate) replicas: Vec<Replica>,
    /// Its table (0-based; named `t<table + 1>`) and its index in the table.
    pub(crate) table: u16,
    pub(crate) index: u32,
    pub(crate) wanted: u8,
    /// Bumped at every reconfiguration (Pegasus's ballot).
    pub(crate) ballot: u64,
    /// The next write's sequence number. Only an acknowledgement numbers a write
    /// (`World::ack`), so the writes acknowledged to clients are exactly `0..next_seq`.
    pub(crate) next_seq: u32,
    /// A reconfiguration is running: writes wait until then.
    pub(crate) write_block_until: Us,
    /// A primary change is running: reads wait too.
    pub(crate) read_block_until: Us,
    /// Pegasus: the meta runs at most one proposal per partition; the next waits for this.
    pub(crate) busy_until: Us,
    /// OpenMLDB: a deposed leader clients still write to, until the time given.
    pub(crate) stale_leader: Option<(u32, Us)>,
    /// OpenMLDB: the replica on this node was made a follower on its own tablet (the rollout's
    /// fence, TabletServer `ChangeRole`): it refuses writes (`kTableIsFollower`) while it
    /// still ships what it has to its followers.
    pub(crate) fenced: Option<u32>,
    /// OpenMLDB: the followers hold a higher term than the leader and refuse what it ships
    /// (`TabletImpl::AppendEntries` @v0.9.2): a SelectLeader bumped their term before its
    /// ChangeLeader failed, or the leader was re-led with a lower term than theirs. What it
    /// acknowledges from then on reaches no follower. A leader change ends it.
    pub(crate) orphaned: bool,
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
    /// Members the Pegasus drain cannot move (see `F_STUCK_MEMBER`).
    pub(crate) stuck_members: u32,
    /// Primaries of single-replica partitions.
    pub(crate) sole_primaries: u32,
    /// Replicas out of their partition's membership.
    pub(crate) dropped: u32,
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
    pub(crate) boot: u64,
    /// When the current process started.
    pub(crate) started_at: Us,
    pub(crate) version: String,
    pub(crate) digest: String,
    pub(crate) staged: Option<(String, String)>,
    pub(crate) parts: Vec<u32>,
    pub(crate) counts: Counts,
    /// Primaries and members per table (indexed by `Part::table`), kept beside `counts`:
    /// the Pegasus meta ranks a secondary to promote by its table's counts first
    /// (`newly_partitions::less_primaries`).
    pub(crate) table_counts: Vec<(u32, u32)>,
    /// Where in `parts` the last replica found not serving was: the next search for one
    /// starts there (replicas come back roughly in order), so describing a rejoin does not
    /// scan every partition at every check.
    pub(crate) not_back_hint: std::cell::Cell<usize>,
    /// Where in `parts` the meta's search for replicas to add back on this node resumes.
    pub(crate) cure_cursor: usize,
    /// A coordinator that was the elected leader when its process went away, at any exit
    /// so far (a crash after its restart does not clear it).
    pub(crate) led_at_stop: bool,
    pub(crate) unflushed: u64,
    pub(crate) flush_done: Option<Us>,
    pub(crate) draining: bool,
    /// The rollout holds the node: drained or stopped by it, until all its replicas serve
    /// again. A crash of the node hands it back: what it takes down then is not the
    /// rollout's doing.
    pub(crate) held: bool,
    /// The drain moves only its primaries (the upstream Pegasus script's migrate step).
    pub(crate) move_only: bool,
    /// OpenMLDB: fences holding the whole tablet in follower mode (TabletServer `SetMode`):
    /// it refuses every write while its replicate nodes keep shipping.
    pub(crate) write_hold: u32,
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
            boot: 1,
            started_at: 0,
            version: "1.0.0".into(),
            digest: "initial".into(),
            staged: None,
            parts: Vec::new(),
            counts: Counts::default(),
            table_counts: Vec::new(),
            not_back_hint: std::cell::Cell::new(0),
            cure_cursor: 0,
            led_at_stop: false,
            unflushed: 0,
            flush_done: None,
            draining: false,
            held: false,
            move_only: false,
            write_hold: 0,
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

/// Adds (or removes) one partition's contribution `f` to a node's counts of table `table`:
/// its primary, and its member or learner.
pub(super) fn add_table_counts(t: &mut Vec<(u32, u32)>, table: u16, f: u8, add: bool) {
    let i = usize::from(table);
    if t.len() <= i {
        t.resize(i + 1, (0, 0));
    }
    let (primaries, members) = &mut t[i];
    let assigned = f & (F_MEMBER | F_LEARNER) != 0;
    for (v, on) in [(primaries, f & F_PRIMARY != 0), (members, assigned)] {
        if on {
            *v = if add { *v + 1 } else { v.saturating_sub(1) };
        }
    }
}

pub(super) fn add_counts(c: &mut Counts, f: u8, add: bool) {
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
    step(&mut c.stuck_members, f & F_STUCK_MEMBER != 0);
    step(&mut c.sole_primaries, f & F_SOLE_PRIMARY != 0);
    step(&mut c.dropped, f & F_DROPPED != 0);
}
