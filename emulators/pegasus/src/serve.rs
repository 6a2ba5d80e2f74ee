//! One connection to an emulated server: frames in, the world's answer out, read and written
//! as the node's version does.

use std::sync::Arc;

use rollout_core::NodeId;
use rollout_sim::SimCluster;
use rollout_sim::emulation::{NodeView, WriteRefused};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Directory;
use crate::clock::pegasus_now;
use crate::wire::frame::{self, Request, Result0};
use crate::wire::idl;
use crate::wire::out::Out;
use crate::wire::reader::{Abort, CppReader};

/// RPC codes the emulated servers serve (`replication.codes.h`, `rrdb.code.definition.h`,
/// `remote_command.cpp`).
pub(crate) mod rpc {
    pub(crate) const LIST_NODES: &str = "RPC_CM_LIST_NODES";
    pub(crate) const LIST_APPS: &str = "RPC_CM_LIST_APPS";
    pub(crate) const QUERY_CONFIG: &str = "RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX";
    pub(crate) const CLUSTER_INFO: &str = "RPC_CM_CLUSTER_INFO";
    pub(crate) const CONTROL_META: &str = "RPC_CM_CONTROL_META";
    pub(crate) const PROPOSE_BALANCER: &str = "RPC_CM_PROPOSE_BALANCER";
    pub(crate) const QUERY_REPLICA_INFO: &str = "RPC_QUERY_REPLICA_INFO";
    pub(crate) const CLI: &str = "RPC_CLI_CLI_CALL";
    pub(crate) const PUT: &str = "RPC_RRDB_RRDB_PUT";
    pub(crate) const GET: &str = "RPC_RRDB_RRDB_GET";
    pub(crate) const REMOVE: &str = "RPC_RRDB_RRDB_REMOVE";
    pub(crate) const TTL: &str = "RPC_RRDB_RRDB_TTL";
}

/// What a request comes to.
pub(crate) enum Answer {
    /// A response frame.
    Frame(Vec<u8>),
    /// The server's reader threw (or a CHECK failed) on the request: the process ends.
    Died(String),
}

