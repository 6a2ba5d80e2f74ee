//! A small in-test cluster: instant transitions, a log of every call, and switches for stuck
//! drains and crash-looping starts. It shows how little a backend needs to fit the traits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rollout_core::{
    ApplyRecord, Change, Cluster, ErrorClass, Health, HealthProbe, Knob, Node, NodeId, NodeInfo,
    NodeStatus, Partition, Procedure, Replica, ReplicaRole, Role, RoleKind, Topology,
    probe::probe_fn,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tiny cluster: {0}")]
pub struct TinyError(pub String);

#[derive(Debug, Clone)]
struct TNode {
    id: NodeId,
    role: Role,
    running: bool,
    boot: u64,
    version: String,
    staged: Option<String>,
    leader: bool,
    restarts: u32,
}

#[derive(Debug, Default)]
struct State {
    nodes: Vec<TNode>,
    /// Per partition: (node index, is primary).
    parts: Vec<Vec<(usize, bool)>>,
    knobs: BTreeMap<String, String>,
    originals: BTreeMap<String, String>,
    stuck_drain: BTreeSet<usize>,
    fail_start: BTreeSet<usize>,
    drained: BTreeSet<usize>,
    log: Vec<String>,
    /// Stopped coordinators are left out of the topology (as OpenMLDB's nameservers, known
    /// from their ZooKeeper registration only while they run).
    hide_stopped_coordinators: bool,
    /// The first drain of each node is refused with a transient error.
    flaky_drain: bool,
    /// As a Pegasus meta after a replica server's lease ends: a stopped data node's replicas
    /// leave the partitions (until it runs again), and a partition takes writes with 2
    /// replicas serving.
    drop_replicas_of_stopped: bool,
    drain_refused: BTreeSet<usize>,
    /// As a Pegasus server whose start time must move: a drained node is ready only once
    /// it runs another incarnation than the one drained.
    ready_after_restart: bool,
    drained_boot: BTreeMap<usize, u64>,
    /// As a Pegasus meta leader's restart, whose successor's node list proves nothing for a
    /// while: the start of this node makes the cluster unhealthy for this long.
    sick_after_start: Option<(usize, std::time::Duration)>,
    sick_until: Option<tokio::time::Instant>,
}

/// The in-test cluster. Clones share state.
#[derive(Debug, Clone)]
pub struct Tiny {
    state: Arc<Mutex<State>>,
}

impl Tiny {
    /// `data` data nodes (named `d1:1`...), `coords` coordinators (`c1:1`..., the first is the
    /// leader), one stateless node `s1:1`, and `parts` partitions of 3 replicas placed
    /// round-robin.
    pub fn new(data: usize, coords: usize, parts: usize) -> Self {
        let mut nodes = Vec::new();
        let mk = |id: String, role: Role, leader: bool| TNode {
            id: NodeId::new(id),
            role,
            running: true,
            boot: 1,
            version: "1".into(),
            staged: None,
            leader,
            restarts: 0,
        };
        for i in 0..data {
            nodes.push(mk(
                format!("d{}:1", i + 1),
                Role::new("data", RoleKind::Data, 0),
                false,
            ));
        }
        for i in 0..coords {
            nodes.push(mk(
                format!("c{}:1", i + 1),
                Role::new("coord", RoleKind::Coordinator, 1),
                i == 0,
            ));
        }
        nodes.push(mk(
            "s1:1".into(),
            Role::new("stateless", RoleKind::Stateless, 2),
            false,
        ));
        let parts = (0..parts)
            .map(|p| (0..3.min(data)).map(|r| ((p + r) % data, r == 0)).collect())
            .collect();
        let knobs: BTreeMap<String, String> = [("balancer", "on"), ("add_replicas", "10")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            state: Arc::new(Mutex::new(State {
                nodes,
                parts,
                originals: knobs.clone(),
                knobs,
                ..State::default()
            })),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn idx(st: &State, id: &NodeId) -> Option<usize> {
        st.nodes.iter().position(|n| &n.id == id)
    }

    /// The start of `id` leaves the cluster unhealthy for `sick` (tokio time).
    pub fn sick_after_start(&self, id: &str, sick: std::time::Duration) {
        let mut st = self.st();
        let i = Self::idx(&st, &NodeId::new(id)).unwrap();
        st.sick_after_start = Some((i, sick));
    }

    /// Whether every knob holds its value from before any rollout.
    pub fn knobs_restored(&self) -> bool {
        let st = self.st();
        st.knobs == st.originals
    }

    pub fn knob_value(&self, name: &str) -> String {
        self.st().knobs[name].clone()
    }

    /// Starts per node so far.
    pub fn restarts(&self) -> BTreeMap<NodeId, u32> {
        self.st()
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.restarts))
            .collect()
    }

