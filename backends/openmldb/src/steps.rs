//! The core's [`Cluster`] over the nameserver and the tablets: topology, the `auto_failover`
//! knob, and each step with its probe (shared/reference/openmldb.md §2, §6.2, §8).

use rollout_core::{
    Cluster, Health, HealthProbe, Knob, NodeId, NodeInfo, Partition, Procedure, Replica,
    ReplicaRole, TemporaryReplica, Topology, probe_fn,
};

use crate::api::{
    ConfSetRequest, GetTableStatusResponse, Pair, RecoverEndpointRequest, ReplicaNsRequest, Status,
};
use crate::cluster::{NodeFactory, OpenMldbCluster, OpenMldbNode};
use crate::error::OpenMldbError;
use crate::fence::Part;
use crate::view::{led_by, part_id};

/// RecoverEndpoint's spread (`name_server_task_max_concurrency`).
const MAX_QUEUES: u32 = 8;

impl<F: NodeFactory> Cluster for OpenMldbCluster<F>
where
    F::Node: 'static,
{
    type Node = OpenMldbNode<F::Node>;
    type Error = OpenMldbError;

    fn name(&self) -> &str {
        self.name()
    }

    async fn topology(&self) -> Result<Topology, OpenMldbError> {
        let (nodes, tablets) = self.infos().await?;
        let healthy = |e: &str| {
            tablets
                .iter()
                .any(|t| t.endpoint == e && t.state == "kHealthy")
        };
        let mut partitions = Vec::new();
        for t in self.tables().await? {
            for p in &t.table_partition {
                let replicas = p
                    .partition_meta
                    .iter()
                    .map(|m| {
                        let role = if m.is_leader && m.is_alive {
                            ReplicaRole::Primary
                        } else {
                            ReplicaRole::Secondary
                        };
                        Replica::new(m.endpoint.clone(), role)
                            .alive(m.is_alive && healthy(&m.endpoint))
                    })
                    .collect();
                partitions.push(
                    Partition::new(part_id(&t, p.pid), t.replica_num.max(1), replicas)
                        .table(t.name.clone()),
                );
            }
        }
        Ok(Topology::new(nodes, partitions))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, OpenMldbError> {
        Ok(self.infos().await?.0)
    }

    fn node(&self, id: &NodeId) -> Option<Self::Node> {
        self.factory().node(id).map(OpenMldbNode::new)
    }

    /// A config change edits flag files (`*.flags`, `--key=value`) or the taskmanager's
    /// properties; the node's `apply` edits the file with [`crate::flags`], which refuses a
    /// key the file does not know.
    fn check_change(&self, change: &rollout_core::Change) -> Result<(), String> {
        change.validate()?;
        if let rollout_core::Change::Config { edits } = change {
            for e in edits {
                let rollout_core::ConfigEdit::Set { file, .. } = e else {
                    return Err(
                        "OpenMLDB config edits set a flag; removing one is not supported".into(),
                    );
                };
                if !(file.ends_with(".flags") || file.ends_with(".properties")) {
                    return Err(format!(
                        "{file}: OpenMLDB servers read conf/<component>.flags (the taskmanager \
                         conf/taskmanager.properties); give that file"
                    ));
                }
            }
        }
        Ok(())
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        match procedure {
            Procedure::HighAvailability => {
                vec![Knob::rollout("auto_failover", "false").blocks_healing()]
            }
            _ => Vec::new(),
        }
    }

    async fn read_knob(&self, name: &str) -> Result<String, OpenMldbError> {
        if name != "auto_failover" {
            return Err(OpenMldbError::Move {
                table: String::new(),
                pid: 0,
                reason: format!("no knob {name}: OpenMLDB's nameserver has only auto_failover"),
            });
        }
        self.auto_failover().await
    }

    async fn write_knob(&self, name: &str, value: &str) -> Result<(), OpenMldbError> {
        if name != "auto_failover" {
            return Err(OpenMldbError::Move {
                table: String::new(),
                pid: 0,
                reason: format!("no knob {name}: OpenMLDB's nameserver has only auto_failover"),
            });
        }
        let _: Status = self
            .ns(
                "ConfSet",
                &ConfSetRequest {
                    conf: Pair {
                        key: name.into(),
                        value: value.into(),
                    },
                },
            )
            .await?;
        Ok(())
    }

    /// Every partition the tablet leads moves, fenced, to a follower at its offset; at most
    /// `name_server_task_concurrency` at once.
    async fn drain(&self, node: &NodeId) -> Result<(), OpenMldbError> {
        let tablets = self.tablets().await?.tablets;
        if !self.is_tablet(&tablets, node) {
            return Ok(());
        }
        let led = led_by(&self.tables().await?, node.as_str());
        self.led
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.clone())
            .or_default()
            .extend(led.iter().cloned());
        let moves: Vec<(Part, String, Option<String>)> = led
            .into_iter()
            .map(|p| (p, node.to_string(), None))
            .collect();
        self.moves(&moves).await.map(drop)
    }

    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let left = led_by(&self.tables().await?, node.as_str()).len();
            Ok(if left == 0 {
                Health::Healthy
            } else {
                Health::Waiting(format!("{node} still leads {left} partition(s)"))
            })
        })
    }

    fn stopped<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let tablets = self.tablets().await?.tablets;
            Ok(match tablets.iter().find(|t| t.endpoint == node.as_str()) {
                Some(t) if t.state == "kHealthy" => Health::Waiting(format!(
                    "{node} is still kHealthy: its ZooKeeper node has not expired"
                )),
                _ => Health::Healthy,
            })
        })
    }

    /// Forces a snapshot of every partition the tablet holds, so its restart loads it and
    /// takes the cheap recovery path.
    async fn quiesce(&self, node: &NodeId) -> Result<(), OpenMldbError> {
        let e = self.endpoint(node.as_str());
        let r: GetTableStatusResponse = e
            .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
            .await?;
        for s in &r.all_table_status {
            let _: Status = e
                .call(
                    "TabletServer",
                    "MakeSnapshot",
                    &serde_json::json!({"tid": s.tid, "pid": s.pid, "offset": s.offset}),
                )
                .await?;
        }
        Ok(())
    }

    fn quiesced<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let r: GetTableStatusResponse = self
                .endpoint(node.as_str())
                .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
                .await?;
            Ok(
                match r
                    .all_table_status
                    .iter()
                    .filter(|s| s.state == "kMakingSnapshot")
                    .count()
                {
                    0 => Health::Healthy,
                    n => Health::Waiting(format!("{node} is still making {n} snapshot(s)")),
                },
            )
        })
    }

    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let tablets = self.tablets().await?.tablets;
            if let Some(t) = tablets.iter().find(|t| t.endpoint == node.as_str()) {
                return Ok(if t.state == "kHealthy" {
                    Health::Healthy
                } else {
                    Health::Waiting(format!("tablet {node} is {}", t.state))
                });
            }
            // A nameserver: registered again, and a leader answers.
            let is_ns = self
                .nameservers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(node.as_str());
            if is_ns {
                if !self
                    .zk
                    .nameservers()
                    .await?
                    .iter()
                    .any(|n| n == node.as_str())
                {
                    return Ok(Health::Waiting(format!(
                        "nameserver {node} has not registered in ZooKeeper yet"
                    )));
                }
                return Ok(match self.auto_failover().await {
                    Ok(_) => Health::Healthy,
                    Err(e) => Health::Waiting(format!("no nameserver leader answers yet: {e}")),
                });
            }
            // Any other server: it answers on its port.
            Ok(match tokio::net::TcpStream::connect(node.as_str()).await {
                Ok(_) => Health::Healthy,
                Err(e) => Health::Waiting(format!("{node} does not answer yet: {e}")),
            })
        })
    }

    /// RecoverEndpoint over the nameserver's 8 queues, then the tablet's former leaderships
    /// back (fenced, each once its replica has the leader's offset), then the displaced
    /// leaders recovered as followers.
    async fn rejoin(&self, node: &NodeId) -> Result<(), OpenMldbError> {
        let tablets = self.tablets().await?.tablets;
        if !self.is_tablet(&tablets, node) {
            return Ok(());
        }
        // A drain that failed or was interrupted after a fence (the node never stopped).
        self.lift_stale_fences(node.as_str()).await?;
        let _: Status = self
            .ns(
                "RecoverEndpoint",
                &RecoverEndpointRequest {
                    endpoint: node.to_string(),
                    need_restore: false,
                    concurrency: MAX_QUEUES,
                },
            )
            .await?;
        let deadline = tokio::time::Instant::now() + self.timing.op;
        while let Some(why) = self.back(node).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(OpenMldbError::Move {
                    table: String::new(),
                    pid: 0,
                    reason: format!(
                        "{node} did not come back within {} s: {why}",
                        self.timing.op.as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.timing.poll).await;
        }
        let led = self
            .led
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node)
            .unwrap_or_default();
        let tables = self.tables().await?;
        let mut back = Vec::new();
        for p in led {
            let now = tables
                .iter()
                .find(|t| t.name == p.1 && t.db == p.0)
                .and_then(|t| t.table_partition.iter().find(|x| x.pid == p.3))
                .and_then(|x| x.partition_meta.iter().find(|m| m.is_leader && m.is_alive))
                .map(|m| m.endpoint.clone());
            if let Some(now) = now.filter(|n| n != node.as_str()) {
                back.push((p, now, Some(node.to_string())));
            }
        }
        let displaced: std::collections::BTreeSet<String> = self
            .moves(&back)
            .await?
            .into_iter()
            .zip(&back)
            .filter(|(moved, _)| *moved)
            .map(|(_, (_, from, _))| from.clone())
            .collect();
        for d in displaced {
            let _: Status = self
                .ns(
                    "RecoverEndpoint",
                    &RecoverEndpointRequest {
                        endpoint: d,
                        need_restore: false,
                        concurrency: MAX_QUEUES,
                    },
                )
                .await?;
        }
        Ok(())
    }

    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let tablets = self.tablets().await?.tablets;
            if !self.is_tablet(&tablets, node) {
                return Ok(Health::Healthy);
            }
            Ok(match self.back(node).await? {
                Some(why) => Health::Waiting(why),
                None => Health::Healthy,
            })
        })
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = OpenMldbError> + '_ {
        probe_fn(move || async move {
            Ok(match self.unhealthy().await? {
                Some(why) => Health::Waiting(why),
                None => Health::Healthy,
            })
        })
    }

    fn safe_to_stop<'a>(
        &'a self,
        _node: &'a NodeId,
    ) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        rollout_core::probes::always()
    }

    /// Lifts fences left by interrupted moves, and recovers tablets that registered again
    /// while `auto_failover` was off.
    async fn heal(&self) -> Result<(), OpenMldbError> {
        let tablets = self.tablets().await?.tablets;
        for t in tablets.iter().filter(|t| t.state == "kHealthy") {
            self.lift_stale_fences(&t.endpoint).await?;
        }
        let tables = self.tables().await?;
        for t in tablets.iter().filter(|t| t.state == "kHealthy") {
            let dead = tables.iter().flat_map(|x| &x.table_partition).any(|p| {
                p.partition_meta
                    .iter()
                    .any(|m| m.endpoint == t.endpoint && !m.is_alive)
            });
            if dead && self.auto_failover().await? == "false" {
                let _: Status = self
                    .ns(
                        "RecoverEndpoint",
                        &RecoverEndpointRequest {
                            endpoint: t.endpoint.clone(),
                            need_restore: false,
                            concurrency: MAX_QUEUES,
                        },
                    )
                    .await?;
            }
        }
        Ok(())
    }

    fn data_down_limit(&self, _topology: &Topology) -> Option<(usize, String)> {
        Some((
            1,
            "OpenMLDB tablets go strictly one at a time (docs/en/maintain/upgrade.md)".into(),
        ))
    }

    fn supports_temporary_replicas(&self) -> bool {
        true
    }

    async fn add_temporary_replica(&self, t: &TemporaryReplica) -> Result<(), OpenMldbError> {
        let (db, name, _, pid) = self.part_of(&t.partition).await?;
        let _: Status = self
            .ns(
                "AddReplicaNS",
                &ReplicaNsRequest {
                    name,
                    pid,
                    endpoint: t.to.to_string(),
                    db,
                },
            )
            .await?;
        Ok(())
    }

    fn temporary_replica_ready<'a>(
        &'a self,
        t: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let (_, _, tid, pid) = self.part_of(&t.partition).await?;
            let leader = self.offset_on(t.from.as_str(), tid, pid).await?;
            let mine = self.offset_on(t.to.as_str(), tid, pid).await?;
            Ok(match (leader, mine) {
                (Some(l), Some(m)) if m >= l => Health::Healthy,
                _ => Health::Waiting(format!(
                    "the temporary replica of {} on {} is at {mine:?}, the leader at {leader:?}",
                    t.partition, t.to
                )),
            })
        })
    }

    async fn remove_temporary_replica(&self, t: &TemporaryReplica) -> Result<(), OpenMldbError> {
        let part = self.part_of(&t.partition).await?;
        let tables = self.tables().await?;
        let leads = led_by(&tables, t.to.as_str())
            .iter()
            .any(|p| p.2 == part.2 && p.3 == part.3);
        if leads {
            self.fenced_move(&part, t.to.as_str(), Some(t.from.as_str()))
                .await?;
        }
        let (db, name, _, pid) = part;
        match self
            .ns::<_, Status>(
                "DelReplicaNS",
                &ReplicaNsRequest {
                    name,
                    pid,
                    endpoint: t.to.to_string(),
                    db,
                },
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone already (a resumed removal).
            Err(OpenMldbError::App { code: 308, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn temporary_replica_removed<'a>(
        &'a self,
        t: &'a TemporaryReplica,
    ) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let (db, name, _, pid) = self.part_of(&t.partition).await?;
            let there = self.tables().await?.iter().any(|x| {
                x.name == name
                    && x.db == db
                    && x.table_partition.iter().any(|p| {
                        p.pid == pid && p.partition_meta.iter().any(|m| m.endpoint == t.to.as_str())
                    })
            });
            Ok(if there {
                Health::Waiting(format!(
                    "the temporary replica of {} on {} is still there",
                    t.partition, t.to
                ))
            } else {
                Health::Healthy
            })
        })
    }

    fn classify(&self, error: &OpenMldbError) -> rollout_core::ErrorClass {
        error.class()
    }
}
