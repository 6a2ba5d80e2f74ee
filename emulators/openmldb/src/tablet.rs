//! The TabletServer methods (`src/tablet/tablet_impl.cc` @v0.8.5 and @v0.9.2, the same for
//! these; docs/upstream/openmldb.md §2.10 to §2.12): the partitions the tablet has loaded,
//! their offsets, its followers, the fence (`ChangeRole`) and the hold (`SetMode`), terms,
//! and snapshots.

use prost_reflect::DynamicMessage;
use rollout_core::{Cluster, HealthProbe, NodeId};
use rollout_sim::SimCluster;
use serde_json::{Value, json};

use crate::Directory;
use crate::http::{Reply, app, ok};
use crate::nameserver::table_name;
use crate::proto::{bool_or_default, enum_name, get, u32_of, u64_of};
use crate::snapshots::Make;

/// One tablet method's answer.
pub(crate) async fn answer(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    method: &str,
    req: &DynamicMessage,
) -> Reply {
    settle_snapshots(sim, dir, me).await;
    let tid = u32_of(req, "tid").unwrap_or(0);
    let pid = u32_of(req, "pid").unwrap_or(0);
    match method {
        "Put" => put(sim, dir, me, tid, pid, req),
        "Delete" => delete(sim, dir, me, tid, pid, req),
        "GetTableStatus" => table_status(sim, dir, me, req),
        "GetTableFollower" => match sim.openmldb_followers(tid, pid, me) {
            Ok((offset, followers)) => {
                let f: Vec<Value> = followers
                    .iter()
                    .map(|(n, o)| json!({"endpoint": dir.endpoint(n), "offset": o}))
                    .collect();
                ok(json!({"offset": offset, "follower_info": f}))
            }
            Err((c, m)) => app(c, &m),
        },
        "ChangeRole" => {
            let leader = enum_name(req, "mode").as_deref() == Some("kTableLeader");
            let term = u64_of(req, "term");
            match sim.openmldb_change_role(tid, pid, me, leader, term) {
                Ok(()) => app(0, "ok"),
                Err((c, m)) => app(c, &m),
            }
        }
        "SetMode" => match sim.openmldb_set_mode(me, bool_or_default(req, "follower")) {
            Ok(()) => Reply::Message(json!({"code": 0})),
            Err(e) => app(307, &e),
        },
        "MakeSnapshot" => make_snapshot(sim, dir, me, req).await,
        "GetTermPair" => term_pair(sim, dir, me, tid, pid),
        "GetManifest" => {
            let (offset, term) = lock(dir).manifest(me, tid, pid);
            ok(json!({"manifest": {"offset": offset, "term": term, "name": "", "count": offset}}))
        }
        "GetAllSnapshotOffset" => {
            let s = lock(dir);
            let mut tables: std::collections::BTreeMap<u32, Vec<Value>> = Default::default();
            for p in sim.openmldb_tablet(me) {
                let (offset, _) = s.manifest(me, p.table, p.pid);
                tables
                    .entry(p.table)
                    .or_default()
                    .push(json!({"pid": p.pid, "offset": offset}));
            }
            let tables: Vec<Value> = tables
                .into_iter()
                .map(|(tid, parts)| json!({"tid": tid, "parts": parts}))
                .collect();
            Reply::Message(json!({"code": 0, "tables": tables}))
        }
        _ => Reply::Http(404, format!("Fail to find method={method}")),
    }
}

/// `Put`: the tablet's checks in `TabletImpl::Put` order (@v0.9.2; @v0.8.5 the same but
/// `check_exists`): follower-cluster mode 453, the partition loaded 100, leading there 103
/// (see [`SimCluster::openmldb_put`]), each dimension's index within the table's one index
/// and its key not empty 115, `check_exists` on a table that is not index-organized 129
/// (0.9), then the row into the world's ledger through this tablet's replica. A put with no
/// dimension is taken (its log only, no row to check).
fn put(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    tid: u32,
    pid: u32,
    req: &DynamicMessage,
) -> Reply {
    let dims = dimensions(req);
    let value = get(req, "value")
        .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
        .unwrap_or_default();
    // The checks before the write: the tablet's own, then the request's.
    if let Err((c, m)) = sim.openmldb_put_check(tid, pid, me) {
        return app(c, &m);
    }
    if dims.iter().any(|(key, idx)| *idx != 0 || key.is_empty()) {
        return app(115, "invalid dimension parameter");
    }
    let v0_9 = sim
        .node_view(me)
        .is_some_and(|n| dir.version_of(&n) == crate::ServerVersion::V0_9);
    if v0_9 && bool_or_default(req, "check_exists") {
        return app(129, "table type is not iot");
    }
    let seq = match sim.openmldb_put(tid, pid, me) {
        Ok(seq) => seq,
        Err((c, m)) => return app(c, &m),
    };
    let mut puts = dir.puts.lock().unwrap_or_else(|e| e.into_inner());
    for (key, _) in dims {
        puts.entry(key)
            .or_default()
            .push((tid, pid, seq, value.clone()));
    }
    app(0, "ok")
}

