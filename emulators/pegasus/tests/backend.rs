//! `PegasusCluster` against the emulator, over real sockets on loopback, on the wall clock
//! with the emulated cluster running 50 times faster.

use std::sync::Arc;

use rollout_core::{Change, Cluster, MemoryJournal, Outcome, Policy, Run, Spec, plan, roll};
use rollout_emulator_pegasus::{Emulator, ServerVersion};
use rollout_pegasus::{PegasusCluster, Timing};
use rollout_sim::{Flavor, SimBuilder};

const SCALE: u32 = 50;

/// One emulated cluster at a time: they run on the wall clock, and two at once on two cores
/// would slow each other's servers and clients into timeouts that say nothing about rollout.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn builder() -> SimBuilder {
    builder_at(SCALE)
}

fn builder_at(scale: u32) -> SimBuilder {
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.seed(7).time_scale(scale);
    b
}

async fn connect(
    emu: &Arc<Emulator>,
) -> PegasusCluster<impl Fn(&rollout_core::NodeId) -> Option<rollout_sim::SimNode> + use<>> {
    connect_at(emu, SCALE).await
}

async fn connect_at(
    emu: &Arc<Emulator>,
    scale: u32,
) -> PegasusCluster<impl Fn(&rollout_core::NodeId) -> Option<rollout_sim::SimNode> + use<>> {
    let e = emu.clone();
    PegasusCluster::connect(
        &emu.metas(),
        &emu.collectors(),
        move |id: &rollout_core::NodeId| e.node(id),
        Timing::default().scaled(scale),
    )
    .await
    .unwrap()
}

fn policy() -> Policy {
    policy_at(SCALE)
}

