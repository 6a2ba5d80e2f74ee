//! The emulator against what the upstream servers do at v0.8.5 and v0.9.2
//! (docs/upstream/openmldb.md), and the backend against that emulator where its old
//! behaviour failed on a real cluster: each test here fails with that behaviour put back.

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use rollout_core::{
    Change, Cluster, HealthProbe, MemoryJournal, Node, NodeId, Outcome, Policy, Run, Spec, roll,
};
use rollout_emulator_openmldb::{Emulator, Options, ServerVersion};
use rollout_openmldb::api::{
    ChangeLeaderRequest, ConfSetRequest, Endpoint, Pair, RecoverEndpointRequest,
    RecoverTableRequest, ReplicaNsRequest, ShowTableRequest, ShowTableResponse, Status,
    UpdateTableAliveRequest, code,
};
use rollout_openmldb::{Config, OpenMldbCluster, OpenMldbError, Others, Timing};
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
        .partitions(8)
        .time_scale(SCALE);
    b
}

fn root(name: &str) -> String {
    format!("/rollout-fidelity-{}-{name}", std::process::id())
}

type Factory = Box<dyn Fn(&NodeId) -> Option<rollout_sim::SimNode> + Send + Sync>;
type Emulated = OpenMldbCluster<Factory>;

async fn emulate(name: &str, b: &SimBuilder, options: Options) -> Arc<Emulator> {
    let emu = Arc::new(
        Emulator::start(b, &zookeeper(), &root(name), options)
            .await
            .unwrap(),
    );
    // Registration follows the processes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    emu
}

fn config(emu: &Emulator, name: &str) -> Config {
    let others = Others {
        apiservers: emu.endpoints("apiserver"),
        taskmanagers: emu.endpoints("taskmanager"),
    };
    Config::new(&zookeeper(), &root(name))
        .others(others)
        .timing(Timing::default().scaled(SCALE))
}

async fn connect(emu: &Arc<Emulator>, config: &Config) -> Result<Emulated, OpenMldbError> {
    let e = emu.clone();
    OpenMldbCluster::connect(config, Box::new(move |id: &NodeId| e.node(id)) as Factory).await
}

fn policy() -> Policy {
    let s = u64::from(SCALE);
    Policy::default()
        .deadlines(rollout_core::policy::Deadlines::all(Duration::from_secs(
            3600 / s,
        )))
        .poll(Duration::from_millis(5), Duration::from_millis(1000 / s))
}

