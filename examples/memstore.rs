//! A backend written from the public API alone: a small leader/follower store held in memory,
//! rolled by the core engine and checked by the conformance suite.
//!
//! ```text
//! cargo run --example memstore
//! ```
//!
//! Read it as the "writing a backend" guide of `rollout-core` in code: every trait method a
//! backend must write, plus `check_change` (it rolls restarts and upgrades, not config edits)
//! and `classify`. A real backend does the same over the network (its coordinator's RPCs for
//! `Cluster`, a process manager for `Node`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_core::{
    ApplyRecord, Change, ChangeError, Cluster, ErrorClass, Health, HealthProbe, Knob,
    MemoryJournal, Node, NodeId, NodeInfo, NodeStatus, Partition, Procedure, Replica, ReplicaRole,
    Role, RoleKind, Run, Spec, Topology,
    probe::{probe_fn, probes},
    roll,
};

/// The store's one error: what a real backend's transport and server errors become.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StoreError(String);

struct Proc {
    id: NodeId,
    running: bool,
    boot: u64,
    version: String,
    staged: Option<String>,
}

/// A partition: its leader and follower, by node index.
struct Part {
    leader: usize,
    follower: usize,
}

struct State {
    nodes: Vec<Proc>,
    parts: Vec<Part>,
    /// A knob: the store's rebalancer, which would move leaderships while we roll.
    auto_balance: String,
}

/// The control plane. Clones share the store.
#[derive(Clone)]
struct Store(Arc<Mutex<State>>);

impl Store {
    fn new(nodes: usize, partitions: usize) -> Self {
        let nodes = (0..nodes)
            .map(|i| Proc {
                id: NodeId::new(format!("store-{}:7000", i + 1)),
                running: true,
                boot: 1,
                version: "1.0".into(),
                staged: None,
            })
            .collect::<Vec<_>>();
        let n = nodes.len();
        let parts = (0..partitions)
            .map(|p| Part {
                leader: p % n,
                follower: (p + 1) % n,
            })
            .collect();
        Self(Arc::new(Mutex::new(State {
            nodes,
            parts,
            auto_balance: "on".into(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn index(&self, id: &NodeId) -> Option<usize> {
        self.state().nodes.iter().position(|n| &n.id == id)
    }
}

impl Cluster for Store {
    type Node = StoreNode;
    type Error = StoreError;

    fn name(&self) -> &str {
        "memstore"
    }

    async fn topology(&self) -> Result<Topology, StoreError> {
        let st = self.state();
        let role = Role::new("store", RoleKind::Data, 0);
        let nodes = st
            .nodes
            .iter()
            .map(|n| {
                NodeInfo::new(n.id.clone(), role.clone())
                    .alive(n.running)
                    .version(n.version.clone())
            })
            .collect();
        let partitions = st
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let replica = |n: usize, role| {
                    Replica::new(st.nodes[n].id.clone(), role).alive(st.nodes[n].running)
                };
                Partition::new(
                    format!("t.{i}"),
                    2,
                    vec![
                        replica(p.leader, ReplicaRole::Primary),
                        replica(p.follower, ReplicaRole::Secondary),
                    ],
                )
            })
            .collect();
        // A partition serves with its leader alone.
        Ok(Topology::new(nodes, partitions).min_serving(1))
    }

    fn node(&self, id: &NodeId) -> Option<StoreNode> {
        self.index(id).map(|i| StoreNode {
            store: self.clone(),
            index: i,
            id: id.clone(),
        })
    }

    /// It can restart and upgrade, but has no config files to edit: a `Config` change would
    /// restart a node and then fail `is_applied`, so it is refused before anything runs.
    fn check_change(&self, change: &Change) -> Result<(), ChangeError> {
        change.validate()?;
        match change {
            Change::Config { .. } => Err(ChangeError::Unsupported {
                reason: "memstore has no config files".into(),
            }),
            _ => Ok(()),
        }
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        match procedure {
            // The rebalancer would undo our drains, and it keeps nothing from healing.
            Procedure::HighAvailability => vec![Knob::rollout("auto_balance", "off")],
            _ => Vec::new(),
        }
    }

    async fn read_knob(&self, name: &str) -> Result<String, StoreError> {
        match name {
            "auto_balance" => Ok(self.state().auto_balance.clone()),
            other => Err(StoreError(format!("unknown knob {other}"))),
        }
    }

    async fn write_knob(&self, name: &str, value: &str) -> Result<(), StoreError> {
        match name {
            "auto_balance" => {
                self.state().auto_balance = value.into();
                Ok(())
            }
            other => Err(StoreError(format!("unknown knob {other}"))),
        }
    }

    /// Every leadership on the node moves to its follower, when that one runs.
    async fn drain(&self, node: &NodeId) -> Result<(), StoreError> {
        let i = self
            .index(node)
            .ok_or_else(|| StoreError(format!("unknown node {node}")))?;
        let mut st = self.state();
        let running: Vec<bool> = st.nodes.iter().map(|n| n.running).collect();
        for p in st.parts.iter_mut().filter(|p| p.leader == i) {
            if running[p.follower] {
                std::mem::swap(&mut p.leader, &mut p.follower);
            }
        }
        Ok(())
    }

    /// Holds when the node leads nothing.
    fn drained<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = StoreError> + 'a {
        // Probes may borrow the node id: no clone needed.
        probe_fn(move || async move {
            let i = self.index(node);
            let led = self
                .state()
                .parts
                .iter()
                .filter(|p| Some(p.leader) == i)
                .count();
            Ok(match led {
                0 => Health::Healthy,
                n => Health::waiting(format!("{node} still leads {n} partitions")),
            })
        })
    }

    /// An in-memory store has nothing to flush.
    async fn quiesce(&self, _: &NodeId) -> Result<(), StoreError> {
        Ok(())
    }

    fn quiesced<'a>(&'a self, _: &'a NodeId) -> impl HealthProbe<Error = StoreError> + 'a {
        probes::always()
    }

    /// Attached as soon as it runs.
    fn ready<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = StoreError> + 'a {
        probe_fn(move || async move {
            let up = self
                .index(node)
                .is_some_and(|i| self.state().nodes[i].running);
            Ok(if up {
                Health::Healthy
            } else {
                Health::waiting(format!("{node} is not running"))
            })
        })
    }

    /// Followers catch up on their own; leaderships stay where the drain put them.
    async fn rejoin(&self, _: &NodeId) -> Result<(), StoreError> {
        Ok(())
    }

    fn rejoined<'a>(&'a self, node: &'a NodeId) -> impl HealthProbe<Error = StoreError> + 'a {
        self.ready(node)
    }

    fn fully_healthy(&self) -> impl HealthProbe<Error = StoreError> + '_ {
        probe_fn(move || async move {
            let topology = self.topology().await?;
            Ok(probes::topology_fully_healthy(&topology))
        })
    }

    fn safe_to_stop<'a>(&'a self, _: &'a NodeId) -> impl HealthProbe<Error = StoreError> + 'a {
        probes::always()
    }

    /// Nothing here is worth retrying; a network backend returns `Transient` for timeouts and
    /// "not the leader" answers.
    fn classify(&self, _: &StoreError) -> ErrorClass {
        ErrorClass::Fatal
    }
}

/// One store process.
struct StoreNode {
    store: Store,
    index: usize,
    id: NodeId,
}

impl Node for StoreNode {
    type Error = StoreError;

