//! Bringing replicas back, as the upstream tool does (docs/upstream/openmldb.md §2.3, §2.5,
//! §4; `tools/openmldb_ops.py` `RecoverData`, `PreUpgrade`, `PostUpgrade` @v0.9.2):
//!
//! - a leader moved away is marked not alive but keeps its leader flag
//!   (`NameServerImpl::UpdateLeaderInfo`): RecoverTable makes it an alive follower again
//!   (pre-upgrade's `recovertable` after each `changeleader`);
//! - with `auto_failover` off the nameserver does nothing when a tablet restarts: its
//!   replicas stay marked alive with nothing loaded, and RecoverEndpoint skips every replica
//!   marked alive (`RecoverEndpointDBInternal`). So each one the tablet has not loaded is
//!   marked not alive first (`UpdateTableAliveStatus`, as `recoverdata` does), then
//!   RecoverEndpoint recovers exactly those, over `name_server_task_max_concurrency` (8)
//!   queues (fewer when the nameserver's maximum is lower: 307, then its default); a
//!   partition the restarted tablet still leads in the records is first moved to the
//!   follower with the highest offset (ChangeLeader `auto`), as the nameserver's own failover
//!   does. The tool instead reloads such a leader in place (the tablet's `LoadTable` over
//!   HTTP, `RecoverPartition`): that keeps the writes it acknowledged and had not shipped
//!   (replication is asynchronous), at the cost of the partition taking no writes until the
//!   reload ends. Only a tablet that restarts while it leads reaches this (a crash); the
//!   rollout's own restarts are drained first.
//!
//! Every op is waited for by id: the ops newer than a mark read before the calls, on the
//! partitions concerned, children included (RecoverTable's child op is created, with a
//! higher id, before the parent is marked done).

use std::collections::BTreeSet;

use crate::api::{
    ChangeLeaderRequest, GetTableStatusResponse, OpStatus, RecoverEndpointRequest,
    RecoverTableRequest, Status, UpdateTableAliveRequest, code,
};
use crate::cluster::{NodeFactory, OpenMldbCluster, Part};
use crate::error::OpenMldbError;

/// RecoverEndpoint's spread (`name_server_task_max_concurrency`).
const MAX_QUEUES: u32 = 8;

impl<F: NodeFactory> OpenMldbCluster<F> {
    /// The highest op id the nameserver lists now: ops above it are the caller's.
    pub(crate) async fn op_mark(&self) -> Result<u64, OpenMldbError> {
        Ok(self
            .ops(None)
            .await?
            .iter()
            .map(|o| o.op_id)
            .max()
            .unwrap_or(0))
    }

    /// RecoverTable of the replica of each `part` on `node` (a leader moved away, flagged
    /// leader and not alive), then the wait for their ops. One already alive again (311) is
    /// done.
    pub(crate) async fn recover_replicas(
        &self,
        parts: &[Part],
        node: &str,
    ) -> Result<(), OpenMldbError> {
        if parts.is_empty() {
            return Ok(());
        }
        let mark = self.op_mark().await?;
        let pairs: Vec<(Part, String)> = parts.iter().map(|p| (p.clone(), node.into())).collect();
        let sent = self.send_recover_tables(&pairs).await?;
        self.wait_for_ops(&sent, mark, "RecoverTable").await
    }

