//! Temporary replicas at run time (see [`crate::TemporaryReplica`]): placed on the live
//! topology right before a data wave's drain, journaled before each is added and waited for
//! until caught up; removed once their node serves the partition again (after the wave, after
//! a failure, in `abort`), never while the temporary replica is the partition's last copy.

use futures_util::future::join_all;

use crate::cluster::{Cluster, TemporaryReplicas};
use crate::error::{Error, Phase};
use crate::event::Event;
use crate::journal::{Entry, Resume};
use crate::model::{NodeId, Topology};
use crate::probe::HealthProbe;
use crate::replicas::{Relief, TemporaryReplica, place_temporary_replicas};

use super::ctx::Ctx;
use super::outside::Outside;

impl<C: Cluster> Ctx<'_, C> {
    /// What the placement rule forgives in this rollout.
    pub(super) fn relief(&self) -> Relief {
        Relief::new(
            &self.spec.policy,
            self.cluster.temporary_replicas().is_some(),
        )
    }

    /// The temporary replicas the journal shows added and not removed.
    fn open_temporaries(&self) -> Result<Vec<TemporaryReplica>, Error<C::Error>> {
        let known = *self.temporaries.lock().unwrap_or_else(|e| e.into_inner());
        if known == Some(false) {
            return Ok(Vec::new());
        }
        let entries = self.run.journal.load().map_err(Error::Journal)?;
        let open = Resume::from_entries(&entries).temporaries;
        let any = entries
            .iter()
            .any(|e| matches!(e, Entry::TemporaryAdded { .. }));
        *self.temporaries.lock().unwrap_or_else(|e| e.into_inner()) = Some(any);
        Ok(open)
    }

    /// Gives every single-replica partition of `nodes` a temporary replica (reusing those the
    /// journal shows open, as after a crash or a ride-out) and waits until each has caught
    /// up, watching the nodes outside the wave.
    pub(super) async fn add_temporaries(
        &self,
        nodes: &[NodeId],
        outside: &Outside<'_, C>,
    ) -> Result<(), Error<C::Error>> {
        let relief = self.relief();
        let Some(temps) = self.cluster.temporary_replicas() else {
            return Ok(());
        };
        if !relief.temporary || nodes.is_empty() {
            return Ok(());
        }
        let open = self.open_temporaries()?;
        let topology = self.topology(Phase::AddReplica).await?;
        let limit = self.spec.policy.get_temporary_replica_limit();
        let placed = place_temporary_replicas(&topology, nodes, &relief, limit, &open).map_err(
            |reason| Error::Unsafe {
                node: nodes[0].clone(),
                reason,
            },
        )?;
        for t in &placed {
            *self.temporaries.lock().unwrap_or_else(|e| e.into_inner()) = Some(true);
            self.append(&Entry::TemporaryAdded { replica: t.clone() })?;
            self.emit(Event::TemporaryReplicaAdded { replica: t.clone() });
        }
        let mine: Vec<&TemporaryReplica> = open
            .iter()
            .filter(|t| nodes.contains(&t.from))
            .chain(&placed)
            .collect();
        let deadline = self.spec.policy.get_deadlines().temporary;
        let results = join_all(mine.iter().map(|t| async move {
            let node = Some(&t.from);
            self.step(
                &t.from,
                Phase::AddReplica,
                self.act(node, Phase::AddReplica, || temps.add_temporary_replica(t)),
            )
            .await?;
            let probe = outside.and(temps.temporary_replica_ready(t));
            self.step(
                &t.from,
                Phase::WaitReplica,
                self.wait(node, Phase::WaitReplica, &probe, deadline),
            )
            .await
        }))
        .await;
        if let Some((node, reason)) = outside.seen() {
            return Err(Error::OutsideFailure {
                node: Some(node),
                phase: Phase::WaitReplica,
                reason,
            });
        }
        results.into_iter().collect()
    }

    /// Removes the open temporary replicas whose restarted node is in `nodes` (all of them
    /// with `None`), each only once its partition's replica on that node is alive again.
    /// Returns why each one that was kept is kept (its node does not serve it yet).
    pub(super) async fn remove_temporaries(
        &self,
        nodes: Option<&[NodeId]>,
    ) -> Result<Vec<String>, Error<C::Error>> {
        let open: Vec<TemporaryReplica> = self
            .open_temporaries()?
            .into_iter()
            .filter(|t| nodes.is_none_or(|n| n.contains(&t.from)))
            .collect();
        if open.is_empty() {
            return Ok(Vec::new());
        }
        let Some(temps) = self.cluster.temporary_replicas() else {
            return Err(Error::Unhealthy {
                node: open.first().map(|t| t.from.clone()),
                phase: Phase::RemoveReplica,
                reason: format!(
                    "the journal shows {} temporary replica(s) open, but this backend adds \
                     none, so it cannot remove them: remove them by hand, then run abort",
                    open.len()
                ),
            });
        };
        let topology = self.topology(Phase::RemoveReplica).await?;
        let (gone, open): (Vec<_>, Vec<_>) = open
            .into_iter()
            .partition(|t| !topology.partitions.iter().any(|p| p.id == t.partition));
        for t in gone {
            // The table was dropped meanwhile: nothing is left to remove.
            tracing::warn!(replica = %t, "its partition no longer exists");
            self.append(&Entry::TemporaryRemoved { replica: t })?;
        }
        let (ready, kept): (Vec<_>, Vec<_>) =
            open.into_iter().partition(|t| origin_serves(&topology, t));
        let deadline = self.spec.policy.get_deadlines().temporary;
        let results = join_all(ready.iter().map(|t| async move {
            let node = Some(&t.from);
            self.step(
                &t.from,
                Phase::RemoveReplica,
                self.act(node, Phase::RemoveReplica, || {
                    temps.remove_temporary_replica(t)
                }),
            )
            .await?;
            let probe = temps.temporary_replica_removed(t);
            self.wait(node, Phase::RemoveReplica, &probe, deadline)
                .await?;
            self.append(&Entry::TemporaryRemoved { replica: t.clone() })?;
            self.emit(Event::TemporaryReplicaRemoved { replica: t.clone() });
            Ok(())
        }))
        .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(kept
            .iter()
            .map(|t| {
                format!(
                    "{t} kept: partition {}'s replica on {} does not serve yet, so the temporary \
                     one may be its only up-to-date copy",
                    t.partition, t.from
                )
            })
            .collect())
    }
}

/// Whether the partition of `t` has an alive replica on the node that restarted.
fn origin_serves(topology: &Topology, t: &TemporaryReplica) -> bool {
    topology
        .partitions
        .iter()
        .find(|p| p.id == t.partition)
        .is_some_and(|p| p.replicas.iter().any(|r| r.node == t.from && r.alive))
}
