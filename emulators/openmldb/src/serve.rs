//! One emulated server's HTTP/JSON answers, as brpc gives them: `POST /<Service>/<Method>`
//! with the service's short or full name, `Authorization` required (a request without it
//! gets its connection closed), application errors as HTTP 200 with a non-zero `code`,
//! unknown methods 404, bad JSON 400.

use std::sync::Arc;

use rollout_core::{Cluster, HealthProbe, NodeId};
use rollout_sim::SimCluster;
use rollout_sim::emulation_openmldb::NsOp;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Directory;

/// Serves requests on one connection until the client closes it or sends garbage.
pub(crate) async fn connection(
    mut stream: TcpStream,
    sim: SimCluster,
    dir: Arc<Directory>,
    me: NodeId,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let (head_end, len) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                break (end + 4, len);
            }
            if buf.len() > 1 << 20 {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let mut lines = head.lines();
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let (method, path) = (
            first.next().unwrap_or(""),
            first.next().unwrap_or("/").to_string(),
        );
        let authorized = lines.any(|l| {
            l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        });
        let (status, reply) = if method == "GET" && path == "/version" {
            let v = sim.node_view(&me).map(|n| n.version).unwrap_or_default();
            ("200 OK", format!("{v}-emulated"))
        } else if !authorized {
            // brpc's authenticator fails the connection.
            return;
        } else {
            answer(&sim, &dir, &me, &path, &body).await
        };
        let out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn app(code: i32, msg: &str) -> (&'static str, String) {
    ("200 OK", json!({"code": code, "msg": msg}).to_string())
}

fn ok(mut v: Value) -> (&'static str, String) {
    v["code"] = 0.into();
    v["msg"] = "ok".into();
    ("200 OK", v.to_string())
}

/// One request's status and body.
async fn answer(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    path: &str,
    body: &[u8],
) -> (&'static str, String) {
    let Some(node) = sim.node_view(me) else {
        return ("500 Internal Server Error", "no such node".into());
    };
    if !node.serving {
        return ("503 Service Unavailable", "Server is stopping".into());
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or("");
    let method = parts.next().unwrap_or("");
    let service = service.rsplit('.').next().unwrap_or(service);
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    "400 Bad Request",
                    format!("Fail to parse http body as request: {e}"),
                );
            }
        }
    };
    match (service, node.role) {
        ("NameServer", "nameserver") => nameserver(sim, dir, me, method, &req).await,
        ("TabletServer", "tablet") => tablet(sim, dir, me, method, &req).await,
        _ => ("404 Not Found", format!("Fail to find service={service}")),
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn u32_of(v: &Value, k: &str) -> u32 {
    v[k].as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// Table `t<k>` of the world is tid `k`.
fn table_of(name: &str) -> Option<u32> {
    name.strip_prefix('t')?.parse().ok()
}

async fn nameserver(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    method: &str,
    req: &Value,
) -> (&'static str, String) {
    let view = sim.view();
    if view.leader.as_ref() != Some(me) {
        return app(300, "nameserver is not leader");
    }
    let auto = view.knobs.get("auto_failover").map(String::as_str) == Some("true");
    let gated = matches!(
        method,
        "ChangeLeader" | "RecoverTable" | "RecoverEndpoint" | "OfflineEndpoint"
    );
    if gated && auto {
        return app(301, "auto_failover is enabled");
    }
    let ep = |id: &NodeId| dir.endpoint(id);
    let node = |k: &str| dir.world(str_of(req, k));
    match method {
        "ShowTablet" => {
            let tablets: Vec<Value> = view
                .nodes
                .iter()
                .filter(|n| n.role == "tablet")
                .map(|n| {
                    let healthy = sim.openmldb_tablet_healthy(&n.id) == Some(true);
                    json!({"endpoint": ep(&n.id), "state": if healthy { "kHealthy" } else { "kOffline" }, "age": 0})
                })
                .collect();
            ok(json!({"tablets": tablets}))
        }
        "ShowTable" => {
            let mut tables: std::collections::BTreeMap<u32, Vec<Value>> =
                std::collections::BTreeMap::new();
            for p in sim.openmldb_partitions() {
                let metas: Vec<Value> = p
                    .replicas
                    .iter()
                    .map(|r| json!({"endpoint": ep(&r.node), "is_leader": r.is_leader, "is_alive": r.is_alive, "offset": r.offset, "record_cnt": r.offset}))
                    .collect();
                tables.entry(p.table).or_default().push(json!({
                    "pid": p.pid, "partition_meta": metas,
                    "term_offset": [{"term": p.term, "offset": 0}]
                }));
            }
            let wanted = view.partitions.first().map_or(3, |p| p.wanted);
            let info: Vec<Value> = tables
                .into_iter()
                .map(|(t, parts)| json!({"name": format!("t{t}"), "db": "", "tid": t, "replica_num": wanted, "partition_num": parts.len(), "table_partition": parts}))
                .collect();
            ok(json!({"table_info": info}))
        }
        "ShowOPStatus" => {
            let name = req["name"].as_str().and_then(table_of);
            let pid = req["pid"].as_u64();
            let ops: Vec<Value> = sim
                .openmldb_ops()
                .into_iter()
                .filter(|o| name.is_none_or(|t| t == o.table) && pid.is_none_or(|p| p == u64::from(o.pid)))
                .map(|o| json!({"op_id": o.id, "op_type": o.op_type, "status": o.status, "name": format!("t{}", o.table), "pid": o.pid, "db": "", "start_time": 0, "end_time": 0, "task_type": "-"}))
                .collect();
            ok(json!({"op_status": ops}))
        }
        "ConfGet" => ok(
            json!({"conf": [{"key": "auto_failover", "value": view.knobs.get("auto_failover").cloned().unwrap_or_default()}]}),
        ),
        "ConfSet" => {
            let key = str_of(&req["conf"], "key");
            let value = str_of(&req["conf"], "value").to_ascii_lowercase();
            if key != "auto_failover" || !matches!(value.as_str(), "true" | "false") {
                return app(307, "invalid parameter");
            }
            match Cluster::write_knob(sim, key, &value).await {
                Ok(()) => {
                    if let Ok(c) = super::zk_client(&dir.ensemble).await {
                        let _ = c
                            .set_data(
                                &format!("{}/config/auto_failover", dir.root),
                                value.as_bytes(),
                                None,
                            )
                            .await;
                    }
                    app(0, "ok")
                }
                Err(e) => app(304, &e.to_string()),
            }
        }
        "ChangeLeader" | "RecoverTable" | "AddReplicaNS" | "DelReplicaNS" | "RecoverEndpoint" => {
            let table = table_of(str_of(req, "name")).unwrap_or(0);
            let pid = u32_of(req, "pid");
            let op = match method {
                "ChangeLeader" => node("candidate_leader").map(|candidate| NsOp::ChangeLeader {
                    table,
                    pid,
                    candidate,
                }),
                "RecoverTable" => {
                    node("endpoint").map(|node| NsOp::RecoverTable { table, pid, node })
                }
                "AddReplicaNS" => {
                    node("endpoint").map(|node| NsOp::AddReplica { table, pid, node })
                }
                "DelReplicaNS" => {
                    node("endpoint").map(|node| NsOp::DelReplica { table, pid, node })
                }
                _ => node("endpoint").map(|node| NsOp::RecoverEndpoint {
                    node,
                    concurrency: u32_of(req, "concurrency").clamp(1, 8),
                }),
            };
            let Some(op) = op else {
                return app(302, "endpoint is not exist");
            };
            match sim.openmldb_op(&op) {
                Ok(()) => app(0, "ok"),
                Err(e) => app(305, &e),
            }
        }
        _ => ("404 Not Found", format!("Fail to find method={method}")),
    }
}

async fn tablet(
    sim: &SimCluster,
    dir: &Directory,
    me: &NodeId,
    method: &str,
    req: &Value,
) -> (&'static str, String) {
    let tid = u32_of(req, "tid");
    let pid = u32_of(req, "pid");
    match method {
        "GetTableStatus" => {
            let asked = dir
                .snapshotting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(me);
            let snapshotting = if asked {
                let done = Cluster::quiesced(sim, me)
                    .check()
                    .await
                    .is_ok_and(|h| h.is_healthy());
                if done {
                    dir.snapshotting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(me);
                }
                !done
            } else {
                false
            };
            let filter = req.get("tid").is_some();
            let all: Vec<Value> = sim
                .openmldb_tablet(me)
                .into_iter()
                .filter(|p| !filter || (p.table == tid && p.pid == pid))
                .map(|p| json!({"tid": p.table, "pid": p.pid, "offset": p.offset, "mode": if p.leader { "kTableLeader" } else { "kTableFollower" }, "state": if snapshotting { "kMakingSnapshot" } else { "kTableNormal" }, "name": format!("t{}", p.table)}))
                .collect();
            ok(json!({"all_table_status": all}))
        }
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
            let leader = matches!(req["mode"].as_str(), Some("kTableLeader"))
                || req["mode"].as_u64() == Some(1);
            match sim.openmldb_change_role(tid, pid, me, leader) {
                Ok(()) => app(0, "ok"),
                Err((c, m)) => app(c, &m),
            }
        }
        "SetMode" => match sim.openmldb_set_mode(me, req["follower"].as_bool().unwrap_or(false)) {
            Ok(()) => app(0, "ok"),
            Err(e) => app(307, &e),
        },
        "MakeSnapshot" => {
            dir.snapshotting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(me.clone());
            match Cluster::quiesce(sim, me).await {
                Ok(()) => app(0, "ok"),
                Err(e) => app(-1, &e.to_string()),
            }
        }
        _ => ("404 Not Found", format!("Fail to find method={method}")),
    }
}