    fn id(&self) -> &NodeId {
        &self.id
    }

    async fn stop(&self) -> Result<(), StoreError> {
        // A real process takes a moment to stop; the engine waits for `status`.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut st = self.store.state();
        st.nodes[self.index].running = false;
        // A leader that stops hands its partitions to their followers.
        let i = self.index;
        for p in st.parts.iter_mut().filter(|p| p.leader == i) {
            std::mem::swap(&mut p.leader, &mut p.follower);
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), StoreError> {
        let mut st = self.store.state();
        let n = &mut st.nodes[self.index];
        if !n.running {
            n.running = true;
            n.boot += 1;
            if let Some(v) = n.staged.take() {
                n.version = v;
            }
        }
        Ok(())
    }

    async fn status(&self) -> Result<NodeStatus, StoreError> {
        let st = self.store.state();
        let n = &st.nodes[self.index];
        let status = if n.running {
            NodeStatus::running()
        } else {
            NodeStatus::stopped()
        };
        Ok(status.boot(n.boot.to_string()).version(n.version.clone()))
    }

    /// Stages the new version and backs up the running one (the first backup stays: a resumed
    /// rollout may call this again).
    async fn apply(&self, change: &Change) -> Result<ApplyRecord, StoreError> {
        let mut st = self.store.state();
        let n = &mut st.nodes[self.index];
        if n.running {
            return Err(StoreError(format!("{} runs; stop it first", n.id)));
        }
        let backup = BTreeMap::from([("version".to_string(), n.version.clone())]);
        if let Change::Upgrade { version } = change {
            n.staged = Some(version.clone());
        }
        Ok(ApplyRecord::new(n.id.clone(), backup))
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), StoreError> {
        let mut st = self.store.state();
        let n = &mut st.nodes[self.index];
        n.staged = record.backup.get("version").cloned();
        Ok(())
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, StoreError> {
        let st = self.store.state();
        Ok(
            matches!(change, Change::Upgrade { version } if &st.nodes[self.index].version == version),
        )
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::new(4, 12);
    rollout_sim::conformance::check_cluster(&store).await?;
    println!("conformance: ok");
    let spec = Spec::new(Change::Upgrade {
        version: "1.1".into(),
    });
    print!("{}", rollout_core::plan(&store, &spec).await?);
    let journal = MemoryJournal::new();
    let show = |e: &rollout_core::Event| {
        if let rollout_core::Event::NodeDone { node } = e {
            println!("{node}: done");
        }
    };
    let report = roll(&store, &spec, Run::new(&journal).observe(&show)).await?;
    println!(
        "{:?}: {} nodes rolled, knobs restored: {}",
        report.outcome,
        report.rolled.len(),
        report.knobs_restored
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_example_backend_conforms_and_rolls() {
        let store = Store::new(4, 12);
        rollout_sim::conformance::check_cluster(&store)
            .await
            .unwrap();
        let boots: Vec<u64> = store.state().nodes.iter().map(|n| n.boot).collect();
        let spec = Spec::new(Change::Upgrade {
            version: "1.1".into(),
        });
        let report = roll(&store, &spec, Run::new(&MemoryJournal::new()))
            .await
            .unwrap();
        assert_eq!(report.rolled.len(), 4);
        assert!(report.knobs_restored);
        let st = store.state();
        for (n, before) in st.nodes.iter().zip(boots) {
            assert_eq!(n.version, "1.1", "{}", n.id);
            assert_eq!(n.boot, before + 1, "{} restarted once", n.id);
        }
        assert_eq!(st.auto_balance, "on");
    }
}
