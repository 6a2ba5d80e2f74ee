//! The core's [`Cluster`] over the meta servers: topology, knobs, and each step with its
//! probe (see the `cluster` module for the rules they follow).

use rollout_core::{
    ChangeError, Cluster, ErrorClass, Health, HealthProbe, Knob, NodeId, NodeInfo, Partition,
    Procedure, Replica, ReplicaRole, Topology, probe::probe_fn,
};

use crate::cluster::{NodeFactory, PegasusCluster, PegasusNode, addr};
use crate::error::PegasusError;
use crate::messages::{Empty, I32Request, ListResponse, NodeInfo as WireNode, node_status, rpc};
use crate::meta::MetaError;
use crate::servers::OpenReplicas;
use crate::transport::CallError;
use crate::types::{RpcAddress, v4};
use crate::version::{ServerVersion, check_upgrade};

/// The knobs of the high-availability procedure (docs/pegasus-wire.md): the meta
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
        let nodes = self.infos_of(&snap.nodes);
        let mut partitions = Vec::new();
        for (app, q) in &snap.apps {
            for p in &q.partitions {
                // Members named as the node list names them (by host on master).
                let replicas = snap
                    .members(p)
                    .into_iter()
                    .filter_map(|m| {
                        let role = if m.primary {
                            ReplicaRole::Primary
                        } else {
                            ReplicaRole::Secondary
                        };
                        m.id.0
                            .map(|a| Replica::new(a.to_string(), role).alive(m.alive))
                    })
                    .collect();
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
        self.factory()
            .node(id)
            .map(|n| PegasusNode::new(n, crate::cluster::node_err))
    }

    /// A config change edits `config.ini` keys given as `SECTION.KEY` (the node's `apply`
    /// edits the file with [`crate::ini`], which refuses a section or key the file lacks).
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
                    "{version:?} is not a Pegasus version (such as 2.5.0)"
                ))
            })?;
            if let Some(from) = self.oldest_version() {
                check_upgrade(from, &to).map_err(refused)?;
            } else {
                to.line().map_err(refused)?;
            }
        }
        if let rollout_core::Change::Config { edits } = change {
            for e in edits {
                let refused = |file: &str, reason: String| ChangeError::Edit {
                    file: file.to_owned(),
                    reason,
                };
                let (file, key) = match e {
                    rollout_core::ConfigEdit::Set { file, key, .. } => (file, key),
                    rollout_core::ConfigEdit::Unset { file, .. } => {
                        return Err(refused(
                            file,
                            "Pegasus config edits set a key; removing one is not supported \
                             (set it to its default instead)"
                                .into(),
                        ));
                    }
                };
                if !file.ends_with("config.ini") {
                    return Err(refused(
                        file,
                        "Pegasus servers read config.ini; give its path".into(),
                    ));
                }
                crate::ini::split_key(key).map_err(|e| refused(file, e.to_string()))?;
            }
        }
        Ok(())
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        knobs(procedure)
    }

    async fn read_knob(&self, name: &str) -> Result<String, PegasusError> {
        self.knob_value(name).await
    }

    async fn write_knob(&self, name: &str, value: &str) -> Result<(), PegasusError> {
        self.set_knob(name, value).await
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
            Ok(match self.open_replicas(node).await? {
                OpenReplicas::Count(0) => Health::Healthy,
                OpenReplicas::Count(open) => Health::Waiting(format!(
                    "{node} still has {open} replica(s) open, opening or closing"
                )),
                OpenReplicas::NotYet => {
                    Health::Waiting(format!("{node} has taken no perf-counter snapshot yet"))
                }
            })
        })
    }

    /// A collector is ready once its HTTP server answers `/version` and its
    /// `/recentStartTime` moved: it never registers the CLI RPC handler (only
    /// `meta_service::start` and `replica_stub::initialize` call
    /// `register_remote_command_rpc`; `info_collector_app::info_collector_app` starts the
    /// HTTP server alone, `src/server/info_collector_app.cpp` @v2.4.0, @v2.5.0), so its RPC
    /// layer answers `ERR_HANDLER_NOT_FOUND` to `server-info` forever. A meta or replica
    /// server must answer `server-info` first.
    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = PegasusError> + 'a {
        probe_fn(move || async move {
            let a = addr(node)?;
            if self.is_collector(node) {
                if let Err(e) = self.http_version(a).await {
                    return Ok(Health::Waiting(format!(
                        "collector {node} does not answer /version yet: {e}"
                    )));
                }
            } else if let Err(e) = self.meta().command(a, "server-info", &[]).await {
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
                // A leader answers, and every replica server that holds a replica is ALIVE
                // to it (a node decommissioned long ago stays listed UNALIVE and holds none).
                // Right after an election that proves no beacon: `fully_healthy`, which the
                // next data or meta wave's gate and the roll's end ask, waits out the new
                // leader's grace.
                let snap = match self.snapshot().await {
                    Ok(s) => s,
                    Err(e) => return Ok(Health::Waiting(format!("no meta leader yet: {e}"))),
                };
                return Ok(match snap.dead_members().first() {
                    Some(a) => Health::Waiting(format!(
                        "replica server {a} holds replicas but is not ALIVE to the meta leader"
                    )),
                    None => Health::Healthy,
                });
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
                Err(PegasusError::Meta(
                    MetaError::NoLeader { last, .. } | MetaError::Unreachable { last, .. },
                )) => {
                    return Ok(Health::Waiting(format!("no meta leader answers: {last}")));
                }
                Err(e) => return Err(e),
            };
            if let Some(why) = self.election_window().await {
                return Ok(Health::Waiting(why));
            }
            // A node the meta lists UNALIVE but that holds no replica (decommissioned, or
            // dead and dropped) does not keep the cluster from health: the plan warns of it.
            if let Some(a) = snap.dead_members().first() {
                return Ok(Health::Waiting(format!(
                    "replica server {a} holds replicas but is not ALIVE"
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

    fn safe_to_stop<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = PegasusError> + 'a {
        probe_fn(move || async move {
            let info: crate::messages::ClusterInfoResponse =
                match self.meta().call(rpc::CLUSTER_INFO, &Empty).await {
                    Ok(i) => i,
                    Err(e) => return Ok(Health::Waiting(format!("no meta leader answers: {e}"))),
                };
            // Whether the meta about to stop leads: the last reading before its stop decides
            // its settle (both procedures pass here).
            if self.is_meta(node) {
                let leads = self.meta.leader() == addr(node).ok();
                self.led
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(node.clone(), leads);
            }
            Ok(if info.get("meta_function_level") == Some("freezed") {
                Health::Waiting("the meta is freezed".into())
            } else {
                Health::Healthy
            })
        })
    }

    /// The seed's wait after a meta, only where beacons move: after the meta that led when
    /// it was last found safe to stop (or one whose leadership is unknown, as in a resumed
    /// run).
    fn settle(&self, node: &NodeId) -> std::time::Duration {
        let standby = self.led.lock().unwrap_or_else(|e| e.into_inner()).get(node) == Some(&false);
        if self.is_meta(node) && !standby {
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
            PegasusError::Meta(MetaError::NoLeader { .. } | MetaError::Unreachable { .. }) => {
                ErrorClass::NotSafeYet
            }
            PegasusError::Meta(MetaError::Call(e)) | PegasusError::Call(e) if e.is_transient() => {
                ErrorClass::Transient
            }
            // A meta that has not registered its handlers yet (a remote command to the
            // leader that restarted in between): the next call finds the leader again.
            PegasusError::Call(e @ CallError::Rpc { server, .. })
                if crate::meta::starting(e) && self.is_meta_addr(*server) =>
            {
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
