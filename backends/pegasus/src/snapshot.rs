//! The cluster as the meta leader shows it at one instant: nodes, apps and their partition
//! configurations, cluster info; and what that says about health.

use std::collections::BTreeMap;

use rollout_core::{NodeId, NodeInfo, Role, RoleKind};

use crate::cluster::{NodeFactory, PegasusCluster, addr};
use crate::error::PegasusError;
use crate::messages::{
    AppInfo, ClusterInfoResponse, Empty, I32Request, ListResponse, NodeInfo as WireNode,
    QueryConfigRequest, QueryConfigResponse, app_status, node_status, rpc,
};
use crate::meta::MetaError;
use crate::types::{HostPort, RpcAddress, v4};

/// The cluster as the meta servers see it at one instant.
pub(crate) struct Snapshot {
    pub(crate) nodes: Vec<WireNode>,
    pub(crate) apps: Vec<(AppInfo, QueryConfigResponse)>,
    pub(crate) info: ClusterInfoResponse,
}

impl Snapshot {
    pub(crate) fn alive(&self, a: &RpcAddress) -> bool {
        self.nodes
            .iter()
            .any(|n| &n.node == a && n.status == node_status::ALIVE)
    }

    pub(crate) fn frozen(&self) -> bool {
        self.info.get("meta_function_level") == Some("freezed")
    }

    /// How the meta names each node, where its answers carry names (`hp_node` of master's
    /// `list_nodes`; none on 2.4 and 2.5, whose IDL has no such field).
    pub(crate) fn names(&self) -> BTreeMap<RpcAddress, HostPort> {
        self.nodes
            .iter()
            .filter_map(|n| n.hp_node.clone().map(|hp| (n.node, hp)))
            .filter(|(_, hp)| hp.is_valid())
            .collect()
    }

    /// The first partition that is not fully healthy as `ls -d` defines it.
    pub(crate) fn unhealthy(&self) -> Option<String> {
        self.apps.iter().find_map(|(app, q)| {
            q.partitions.iter().find_map(|p| {
                let count = usize::from(p.primary.0.is_some()) + p.secondaries.len();
                if p.primary.0.is_none() {
                    Some(format!(
                        "{}.{} ({}) has no primary",
                        app.app_id, p.pid.partition_index, app.app_name
                    ))
                } else if count < p.max_replica_count.max(0) as usize {
                    Some(format!(
                        "{}.{} ({}) has {count} of {} replicas",
                        app.app_id, p.pid.partition_index, app.app_name, p.max_replica_count
                    ))
                } else {
                    None
                }
            })
        })
    }

    /// The replica servers that hold a replica in some configuration and are not ALIVE: the
    /// ones that matter. The meta keeps listing a node it declared dead until it beacons
    /// again (`meta_service::set_node_state` is the only place that forgets one), so a node
    /// decommissioned long ago is UNALIVE forever and holds nothing.
    pub(crate) fn dead_members(&self) -> Vec<RpcAddress> {
        let mut out: Vec<RpcAddress> = self
            .apps
            .iter()
            .flat_map(|(_, q)| &q.partitions)
            .flat_map(|p| std::iter::once(&p.primary).chain(&p.secondaries))
            .filter(|a| a.0.is_some() && !self.alive(a))
            .copied()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl<F: NodeFactory> PegasusCluster<F> {
    pub(crate) async fn snapshot(&self) -> Result<Snapshot, PegasusError> {
        let nodes: ListResponse<WireNode> = self
            .meta
            .call(rpc::LIST_NODES, &I32Request(node_status::INVALID))
            .await?;
        let apps: ListResponse<AppInfo> = self
            .meta
            .call(rpc::LIST_APPS, &I32Request(app_status::AVAILABLE))
            .await?;
        let mut out = Vec::new();
        for app in apps
            .infos
            .into_iter()
            .filter(|a| a.status == app_status::AVAILABLE)
        {
            let q: QueryConfigResponse = match self
                .meta
                .call(
                    rpc::QUERY_CONFIG,
                    &QueryConfigRequest {
                        app_name: app.app_name.clone(),
                        partition_indices: Vec::new(),
                    },
                )
                .await
            {
                Ok(q) => q,
                // Dropped between the two calls: it is not the rollout's to wait for.
                Err(MetaError::App { err, .. }) if err.as_str() == "ERR_OBJECT_NOT_FOUND" => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            out.push((app, q));
        }
        let info: ClusterInfoResponse = self.meta.call(rpc::CLUSTER_INFO, &Empty).await?;
        self.reapply_on_new_leader().await?;
        Ok(Snapshot {
            nodes: nodes.infos,
            apps: out,
            info,
        })
    }

    /// The nodes: replica servers as the meta lists them, the metas given (the leader
    /// marked), the collectors given.
    pub(crate) fn infos_of(&self, nodes: &[WireNode]) -> Vec<NodeInfo> {
        let replica = Role::new("replica", RoleKind::Data, 0);
        let meta = Role::new("meta", RoleKind::Coordinator, 1);
        let collector = Role::new("collector", RoleKind::Stateless, 2);
        let leader = self.meta.leader();
        let version = |a: &std::net::SocketAddr| self.versions.get(a).map(ToString::to_string);
        let with_version = |n: NodeInfo, a: &std::net::SocketAddr| match version(a) {
            Some(v) => n.version(v),
            None => n,
        };
        let mut out: Vec<NodeInfo> = nodes
            .iter()
            .filter_map(|n| n.node.0.map(|a| (a, n.status == node_status::ALIVE)))
            .map(|(a, alive)| {
                let a = std::net::SocketAddr::V4(a);
                with_version(
                    NodeInfo::new(NodeId::new(a.to_string()), replica.clone()).alive(alive),
                    &a,
                )
            })
            .collect();
        out.extend(self.meta.addresses().into_iter().map(|a| {
            with_version(
                NodeInfo::new(NodeId::new(a.to_string()), meta.clone()).leader(Some(a) == leader),
                &a,
            )
        }));
        out.extend(
            self.collectors
                .iter()
                .map(|&a| NodeInfo::new(NodeId::new(a.to_string()), collector.clone())),
        );
        out
    }

    /// How many partitions still hold `node` as a primary or secondary, tables below three
    /// replicas left aside (accepted: their replicas cannot be drained).
    pub(crate) async fn holding(&self, node: &NodeId) -> Result<usize, PegasusError> {
        let me = v4(addr(node)?).map(RpcAddress::new).unwrap_or_default();
        let snap = self.snapshot().await?;
        Ok(snap
            .apps
            .iter()
            .filter(|(app, _)| app.max_replica_count >= 3)
            .flat_map(|(_, q)| &q.partitions)
            .filter(|p| p.primary == me || p.secondaries.contains(&me))
            .count())
    }
}
