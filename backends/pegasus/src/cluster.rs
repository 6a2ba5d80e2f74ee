//! `PegasusCluster`: the core traits over a Pegasus cluster's meta servers, with the
//! processes reached through a node factory (the emulator's now, real hosts later).
//!
//! The steps follow the upstream high-availability rolling restart
//! (shared/seeds/pegasus-rolling-update.md) and avoid the traps of
//! shared/reference/pegasus.md §6: flow control is turned on with the add-secondary count,
//! primaries move only to a current secondary of a fully healthy partition, secondaries are
//! downgraded only where a primary and another secondary stay, and `replica.kill_partition`
//! always names its partition.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rollout_core::{ApplyRecord, Change, Node, NodeId, NodeInfo, NodeStatus, Role, RoleKind};
use tokio::time::Instant;

use crate::messages::{
    AppInfo, BalancerRequest, ClusterInfoResponse, Empty, ErrResponse, I32Request, ListResponse,
    NodeInfo as WireNode, ProposalAction, QueryConfigRequest, QueryConfigResponse, app_status,
    config_type, node_status, rpc,
};
use crate::meta::{MetaClient, MetaError};
use crate::transport::CallError;
use crate::types::{Gpid, HostPort, RpcAddress, v4};

/// The backend's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PegasusError {
    /// The meta servers.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// One server.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A remote command's answer that says it failed, or that cannot be read.
    #[error("{server}: remote command {cmd}: {answer}")]
    Command {
        /// The server.
        server: SocketAddr,
        /// The command.
        cmd: String,
        /// What it answered.
        answer: String,
    },
    /// A node id that is not `host:port`.
    #[error("{0:?} is not a server address (host:port)")]
    BadAddress(String),
    /// The node's process control failed.
    #[error("{node}: {source}")]
    Node {
        /// The node.
        node: NodeId,
        /// What its process control said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A knob this backend does not have.
    #[error("unknown knob {0:?}")]
    UnknownKnob(String),
}

/// How long things take: per-call deadline and the pace of re-proposals, in the cluster's
/// time (divide by an emulator's time scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// Each RPC's deadline. Default 5 s (the shell's).
    pub rpc: Duration,
    /// How long a proposal may go unanswered before it is submitted again: a little more
    /// than one `lb_interval_ms` (10 s). Default 12 s.
    pub repropose: Duration,
    /// How long the rollout waits after a meta server is ready before the next step: the
    /// rolling-update doc's "wait for more than 30 seconds" so that the replica servers'
    /// beacons continue, which no RPC shows (shared/seeds/pegasus-rolling-update.md).
    /// Default 30 s.
    pub meta_settle: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            rpc: Duration::from_secs(5),
            repropose: Duration::from_secs(12),
            meta_settle: Duration::from_secs(30),
        }
    }
}

impl Timing {
    /// Every duration divided by `scale` (an emulator running `scale` times faster).
    pub fn scaled(self, scale: u32) -> Self {
        let s = scale.max(1);
        Self {
            rpc: (self.rpc / s).max(Duration::from_millis(200)),
            repropose: self.repropose / s,
            meta_settle: self.meta_settle / s,
        }
    }
}

/// A Pegasus cluster reached through its meta servers; `F` makes the process handles.
pub struct PegasusCluster<F> {
    meta: MetaClient,
    name: String,
    collectors: Vec<SocketAddr>,
    factory: F,
    pub(crate) timing: Timing,
    /// `min_live_node_count_for_unfreeze` and `node_live_percentage_threshold_for_update`,
    /// read from the leader when connecting, and where they came from.
    freeze: (usize, u32, String),
    proposed: Mutex<BTreeMap<NodeId, Instant>>,
    /// Each node's `/recentStartTime` read before its stop, to see that it moved.
    started: Mutex<BTreeMap<NodeId, String>>,
    http: reqwest::Client,
    /// `zookeeper_hosts` and `zookeeper_root` from `cluster_info`.
    zookeeper: Option<(String, String)>,
}

impl<F> std::fmt::Debug for PegasusCluster<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PegasusCluster")
            .field("name", &self.name)
            .field("metas", &self.meta.addresses())
            .finish_non_exhaustive()
    }
}

/// A process handle for one server: what a node factory returns.
pub trait NodeFactory: Send + Sync {
    /// The handle.
    type Node: Node;
    /// The handle of the server at `id` (`host:port`), if the factory knows it.
    fn node(&self, id: &NodeId) -> Option<Self::Node>;
}

