//! The simulator's probes: each answers from the world's one definition of its condition
//! ([`crate::world::conditions`]) and registers the wait for the lower-bound measurement.

use std::sync::atomic::{AtomicBool, Ordering};

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
    /// The engine has seen the condition hold (the idle interval is closed).
    seen: AtomicBool,
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
            seen: AtomicBool::new(false),
        }
    }
}

impl Drop for SimProbe<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.wait
            && !self.seen.load(Ordering::Relaxed)
        {
            self.sim.lock().waits.cancel(id);
        }
    }
}

impl HealthProbe for SimProbe<'_> {
    type Error = SimError;

    async fn check(&self) -> Result<Health, SimError> {
        let mut w = self.sim.lock();
        if self.node.is_none() && self.kind != Kind::FullyHealthy {
            return Ok(Health::failed("the node is not in this cluster"));
        }
        let health = eval(&w, self.kind, self.node, true);
        if health.is_healthy()
            && let Some(id) = self.wait
            && !self.seen.swap(true, Ordering::Relaxed)
        {
            // The engine sees it hold now: its idle time since it began to hold ends here.
            let now = w.now;
            w.waits.finish(id, now);
        }
        Ok(health)
    }

    async fn wake(&self) {
        let next = {
            let w = self.sim.lock();
            if w.wake_hints { w.next_event() } else { None }
        };
        match next {
            Some(t) => {
                tokio::time::sleep_until(self.sim.instant_at(t)).await;
            }
            None => std::future::pending().await,
        }
    }
}
