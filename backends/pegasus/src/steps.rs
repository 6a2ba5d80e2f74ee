//! The core's [`Cluster`] over the meta servers: topology, knobs, and each step with its
//! probe (see the `cluster` module for the rules they follow).

use std::net::SocketAddr;

use rollout_core::{
    Cluster, ErrorClass, Health, HealthProbe, Knob, NodeId, NodeInfo, Partition, Procedure,
    Replica, ReplicaRole, Topology, probe_fn,
};

use crate::answers::parse_answer;
use crate::cluster::{NodeFactory, PegasusCluster, PegasusError, PegasusNode, addr};
use crate::messages::{
    Empty, I32Request, I32Response, ListResponse, NodeInfo as WireNode, meta_level, node_status,
    rpc,
};
use crate::meta::MetaError;
use crate::types::{RpcAddress, v4};

/// The knobs of the high-availability procedure (shared/reference/pegasus.md §6): the meta
/// level, the maintenance window, flow control (without which a count of 0 is a no-op) and
/// the add-secondary count, 0 while a wave restarts.
fn knobs(procedure: Procedure) -> Vec<Knob> {
    match procedure {
        Procedure::HighAvailability => vec![
            Knob::rollout("meta_level", "steady"),
            Knob::rollout("meta.lb.assign_delay_ms", "3600000").blocks_healing(),
            Knob::rollout("meta.lb.add_secondary_enable_flow_control", "true"),
            Knob::wave("meta.lb.add_secondary_max_count_for_one_node", "0")
                .then("100")
                .blocks_healing(),
        ],
        _ => vec![Knob::rollout("meta_level", "steady")],
    }
}