/// `Delete` (the SDK's revert after a failed put, whose answer it ignores): 453 in
/// follower-cluster mode, 100 for a partition the tablet has not loaded, 103 where it does
/// not lead; on a leader the rows of the given keys in that partition go (a put that timed
/// out on the client but was applied is reverted, as upstream).
fn delete(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    tid: u32,
    pid: u32,
    req: &DynamicMessage,
) -> Reply {
    if let Err((c, m)) = sim.openmldb_put_check(tid, pid, me) {
        return app(c, &m);
    }
    let keys: Vec<String> = dimensions(req).into_iter().map(|(key, _)| key).collect();
    let mut puts = dir.puts.lock().unwrap_or_else(|e| e.into_inner());
    for key in keys {
        if let Some(acks) = puts.get_mut(&key) {
            acks.retain(|(t, p, _, _)| (*t, *p) != (tid, pid));
            if acks.is_empty() {
                puts.remove(&key);
            }
        }
    }
    app(0, "ok")
}

/// A request's `dimensions` (`Dimension {key, idx}`, in `PutRequest` and `DeleteRequest`).
fn dimensions(req: &DynamicMessage) -> Vec<(String, u32)> {
    let Some(v) = get(req, "dimensions") else {
        return Vec::new();
    };
    v.as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.as_message())
        .map(|d| {
            (
                crate::proto::string(d, "key").unwrap_or_default(),
                u32_of(d, "idx").unwrap_or(0),
            )
        })
        .collect()
}

fn lock(dir: &Directory) -> std::sync::MutexGuard<'_, crate::snapshots::Snapshots> {
    dir.snapshots.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tablet's snapshot work ends with the world's flush of it; a process that is gone
/// took its queue with it.
async fn settle_snapshots(sim: &SimCluster, dir: &Directory, me: &NodeId) {
    if !lock(dir).busy(me) {
        return;
    }
    let up = sim.node_view(me).is_some_and(|n| n.serving);
    if !up {
        lock(dir).process_gone(me);
        return;
    }
    let flushed = Cluster::quiesced(sim, me)
        .check()
        .await
        .is_ok_and(|h| h.is_healthy());
    if flushed {
        lock(dir).flushed(me);
    }
}

/// `GetTableStatus`: the loaded partitions (or the one asked for), each with its offset, its
/// mode on the tablet and its state (`kMakingSnapshot` only while its own snapshot runs).
fn table_status(sim: &SimCluster, dir: &Directory, me: &NodeId, req: &DynamicMessage) -> Reply {
    let tid = u32_of(req, "tid");
    let pid = u32_of(req, "pid");
    let s = lock(dir);
    let all: Vec<Value> = sim
        .openmldb_tablet(me)
        .into_iter()
        .filter(|p| tid.is_none_or(|t| t == p.table) && pid.is_none_or(|x| x == p.pid))
        .map(|p| {
            json!({
                "tid": p.table, "pid": p.pid, "offset": p.offset,
                "mode": if p.leader { "kTableLeader" } else { "kTableFollower" },
                "state": if s.running(me, p.table, p.pid) { "kMakingSnapshot" } else { "kTableNormal" },
                "record_cnt": p.offset, "name": table_name(p.table), "storage_mode": "kMemory",
            })
        })
        .collect();
    Reply::Message(json!({"code": 0, "all_table_status": all}))
}

/// `MakeSnapshot` (`GeneralRequest`: tid, pid, offset): 100 for a partition the tablet has
/// not loaded, 105 while its snapshot runs, else 0, the work queued on the tablet's pool.
async fn make_snapshot(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    req: &DynamicMessage,
) -> Reply {
    let tid = get(req, "tid").and_then(|v| v.as_i32()).unwrap_or(-1);
    let pid = get(req, "pid").and_then(|v| v.as_i32()).unwrap_or(-1);
    let (Ok(tid), Ok(pid)) = (u32::try_from(tid), u32::try_from(pid)) else {
        return app(100, "table is not exist");
    };
    if !sim
        .openmldb_tablet(me)
        .iter()
        .any(|p| p.table == tid && p.pid == pid)
    {
        return app(100, "table is not exist");
    }
    let term = sim
        .openmldb_partitions()
        .iter()
        .find(|p| p.table == tid && p.pid == pid)
        .map_or(0, |p| p.term);
    let made = lock(dir).make(me, (tid, pid), u64_of(req, "offset"), term);
    match made {
        Make::Busy => app(105, "table status is not kNormal"),
        Make::Nothing => app(0, "ok"),
        Make::Queued => match Cluster::quiesce(sim, me).await {
            Ok(()) => app(0, "ok"),
            Err(e) => app(-1, &e.to_string()),
        },
    }
}

/// `GetTermPair`: for a loaded partition its replicator's term and offset; for one not
/// loaded, the MANIFEST's, with `has_table` false.
fn term_pair(sim: &SimCluster, dir: &Directory, me: &NodeId, tid: u32, pid: u32) -> Reply {
    match sim.openmldb_term_pair(tid, pid, me) {
        Ok(Some(t)) => ok(json!({
            "term": t.term, "offset": t.offset, "has_table": true, "is_leader": t.is_leader,
        })),
        Ok(None) => {
            let (offset, term) = lock(dir).manifest(me, tid, pid);
            Reply::Message(json!({
                "code": 0, "msg": "table does not exist", "term": term, "offset": offset,
                "has_table": false,
            }))
        }
        Err((c, m)) => app(c, &m),
    }
}
