//! The simulator's probes: each answers from the world's one definition of its condition
//! ([`crate::world::conditions`]) and registers the wait for the lower-bound measurement.

use rollout_core::{Health, HealthProbe};

use crate::cluster::{SimCluster, SimError};
use crate::world::conditions::{Kind, eval};

/// A probe over the simulated world. With wake hints on (the default), its `wake` completes
/// at the next scheduled cluster event, so waits end at the instant their condition first
/// holds; with them off, waits end only when the engine polls.
pub(crate) struct SimProbe<'a> {
    sim: &'a SimCluster,
    node: Option<u32>,
    kind: Kind,
    wait: Option<u64>,
}

impl<'a> SimProbe<'a> {
    pub(crate) fn new(
        sim: &'a SimCluster,
        node: Option<u32>,
        kind: Kind,
        wait: Option<u64>,
    ) -> Self {
        Self {
            sim,
            node,
            kind,
            wait,
        }
    }
}

impl Drop for SimProbe<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.wait {
            let mut w = self.sim.lock();
            let now = w.now;
            w.waits.finish(id, now);
        }
    }
}

impl HealthProbe for SimProbe<'_> {
    type Error = SimError;

    async fn check(&self) -> Result<Health, SimError> {
        let w = self.sim.lock();
        if self.node.is_none() && self.kind != Kind::FullyHealthy {
            return Ok(Health::failed("the node is not in this cluster"));
        }
        Ok(eval(&w, self.kind, self.node, true))
    }

    async fn wake(&self) {
        let next = {
            let w = self.sim.lock();
            if w.wake_hints { w.next_event() } else { None }
        };
        match next {
            Some(t) => {
                tokio::time::sleep_until(self.sim.started() + std::time::Duration::from_micros(t))
                    .await;
            }
            None => std::future::pending().await,
        }
    }
}
