//! The NameServer's request and response shapes (`src/proto/name_server.proto` @v0.9.2, the
//! same at v0.8.5 for these), absent fields at their proto defaults.

use serde::{Deserialize, Serialize};

use super::Status;

/// `ShowTablet`: the tablets the nameserver knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ShowTabletResponse {
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// One per tablet, including offline ones (the nameserver never forgets a tablet).
    #[serde(default)]
    pub tablets: Vec<TabletStatus>,
}

/// A tablet as the nameserver sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TabletStatus {
    /// `host:port`.
    pub endpoint: String,
    /// `kHealthy` or `kOffline` (`type.EndpointState`).
    pub state: String,
    /// Milliseconds since its state last changed.
    #[serde(default)]
    pub age: u64,
    /// The real address under `--use_name`.
    #[serde(default)]
    pub real_endpoint: Option<String>,
}

/// `ShowTable` request: `show_all` for every database's tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShowTableRequest {
    /// Every table, all databases.
    pub show_all: bool,
}

/// `ShowTable` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ShowTableResponse {
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// The tables.
    #[serde(default)]
    pub table_info: Vec<TableInfo>,
}

/// A table's layout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TableInfo {
    /// Name.
    pub name: String,
    /// Database.
    #[serde(default)]
    pub db: String,
    /// Table id.
    #[serde(default)]
    pub tid: u32,
    /// Replicas per partition, leader included.
    #[serde(default)]
    pub replica_num: u32,
    /// Partitions.
    #[serde(default)]
    pub table_partition: Vec<TablePartition>,
}

/// One partition of a table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TablePartition {
    /// Partition id.
    pub pid: u32,
    /// Its replicas.
    #[serde(default)]
    pub partition_meta: Vec<PartitionMeta>,
    /// The term history.
    #[serde(default)]
    pub term_offset: Vec<TermPair>,
}

/// One replica, as the nameserver records it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PartitionMeta {
    /// The tablet.
    pub endpoint: String,
    /// Flagged leader (a deposed, unrecovered leader keeps it with `is_alive` false).
    pub is_leader: bool,
    /// Alive; absent means true (proto default).
    #[serde(default = "yes")]
    pub is_alive: bool,
    /// Its log offset, as the nameserver last polled it (every 2 s).
    #[serde(default)]
    pub offset: u64,
    /// Its rows, as the nameserver last polled them.
    #[serde(default)]
    pub record_cnt: u64,
}

fn yes() -> bool {
    true
}

/// A term and the first offset written in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TermPair {
    /// Term.
    pub term: u64,
    /// Offset.
    pub offset: u64,
}

/// `ShowOPStatus` request: every filter optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShowOpStatusRequest {
    /// Table name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Partition id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// One op by its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_id: Option<u64>,
}

/// `ShowOPStatus` response, sorted by op id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ShowOpStatusResponse {
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// The ops.
    #[serde(default)]
    pub op_status: Vec<OpStatus>,
}

/// One op.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct OpStatus {
    /// Its id.
    pub op_id: u64,
    /// `OPType` name, e.g. `kChangeLeaderOP`.
    #[serde(default)]
    pub op_type: String,
    /// `TaskStatus` name: `kInited`, `kDoing`, `kDone`, `kFailed`, `kCanceled`.
    #[serde(default)]
    pub status: String,
    /// Table.
    #[serde(default)]
    pub name: String,
    /// Partition (`u32::MAX` for a whole-table op).
    #[serde(default)]
    pub pid: u32,
    /// Database.
    #[serde(default)]
    pub db: String,
    /// Unix seconds.
    #[serde(default)]
    pub start_time: u64,
    /// Unix seconds; 0 until it ends.
    #[serde(default)]
    pub end_time: u64,
    /// The current task's `TaskType` name.
    #[serde(default)]
    pub task_type: String,
}

impl OpStatus {
    /// Done, failed or cancelled.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "kDone" | "kFailed" | "kCanceled")
    }
}

/// A key and value (`ConfSet`, `ConfGet`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Key (only `auto_failover` is accepted).
    pub key: String,
    /// Value.
    pub value: String,
}

/// `ConfSet` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfSetRequest {
    /// The setting.
    pub conf: Pair,
}

/// `ConfGet` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ConfGetResponse {
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// The settings.
    #[serde(default)]
    pub conf: Vec<Pair>,
}

/// `ChangeLeader` request: `candidate_leader` names the follower (`"auto"`: the nameserver's
/// pick among those with the highest offset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangeLeaderRequest {
    /// Table.
    pub name: String,
    /// Partition.
    pub pid: u32,
    /// The new leader's endpoint.
    pub candidate_leader: String,
    /// Database.
    pub db: String,
}

/// `RecoverTable` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecoverTableRequest {
    /// Table.
    pub name: String,
    /// Partition.
    pub pid: u32,
    /// The replica's tablet.
    pub endpoint: String,
    /// Database.
    pub db: String,
}

/// `RecoverEndpoint` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecoverEndpointRequest {
    /// The tablet.
    pub endpoint: String,
    /// Also move its former leaderships back (unfenced: the backend never sets it).
    pub need_restore: bool,
    /// Queues to spread the ops over, at most `name_server_task_max_concurrency` (8 by
    /// default; 307 above it). Absent: `name_server_task_concurrency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// `AddReplicaNS` / `DelReplicaNS` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicaNsRequest {
    /// Table.
    pub name: String,
    /// Partition.
    pub pid: u32,
    /// The tablet.
    pub endpoint: String,
    /// Database.
    pub db: String,
}

/// `UpdateTableAliveStatus` request: the alive flag of the replica on `endpoint`
/// (`NameServerImpl::UpdateTableAliveStatus`: no guard for the last alive replica; refused with
/// 301 while auto_failover is on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpdateTableAliveRequest {
    /// Table.
    pub name: String,
    /// The replica's tablet.
    pub endpoint: String,
    /// Partition.
    pub pid: u32,
    /// The flag.
    pub is_alive: bool,
    /// Database.
    pub db: String,
}
