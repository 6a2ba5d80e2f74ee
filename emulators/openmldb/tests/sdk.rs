//! The emulator as the upstream client SDK meets it (docs/upstream/openmldb-sdk.md): tables
//! read from ZooKeeper, rows put over brpc's `baidu_std`, a leader move seen through
//! `<root>/table/notify`. The client side here is the test's own: frames and messages
//! written from brpc's `baidu_rpc_meta.proto` and OpenMLDB's `tablet.proto` and
//! `name_server.proto` (v0.9.2), with prost, sharing nothing with the emulator's decoders.
//! `scripts/realclient.sh openmldb` runs the real SDK itself.

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rollout_emulator_openmldb::{Emulator, Options, ServerVersion};
use rollout_openmldb::api::{ChangeLeaderRequest, ConfSetRequest, Endpoint, Pair, Status, code};
use rollout_sim::{Flavor, SimBuilder};
use support::zookeeper;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, PartialEq, Message)]
struct RpcMeta {
    #[prost(message, optional, tag = "1")]
    request: Option<RpcRequestMeta>,
    #[prost(message, optional, tag = "2")]
    response: Option<RpcResponseMeta>,
    #[prost(int32, optional, tag = "3")]
    compress_type: Option<i32>,
    #[prost(int64, optional, tag = "4")]
    correlation_id: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "7")]
    authentication_data: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct RpcRequestMeta {
    #[prost(string, required, tag = "1")]
    service_name: String,
    #[prost(string, required, tag = "2")]
    method_name: String,
    #[prost(int64, optional, tag = "3")]
    log_id: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct RpcResponseMeta {
    #[prost(int32, optional, tag = "1")]
    error_code: Option<i32>,
    #[prost(string, optional, tag = "2")]
    error_text: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(uint32, optional, tag = "2")]
    idx: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct PutRequest {
    #[prost(int64, optional, tag = "2")]
    time: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "3")]
    value: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "4")]
    tid: Option<u32>,
    #[prost(uint32, optional, tag = "5")]
    pid: Option<u32>,
    #[prost(message, repeated, tag = "6")]
    dimensions: Vec<Dimension>,
    #[prost(bool, optional, tag = "10")]
    put_if_absent: Option<bool>,
}

/// `PutResponse`, `GeneralResponse` and `ShowFunctionResponse` all start with code 1, msg 2.
#[derive(Clone, PartialEq, Message)]
struct CodeMsg {
    #[prost(int32, optional, tag = "1")]
    code: Option<i32>,
    #[prost(string, optional, tag = "2")]
    msg: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct UseDatabaseRequest {
    #[prost(string, optional, tag = "1")]
    db: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TableInfo {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "3")]
    table_partition: Vec<TablePartition>,
    #[prost(uint32, optional, tag = "4")]
    tid: Option<u32>,
    #[prost(message, repeated, tag = "9")]
    column_desc: Vec<ColumnDesc>,
    #[prost(message, repeated, tag = "10")]
    column_key: Vec<ColumnKey>,
    #[prost(string, optional, tag = "13")]
    db: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TablePartition {
    #[prost(uint32, required, tag = "1")]
    pid: u32,
    #[prost(message, repeated, tag = "2")]
    partition_meta: Vec<PartitionMeta>,
}

#[derive(Clone, PartialEq, Message)]
struct PartitionMeta {
    #[prost(string, required, tag = "1")]
    endpoint: String,
    #[prost(bool, required, tag = "2")]
    is_leader: bool,
    #[prost(bool, optional, tag = "3")]
    is_alive: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
struct ColumnDesc {
    #[prost(string, required, tag = "1")]
    name: String,
    #[prost(int32, optional, tag = "2")]
    data_type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct ColumnKey {
    #[prost(string, optional, tag = "1")]
    index_name: Option<String>,
    #[prost(string, repeated, tag = "2")]
    col_name: Vec<String>,
}

/// The SDK's credential for user root with an empty password (§2.5).
const ROOT_CREDENTIAL: &[u8] =
    b"uroot:1e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One `baidu_std` connection, as a brpc channel uses it.
struct Channel {
    stream: TcpStream,
    next: i64,
    authenticate: bool,
}

impl Channel {
    async fn open(addr: &str, authenticate: bool) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            next: 12_884_901_890,
            authenticate,
        }
    }

