//! What a simulated cluster looks like: flavor, shape, placement, timings, client load.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which server the simulated cluster behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// Apache Pegasus: metas, replica servers (PacificA), a collector.
    Pegasus,
    /// OpenMLDB: nameservers, tablets (asynchronous leader/follower), an apiserver and a
    /// taskmanager.
    OpenMldb,
}

impl Flavor {
    /// `pegasus` or `openmldb`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pegasus => "pegasus",
            Self::OpenMldb => "openmldb",
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Flavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pegasus" => Ok(Self::Pegasus),
            "openmldb" => Ok(Self::OpenMldb),
            other => Err(format!(
                "unknown flavor {other:?}: expected pegasus or openmldb"
            )),
        }
    }
}

/// How replicas are spread over data nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Each partition's replicas on distinct nodes drawn at random.
    Random,
    /// Each partition's replicas in distinct racks (needs at least as many racks as replicas).
    RackAware,
}

impl FromStr for Placement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Self::Random),
            "rack-aware" => Ok(Self::RackAware),
            other => Err(format!(
                "unknown placement {other:?}: expected random or rack-aware"
            )),
        }
    }
}

/// Virtual-time constants of a flavor. Defaults come from the servers' own defaults
/// (docs/pegasus-wire.md, docs/openmldb-interfaces.md): see [`Timings::pegasus`] and
/// [`Timings::openmldb`]. Deserialized, every field is required: a timing file written
/// before a field existed is refused, naming the field, rather than read with a value no
/// flavor has (an `election_grace` of zero for Pegasus would be kinder than its meta).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Timings {
    /// Pegasus `fd_grace_seconds` (22 s): the meta marks a silent replica server dead.
    /// OpenMLDB: the ZooKeeper session timeout (10 s) after which a tablet shows offline.
    pub detect: Duration,
    /// Pegasus `fd_lease_seconds` (20 s): a replica server without any meta drops its replicas.
    pub lease: Duration,
    /// Pegasus `lb_interval_ms` (10 s): proposals and cures run at this tick.
    /// OpenMLDB: the op loop's idle wait (1 s).
    pub tick: Duration,
    /// How long one OpenMLDB op takes to run (ChangeLeader, the RecoverTable bookkeeping).
    /// OpenMLDB: 100 ms. The nameserver's op loop (`NameServerImpl::ProcessTask` in
    /// `src/nameserver/name_server_impl.cc`) runs the head op of every queue without pausing
    /// while any op is queued, and ChangeLeader's three tasks (SelectLeader, ChangeLeader,
    /// UpdateLeaderInfo) run in the nameserver itself: a few tablet RPCs and ZooKeeper writes.
    /// Pegasus: 1 s, its meta's proposal round.
    pub op: Duration,
    /// OpenMLDB `tablet_heartbeat_timeout` (60 s): auto failover offlines a tablet after it.
    pub heartbeat_timeout: Duration,
    /// Coordinator election after the leader goes (ZooKeeper session timeout, 10 s).
    pub election: Duration,
    /// Beacon delay: a started node is attached to the coordinator this long after it serves.
    pub beacon: Duration,
    /// A Pegasus reconfiguration (a proposal, a promotion, or a secondary kicked out after a
    /// failed prepare) blocks the partition's writes this long; a primary change blocks reads
    /// too. The upstream rolling-update doc: "can usually be completed within 1 second".
    pub reconfigure: Duration,
    /// A graceful stop.
    pub stop: Duration,
    /// Process start before log replay or load.
    pub start: Duration,
    /// Replay (or reload) cost per write not covered by a flush or snapshot.
    pub replay_per_write: Duration,
    /// Catch-up cost per write missed while down.
    pub catch_up_per_write: Duration,
    /// Fixed part of a catch-up (Pegasus learning: 2 s; OpenMLDB RecoverTable and AddReplica:
    /// 8 s). OpenMLDB learns that a task on a tablet finished only at its next
    /// `get_task_status_interval` poll (2 s, `src/flags.cc`; `NameServerImpl::UpdateTaskStatus`),
    /// and RecoverTable's child op (`CreateReAddReplicaNoSendTask`) runs four such tasks one
    /// after another: PauseSnapshot, LoadTable, AddReplica, RecoverSnapshot.
    pub catch_up: Duration,
    /// A flush (Pegasus kill_partition) or a forced snapshot (OpenMLDB MakeSnapshot).
    pub flush: Duration,
    /// Full copy of one replica to a new node (re-replication after the assign delay).
    pub copy: Duration,
    /// OpenMLDB asynchronous replication lag: a write acked by the leader reaches followers
    /// this much later.
    pub replication_lag: Duration,
    /// OpenMLDB: clients keep writing to a deposed leader this long before they re-route,
    /// plus `route_refresh_per_table` for each table. The SDK has no routing timer in cluster
    /// mode: the nameserver bumps `<root>/table/notify` once UpdateLeaderInfo has written the
    /// table's znode (`UpdateZkTableNode` in `src/nameserver/name_server_impl.cc`), the SDK's
    /// ZooKeeper watch on it fires (`ClusterSDK::WatchNotify` in `src/sdk/db_sdk.cc`), and it
    /// rebuilds its catalog from ZooKeeper: the tablet list, then one read per table
    /// (`ClusterSDK::BuildCatalog`). The fixed part (200 ms) is the watch and the tablet list
    /// with room for a loaded ZooKeeper; zero for Pegasus, whose clients re-route on the
    /// replica's own error.
    pub route_refresh: Duration,
    /// OpenMLDB: the part of the re-route that grows with the tables, one ZooKeeper read per
    /// table in the catalog rebuild (2 ms each).
    pub route_refresh_per_table: Duration,
    /// Pegasus `min_live_node_count_for_unfreeze` (3): fewer alive replica servers freeze
    /// the meta.
    pub min_live: usize,
    /// How long a supervisor waits before starting a crashed process again.
    pub crash_restart: Duration,
    /// Pegasus `node_live_percentage_threshold_for_update` (65): with a smaller share of
    /// replica servers alive the meta freezes too.
    pub live_percentage: u32,
    /// OpenMLDB `name_server_task_concurrency` (2): op queues, each running one op at a time.
    pub op_queues: usize,
    /// What the procedure waits after a coordinator is ready, for what the control plane
    /// cannot show: Pegasus's rolling-update doc waits "more than 30 seconds" after each meta
    /// server so that beacons continue (30 s); OpenMLDB has no such wait (zero). The sim's
    /// [`Cluster::settle`](rollout_core::Cluster::settle) answers it.
    pub coordinator_settle: Duration,
    /// OpenMLDB `name_server_task_max_concurrency` (8): the most queues RecoverEndpoint's
    /// `concurrency` may spread its RecoverTable ops over (queue `pid % concurrency`);
    /// ChangeLeader and RecoverTable issued one by one use `op_queues`. Zero means
    /// `op_queues`.
    pub op_queues_max: usize,
    /// How long after its election a coordinator leader's view of the data nodes proves
    /// nothing: a Pegasus meta registers every replica server of its partition configurations
    /// as just heard from (`meta_service::start_service`, `failure_detector::register_worker`
    /// @v2.4.0, @v2.5.0, master) and declares a silent one dead at the first check after
    /// `fd_grace_seconds` (`failure_detector::check_all_records`): 22 s plus the 2 s check
    /// interval. Until then a node that went down stays ALIVE to it, so its primaries are not
    /// moved, and a backend cannot trust the node list (the backend's
    /// `Timing::election_grace`). OpenMLDB's nameserver reads the tablets' ZooKeeper sessions,
    /// which need no such window (zero).
    pub election_grace: Duration,
}

