//! The OpenMLDB nameserver's ops, and the record `ShowOPStatus` keeps of each
//! (`src/nameserver/name_server_impl.cc` @v0.9.2; docs/upstream/openmldb.md §2).

/// How a RecoverTable's child op brings a replica back (`NameServerImpl::RecoverEndpointTable`
/// @v0.9.2 picks it from what the replica's tablet holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReAdd {
    /// `kReAddReplicaSimplifyOP`: the tablet still has the partition loaded at a term the
    /// leader's history has (a fenced ex-leader): AddReplica on the leader, the binlog check,
    /// and the replica marked alive.
    Simplify,
    /// `kReAddReplicaNoSendOP` (or `kReAddReplicaOP` when the leader's snapshot is newer):
    /// the tablet reloads its snapshot and binlog, then the leader ships the rest.
    Reload,
    /// `kReLoadTableOP`: a single replica loads its own snapshot and binlog as leader.
    Single,
}

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
    /// `kRecoverTableOP` of the replica of `part` on `node`: a follower is first dropped
    /// from the leader's replicator (a `kDelReplica` tablet task), then the nameserver's
    /// RecoverTable task creates the child op that does the work ([`Op::ReAddReplica`]),
    /// or finishes at once when the replica is alive again by then.
    RecoverTable { part: u32, node: u32 },
    /// A RecoverTable's child op, run right behind it on its queue.
    ReAddReplica { part: u32, node: u32, how: ReAdd },
    /// AddReplicaNS: copy a snapshot of `part` to `node`, load it, stream the binlog.
    AddReplica { part: u32, node: u32 },
    /// DelReplicaNS: drop the follower of `part` on `node` (never the leader).
    DelReplica { part: u32, node: u32 },
    /// The rollout's zero-loss leader move (not an upstream op; the backend's sequence around
    /// ChangeLeader): once a follower (`to`, or any) has caught up, `ChangeRole(follower)`
    /// on the leader's tablet fences it; once a follower's offset equals the fenced leader's,
    /// ChangeLeader with that follower as the explicit candidate. Runs in the partition's
    /// queue like the ChangeLeader it issues.
    FencedMove {
        part: u32,
        from: u32,
        to: Option<u32>,
    },
}

impl Op {
    pub(crate) fn part(&self) -> u32 {
        match self {
            Op::ChangeLeader { part, .. }
            | Op::RecoverTable { part, .. }
            | Op::ReAddReplica { part, .. }
            | Op::AddReplica { part, .. }
            | Op::DelReplica { part, .. }
            | Op::FencedMove { part, .. } => *part,
        }
    }

    pub(super) fn nodes(&self) -> [Option<u32>; 2] {
        match self {
            Op::ChangeLeader { from, to, .. } | Op::FencedMove { from, to, .. } => {
                [Some(*from), *to]
            }
            Op::RecoverTable { node, .. }
            | Op::ReAddReplica { node, .. }
            | Op::AddReplica { node, .. }
            | Op::DelReplica { node, .. } => [Some(*node), None],
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Op::ChangeLeader { .. } => "ChangeLeader",
            Op::RecoverTable { .. } => "RecoverTable",
            Op::ReAddReplica { .. } => "ReAddReplica",
            Op::AddReplica { .. } => "AddReplica",
            Op::DelReplica { .. } => "DelReplica",
            Op::FencedMove { .. } => "fenced ChangeLeader",
        }
    }

    /// The `OPType` name `ShowOPStatus` gives it (`src/proto/name_server.proto`).
    pub(crate) fn op_type(&self) -> &'static str {
        match self {
            Op::ChangeLeader { .. } | Op::FencedMove { .. } => "kChangeLeaderOP",
            Op::RecoverTable { .. } => "kRecoverTableOP",
            Op::ReAddReplica {
                how: ReAdd::Simplify,
                ..
            } => "kReAddReplicaSimplifyOP",
            Op::ReAddReplica {
                how: ReAdd::Reload, ..
            } => "kReAddReplicaNoSendOP",
            Op::ReAddReplica {
                how: ReAdd::Single, ..
            } => "kReLoadTableOP",
            Op::AddReplica { .. } => "kAddReplicaOP",
            Op::DelReplica { .. } => "kDelReplicaOP",
        }
    }
}

/// An op as `ShowOPStatus` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpRecord {
    /// Its id, increasing.
    pub(crate) id: u64,
    /// The op.
    pub(crate) op: Op,
    /// `kInited`, `kDoing`, `kDone`, `kFailed` or `kCanceled`.
    pub(crate) status: &'static str,
}
