//! Shared fixtures for core's tests: the in-test cluster, the simulator, and a wrapper that
//! fails one chosen call.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod failing;
pub mod tiny;

use std::collections::BTreeMap;

use rollout_core::{Cluster, Node, NodeId};
pub use rollout_sim::CrashJournal;
use rollout_sim::{Fault, Flavor, NodeRef, SimBuilder, SimCluster};

pub use failing::{At, EVERY, Failing};
pub use tiny::Tiny;

/// Switches a fixture is built with.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// 1-based data node whose drain never completes.
    pub stuck_drain: Option<usize>,
    /// 1-based data node that crash-loops on start.
    pub fail_start: Option<usize>,
}

/// A cluster the engine tests run against.
pub trait Fixture: Cluster + Clone + 'static {
    fn build(opts: &Opts) -> Self;
    fn knobs_restored(&self) -> bool;
    fn restarts(&self) -> BTreeMap<NodeId, u32>;
    /// The id of the n-th (1-based) data node.
    fn data(&self, n: usize) -> NodeId;
}

impl Fixture for Tiny {
    fn build(opts: &Opts) -> Self {
        let t = Tiny::new(7, 3, 8);
        if let Some(n) = opts.stuck_drain {
            t.set_stuck_drain(&format!("d{n}:1"), true);
        }
        if let Some(n) = opts.fail_start {
            t.set_fail_start(&format!("d{n}:1"));
        }
        t
    }
    fn knobs_restored(&self) -> bool {
        Tiny::knobs_restored(self)
    }
    fn restarts(&self) -> BTreeMap<NodeId, u32> {
        Tiny::restarts(self)
    }
    fn data(&self, n: usize) -> NodeId {
        NodeId::new(format!("d{n}:1"))
    }
}

impl Fixture for SimCluster {
    fn build(opts: &Opts) -> Self {
        let mut b = SimBuilder::new(Flavor::Pegasus);
        b.seed(3)
            .data_nodes(6)
            .racks(3)
            .placement(rollout_sim::Placement::RackAware)
            .partitions(24);
        if let Some(n) = opts.stuck_drain {
            b.fault(Fault::StuckDrain {
                node: NodeRef::Data(n),
            });
        }
        if let Some(n) = opts.fail_start {
            b.fault(Fault::FailStart {
                node: NodeRef::Data(n),
            });
        }
        b.build().expect("a valid shape")
    }
    fn knobs_restored(&self) -> bool {
        self.truth().knobs_restored
    }
    fn restarts(&self) -> BTreeMap<NodeId, u32> {
        self.truth().restarts
    }
    fn data(&self, n: usize) -> NodeId {
        NodeId::new(format!("replica-{n}:34801"))
    }
}

/// Whether every node of the cluster reports a running process.
pub async fn all_running<C: Cluster>(c: &C) -> bool {
    let topology = c.topology().await.expect("topology");
    for n in &topology.nodes {
        let node = c.node(&n.id).expect("node");
        if !node.status().await.expect("status").running {
            return false;
        }
    }
    true
}
