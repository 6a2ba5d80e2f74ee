//! What the steps read from the nameserver and tablets: the nodes, what keeps the cluster
//! from full health, whether a tablet is back, and the fenced moves run two at a time.

use rollout_core::{NodeId, NodeInfo, Role, RoleKind};

use crate::api::{GetTableStatusResponse, TableInfo, TabletStatus};
use crate::cluster::{NodeFactory, OpenMldbCluster, Part};
use crate::error::OpenMldbError;

/// Ops the nameserver runs at once for single-partition RPCs (`name_server_task_concurrency`).
pub(crate) const QUEUES: usize = 2;

/// The partitions `node` leads (alive leader flag) among those with another replica.
pub(crate) fn led_by(tables: &[TableInfo], node: &str) -> Vec<Part> {
    let mut out = Vec::new();
    for t in tables {
        for p in &t.table_partition {
            let leads = p
                .partition_meta
                .iter()
                .any(|m| m.endpoint == node && m.is_leader && m.is_alive);
            if leads && p.partition_meta.len() > 1 {
                out.push((t.db.clone(), t.name.clone(), t.tid, p.pid));
            }
        }
    }
    out
}

/// The configured taskmanager the leader node's value names: the value is
/// `server.host:server.port`, and `server.host` defaults to `0.0.0.0` (the taskmanager's
/// `FailoverWatcher`, `TaskManagerConfig`), so a wildcard host is matched by port when one
/// configured taskmanager has it.
pub(crate) fn taskmanager_leader<'a>(value: &str, configured: &'a [String]) -> Option<&'a str> {
    let value = value.trim();
    if let Some(exact) = configured.iter().find(|c| *c == value) {
        return Some(exact);
    }
    let (host, port) = value.rsplit_once(':')?;
    if host != "0.0.0.0" && host != "::" {
        return None;
    }
    let mut same = configured
        .iter()
        .filter(|c| c.rsplit_once(':').is_some_and(|(_, p)| p == port));
    match (same.next(), same.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// A partition's id in the topology: `[db.]table.pid`.
pub(crate) fn part_id(t: &TableInfo, pid: u32) -> String {
    if t.db.is_empty() {
        format!("{}.{pid}", t.name)
    } else {
        format!("{}.{}.{pid}", t.db, t.name)
    }
}

fn nid(s: &str) -> NodeId {
    NodeId::new(s.to_string())
}

impl<F: NodeFactory> OpenMldbCluster<F> {
    pub(crate) fn is_tablet(&self, tablets: &[TabletStatus], node: &NodeId) -> bool {
        tablets.iter().any(|t| t.endpoint == node.as_str())
    }

    pub(crate) async fn infos(&self) -> Result<(Vec<NodeInfo>, Vec<TabletStatus>), OpenMldbError> {
        let tablets = self.tablets().await?.tablets;
        let tablet = Role::new("tablet", RoleKind::Data, 1);
        let ns = Role::new("nameserver", RoleKind::Coordinator, 0);
        let api = Role::new("apiserver", RoleKind::Stateless, 2);
        let tm = Role::new("taskmanager", RoleKind::Coordinator, 3);
        let leader = self.leader_addr();
        let tm_leader = self.zk.taskmanager().await?;
        let mut out: Vec<NodeInfo> = tablets
            .iter()
            .map(|t| NodeInfo::new(nid(&t.endpoint), tablet.clone()).alive(t.state == "kHealthy"))
            .collect();
        let mut nameservers = self.zk.nameservers().await?;
        {
            let mut known = self.nameservers.lock().unwrap_or_else(|e| e.into_inner());
            known.extend(nameservers.iter().cloned());
            nameservers = known.iter().cloned().collect();
        }
        out.extend(nameservers.into_iter().map(|n| {
            let is = leader.as_deref() == Some(n.as_str());
            NodeInfo::new(nid(&n), ns.clone()).leader(is)
        }));
        out.extend(
            self.others
                .apiservers
                .iter()
                .map(|a| NodeInfo::new(nid(a), api.clone())),
        );
        let tm_leader = tm_leader.and_then(|l| taskmanager_leader(&l, &self.others.taskmanagers));
        out.extend(self.others.taskmanagers.iter().map(|a| {
            let is = tm_leader == Some(a.as_str());
            NodeInfo::new(nid(a), tm.clone()).leader(is)
        }));
        Ok((out, tablets))
    }

    /// What keeps the cluster from full health, if anything. A tablet that is not healthy
    /// and holds no replica (decommissioned: the nameserver never forgets a tablet,
    /// `NameServerImpl::UpdateTablets`) does not; the plan warns of it.
    pub(crate) async fn unhealthy(&self) -> Result<Option<String>, OpenMldbError> {
        let tablets = self.tablets().await?.tablets;
        let tables = self.tables().await?;
        let holds = |e: &str| {
            tables
                .iter()
                .flat_map(|t| &t.table_partition)
                .any(|p| p.partition_meta.iter().any(|m| m.endpoint == e))
        };
        if let Some(t) = tablets
            .iter()
            .find(|t| t.state != "kHealthy" && holds(&t.endpoint))
        {
            return Ok(Some(format!("tablet {} is {}", t.endpoint, t.state)));
        }
        for t in &tables {
            for p in &t.table_partition {
                let leaders = p
                    .partition_meta
                    .iter()
                    .filter(|m| m.is_leader && m.is_alive)
                    .count();
                if leaders != 1 {
                    return Ok(Some(format!(
                        "{} partition {} has {leaders} alive leaders",
                        t.name, p.pid
                    )));
                }
                if let Some(m) = p.partition_meta.iter().find(|m| !m.is_alive) {
                    return Ok(Some(format!(
                        "{} partition {}: the replica on {} is not alive",
                        t.name, p.pid, m.endpoint
                    )));
                }
            }
        }
        if let Some(why) = self.unloaded_replicas(&tablets, &tables).await? {
            return Ok(Some(why));
        }
        let ops = self.ops(None).await?;
        // A failed op a later one on its partition made good (a retried move or recovery)
        // is history.
        let superseded = |f: &crate::api::OpStatus| {
            ops.iter().any(|o| {
                o.op_id > f.op_id
                    && o.status == "kDone"
                    && (o.db.as_str(), o.name.as_str(), o.pid)
                        == (f.db.as_str(), f.name.as_str(), f.pid)
            })
        };
        if let Some(o) = ops
            .iter()
            .find(|o| o.op_id > self.mark && o.status == "kFailed" && !superseded(o))
        {
            return Ok(Some(format!(
                "op {} ({}) on {} partition {} failed since the rollout began",
                o.op_id, o.op_type, o.name, o.pid
            )));
        }
        if let Some(o) = ops.iter().find(|o| !o.finished()) {
            return Ok(Some(format!(
                "op {} ({}) on {} partition {} is {}",
                o.op_id, o.op_type, o.name, o.pid, o.status
            )));
        }
        Ok(None)
    }

    /// A replica the nameserver records alive that its healthy tablet has not loaded (with
    /// auto_failover off a restarted tablet keeps every replica marked alive with nothing
    /// loaded, `NameServerImpl::OnTabletOnline` @v0.9.2), or an alive leader its tablet holds
    /// as a follower (a fence left up): the seed's `showtablestatus` check.
    async fn unloaded_replicas(
        &self,
        tablets: &[crate::api::TabletStatus],
        tables: &[crate::api::TableInfo],
    ) -> Result<Option<String>, OpenMldbError> {
        for tablet in tablets.iter().filter(|t| t.state == "kHealthy") {
            let e = tablet.endpoint.as_str();
            let on_it = tables.iter().any(|t| {
                t.table_partition.iter().any(|p| {
                    p.partition_meta
                        .iter()
                        .any(|m| m.endpoint == e && m.is_alive)
                })
            });
            if !on_it {
                continue;
            }
            let status: GetTableStatusResponse = self
                .endpoint(e)
                .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
                .await?;
            for t in tables {
                for p in &t.table_partition {
                    let Some(m) = p
                        .partition_meta
                        .iter()
                        .find(|m| m.endpoint == e && m.is_alive)
                    else {
                        continue;
                    };
                    let s = status
                        .all_table_status
                        .iter()
                        .find(|s| s.tid == t.tid && s.pid == p.pid);
                    match s {
                        Some(s) if !s.is_loaded() => {
                            return Ok(Some(format!(
                                "{}.{} partition {} on {e} is {}",
                                t.db, t.name, p.pid, s.state
                            )));
                        }
                        None => {
                            return Ok(Some(format!(
                                "{}.{} partition {} is alive in the nameserver's records but \
                                 not loaded on {e}",
                                t.db, t.name, p.pid
                            )));
                        }
                        Some(s) if m.is_leader && s.mode != "kTableLeader" => {
                            return Ok(Some(format!(
                                "{}.{} partition {}'s leader on {e} is fenced ({})",
                                t.db, t.name, p.pid, s.mode
                            )));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(None)
    }

    /// Whether every replica on `node` is alive to the nameserver and loaded on the tablet.
    pub(crate) async fn back(&self, node: &NodeId) -> Result<Option<String>, OpenMldbError> {
        let tables = self.tables().await?;
        let loaded: GetTableStatusResponse = match self
            .endpoint(node.as_str())
            .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Some(format!("{node} does not answer: {e}"))),
        };
        for t in &tables {
            for p in &t.table_partition {
                let Some(m) = p
                    .partition_meta
                    .iter()
                    .find(|m| m.endpoint == node.as_str())
                else {
                    continue;
                };
                if !m.is_alive {
                    return Ok(Some(format!(
                        "{} partition {} on {node} is not alive yet",
                        t.name, p.pid
                    )));
                }
                let on = loaded
                    .all_table_status
                    .iter()
                    .any(|s| s.tid == t.tid && s.pid == p.pid && s.is_loaded());
                if !on {
                    return Ok(Some(format!(
                        "{} partition {} is not loaded on {node} yet",
                        t.name, p.pid
                    )));
                }
            }
        }
        // Only the ops on the node's partitions: a user's DDL or deploy elsewhere is not its
        // concern.
        let mine = |o: &crate::api::OpStatus| {
            tables.iter().any(|t| {
                t.name == o.name
                    && t.db == o.db
                    && t.table_partition.iter().any(|p| {
                        p.pid == o.pid
                            && p.partition_meta.iter().any(|m| m.endpoint == node.as_str())
                    })
            })
        };
        let pending = self
            .ops(None)
            .await?
            .into_iter()
            .find(|o| !o.finished() && mine(o));
        Ok(pending.map(|o| {
            format!(
                "op {} ({}) on {} partition {} is {}",
                o.op_id, o.op_type, o.name, o.pid, o.status
            )
        }))
    }
}

impl<F: NodeFactory> OpenMldbCluster<F> {
    /// Runs fenced moves `(partition, from, to)`, two at a time on different nameserver
    /// queues (`pid % name_server_task_concurrency`), so that no fenced partition waits
    /// behind another's ChangeLeader. After each round the leaders it displaced, which the
    /// nameserver marks not alive (`NameServerImpl::UpdateLeaderInfo` @v0.9.2), are
    /// recovered as followers (RecoverTable, as pre-upgrade's `recovertable` after each
    /// `changeleader`, `tools/openmldb_ops.py`), and waited for before the next round
    /// fences: the recoveries share the queues (and their child ops run right behind them),
    /// so a partition fenced meanwhile would refuse writes for as long. Each partition thus
    /// runs a replica short only from its own move to its recovery. Returns, in order,
    /// whether each moved.
    ///
    /// # Errors
    /// A move fails (the recoveries of the round's other moves are still sent and waited
    /// for), or a recovery op fails or does not finish by the op deadline.
    pub(crate) async fn moves(
        &self,
        moves: &[(Part, String, Option<String>)],
    ) -> Result<Vec<bool>, OpenMldbError> {
        let mut by_queue: Vec<Vec<usize>> = vec![Vec::new(); QUEUES];
        for (i, (p, _, _)) in moves.iter().enumerate() {
            by_queue[p.3 as usize % QUEUES].push(i);
        }
        let mut out = vec![false; moves.len()];
        let rounds = by_queue.iter().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            let batch: Vec<usize> = by_queue
                .iter()
                .filter_map(|q| q.get(round).copied())
                .collect();
            let mut running = Vec::with_capacity(batch.len());
            for &i in &batch {
                let (p, from, to) = &moves[i];
                running.push(self.fenced_move(p, from, to.as_deref()));
            }
            let mut first_err = None;
            let mut displaced = Vec::new();
            for (i, r) in batch
                .into_iter()
                .zip(futures_util::future::join_all(running).await)
            {
                match r {
                    Ok(moved) => {
                        out[i] = moved;
                        if moved {
                            displaced.push((moves[i].0.clone(), moves[i].1.clone()));
                        }
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if !displaced.is_empty() {
                let mark = self.op_mark().await?;
                let sent = self.send_recover_tables(&displaced).await?;
                self.wait_for_ops(&sent, mark, "RecoverTable").await?;
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// The (db, table, tid, pid) of a topology partition id.
    pub(crate) async fn part_of(&self, id: &str) -> Result<Part, OpenMldbError> {
        for t in self.tables().await? {
            for p in &t.table_partition {
                if part_id(&t, p.pid) == id {
                    return Ok((t.db.clone(), t.name.clone(), t.tid, p.pid));
                }
            }
        }
        Err(OpenMldbError::Move {
            table: id.to_string(),
            pid: 0,
            reason: "no such partition".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::taskmanager_leader;

    #[test]
    fn a_wildcard_taskmanager_leader_is_matched_by_port() {
        let tms = vec!["10.0.0.5:9902".to_string(), "10.0.0.6:9903".to_string()];
        assert_eq!(
            taskmanager_leader("0.0.0.0:9903", &tms),
            Some("10.0.0.6:9903")
        );
        assert_eq!(
            taskmanager_leader("10.0.0.5:9902", &tms),
            Some("10.0.0.5:9902")
        );
        assert_eq!(taskmanager_leader("10.0.0.7:9903", &tms), None);
        let same_port = vec!["a:9902".to_string(), "b:9902".to_string()];
        assert_eq!(taskmanager_leader("0.0.0.0:9902", &same_port), None);
    }
}
