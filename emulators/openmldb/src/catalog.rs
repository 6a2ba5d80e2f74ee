//! What the OpenMLDB client SDK reads from the cluster, and the rows it puts
//! (docs/upstream/openmldb-sdk.md §1, §3, §5). The leading nameserver keeps each table's
//! `TableInfo`, serialized, at `<root>/table/db_table_data/<tid>`, and after every change of
//! it that matters for routing (a leader moved, a replica marked alive or dead) rewrites the
//! node and only then increments `<root>/table/notify`, the counter the SDKs watch
//! (`NameServerImpl::UpdateZkTableNode`, `NotifyTableChanged`, `ZkClient::Increment` @v0.9.2,
//! the same @v0.8.5). The emulator's tables live in database [`DB`](crate::nameserver::DB),
//! with two columns, `k string` and `v bigint`, indexed by `k`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rollout_sim::SimCluster;
use serde_json::{Value, json};
use zookeeper_client as zk;

use crate::nameserver::{DB, replica_meta, table_name};
use crate::{Directory, proto, registration};

/// How often the records are compared with what ZooKeeper holds (wall time): the
/// nameserver writes right after each change; this is the emulator's lag behind that.
const POLL: Duration = Duration::from_millis(10);

/// One row a client put and a tablet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientWrite {
    /// The row's key (the dimension of its only index, column `k`).
    pub key: String,
    /// Its table, 1-based (`t<table>`, tid `table`).
    pub table: u32,
    /// Its partition.
    pub pid: u32,
    /// Whether the replica serving the partition now holds the last acknowledged put of
    /// this key (`false`: an acknowledged write that is lost).
    pub held: bool,
    /// The encoded row of the last acknowledged put (the SDK's row format, §3.6).
    pub value: Vec<u8>,
}

/// The acknowledged puts, by key: (table, pid, world sequence number, row).
pub(crate) type Puts = BTreeMap<String, Vec<(u32, u32, u32, Vec<u8>)>>;

/// Each table's `TableInfo` as the nameserver writes it to ZooKeeper, serialized: name, db,
/// tid, the schema, and per partition (in pid order) each replica's endpoint with its
/// leader and alive flags and the partition's term; offsets are left out (the nameserver
/// keeps them in memory only).
pub(crate) fn table_infos(sim: &SimCluster, dir: &Directory) -> BTreeMap<u32, Vec<u8>> {
    let Some(desc) = proto::pool().get_message_by_name("openmldb.nameserver.TableInfo") else {
        return BTreeMap::new();
    };
    let wanted = sim.view().partitions.first().map_or(3, |p| p.wanted);
    let mut tables: BTreeMap<u32, BTreeMap<u32, Value>> = BTreeMap::new();
    for p in sim.openmldb_partitions() {
        let metas: Vec<Value> = p.replicas.iter().map(|r| replica_meta(dir, r)).collect();
        tables.entry(p.table).or_default().insert(
            p.pid,
            json!({
                "pid": p.pid,
                "partition_meta": metas,
                "term_offset": [{"term": p.term, "offset": 0}],
            }),
        );
    }
    tables
        .into_iter()
        .filter_map(|(t, parts)| {
            let info = json!({
                "name": table_name(t), "db": DB, "tid": t, "replica_num": wanted,
                "partition_num": parts.len(),
                "table_partition": parts.into_values().collect::<Vec<_>>(),
                "column_desc": [
                    {"name": "k", "data_type": "kString"},
                    {"name": "v", "data_type": "kBigInt"},
                ],
                "column_key": [{"index_name": "idx0", "col_name": ["k"]}],
                "format_version": 1,
                "storage_mode": "kMemory",
            });
            let msg = proto::from_json(&desc, &info).ok()?;
            Some((t, msg.encode_to_vec()))
        })
        .collect()
}

/// Keeps `<root>/table/db_table_data` equal to the nameserver's records while a nameserver
/// leads, bumping `<root>/table/notify` after each round of changed nodes; runs until
/// aborted.
pub(crate) async fn publish(sim: SimCluster, dir: Arc<Directory>) {
    let mut written: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut session: Option<zk::Client> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let leads = sim
            .view()
            .leader
            .and_then(|l| sim.node_view(&l))
            .is_some_and(|n| n.serving);
        if !leads {
            continue;
        }
        let now = table_infos(&sim, &dir);
        if now == written {
            continue;
        }
        if session.is_none() {
            session = registration::client(&dir).await.ok();
        }
        let Some(c) = &session else {
            continue;
        };
        match write(c, &dir, &written, &now).await {
            Ok(()) => written = now,
            Err(e) => {
                tracing::warn!(error = %e, "the emulated nameserver could not write its tables to ZooKeeper");
                session = None;
            }
        }
    }
}

/// Writes the table nodes that changed, then increments the notify counter.
async fn write(
    c: &zk::Client,
    dir: &Directory,
    before: &BTreeMap<u32, Vec<u8>>,
    now: &BTreeMap<u32, Vec<u8>>,
) -> Result<(), zk::Error> {
    let root = &dir.root;
    for (tid, bytes) in now.iter().filter(|(t, b)| before.get(t) != Some(b)) {
        let path = format!("{root}/table/db_table_data/{tid}");
        match c.set_data(&path, bytes, None).await {
            Ok(_) => {}
            Err(zk::Error::NoNode) => {
                let opts = zk::CreateMode::Persistent.with_acls(dir.acls());
                c.create(&path, bytes, &opts).await?;
            }
            Err(e) => return Err(e),
        }
    }
    increment(c, &format!("{root}/table/notify")).await
}

/// `ZkClient::Increment`: read the decimal value, add one, write it back at the version
/// read, up to three tries.
async fn increment(c: &zk::Client, path: &str) -> Result<(), zk::Error> {
    let mut last = zk::Error::BadVersion;
    for _ in 0..3 {
        let (data, stat) = c.get_data(path).await?;
        let n: u64 = String::from_utf8_lossy(&data).trim().parse().unwrap_or(0);
        match c
            .set_data(path, (n + 1).to_string().as_bytes(), Some(stat.version))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The rows clients put, each with whether the partition's serving replica still holds it.
pub(crate) fn client_writes(sim: &SimCluster, puts: &Puts) -> Vec<ClientWrite> {
    puts.iter()
        .filter_map(|(key, acks)| {
            let (table, pid, _, value) = acks.last()?.clone();
            let held = acks.iter().any(|(t, p, seq, _)| sim.holds(*t, *p, *seq));
            Some(ClientWrite {
                key: key.clone(),
                table,
                pid,
                held,
                value,
            })
        })
        .collect()
}