impl<F: NodeFactory> Cluster for PegasusCluster<F>
where
    F::Node: 'static,
{
    type Node = PegasusNode<F::Node>;
    type Error = PegasusError;

    fn name(&self) -> &str {
        self.name()
    }

    async fn topology(&self) -> Result<Topology, PegasusError> {
        let snap = self.snapshot().await?;
        let nodes = self.infos(&snap);
        let mut partitions = Vec::new();
        for (app, q) in &snap.apps {
            for p in &q.partitions {
                let mut replicas = Vec::new();
                if let Some(a) = p.primary.0 {
                    replicas.push(
                        Replica::new(a.to_string(), ReplicaRole::Primary)
                            .alive(snap.alive(&p.primary)),
                    );
                }
                for s in &p.secondaries {
                    if let Some(a) = s.0 {
                        replicas.push(
                            Replica::new(a.to_string(), ReplicaRole::Secondary)
                                .alive(snap.alive(s)),
                        );
                    }
                }
                partitions.push(
                    Partition::new(
                        format!("{}.{}", app.app_id, p.pid.partition_index),
                        p.max_replica_count.max(0) as u32,
                        replicas,
                    )
                    .table(app.app_name.clone()),
                );
            }
        }
        // A write needs the primary and a secondary (mutation_2pc_min_replica_count).
        Ok(Topology::new(nodes, partitions).min_serving(2))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, PegasusError> {
        let nodes: ListResponse<WireNode> = self
            .meta()
            .call(rpc::LIST_NODES, &I32Request(node_status::INVALID))
            .await?;
        Ok(self.infos_of(&nodes.infos))
    }

    fn node(&self, id: &NodeId) -> Option<Self::Node> {
        self.factory().node(id).map(PegasusNode::new)
    }

    /// A config change edits `config.ini` keys given as `SECTION.KEY` (the node's `apply`
    /// edits the file with [`crate::ini`], which refuses a section or key the file lacks).
    fn check_change(&self, change: &rollout_core::Change) -> Result<(), String> {
        change.validate()?;
        if let rollout_core::Change::Config { edits } = change {
            for e in edits {
                let rollout_core::ConfigEdit::Set { file, key, .. } = e else {
                    return Err(
                        "Pegasus config edits set a key; removing one is not supported \
                                (set it to its default instead)"
                            .into(),
                    );
                };
                if !file.ends_with("config.ini") {
                    return Err(format!(
                        "{file}: Pegasus servers read config.ini; give its path"
                    ));
                }
                crate::ini::split_key(key).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        knobs(procedure)
    }

    async fn read_knob(&self, name: &str) -> Result<String, PegasusError> {
        if name == "meta_level" {
            let r: I32Response = self
                .meta()
                .call(rpc::CONTROL_META, &I32Request(meta_level::INVALID))
                .await?;
            return meta_level::name(r.value)
                .map(str::to_string)
                .ok_or_else(|| PegasusError::UnknownKnob(format!("meta level {}", r.value)));
        }
        let leader = self.leader().await?;
        let answer = self.command_ok(leader, name, &[]).await?;
        parse_answer(&answer).ok_or(PegasusError::Command {
            server: leader,
            cmd: name.to_string(),
            answer,
        })
    }

    async fn write_knob(&self, name: &str, value: &str) -> Result<(), PegasusError> {
        if name == "meta_level" {
            let level =
                meta_level::parse(value).ok_or_else(|| PegasusError::UnknownKnob(value.into()))?;
            let _: I32Response = self
                .meta()
                .call(rpc::CONTROL_META, &I32Request(level))
                .await?;
            return Ok(());
        }
        // Every meta keeps its own copy; the leader's is the one that acts, and a standby
        // that becomes leader then already holds the value.
        let leader = self.leader().await?;
        self.command_ok(leader, name, &[value]).await?;
        for m in self.meta().addresses().into_iter().filter(|&m| m != leader) {
            if let Err(e) = self.command_ok(m, name, &[value]).await {
                tracing::debug!(meta = %m, error = %e, "a standby did not take the knob");
            }
        }
        Ok(())
    }

    async fn drain(&self, node: &NodeId) -> Result<(), PegasusError> {
        self.note_start_time(node).await;
        if self.is_meta(node) || self.is_collector(node) {
            return Ok(());
        }
        self.propose_drain(node).await.map(drop)
    }

    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = PegasusError> + 'a {
        probe_fn(move || async move {
            if self.is_meta(node) || self.is_collector(node) {
                return Ok(Health::Healthy);
            }
            let left = self.holding(node).await?;
            if left == 0 {
                return Ok(Health::Healthy);
            }
            // Proposals run at the next lb tick and a stale one is dropped silently:
            // propose again once one tick has passed without the node leaving.
            if self.repropose_due(node) {
                self.propose_drain(node).await?;
            }
            Ok(Health::Waiting(format!(
                "{node} is still primary or secondary of {left} partition(s)"
            )))
        })
    }

    async fn quiesce(&self, node: &NodeId) -> Result<(), PegasusError> {
        let a = addr(node)?;
        for (g, _) in self.replicas_of(node).await? {
            let (app, pidx) = (g.app_id.to_string(), g.partition_index.to_string());
            // A replica closed already answers ERR_OBJECT_NOT_FOUND: nothing to do.
            let answer = self
                .meta()
                .command(a, "replica.kill_partition", &[&app, &pidx])
                .await?;
            if answer != "ERR_OK" && answer != "ERR_OBJECT_NOT_FOUND" {
                return Err(PegasusError::Command {
                    server: a,
                    cmd: format!("replica.kill_partition {app} {pidx}"),
                    answer,
                });
            }
        }
        Ok(())
    }

    fn quiesced<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = PegasusError> + 'a {
        probe_fn(move || async move {
            let open = self.open_count(node).await?;
            Ok(if open == 0 {
                Health::Healthy
            } else {
                Health::Waiting(format!(
                    "{node} still has {open} replica(s) open, opening or closing"
                ))
            })
        })
    }

    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = PegasusError> + 'a {
        probe_fn(move || async move {
            let a = addr(node)?;
            if let Err(e) = self.meta().command(a, "server-info", &[]).await {
                return Ok(Health::Waiting(format!("{node} does not answer yet: {e}")));
            }
            if let Some(before) = self.same_start_time(node).await {
                return Ok(Health::Waiting(format!(
                    "{node} answers, but its /recentStartTime is still {before:?} (from before its stop)"
                )));
            }
            if self.is_collector(node) {
                return Ok(Health::Healthy);
            }
            if self.is_meta(node) {
                // A leader answers, and every replica server beacons to it.
                let nodes: ListResponse<WireNode> = match self
                    .meta()
                    .call(rpc::LIST_NODES, &I32Request(node_status::INVALID))
                    .await
                {
                    Ok(n) => n,
                    Err(e) => return Ok(Health::Waiting(format!("no meta leader yet: {e}"))),
                };
                return Ok(
                    match nodes.infos.iter().find(|n| n.status != node_status::ALIVE) {
                        Some(n) => {
                            Health::Waiting(format!("{} is not ALIVE to the meta leader", n.node))
                        }
                        None => Health::Healthy,
                    },
                );
            }
            Ok(if self.alive(node).await? {
                Health::Healthy
            } else {
                Health::Waiting(format!("the meta does not see {node} ALIVE yet"))
            })
        })
    }

    async fn rejoin(&self, _node: &NodeId) -> Result<(), PegasusError> {
        // Add-secondary back on (the wave's knob) is all the meta needs to cure it.
        Ok(())
    }

    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = PegasusError> + 'a {
        probe_fn(move || async move {
            if self.is_meta(node) || self.is_collector(node) {
                return Ok(Health::Healthy);
            }
            let snap = self.snapshot().await?;
            Ok(match snap.unhealthy() {
                Some(why) => Health::Waiting(why),
                None => Health::Healthy,
            })
        })
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = PegasusError> + '_ {
        probe_fn(move || async move {
            let snap = match self.snapshot().await {
                Ok(s) => s,
                Err(PegasusError::Meta(MetaError::NoLeader { last, .. })) => {
                    return Ok(Health::Waiting(format!("no meta leader answers: {last}")));
                }
                Err(e) => return Err(e),
            };
            if let Some(n) = snap.nodes.iter().find(|n| n.status != node_status::ALIVE) {
                return Ok(Health::Waiting(format!(
                    "replica server {} is not ALIVE",
                    n.node
                )));
            }
            if snap.frozen() {
                return Ok(Health::Waiting(
                    "the meta is freezed: too few replica servers alive".into(),
                ));
            }
            Ok(match snap.unhealthy() {
                Some(why) => Health::Waiting(why),
                None => Health::Healthy,
            })
        })
    }

    fn safe_to_stop<'a>(
        &'a self,
        _node: &'a NodeId,
    ) -> impl HealthProbe<Error = PegasusError> + 'a {
        probe_fn(move || async move {
            let info: crate::messages::ClusterInfoResponse =
                match self.meta().call(rpc::CLUSTER_INFO, &Empty).await {
                    Ok(i) => i,
                    Err(e) => return Ok(Health::Waiting(format!("no meta leader answers: {e}"))),
                };
            Ok(if info.get("meta_function_level") == Some("freezed") {
                Health::Waiting("the meta is freezed".into())
            } else {
                Health::Healthy
            })
        })
    }

    fn settle(&self, node: &NodeId) -> std::time::Duration {
        if self.is_meta(node) {
            self.timing.meta_settle
        } else {
            std::time::Duration::ZERO
        }
    }

    fn data_down_limit(&self, topology: &Topology) -> Option<(usize, String)> {
        let all = topology
            .nodes
            .iter()
            .filter(|n| n.role.kind == rollout_core::RoleKind::Data)
            .count();
        let (min_live, pct, source) = self.freeze();
        let need = min_live.max((all * pct as usize).div_ceil(100));
        let most = all.saturating_sub(need);
        let why = format!(
            "the meta freezes with fewer than {need} of {all} replica servers alive \
             (min_live_node_count_for_unfreeze {min_live}, node_live_percentage_threshold_for_update {pct}, {source})"
        );
        Some(if most == 0 {
            (1, format!("{why}; even one down freezes it"))
        } else {
            (most, why)
        })
    }

    fn classify(&self, error: &PegasusError) -> ErrorClass {
        match error {
            PegasusError::Meta(MetaError::NoLeader { .. }) => ErrorClass::NotSafeYet,
            PegasusError::Meta(MetaError::Call(e)) | PegasusError::Call(e) if e.is_transient() => {
                ErrorClass::Transient
            }
            PegasusError::Meta(MetaError::App { err, .. })
                if err.as_str().starts_with("ERR_BUSY") =>
            {
                ErrorClass::NotSafeYet
            }
            _ => ErrorClass::Fatal,
        }
    }
}

impl<F: NodeFactory> PegasusCluster<F> {
    /// The meta leader's address, confirmed by a call that only the leader answers (the
    /// remembered one may have lost the role while its process stayed up).
    async fn leader(&self) -> Result<SocketAddr, PegasusError> {
        let _: crate::messages::ClusterInfoResponse =
            self.meta().call(rpc::CLUSTER_INFO, &Empty).await?;
        self.meta().leader().ok_or_else(|| {
            PegasusError::Meta(MetaError::NoLeader {
                tried: String::new(),
                last: "no leader after a successful call".into(),
            })
        })
    }

    /// Whether the meta counts `node` ALIVE.
    async fn alive(&self, node: &NodeId) -> Result<bool, PegasusError> {
        let me = v4(addr(node)?).map(RpcAddress::new).unwrap_or_default();
        let nodes: ListResponse<WireNode> = self
            .meta()
            .call(rpc::LIST_NODES, &I32Request(node_status::INVALID))
            .await?;
        Ok(nodes
            .infos
            .iter()
            .any(|n| n.node == me && n.status == node_status::ALIVE))
    }
}
