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
    /// Acknowledged writes the cluster no longer has.
    pub writes_lost: u64,
    /// Partition-microseconds during which a partition could not take writes.
    pub unavailable_us: u64,
    /// The most replicas of any one partition down at the same instant.
    pub max_replicas_down: usize,
    /// Microseconds between a probed condition first holding and the waiter seeing it,
    /// summed over every simulator probe.
    pub slack_us: u64,
}