impl<N: Node, F: Fn(&NodeId) -> Option<N> + Send + Sync> NodeFactory for F {
    type Node = N;
    fn node(&self, id: &NodeId) -> Option<N> {
        self(id)
    }
}

/// The wrapper that gives a factory's node this backend's error.
#[derive(Debug)]
pub struct PegasusNode<N> {
    inner: N,
}

impl<N> PegasusNode<N> {
    pub(crate) fn new(inner: N) -> Self {
        Self { inner }
    }
}

fn node_err<E: std::error::Error + Send + Sync + 'static>(node: &NodeId, e: E) -> PegasusError {
    PegasusError::Node {
        node: node.clone(),
        source: Box::new(e),
    }
}

impl<N: Node> Node for PegasusNode<N> {
    type Error = PegasusError;

    fn id(&self) -> &NodeId {
        self.inner.id()
    }
    async fn stop(&self) -> Result<(), PegasusError> {
        self.inner.stop().await.map_err(|e| node_err(self.id(), e))
    }
    async fn start(&self) -> Result<(), PegasusError> {
        self.inner.start().await.map_err(|e| node_err(self.id(), e))
    }
    async fn status(&self) -> Result<NodeStatus, PegasusError> {
        self.inner
            .status()
            .await
            .map_err(|e| node_err(self.id(), e))
    }
    async fn apply(&self, change: &Change) -> Result<ApplyRecord, PegasusError> {
        self.inner
            .apply(change)
            .await
            .map_err(|e| node_err(self.id(), e))
    }
    async fn revert(&self, record: &ApplyRecord) -> Result<(), PegasusError> {
        self.inner
            .revert(record)
            .await
            .map_err(|e| node_err(self.id(), e))
    }
    async fn is_applied(&self, change: &Change) -> Result<bool, PegasusError> {
        self.inner
            .is_applied(change)
            .await
            .map_err(|e| node_err(self.id(), e))
    }
}

pub(crate) fn addr(id: &NodeId) -> Result<SocketAddr, PegasusError> {
    id.as_str()
        .parse()
        .map_err(|_| PegasusError::BadAddress(id.to_string()))
}

fn node_id(a: SocketAddr) -> NodeId {
    NodeId::new(a.to_string())
}

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
}

impl<F: NodeFactory> PegasusCluster<F> {
    /// Connects to the meta servers `metas`, reads the cluster's name and freeze thresholds
    /// from the leader, and takes process handles from `factory`. `collectors` are rolled
    /// last.
    ///
    /// # Errors
    /// No meta answers as the leader, or its answers cannot be read.
    pub async fn connect(
        metas: &[SocketAddr],
        collectors: &[SocketAddr],
        factory: F,
        timing: Timing,
    ) -> Result<Self, PegasusError> {
        let meta = MetaClient::new(metas, timing.rpc);
        let info: ClusterInfoResponse = meta.call(rpc::CLUSTER_INFO, &Empty).await?;
        let name = info
            .get("cluster_name")
            .map(str::to_string)
            .or_else(|| info.get("zookeeper_root").map(str::to_string))
            .unwrap_or_else(|| {
                metas
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            });
        // The meta server's ZooKeeper, where the rollout's state may live too; an ensemble
        // given without a port (or not at all) is taken as unknown.
        let zookeeper =
            crate::answers::zookeeper_of(info.get("zookeeper_hosts"), info.get("zookeeper_root"));
        let leader = meta.leader().ok_or_else(|| {
            PegasusError::Meta(MetaError::NoLeader {
                tried: String::new(),
                last: "no leader after a successful call".into(),
            })
        })?;
        let (min_live, pct, source) = crate::answers::freeze_thresholds(leader, timing.rpc).await;
        Ok(Self {
            meta,
            name: format!("pegasus:{name}"),
            collectors: collectors.to_vec(),
            factory,
            timing,
            freeze: (min_live, pct, source),
            proposed: Mutex::new(BTreeMap::new()),
            started: Mutex::new(BTreeMap::new()),
            http: reqwest::Client::builder()
                .timeout(timing.rpc)
                .build()
                .unwrap_or_default(),
            zookeeper,
        })
    }

