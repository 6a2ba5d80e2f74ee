//! The nameserver's and tablets' RPCs over brpc's HTTP/JSON mapping: `POST
//! http://<endpoint>/NameServer/<Method>` and `/TabletServer/<Method>`, the protos' field names
//! as JSON keys, enums by name, and `Authorization: sdefault` on every request (0.9 rejects
//! requests without one). Application errors come back as HTTP 200 with a non-zero `code`;
//! framework errors as 4xx/5xx with a plain-text body. Shapes from `src/proto/name_server.proto`
//! and `src/proto/tablet.proto` (shared/reference/openmldb.md §2 and §3).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::OpenMldbError;

/// Return codes the backend acts on (`src/base/status.h`, `ReturnCode`).
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// The partition's replica is the leader (ChangeRole to leader on a leader, DelReplica of it).
    pub const TABLE_IS_LEADER: i32 = 102;
    /// The replica is a follower: Put refused; GetTableFollower asked of a follower.
    pub const TABLE_IS_FOLLOWER: i32 = 103;
    /// The partition has no follower.
    pub const NO_FOLLOWER: i32 = 134;
    /// A standby nameserver answered: rediscover the leader.
    pub const NAMESERVER_IS_NOT_LEADER: i32 = 300;
    /// The call needs `auto_failover` off.
    pub const AUTO_FAILOVER_IS_ENABLED: i32 = 301;
    /// RecoverTable on a replica still alive.
    pub const PARTITION_IS_ALIVE: i32 = 311;
    /// The tablet is a follower cluster's (SetMode follower): writes refused.
    pub const IS_FOLLOWER_CLUSTER: i32 = 453;
}

/// Every response's status: `code` 0 and `msg` `ok` on success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The return code.
    #[serde(default)]
    pub code: i32,
    /// Its message.
    #[serde(default)]
    pub msg: String,
}

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
    /// Queues to spread the ops over, at most `name_server_task_max_concurrency` (8).
    pub concurrency: u32,
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

/// A service on one server, reached over HTTP/JSON.
#[derive(Clone, Debug)]
pub struct Endpoint {
    http: reqwest::Client,
    /// `host:port`.
    pub addr: String,
}

impl Endpoint {
    /// `addr` (`host:port`) with each request's deadline `timeout`.
    pub fn new(addr: &str, timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            addr: addr.to_string(),
        }
    }

    /// Calls `service`/`method` with `request`.
    ///
    /// # Errors
    /// [`OpenMldbError::Transport`] when the server cannot be reached or does not answer in
    /// time, [`OpenMldbError::Http`] for a non-200 answer (brpc's framework errors),
    /// [`OpenMldbError::BadBody`] for a body that is not the method's JSON, and
    /// [`OpenMldbError::App`] for a non-zero `code`.
    pub async fn call<Q: Serialize + ?Sized, R: DeserializeOwned + HasStatus>(
        &self,
        service: &'static str,
        method: &'static str,
        request: &Q,
    ) -> Result<R, OpenMldbError> {
        let at = || (self.addr.clone(), method);
        let resp = self
            .http
            .post(format!("http://{}/{service}/{method}", self.addr))
            .header("Authorization", "sdefault")
            .json(request)
            .send()
            .await
            .map_err(|e| OpenMldbError::transport(at(), &e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| OpenMldbError::transport(at(), &e))?;
        if !status.is_success() {
            return Err(OpenMldbError::Http {
                server: self.addr.clone(),
                method,
                status: status.as_u16(),
                body: clip(&body),
            });
        }
        let r: R = serde_json::from_str(&body).map_err(|e| OpenMldbError::BadBody {
            server: self.addr.clone(),
            method,
            reason: e.to_string(),
            body: clip(&body),
        })?;
        let s = r.status();
        if s.code != code::OK {
            return Err(OpenMldbError::App {
                server: self.addr.clone(),
                method,
                code: s.code,
                msg: s.msg.clone(),
            });
        }
        Ok(r)
    }
}

/// A response's status, for [`Endpoint::call`].
pub trait HasStatus {
    /// The status.
    fn status(&self) -> &Status;
}

impl HasStatus for Status {
    fn status(&self) -> &Status {
        self
    }
}

macro_rules! has_status {
    ($($t:ty),*) => {$(
        impl HasStatus for $t {
            fn status(&self) -> &Status {
                &self.status
            }
        }
    )*};
}

has_status!(
    ShowTabletResponse,
    ShowTableResponse,
    ShowOpStatusResponse,
    ConfGetResponse,
    GetTableStatusResponse,
    GetTableFollowerResponse
);

/// The first 200 characters of a body, for messages.
fn clip(body: &str) -> String {
    body.chars().take(200).collect()
}