/// The nameserver that leads (a standby answers 300).
async fn leader(emu: &Emulator) -> Endpoint {
    for _ in 0..100 {
        for addr in emu.endpoints("nameserver") {
            let ns = Endpoint::new(&addr, Duration::from_secs(2));
            let r: Result<ShowTableResponse, _> = ns
                .call(
                    "NameServer",
                    "ShowTable",
                    &ShowTableRequest { show_all: true },
                )
                .await;
            if r.is_ok() {
                return ns;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no nameserver leads");
}

async fn call(ns: &Endpoint, method: &'static str, req: &impl serde::Serialize) -> i32 {
    match ns.call::<_, Status>("NameServer", method, req).await {
        Ok(_) => code::OK,
        Err(OpenMldbError::App { code, .. }) => code,
        Err(e) => panic!("{method}: {e}"),
    }
}

async fn auto_failover(ns: &Endpoint, on: bool) {
    let req = ConfSetRequest {
        conf: Pair {
            key: "auto_failover".into(),
            value: on.to_string(),
        },
    };
    assert_eq!(call(ns, "ConfSet", &req).await, code::OK);
}

/// The partitions as the nameserver records them: (db, table, pid, leader, followers).
async fn partitions(ns: &Endpoint) -> Vec<(String, String, u32, String, Vec<String>)> {
    let t: ShowTableResponse = ns
        .call(
            "NameServer",
            "ShowTable",
            &ShowTableRequest { show_all: true },
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for table in &t.table_info {
        for p in &table.table_partition {
            let leader = p
                .partition_meta
                .iter()
                .find(|m| m.is_leader && m.is_alive)
                .map(|m| m.endpoint.clone())
                .unwrap_or_default();
            let followers = p
                .partition_meta
                .iter()
                .filter(|m| !m.is_leader)
                .map(|m| m.endpoint.clone())
                .collect();
            out.push((
                table.db.clone(),
                table.name.clone(),
                p.pid,
                leader,
                followers,
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_rolls_losing_nothing_and_names_itself() {
    let _serial = serial().await;
    for (version, release) in [
        (ServerVersion::V0_8, "0.8.5"),
        (ServerVersion::V0_9, "0.9.2"),
    ] {
        let name = format!("roll-{version}");
        let emu = emulate(&name, &builder(), Options::new(version)).await;
        let cluster = connect(&emu, &config(&emu, &name)).await.unwrap();
        assert_eq!(
            cluster.server_version().map(|v| (v.major, v.minor, v.bug)),
            Some((
                0,
                release[2..3].parse().unwrap(),
                release[4..].parse().unwrap()
            )),
            "{version}"
        );
        let spec = Spec::new(Change::Restart).policy(policy());
        let report = roll(&cluster, &spec, Run::new(&MemoryJournal::new()))
            .await
            .unwrap_or_else(|e| panic!("{version}: {}", rollout_core::chain(&e)));
        assert_eq!(report.outcome, Outcome::Completed, "{version}");
        let truth = emu.sim().truth();
        assert!(truth.knobs_restored, "{version}: {:?}", truth.knobs);
        assert!(truth.restarts.values().all(|&n| n == 1), "{version}");
        assert!(truth.monitor.writes_acked > 0, "{version}");
        assert_eq!(truth.monitor.writes_lost, 0, "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nameserver_refuses_what_upstream_refuses() {
    let _serial = serial().await;
    let emu = emulate("refusals", &builder(), Options::new(ServerVersion::V0_9)).await;
    let ns = leader(&emu).await;
    let (db, name, pid, lead, followers) = partitions(&ns).await.remove(0);
    let follower = followers[0].clone();
    let recover = |endpoint: &str| RecoverTableRequest {
        name: name.clone(),
        pid,
        endpoint: endpoint.into(),
        db: db.clone(),
    };
    // auto_failover on: every manual recovery is refused (301).
    assert_eq!(
        call(&ns, "RecoverTable", &recover(&follower)).await,
        code::AUTO_FAILOVER_IS_ENABLED
    );
    let alive = UpdateTableAliveRequest {
        name: name.clone(),
        endpoint: follower.clone(),
        pid,
        is_alive: false,
        db: db.clone(),
    };
    assert_eq!(
        call(&ns, "UpdateTableAliveStatus", &alive).await,
        code::AUTO_FAILOVER_IS_ENABLED
    );
    auto_failover(&ns, false).await;
    // An alive replica needs no recovery (311).
    assert_eq!(
        call(&ns, "RecoverTable", &recover(&follower)).await,
        code::PARTITION_IS_ALIVE
    );
    // The leader is not deleted (102).
    let del = ReplicaNsRequest {
        name: name.clone(),
        pid,
        endpoint: lead.clone(),
        db: db.clone(),
    };
    assert_eq!(call(&ns, "DelReplicaNS", &del).await, code::TABLE_IS_LEADER);
    // A candidate that is not an alive follower: the op is not created (305).
    let change = |candidate: &str| ChangeLeaderRequest {
        name: name.clone(),
        pid,
        candidate_leader: candidate.into(),
        db: db.clone(),
    };
    assert_eq!(
        call(&ns, "ChangeLeader", &change(&lead)).await,
        code::CREATE_OP_FAILED
    );
    assert_eq!(call(&ns, "UpdateTableAliveStatus", &alive).await, code::OK);
    assert_eq!(
        call(&ns, "ChangeLeader", &change(&follower)).await,
        code::CREATE_OP_FAILED,
        "a follower marked not alive is no candidate"
    );
    // A RecoverEndpoint wider than name_server_task_max_concurrency (307).
    let wide = RecoverEndpointRequest {
        endpoint: follower.clone(),
        need_restore: false,
        concurrency: Some(9),
    };
    assert_eq!(
        call(&ns, "RecoverEndpoint", &wide).await,
        code::INVALID_PARAMETER
    );
    drop(emu);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_endpoint_alone_leaves_a_restarted_tablet_unloaded_and_the_rejoin_recovers_it() {
    let _serial = serial().await;
    let name = "recover-endpoint";
    let emu = emulate(name, &builder(), Options::new(ServerVersion::V0_9)).await;
    let cluster = connect(&emu, &config(&emu, name)).await.unwrap();
    let ns = leader(&emu).await;
    auto_failover(&ns, false).await;
    // A tablet that leads nothing restarts while auto_failover is off.
    let t = cluster.topology().await.unwrap();
    let tablet = t
        .nodes
        .iter()
        .filter(|n| n.role.name == "tablet")
        .map(|n| n.id.clone())
        .find(|id| {
            !t.partitions.iter().any(|p| {
                p.replicas
                    .iter()
                    .any(|r| &r.node == id && r.role == rollout_core::ReplicaRole::Primary)
            })
        });
    let tablet = match tablet {
        Some(t) => t,
        None => {
            // Every tablet leads something: drain the first one.
            let id = t
                .nodes
                .iter()
                .find(|n| n.role.name == "tablet")
                .unwrap()
                .id
                .clone();
            cluster.drain(&id).await.unwrap();
            id
        }
    };
    let node = emu.node(&tablet).unwrap();
    node.stop().await.unwrap();
    let wait = |what: &'static str, ok: bool| {
        assert!(ok, "{what}");
    };
    for _ in 0..400 {
        if cluster.stopped(&tablet).check().await.unwrap().is_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    node.start().await.unwrap();
    let mut ready = false;
    for _ in 0..400 {
        if cluster.ready(&tablet).check().await.unwrap().is_healthy() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait("the tablet is ready again", ready);
    // The nameserver still marks its replicas alive: RecoverEndpoint skips every one.
    let req = RecoverEndpointRequest {
        endpoint: emu.endpoint_of(&tablet),
        need_restore: false,
        concurrency: Some(2),
    };
    assert_eq!(call(&ns, "RecoverEndpoint", &req).await, code::OK);
    // Ten seconds of the emulated cluster's time: far more than its ops take.
    tokio::time::sleep(Duration::from_secs(10) / SCALE).await;
    let not_back = cluster.rejoined(&tablet).check().await.unwrap();
    assert!(
        !not_back.is_healthy(),
        "RecoverEndpoint alone recovered the tablet: {not_back:?}"
    );
    // The rejoin marks each unloaded replica not alive first, then recovers it.
    cluster.rejoin(&tablet).await.unwrap();
    let mut back = false;
    for _ in 0..400 {
        if cluster
            .rejoined(&tablet)
            .check()
            .await
            .unwrap()
            .is_healthy()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait("the rejoin recovers every replica", back);
    auto_failover(&ns, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_need_authorization_on_0_9_only() {
    let _serial = serial().await;
    let http = reqwest::Client::new();
    for (version, answers) in [(ServerVersion::V0_8, true), (ServerVersion::V0_9, false)] {
        let name = format!("auth-{version}");
        let emu = emulate(&name, &builder(), Options::new(version)).await;
        let addr = emu.endpoints("tablet").remove(0);
        let r = http
            .post(format!("http://{addr}/TabletServer/GetTableStatus"))
            .body("{}")
            .send()
            .await;
        assert_eq!(
            r.as_ref().is_ok_and(|r| r.status().is_success()),
            answers,
            "{version}: {r:?}"
        );
        drop(emu);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_name_and_a_locked_zookeeper_are_read_as_the_servers_write_them() {
    let _serial = serial().await;
    // --use_name: the tablets are known by name; the backend reaches them at their
    // real_endpoint.
    let name = "use-name";
    let emu = emulate(
        name,
        &builder(),
        Options::new(ServerVersion::V0_9).use_name(),
    )
    .await;
    let cluster = connect(&emu, &config(&emu, name)).await.unwrap();
    let t = cluster.topology().await.unwrap();
    assert_eq!(t.partitions.len(), 8);
    let tablet = t.nodes.iter().find(|n| n.role.name == "tablet").unwrap();
    assert!(
        !tablet.id.as_str().contains(':'),
        "a tablet known by name: {}",
        tablet.id
    );
    assert!(
        cluster
            .ready(&tablet.id)
            .check()
            .await
            .unwrap()
            .is_healthy()
    );
    drop(cluster);
    drop(emu);
    // --zk_cert: the nodes are the cluster's user's alone; without the digest the backend
    // names the node it may not read.
    let name = "zk-cert";
    let emu = emulate(
        name,
        &builder(),
        Options::new(ServerVersion::V0_9).zk_cert("openmldb:secret"),
    )
    .await;
    let err = connect(&emu, &config(&emu, name)).await.err().unwrap();
    let msg = rollout_core::chain(&err);
    assert!(msg.contains(&root(name)), "{msg}");
    assert!(msg.to_lowercase().contains("auth"), "{msg}");
    let cluster = connect(&emu, &config(&emu, name).zk_digest("openmldb:secret"))
        .await
        .unwrap();
    assert_eq!(cluster.topology().await.unwrap().partitions.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_from_0_8_to_0_9_rolls_through_a_mixed_cluster() {
    let _serial = serial().await;
    let name = "upgrade";
    let mut b = builder();
    b.version("0.8.5");
    let emu = emulate(name, &b, Options::new(ServerVersion::V0_8)).await;
    let cluster = connect(&emu, &config(&emu, name)).await.unwrap();
    // An unknown target is refused before anything changes.
    let bad = Spec::new(Change::Upgrade {
        version: "1.2.0".into(),
    })
    .policy(policy());
    let err = roll(&cluster, &bad, Run::new(&MemoryJournal::new()))
        .await
        .unwrap_err();
    assert!(rollout_core::chain(&err).contains("1.2.0"), "{err}");
    assert!(emu.sim().truth().restarts.values().all(|&n| n == 0));
    let spec = Spec::new(Change::Upgrade {
        version: "0.9.2".into(),
    })
    .policy(policy());
    let report = roll(&cluster, &spec, Run::new(&MemoryJournal::new()))
        .await
        .unwrap_or_else(|e| panic!("{}", rollout_core::chain(&e)));
    assert_eq!(report.outcome, Outcome::Completed);
    let truth = emu.sim().truth();
    assert_eq!(truth.monitor.writes_lost, 0);
    assert!(truth.knobs_restored);
    // Every server now answers as 0.9.2.
    for addr in emu
        .endpoints("tablet")
        .into_iter()
        .chain(emu.endpoints("nameserver"))
    {
        let v = Endpoint::new(&addr, Duration::from_secs(2))
            .version()
            .await
            .unwrap();
        assert!(v.starts_with("0.9.2"), "{addr}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_nothing_loaded_fails_the_gate_and_no_leader_is_fenced_for_it() {
    let _serial = serial().await;
    let name = "unloaded-follower";
    let emu = emulate(name, &builder(), Options::new(ServerVersion::V0_9)).await;
    let cluster = connect(&emu, &config(&emu, name)).await.unwrap();
    let ns = leader(&emu).await;
    auto_failover(&ns, false).await;
    let t = cluster.topology().await.unwrap();
    let leads = |id: &NodeId| {
        t.partitions.iter().any(|p| {
            p.replicas
                .iter()
                .any(|r| &r.node == id && r.role == rollout_core::ReplicaRole::Primary)
        })
    };
    let tablets: Vec<NodeId> = t
        .nodes
        .iter()
        .filter(|n| n.role.name == "tablet")
        .map(|n| n.id.clone())
        .collect();
    let (a, b) = (tablets[0].clone(), tablets[1].clone());
    assert!(leads(&a));
    // b, drained (a leader restarted in place loses what it had not shipped), restarts with
    // auto_failover off and is not recovered: the nameserver still marks its replicas
    // alive, with nothing loaded.
    cluster.drain(&b).await.unwrap();
    let node = emu.node(&b).unwrap();
    node.stop().await.unwrap();
    for _ in 0..400 {
        if cluster.stopped(&b).check().await.unwrap().is_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    node.start().await.unwrap();
    for _ in 0..400 {
        if cluster.ready(&b).check().await.unwrap().is_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let gate = cluster.fully_healthy().check().await.unwrap();
    assert!(
        !gate.is_healthy(),
        "the gate passed over replicas that are not loaded"
    );
    // Draining a: every partition it leads that b follows cannot move (SelectLeader would
    // fail on b after raising the other follower's term), and none is left fenced.
    let err = cluster.drain(&a).await.err();
    let msg = err.map(|e| rollout_core::chain(&e)).unwrap_or_default();
    assert!(msg.contains("has not loaded it as a follower"), "{msg}");
    let status: rollout_openmldb::api::GetTableStatusResponse =
        Endpoint::new(&emu.endpoint_of(&a), Duration::from_secs(2))
            .call("TabletServer", "GetTableStatus", &serde_json::json!({}))
            .await
            .unwrap();
    let led: Vec<(String, String, u32, String, Vec<String>)> = partitions(&ns)
        .await
        .into_iter()
        .filter(|p| p.3 == emu.endpoint_of(&a))
        .collect();
    assert!(!led.is_empty());
    for s in &status.all_table_status {
        let leader_here = led.iter().any(|p| p.2 == s.pid);
        if leader_here {
            assert_eq!(s.mode, "kTableLeader", "pid {} left fenced", s.pid);
        }
    }
    // The rollout's rejoin of b brings it back, and the gate passes again.
    cluster.rejoin(&b).await.unwrap();
    let mut healthy = false;
    for _ in 0..800 {
        if cluster.fully_healthy().check().await.unwrap().is_healthy() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(healthy, "{:?}", cluster.fully_healthy().check().await);
    auto_failover(&ns, true).await;
    assert_eq!(emu.sim().truth().monitor.writes_lost, 0);
}
