//! The NameServer methods (`src/nameserver/name_server_impl.cc` @v0.8.5 and @v0.9.2, the same
//! for all of these; docs/upstream/openmldb.md §2): every one first answers 300 on a
//! nameserver that does not hold the leader lock; the op RPCs check, in the nameserver's
//! order, what [`SimCluster::openmldb_op`] checks, and answer with its codes.

use std::collections::BTreeMap;

use prost_reflect::DynamicMessage;
use rollout_core::{Cluster, NodeId};
use rollout_sim::SimCluster;
use rollout_sim::emulation_openmldb::{NsOp, ReplicaMeta};
use serde_json::{Value, json};

use crate::Directory;
use crate::http::{Reply, app, ok};
use crate::proto::{bool_or_default, string, string_or_default, u32_of, u64_of};

/// The database every emulated table lives in (a table needs one for the SDK's inserts).
pub(crate) const DB: &str = "demo_db";

/// World table `k` is `t<k>`, tid `k`.
pub(crate) fn table_name(k: u32) -> String {
    format!("t{k}")
}

/// The world table a (db, name) names.
pub(crate) fn table_of(db: &str, name: &str) -> Option<u32> {
    (db == DB).then_some(())?;
    name.strip_prefix('t')?.parse().ok()
}

/// A replica as the nameserver records it (`PartitionMeta`): its endpoint with its leader
/// and alive flags.
pub(crate) fn replica_meta(dir: &Directory, r: &ReplicaMeta) -> Value {
    json!({
        "endpoint": dir.endpoint(&r.node),
        "is_leader": r.is_leader,
        "is_alive": r.is_alive,
    })
}

/// One nameserver method's answer.
pub(crate) async fn answer(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    method: &str,
    req: &DynamicMessage,
) -> Reply {
    // `ShowFunction` has no leader check (`NameServerImpl::ShowFunction` @v0.9.2): the
    // SDK's connect succeeds on a standby too. The emulator keeps no functions.
    if method == "ShowFunction" {
        return app(0, "ok");
    }
    let view = sim.view();
    if view.leader.as_ref() != Some(me) {
        return app(300, "nameserver is not leader");
    }
    match method {
        "ShowTablet" => show_tablet(sim, dir),
        "ShowTable" => show_table(sim, dir, req),
        "ShowOPStatus" => show_op_status(sim, req),
        "ConfGet" => ok(json!({
            "conf": [{"key": "auto_failover", "value": view.knobs.get("auto_failover").cloned().unwrap_or_default()}]
        })),
        "ConfSet" => conf_set(sim, dir, req).await,
        // The nameserver also holds its internal databases (`NameServerImpl::OnLocked`).
        "UseDatabase" => {
            let db = string_or_default(req, "db");
            if [DB, "INFORMATION_SCHEMA", "__INTERNAL_DB", "__PRE_AGG_DB"].contains(&db.as_str()) {
                app(0, "ok")
            } else {
                app(802, "database not found")
            }
        }
        _ => op(sim, dir, method, req),
    }
}

/// `ShowTablet`: every tablet the nameserver has seen, kHealthy or kOffline; under
/// `--use_name` the name's address as `real_endpoint`.
fn show_tablet(sim: &SimCluster, dir: &Directory) -> Reply {
    let tablets: Vec<Value> = sim
        .view()
        .nodes
        .iter()
        .filter(|n| n.role == "tablet")
        .map(|n| {
            let healthy = sim.openmldb_tablet_healthy(&n.id) == Some(true);
            let mut t = json!({
                "endpoint": dir.endpoint(&n.id),
                "state": if healthy { "kHealthy" } else { "kOffline" },
                "age": 0,
            });
            if dir.options.use_name {
                t["real_endpoint"] = dir.real(&n.id).into();
            }
            t
        })
        .collect();
    ok(json!({ "tablets": tablets }))
}

/// `ShowTable`: with `show_all` every table, else the one named in `db` (or every table of
/// `db`); each partition's replicas with their leader and alive flags and offsets, and the
/// partition's term.
fn show_table(sim: &SimCluster, dir: &Directory, req: &DynamicMessage) -> Reply {
    let all = bool_or_default(req, "show_all");
    let db = string_or_default(req, "db");
    let name = string(req, "name");
    let wanted = sim.view().partitions.first().map_or(3, |p| p.wanted);
    let mut tables: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    for p in sim.openmldb_partitions() {
        let metas: Vec<Value> = p
            .replicas
            .iter()
            .map(|r| {
                let mut m = replica_meta(dir, r);
                m["offset"] = r.offset.into();
                m["record_cnt"] = r.offset.into();
                m
            })
            .collect();
        tables.entry(p.table).or_default().push(json!({
            "pid": p.pid,
            "partition_meta": metas,
            "term_offset": [{"term": p.term, "offset": 0}],
        }));
    }
    let info: Vec<Value> = tables
        .into_iter()
        .filter(|(t, _)| all || (db == DB && name.as_ref().is_none_or(|n| *n == table_name(*t))))
        .map(|(t, parts)| {
            json!({
                "name": table_name(t), "db": DB, "tid": t, "replica_num": wanted,
                "partition_num": parts.len(), "table_partition": parts,
            })
        })
        .collect();
    if info.is_empty() && name.is_some() {
        return Reply::Message(json!({"code": 100, "msg": "table is not exist", "table_info": []}));
    }
    ok(json!({ "table_info": info }))
}

