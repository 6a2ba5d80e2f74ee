//! Where a node the journal shows in progress picks up, from its live status.

use crate::cluster::{Cluster, Node};
use crate::error::{Error, Phase};
use crate::journal::{InFlight, Resume};

use super::ctx::{Ctx, Slot, StartAt};

/// Decides where an in-flight node resumes, from its live status.
pub(super) async fn resume_point<C: Cluster>(
    ctx: &Ctx<'_, C>,
    flight: &InFlight,
) -> Result<StartAt, Error<C::Error>> {
    let (id, boot, record) = (&flight.node, flight.boot.as_ref(), flight.record.as_ref());
    let node = ctx
        .cluster
        .node(id)
        .ok_or_else(|| Error::UnknownNode(id.to_string()))?;
    let status = ctx.call(Some(id), Phase::Plan, || node.status()).await?;
    Ok(if !status.running {
        if flight.started && status.boot.as_ref() != boot {
            // Started by this rollout (the journal says so and the boot id moved) and down
            // again: a crash loop or a slow supervisor. It is not started a second time; the
            // wait for readiness decides.
            StartAt::WaitReady
        } else if record.is_some() {
            StartAt::Start
        } else {
            StartAt::Apply
        }
    } else if status.boot.as_ref() != boot {
        StartAt::WaitReady
    } else if boot.is_none() && record.is_some() {
        // No boot ids from this backend: a running node whose change was applied has been
        // restarted, so it is not restarted again.
        StartAt::WaitReady
    } else {
        StartAt::Drain
    })
}

impl<C: Cluster> Ctx<'_, C> {
    /// Resumed nodes take their boot id and apply record from the journal.
    pub(super) async fn resume_state(
        &self,
        slots: &mut [Slot<C::Node>],
    ) -> Result<(), Error<C::Error>> {
        if slots.iter().all(|s| s.start == StartAt::Gate) {
            return Ok(());
        }
        let entries = self.run.journal.load().map_err(Error::Journal)?;
        let resume = Resume::from_entries(&entries);
        for s in slots.iter_mut().filter(|s| s.start != StartAt::Gate) {
            if let Some(f) = resume.in_flight.iter().find(|f| f.node == s.id) {
                s.boot = f.boot.clone();
                s.record = f.record.clone();
            }
        }
        Ok(())
    }
}
