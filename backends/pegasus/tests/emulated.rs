//! `PegasusCluster` against the emulator, over real sockets on loopback, on the wall clock
//! with the emulated cluster running 50 times faster.
#![cfg(feature = "emulator")]

use std::sync::Arc;

use rollout_core::{Change, Cluster, MemoryJournal, Outcome, Policy, Run, Spec, plan, roll};
use rollout_pegasus::emulator::Emulator;
use rollout_pegasus::{PegasusCluster, Timing};
use rollout_sim::{Flavor, SimBuilder};

const SCALE: u32 = 50;

fn builder() -> SimBuilder {
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.seed(7).time_scale(SCALE);
    b
}

async fn connect(
    emu: &Arc<Emulator>,
) -> PegasusCluster<impl Fn(&rollout_core::NodeId) -> Option<rollout_sim::SimNode> + use<>> {
    let e = emu.clone();
    PegasusCluster::connect(
        &emu.metas(),
        &emu.collectors(),
        move |id: &rollout_core::NodeId| e.node(id),
        Timing::default().scaled(SCALE),
    )
    .await
    .unwrap()
}

/// The policy's waits in wall time: the emulated cluster's seconds divided by the scale.
fn policy() -> Policy {
    let d = rollout_core::Deadlines::all(std::time::Duration::from_secs(3600 / u64::from(SCALE)));
    Policy::default().deadlines(d).poll(
        std::time::Duration::from_millis(100 / u64::from(SCALE))
            .max(std::time::Duration::from_millis(2)),
        std::time::Duration::from_millis(1000 / u64::from(SCALE)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_over_the_wire_matches_the_world() {
    let emu = Arc::new(Emulator::start(&builder()).await.unwrap());
    let cluster = connect(&emu).await;
    let t = cluster.topology().await.unwrap();
    assert_eq!(t.partitions.len(), 64);
    assert!(
        t.partitions
            .iter()
            .all(|p| p.table.as_deref() == Some("temp"))
    );
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
    let replicas = t.nodes.iter().filter(|n| n.role.name == "replica").count();
    assert_eq!(replicas, 6);
    assert_eq!(t.nodes.iter().filter(|n| n.leader).count(), 1);
    assert_eq!(cluster.read_knob("meta_level").await.unwrap(), "steady");
    assert_eq!(
        cluster.read_knob("meta.lb.assign_delay_ms").await.unwrap(),
        "600000"
    );
    let p = plan(&cluster, &Spec::new(Change::Restart).policy(policy()))
        .await
        .unwrap();
    assert_eq!(p.node_count(), 6 + 3 + 1);
    assert!(
        p.limits.iter().any(|l| l.contains("read from the leader")),
        "{:?}",
        p.limits
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_rollout_completes_with_every_node_restarted_once() {
    let emu = Arc::new(Emulator::start(&builder()).await.unwrap());
    let cluster = connect(&emu).await;
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart).policy(policy());
    let report = roll(&cluster, &spec, Run::new(&journal)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.knobs_restored);
    let truth = emu.sim().truth();
    assert!(
        truth.restarts.values().all(|&n| n == 1),
        "{:?}",
        truth.restarts
    );
    assert_eq!(truth.monitor.writes_lost, 0);
    assert!(truth.knobs_restored);
}
