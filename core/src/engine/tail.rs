//! The tail of a roll: a settle time left to run alongside the last stateless waves, and the
//! healthy wait a coordinator wave's end left to the roll's end.

use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::{Error, Phase};
use crate::probe::HealthProbe;

use super::ctx::{Ctx, Slot, WavesEnd};

impl<C: Cluster> Ctx<'_, C> {
    /// Waits out the cluster's settle time (the longest of the wave's nodes', see
    /// [`Cluster::settle`]), counted from `restarted_at` (when the wave's starts returned) or,
    /// when that is unknown, from now, once the wave's nodes are ready; `outside` is watched
    /// as in the wait before it. Its deadline is the settle time plus `slack`. When only
    /// stateless waves follow, the settle is left to run alongside them and
    /// [`Self::settle_rest`] waits what remains.
    pub(super) async fn settle_after<P: HealthProbe<Error = C::Error>>(
        &self,
        slots: &[Slot<C::Node>],
        restarted_at: Option<Instant>,
        outside: P,
        slack: std::time::Duration,
    ) -> Result<(), Error<C::Error>> {
        let Some((id, settle)) = slots
            .iter()
            .map(|s| (&s.id, self.cluster.settle(&s.id)))
            .max_by_key(|(_, d)| *d)
        else {
            return Ok(());
        };
        if settle.is_zero() {
            return Ok(());
        }
        let until = restarted_at.unwrap_or_else(Instant::now) + settle;
        if until <= Instant::now() {
            return Ok(());
        }
        if self.defer_settle.load(std::sync::atomic::Ordering::Relaxed) {
            let mut s = self.settling.lock().unwrap_or_else(|e| e.into_inner());
            if s.as_ref().is_none_or(|(u, _)| *u < until) {
                *s = Some((until, id.clone()));
            }
            return Ok(());
        }
        let until = crate::probe::probes::until(
            until,
            format!(
                "{id} is ready; the cluster's settle time after its restart ({:.0} s) runs",
                settle.as_secs_f64()
            ),
        );
        self.wait(
            Some(id),
            Phase::WaitReady,
            &outside.and(until),
            settle.saturating_add(slack),
        )
        .await
    }

    /// Waits what remains of a settle left to run alongside the last stateless waves. Then,
    /// when the waves `end` rolled, waits for the coordinators whose wave's end left its
    /// healthy wait to the roll's end to be ready again, and for a fully healthy cluster,
    /// before the roll ends or restores its knobs; a halt leaves both to the resumed run,
    /// whose next gate asks for full health. A run that crashes during it does not wait it
    /// again on resume: only stateless waves and the roll's end were left to follow it.
    pub(super) async fn settle_rest(&self, end: WavesEnd) -> Result<(), Error<C::Error>> {
        let pending = self
            .settling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let owed =
            std::mem::take(&mut *self.healthy_owed.lock().unwrap_or_else(|e| e.into_inner()));
        let left = pending
            .as_ref()
            .map(|(until, _)| until.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let settled = pending.is_some();
        if let Some((until, id)) = pending.filter(|_| !left.is_zero()) {
            let probe = crate::probe::probes::until(
                until,
                format!(
                    "{id} is ready; the rest of the cluster's settle time after its restart ({:.0} s) runs",
                    left.as_secs_f64()
                ),
            );
            self.wait(Some(&id), Phase::WaitReady, &probe, left.saturating_mul(2))
                .await?;
        }
        if end == WavesEnd::Halted || (!settled && owed.is_empty()) {
            return Ok(());
        }
        // What the settle waited for, and what the last coordinator wave's end left to the
        // roll's end, is then checked as any wave's end is.
        let deadlines = *self.spec.policy.get_deadlines();
        for id in &owed {
            self.step_opt(Some(id), Phase::WaitReady, async {
                self.wait(
                    Some(id),
                    Phase::WaitReady,
                    &self.cluster.ready(id),
                    deadlines.ready,
                )
                .await
            })
            .await?;
        }
        self.step_opt(owed.first(), Phase::WaitHealthy, async {
            self.wait(
                None,
                Phase::WaitHealthy,
                &self.cluster.fully_healthy(),
                deadlines.healthy,
            )
            .await
        })
        .await
    }
}
