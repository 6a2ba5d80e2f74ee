//! The invariant monitor: what the clients saw and what the cluster went through.

use serde::{Deserialize, Serialize};

/// Counters the simulator keeps while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitor {
    /// Client requests served within their timeout.
    pub requests_ok: u64,
    /// Client requests that timed out.
    pub requests_failed: u64,
    /// Writes acknowledged to clients.
    pub writes_acked: u64,
    /// Acknowledged writes absent from the replica that serves their partition, from the
    /// write ledger (filled in by `SimCluster::truth`).
    pub writes_lost: u64,
    /// Partition-microseconds during which a partition could not take writes.
    pub unavailable_us: u64,
    /// The same per table: index `k` is table `t<k + 1>` (shorter when the last tables were
    /// never unavailable).
    #[serde(default)]
    pub unavailable_table_us: Vec<u64>,
    /// Replicas the rollout added (OpenMLDB AddReplica ops that completed).
    #[serde(default)]
    pub replicas_added: u64,
    /// Replicas beyond what their partition wants, now (filled in by `SimCluster::truth`):
    /// temporary replicas left behind.
    #[serde(default)]
    pub extra_replicas: u64,
    /// The most replicas of any one partition down at the same instant.
    pub max_replicas_down: usize,
    /// The same, counting only replicas on nodes the rollout holds (drained or stopped by
    /// it, until all their replicas serve again; a node that crashes is handed back): what
    /// the rollout itself took down, whatever failed around it.
    #[serde(default)]
    pub max_replicas_down_by_rollout: usize,
    /// Served requests' virtual latency (issue to the attempt that was served, retries
    /// included), microseconds: median.
    pub latency_p50_us: u64,
    /// 99th percentile, microseconds.
    pub latency_p99_us: u64,
    /// 99.9th percentile, microseconds.
    pub latency_p999_us: u64,
    /// The slowest served request, microseconds.
    pub latency_max_us: u64,
}
