//! `OpenMldbCluster` against the emulator on a real ZooKeeper, over real sockets, on the wall
//! clock with the emulated cluster running 20 times faster.

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use rollout_core::{Change, Cluster, MemoryJournal, Outcome, Policy, Run, Spec, roll};
use rollout_emulator_openmldb::{Emulator, Options, ServerVersion};
use rollout_openmldb::{Config, OpenMldbCluster, Others, Timing};
use rollout_sim::{Flavor, SimBuilder};
use support::zookeeper;

const SCALE: u32 = 20;

/// One emulated cluster at a time: they run on the wall clock.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn builder() -> SimBuilder {
    let mut b = SimBuilder::new(Flavor::OpenMldb);
    b.seed(7)
        .data_nodes(3)
        .coordinators(2)
        .partitions(16)
        .time_scale(SCALE);
    b
}

fn root(name: &str) -> String {
    format!("/rollout-emulated-{}-{name}", std::process::id())
}

/// The cluster the tests roll; its factory hands out the emulator's processes.
type Emulated = OpenMldbCluster<
    Box<dyn Fn(&rollout_core::NodeId) -> Option<rollout_sim::SimNode> + Send + Sync>,
>;

async fn start(name: &str) -> (Arc<Emulator>, Emulated) {
    start_with(name, &builder()).await
}

/// An emulator of `b` in its own root, and the backend connected to it.
async fn start_with(name: &str, b: &SimBuilder) -> (Arc<Emulator>, Emulated) {
    let zk = zookeeper();
    let root = root(name);
    let emu = Arc::new(
        Emulator::start(b, &zk, &root, Options::new(ServerVersion::default()))
            .await
            .unwrap(),
    );
    // Registration follows the processes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = emu.clone();
    let others = Others {
        apiservers: emu.endpoints("apiserver"),
        taskmanagers: emu.endpoints("taskmanager"),
    };
    let config = Config::new(&zk, &root)
        .others(others)
        .timing(Timing::default().scaled(SCALE));
    let cluster = OpenMldbCluster::connect(
        &config,
        Box::new(move |id: &rollout_core::NodeId| e.node(id))
            as Box<dyn Fn(&rollout_core::NodeId) -> Option<rollout_sim::SimNode> + Send + Sync>,
    )
    .await
    .unwrap();
    (emu, cluster)
}

