//! The knobs of the high-availability procedure over the meta leader: the meta level by
//! `RPC_CM_CONTROL_META`, the `meta.lb.*` settings by remote command, both styles of reply
//! read, and everything written again on a new leader or on the same leader restarted.

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
    /// registered once it holds the lock, `meta_service::start`), and remembers it for a new
    /// leader. A leader that lost the knobs written before (a new one, or the same one
    /// restarted) gets them all first, so that every remembered knob sits on the leader
    /// remembered.
    pub(crate) async fn set_knob(&self, name: &str, value: &str) -> Result<(), PegasusError> {
        self.leader().await?;
        self.reapply_on_new_leader().await?;
        let (leader, started) = self.write_noting_start(name, value).await?;
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        w.leader = Some(leader);
        w.started = started;
        w.values.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Writes one knob on the leader: the leader, and when its process started (read before
    /// the write, so that a restart between the two shows as a change next time, not as
    /// none).
    async fn write_noting_start(
        &self,
        name: &str,
        value: &str,
    ) -> Result<(SocketAddr, Option<String>), PegasusError> {
        let at = self.meta.leader();
        let started = match at {
            Some(a) => self.process_start(a).await,
            None => None,
        };
        let leader = self.write_one(name, value).await?;
        let started = if Some(leader) == at {
            started
        } else {
            self.process_start(leader).await
        };
        Ok((leader, started))
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

    /// A leader that does not hold the knobs written started from its config: writes every
    /// knob again on it. That is another leader than the one they were written to (a leader
    /// change never keeps them, since the old leader's process exits when it loses the lock,
    /// `meta_server_failure_detector`), or the same address with another process start time
    /// (the leader restarted and took the lock again, as a single meta always does: the
    /// `meta.lb.*` values and the level live in its memory, `meta_service::start` @v2.4.0,
    /// @v2.5.0). A start time unknown before or now cannot tell a restart: nothing is written
    /// then.
    pub(crate) async fn reapply_on_new_leader(&self) -> Result<(), PegasusError> {
        let (before, started, values) = {
            let w = self.written.lock().unwrap_or_else(|e| e.into_inner());
            (w.leader, w.started.clone(), w.values.clone())
        };
        let (Some(before), Some(now)) = (before, self.meta.leader()) else {
            return Ok(());
        };
        if values.is_empty() {
            return Ok(());
        }
        if now == before {
            let current = self.process_start(now).await;
            if started.is_none() || current.is_none() || current == started {
                return Ok(());
            }
            // Its node list proves nothing until its failure detector's grace has run.
            self.meta.note_election();
            tracing::warn!(
                leader = %now,
                before = ?started,
                now = ?current,
                "the meta leader restarted at the same address: the rollout's knobs are written again"
            );
        } else {
            tracing::warn!(
                from = %before,
                to = %now,
                "the meta leader changed: the rollout's knobs are written on the new leader"
            );
        }
        let mut last = (now, None);
        for (name, value) in &values {
            last = self.write_noting_start(name, value).await?;
        }
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        w.leader = Some(last.0);
        w.started = last.1;
        Ok(())
    }
}