/// The policy's waits in wall time: the emulated cluster's seconds divided by the scale.
fn policy_at(scale: u32) -> Policy {
    let s = u64::from(scale);
    let d = rollout_core::policy::Deadlines::all(std::time::Duration::from_secs(3600 / s));
    Policy::default().deadlines(d).poll(
        std::time::Duration::from_millis(100 / s).max(std::time::Duration::from_millis(2)),
        std::time::Duration::from_millis(1000 / s),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_over_the_wire_matches_the_world() {
    let _serial = serial().await;
    let emu = Arc::new(
        Emulator::start(&builder(), ServerVersion::default())
            .await
            .unwrap(),
    );
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
    // 2.5's code default (`partition_guardian.cpp` @v2.5.0).
    assert_eq!(
        cluster.read_knob("meta.lb.assign_delay_ms").await.unwrap(),
        "300000"
    );
    assert_eq!(cluster.server_version().unwrap().to_string(), "2.5.0");
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
async fn an_emulated_rollout_completes_on_every_server_version_with_every_node_restarted_once() {
    let _serial = serial().await;
    for version in ServerVersion::ALL {
        let emu = Arc::new(Emulator::start(&builder(), version).await.unwrap());
        let cluster = connect(&emu).await;
        assert_eq!(
            cluster.server_version().unwrap().to_string(),
            version.release(),
            "{version}"
        );
        let journal = MemoryJournal::new();
        let spec = Spec::new(Change::Restart).policy(policy());
        let report = roll(&cluster, &spec, Run::new(&journal)).await.unwrap();
        assert_eq!(report.outcome, Outcome::Completed, "{version}");
        assert!(report.knobs_restored, "{version}");
        let truth = emu.sim().truth();
        assert!(
            truth.restarts.values().all(|&n| n == 1),
            "{version}: {:?}",
            truth.restarts
        );
        assert!(
            truth.crashes.values().all(|&n| n == 0),
            "{version}: {:?}",
            truth.crashes
        );
        assert_eq!(truth.monitor.writes_lost, 0, "{version}");
        assert!(truth.knobs_restored, "{version}");
        // Every primary moved as proposed: none demoted by a misread proposal, none dropped.
        let proposals = emu.proposals();
        assert!(
            proposals
                .iter()
                .all(|p| p.starts_with("move-primary") || p.starts_with("downgrade")),
            "{version}: {proposals:?}"
        );
        assert!(proposals.iter().any(|p| p.starts_with("move-primary")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_passes_the_conformance_suite_against_the_emulator() {
    let _serial = serial().await;
    let emu = Arc::new(
        Emulator::start(&builder(), ServerVersion::default())
            .await
            .unwrap(),
    );
    let cluster = connect(&emu).await;
    rollout_sim::conformance::check_cluster(&cluster)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_leader_failover_mid_rollout_is_survived_with_knobs_reapplied() {
    let _serial = serial().await;
    let mut b = builder();
    b.fault("leader-failover:at=100".parse().unwrap());
    let emu = Arc::new(Emulator::start(&b, ServerVersion::default()).await.unwrap());
    let cluster = connect(&emu).await;
    let journal = MemoryJournal::new();
    let first_leader = emu.sim().view().leader.unwrap();
    // What the meta leader holds each time a replica server is stopped.
    let at_stops = std::sync::Mutex::new(Vec::new());
    let observe = |e: &rollout_core::Event| {
        if let rollout_core::Event::PhaseStarted {
            node: Some(node),
            phase: rollout_core::Phase::Stop,
        } = e
            && emu
                .role_addrs("replica")
                .iter()
                .any(|a| a.to_string() == node.as_str())
        {
            let view = emu.sim().view();
            at_stops.lock().unwrap().push((
                view.leader,
                view.knobs.get("meta.lb.assign_delay_ms").cloned(),
            ));
        }
    };
    let spec = Spec::new(Change::Restart).policy(policy());
    let report = roll(&cluster, &spec, Run::new(&journal).observe(&observe))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    let truth = emu.sim().truth();
    assert!(truth.knobs_restored, "{:?}", truth.knobs);
    assert_eq!(truth.monitor.writes_lost, 0);
    // The failover happened (a meta crashed, not by the rollout) and reset the new leader's
    // knobs; the rollout set the maintenance window again before stopping any replica
    // server under the new leader.
    let meta_crashes: u32 = truth
        .crashes
        .iter()
        .filter(|(id, _)| id.as_str().starts_with("meta"))
        .map(|(_, n)| n)
        .sum();
    assert!(meta_crashes >= 1, "{:?}", truth.crashes);
    let at_stops = at_stops.into_inner().unwrap();
    assert!(
        at_stops
            .iter()
            .any(|(l, _)| l.as_ref().is_some_and(|l| l != &first_leader)),
        "no replica server was stopped under a new leader: {at_stops:?}"
    );
    assert!(
        at_stops
            .iter()
            .all(|(_, v)| v.as_deref() == Some("3600000")),
        "{at_stops:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_meta_restarted_mid_rollout_gets_the_knobs_again() {
    let _serial = serial().await;
    let mut b = builder();
    b.coordinators(1)
        .fault("leader-failover:at=100".parse().unwrap());
    let emu = Arc::new(Emulator::start(&b, ServerVersion::default()).await.unwrap());
    let cluster = connect(&emu).await;
    let journal = MemoryJournal::new();
    let meta = emu.sim().view().leader.unwrap();
    // The meta's process and what it holds each time a replica server is stopped.
    let at_stops = std::sync::Mutex::new(Vec::new());
    let observe = |e: &rollout_core::Event| {
        if let rollout_core::Event::PhaseStarted {
            node: Some(node),
            phase: rollout_core::Phase::Stop,
        } = e
            && emu
                .role_addrs("replica")
                .iter()
                .any(|a| a.to_string() == node.as_str())
        {
            let view = emu.sim().view();
            let boot = emu.sim().node_view(&meta).map(|n| n.boot);
            at_stops.lock().unwrap().push((
                boot,
                view.knobs
                    .get("meta.lb.add_secondary_max_count_for_one_node")
                    .cloned(),
                view.knobs.get("meta.lb.assign_delay_ms").cloned(),
            ));
        }
    };
    let spec = Spec::new(Change::Restart).policy(policy());
    let report = roll(&cluster, &spec, Run::new(&journal).observe(&observe))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    let truth = emu.sim().truth();
    assert!(truth.knobs_restored, "{:?}", truth.knobs);
    assert_eq!(truth.crashes.get(&meta), Some(&1), "{:?}", truth.crashes);
    // The same meta, restarted, leads again from its config; the rollout's knobs were
    // written on it again before any replica server was stopped under it.
    let at_stops = at_stops.into_inner().unwrap();
    assert!(
        at_stops.iter().any(|(boot, ..)| *boot > Some(1)),
        "no replica server was stopped after the meta restarted: {at_stops:?}"
    );
    let held = (Some("0".to_string()), Some("3600000".to_string()));
    assert!(
        at_stops
            .iter()
            .all(|(_, count, delay)| (count.clone(), delay.clone()) == held),
        "{at_stops:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_ready_only_once_its_start_time_moved() {
    use rollout_core::{Health, HealthProbe, Node};
    let _serial = serial().await;
    let emu = Arc::new(
        Emulator::start(&builder(), ServerVersion::default())
            .await
            .unwrap(),
    );
    let cluster = connect(&emu).await;
    let meta = rollout_core::NodeId::from(emu.metas()[0].to_string());
    // The drain notes the start time; the same process still runs, so it is not ready.
    cluster.drain(&meta).await.unwrap();
    match cluster.ready(&meta).check().await.unwrap() {
        Health::Waiting(why) => assert!(why.contains("/recentStartTime"), "{why}"),
        other => panic!("ready before any restart: {other:?}"),
    }
    let node = emu.node(&meta).unwrap();
    node.stop().await.unwrap();
    let poll = (
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(100),
    );
    let process_gone = rollout_core::probe::probe_fn(|| async {
        Ok(match node.status().await?.running {
            true => Health::Waiting("still running".into()),
            false => Health::Healthy,
        })
    });
    let stopped = rollout_core::wait::wait_until(
        &process_gone,
        std::time::Duration::from_secs(60),
        poll,
        |_: &rollout_sim::SimError| rollout_core::ErrorClass::Fatal,
        |_| {},
    )
    .await;
    assert!(stopped.is_ok(), "{stopped:?}");
    node.start().await.unwrap();
    let wait = rollout_core::wait::wait_until(
        &cluster.ready(&meta),
        std::time::Duration::from_secs(60),
        poll,
        |e| cluster.classify(e),
        |_| {},
    )
    .await;
    assert!(wait.is_ok(), "{wait:?}");
    assert_eq!(
        cluster.settle(&meta),
        Timing::default().scaled(SCALE).meta_settle
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_server_that_fails_to_start_halts_the_rollout_with_knobs_restored() {
    let _serial = serial().await;
    let mut b = builder();
    b.fault("fail-start:node=2".parse().unwrap());
    let emu = Arc::new(Emulator::start(&b, ServerVersion::default()).await.unwrap());
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
    let _serial = serial().await;
    let a = Arc::new(
        Emulator::start(&builder(), ServerVersion::default())
            .await
            .unwrap(),
    );
    let b = Arc::new(
        Emulator::start(&builder(), ServerVersion::default())
            .await
            .unwrap(),
    );
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
        .selection(rollout_core::policy::Selection::Nodes(vec![
            "127.0.0.1:1".into(),
        ]))
        .policy(policy());
    let err = roll(&cb, &spec, Run::new(&MemoryJournal::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, rollout_core::Error::UnknownNode(_)), "{err}");
    let after = b.sim().truth();
    assert_eq!(before.restarts, after.restarts);
    assert_eq!(before.knobs, after.knobs);
}

/// What our own client saw: writes acknowledged, writes that failed, and acknowledged writes
/// that a read after the rollout does not find (lost).
async fn client_load(
    metas: Vec<std::net::SocketAddr>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    scale: u32,
) -> (Vec<(Vec<u8>, Vec<u8>)>, usize) {
    // The emulated cluster's client timeout and retry (3 s and 250 ms), in wall time.
    let client = rollout_pegasus::client::DataClient::new(
        &metas,
        "temp",
        std::time::Duration::from_millis(3000 / u64::from(scale)),
        std::time::Duration::from_millis(250 / u64::from(scale))
            .max(std::time::Duration::from_millis(2)),
    );
    let mut acked = Vec::new();
    let mut failed = 0;
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("key-{i}").into_bytes();
        let value = format!("value-{i}").into_bytes();
        match client.put(&key, &value).await {
            Ok(()) => acked.push((key, value)),
            Err(_) => failed += 1,
        }
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    (acked, failed)
}

/// A rollout while our own client writes through the data path (at a scale of 20, so that a
/// 3-second client timeout is 150 ms of wall time); then every acknowledged write is read
/// back. Returns the report, the writes acknowledged, failed and lost.
async fn roll_under_load(
    procedure: rollout_core::Procedure,
) -> (
    rollout_core::Result<rollout_core::Report, rollout_pegasus::PegasusError>,
    usize,
    usize,
    usize,
) {
    const LOAD_SCALE: u32 = 20;
    let emu = Arc::new(
        Emulator::start(&builder_at(LOAD_SCALE), ServerVersion::default())
            .await
            .unwrap(),
    );
    let cluster = connect_at(&emu, LOAD_SCALE).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(client_load(emu.metas(), stop.clone(), LOAD_SCALE));
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart).policy(policy_at(LOAD_SCALE).procedure(procedure));
    let report = roll(&cluster, &spec, Run::new(&journal)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = load.await.unwrap();
    let reader = rollout_pegasus::client::DataClient::new(
        &emu.metas(),
        "temp",
        std::time::Duration::from_secs(2),
        std::time::Duration::from_millis(10),
    );
    let mut lost = 0;
    for (k, v) in &acked {
        if reader.get(k).await.unwrap().as_deref() != Some(v.as_slice()) {
            lost += 1;
        }
    }
    (report, acked.len(), failed, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_writing_through_the_data_path_during_the_rollout_loses_nothing() {
    let _serial = serial().await;
    let (report, acked, failed, lost) =
        roll_under_load(rollout_core::Procedure::HighAvailability).await;
    assert_eq!(report.unwrap().outcome, Outcome::Completed);
    assert!(acked > 100, "{acked} writes");
    assert_eq!(failed, 0, "writes that failed during the rollout");
    assert_eq!(lost, 0, "acknowledged writes not found after the rollout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_sees_failures_under_the_simplified_procedure() {
    let _serial = serial().await;
    // The figure can come out bad: restarting replica servers without moving their
    // primaries first leaves partitions without a primary until the meta notices.
    let (report, acked, failed, _) = roll_under_load(rollout_core::Procedure::Simple).await;
    assert_eq!(report.unwrap().outcome, Outcome::Completed);
    assert!(acked > 100, "{acked} writes");
    assert!(failed > 0, "the simplified procedure failed no write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_path_reads_back_what_it_wrote_and_nothing_else() {
    let _serial = serial().await;
    let emu = Arc::new(
        Emulator::start(&builder(), ServerVersion::default())
            .await
            .unwrap(),
    );
    let client = rollout_pegasus::client::DataClient::new(
        &emu.metas(),
        "temp",
        std::time::Duration::from_millis(3000 / u64::from(SCALE)),
        std::time::Duration::from_millis(5),
    );
    client.put(b"k", b"v").await.unwrap();
    assert_eq!(client.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(client.get(b"absent").await.unwrap(), None);
}