    pub fn versions(&self) -> BTreeMap<NodeId, String> {
        self.st()
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.version.clone()))
            .collect()
    }

    pub fn all_running(&self) -> bool {
        self.st().nodes.iter().all(|n| n.running)
    }

    /// Refuses the first drain of each node with a transient error (logged as
    /// `drain-refused NODE`), so that the engine retries it.
    pub fn flaky_drain(&self) {
        self.st().flaky_drain = true;
    }

    /// Leaves a stopped data node's replicas out of the partitions from now on, and needs 2
    /// serving replicas for writes.
    pub fn ready_after_restart(&self) {
        self.st().ready_after_restart = true;
    }

    pub fn drop_replicas_of_stopped(&self) {
        self.st().drop_replicas_of_stopped = true;
    }

    /// Leaves stopped coordinators out of the topology from now on.
    pub fn hide_stopped_coordinators(&self) {
        self.st().hide_stopped_coordinators = true;
    }

    /// Adds `line` to the call log (a test's own marker between the calls).
    pub fn note(&self, line: &str) {
        self.st().log.push(line.to_string());
    }

    /// Every call so far, as `op node` lines.
    pub fn log(&self) -> Vec<String> {
        self.st().log.clone()
    }

    pub fn set_stuck_drain(&self, id: &str, stuck: bool) {
        let mut st = self.st();
        let i = Self::idx(&st, &NodeId::new(id)).unwrap();
        if stuck {
            st.stuck_drain.insert(i);
        } else {
            st.stuck_drain.remove(&i);
        }
    }

    pub fn set_fail_start(&self, id: &str) {
        let mut st = self.st();
        let i = Self::idx(&st, &NodeId::new(id)).unwrap();
        st.fail_start.insert(i);
    }

    fn record(&self, op: &str, node: Option<&NodeId>) {
        let line = match node {
            Some(n) => format!("{op} {n}"),
            None => op.to_string(),
        };
        self.st().log.push(line);
    }

    fn health(&self) -> Health {
        let st = self.st();
        if st
            .sick_until
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return Health::waiting("the cluster recovers from a coordinator's restart");
        }
        if let Some(n) = st.nodes.iter().find(|n| !n.running) {
            return Health::waiting(format!("node {} is down", n.id));
        }
        if let Some(n) = st.drained.iter().next() {
            return Health::waiting(format!("node {} is drained", st.nodes[*n].id));
        }
        Health::Healthy
    }
}

/// A node of the in-test cluster.
#[derive(Debug, Clone)]
pub struct TinyNode {
    cluster: Tiny,
    id: NodeId,
}

impl Node for TinyNode {
    type Error = TinyError;

    fn id(&self) -> &NodeId {
        &self.id
    }

