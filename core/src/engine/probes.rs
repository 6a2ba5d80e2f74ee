//! Probes on a node's process, shared by the node sequence, the rejoin and the roll back.

use std::sync::Mutex;

use crate::cluster::Node;
use crate::model::{Health, NodeId};
use crate::probe::HealthProbe;

/// Holds once the node's process no longer runs.
pub(super) struct Stopped<'a, N>(pub(super) &'a N);

impl<N: Node> HealthProbe for Stopped<'_, N> {
    type Error = N::Error;

    async fn check(&self) -> Result<Health, N::Error> {
        let status = self.0.status().await?;
        Ok(if status.running {
            Health::waiting(format!("node {} still runs", self.0.id()))
        } else {
            Health::Healthy
        })
    }
}

/// Holds once the node runs a new incarnation.
pub(super) struct Restarted<'a, N> {
    pub(super) node: &'a N,
    pub(super) before: Option<String>,
}

impl<N: Node> HealthProbe for Restarted<'_, N> {
    type Error = N::Error;

    async fn check(&self) -> Result<Health, N::Error> {
        let status = self.node.status().await?;
        let started = self.before.is_none() || status.boot != self.before;
        Ok(if !status.running {
            match status.exited {
                // The new incarnation exited on its own: waiting longer cannot help.
                Some(reason) if started => Health::failed(format!(
                    "node {} exited after its start: {reason}",
                    self.node.id()
                )),
                _ => Health::waiting(format!("node {} is not running", self.node.id())),
            }
        } else if self.before.is_some() && status.boot == self.before {
            Health::waiting(format!("node {} has not restarted yet", self.node.id()))
        } else {
            Health::Healthy
        })
    }
}

/// A probe that fails the wait it is part of when a node of the wave runs another
/// incarnation than the one that came back (it restarted on its own during its rejoin), or
/// does not run.
pub(super) struct Reborn<'a, N> {
    pub(super) nodes: Vec<(&'a N, Option<String>)>,
    pub(super) seen: Mutex<Option<NodeId>>,
}

impl<N: Node> HealthProbe for Reborn<'_, N> {
    type Error = N::Error;

    async fn check(&self) -> Result<Health, N::Error> {
        for (node, boot) in &self.nodes {
            let status = node.status().await?;
            if !status.running || status.boot != *boot {
                *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(node.id().clone());
                let why = status.exited.map_or_else(String::new, |r| format!(": {r}"));
                return Ok(Health::failed(format!(
                    "node {} restarted on its own during its rejoin{why}",
                    node.id()
                )));
            }
        }
        Ok(Health::Healthy)
    }
}
