//! The knobs of the high-availability procedure over the meta leader: the meta level by
//! `RPC_CM_CONTROL_META`, the `meta.lb.*` settings by remote command, both styles of reply
//! read, and everything written again on a new leader.

use std::net::SocketAddr;

use crate::answers::reply;
use crate::cluster::{NodeFactory, PegasusCluster};
use crate::error::PegasusError;
use crate::messages::{ClusterInfoResponse, Empty, I32Request, I32Response, meta_level, rpc};
use crate::meta::MetaError;

impl<F: NodeFactory> PegasusCluster<F> {
    /// Runs a remote command on `server` and reads its answer in either reply style:
    /// `Ok(Some(value))`, `Ok(None)` for a success without a value.
    ///
    /// # Errors
    /// The server's own words when the answer says it failed (`ERR...`, `unknown command`,
    /// a JSON `error` other than `ok`) or is in neither style.
    pub(crate) async fn command_ok(
        &self,
        server: SocketAddr,
        cmd: &str,
        args: &[&str],
    ) -> Result<Option<String>, PegasusError> {
        let answer = self.meta.command(server, cmd, args).await?;
        reply(cmd, &answer).map_err(|answer| PegasusError::Command {
            server,
            cmd: std::iter::once(cmd)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            answer,
        })
    }

    /// The meta leader's address, confirmed by a call that only the leader answers (the
    /// remembered one may have lost the role while its process stayed up).
    pub(crate) async fn leader(&self) -> Result<SocketAddr, PegasusError> {
        let _: ClusterInfoResponse = self.meta.call(rpc::CLUSTER_INFO, &Empty).await?;
        self.meta.leader().ok_or_else(|| {
            PegasusError::Meta(MetaError::NoLeader {
                tried: String::new(),
                last: "no leader after a successful call".into(),
            })
        })
    }

    /// A knob's value on the leader.
    pub(crate) async fn knob_value(&self, name: &str) -> Result<String, PegasusError> {
        if name == "meta_level" {
            let r: I32Response = self
                .meta
                .call(rpc::CONTROL_META, &I32Request(meta_level::INVALID))
                .await?;
            return meta_level::name(r.value)
                .map(str::to_string)
                .ok_or_else(|| PegasusError::UnknownKnob(format!("meta level {}", r.value)));
        }
        let leader = self.leader().await?;
        self.command_ok(leader, name, &[])
            .await?
            .ok_or_else(|| PegasusError::Command {
                server: leader,
                cmd: name.to_string(),
                answer: "a success that names no value".into(),
            })
    }

    /// Sets a knob on the leader, the only meta that has the `meta.lb.*` commands (they are
    /// registered once it holds the leader lock, `meta_service::start`), and remembers it
    /// for a new leader.
    pub(crate) async fn set_knob(&self, name: &str, value: &str) -> Result<(), PegasusError> {
        let leader = self.write_one(name, value).await?;
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        w.leader = Some(leader);
        w.values.insert(name.to_string(), value.to_string());
        Ok(())
    }

    async fn write_one(&self, name: &str, value: &str) -> Result<SocketAddr, PegasusError> {
        if name == "meta_level" {
            let level =
                meta_level::parse(value).ok_or_else(|| PegasusError::UnknownKnob(value.into()))?;
            let _: I32Response = self
                .meta
                .call(rpc::CONTROL_META, &I32Request(level))
                .await?;
            return self.leader().await;
        }
        let leader = self.leader().await?;
        self.command_ok(leader, name, &[value]).await?;
        Ok(leader)
    }

    /// A leader other than the one the knobs were written to started from its config:
    /// writes every knob again on it (a leader change never keeps them, since the old
    /// leader's process exits when it loses the lock, `meta_server_failure_detector`).
    pub(crate) async fn reapply_on_new_leader(&self) -> Result<(), PegasusError> {
        let (before, values) = {
            let w = self.written.lock().unwrap_or_else(|e| e.into_inner());
            (w.leader, w.values.clone())
        };
        let now = self.meta.leader();
        if values.is_empty() || before.is_none() || now.is_none() || now == before {
            return Ok(());
        }
        tracing::warn!(
            from = ?before,
            to = ?now,
            "the meta leader changed: the rollout's knobs are written on the new leader"
        );
        let mut leader = now;
        for (name, value) in &values {
            leader = Some(self.write_one(name, value).await?);
        }
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leader = leader;
        Ok(())
    }
}