/// Serves requests on `stream` for the process `me` until the peer or the process goes.
pub(crate) async fn connection(
    mut stream: TcpStream,
    sim: SimCluster,
    dir: Arc<Directory>,
    me: NodeId,
) {
    // Pegasus serves HTTP on the RPC port: the first bytes tell which one a peer speaks.
    let mut first = [0u8; 4];
    if stream.peek(&mut first).await.is_ok_and(|n| n == 4) && &first == b"GET " {
        crate::http::serve(&mut stream, &sim, &dir, &me).await;
        return;
    }
    loop {
        let mut head = [0u8; 16];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let Ok((header_len, body_len)) = frame::lengths(&head) else {
            return;
        };
        let mut header = head.to_vec();
        header.resize(header_len, 0);
        if stream.read_exact(&mut header[16..]).await.is_err() {
            return;
        }
        let body_len = match body_len {
            Some(n) => n,
            None => match frame::v0_body(&header) {
                Ok(n) => n,
                Err(_) => return,
            },
        };
        let mut body = vec![0u8; body_len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok(req) = frame::request(&header, &body) else {
            return;
        };
        match handle(&sim, &dir, &me, &req).await {
            Answer::Frame(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Answer::Died(why) => {
                tracing::warn!(node = %me, rpc = %req.rpc, "the emulated server dies reading a request: {why}");
                sim.kill(&me);
                return;
            }
        }
    }
}

/// A response frame with a struct result.
pub(crate) fn reply(req: &Request, write: impl FnOnce(&mut Out)) -> Answer {
    let mut o = Out::new();
    write(&mut o);
    Answer::Frame(frame::response(
        &req.rpc,
        req.seqid,
        "ERR_OK",
        Result0::Struct(o),
    ))
}

/// A response frame that carries only the RPC layer's error.
pub(crate) fn rpc_error(req: &Request, error: &str) -> Answer {
    Answer::Frame(frame::response(&req.rpc, req.seqid, error, Result0::None))
}

/// Decodes `req`'s args as the server does; a reader that throws ends the process.
pub(crate) fn decode<T>(
    req: &Request,
    read: impl FnOnce(&mut CppReader<'_>) -> Result<T, Abort>,
) -> Result<T, Answer> {
    idl::args(&req.args, read).map_err(|e| Answer::Died(e.to_string()))
}

/// The answer to one request.
async fn handle(sim: &SimCluster, dir: &Directory, me: &NodeId, req: &Request) -> Answer {
    let Some(node) = sim.node_view(me) else {
        return rpc_error(req, "ERR_INVALID_STATE");
    };
    let v = dir.version_of(&node);
    if !node.serving {
        // Started, still loading: the process serves its port before the app's `start`
        // (`service_node::start`, `runtime/service_engine.cpp` @v2.5.0), and neither role
        // has registered a handler yet: a meta does so once ZooKeeper is reached
        // (`meta_service::start` @v2.4.0, @v2.5.0), a replica server once its replicas are
        // loaded (`replica_stub::initialize`). The RPC layer finds none
        // (`rpc_engine::on_recv_request`), for the CLI too.
        return rpc_error(req, "ERR_HANDLER_NOT_FOUND");
    }
    match (req.rpc.as_str(), node.role) {
        (rpc::PUT | rpc::GET | rpc::REMOVE | rpc::TTL, "replica") => data(sim, dir, &node, req),
        // Only the meta and the replica server register the CLI RPC
        // (`register_remote_command_rpc` in `meta_service::start` and `replica_stub`); a
        // collector starts its HTTP server alone (`info_collector_app`,
        // `src/server/info_collector_app.cpp` @v2.4.0, @v2.5.0), so its `server-info`
        // cannot be reached remotely.
        (rpc::CLI, "meta" | "replica") => match decode(req, idl::command) {
            Ok(c) => {
                let text = crate::commands::answer(sim, dir, &node, v, &c).await;
                Answer::Frame(frame::response(
                    &req.rpc,
                    req.seqid,
                    "ERR_OK",
                    Result0::String(text),
                ))
            }
            Err(died) => died,
        },
        (rpc::QUERY_REPLICA_INFO, "replica") => {
            if let Err(died) = decode(req, |r| idl::query_replica_info(r, v)) {
                return died;
            }
            let replicas = crate::commands::replica_states(sim, dir, &node).await;
            reply(req, |o| idl::replica_info(o, "ERR_OK", &replicas))
        }
        (_, "meta") => crate::meta::answer(sim, dir, &node, v, req).await,
        _ => rpc_error(req, "ERR_HANDLER_NOT_FOUND"),
    }
}

/// rrdb's `error` values (`rocksdb::Status::Code`): ok, not found.
const OK: i32 = 0;
const NOT_FOUND: i32 = 1;

/// The data path: a put, get, remove or ttl for the partition the header names, served only
/// by its primary (`ERR_INVALID_STATE` otherwise, as a replica server answers a request for a
/// partition it is not primary of, and `ERR_TIMEOUT` while the partition takes no writes). A
/// value is kept with its write's sequence number in the world's ledger; a read finds it only
/// while the replica serving the partition holds that write, so a lost write reads as not
/// found.
fn data(sim: &SimCluster, dir: &Directory, node: &NodeView, req: &Request) -> Answer {
    let g = req.gpid;
    let (Ok(table), Ok(index)) = (u32::try_from(g.0), u32::try_from(g.1)) else {
        return rpc_error(req, "ERR_OBJECT_NOT_FOUND");
    };
    let me = &node.id;
    let server = dir.addr_of(me).map_or_else(String::new, |a| a.to_string());
    let refused = |e: WriteRefused| match e {
        WriteRefused::NoPartition => "ERR_OBJECT_NOT_FOUND",
        WriteRefused::NotPrimary => "ERR_INVALID_STATE",
        _ => "ERR_TIMEOUT",
    };
    if req.rpc == rpc::PUT || req.rpc == rpc::REMOVE {
        let update = if req.rpc == rpc::PUT {
            decode(req, idl::update).map(|u| (u.key, Some((u.value, u.expire_ts_seconds))))
        } else {
            decode(req, idl::blob).map(|k| (k, None))
        };
        let (key, value) = match update {
            Ok(kv) => kv,
            Err(died) => return died,
        };
        let seq = match sim.write(table, index, me) {
            Ok(seq) => seq,
            Err(e) => return rpc_error(req, refused(e)),
        };
        let mut values = dir.values.lock().unwrap_or_else(|e| e.into_inner());
        match value {
            Some((v, expire)) => {
                values.insert((table, index, key), (seq, v, expire));
            }
            None => {
                values.remove(&(table, index, key));
            }
        }
        return reply(req, |o| {
            idl::update_response(o, OK, g, i64::from(seq), &server);
        });
    }
    let key = match decode(req, idl::blob) {
        Ok(k) => k,
        Err(died) => return died,
    };
    if !sim.readable(table, index, me) {
        return rpc_error(req, "ERR_INVALID_STATE");
    }
    let now = pegasus_now();
    let values = dir.values.lock().unwrap_or_else(|e| e.into_inner());
    let found = values.get(&(table, index, key)).filter(|(seq, _, expire)| {
        sim.holds(table, index, *seq) && (*expire == 0 || *expire > now)
    });
    match (found, req.rpc == rpc::TTL) {
        (Some((_, v, _)), false) => reply(req, |o| idl::read_response(o, OK, v, g, &server)),
        (Some((_, _, 0)), true) => reply(req, |o| idl::ttl_response(o, OK, -1, g, &server)),
        (Some((_, _, expire)), true) => {
            reply(req, |o| idl::ttl_response(o, OK, expire - now, g, &server))
        }
        (None, false) => reply(req, |o| idl::read_response(o, NOT_FOUND, &[], g, &server)),
        (None, true) => reply(req, |o| idl::ttl_response(o, NOT_FOUND, 0, g, &server)),
    }
}
