//! The physical bound of a roll: what no procedure can avoid
//! ([`SimReport::physical_bound_secs`](crate::SimReport::physical_bound_secs)).

use std::time::Duration;

use rollout_core::{NodeId, RoleKind};

use crate::cluster::SimCluster;
use crate::config::Flavor;
use crate::world::{Us, us};

impl SimCluster {
    /// The least time any procedure needs to roll `waves` (the plan's waves, in order, each a
    /// list of node ids; nodes the cluster does not have count nothing) on this cluster, in
    /// the world's time.
    ///
    /// Waves run one after another and the nodes of one wave together, so the bound is the
    /// sum over the waves of the slowest node's floor. A node's floor is its graceful stop,
    /// its process start (with any injected slow start), and for a data node holding replicas
    /// the fixed part of one catch-up plus the writes one of its partitions takes while it is
    /// down (`Timings::catch_up`, `Timings::catch_up_per_write`, at the clients' write rate
    /// shared over the partitions), once for Pegasus (a replica server learns all its
    /// partitions at once) and once per round of the nameserver's op queues for OpenMLDB
    /// (its replicas over `Timings::op_queues_max` queues). Replay is left out (a flush or snapshot before the stop
    /// avoids it), and so are drains, elections and the coordinator's ticks. The seed's
    /// settle (`Timings::coordinator_settle`, 30 s for Pegasus) counts once when the plan
    /// holds the coordinator that led when the cluster was built: its restart is where the
    /// replica servers' beacons must move (a standby's restart moves none). It runs from
    /// that coordinator's restart (its stop done) and ends no sooner than its start; the
    /// stateless waves after it, if only such follow, roll within it.
    pub fn physical_bound(&self, waves: &[Vec<NodeId>]) -> Duration {
        let w = self.lock();
        let t = &w.t;
        let load = &w.clients.load;
        let writes_per_sec = f64::from(load.rate) * f64::from(load.writes_per_mille) / 1000.0;
        let per_part = writes_per_sec / w.parts.len().max(1) as f64;
        // OpenMLDB reloads a tablet's replicas through RecoverTable ops on at most
        // `name_server_task_max_concurrency` queues (`Timings::op_queues_max`), each op taking
        // at least the fixed catch-up; Pegasus learns every partition of a node at once.
        let lanes = match (w.flavor, t.op_queues_max) {
            (Flavor::Pegasus, _) => usize::MAX,
            (Flavor::OpenMldb, 0) => t.op_queues,
            (Flavor::OpenMldb, m) => m,
        };
        let rounds = |replicas: usize| replicas.div_ceil(lanes.max(1)) as u64;
        let floor = |i: usize| -> Us {
            let n = &w.nodes[i];
            let down = us(t.stop)
                .saturating_add(us(t.start))
                .saturating_add(n.slow_start);
            let catch_up = if n.kind == RoleKind::Data && !n.parts.is_empty() {
                let missed = (per_part * down as f64 / 1e6).floor() as u64;
                let one =
                    us(t.catch_up).saturating_add(missed.saturating_mul(us(t.catch_up_per_write)));
                one.saturating_mul(rounds(n.parts.len()))
            } else {
                0
            };
            down.saturating_add(catch_up)
        };
        let floors: Vec<Us> = waves
            .iter()
            .map(|wave| {
                wave.iter()
                    .filter_map(|id| w.index(id).map(|i| i as usize))
                    .map(floor)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let sum = |f: &[Us]| f.iter().copied().fold(0, Us::saturating_add);
        // The settle runs from the leader's restart (once its stop is done) and ends no
        // sooner than it is ready; stateless waves left after it roll during it.
        let leader = w.first_leader.and_then(|l| {
            let id = &w.nodes.get(l as usize)?.id;
            waves.iter().position(|wave| wave.contains(id))
        });
        let total = match leader {
            None => sum(&floors),
            Some(l) => {
                let (before, after) = (sum(&floors[..l]), sum(&floors[l + 1..]));
                let settled = us(t.stop).saturating_add(us(t.coordinator_settle));
                let stateless_after = waves[l + 1..].iter().flatten().all(|id| {
                    w.index(id)
                        .is_none_or(|i| w.nodes[i as usize].kind == RoleKind::Stateless)
                });
                let from_leader = if stateless_after {
                    floors[l].saturating_add(after).max(settled)
                } else {
                    floors[l].max(settled).saturating_add(after)
                };
                before.saturating_add(from_leader)
            }
        };
        Duration::from_micros(total)
    }
}
