//! The OpenMLDB nameserver's ops, and the record `ShowOPStatus` keeps of each.

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
            | Op::AddReplica { node, .. }
            | Op::DelReplica { node, .. } => [Some(*node), None],
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Op::ChangeLeader { .. } => "ChangeLeader",
            Op::RecoverTable { .. } => "RecoverTable",
            Op::AddReplica { .. } => "AddReplica",
            Op::DelReplica { .. } => "DelReplica",
            Op::FencedMove { .. } => "fenced ChangeLeader",
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
