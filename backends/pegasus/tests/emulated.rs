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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_passes_the_conformance_suite_against_the_emulator() {
    let emu = Arc::new(Emulator::start(&builder()).await.unwrap());
    let cluster = connect(&emu).await;
    rollout_sim::conformance::check_cluster(&cluster)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_leader_failover_mid_rollout_is_survived_with_knobs_reapplied() {
    let mut b = builder();
    b.fault("leader-failover:at=100".parse().unwrap());
    let emu = Arc::new(Emulator::start(&b).await.unwrap());
    let cluster = connect(&emu).await;
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart).policy(policy());
    let report = roll(&cluster, &spec, Run::new(&journal)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    let truth = emu.sim().truth();
    assert!(truth.knobs_restored, "{:?}", truth.knobs);
    assert_eq!(truth.monitor.writes_lost, 0);
    // The failover reset the new leader's knobs; the rollout set them again.
    let sets = journal
        .entries()
        .iter()
        .filter(|e| matches!(e, rollout_core::Entry::KnobSaved { .. }))
        .count();
    assert!(sets >= 4, "{sets}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_server_that_fails_to_start_halts_the_rollout_with_knobs_restored() {
    let mut b = builder();
    b.fault("fail-start:node=2".parse().unwrap());
    let emu = Arc::new(Emulator::start(&b).await.unwrap());
    let cluster = connect(&emu).await;
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart).policy(policy());
    let err = roll(&cluster, &spec, Run::new(&journal)).await.unwrap_err();
    let msg = rollout_core::chain(&err);
    assert!(msg.contains("exited after its start"), "{msg}");
    let truth = emu.sim().truth();
    assert!(truth.knobs_restored, "{:?}", truth.knobs);
    assert!(truth.restarts.values().all(|&n| n <= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_journal_and_an_unknown_node_are_refused_before_anything_changes() {
    let a = Arc::new(Emulator::start(&builder()).await.unwrap());
    let b = Arc::new(Emulator::start(&builder()).await.unwrap());
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    assert_ne!(ca.name(), cb.name());
    let journal = MemoryJournal::new();
    // A canary of one node on cluster a leaves its journal open.
    let spec = Spec::new(Change::Restart).policy(policy().canary(1));
    let r = roll(&ca, &spec, Run::new(&journal)).await.unwrap();
    assert!(matches!(r.outcome, Outcome::Halted(_)));
    let before = b.sim().truth();
    let err = roll(&cb, &spec, Run::new(&journal)).await.unwrap_err();
    assert!(err.to_string().contains("of cluster"), "{err}");
    let spec = Spec::new(Change::Restart)
        .selection(rollout_core::Selection::Nodes(vec!["127.0.0.1:1".into()]))
        .policy(policy());
    let err = roll(&cb, &spec, Run::new(&MemoryJournal::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, rollout_core::Error::UnknownNode(_)), "{err}");
    let after = b.sim().truth();
    assert_eq!(before.restarts, after.restarts);
    assert_eq!(before.knobs, after.knobs);
}