impl Timings {
    /// Pegasus defaults (`src/server/config.ini` and the code defaults).
    pub fn pegasus() -> Self {
        Self {
            detect: Duration::from_secs(22),
            lease: Duration::from_secs(20),
            tick: Duration::from_secs(10),
            op: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(60),
            election: Duration::from_secs(10),
            beacon: Duration::from_secs(3),
            reconfigure: Duration::from_secs(1),
            stop: Duration::from_secs(2),
            start: Duration::from_secs(8),
            replay_per_write: Duration::from_micros(400),
            catch_up_per_write: Duration::from_micros(50),
            catch_up: Duration::from_secs(2),
            flush: Duration::from_secs(3),
            copy: Duration::from_secs(120),
            replication_lag: Duration::ZERO,
            route_refresh: Duration::ZERO,
            route_refresh_per_table: Duration::ZERO,
            min_live: 3,
            crash_restart: Duration::from_secs(30),
            live_percentage: 65,
            op_queues: 2,
            coordinator_settle: Duration::from_secs(30),
            op_queues_max: 0,
            election_grace: Duration::from_secs(24),
        }
    }

    /// OpenMLDB defaults (`src/flags.cc` and the deploy templates).
    pub fn openmldb() -> Self {
        Self {
            detect: Duration::from_secs(10),
            lease: Duration::from_secs(3600),
            tick: Duration::from_secs(1),
            op: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(60),
            election: Duration::from_secs(10),
            beacon: Duration::from_secs(1),
            reconfigure: Duration::ZERO,
            stop: Duration::from_secs(1),
            start: Duration::from_secs(5),
            replay_per_write: Duration::from_micros(400),
            catch_up_per_write: Duration::from_micros(100),
            catch_up: Duration::from_secs(8),
            flush: Duration::from_secs(2),
            copy: Duration::from_secs(120),
            replication_lag: Duration::from_millis(50),
            route_refresh: Duration::from_millis(200),
            route_refresh_per_table: Duration::from_millis(2),
            min_live: 1,
            crash_restart: Duration::from_secs(30),
            live_percentage: 0,
            op_queues: 2,
            coordinator_settle: Duration::ZERO,
            op_queues_max: 8,
            election_grace: Duration::ZERO,
        }
    }