    /// One call: the response meta and payload, or `None` when the server closed the
    /// connection.
    async fn call(
        &mut self,
        service: &str,
        method: &str,
        req: &impl Message,
    ) -> Option<(RpcResponseMeta, Vec<u8>)> {
        let id = self.next;
        self.next += 1;
        let meta = RpcMeta {
            request: Some(RpcRequestMeta {
                service_name: service.into(),
                method_name: method.into(),
                log_id: Some(0),
            }),
            response: None,
            compress_type: Some(0),
            correlation_id: Some(id),
            authentication_data: std::mem::take(&mut self.authenticate)
                .then(|| ROOT_CREDENTIAL.to_vec()),
        }
        .encode_to_vec();
        let payload = req.encode_to_vec();
        let mut frame = b"PRPC".to_vec();
        frame.extend_from_slice(
            &u32::try_from(meta.len() + payload.len())
                .unwrap()
                .to_be_bytes(),
        );
        frame.extend_from_slice(&u32::try_from(meta.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&meta);
        frame.extend_from_slice(&payload);
        self.stream.write_all(&frame).await.ok()?;
        let mut head = [0u8; 12];
        self.stream.read_exact(&mut head).await.ok()?;
        assert_eq!(&head[..4], b"PRPC");
        let body = u32::from_be_bytes(head[4..8].try_into().unwrap()) as usize;
        let meta_len = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; body];
        self.stream.read_exact(&mut rest).await.ok()?;
        let meta = RpcMeta::decode(&rest[..meta_len]).unwrap();
        assert_eq!(
            meta.correlation_id,
            Some(id),
            "the correlation id is echoed"
        );
        Some((meta.response.unwrap(), rest[meta_len..].to_vec()))
    }
}

fn builder() -> SimBuilder {
    let mut b = SimBuilder::new(Flavor::OpenMldb);
    b.seed(7)
        .data_nodes(3)
        .coordinators(2)
        .partitions(8)
        .time_scale(20);
    b
}

async fn emulate(name: &str, version: ServerVersion) -> (Arc<Emulator>, String) {
    let root = format!("/rollout-sdk-{}-{name}", std::process::id());
    let emu = Arc::new(
        Emulator::start(&builder(), &zookeeper(), &root, Options::new(version))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    (emu, root)
}

async fn zk() -> zookeeper_client::Client {
    zookeeper_client::Client::connect(&zookeeper())
        .await
        .unwrap()
}

/// Table 1 as the SDK reads it from `<root>/table/db_table_data/1`.
async fn table(root: &str) -> TableInfo {
    let (data, _) = zk()
        .await
        .get_data(&format!("{root}/table/db_table_data/1"))
        .await
        .unwrap();
    TableInfo::decode(&data[..]).unwrap()
}

async fn notify(root: &str) -> u64 {
    let (data, _) = zk()
        .await
        .get_data(&format!("{root}/table/notify"))
        .await
        .unwrap();
    String::from_utf8(data).unwrap().parse().unwrap()
}

/// The leader the SDK would pick for `pid`: the last replica flagged leader and alive.
fn leader_of(t: &TableInfo, pid: u32) -> Option<String> {
    t.table_partition
        .iter()
        .find(|p| p.pid == pid)?
        .partition_meta
        .iter()
        .rev()
        .find(|m| m.is_leader && m.is_alive.unwrap_or(true))
        .map(|m| m.endpoint.clone())
}

/// A replica of `pid` the table does not flag leader.
fn follower_of(t: &TableInfo, pid: u32) -> String {
    t.table_partition[pid as usize]
        .partition_meta
        .iter()
        .find(|m| !m.is_leader)
        .map(|m| m.endpoint.clone())
        .unwrap()
}

fn put(pid: u32, key: &str) -> PutRequest {
    PutRequest {
        time: Some(1),
        value: Some(key.as_bytes().to_vec()),
        tid: Some(1),
        pid: Some(pid),
        dimensions: vec![Dimension {
            key: Some(key.into()),
            idx: Some(0),
        }],
        put_if_absent: Some(false),
    }
}

async fn put_code(addr: &str, pid: u32, key: &str) -> Option<i32> {
    let mut c = Channel::open(addr, true).await;
    let (meta, payload) = c
        .call("openmldb.api.TabletServer", "Put", &put(pid, key))
        .await?;
    assert_eq!(meta.error_code, Some(0), "{meta:?}");
    Some(CodeMsg::decode(&payload[..]).unwrap().code.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_reads_its_tables_and_leader_from_zookeeper_and_puts_over_baidu_std() {
    let (emu, root) = emulate("put", ServerVersion::V0_9).await;
    // The first child of <root>/leader in sorted order is the nameserver that leads.
    let c = zk().await;
    let mut children = c.list_children(&format!("{root}/leader")).await.unwrap();
    children.sort();
    let (first, _) = c
        .get_data(&format!("{root}/leader/{}", children[0]))
        .await
        .unwrap();
    let leader = emu.sim().view().leader.unwrap();
    assert_eq!(String::from_utf8(first).unwrap(), emu.endpoint_of(&leader));
    // The table: its db, schema and partitions in pid order, each with one leader.
    let t = table(&root).await;
    assert_eq!(
        (t.name.as_deref(), t.db.as_deref(), t.tid),
        (Some("t1"), Some("demo_db"), Some(1))
    );
    assert_eq!(t.column_desc.len(), 2);
    assert_eq!(t.column_key[0].col_name, vec!["k".to_string()]);
    let pids: Vec<u32> = t.table_partition.iter().map(|p| p.pid).collect();
    assert_eq!(pids, (0..8).collect::<Vec<_>>());
    // The connect's nameserver calls.
    let mut ns = Channel::open(&emu.endpoint_of(&leader), true).await;
    let (meta, payload) = ns
        .call(
            "openmldb.nameserver.NameServer",
            "ShowFunction",
            &CodeMsg::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.error_code, Some(0));
    assert_eq!(CodeMsg::decode(&payload[..]).unwrap().code.unwrap_or(0), 0);
    for (db, want) in [("demo_db", 0), ("nope", 802)] {
        let req = UseDatabaseRequest {
            db: Some(db.into()),
        };
        let (_, payload) = ns
            .call("openmldb.nameserver.NameServer", "UseDatabase", &req)
            .await
            .unwrap();
        assert_eq!(
            CodeMsg::decode(&payload[..]).unwrap().code,
            Some(want),
            "{db}"
        );
    }
    // What a brpc server answers in the meta: an unknown method (1002), a short service
    // name it has (served) and one it lacks (1001), another role's service (1002).
    let (meta, _) = ns
        .call(
            "openmldb.nameserver.NameServer",
            "Nope",
            &CodeMsg::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.error_code, Some(1002));
    let (meta, _) = ns
        .call("NameServer", "ShowFunction", &CodeMsg::default())
        .await
        .unwrap();
    assert_eq!(meta.error_code, Some(0));
    let (meta, _) = ns
        .call("Nope", "ShowFunction", &CodeMsg::default())
        .await
        .unwrap();
    assert_eq!(meta.error_code, Some(1001));
    let (meta, _) = ns
        .call("openmldb.api.TabletServer", "Put", &put(3, "k-ns"))
        .await
        .unwrap();
    assert_eq!(meta.error_code, Some(1002));
    // A put on the leader is taken and held; on a follower refused with 103.
    let lead = leader_of(&t, 3).unwrap();
    assert_eq!(put_code(&lead, 3, "k-leader").await, Some(code::OK));
    let follower = follower_of(&t, 3);
    assert_eq!(put_code(&follower, 3, "k-follower").await, Some(103));
    // A dimension beyond the table's one index: 115, and nothing is written.
    let mut bad = put(3, "k-bad");
    bad.dimensions[0].idx = Some(1);
    let mut c = Channel::open(&lead, true).await;
    let (_, payload) = c
        .call("openmldb.api.TabletServer", "Put", &bad)
        .await
        .unwrap();
    assert_eq!(CodeMsg::decode(&payload[..]).unwrap().code, Some(115));
    let writes = emu.client_writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].key == "k-leader" && writes[0].held && writes[0].pid == 3);
    // 0.9 takes a first request without a credential while skip_grant_tables is on (its
    // default).
    let mut anonymous = Channel::open(&lead, false).await;
    assert!(
        anonymous
            .call("openmldb.api.TabletServer", "Put", &put(3, "k-anon"))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_moved_without_a_fence_takes_puts_the_new_term_never_sees() {
    let (emu, root) = emulate("moved", ServerVersion::V0_8).await;
    let t = table(&root).await;
    let old = leader_of(&t, 5).unwrap();
    let candidate = follower_of(&t, 5);
    let leader = emu.sim().view().leader.unwrap();
    let ns = Endpoint::new(&emu.endpoint_of(&leader), Duration::from_secs(2));
    let conf = ConfSetRequest {
        conf: Pair {
            key: "auto_failover".into(),
            value: "false".into(),
        },
    };
    ns.call::<_, Status>("NameServer", "ConfSet", &conf)
        .await
        .unwrap();
    let before = notify(&root).await;
    let change = ChangeLeaderRequest {
        name: "t1".into(),
        pid: 5,
        candidate_leader: candidate.clone(),
        db: "demo_db".into(),
    };
    ns.call::<_, Status>("NameServer", "ChangeLeader", &change)
        .await
        .unwrap();
    // The nameserver rewrites the table node, then bumps the counter the SDK watches.
    let mut moved = false;
    for _ in 0..200 {
        if leader_of(&table(&root).await, 5).as_deref() == Some(candidate.as_str()) {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(moved, "the table node names the new leader");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(notify(&root).await > before, "the notify counter moved");
    // An SDK that has not refreshed yet still writes to the old leader, which nobody told
    // and which still leads on its tablet: the put is acknowledged, and lost.
    assert_eq!(put_code(&old, 5, "k-stale").await, Some(code::OK));
    assert_eq!(put_code(&candidate, 5, "k-new").await, Some(code::OK));
    let writes = emu.client_writes();
    let held = |k: &str| writes.iter().find(|w| w.key == k).map(|w| w.held);
    assert_eq!(held("k-stale"), Some(false), "{writes:?}");
    assert_eq!(held("k-new"), Some(true), "{writes:?}");
    // A leader fenced before its move (TabletServer ChangeRole to follower, as the ha
    // roll does) refuses for good: a stale SDK's put fails and is retried, never lost.
    let t = table(&root).await;
    let old = leader_of(&t, 6).unwrap();
    let candidate = follower_of(&t, 6);
    let tablet = Endpoint::new(&old, Duration::from_secs(2));
    let fence = serde_json::json!({"tid": 1, "pid": 6, "mode": "kTableFollower"});
    tablet
        .call::<_, Status>("TabletServer", "ChangeRole", &fence)
        .await
        .unwrap();
    let change = ChangeLeaderRequest {
        pid: 6,
        candidate_leader: candidate.clone(),
        ..change
    };
    ns.call::<_, Status>("NameServer", "ChangeLeader", &change)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(put_code(&old, 6, "k-fenced").await, Some(103));
    assert!(emu.client_writes().iter().all(|w| w.key != "k-fenced"));
}