fn policy() -> Policy {
    let s = u64::from(SCALE);
    Policy::default()
        .deadlines(rollout_core::policy::Deadlines::all(Duration::from_secs(
            3600 / s,
        )))
        .poll(Duration::from_millis(5), Duration::from_millis(1000 / s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_over_the_wire_matches_the_world() {
    let _serial = serial().await;
    let (emu, cluster) = start("topology").await;
    let t = cluster.topology().await.unwrap();
    assert_eq!(t.partitions.len(), 16);
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
    let tablets = t.nodes.iter().filter(|n| n.role.name == "tablet").count();
    assert_eq!(tablets, 3);
    assert_eq!(
        t.nodes
            .iter()
            .filter(|n| n.role.name == "nameserver")
            .count(),
        2
    );
    assert_eq!(cluster.read_knob("auto_failover").await.unwrap(), "true");
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_rollout_completes_losing_no_write() {
    let _serial = serial().await;
    let (emu, cluster) = start("roll").await;
    let rows_before = cluster.row_counts().await.unwrap();
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart).policy(policy());
    let report = roll(&cluster, &spec, Run::new(&journal)).await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let zk = rollout_openmldb::zk::Zk::connect(
                &zookeeper(),
                &root("roll"),
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap();
            let kids = zk
                .client()
                .list_children(&format!("{}/leader", root("roll")))
                .await;
            let view = emu.sim().view();
            panic!(
                "{}\nlock nodes {kids:?}\nnodes {:?}\nns endpoints {:?}",
                rollout_core::chain(&e),
                view.nodes
                    .iter()
                    .map(|n| (n.id.to_string(), n.running, n.serving))
                    .collect::<Vec<_>>(),
                emu.endpoints("nameserver")
            );
        }
    };
    assert_eq!(report.outcome, Outcome::Completed);
    let truth = emu.sim().truth();
    assert!(truth.knobs_restored, "{:?}", truth.knobs);
    assert!(
        truth.restarts.values().all(|&n| n == 1),
        "{:?}",
        truth.restarts
    );
    assert!(truth.monitor.writes_acked > 0);
    assert_eq!(truth.monitor.writes_lost, 0);
    // The seed's last check: every table's row count grows again.
    let rows_after = cluster.row_counts().await.unwrap();
    for (table, before) in &rows_before {
        assert!(
            rows_after[table] > *before,
            "{table}: {before} -> {:?}",
            rows_after.get(table)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_passes_the_conformance_suite_against_the_emulator() {
    let _serial = serial().await;
    let (_emu, cluster) = start("conformance").await;
    rollout_sim::conformance::check_cluster(&cluster)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameserver_failover_mid_rollout_is_survived_with_auto_failover_restored() {
    let _serial = serial().await;
    let mut b = builder();
    b.fault("leader-failover:at=40".parse().unwrap());
    let (emu, cluster) = start_with("failover", &b).await;
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart).policy(policy());
    let result = roll(&cluster, &spec, Run::new(&journal)).await;
    let truth = emu.sim().truth();
    let ns_crashes: u32 = truth
        .crashes
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("ns-"))
        .map(|(_, c)| c)
        .sum();
    assert!(
        ns_crashes >= 1,
        "the nameserver leader never failed over: {:?}",
        truth.crashes
    );
    assert!(
        result.is_ok(),
        "{}",
        result
            .err()
            .map(|e| rollout_core::chain(&e))
            .unwrap_or_default()
    );
    assert!(truth.knobs_restored, "{:?}", truth.knobs);
    assert_eq!(truth.monitor.writes_lost, 0);
    assert!(
        truth.restarts.values().all(|&n| n <= 1),
        "{:?}",
        truth.restarts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_that_fails_to_start_halts_the_rollout_with_auto_failover_restored() {
    let _serial = serial().await;
    let mut b = builder();
    b.fault("fail-start:node=2".parse().unwrap());
    let (emu, cluster) = start_with("failstart", &b).await;
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Config {
        edits: vec![rollout_core::ConfigEdit::Set {
            file: "conf/tablet.flags".into(),
            key: "zk_session_timeout".into(),
            value: "20000".into(),
        }],
    })
    .policy(policy());
    let err = roll(&cluster, &spec, Run::new(&journal)).await.unwrap_err();
    let msg = rollout_core::chain(&err);
    assert!(msg.contains("exited after its start"), "{msg}");
    let truth = emu.sim().truth();
    assert!(truth.knobs_restored, "{:?}", truth.knobs);
    assert_eq!(truth.monitor.writes_lost, 0);
    assert!(truth.restarts.values().all(|&n| n <= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_without_openmldb_is_refused_before_anything_changes() {
    let _serial = serial().await;
    let zk = zookeeper();
    let err = OpenMldbCluster::connect(
        &Config::new(&zk, "/surely-not-openmldb"),
        |_: &rollout_core::NodeId| None::<rollout_sim::SimNode>,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no OpenMLDB under /surely-not-openmldb"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_left_by_an_interrupted_move_is_finished_by_the_next_drain() {
    let _serial = serial().await;
    let (emu, cluster) = start("stale").await;
    let p = emu.sim().openmldb_partitions().remove(0);
    let leader = p
        .replicas
        .iter()
        .find(|r| r.is_leader)
        .unwrap()
        .node
        .clone();
    let at = emu.endpoint_of(&leader);
    // An orchestrator that died between the fence and the ChangeLeader left this.
    let _: rollout_openmldb::api::Status =
        rollout_openmldb::api::Endpoint::new(&at, Duration::from_secs(5))
            .call(
                "TabletServer",
                "ChangeRole",
                &rollout_openmldb::api::ChangeRoleRequest {
                    tid: p.table,
                    pid: p.pid,
                    mode: "kTableFollower",
                    term: None,
                    replicas: Vec::new(),
                },
            )
            .await
            .unwrap();
    cluster.write_knob("auto_failover", "false").await.unwrap();
    cluster.drain(&rollout_core::NodeId::new(at)).await.unwrap();
    let now = emu
        .sim()
        .openmldb_partitions()
        .into_iter()
        .find(|q| q.table == p.table && q.pid == p.pid)
        .unwrap();
    let new_leader = now.replicas.iter().find(|r| r.is_leader).unwrap();
    assert_ne!(new_leader.node, leader, "the fenced partition moved");
    assert_eq!(emu.sim().truth().monitor.writes_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_auto_failover_on_fences_nothing() {
    let _serial = serial().await;
    let (emu, cluster) = start("autofailover").await;
    let tablet = emu.endpoints("tablet").remove(0);
    let leaders = |emu: &Emulator| -> usize {
        emu.sim()
            .view()
            .nodes
            .iter()
            .filter(|n| n.role == "tablet")
            .map(|n| {
                emu.sim()
                    .openmldb_tablet(&n.id)
                    .iter()
                    .filter(|p| p.leader)
                    .count()
            })
            .sum()
    };
    let before = leaders(&emu);
    let err = cluster
        .drain(&rollout_core::NodeId::new(tablet))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("auto_failover is on"), "{err}");
    assert_eq!(leaders(&emu), before, "a leader was fenced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_lifts_a_fence_an_interrupted_move_left() {
    let _serial = serial().await;
    let (emu, cluster) = start("lift").await;
    let p = emu.sim().openmldb_partitions().remove(0);
    let leader = p
        .replicas
        .iter()
        .find(|r| r.is_leader)
        .unwrap()
        .node
        .clone();
    let at = emu.endpoint_of(&leader);
    let fenced = |emu: &Emulator| {
        emu.sim()
            .openmldb_tablet(&leader)
            .iter()
            .any(|q| q.table == p.table && q.pid == p.pid && !q.leader)
    };
    let _: rollout_openmldb::api::Status =
        rollout_openmldb::api::Endpoint::new(&at, Duration::from_secs(5))
            .call(
                "TabletServer",
                "ChangeRole",
                &rollout_openmldb::api::ChangeRoleRequest {
                    tid: p.table,
                    pid: p.pid,
                    mode: "kTableFollower",
                    term: None,
                    replicas: Vec::new(),
                },
            )
            .await
            .unwrap();
    assert!(fenced(&emu));
    cluster.heal().await.unwrap();
    assert!(!fenced(&emu), "the fence is still up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_leader_that_never_runs_fails_the_drain_by_op_id_and_loses_nothing() {
    let _serial = serial().await;
    let mut b = builder();
    b.fault("stuck-drain:node=1".parse().unwrap());
    let zk = zookeeper();
    let root = root("stuck");
    let emu = Arc::new(
        Emulator::start(&b, &zk, &root, Options::new(ServerVersion::default()))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = emu.clone();
    let mut timing = Timing::default().scaled(SCALE);
    timing.op = Duration::from_secs(2);
    let cluster = OpenMldbCluster::connect(
        &Config::new(&zk, &root).timing(timing),
        move |id: &rollout_core::NodeId| e.node(id),
    )
    .await
    .unwrap();
    cluster.write_knob("auto_failover", "false").await.unwrap();
    let tablet = emu.endpoint_of(&rollout_core::NodeId::new("tablet-1:10921"));
    let started = tokio::time::Instant::now();
    let err = cluster
        .drain(&rollout_core::NodeId::new(tablet))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("has not finished in time") && err.contains("op "),
        "{err}"
    );
    assert!(err.contains("stays fenced"), "{err}");
    // The partition refuses writes rather than lose them; heal leaves the fence up while the
    // op is queued.
    cluster.heal().await.unwrap();
    assert_eq!(emu.sim().truth().monitor.writes_lost, 0);
}