    /// Checks every timing is at most a day (so that virtual-time arithmetic cannot
    /// overflow), and the beacon and tick are not zero.
    ///
    /// # Errors
    /// The first timing out of range, by name.
    pub fn check(&self) -> Result<(), String> {
        let day = Duration::from_secs(24 * 3600);
        for (name, d) in [
            ("detect", self.detect),
            ("lease", self.lease),
            ("tick", self.tick),
            ("op", self.op),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("election", self.election),
            ("beacon", self.beacon),
            ("reconfigure", self.reconfigure),
            ("stop", self.stop),
            ("start", self.start),
            ("replay_per_write", self.replay_per_write),
            ("catch_up_per_write", self.catch_up_per_write),
            ("catch_up", self.catch_up),
            ("flush", self.flush),
            ("copy", self.copy),
            ("replication_lag", self.replication_lag),
            ("route_refresh", self.route_refresh),
            ("route_refresh_per_table", self.route_refresh_per_table),
            ("crash_restart", self.crash_restart),
            ("coordinator_settle", self.coordinator_settle),
            ("election_grace", self.election_grace),
        ] {
            if d > day {
                return Err(format!("timing {name} is {d:?}, more than a day"));
            }
        }
        if self.live_percentage > 100 {
            return Err(format!(
                "live_percentage is {}, more than 100",
                self.live_percentage
            ));
        }
        if self.op_queues == 0 || self.op_queues > 64 {
            return Err(format!("op_queues is {}, expected 1 to 64", self.op_queues));
        }
        if self.op_queues_max > 64 {
            return Err(format!(
                "op_queues_max is {}, expected 0 to 64",
                self.op_queues_max
            ));
        }
        if self.tick.is_zero() || self.election.is_zero() {
            return Err("timings tick and election must be longer than zero".into());
        }
        Ok(())
    }

    /// The defaults of `flavor`.
    pub fn of(flavor: Flavor) -> Self {
        match flavor {
            Flavor::Pegasus => Self::pegasus(),
            Flavor::OpenMldb => Self::openmldb(),
        }
    }
}

/// The simulated clients.
///
/// Defaults: 100 requests per virtual second, half of them writes, a 3 s timeout with a retry
/// every 250 ms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientLoad {
    /// Requests per virtual second, over all partitions.
    pub rate: u32,
    /// Writes per thousand requests.
    pub writes_per_mille: u32,
    /// A request fails when it is not served within this.
    pub timeout: Duration,
    /// Pause between two attempts of one request.
    pub retry: Duration,
}

impl Default for ClientLoad {
    fn default() -> Self {
        Self {
            rate: 100,
            writes_per_mille: 500,
            timeout: Duration::from_secs(3),
            retry: Duration::from_millis(250),
        }
    }
}

impl ClientLoad {
    /// The default load at `rate` requests per virtual second (0 turns clients off).
    pub fn at_rate(rate: u32) -> Self {
        Self {
            rate,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Timings;

    #[test]
    fn a_timing_file_missing_a_field_is_refused_naming_it() {
        let mut v = serde_json::to_value(Timings::pegasus()).unwrap();
        let back: Timings = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, Timings::pegasus());
        v.as_object_mut().unwrap().remove("election_grace");
        let err = serde_json::from_value::<Timings>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("election_grace"), "{err}");
    }
}
