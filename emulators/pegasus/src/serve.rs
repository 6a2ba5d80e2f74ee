//! One connection to an emulated server: frames in, the world's answer out.

use std::sync::Arc;

use rollout_core::{Cluster, HealthProbe, NodeId};
use rollout_sim::SimCluster;
use rollout_sim::emulation::{ClusterView, NodeView, PartitionView, Proposal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Directory;
use super::clock::{pegasus_now, wall_time};
use rollout_pegasus::frame::{self, Payload, Request};
use rollout_pegasus::messages::{
    AppInfo, BalancerRequest, ClusterInfoResponse, Command, ErrResponse, I32Request, I32Response,
    ListResponse, Message, NodeInfo, PartitionConfiguration, QueryConfigRequest,
    QueryConfigResponse, app_status, config_type, meta_level, node_status, rpc,
};
use rollout_pegasus::types::{ErrorCode, Gpid, HostPort, RpcAddress};

/// Serves requests on `stream` for the process `me` until the peer or the process goes.
pub(super) async fn connection(
    mut stream: TcpStream,
    sim: SimCluster,
    dir: Arc<Directory>,
    me: NodeId,
) {
    // Pegasus serves HTTP on the RPC port: the first bytes tell which one a peer speaks.
    let mut first = [0u8; 4];
    if stream.peek(&mut first).await.is_ok_and(|n| n == 4) && &first == b"GET " {
        http(&mut stream, &sim, &dir, &me).await;
        return;
    }
    loop {
        let mut head = [0u8; 16];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let Ok((header_len, body_len)) = frame::request_lengths(&head) else {
            return;
        };
        let mut header = head.to_vec();
        header.resize(header_len, 0);
        if stream.read_exact(&mut header[16..]).await.is_err() {
            return;
        }
        let body_len = match body_len {
            usize::MAX => match frame::v0_body_len(&header) {
                Ok(n) => n,
                Err(_) => return,
            },
            n => n,
        };
        let mut body = vec![0u8; body_len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(req) = frame::read_request(&header, &body) else {
            return;
        };
        let answer = handle(&sim, &dir, &me, &req).await;
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// One HTTP request: `/config?name=` for the freeze thresholds, `/version`,
/// `/recentStartTime`; anything else is 404. The connection closes after it.
async fn http(stream: &mut TcpStream, sim: &SimCluster, dir: &Directory, me: &NodeId) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let t = &dir.timings;
    let node = sim.node_view(me);
    let flag = |name: &str, section: &str, value: String| {
        format!(r#"{{"name":"{name}","section":"{section}","value":"{value}"}}"#)
    };
    let body = match path {
        "/config?name=min_live_node_count_for_unfreeze" => Some(flag(
            "min_live_node_count_for_unfreeze",
            "meta_server",
            t.min_live.to_string(),
        )),
        "/config?name=node_live_percentage_threshold_for_update" => Some(flag(
            "node_live_percentage_threshold_for_update",
            "meta_server",
            t.live_percentage.to_string(),
        )),
        "/version" => node
            .as_ref()
            .map(|n| format!(r#"{{"Version":"{}","GitCommit":"emulated"}}"#, n.version)),
        "/recentStartTime" => node
            .as_ref()
            .map(|n| format!(r#"{{"RecentStartTime":"{}"}}"#, wall_time(n.started_ms))),
        p if p.starts_with("/metrics") => {
            // Every replica the node holds is open until its flush after kill_partition.
            let open = if flushed(sim, me).await {
                0
            } else {
                sim.view()
                    .partitions
                    .iter()
                    .filter(|p| {
                        p.primary.as_ref() == Some(me)
                            || p.secondaries.contains(me)
                            || p.others.contains(me)
                    })
                    .count()
            };
            Some(format!(
                r#"{{"role":"replica","entities":[{{"type":"server","id":"server","metrics":[{{"name":"total_replicas","value":{open}}},{{"name":"opening_replicas","value":0}},{{"name":"closing_replicas","value":0}}]}}]}}"#
            ))
        }
        _ => None,
    };
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", String::from("{}")),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
}

/// The answer to one request.
async fn handle(sim: &SimCluster, dir: &Directory, me: &NodeId, req: &Request) -> Vec<u8> {
    let Some(node) = sim.node_view(me) else {
        return frame::encode_response(&req.rpc, req.seqid, "ERR_INVALID_STATE", Payload::None);
    };
    let node = &node;
    if !node.serving {
        // Started, still replaying its log: the RPC layer answers but nothing is served.
        return frame::encode_response(
            &req.rpc,
            req.seqid,
            "ERR_SERVICE_NOT_ACTIVE",
            Payload::None,
        );
    }
    // The data path needs no view of the whole cluster (built for every other request).
    if node.role == "replica"
        && matches!(
            req.rpc.as_str(),
            rollout_pegasus::rrdb::rpc::PUT
                | rollout_pegasus::rrdb::rpc::GET
                | rollout_pegasus::rrdb::rpc::REMOVE
                | rollout_pegasus::rrdb::rpc::TTL
        )
    {
        return data(sim, dir, node, req);
    }
    let view = sim.view();
    let reply = |f: &dyn Fn(&mut rollout_pegasus::thrift::Writer)| {
        frame::encode_response(&req.rpc, req.seqid, "ERR_OK", Payload::Struct(f))
    };
    let ctx = Ctx {
        sim,
        dir,
        view: &view,
        node,
    };
    match (req.rpc.as_str(), node.role) {
        (rpc::CLI, _) => {
            let text = match Command::from_bytes(&req.body) {
                Ok(c) => ctx.command(&c).await,
                Err(e) => format!("ERR_INVALID_PARAMETERS: {e}"),
            };
            frame::encode_response(&req.rpc, req.seqid, "ERR_OK", Payload::String(&text))
        }
        (rpc::QUERY_REPLICA_INFO, "replica") => {
            let resp = rollout_pegasus::messages::QueryReplicaInfoResponse {
                err: Some(ErrorCode::ok()),
                replicas: ctx.replica_states().await,
            };
            reply(&|w| resp.write(w))
        }
        (_, "meta") => match ctx.meta(req).await {
            Some(bytes) => bytes,
            None => {
                frame::encode_response(&req.rpc, req.seqid, "ERR_HANDLER_NOT_FOUND", Payload::None)
            }
        },
        _ => frame::encode_response(&req.rpc, req.seqid, "ERR_HANDLER_NOT_FOUND", Payload::None),
    }
}

struct Ctx<'a> {
    sim: &'a SimCluster,
    dir: &'a Directory,
    view: &'a ClusterView,
    node: &'a NodeView,
}

impl Ctx<'_> {
    fn addr(&self, id: &NodeId) -> RpcAddress {
        self.dir
            .addr_of(id)
            .map_or(RpcAddress::none(), RpcAddress::new)
    }

    fn hp(&self, id: &NodeId) -> HostPort {
        self.dir
            .addr_of(id)
            .map_or_else(HostPort::default, HostPort::from_addr)
    }

    fn app_name(&self, table: u32) -> String {
        if self.view.tables == 1 {
            "temp".into()
        } else {
            format!("t{table}")
        }
    }

    /// Whether the meta is frozen: too few replica servers alive (pegasus.md §6).
    fn frozen(&self) -> bool {
        let data: Vec<&NodeView> = self
            .view
            .nodes
            .iter()
            .filter(|n| n.role == "replica")
            .collect();
        let alive = data.iter().filter(|n| n.alive).count();
        let t = &self.dir.timings;
        alive < t.min_live || alive * 100 < data.len() * t.live_percentage as usize
    }

    /// A remote command's text answer.
    async fn command(&self, c: &Command) -> String {
        let arg = c.arguments.first().map(String::as_str);
        match (c.cmd.as_str(), self.node.role) {
            ("server-info" | "server_info", _) => format!(
                "Pegasus Server {} (emulated by rollout) Release, Started at {}",
                self.node.version,
                wall_time(self.node.started_ms)
            ),
            ("meta.live_percentage", "meta") => self.dir.timings.live_percentage.to_string(),
            (
                name @ ("meta.lb.assign_delay_ms"
                | "meta.lb.add_secondary_enable_flow_control"
                | "meta.lb.add_secondary_max_count_for_one_node"),
                "meta",
            ) => match arg {
                None => self
                    .view
                    .knobs
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "ERR_INVALID_PARAMETERS".into()),
                Some(v) => {
                    let valid = if name.ends_with("flow_control") {
                        v == "true" || v == "false"
                    } else {
                        v.parse::<u64>().is_ok()
                    };
                    if !valid {
                        return format!("ERR_INVALID_PARAMETERS: {v:?}");
                    }
                    match Cluster::write_knob(self.sim, name, v).await {
                        Ok(()) => "OK".into(),
                        Err(e) => format!("ERR_INVALID_STATE: {e}"),
                    }
                }
            },
            ("replica.kill_partition", "replica") => {
                let (Some(app), Some(pidx)) = (
                    arg.and_then(|a| a.parse::<u32>().ok()),
                    c.arguments.get(1).and_then(|p| p.parse::<u32>().ok()),
                ) else {
                    return "ERR_INVALID_PARAMETERS: rollout's emulator takes \
                            replica.kill_partition APP PIDX only"
                        .into();
                };
                let held = self
                    .view
                    .partitions
                    .iter()
                    .any(|p| p.table == app && p.index == pidx && self.holds(p));
                if !held {
                    return "ERR_OBJECT_NOT_FOUND".into();
                }
                match Cluster::quiesce(self.sim, &self.node.id).await {
                    Ok(()) => "ERR_OK".into(),
                    Err(e) => format!("ERR_INVALID_STATE: {e}"),
                }
            }
            (other, _) => format!("unknown command '{other}'"),
        }
    }

    fn holds(&self, p: &PartitionView) -> bool {
        let me = &self.node.id;
        p.primary.as_ref() == Some(me) || p.secondaries.contains(me) || p.others.contains(me)
    }

    /// The replicas the node knows with their status: primary, secondary, or inactive (a
    /// dropped one, or every one once its flush after kill_partition is done: a real replica
    /// server lists closed replicas too).
    async fn replica_states(&self) -> Vec<(Gpid, i32)> {
        use rollout_pegasus::messages::partition_status::{INACTIVE, PRIMARY, SECONDARY};
        let flushed = flushed(self.sim, &self.node.id).await;
        let me = &self.node.id;
        self.view
            .partitions
            .iter()
            .filter(|p| self.holds(p))
            .map(|p| {
                let status = if flushed {
                    INACTIVE
                } else if p.primary.as_ref() == Some(me) {
                    PRIMARY
                } else if p.secondaries.contains(me) {
                    SECONDARY
                } else {
                    INACTIVE
                };
                (Gpid::new(p.table as i32, p.index as i32), status)
            })
            .collect()
    }

    fn config(&self, p: &PartitionView) -> PartitionConfiguration {
        PartitionConfiguration {
            pid: Gpid::new(p.table as i32, p.index as i32),
            ballot: p.ballot as i64,
            max_replica_count: p.wanted as i32,
            primary: p
                .primary
                .as_ref()
                .map_or(RpcAddress::none(), |n| self.addr(n)),
            secondaries: p.secondaries.iter().map(|n| self.addr(n)).collect(),
            // As a 2.4 server answers: 2.5 adds host_port fields 9 to 11 (which the backend
            // reads), encoded raw, which older clients (pypegasus 0.1.17) cannot skip.
            ..PartitionConfiguration::default()
        }
    }

    /// A meta RPC's answer; `None` for an RPC a meta does not serve.
    async fn meta(&self, req: &Request) -> Option<Vec<u8>> {
        let ok = || Some(ErrorCode::ok());
        let enc = |m: &dyn Fn(&mut rollout_pegasus::thrift::Writer)| {
            frame::encode_response(&req.rpc, req.seqid, "ERR_OK", Payload::Struct(m))
        };
        let leader = self.view.leader.as_ref();
        if leader != Some(&self.node.id) {
            // A standby: thrift clients get no forwarding, only the leader's name in a
            // configuration query.
            let forward = Some(ErrorCode::new("ERR_FORWARD_TO_OTHERS"));
            let hint = PartitionConfiguration {
                primary: leader.map_or(RpcAddress::none(), |l| self.addr(l)),
                ..PartitionConfiguration::default()
            };
            return Some(match req.rpc.as_str() {
                rpc::QUERY_CONFIG => enc(&|w| {
                    QueryConfigResponse {
                        err: forward.clone(),
                        partitions: vec![hint.clone()],
                        ..QueryConfigResponse::default()
                    }
                    .write(w)
                }),
                rpc::LIST_NODES
                | rpc::LIST_APPS
                | rpc::CLUSTER_INFO
                | rpc::CONTROL_META
                | rpc::PROPOSE_BALANCER => enc(&|w| {
                    ErrResponse {
                        err: forward.clone(),
                    }
                    .write(w)
                }),
                _ => return None,
            });
        }
        Some(match req.rpc.as_str() {
            rpc::LIST_NODES => {
                let filter = I32Request::from_bytes(&req.body).map_or(0, |r| r.0);
                let infos: Vec<NodeInfo> = self
                    .view
                    .nodes
                    .iter()
                    .filter(|n| n.role == "replica")
                    .map(|n| NodeInfo {
                        status: if n.alive {
                            node_status::ALIVE
                        } else {
                            node_status::UNALIVE
                        },
                        node: self.addr(&n.id),
                        hp_node: Some(self.hp(&n.id)),
                    })
                    .filter(|i| filter == node_status::INVALID || i.status == filter)
                    .collect();
                enc(&|w| {
                    ListResponse {
                        err: ok(),
                        infos: infos.clone(),
                    }
                    .write(w)
                })
            }
            rpc::LIST_APPS => {
                let apps: Vec<AppInfo> = (1..=self.view.tables)
                    .map(|t| {
                        let parts = self.view.partitions.iter().filter(|p| p.table == t);
                        let (count, wanted) =
                            parts.fold((0, 0), |(c, w), p| (c + 1, w.max(p.wanted)));
                        AppInfo {
                            status: app_status::AVAILABLE,
                            app_type: "pegasus".into(),
                            app_name: self.app_name(t),
                            app_id: t as i32,
                            partition_count: count,
                            is_stateful: true,
                            max_replica_count: wanted as i32,
                        }
                    })
                    .collect();
                enc(&|w| {
                    ListResponse {
                        err: ok(),
                        infos: apps.clone(),
                    }
                    .write(w)
                })
            }
            rpc::QUERY_CONFIG => {
                let q = QueryConfigRequest::from_bytes(&req.body).unwrap_or_default();
                let table = (1..=self.view.tables).find(|&t| self.app_name(t) == q.app_name);
                let resp = match table {
                    None => QueryConfigResponse {
                        err: Some(ErrorCode::new("ERR_OBJECT_NOT_FOUND")),
                        ..QueryConfigResponse::default()
                    },
                    Some(t) => {
                        let all: Vec<&PartitionView> = self
                            .view
                            .partitions
                            .iter()
                            .filter(|p| p.table == t)
                            .collect();
                        let partitions = all
                            .iter()
                            .filter(|p| {
                                q.partition_indices.is_empty()
                                    || q.partition_indices.contains(&(p.index as i32))
                            })
                            .map(|p| self.config(p))
                            .collect();
                        QueryConfigResponse {
                            err: ok(),
                            app_id: t as i32,
                            partition_count: all.len() as i32,
                            is_stateful: true,
                            partitions,
                        }
                    }
                };
                enc(&|w| resp.write(w))
            }
            rpc::CLUSTER_INFO => {
                let metas: Vec<String> = self
                    .view
                    .nodes
                    .iter()
                    .filter(|n| n.role == "meta")
                    .map(|n| self.hp(&n.id).to_string())
                    .collect();
                let level = if self.frozen() {
                    "freezed".to_string()
                } else {
                    self.view
                        .knobs
                        .get("meta_level")
                        .cloned()
                        .unwrap_or_else(|| "steady".into())
                };
                let (zk_hosts, zk_root) = self
                    .dir
                    .zookeeper
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let pairs = [
                    ("meta_servers", metas.join(",")),
                    ("primary_meta_server", self.hp(&self.node.id).to_string()),
                    ("zookeeper_hosts", zk_hosts),
                    ("zookeeper_root", zk_root),
                    ("meta_function_level", level),
                    (
                        "cluster_name",
                        format!("emulated-{}", metas.first().map_or("", String::as_str)),
                    ),
                ];
                let resp = ClusterInfoResponse {
                    err: ok(),
                    keys: pairs.iter().map(|(k, _)| (*k).to_string()).collect(),
                    values: pairs.iter().map(|(_, v)| v.clone()).collect(),
                };
                enc(&|w| resp.write(w))
            }
            rpc::CONTROL_META => {
                let level = I32Request::from_bytes(&req.body).map_or(meta_level::INVALID, |r| r.0);
                let old = self
                    .view
                    .knobs
                    .get("meta_level")
                    .and_then(|l| meta_level::parse(l))
                    .unwrap_or(meta_level::STEADY);
                let err = match meta_level::name(level) {
                    _ if level == meta_level::INVALID => ErrorCode::ok(),
                    Some(name) => match Cluster::write_knob(self.sim, "meta_level", name).await {
                        Ok(()) => ErrorCode::ok(),
                        Err(_) => ErrorCode::new("ERR_INVALID_STATE"),
                    },
                    None => ErrorCode::new("ERR_INVALID_PARAMETERS"),
                };
                let resp = I32Response {
                    err: Some(err),
                    value: old,
                };
                enc(&|w| resp.write(w))
            }
            rpc::PROPOSE_BALANCER => {
                let err = match BalancerRequest::from_bytes(&req.body) {
                    Ok(b) => self.propose(&b),
                    Err(_) => ErrorCode::new("ERR_INVALID_PARAMETERS"),
                };
                enc(&|w| {
                    ErrResponse {
                        err: Some(err.clone()),
                    }
                    .write(w)
                })
            }
            _ => return None,
        })
    }

    /// `move_pri` ([DOWNGRADE_TO_SECONDARY from, UPGRADE_TO_PRIMARY to]) and
    /// DOWNGRADE_TO_INACTIVE are taken; anything else is refused.
    fn propose(&self, b: &BalancerRequest) -> ErrorCode {
        let invalid = ErrorCode::new("ERR_INVALID_PARAMETERS");
        let node_of = |a: &RpcAddress| a.0.and_then(|a| self.dir.node.get(&a).cloned());
        let (table, index) = (b.gpid.app_id, b.gpid.partition_index);
        let (Ok(table), Ok(index)) = (u32::try_from(table), u32::try_from(index)) else {
            return invalid;
        };
        let proposal = match b.action_list.as_slice() {
            [down, up]
                if down.kind == config_type::DOWNGRADE_TO_SECONDARY
                    && up.kind == config_type::UPGRADE_TO_PRIMARY =>
            {
                match node_of(&up.node) {
                    Some(to) => Proposal::MovePrimary { to },
                    None => return invalid,
                }
            }
            [one] if one.kind == config_type::DOWNGRADE_TO_INACTIVE => match node_of(&one.node) {
                Some(node) => Proposal::Downgrade { node },
                None => return invalid,
            },
            _ => return invalid,
        };
        match self.sim.propose(table, index, &proposal) {
            Ok(()) => ErrorCode::ok(),
            Err(_) => invalid,
        }
    }
}

/// The data path: a put, get, remove or ttl for the partition the header names, served only
/// by its primary (`ERR_INVALID_STATE` otherwise, as a real replica server answers, and
/// `ERR_TIMEOUT` while the partition takes no writes). A value is kept with its write's
/// sequence number in the world's ledger; a read finds it only while the replica serving
/// the partition holds that write, so a lost write reads as not found.
fn data(sim: &SimCluster, dir: &Directory, node: &NodeView, req: &Request) -> Vec<u8> {
    use rollout_pegasus::rrdb::{DataResponse, NOT_FOUND, OK, UpdateRequest, rpc as rrdb};
    use rollout_sim::emulation::WriteRefused;
    let fail = |e: &str| frame::encode_response(&req.rpc, req.seqid, e, Payload::None);
    let g = req.meta.gpid;
    let (Ok(table), Ok(index)) = (u32::try_from(g.app_id), u32::try_from(g.partition_index)) else {
        return fail("ERR_OBJECT_NOT_FOUND");
    };
    let me = &node.id;
    let mut resp = DataResponse {
        error: OK,
        app_id: g.app_id,
        partition_index: g.partition_index,
        server: dir
            .addr_of(me)
            .map_or_else(HostPort::default, HostPort::from_addr)
            .to_string(),
        ..DataResponse::default()
    };
    let mut r = rollout_pegasus::thrift::Reader::new(&req.body);
    let refused = |e: WriteRefused| match e {
        WriteRefused::NoPartition => "ERR_OBJECT_NOT_FOUND",
        WriteRefused::NotPrimary => "ERR_INVALID_STATE",
        _ => "ERR_TIMEOUT",
    };
    let mut values = dir.values.lock().unwrap_or_else(|e| e.into_inner());
    if req.rpc == rrdb::PUT || req.rpc == rrdb::REMOVE {
        let (key, value) = if req.rpc == rrdb::PUT {
            match UpdateRequest::read(&mut r) {
                Ok(u) => (u.key, Some((u.value, u.expire_ts_seconds))),
                Err(_) => return fail("ERR_INVALID_DATA"),
            }
        } else {
            match r.binary() {
                Ok(k) => (k.to_vec(), None),
                Err(_) => return fail("ERR_INVALID_DATA"),
            }
        };
        let seq = match sim.write(table, index, me) {
            Ok(seq) => seq,
            Err(e) => return fail(refused(e)),
        };
        match value {
            Some((v, expire)) => {
                values.insert((table, index, key), (seq, v, expire));
            }
            None => {
                values.remove(&(table, index, key));
            }
        }
        resp.decree = Some(i64::from(seq));
        return frame::encode_response(
            &req.rpc,
            req.seqid,
            "ERR_OK",
            Payload::Struct(&|w| resp.write_update(w)),
        );
    }
    let Ok(key) = r.binary() else {
        return fail("ERR_INVALID_DATA");
    };
    if !sim.readable(table, index, me) {
        return fail("ERR_INVALID_STATE");
    }
    let now = pegasus_now();
    let found = values
        .get(&(table, index, key.to_vec()))
        .filter(|(seq, _, expire)| {
            sim.holds(table, index, *seq) && (*expire == 0 || *expire > now)
        });
    // Not found still carries field 2 (an empty value, a ttl of 0), as the server's structs
    // have no optional fields: clients read it unconditionally.
    match (found, req.rpc == rrdb::TTL) {
        (Some((_, v, _)), false) => resp.value = Some(v.clone()),
        (Some((_, _, 0)), true) => resp.ttl_seconds = Some(-1),
        (Some((_, _, expire)), true) => resp.ttl_seconds = Some(expire - now),
        (None, ttl) => {
            resp.error = NOT_FOUND;
            if ttl {
                resp.ttl_seconds = Some(0);
            } else {
                resp.value = Some(Vec::new());
            }
        }
    }
    frame::encode_response(
        &req.rpc,
        req.seqid,
        "ERR_OK",
        Payload::Struct(&|w| resp.write_read(w)),
    )
}

/// Whether the node's flush after `replica.kill_partition` is done (its replicas closed).
async fn flushed(sim: &SimCluster, me: &NodeId) -> bool {
    Cluster::quiesced(sim, me)
        .check()
        .await
        .is_ok_and(|h| h.is_healthy())
}
