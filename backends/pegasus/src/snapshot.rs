//! The cluster as the meta leader shows it at one instant: nodes, apps and their partition
//! configurations, cluster info; and what that says about health.

use rollout_core::{NodeId, NodeInfo, Role, RoleKind};

use crate::cluster::{NodeFactory, PegasusCluster, addr};
use crate::error::PegasusError;
use crate::messages::{
    AppInfo, ClusterInfoResponse, Empty, I32Request, ListResponse, NodeInfo as WireNode,
    PartitionConfiguration, QueryConfigRequest, QueryConfigResponse, app_status, node_status, rpc,
};
use crate::meta::MetaError;
use crate::types::{HostPort, RpcAddress, v4};

/// The cluster as the meta servers see it at one instant.
pub(crate) struct Snapshot {
    pub(crate) nodes: Vec<WireNode>,
    pub(crate) apps: Vec<(AppInfo, QueryConfigResponse)>,
    pub(crate) info: ClusterInfoResponse,
}

/// One member of a partition's configuration, matched to the meta's node list.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// The node as `list_nodes` names it (the id rollout gives it), or the configuration's
    /// address when the list has no such node.
    pub(crate) id: RpcAddress,
    /// The address in the configuration.
    pub(crate) addr: RpcAddress,
    /// The host name in the configuration, where the meta names nodes by host (master).
    pub(crate) hp: Option<HostPort>,
    /// The primary (else a secondary).
    pub(crate) primary: bool,
    /// ALIVE to the meta.
    pub(crate) alive: bool,
}

impl Snapshot {
    pub(crate) fn frozen(&self) -> bool {
        self.info.get("meta_function_level") == Some("freezed")
    }

    /// Whether the meta names nodes by host: master's `list_nodes` carries `hp_node`, and
    /// its node sets and configurations are keyed by `host_port` (`meta_data.h`
    /// `node_mapper`, `meta_service::on_list_nodes` @master); 2.4 and 2.5 have no such field.
    fn by_name(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.hp_node.as_ref().is_some_and(HostPort::is_valid))
    }

    /// The node-list entry of a member the configuration names `addr` (and `hp`): by host
    /// name on master, where `list_nodes` gives the forward DNS of the name
    /// (`SET_IP_AND_HOST_PORT_BY_DNS`), which need not be the address a configuration
    /// carries; by address on 2.4 and 2.5.
    fn entry(&self, addr: &RpcAddress, hp: Option<&HostPort>) -> Option<&WireNode> {
        match hp.filter(|h| h.is_valid()) {
            Some(hp) if self.by_name() => {
                self.nodes.iter().find(|n| n.hp_node.as_ref() == Some(hp))
            }
            _ => self.nodes.iter().find(|n| &n.node == addr),
        }
    }

    fn member(&self, addr: RpcAddress, hp: Option<&HostPort>, primary: bool) -> Member {
        let entry = self.entry(&addr, hp);
        Member {
            id: entry.map_or(addr, |n| n.node),
            addr,
            hp: hp.filter(|h| h.is_valid() && self.by_name()).cloned(),
            primary,
            alive: entry.is_some_and(|n| n.status == node_status::ALIVE),
        }
    }

    /// The primary and the secondaries of `p`, each matched to the node list.
    pub(crate) fn members(&self, p: &PartitionConfiguration) -> Vec<Member> {
        let mut out = Vec::new();
        let hp_primary = p.hp_primary.as_ref().filter(|h| h.is_valid());
        if p.primary.0.is_some() || hp_primary.is_some() {
            out.push(self.member(p.primary, hp_primary, true));
        }
        // Master writes both lists in the same order; names that do not pair up are not used.
        let hps = p
            .hp_secondaries
            .as_ref()
            .filter(|h| h.len() == p.secondaries.len());
        for (i, s) in p.secondaries.iter().enumerate() {
            let hp = hps.and_then(|h| h.get(i));
            if s.0.is_some() || hp.is_some_and(HostPort::is_valid) {
                out.push(self.member(*s, hp, false));
            }
        }
        out
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
    /// decommissioned long ago is UNALIVE forever and holds nothing. Named as `list_nodes`
    /// names them.
    pub(crate) fn dead_members(&self) -> Vec<RpcAddress> {
        let mut out: Vec<RpcAddress> = self
            .apps
            .iter()
            .flat_map(|(_, q)| &q.partitions)
            .flat_map(|p| self.members(p))
            .filter(|m| !m.alive)
            .map(|m| m.id)
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
            .filter(|p| snap.members(p).iter().any(|m| m.id == me))
            .count())
    }
}