    /// The cluster's ZooKeeper as its meta server reports it in `cluster_info`
    /// (`zookeeper_hosts`, `HOST:PORT[,...]`, and `zookeeper_root`; see
    /// `src/meta/meta_service.cpp`, and `cluster_info` in the admin shell); `None` when it
    /// reports none that can be used.
    pub fn zookeeper(&self) -> Option<(&str, &str)> {
        self.zookeeper
            .as_ref()
            .map(|(h, r)| (h.as_str(), r.as_str()))
    }

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
            let q: QueryConfigResponse = self
                .meta
                .call(
                    rpc::QUERY_CONFIG,
                    &QueryConfigRequest {
                        app_name: app.app_name.clone(),
                        partition_indices: Vec::new(),
                    },
                )
                .await?;
            out.push((app, q));
        }
        let info: ClusterInfoResponse = self.meta.call(rpc::CLUSTER_INFO, &Empty).await?;
        Ok(Snapshot {
            nodes: nodes.infos,
            apps: out,
            info,
        })
    }

    pub(crate) fn infos(&self, snap: &Snapshot) -> Vec<NodeInfo> {
        self.infos_of(&snap.nodes)
    }

    /// The nodes: replica servers as the meta lists them, the metas given (the leader
    /// marked), the collectors given.
    pub(crate) fn infos_of(&self, nodes: &[WireNode]) -> Vec<NodeInfo> {
        let replica = Role::new("replica", RoleKind::Data, 0);
        let meta = Role::new("meta", RoleKind::Coordinator, 1);
        let collector = Role::new("collector", RoleKind::Stateless, 2);
        let leader = self.meta.leader();
        let mut out: Vec<NodeInfo> = nodes
            .iter()
            .filter_map(|n| n.node.0.map(|a| (a, n.status == node_status::ALIVE)))
            .map(|(a, alive)| NodeInfo::new(node_id(a.into()), replica.clone()).alive(alive))
            .collect();
        out.extend(
            self.meta
                .addresses()
                .into_iter()
                .map(|a| NodeInfo::new(node_id(a), meta.clone()).leader(Some(a) == leader)),
        );
        out.extend(
            self.collectors
                .iter()
                .map(|&a| NodeInfo::new(node_id(a), collector.clone())),
        );
        out
    }

    /// Submits the proposals that drain `node` now: move its primaries of fully healthy
    /// partitions to a current secondary, downgrade its secondaries where a primary and
    /// another secondary stay. Returns how many partitions still hold it.
    pub(crate) async fn propose_drain(&self, node: &NodeId) -> Result<usize, PegasusError> {
        let me = v4(addr(node)?).map(RpcAddress::new).unwrap_or_default();
        let snap = self.snapshot().await?;
        let mut left = 0;
        for (app, q) in &snap.apps {
            for p in &q.partitions {
                let secondary = p.secondaries.contains(&me);
                let primary = p.primary == me;
                if !primary && !secondary {
                    continue;
                }
                let members = 1 + p.secondaries.len();
                let full = members >= p.max_replica_count.max(0) as usize;
                // Tables below three replicas are not drained: their downtime is accepted
                // by name, or the plan refused them.
                if app.max_replica_count < 3 {
                    continue;
                }
                left += 1;
                let gpid = Gpid::new(app.app_id, p.pid.partition_index);
                let action = |target: RpcAddress, node: RpcAddress, kind: i32| ProposalAction {
                    target,
                    node,
                    kind,
                    hp_target: target.0.map(HostPort::from_addr),
                    hp_node: node.0.map(HostPort::from_addr),
                };
                let req = if primary {
                    let Some(to) = p.secondaries.iter().find(|s| snap.alive(s)).copied() else {
                        continue;
                    };
                    if !full {
                        continue;
                    }
                    BalancerRequest {
                        gpid,
                        action_list: vec![
                            action(me, me, config_type::DOWNGRADE_TO_SECONDARY),
                            action(to, to, config_type::UPGRADE_TO_PRIMARY),
                        ],
                        force: Some(false),
                        balance_type: Some(0),
                    }
                } else {
                    if p.primary.0.is_none() || p.secondaries.len() < 2 {
                        continue;
                    }
                    BalancerRequest {
                        gpid,
                        action_list: vec![action(
                            p.primary,
                            me,
                            config_type::DOWNGRADE_TO_INACTIVE,
                        )],
                        force: Some(false),
                        balance_type: None,
                    }
                };
                let _: ErrResponse = match self.meta.call(rpc::PROPOSE_BALANCER, &req).await {
                    Ok(r) => r,
                    // One pending already, or the partition moved: the next round decides.
                    Err(MetaError::App { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
            }
        }
        self.proposed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), Instant::now());
        Ok(left)
    }

    pub(crate) async fn command_ok(
        &self,
        server: SocketAddr,
        cmd: &str,
        args: &[&str],
    ) -> Result<String, PegasusError> {
        let answer = self.meta.command(server, cmd, args).await?;
        if answer.starts_with("ERR_") && answer != "ERR_OK" || answer.starts_with("unknown command")
        {
            return Err(PegasusError::Command {
                server,
                cmd: cmd.to_string(),
                answer,
            });
        }
        Ok(answer)
    }

    /// The replicas `node` knows (`RPC_QUERY_REPLICA_INFO`, closed ones included) with their
    /// `partition_status`.
    pub(crate) async fn replicas_of(
        &self,
        node: &NodeId,
    ) -> Result<Vec<(Gpid, i32)>, PegasusError> {
        let a = addr(node)?;
        let conn = crate::transport::Connection::new(a);
        let req = crate::messages::QueryReplicaInfoRequest {
            node1: v4(a).map(RpcAddress::new).unwrap_or_default(),
        };
        let resp: crate::messages::QueryReplicaInfoResponse = conn
            .call(rpc::QUERY_REPLICA_INFO, &req, self.timing.rpc)
            .await?;
        Ok(resp.replicas)
    }

    /// How many replicas `node` has open, opening or closing, from its metrics
    /// (`/metrics?types=server&metrics=total_replicas,opening_replicas,closing_replicas`,
    /// shared/reference/pegasus.md §5): the seed's "no replica open" signal.
    pub(crate) async fn open_count(&self, node: &NodeId) -> Result<u64, PegasusError> {
        let a = addr(node)?;
        let url = format!(
            "http://{a}/metrics?types=server&metrics=total_replicas,opening_replicas,closing_replicas"
        );
        let bad = |answer: String| PegasusError::Command {
            server: a,
            cmd: "GET /metrics".into(),
            answer,
        };
        let body = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| bad(e.to_string()))?
            .text()
            .await
            .map_err(|e| bad(e.to_string()))?;
        crate::answers::open_replicas_in(&body).ok_or_else(|| bad(body.chars().take(200).collect()))
    }

    /// The server's `/recentStartTime` (`{"RecentStartTime": "YYYY-MM-DD hh:mm:ss"}`, see
    /// shared/reference/pegasus.md §5); `None` when it does not answer one.
    pub(crate) async fn start_time(&self, node: &NodeId) -> Option<String> {
        let a = addr(node).ok()?;
        let body = self
            .http
            .get(format!("http://{a}/recentStartTime"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["RecentStartTime"].as_str().map(str::to_owned)
    }

    /// Remembers `node`'s start time before its stop, where it reports one.
    pub(crate) async fn note_start_time(&self, node: &NodeId) {
        if let Some(t) = self.start_time(node).await {
            self.started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node.clone(), t);
        }
    }

    /// `Some(before)` while `node` still reports the start time noted before its stop (or
    /// none at all); `None` once it moved, or when none was noted (a resumed rollout).
    pub(crate) async fn same_start_time(&self, node: &NodeId) -> Option<String> {
        let before = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()?;
        let now = self.start_time(node).await;
        if now.is_none() || now.as_ref() == Some(&before) {
            return Some(before);
        }
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        None
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn meta(&self) -> &MetaClient {
        &self.meta
    }

    pub(crate) fn factory(&self) -> &F {
        &self.factory
    }

    pub(crate) fn freeze(&self) -> (usize, u32, &str) {
        (self.freeze.0, self.freeze.1, &self.freeze.2)
    }

    pub(crate) fn is_meta(&self, node: &NodeId) -> bool {
        addr(node).is_ok_and(|a| self.meta.addresses().contains(&a))
    }

    pub(crate) fn is_collector(&self, node: &NodeId) -> bool {
        addr(node).is_ok_and(|a| self.collectors.contains(&a))
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

    /// Whether a tick has passed since the last proposals for `node`.
    pub(crate) fn repropose_due(&self, node: &NodeId) -> bool {
        self.proposed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .is_none_or(|t| t.elapsed() >= self.timing.repropose)
    }
}
