//! The knob guard: journal the original, set, verify, restore.

use crate::cluster::Cluster;
use crate::error::{Error, KnobLeft, Phase};
use crate::event::Event;
use crate::journal::{Entry, Resume};
use crate::model::{Knob, KnobScope, NodeId};
use crate::plan::PlannedKnob;
use crate::policy::Policy;

use super::ctx::Ctx;
use crate::error::chain;

/// How many times a knob's restore is tried before it is reported left changed.
const RESTORE_TRIES: u32 = 3;

/// The pause between two tries of a restore.
const RESTORE_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// The knobs of one run and the originals saved (journaled) and not yet restored.
pub(super) struct Guard {
    specs: Vec<Knob>,
    saved: Vec<(String, String)>,
}

impl Guard {
    /// Starts from the originals an interrupted run journaled.
    pub(super) fn from_journal(resume: &Resume, specs: Vec<Knob>) -> Self {
        Self {
            specs,
            saved: resume.knobs.clone(),
        }
    }

    /// Whether every saved knob has been restored.
    pub(super) fn is_clear(&self) -> bool {
        self.saved.is_empty()
    }

    fn original(&self, name: &str) -> Option<&str> {
        self.saved
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The saved knobs that keep the cluster from healing: every wave knob, and the rollout
    /// knobs marked `blocks_healing`.
    pub(super) fn healing_blockers(&self) -> Vec<String> {
        self.saved
            .iter()
            .filter(|(n, _)| {
                self.specs
                    .iter()
                    .any(|k| &k.name == n && (k.scope == KnobScope::Wave || k.blocks_healing))
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The names of the knobs saved and not yet restored.
    pub(super) fn saved_names(&self) -> Vec<String> {
        self.saved.iter().map(|(n, _)| n.clone()).collect()
    }

    fn scope(&self, name: &str) -> KnobScope {
        self.specs
            .iter()
            .find(|k| k.name == name)
            .map_or(KnobScope::Rollout, |k| k.scope)
    }

    /// The knobs as a plan shows them: the original is the journaled one when the knob is
    /// already changed, else the live value.
    pub(super) async fn planned<C: Cluster>(
        &self,
        cluster: &C,
        policy: &Policy,
    ) -> Result<Vec<PlannedKnob>, Error<C::Error>> {
        let mut out = Vec::new();
        for k in &self.specs {
            let original = match self.original(&k.name) {
                Some(v) => v.to_string(),
                None => {
                    super::retry::retry(cluster, policy, None, Phase::Plan, || {
                        cluster.read_knob(&k.name)
                    })
                    .await?
                }
            };
            out.push(PlannedKnob {
                name: k.name.clone(),
                original,
                during: k.during.clone(),
                scope: k.scope,
                after_wave: k.after_wave.clone(),
            });
        }
        Ok(out)
    }
}

impl<C: Cluster> Ctx<'_, C> {
    /// Writes `value` and reads it back.
    async fn write_verified(&self, name: &str, value: &str) -> Result<(), Error<C::Error>> {
        self.act(None, Phase::Guard, || self.cluster.write_knob(name, value))
            .await?;
        let found = self
            .call(None, Phase::Guard, || self.cluster.read_knob(name))
            .await?;
        if found != value {
            return Err(Error::KnobMismatch {
                name: name.into(),
                expected: value.into(),
                found,
            });
        }
        Ok(())
    }

    /// Sets every knob of `scope`: journals its original first (unless a resumed run already
    /// did), then writes and verifies the value during the rollout.
    pub(super) async fn set(
        &self,
        guard: &mut Guard,
        scope: KnobScope,
        node: Option<&NodeId>,
    ) -> Result<(), Error<C::Error>> {
        let specs: Vec<Knob> = guard
            .specs
            .iter()
            .filter(|k| k.scope == scope)
            .cloned()
            .collect();
        for k in specs {
            let current = self
                .call(node, Phase::Guard, || self.cluster.read_knob(&k.name))
                .await?;
            if guard.original(&k.name).is_none() {
                self.append(&Entry::KnobSaved {
                    name: k.name.clone(),
                    original: current.clone(),
                })?;
                guard.saved.push((k.name.clone(), current.clone()));
            }
            if current != k.during {
                self.write_verified(&k.name, &k.during).await?;
                self.emit(Event::KnobChanged {
                    name: k.name.clone(),
                    from: current,
                    to: k.during.clone(),
                });
            }
        }
        Ok(())
    }

    /// Re-applies rollout knobs that no longer read their value (a coordinator failover can
    /// lose in-memory settings).
    pub(super) async fn reapply(&self, guard: &mut Guard) -> Result<(), Error<C::Error>> {
        self.set(guard, KnobScope::Rollout, None).await
    }

    /// Ends a wave's hold on its knobs: each takes its after-wave value if it has one (and
    /// stays journaled for the final restore), else its original.
    pub(super) async fn release_wave(&self, guard: &mut Guard) -> Result<(), Error<C::Error>> {
        let specs: Vec<Knob> = guard
            .specs
            .iter()
            .filter(|k| k.scope == KnobScope::Wave && k.after_wave.is_some())
            .cloned()
            .collect();
        for k in specs {
            let (Some(value), Some(_)) = (&k.after_wave, guard.original(&k.name)) else {
                continue;
            };
            let current = self
                .call(None, Phase::Restore, || self.cluster.read_knob(&k.name))
                .await?;
            if &current != value {
                self.write_verified(&k.name, value).await?;
                self.emit(Event::KnobChanged {
                    name: k.name.clone(),
                    from: current,
                    to: value.clone(),
                });
            }
        }
        let plain: Vec<String> = guard
            .specs
            .iter()
            .filter(|k| k.scope == KnobScope::Wave && k.after_wave.is_none())
            .map(|k| k.name.clone())
            .collect();
        self.restore_named(guard, &plain).await
    }

    /// Restores the saved knobs of `scope` (with `Rollout`, every saved knob), newest first.
    /// Each restore is journaled, so a restore cut short is finished by the next run.
    pub(super) async fn restore(
        &self,
        guard: &mut Guard,
        scope: KnobScope,
    ) -> Result<(), Error<C::Error>> {
        let names: Vec<String> = guard
            .saved
            .iter()
            .filter(|(n, _)| scope == KnobScope::Rollout || guard.scope(n) == scope)
            .map(|(n, _)| n.clone())
            .collect();
        self.restore_named(guard, &names).await
    }

    /// Restores the named saved knobs (journaled; a later `set` holds them again).
    pub(super) async fn restore_names(
        &self,
        guard: &mut Guard,
        names: &[String],
    ) -> Result<(), Error<C::Error>> {
        self.restore_named(guard, names).await
    }

    /// Restores the named knobs, newest first, each tried [`RESTORE_TRIES`] times (a lost
    /// lock ends it at once). What still fails is reported in one error that lists every
    /// knob left changed with its value now and its original.
    async fn restore_named(
        &self,
        guard: &mut Guard,
        names: &[String],
    ) -> Result<(), Error<C::Error>> {
        let todo: Vec<(String, String)> = guard
            .saved
            .iter()
            .rev()
            .filter(|(n, _)| names.contains(n))
            .cloned()
            .collect();
        let mut left = Vec::new();
        let mut first_err = None;
        for (name, original) in todo {
            let mut last = None;
            for attempt in 0..RESTORE_TRIES {
                if attempt > 0 {
                    tokio::time::sleep(RESTORE_PAUSE).await;
                }
                match self.write_verified(&name, &original).await {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e @ Error::Journal(_)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(knob = name.as_str(), attempt, error = %chain(&e), "restore failed");
                        last = Some(e);
                    }
                }
            }
            match last {
                None => {
                    self.append(&Entry::KnobRestored { name: name.clone() })?;
                    guard.saved.retain(|(n, _)| n != &name);
                    self.emit(Event::KnobRestored {
                        name,
                        value: original,
                    });
                }
                Some(e) => {
                    tracing::error!(knob = name.as_str(), error = %chain(&e), "restore failed for good");
                    let current = self.cluster.read_knob(&name).await.ok();
                    left.push(KnobLeft {
                        name,
                        current,
                        original,
                    });
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(Error::KnobsNotRestored {
                knobs: left,
                reason: chain(&e),
            }),
        }
    }
}
