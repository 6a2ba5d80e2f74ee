//! What each emulated server version does with requests the backend used to send, so that the
//! old behaviour fails here as it would on a real cluster (docs/upstream/pegasus.md §3, §4,
//! §6), and what the backend sends now.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use rollout_core::{Change, Cluster, MemoryJournal, NodeId, Outcome, Run, Spec, roll};
use rollout_emulator_pegasus::{Emulator, ServerVersion};
use rollout_pegasus::messages::{
    BalancerRequest, ErrResponse, ProposalAction, QueryConfigRequest, QueryConfigResponse,
    config_type, rpc,
};
use rollout_pegasus::meta::MetaClient;
use rollout_pegasus::types::{Gpid, HostPort, RpcAddress};
use rollout_pegasus::{PegasusCluster, Timing};
use rollout_sim::{Flavor, SimBuilder};

const SCALE: u32 = 50;

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn builder() -> SimBuilder {
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.seed(7).time_scale(SCALE);
    b
}

/// An emulated cluster of `version` (seed 7, at `SCALE`) and the backend connected to it.
async fn connected(
    version: ServerVersion,
) -> (
    Arc<Emulator>,
    PegasusCluster<impl rollout_pegasus::NodeFactory>,
) {
    let emu = Arc::new(Emulator::start(&builder(), version).await.unwrap());
    let e = emu.clone();
    let cluster = PegasusCluster::connect(
        &emu.metas(),
        &emu.collectors(),
        move |id: &NodeId| e.node(id),
        Timing::default().scaled(SCALE),
    )
    .await
    .unwrap();
    (emu, cluster)
}

/// Partition 0 of `temp`: its primary and a secondary.
async fn members(meta: &MetaClient) -> (RpcAddress, RpcAddress) {
    let q: QueryConfigResponse = meta
        .call(
            rpc::QUERY_CONFIG,
            &QueryConfigRequest {
                app_name: "temp".into(),
                partition_indices: vec![0],
            },
        )
        .await
        .unwrap();
    let p = &q.partitions[0];
    (p.primary, p.secondaries[0])
}

/// A move-primary of partition 1.0 from `from` to `to`, with `hp_*` fields as given.
fn move_primary(
    from: RpcAddress,
    to: RpcAddress,
    hp: impl Fn(RpcAddress) -> Option<HostPort>,
) -> BalancerRequest {
    let action = |a: RpcAddress, kind: i32| ProposalAction {
        target: a,
        node: a,
        kind,
        hp_target: hp(a),
        hp_node: hp(a),
    };
    BalancerRequest {
        gpid: Gpid::new(1, 0),
        action_list: vec![
            action(from, config_type::DOWNGRADE_TO_SECONDARY),
            action(to, config_type::UPGRADE_TO_PRIMARY),
        ],
        force: Some(false),
        balance_type: Some(0),
    }
}