    /// RecoverTable of the replica of each `(part, node)`, not waited for: the partitions
    /// sent (one already alive again, 311, is not).
    pub(crate) async fn send_recover_tables(
        &self,
        parts: &[(Part, String)],
    ) -> Result<Vec<Part>, OpenMldbError> {
        let mut sent = Vec::new();
        for ((db, name, tid, pid), node) in parts {
            let req = RecoverTableRequest {
                name: name.clone(),
                pid: *pid,
                endpoint: node.clone(),
                db: db.clone(),
            };
            match self.ns::<_, Status>("RecoverTable", &req).await {
                Ok(_) => sent.push((db.clone(), name.clone(), *tid, *pid)),
                Err(OpenMldbError::App { code: c, .. }) if c == code::PARTITION_IS_ALIVE => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// `recoverdata` for `node` (see the module): every replica the tablet holds in the
    /// records but has not loaded is marked not alive and recovered; the ops are waited for.
    /// Nothing to do when it has everything loaded.
    pub(crate) async fn recover_unloaded(&self, node: &str) -> Result<(), OpenMldbError> {
        let loaded: BTreeSet<(u32, u32)> = {
            let r: GetTableStatusResponse = self
                .endpoint(node)
                .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
                .await?;
            r.all_table_status
                .iter()
                .filter(|s| s.is_loaded())
                .map(|s| (s.tid, s.pid))
                .collect()
        };
        let tables = self.tables().await?;
        let mut leaders = Vec::new();
        let mut followers = Vec::new();
        let mut dead = Vec::new();
        for t in &tables {
            for p in &t.table_partition {
                let Some(m) = p.partition_meta.iter().find(|m| m.endpoint == node) else {
                    continue;
                };
                let part = (t.db.clone(), t.name.clone(), t.tid, p.pid);
                if !m.is_alive {
                    dead.push(part);
                } else if !loaded.contains(&(t.tid, p.pid)) {
                    if m.is_leader && p.partition_meta.len() > 1 {
                        leaders.push(part);
                    } else {
                        followers.push(part);
                    }
                }
            }
        }
        if leaders.is_empty() && followers.is_empty() && dead.is_empty() {
            return Ok(());
        }
        // A leader with nothing loaded serves nothing: a follower takes over first.
        let mark = self.op_mark().await?;
        for (db, name, _, pid) in &leaders {
            let req = ChangeLeaderRequest {
                name: name.clone(),
                pid: *pid,
                candidate_leader: "auto".into(),
                db: db.clone(),
            };
            let _: Status = self.ns("ChangeLeader", &req).await?;
        }
        self.wait_for_ops(&leaders, mark, "ChangeLeader").await?;
        let mark = self.op_mark().await?;
        for (db, name, _, pid) in &followers {
            let req = UpdateTableAliveRequest {
                name: name.clone(),
                endpoint: node.to_string(),
                pid: *pid,
                is_alive: false,
                db: db.clone(),
            };
            let _: Status = self.ns("UpdateTableAliveStatus", &req).await?;
        }
        let mut req = RecoverEndpointRequest {
            endpoint: node.to_string(),
            need_restore: false,
            concurrency: Some(MAX_QUEUES),
        };
        match self.ns::<_, Status>("RecoverEndpoint", &req).await {
            // A nameserver whose name_server_task_max_concurrency is set lower: its default
            // spread then.
            Err(OpenMldbError::App { code: c, .. }) if c == code::INVALID_PARAMETER => {
                req.concurrency = None;
                let _: Status = self.ns("RecoverEndpoint", &req).await?;
            }
            other => {
                other?;
            }
        }
        let all: Vec<Part> = leaders.into_iter().chain(followers).chain(dead).collect();
        self.wait_for_ops(&all, mark, "RecoverTable").await
    }

    /// Waits until every op newer than `mark` on the partitions `parts` has finished, and
    /// each of them has had one: a failed or cancelled one is an error naming it, as is a
    /// partition with no op, or an op that does not finish, by the op deadline.
    pub(crate) async fn wait_for_ops(
        &self,
        parts: &[Part],
        mark: u64,
        what: &'static str,
    ) -> Result<(), OpenMldbError> {
        if parts.is_empty() {
            return Ok(());
        }
        let want: BTreeSet<(&str, &str, u32)> = parts
            .iter()
            .map(|(db, name, _, pid)| (db.as_str(), name.as_str(), *pid))
            .collect();
        let deadline = tokio::time::Instant::now() + self.timing.op;
        loop {
            let ops = match self.ops(None).await {
                Ok(ops) => ops,
                Err(e)
                    if e.class() == rollout_core::ErrorClass::Transient
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.timing.poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mine: Vec<&OpStatus> = ops
                .iter()
                .filter(|o| {
                    o.op_id > mark && want.contains(&(o.db.as_str(), o.name.as_str(), o.pid))
                })
                .collect();
            if let Some(bad) = mine
                .iter()
                .find(|o| matches!(o.status.as_str(), "kFailed" | "kCanceled"))
            {
                return Err(self.op_failure(what, bad, "ended"));
            }
            let without: Vec<&(&str, &str, u32)> = want
                .iter()
                .filter(|w| {
                    !mine
                        .iter()
                        .any(|o| (o.db.as_str(), o.name.as_str(), o.pid) == **w)
                })
                .collect();
            let running = mine.iter().find(|o| !o.finished());
            if without.is_empty() && running.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match running {
                    Some(o) => self.op_failure(what, o, "does not finish: it is"),
                    None => OpenMldbError::App {
                        server: self.leader_addr().unwrap_or_default(),
                        method: what,
                        code: code::OK,
                        msg: format!(
                            "no op appeared within {} s for {} partition(s), such as {}.{} \
                             partition {}",
                            self.timing.op.as_secs(),
                            without.len(),
                            without[0].0,
                            without[0].1,
                            without[0].2
                        ),
                    },
                });
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    fn op_failure(&self, what: &'static str, o: &OpStatus, how: &str) -> OpenMldbError {
        OpenMldbError::App {
            server: self.leader_addr().unwrap_or_default(),
            method: what,
            code: -1,
            msg: format!(
                "op {} ({}, task {}) on {}.{} partition {} {how} {}",
                o.op_id, o.op_type, o.task_type, o.db, o.name, o.pid, o.status
            ),
        }
    }
}
