//! The core's [`Cluster`] over the nameserver and the tablets: topology, the `auto_failover`
//! knob, and each step with its probe (docs/procedures.md, docs/openmldb-interfaces.md).

use rollout_core::{
    ChangeError, Cluster, Health, HealthProbe, Knob, NodeId, NodeInfo, Partition, Procedure,
    Replica, ReplicaRole, TemporaryReplica, TemporaryReplicas, Topology, probe::probe_fn,
};

use crate::api::{ConfSetRequest, Pair, ReplicaNsRequest, Status};
use crate::cluster::{NodeFactory, OpenMldbCluster, OpenMldbNode, Part};
use crate::error::OpenMldbError;
use crate::version::{ServerVersion, check_upgrade};
use crate::view::{led_by, part_id};

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
        self.factory()
            .node(id)
            .map(|n| OpenMldbNode::new(n, crate::cluster::node_err))
    }

    /// A config change edits flag files (`*.flags`, `--key=value`) or the taskmanager's
    /// properties; the node's `apply` edits the file with [`crate::flags`], which refuses a
    /// key the file does not know.
    ///
    /// An upgrade must be an upstream path from the oldest version a server reported
    /// ([`check_upgrade`]): checked before anything is touched.
    fn check_change(&self, change: &rollout_core::Change) -> Result<(), ChangeError> {
        change.validate()?;
        if let rollout_core::Change::Upgrade { version } = change {
            let refused = |reason: String| ChangeError::Version {
                version: version.clone(),
                reason,
            };
            let to = ServerVersion::parse(version).ok_or_else(|| {
                refused(format!(
                    "{version:?} is not an OpenMLDB version (such as 0.9.2)"
                ))
            })?;
            match self.oldest_version() {
                Some(from) => check_upgrade(from, &to).map_err(refused)?,
                None => to.check().map_err(refused)?,
            }
        }
        if let rollout_core::Change::Config { edits } = change {
            for e in edits {
                let refused = |file: &str, reason: &str| ChangeError::Edit {
                    file: file.to_owned(),
                    reason: reason.to_owned(),
                };
                let file = match e {
                    rollout_core::ConfigEdit::Set { file, .. } => file,
                    rollout_core::ConfigEdit::Unset { file, .. } => {
                        return Err(refused(
                            file,
                            "OpenMLDB config edits set a flag; removing one is not supported",
                        ));
                    }
                };
                if !(file.ends_with(".flags") || file.ends_with(".properties")) {
                    return Err(refused(
                        file,
                        "OpenMLDB servers read conf/<component>.flags (the taskmanager \
                         conf/taskmanager.properties); give that file",
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

    /// Every partition the tablet leads moves, fenced, to a follower at its offset, at most
    /// `name_server_task_concurrency` at once; then each leader moved away, which the
    /// nameserver marks not alive, is recovered as a follower (pre-upgrade's `recovertable`),
    /// so that its partition keeps every replica until the tablet stops. The recoveries come
    /// after the moves, so that no fenced partition waits behind one on its op queue.
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
        // Each leader moved away is recovered as a follower as it goes; one an earlier,
        // interrupted drain moved away and left not alive is recovered too.
        self.moves(&moves).await?;
        let left = displaced_on(&self.tables().await?, node.as_str());
        self.recover_replicas(&left, node.as_str()).await
    }

    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            let tables = self.tables().await?;
            let left = led_by(&tables, node.as_str()).len();
            if left > 0 {
                return Ok(Health::Waiting(format!(
                    "{node} still leads {left} partition(s)"
                )));
            }
            // A leader moved away comes back as an alive follower before the stop.
            let dead = tables
                .iter()
                .flat_map(|t| t.table_partition.iter().map(move |p| (t, p)))
                .find(|(_, p)| {
                    p.partition_meta
                        .iter()
                        .any(|m| m.endpoint == node.as_str() && !m.is_alive)
                });
            Ok(match dead {
                Some((t, p)) => Health::Waiting(format!(
                    "{node}'s replica of {} partition {} is not alive again yet",
                    part_id(t, p.pid),
                    p.pid
                )),
                None => Health::Healthy,
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

    /// Forces a snapshot of every partition the tablet holds past its last one, so its
    /// restart loads it and replays little (see the `snapshot` module).
    async fn quiesce(&self, node: &NodeId) -> Result<(), OpenMldbError> {
        self.request_snapshots(node).await
    }

    fn quiesced<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = OpenMldbError> + 'a {
        probe_fn(move || async move {
            Ok(match self.snapshots_pending(node).await? {
                Some(why) => Health::Waiting(why),
                None => Health::Healthy,
            })
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

    /// `recoverdata` for the tablet (each replica it has not loaded marked not alive, then
    /// RecoverEndpoint over the nameserver's 8 queues, the ops waited for by id; see the
    /// `recover` module), then its former leaderships back (fenced, each once its replica
    /// has the leader's offset), then the leaders displaced by them recovered as followers.
    async fn rejoin(&self, node: &NodeId) -> Result<(), OpenMldbError> {
        let tablets = self.tablets().await?.tablets;
        if !self.is_tablet(&tablets, node) {
            return Ok(());
        }
        // A drain that failed or was interrupted after a fence (the node never stopped).
        self.lift_stale_fences(node.as_str()).await?;
        self.recover_unloaded(node.as_str()).await?;
        if let Some(why) = self.back(node).await? {
            return Err(OpenMldbError::Move {
                table: String::new(),
                pid: 0,
                reason: format!("{node} did not come back: {why}"),
            });
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
            let now = crate::fence::partition(&tables, &p)
                .and_then(|x| x.partition_meta.iter().find(|m| m.is_leader && m.is_alive))
                .map(|m| m.endpoint.clone());
            if let Some(now) = now.filter(|n| n != node.as_str()) {
                back.push((p, now, Some(node.to_string())));
            }
        }
        // Each displaced leader is recovered as a follower as it goes.
        self.moves(&back).await?;
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
        rollout_core::probe::probes::always()
    }

    /// Lifts fences left by interrupted moves, and recovers tablets that registered again
    /// while `auto_failover` was off (nothing else reloads them).
    async fn heal(&self) -> Result<(), OpenMldbError> {
        let tablets = self.tablets().await?.tablets;
        let healthy: Vec<String> = tablets
            .iter()
            .filter(|t| t.state == "kHealthy")
            .map(|t| t.endpoint.clone())
            .collect();
        self.release_stray_holds(&healthy).await?;
        for t in &healthy {
            self.lift_stale_fences(t).await?;
        }
        if self.auto_failover().await? != "false" {
            return Ok(());
        }
        for t in &healthy {
            self.recover_unloaded(t).await?;
        }
        Ok(())
    }

    fn data_down_limit(&self, _topology: &Topology) -> Option<(usize, String)> {
        Some((
            1,
            "OpenMLDB tablets go strictly one at a time (docs/en/maintain/upgrade.md)".into(),
        ))
    }

    fn temporary_replicas(&self) -> Option<&impl TemporaryReplicas<Error = OpenMldbError>> {
        Some(self)
    }

    fn classify(&self, error: &OpenMldbError) -> rollout_core::ErrorClass {
        error.class()
    }
}

/// The partitions whose replica on `node` is flagged leader but not alive while another
/// replica leads: a leader moved away (`NameServerImpl::UpdateLeaderInfo` keeps its flag)
/// and not recovered yet.
fn displaced_on(tables: &[crate::api::TableInfo], node: &str) -> Vec<Part> {
    let mut out = Vec::new();
    for t in tables {
        for p in &t.table_partition {
            let mine = p
                .partition_meta
                .iter()
                .any(|m| m.endpoint == node && m.is_leader && !m.is_alive);
            let led = p
                .partition_meta
                .iter()
                .any(|m| m.endpoint != node && m.is_leader && m.is_alive);
            if mine && led {
                out.push((t.db.clone(), t.name.clone(), t.tid, p.pid));
            }
        }
    }
    out
}

impl<F: NodeFactory> TemporaryReplicas for OpenMldbCluster<F> {
    type Error = OpenMldbError;

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
        // The nameserver adds the replica not alive and marks it alive only once its binlog
        // check passed and its last task ran (`AddTableInfo`, `CheckBinlogSyncProgress`,
        // `UpdatePartitionStatus`): alive in the records, and at the leader's offset.
        probe_fn(move || async move {
            let part = self.part_of(&t.partition).await?;
            let alive = crate::fence::partition(&self.tables().await?, &part).is_some_and(|p| {
                p.partition_meta
                    .iter()
                    .any(|m| m.endpoint == t.to.as_str() && m.is_alive)
            });
            let leader = self.offset_on(t.from.as_str(), part.2, part.3).await?;
            let mine = self.offset_on(t.to.as_str(), part.2, part.3).await?;
            Ok(match (alive, leader, mine) {
                (true, Some(l), Some(m)) if m >= l => Health::Healthy,
                _ => Health::Waiting(format!(
                    "the temporary replica of {} on {} is {} at {mine:?}, the leader at {leader:?}",
                    t.partition,
                    t.to,
                    if alive { "alive" } else { "not alive yet" }
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
        // DelReplicaNS refuses a replica still flagged leader (102): one moved away, now or
        // by an interrupted run, is recovered as a follower first, as post-upgrade does
        // before its `delreplica`.
        let tables = self.tables().await?;
        if displaced_on(&tables, t.to.as_str())
            .iter()
            .any(|p| p.2 == part.2 && p.3 == part.3)
        {
            self.recover_replicas(std::slice::from_ref(&part), t.to.as_str())
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
}