/// `ShowOPStatus`: every op the nameserver keeps, filtered by name, pid, db, op_id.
fn show_op_status(sim: &SimCluster, req: &DynamicMessage) -> Reply {
    let name = string(req, "name");
    let db = string(req, "db");
    let pid = u32_of(req, "pid");
    let id = u64_of(req, "op_id");
    let ops: Vec<Value> = sim
        .openmldb_ops()
        .into_iter()
        .filter(|o| name.as_ref().is_none_or(|n| *n == table_name(o.table)))
        .filter(|_| db.as_ref().is_none_or(|d| d == DB))
        .filter(|o| pid.is_none_or(|p| p == o.pid))
        .filter(|o| id.is_none_or(|i| i == o.id))
        .map(|o| {
            json!({
                "op_id": o.id, "op_type": o.op_type, "status": o.status,
                "start_time": 0, "end_time": 0, "task_type": "-",
                "name": table_name(o.table), "pid": o.pid, "db": DB,
            })
        })
        .collect();
    ok(json!({ "op_status": ops }))
}

/// `ConfSet`: only `auto_failover`, `true` or `false` in any case (307 otherwise), written
/// to ZooKeeper (304 when that fails) and then held in memory.
async fn conf_set(sim: &SimCluster, dir: &Directory, req: &DynamicMessage) -> Reply {
    let conf = crate::proto::get(req, "conf").and_then(|v| v.as_message().cloned());
    let (key, value) = conf.map_or_else(Default::default, |c| {
        (string_or_default(&c, "key"), string_or_default(&c, "value"))
    });
    let value = value.to_ascii_lowercase();
    if key != "auto_failover" || !matches!(value.as_str(), "true" | "false") {
        return app(307, "invalid parameter");
    }
    if let Err(e) = crate::registration::set_auto_failover(dir, &value).await {
        return app(304, &format!("set zk failed: {e}"));
    }
    match Cluster::write_knob(sim, &key, &value).await {
        Ok(()) => app(0, "ok"),
        Err(e) => app(304, &e.to_string()),
    }
}

/// The op RPCs: the request as the world takes it, refused with the nameserver's codes.
fn op(sim: &SimCluster, dir: &Directory, method: &str, req: &DynamicMessage) -> Reply {
    let db = string_or_default(req, "db");
    let name = string_or_default(req, "name");
    let table = || table_of(&db, &name).ok_or_else(|| app(100, "table is not exist"));
    let node = |k: &str| {
        let e = string_or_default(req, k);
        dir.world(&e)
            .ok_or_else(|| app(302, &format!("endpoint {e} is not exist")))
    };
    let pid = u32_of(req, "pid").unwrap_or(0);
    let built: Result<NsOp, Reply> = (|| {
        Ok(match method {
            "ChangeLeader" => {
                let table = table()?;
                let candidate = match string(req, "candidate_leader").as_deref() {
                    Some("auto") | None => {
                        auto_candidate(sim, table, pid, string(req, "candidate_leader").is_none())?
                    }
                    Some(_) => node("candidate_leader")?,
                };
                NsOp::ChangeLeader {
                    table,
                    pid,
                    candidate,
                }
            }
            "RecoverTable" => NsOp::RecoverTable {
                node: node("endpoint")?,
                table: table()?,
                pid,
            },
            "AddReplicaNS" => NsOp::AddReplica {
                node: node("endpoint")?,
                table: table()?,
                pid,
            },
            "DelReplicaNS" => NsOp::DelReplica {
                table: table()?,
                pid,
                node: node("endpoint")?,
            },
            "RecoverEndpoint" => NsOp::RecoverEndpoint {
                node: node("endpoint")?,
                // An absent concurrency is `name_server_task_concurrency`, 2.
                concurrency: u32_of(req, "concurrency").unwrap_or(2),
            },
            "UpdateTableAliveStatus" => NsOp::UpdateTableAlive {
                node: node("endpoint")?,
                table: table()?,
                pid: u32_of(req, "pid"),
                alive: bool_or_default(req, "is_alive"),
            },
            _ => return Err(Reply::Http(404, format!("Fail to find method={method}"))),
        })
    })();
    let op = match built {
        Ok(op) => op,
        Err(reply) => return reply,
    };
    match sim.openmldb_op(&op) {
        Ok(()) => app(0, "ok"),
        Err((code, msg)) => app(code, &msg),
    }
}

/// A ChangeLeader without a named candidate: refused with 309 while the partition has an
/// alive leader (unless the candidate was `auto`), else the alive follower with the highest
/// offset.
fn auto_candidate(sim: &SimCluster, table: u32, pid: u32, absent: bool) -> Result<NodeId, Reply> {
    let p = sim
        .openmldb_partitions()
        .into_iter()
        .find(|p| p.table == table && p.pid == pid)
        .ok_or_else(|| app(308, "pid is not exist"))?;
    if absent && p.replicas.iter().any(|r| r.is_leader && r.is_alive) {
        return Err(app(309, "leader is alive"));
    }
    p.replicas
        .iter()
        .filter(|r| r.is_alive && !r.is_leader)
        .max_by_key(|r| r.offset)
        .map(|r| r.node.clone())
        .ok_or_else(|| app(310, "no alive follower"))
}