fn ip_name(a: RpcAddress) -> Option<HostPort> {
    a.0.map(HostPort::from_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_as_the_old_backend_sent_them_are_misread_by_2_4_and_2_5_and_dropped_by_master()
{
    let _serial = serial().await;
    for (version, expect) in [
        // The demote is kept and the promote lost (§3.4: a 127.0.0.1 address meets a STOP).
        (ServerVersion::V2_4, "demote 1.0"),
        (ServerVersion::V2_5, "demote 1.0"),
        // Master names nodes by reverse DNS (`localhost` here): an IP string is no name it
        // knows, and the proposal is accepted, held until the tick, then dropped (§6).
        (ServerVersion::Master, "unrunnable 1.0"),
    ] {
        let emu = Emulator::start(&builder(), version).await.unwrap();
        let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
        let (primary, secondary) = members(&meta).await;
        let r: ErrResponse = meta
            .call(
                rpc::PROPOSE_BALANCER,
                &move_primary(primary, secondary, ip_name),
            )
            .await
            .unwrap();
        assert!(r.err.unwrap().is_ok(), "{version}: the meta accepts it");
        let seen = emu.proposals();
        assert!(
            seen.first().is_some_and(|p| p.starts_with(expect)),
            "{version}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_move_primary_without_host_names_moves_the_primary_on_every_version() {
    let _serial = serial().await;
    for version in ServerVersion::ALL {
        let emu = Emulator::start(&builder(), version).await.unwrap();
        let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
        let (primary, secondary) = members(&meta).await;
        let _: ErrResponse = meta
            .call(
                rpc::PROPOSE_BALANCER,
                &move_primary(primary, secondary, |_| None),
            )
            .await
            .unwrap();
        let to = emu.world_id(&secondary.to_string()).unwrap();
        assert_eq!(
            emu.proposals(),
            vec![format!("move-primary 1.0 to {to}")],
            "{version}"
        );
    }
}

/// The raw bytes of a move-primary whose second action names `10.132.5.23:34801` by a
/// host-name field: a 2.5 reader takes four characters of the name for a string length of
/// about 0.8 GB and throws at the end of the request (§3.4, §3.5).
fn fatal_move_primary() -> BalancerRequest {
    let far = RpcAddress::new("10.132.5.23:34801".parse::<SocketAddrV4>().unwrap());
    move_primary(far, far, ip_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_a_2_5_reader_cannot_finish_kills_the_meta_leader() {
    let _serial = serial().await;
    let emu = Emulator::start(&builder(), ServerVersion::V2_5)
        .await
        .unwrap();
    let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
    let _ = members(&meta).await;
    let leader = meta.leader().unwrap();
    let answer = meta
        .call::<_, ErrResponse>(rpc::PROPOSE_BALANCER, &fatal_move_primary())
        .await;
    assert!(answer.is_err(), "the meta answered: {answer:?}");
    let leader = emu.world_id(&leader.to_string()).unwrap();
    let truth = emu.sim().truth();
    assert_eq!(truth.crashes.get(&leader), Some(&1), "{:?}", truth.crashes);
    // Master reads the same bytes whole.
    let emu = Emulator::start(&builder(), ServerVersion::Master)
        .await
        .unwrap();
    let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
    let r: ErrResponse = meta
        .call(rpc::PROPOSE_BALANCER, &fatal_move_primary())
        .await
        .unwrap();
    assert!(r.err.unwrap().is_ok());
    assert!(
        emu.sim().truth().crashes.values().all(|&n| n == 0),
        "master died"
    );
}

async fn command(emu: &Emulator, server: SocketAddr, cmd: &str, args: &[&str]) -> String {
    MetaClient::new(&emu.metas(), Duration::from_secs(1))
        .command(server, cmd, args)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knobs_answer_in_each_versions_style_on_the_leader_only() {
    let _serial = serial().await;
    for version in ServerVersion::ALL {
        let emu = Emulator::start(&builder(), version).await.unwrap();
        let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
        let _ = members(&meta).await;
        let leader = meta.leader().unwrap();
        let standby = *emu.metas().iter().find(|&&m| m != leader).unwrap();
        let name = "meta.lb.assign_delay_ms";
        let query = command(&emu, leader, name, &[]).await;
        let set = command(&emu, leader, name, &["3600000"]).await;
        let bad = command(&emu, leader, name, &["soon"]).await;
        if version == ServerVersion::Master {
            assert_eq!(
                query,
                "{\n  \"error\": \"ok\",\n  \"meta.lb.assign_delay_ms\": \"600000\"\n}"
            );
            assert_eq!(set, "{\n  \"error\": \"ok\"\n}");
            assert!(
                bad.contains("\"error\": \"ERR: invalid argument 'soon'"),
                "{bad}"
            );
        } else {
            assert_eq!(query, "300000", "{version}");
            assert_eq!(set, "OK", "{version}");
            assert_eq!(bad, "ERR: invalid arguments", "{version}");
        }
        assert_eq!(
            command(&emu, standby, name, &[]).await,
            format!("unknown command '{name}'"),
            "{version}: a standby has no meta.lb.* commands"
        );
        let info = command(&emu, leader, "server-info", &[]).await;
        assert!(info.contains(version.release()), "{version}: {info}");
        assert_eq!(
            info.starts_with('{'),
            version == ServerVersion::Master,
            "{info}"
        );
    }
}

/// A bare HTTP/1.1 GET: status and body.
async fn http_get(a: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, body[..len].to_string());
            }
        }
        if n == 0 {
            panic!("connection closed: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_counts_come_as_each_version_serves_them() {
    let _serial = serial().await;
    for version in ServerVersion::ALL {
        let emu = Emulator::start(&builder(), version).await.unwrap();
        let replica = emu.role_addrs("replica")[0];
        let (status, body) = http_get(replica, "/metrics?types=server").await;
        if version == ServerVersion::Master {
            assert_eq!(status, 200);
            assert!(body.contains("\"total_replicas\""), "{body}");
        } else {
            // No metric entity exists at 2.5 and no handler at 2.4 (§5.1).
            assert_eq!(status, 404, "{version}: {body}");
            let (_, live) = http_get(
                replica,
                "/perfCounter?name=replica*eon.replica_stub*replica(Count)",
            )
            .await;
            assert!(live.contains("\"value\":\""), "{version}: {live}");
        }
        let (_, v) = http_get(replica, "/version").await;
        assert!(v.contains(version.release()), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_that_holds_nothing_does_not_block_the_rollout_of_the_others() {
    let _serial = serial().await;
    let (emu, cluster) = connected(ServerVersion::V2_5).await;
    // A replica server is gone for good: the meta lists it UNALIVE, and once the assign
    // delay passes it copies its replicas elsewhere.
    let gone = NodeId::new(emu.role_addrs("replica")[5].to_string());
    assert!(emu.sim().kill(&emu.world_id(gone.as_str()).unwrap()));
    let healthy = rollout_core::wait::wait_until(
        &cluster.fully_healthy(),
        Duration::from_secs(60),
        (Duration::from_millis(20), Duration::from_millis(200)),
        |e| cluster.classify(e),
        |_| {},
    )
    .await;
    assert!(healthy.is_ok(), "{healthy:?}");
    // The plan of every node leaves it out, and says so.
    let all = rollout_core::plan(&cluster, &Spec::new(Change::Restart))
        .await
        .unwrap();
    assert!(
        all.waves.iter().all(|w| !w.nodes.contains(&gone)),
        "{:?}",
        all.waves
    );
    assert!(
        all.warnings
            .iter()
            .any(|w| w.contains(gone.as_str()) && w.contains("holds no replica")),
        "{:?}",
        all.warnings
    );
    let others: Vec<NodeId> = emu
        .role_addrs("replica")
        .iter()
        .take(5)
        .map(|a| NodeId::new(a.to_string()))
        .collect();
    let s = u64::from(SCALE);
    let policy = rollout_core::Policy::default()
        .deadlines(rollout_core::policy::Deadlines::all(Duration::from_secs(
            3600 / s,
        )))
        .poll(Duration::from_millis(2), Duration::from_millis(1000 / s));
    let spec = Spec::new(Change::Restart)
        .selection(rollout_core::policy::Selection::Nodes(others))
        .policy(policy);
    let report = roll(&cluster, &spec, Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_from_2_4_to_2_5_rolls_through_a_mixed_cluster() {
    let _serial = serial().await;
    let (emu, cluster) = connected(ServerVersion::V2_4).await;
    let s = u64::from(SCALE);
    let policy = rollout_core::Policy::default()
        .deadlines(rollout_core::policy::Deadlines::all(Duration::from_secs(
            3600 / s,
        )))
        .poll(Duration::from_millis(2), Duration::from_millis(1000 / s));
    let upgrade = Change::Upgrade {
        version: "2.5.0".into(),
    };
    // The replica servers go first: 2.5 replica servers under 2.4 metas, then the metas.
    let report = roll(
        &cluster,
        &Spec::new(upgrade).policy(policy),
        Run::new(&MemoryJournal::new()),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
    for server in emu
        .role_addrs("meta")
        .into_iter()
        .chain(emu.role_addrs("replica"))
    {
        let info = meta.command(server, "server-info", &[]).await.unwrap();
        assert!(
            info.starts_with("Pegasus Server 2.5.0 "),
            "{server}: {info}"
        );
    }
    let truth = emu.sim().truth();
    assert!(truth.restarts.values().all(|&n| n == 1));
    assert_eq!(truth.monitor.writes_lost, 0);
}

/// The new meta leader's grace is read where each version shows it: `/config` flags on 2.5
/// and master, `config-dump` on 2.4 (where they are `replication_options`, not flags); both
/// are the model's 22 s plus 2 s, in the rollout's time at the emulator's scale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_election_grace_is_read_from_each_version() {
    let _serial = serial().await;
    for (version, how) in [
        (ServerVersion::V2_4, "config-dump"),
        (ServerVersion::V2_5, "/config"),
        (ServerVersion::Master, "/config"),
    ] {
        let (_emu, cluster) = connected(version).await;
        let (grace, source) = cluster.election_grace();
        assert_eq!(
            grace,
            Duration::from_secs(24) / SCALE,
            "{version:?}: {source}"
        );
        assert!(
            source.contains("fd_grace_seconds 22 plus fd_check_interval_seconds 2")
                && source.contains(how),
            "{version:?}: {source}"
        );
    }
}

/// A live replica counter a 2.5 replica server serves at `/perfCounter`: `replica` (open)
/// or `closing.replica`.
async fn counter(replica: SocketAddr, name: &str) -> u64 {
    let (_, body) = http_get(
        replica,
        &format!("/perfCounter?name=replica*eon.replica_stub*{name}(Count)"),
    )
    .await;
    let v = body.split("\"value\":\"").nth(1).unwrap();
    v[..v.find('.').unwrap()].parse().unwrap()
}

async fn open_count(replica: SocketAddr) -> u64 {
    counter(replica, "replica").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_partition_closes_the_named_replica_only() {
    let _serial = serial().await;
    let emu = Emulator::start(&builder(), ServerVersion::V2_5)
        .await
        .unwrap();
    let replica = emu.role_addrs("replica")[0];
    let held = open_count(replica).await;
    assert!(held > 1, "{held}");
    // The first partition of app 1 this node holds closes, and only it.
    let mut closed = None;
    for pidx in 0..64 {
        let answer = command(
            &emu,
            replica,
            "replica.kill_partition",
            &["1", &pidx.to_string()],
        )
        .await;
        if answer == "ERR_OK" {
            closed = Some(pidx);
            break;
        }
        assert_eq!(answer, "ERR_OBJECT_NOT_FOUND", "partition {pidx}");
    }
    let pidx = closed
        .expect("the node holds a partition of app 1")
        .to_string();
    // It counts as closing, not open, until the node's flush: the others stay open, so no
    // flush has begun.
    assert_eq!(open_count(replica).await, held - 1);
    assert_eq!(counter(replica, "closing.replica").await, 1);
    // -1 as the partition is a wildcard: an app the node does not hold closes nothing and is
    // still ERR_OK.
    assert_eq!(
        command(&emu, replica, "replica.kill_partition", &["999", "-1"]).await,
        "ERR_OK"
    );
    assert_eq!(open_count(replica).await, held - 1);
    assert_eq!(
        command(&emu, replica, "replica.kill_partition", &["1", &pidx]).await,
        "ERR_OBJECT_NOT_FOUND",
        "a closed replica is not found again"
    );
    // With no arguments the rest close, and the flush that follows leaves none open.
    assert_eq!(
        command(&emu, replica, "replica.kill_partition", &[]).await,
        "ERR_OK"
    );
    let none_open = rollout_core::probe::probe_fn(|| async move {
        let left = open_count(replica).await + counter(replica, "closing.replica").await;
        Ok::<_, std::io::Error>(match left {
            0 => rollout_core::Health::Healthy,
            n => rollout_core::Health::Waiting(format!("{n} open or closing")),
        })
    });
    let flushed = rollout_core::wait::wait_until(
        &none_open,
        Duration::from_secs(10),
        (Duration::from_millis(20), Duration::from_millis(200)),
        |_| rollout_core::ErrorClass::Fatal,
        |_| {},
    )
    .await;
    assert!(flushed.is_ok(), "{flushed:?}");
}
