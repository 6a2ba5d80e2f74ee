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
    /// The most replicas of any one partition down at the same instant.
    pub max_replicas_down: usize,
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
