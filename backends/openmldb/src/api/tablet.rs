//! The TabletServer's request and response shapes (`src/proto/tablet.proto` @v0.9.2, the same
//! at v0.8.5 for these), absent fields at their proto defaults.

use serde::{Deserialize, Serialize};

use super::Status;

/// A tablet's `tid` and `pid` (`GetTableStatus` filter, `GetTableFollower`, `MakeSnapshot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TidPid {
    /// Table id.
    pub tid: u32,
    /// Partition id.
    pub pid: u32,
}

/// `GetTableStatus` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GetTableStatusResponse {
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// One per loaded partition (empty on a tablet that has not loaded anything yet).
    #[serde(default)]
    pub all_table_status: Vec<TableStatus>,
}

/// A partition as its tablet holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TableStatus {
    /// Table id.
    pub tid: u32,
    /// Partition id.
    pub pid: u32,
    /// Its replicator's log offset.
    #[serde(default)]
    pub offset: u64,
    /// `kTableLeader` or `kTableFollower`.
    #[serde(default)]
    pub mode: String,
    /// `kTableNormal`, `kTableLoading`, ...
    #[serde(default)]
    pub state: String,
    /// `kMemory` (absent: the proto's default), `kSSD` or `kHDD`.
    #[serde(default)]
    pub storage_mode: Option<String>,
}

impl TableStatus {
    /// Whether the partition is loaded and serves: `kTableNormal`, or a snapshot being made
    /// or paused. A partition the tablet lists while it loads is `kTableUndefined`, then
    /// `kTableLoading` (`TabletImpl::LoadTableInternal` @v0.9.2).
    pub fn is_loaded(&self) -> bool {
        matches!(
            self.state.as_str(),
            "kTableNormal" | "kMakingSnapshot" | "kSnapshotPaused"
        )
    }

    /// Whether the partition is held in memory (its restart replays the binlog): disk
    /// tables take no snapshot up to an offset (`DiskTableSnapshot::MakeSnapshot` refuses
    /// one, @v0.9.2).
    pub fn in_memory(&self) -> bool {
        self.storage_mode.as_deref().is_none_or(|m| m == "kMemory")
    }
}

/// `GetTableFollower` response (asked of the leader).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GetTableFollowerResponse {
    /// Status (103 on a follower, 134 without followers).
    #[serde(flatten)]
    pub status: Status,
    /// The leader's offset.
    #[serde(default)]
    pub offset: u64,
    /// Each follower's replicated offset.
    #[serde(default)]
    pub follower_info: Vec<FollowerInfo>,
}

/// A follower's offset as its leader knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct FollowerInfo {
    /// The follower's tablet.
    pub endpoint: String,
    /// The last offset it acknowledged.
    #[serde(default)]
    pub offset: u64,
}

/// `ChangeRole` request: `kTableFollower` fences a leader (it refuses writes and stops
/// replicating); `kTableLeader` with its old `term` and `replicas` undoes that before any
/// SelectLeader ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeRoleRequest {
    /// Table id.
    pub tid: u32,
    /// Partition id.
    pub pid: u32,
    /// `kTableLeader` or `kTableFollower`.
    pub mode: &'static str,
    /// The term (leader only; ignored for a follower).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// The followers (leader only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

/// `MakeSnapshot` request (`GeneralRequest`): a forced snapshot up to `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MakeSnapshotRequest {
    /// Table id.
    pub tid: u32,
    /// Partition id.
    pub pid: u32,
    /// The offset the snapshot must reach.
    pub offset: u64,
}

/// `GetTermPair` response (`TabletImpl::GetTermPair`): a loaded partition's replicator term
/// and offset; for one not loaded (`has_table` false) its snapshot MANIFEST's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GetTermPairResponse {
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// The term.
    #[serde(default)]
    pub term: u64,
    /// The offset.
    #[serde(default)]
    pub offset: u64,
    /// Whether the tablet has it loaded.
    #[serde(default)]
    pub has_table: bool,
    /// Whether it leads on the tablet.
    #[serde(default)]
    pub is_leader: bool,
}

/// A snapshot's MANIFEST: the offset it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    /// The offset of its last entry; 0 without a snapshot.
    #[serde(default)]
    pub offset: u64,
    /// Its term.
    #[serde(default)]
    pub term: u64,
}

/// `GetManifest` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GetManifestResponse {
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// The MANIFEST.
    #[serde(default)]
    pub manifest: Manifest,
}