    async fn stop(&self) -> Result<(), TinyError> {
        tokio::task::yield_now().await;
        self.cluster.record("stop", Some(&self.id));
        let mut st = self.cluster.st();
        let i = Tiny::idx(&st, &self.id).unwrap();
        st.nodes[i].running = false;
        if st.nodes[i].leader {
            st.nodes[i].leader = false;
            if let Some(j) = (0..st.nodes.len()).find(|&j| {
                j != i && st.nodes[j].running && st.nodes[j].role.kind == RoleKind::Coordinator
            }) {
                st.nodes[j].leader = true;
            }
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), TinyError> {
        tokio::task::yield_now().await;
        self.cluster.record("start", Some(&self.id));
        let mut st = self.cluster.st();
        let i = Tiny::idx(&st, &self.id).unwrap();
        st.nodes[i].restarts += 1;
        let now = tokio::time::Instant::now();
        if st.sick_until.is_some_and(|t| now < t) {
            st.log
                .push(format!("start {} while the cluster recovers", self.id));
        }
        if let Some((n, sick)) = st.sick_after_start
            && n == i
        {
            st.sick_until = Some(now + sick);
        }
        if st.fail_start.contains(&i) {
            return Ok(());
        }
        let n = &mut st.nodes[i];
        n.running = true;
        n.boot += 1;
        if let Some(v) = n.staged.take() {
            n.version = v;
        }
        if n.role.kind == RoleKind::Coordinator && !st.nodes.iter().any(|n| n.leader) {
            st.nodes[i].leader = true;
        }
        Ok(())
    }

    async fn status(&self) -> Result<NodeStatus, TinyError> {
        let st = self.cluster.st();
        let n = &st.nodes[Tiny::idx(&st, &self.id).unwrap()];
        let status = if n.running {
            NodeStatus::running()
        } else {
            NodeStatus::stopped()
        };
        Ok(status.boot(n.boot.to_string()).version(n.version.clone()))
    }

    async fn apply(&self, change: &Change) -> Result<ApplyRecord, TinyError> {
        tokio::task::yield_now().await;
        self.cluster.record("apply", Some(&self.id));
        let mut st = self.cluster.st();
        let i = Tiny::idx(&st, &self.id).unwrap();
        let n = &mut st.nodes[i];
        if n.running {
            return Err(TinyError(format!("apply on running node {}", n.id)));
        }
        let backup = BTreeMap::from([("version".to_string(), n.version.clone())]);
        if let Change::Upgrade { version } = change {
            n.staged = Some(version.clone());
        }
        Ok(ApplyRecord::new(self.id.clone(), backup))
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), TinyError> {
        self.cluster.record("revert", Some(&self.id));
        let mut st = self.cluster.st();
        let i = Tiny::idx(&st, &self.id).unwrap();
        st.nodes[i].staged = record.backup.get("version").cloned();
        Ok(())
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, TinyError> {
        let st = self.cluster.st();
        let n = &st.nodes[Tiny::idx(&st, &self.id).unwrap()];
        Ok(matches!(change, Change::Upgrade { version } if &n.version == version))
    }
}

impl Cluster for Tiny {
    type Node = TinyNode;
    type Error = TinyError;

    fn name(&self) -> &str {
        "tiny"
    }

    async fn topology(&self) -> Result<Topology, TinyError> {
        let st = self.st();
        let nodes = st
            .nodes
            .iter()
            .filter(|n| {
                !(st.hide_stopped_coordinators
                    && !n.running
                    && n.role.kind == RoleKind::Coordinator)
            })
            .map(|n| {
                NodeInfo::new(n.id.clone(), n.role.clone())
                    .alive(n.running)
                    .leader(n.leader)
                    .version(n.version.clone())
            })
            .collect();
        let partitions = st
            .parts
            .iter()
            .enumerate()
            .map(|(p, reps)| {
                let replicas = reps
                    .iter()
                    .filter(|&&(n, _)| !st.drop_replicas_of_stopped || st.nodes[n].running)
                    .map(|&(n, primary)| {
                        let role = if primary {
                            ReplicaRole::Primary
                        } else {
                            ReplicaRole::Secondary
                        };
                        Replica::new(st.nodes[n].id.clone(), role)
                            .alive(st.nodes[n].running && !st.drained.contains(&n))
                    })
                    .collect();
                Partition::new(format!("1.{p}"), reps.len() as u32, replicas)
            })
            .collect();
        let min_serving = if st.drop_replicas_of_stopped { 2 } else { 1 };
        Ok(Topology::new(nodes, partitions).min_serving(min_serving))
    }

    fn node(&self, id: &NodeId) -> Option<TinyNode> {
        let st = self.st();
        Tiny::idx(&st, id).map(|_| TinyNode {
            cluster: self.clone(),
            id: id.clone(),
        })
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        match procedure {
            Procedure::HighAvailability => vec![
                Knob::rollout("balancer", "off"),
                Knob::wave("add_replicas", "0").then("100"),
            ],
            Procedure::Simple => vec![Knob::rollout("balancer", "off")],
        }
    }

    async fn read_knob(&self, name: &str) -> Result<String, TinyError> {
        tokio::task::yield_now().await;
        self.st()
            .knobs
            .get(name)
            .cloned()
            .ok_or_else(|| TinyError(format!("unknown knob {name}")))
    }

    async fn write_knob(&self, name: &str, value: &str) -> Result<(), TinyError> {
        tokio::task::yield_now().await;
        self.record(&format!("knob {name}={value}"), None);
        self.st().knobs.insert(name.into(), value.into());
        Ok(())
    }

    async fn drain(&self, node: &NodeId) -> Result<(), TinyError> {
        tokio::task::yield_now().await;
        {
            let mut st = self.st();
            let i = Tiny::idx(&st, node).unwrap();
            if st.flaky_drain && st.drain_refused.insert(i) {
                drop(st);
                self.record("drain-refused", Some(node));
                return Err(TinyError("transient: the coordinator is busy".into()));
            }
        }
        self.record("drain", Some(node));
        let mut st = self.st();
        let i = Tiny::idx(&st, node).unwrap();
        let boot = st.nodes[i].boot;
        st.drained_boot.insert(i, boot);
        if st.nodes[i].role.kind != RoleKind::Data || st.stuck_drain.contains(&i) {
            return Ok(());
        }
        st.drained.insert(i);
        let running: Vec<bool> = st.nodes.iter().map(|n| n.running).collect();
        for reps in &mut st.parts {
            if let Some(pos) = reps.iter().position(|&(n, p)| n == i && p)
                && let Some(other) = reps.iter().position(|&(n, p)| n != i && !p && running[n])
            {
                reps[pos].1 = false;
                reps[other].1 = true;
            }
        }
        Ok(())
    }

    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = TinyError> + 'a {
        let node = node.clone();
        probe_fn(move || {
            let this = self.clone();
            let node = node.clone();
            async move {
                let st = this.st();
                let i = Tiny::idx(&st, &node).unwrap();
                if st.nodes[i].role.kind != RoleKind::Data {
                    return Ok(Health::Healthy);
                }
                let primary = st.parts.iter().any(|r| r.iter().any(|&(n, p)| n == i && p));
                Ok(if primary || !st.drained.contains(&i) {
                    Health::waiting(format!("node {node} still holds primaries"))
                } else {
                    Health::Healthy
                })
            }
        })
    }

    async fn quiesce(&self, node: &NodeId) -> Result<(), TinyError> {
        tokio::task::yield_now().await;
        self.record("quiesce", Some(node));
        Ok(())
    }

    fn quiesced<'a>(&'a self, _node: &'a NodeId) -> impl HealthProbe<Error = TinyError> + 'a {
        rollout_core::probe::probes::always()
    }

    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = TinyError> + 'a {
        let node = node.clone();
        probe_fn(move || {
            let this = self.clone();
            let node = node.clone();
            async move {
                let st = this.st();
                let i = Tiny::idx(&st, &node).unwrap();
                let n = &st.nodes[i];
                let same = st.ready_after_restart && st.drained_boot.get(&i) == Some(&n.boot);
                Ok(if !n.running {
                    Health::waiting(format!("node {node} is not up"))
                } else if same {
                    Health::waiting(format!(
                        "node {node} runs the incarnation it was drained in"
                    ))
                } else {
                    Health::Healthy
                })
            }
        })
    }

    async fn rejoin(&self, node: &NodeId) -> Result<(), TinyError> {
        tokio::task::yield_now().await;
        self.record("rejoin", Some(node));
        let mut st = self.st();
        let i = Tiny::idx(&st, node).unwrap();
        st.drained.remove(&i);
        Ok(())
    }

    fn rejoined<'a>(&'a self, _node: &'a NodeId) -> impl HealthProbe<Error = TinyError> + 'a {
        rollout_core::probe::probes::always()
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = TinyError> + '_ {
        probe_fn(move || {
            let this = self.clone();
            async move { Ok(this.health()) }
        })
    }

    fn safe_to_stop<'a>(&'a self, _node: &'a NodeId) -> impl HealthProbe<Error = TinyError> + 'a {
        rollout_core::probe::probes::always()
    }

    fn classify(&self, error: &TinyError) -> ErrorClass {
        if error.0.starts_with("transient") {
            ErrorClass::Transient
        } else {
            ErrorClass::Fatal
        }
    }
}
