//! A process of the simulated cluster: stop, start, status, apply and revert over the world.

use std::collections::BTreeMap;

use rollout_core::{ApplyRecord, Change, ConfigEdit, Node, NodeId, NodeStatus};

use crate::cluster::{SimCluster, SimError};
use crate::world::{Ev, us};

/// A process of a simulated cluster.
#[derive(Clone)]
pub struct SimNode {
    pub(crate) sim: SimCluster,
    pub(crate) index: u32,
    pub(crate) id: NodeId,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode").field("id", &self.id).finish()
    }
}

fn digest(edits: &[ConfigEdit]) -> String {
    // FNV-1a over the edits' JSON: stable across runs and platforms.
    let text = serde_json::to_string(edits).expect("edits always serialize");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Node for SimNode {
    type Error = SimError;

    fn id(&self) -> &NodeId {
        &self.id
    }

    async fn stop(&self) -> Result<(), SimError> {
        let mut w = self.sim.control("stop").await?;
        w.nodes[self.index as usize].held = true;
        let n = &w.nodes[self.index as usize];
        if n.running {
            let boot = n.boot;
            let d = us(w.t.stop);
            w.after(
                d,
                Ev::StopDone {
                    node: self.index,
                    boot,
                },
            );
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), SimError> {
        let mut w = self.sim.control("start").await?;
        if !w.nodes[self.index as usize].running {
            w.nodes[self.index as usize].restarts += 1;
            w.launch(self.index);
        }
        Ok(())
    }

    async fn status(&self) -> Result<NodeStatus, SimError> {
        let w = self.sim.world();
        let n = &w.nodes[self.index as usize];
        let status = if n.running {
            NodeStatus::running()
        } else {
            NodeStatus::stopped()
        }
        .boot(n.boot.to_string())
        .version(n.version.clone())
        .config_digest(n.digest.clone());
        Ok(match (&n.exit_reason, n.running) {
            (Some(reason), false) => status.exited(reason.clone()),
            _ => status,
        })
    }

    async fn apply(&self, change: &Change) -> Result<ApplyRecord, SimError> {
        let mut w = self.sim.control("apply").await?;
        let n = &mut w.nodes[self.index as usize];
        if n.running {
            return Err(SimError::Running(self.id.clone()));
        }
        let (version, digest) = n
            .staged
            .clone()
            .unwrap_or_else(|| (n.version.clone(), n.digest.clone()));
        let backup = BTreeMap::from([
            ("version".to_string(), n.version.clone()),
            ("digest".to_string(), n.digest.clone()),
        ]);
        n.staged = match change {
            Change::Restart => None,
            Change::Upgrade { version: v } => Some((v.clone(), digest)),
            Change::Config { edits } => Some((version, self::digest(edits))),
        };
        Ok(ApplyRecord::new(self.id.clone(), backup))
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), SimError> {
        let mut w = self.sim.control("revert").await?;
        let n = &mut w.nodes[self.index as usize];
        if n.running {
            return Err(SimError::Running(self.id.clone()));
        }
        let get = |k: &str| record.backup.get(k).cloned().unwrap_or_default();
        n.staged = Some((get("version"), get("digest")));
        Ok(())
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, SimError> {
        let w = self.sim.world();
        let n = &w.nodes[self.index as usize];
        Ok(match change {
            Change::Restart => false,
            Change::Upgrade { version } => &n.version == version,
            Change::Config { edits } => n.digest == digest(edits),
        })
    }
}
