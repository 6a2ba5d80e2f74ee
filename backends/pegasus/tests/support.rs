//! Scripted Pegasus servers for the backend's tests: one loopback port per server that
//! answers thrift RPCs and HTTP GETs, as a real server serves both on its RPC port, from a
//! state the test changes between calls (a restart, a leader change).
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rollout_core::{Change, NodeId};
use rollout_pegasus::frame::{self, Payload, Request};
use rollout_pegasus::messages::{
    AppInfo, BalancerRequest, ClusterInfoResponse, Command, ErrResponse, I32Response, ListResponse,
    Message, NodeInfo, PartitionConfiguration, QueryConfigResponse, rpc,
};
use rollout_pegasus::types::ErrorCode;
use rollout_pegasus::{PegasusCluster, PegasusError, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one scripted server is and says now.
#[derive(Clone, Debug, Default)]
pub struct Server {
    /// A meta (else a collector, which has no CLI handler).
    pub meta: bool,
    /// The process runs but has registered no RPC handler yet: every RPC gets the RPC
    /// layer's `ERR_HANDLER_NOT_FOUND`.
    pub starting: bool,
    /// Only the CLI handler is missing (the leader restarted between two calls).
    pub no_cli: bool,
    /// The HTTP server is off (`[http] enable_http_server = false`): every path 404.
    pub no_http: bool,
    /// A meta that leads; a standby forwards to `leader`.
    pub leads: bool,
    /// The leader a standby names.
    pub leader: Option<SocketAddr>,
    /// A standby that takes the leader lock once it has answered this many RPCs.
    pub leads_after: Option<usize>,
    /// A leader loading its state: it answers this many more RPCs with
    /// `ERR_SERVICE_NOT_ACTIVE` (`meta_service::check_leader_status` before `_started`,
    /// @v2.5.0), remote commands aside, which need no leadership.
    pub loading: usize,
    /// How many RPCs it answered.
    pub rpcs: usize,
    /// `/recentStartTime`.
    pub started: String,
    /// The `server-info` answer.
    pub server_info: String,
    /// The `meta.lb.*` knobs and their values.
    pub knobs: BTreeMap<String, String>,
    /// How many knob writes it took.
    pub knob_writes: usize,
    /// `list_nodes`.
    pub nodes: Vec<NodeInfo>,
    /// `list_apps` and each app's partitions.
    pub apps: Vec<(AppInfo, Vec<PartitionConfiguration>)>,
    /// The balancer proposals it took.
    pub proposals: Vec<BalancerRequest>,
}

/// A server's state, shared with the test.
pub type Shared = Arc<Mutex<Server>>;

/// A 2.5 meta that leads, with the three `meta.lb.*` knobs at their code defaults.
pub fn leader_meta() -> Server {
    Server {
        meta: true,
        leads: true,
        started: "2024-05-01 10:00:00".into(),
        server_info: "Pegasus Server 2.5.0 (0ca31b70) Release, Started at 2024-05-01 10:00:00"
            .into(),
        knobs: knob_defaults(),
        ..Server::default()
    }
}

/// The code defaults of the `meta.lb.*` knobs on 2.5.
pub fn knob_defaults() -> BTreeMap<String, String> {
    [
        ("meta.lb.assign_delay_ms", "300000"),
        ("meta.lb.add_secondary_enable_flow_control", "false"),
        ("meta.lb.add_secondary_max_count_for_one_node", "10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `server` as its process restarted at `at`: a new start time, and the knobs back at
/// their configured values.
pub fn restart(server: &Shared, at: &str) {
    let mut s = server.lock().unwrap();
    s.started = at.to_string();
    s.server_info = format!("Pegasus Server 2.5.0 (0ca31b70) Release, Started at {at}");
    s.knobs = knob_defaults();
    s.knob_writes = 0;
}

/// A collector started at `started`.
pub fn collector(started: &str) -> Server {
    Server {
        started: started.into(),
        ..Server::default()
    }
}

/// Starts serving `state` on a loopback port.
pub async fn serve(state: Server) -> (SocketAddr, Shared) {
    let shared = Arc::new(Mutex::new(state));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let s = shared.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            tokio::spawn(connection(stream, s.clone()));
        }
    });
    (addr, shared)
}

async fn connection(mut s: TcpStream, state: Shared) {
    let mut first = [0u8; 4];
    if s.peek(&mut first).await.is_ok_and(|n| n == 4) && &first == b"GET " {
        http(s, state).await;
        return;
    }
    loop {
        let mut head = [0u8; 48];
        if s.read_exact(&mut head).await.is_err() {
            return;
        }
        let Ok(n) = frame::v0_body_len(&head) else {
            return;
        };
        let mut body = vec![0u8; n];
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        let req = frame::read_request(&head, &body).unwrap();
        let answer = {
            let mut st = state.lock().unwrap();
            if st.leads_after.is_some_and(|n| st.rpcs >= n) {
                st.leads = true;
                st.leader = None;
            }
            st.rpcs += 1;
            let loading = st.leads && st.loading > 0 && req.rpc != rpc::CLI;
            if loading {
                st.loading -= 1;
            }
            answer(&st, &req, loading)
        };
        let answer = match answer {
            Some(a) => a,
            None => {
                let mut st = state.lock().unwrap();
                cli(&mut st, &req)
            }
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn reply<M: Message>(req: &Request, m: &M) -> Vec<u8> {
    frame::encode_response(
        &req.rpc,
        req.seqid,
        "ERR_OK",
        Payload::Struct(&|w| m.write(w)),
    )
}

fn rpc_error(req: &Request, e: &str) -> Vec<u8> {
    frame::encode_response(&req.rpc, req.seqid, e, Payload::None)
}

/// The answer to anything but the leader's CLI and proposals (`None` for those); a leader
/// still `loading` answers as a standby does, with `ERR_SERVICE_NOT_ACTIVE`.
fn answer(s: &Server, req: &Request, loading: bool) -> Option<Vec<u8>> {
    let ok = Some(ErrorCode::ok());
    let forward = Some(ErrorCode::new(if loading {
        "ERR_SERVICE_NOT_ACTIVE"
    } else {
        "ERR_FORWARD_TO_OTHERS"
    }));
    if s.starting || ((!s.meta || s.no_cli) && req.rpc == rpc::CLI) {
        return Some(rpc_error(req, "ERR_HANDLER_NOT_FOUND"));
    }
    if req.rpc == rpc::CLI {
        return None;
    }
    if !s.meta {
        return Some(rpc_error(req, "ERR_HANDLER_NOT_FOUND"));
    }
    if !s.leads || loading {
        return Some(match req.rpc.as_str() {
            rpc::QUERY_CONFIG => {
                let hint = PartitionConfiguration {
                    primary: rollout_pegasus::types::RpcAddress(s.leader.and_then(|a| match a {
                        SocketAddr::V4(a) => Some(a),
                        SocketAddr::V6(_) => None,
                    })),
                    ..PartitionConfiguration::default()
                };
                reply(
                    req,
                    &QueryConfigResponse {
                        err: forward,
                        partitions: vec![hint],
                        ..QueryConfigResponse::default()
                    },
                )
            }
            _ => reply(req, &ErrResponse { err: forward }),
        });
    }
    Some(match req.rpc.as_str() {
        rpc::PROPOSE_BALANCER => return None,
        rpc::CLUSTER_INFO => reply(
            req,
            &ClusterInfoResponse {
                err: ok,
                keys: vec!["cluster_name".into(), "meta_function_level".into()],
                values: vec!["scripted".into(), "steady".into()],
            },
        ),
        rpc::LIST_NODES => reply(
            req,
            &ListResponse {
                err: ok,
                infos: s.nodes.clone(),
            },
        ),
        rpc::LIST_APPS => reply(
            req,
            &ListResponse {
                err: ok,
                infos: s.apps.iter().map(|(a, _)| a.clone()).collect(),
            },
        ),
        rpc::QUERY_CONFIG => {
            let q = rollout_pegasus::messages::QueryConfigRequest::from_bytes(&req.body).unwrap();
            match s.apps.iter().find(|(a, _)| a.app_name == q.app_name) {
                Some((a, parts)) => reply(
                    req,
                    &QueryConfigResponse {
                        err: ok,
                        app_id: a.app_id,
                        partition_count: a.partition_count,
                        is_stateful: true,
                        partitions: parts.clone(),
                    },
                ),
                None => reply(
                    req,
                    &QueryConfigResponse {
                        err: Some(ErrorCode::new("ERR_OBJECT_NOT_FOUND")),
                        ..QueryConfigResponse::default()
                    },
                ),
            }
        }
        rpc::CONTROL_META => reply(
            req,
            &I32Response {
                err: ok,
                value: 400,
            },
        ),
        _ => rpc_error(req, "ERR_HANDLER_NOT_FOUND"),
    })
}

/// A remote command on a meta that has its CLI handler, or a proposal to the leader.
fn cli(s: &mut Server, req: &Request) -> Vec<u8> {
    if req.rpc == rpc::PROPOSE_BALANCER {
        s.proposals
            .push(BalancerRequest::from_bytes(&req.body).unwrap());
        return reply(
            req,
            &ErrResponse {
                err: Some(ErrorCode::ok()),
            },
        );
    }
    let c = Command::from_bytes(&req.body).unwrap();
    let text = match (c.cmd.as_str(), c.arguments.first()) {
        ("server-info", _) => s.server_info.clone(),
        ("meta.live_percentage", _) => "65".into(),
        (k, None) if s.leads && s.knobs.contains_key(k) => s.knobs[k].clone(),
        (k, Some(v)) if s.leads && s.knobs.contains_key(k) => {
            s.knobs.insert(k.to_string(), v.clone());
            s.knob_writes += 1;
            "OK".into()
        }
        (k, _) => format!("unknown command '{k}'"),
    };
    frame::encode_response(&req.rpc, req.seqid, "ERR_OK", Payload::String(&text))
}

async fn http(mut s: TcpStream, state: Shared) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (status, body) = {
            let st = state.lock().unwrap();
            match path.as_str() {
                "/recentStartTime" => {
                    (200, format!("{{\"RecentStartTime\":\"{}\"}}\n", st.started))
                }
                "/version" => (200, "{\"Version\":\"\",\"GitCommit\":\"\"}\n".to_string()),
                _ => (404, "service not found".to_string()),
            }
        };
        let answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// No process handle: these tests touch no process.
#[derive(Debug)]
pub enum NoNode {}

impl rollout_core::Node for NoNode {
    type Error = std::io::Error;
    fn id(&self) -> &NodeId {
        match *self {}
    }
    async fn stop(&self) -> Result<(), Self::Error> {
        match *self {}
    }
    async fn start(&self) -> Result<(), Self::Error> {
        match *self {}
    }
    async fn status(&self) -> Result<rollout_core::NodeStatus, Self::Error> {
        match *self {}
    }
    async fn apply(&self, _: &Change) -> Result<rollout_core::ApplyRecord, Self::Error> {
        match *self {}
    }
    async fn revert(&self, _: &rollout_core::ApplyRecord) -> Result<(), Self::Error> {
        match *self {}
    }
    async fn is_applied(&self, _: &Change) -> Result<bool, Self::Error> {
        match *self {}
    }
}

/// The factory of a cluster whose processes the tests never touch.
pub type Factory = fn(&NodeId) -> Option<NoNode>;

/// Connects to `metas` and `collectors` with short deadlines.
pub async fn connect(
    metas: &[SocketAddr],
    collectors: &[SocketAddr],
) -> Result<PegasusCluster<Factory>, PegasusError> {
    let none: Factory = |_| None;
    PegasusCluster::connect(metas, collectors, none, Timing::default().scaled(5)).await
}
