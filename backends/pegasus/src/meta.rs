//! The meta servers as one client: it finds the leader and keeps talking to it
//! (docs/pegasus-wire.md, "Finding the meta leader").
//!
//! A call goes to the remembered leader. A standby answers `ERR_FORWARD_TO_OTHERS`; a
//! leader still starting answers `ERR_SERVICE_NOT_ACTIVE`; a meta whose handlers are not
//! registered yet gets the RPC layer's `ERR_HANDLER_NOT_FOUND`: each is "ask another meta, or
//! later", never a failure of its own. The leader is found by asking
//! each meta for the partition configuration of any app: a standby names the leader in
//! `partitions[0].primary`, the leader answers anything else. The hint is followed first,
//! then every other meta; a transport error forgets the leader.

use std::net::SocketAddr;

use futures_util::future::join_all;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use crate::messages::{Message, QueryConfigRequest, QueryConfigResponse, rpc};
use crate::transport::{CallError, Connection};
use crate::types::ErrorCode;

/// What went wrong with the meta servers as a whole.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// One server's failure.
    #[error(transparent)]
    Call(#[from] CallError),
    /// No meta answered as the leader, and one answered as a standby or as a leader still
    /// loading its state: an election may be under way. (Before `Unreachable` existed this
    /// also stood for metas none of which answered; match both for "no leader now".)
    #[error("no meta server answers as the leader ({tried}); {last}")]
    NoLeader {
        /// The metas asked.
        tried: String,
        /// The last answer or failure.
        last: String,
    },
    /// No meta answered as a meta: each refused the connection, failed it, was silent past
    /// the deadline, or has no meta handlers (a meta starting, or not a meta at all). A
    /// wrong address, or every meta down.
    #[error("no meta server answers as the leader ({tried}): none answered as a meta; {last}")]
    Unreachable {
        /// The metas asked.
        tried: String,
        /// The last failure.
        last: String,
    },
    /// The leader answered with an application error.
    #[error("{server}: {rpc}: {err}")]
    App {
        /// The meta.
        server: SocketAddr,
        /// The RPC.
        rpc: &'static str,
        /// The rDSN error code.
        err: ErrorCode,
    },
}

/// Application errors that mean "ask another meta" or "not yet".
fn not_leader(err: &ErrorCode) -> bool {
    matches!(
        err.as_str(),
        "ERR_FORWARD_TO_OTHERS" | "ERR_SERVICE_NOT_ACTIVE" | "ERR_UNDER_RECOVERY"
    )
}

/// Whether the RPC layer answered `ERR_HANDLER_NOT_FOUND`: a meta that is starting. Its
/// process serves before `meta_service::start` has reached ZooKeeper and registered its
/// handlers (`service_node::start` calls `start_serving` before the app's `start`,
/// `runtime/service_engine.cpp` @v2.5.0; `meta_service::start` @v2.4.0, @v2.5.0), and until
/// then `rpc_engine::on_recv_request` finds no handler for any meta RPC, the CLI included.
/// It means "not yet", like a standby's forward: ask the next meta.
pub(crate) fn starting(e: &CallError) -> bool {
    matches!(e, CallError::Rpc { error, .. } if error == "ERR_HANDLER_NOT_FOUND")
}

/// A response with an application error code in field 1.
pub trait HasErr {
    /// The error, if the server sent one.
    fn err(&self) -> Option<&ErrorCode>;
}

macro_rules! has_err {
    ($($t:ty),*) => {$(
        impl HasErr for $t {
            fn err(&self) -> Option<&ErrorCode> {
                self.err.as_ref()
            }
        }
    )*};
}

has_err!(
    QueryConfigResponse,
    crate::messages::ClusterInfoResponse,
    crate::messages::I32Response,
    crate::messages::ErrResponse
);

impl<T> HasErr for crate::messages::ListResponse<T> {
    fn err(&self) -> Option<&ErrorCode> {
        self.err.as_ref()
    }
}

/// Which meta leads, as this client last found it, and whether it has seen leadership move.
#[derive(Debug, Default)]
struct Leadership {
    /// The meta believed to lead now.
    now: Option<usize>,
    /// The last meta that answered as the leader, kept while none is known.
    last: Option<usize>,
    /// The leader was lost (a standby's forward, a transport error) since it last answered.
    lost: bool,
    /// When this client found the current leader after seeing another one lead, or the same
    /// one lost and found again: an election it saw happen. `None` for the leader found first.
    since: Option<Instant>,
}

/// The meta servers of one cluster.
#[derive(Debug)]
pub struct MetaClient {
    metas: Vec<Connection>,
    leader: Mutex<Leadership>,
    timeout: Duration,
}

impl MetaClient {
    /// A client for `metas`, each call bounded by `timeout`.
    ///
    /// # Panics
    /// Never; an empty list makes every call fail with [`MetaError::Unreachable`].
    pub fn new(metas: &[SocketAddr], timeout: Duration) -> Self {
        Self {
            metas: metas.iter().map(|&a| Connection::new(a)).collect(),
            leader: Mutex::new(Leadership::default()),
            timeout,
        }
    }

    /// The meta addresses, as given.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.metas.iter().map(Connection::server).collect()
    }

    /// The meta believed to lead now, if one was found.
    pub fn leader(&self) -> Option<SocketAddr> {
        self.leader_index().map(|i| self.metas[i].server())
    }

    /// The meta leading now and when this client saw it take over, if it saw leadership move
    /// (from another meta, or from the same one after losing it) since it first found a
    /// leader; `None` while no leader is known or the first one found still leads.
    ///
    /// A new leader holds every replica server of its partition configurations ALIVE until
    /// `fd_grace_seconds` after its election (`meta_service::start_service`,
    /// `failure_detector::register_worker` @v2.4.0, @v2.5.0, master), so its node list proves
    /// no beacon before then; the election moment itself is not exposed, and this instant is
    /// no earlier than it.
    pub fn leader_since(&self) -> Option<(SocketAddr, Instant)> {
        let l = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        Some((self.metas[l.now?].server(), l.since?))
    }

    /// Records that the current leader was elected again though it answered all along: the
    /// same address with another process start time, seen by the caller (a single meta that
    /// restarted and took the lock back before this client found it lost).
    pub fn note_election(&self) {
        let mut l = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if l.now.is_some() {
            l.since = Some(Instant::now());
        }
    }

    fn leader_index(&self) -> Option<usize> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner()).now
    }

    fn set_leader(&self, i: Option<usize>) {
        let mut l = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        match i {
            None => {
                l.lost |= l.now.is_some();
                l.now = None;
            }
            Some(i) if l.now == Some(i) => {}
            Some(i) => {
                if l.last.is_some_and(|last| last != i || l.lost) {
                    l.since = Some(Instant::now());
                }
                l.now = Some(i);
                l.last = Some(i);
                l.lost = false;
            }
        }
    }

    /// Calls `rpc` on the leader, finding it first if needed.
    ///
    /// # Errors
    /// [`MetaError::NoLeader`] when no meta answers as the leader but one answers,
    /// [`MetaError::Unreachable`] when none answers at all, [`MetaError::App`] for an
    /// application error other than "not the leader", [`MetaError::Call`] for a malformed
    /// answer.
    pub async fn call<Req: Message, Resp: Message + HasErr>(
        &self,
        rpc: &'static str,
        req: &Req,
    ) -> Result<Resp, MetaError> {
        let mut last = String::from("no meta server given");
        // Whether a meta answered as a standby or a leader still loading (a forward,
        // `ERR_SERVICE_NOT_ACTIVE`, `ERR_UNDER_RECOVERY`): then no leader is an election.
        // Not a meta without handlers yet: a replica server or a collector given as a meta
        // answers so too (`rpc_engine::on_recv_request` @v2.5.0), and waiting would not mend
        // that. A standby answers before it acts (`meta_service::check_leader_status`).
        let mut heard = false;
        // The remembered leader, then every meta in order (a fresh discovery each round).
        for _round in 0..2 {
            let order: Vec<usize> = match self.leader_index() {
                Some(l) => std::iter::once(l)
                    .chain((0..self.metas.len()).filter(|&i| i != l))
                    .collect(),
                None => {
                    let (order, standby) = self.discover().await;
                    heard |= standby;
                    order
                }
            };
            for i in order {
                let conn = &self.metas[i];
                match conn.call::<Req, Resp>(rpc, req, self.timeout).await {
                    Ok(resp) => match resp.err() {
                        Some(e) if not_leader(e) => {
                            heard = true;
                            last = format!("{}: {e}", conn.server());
                            if self.leader_index() == Some(i) {
                                self.set_leader(None);
                            }
                        }
                        // Not taken as a sign of leadership: on 2.5 and master a standby
                        // answers a proposal with an application error of its own
                        // (`ERR_INVALID_PARAMETERS`, `ERR_APP_NOT_EXIST`), since it looks
                        // the app up before checking that it leads.
                        Some(e) if !e.is_ok() => {
                            return Err(MetaError::App {
                                server: conn.server(),
                                rpc,
                                err: e.clone(),
                            });
                        }
                        _ => {
                            self.set_leader(Some(i));
                            return Ok(resp);
                        }
                    },
                    Err(e) if e.is_transient() || starting(&e) => {
                        last = e.to_string();
                        if self.leader_index() == Some(i) {
                            self.set_leader(None);
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let tried = self
            .addresses()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Err(if heard {
            MetaError::NoLeader { tried, last }
        } else {
            MetaError::Unreachable { tried, last }
        })
    }

    /// Finds the leader: asks each meta for a configuration; a standby's hint is followed.
    /// Returns the metas to try, the likeliest leader first, and whether one answered as a
    /// standby or a leader still loading.
    async fn discover(&self) -> (Vec<usize>, bool) {
        let probe = QueryConfigRequest {
            app_name: "__rollout_leader_probe".into(),
            partition_indices: Vec::new(),
        };
        // Every meta at once, as the Go client fans out: a dead one costs one timeout, not
        // one each.
        let answers = join_all(self.metas.iter().map(|conn| {
            conn.call::<_, QueryConfigResponse>(rpc::QUERY_CONFIG, &probe, self.timeout)
        }))
        .await;
        let mut hinted = Vec::new();
        let mut standby = false;
        for (i, resp) in answers.into_iter().enumerate() {
            let Ok(resp) = resp else {
                continue;
            };
            match resp.err.as_ref() {
                Some(e) if e.as_str() == "ERR_FORWARD_TO_OTHERS" => {
                    standby = true;
                    let hint = resp.partitions.first().and_then(|p| p.primary.0);
                    if let Some(h) = hint
                        && let Some(j) = self
                            .metas
                            .iter()
                            .position(|c| c.server() == SocketAddr::V4(h))
                        && !hinted.contains(&j)
                    {
                        hinted.push(j);
                    }
                }
                Some(e) if not_leader(e) => standby = true,
                _ => {
                    self.set_leader(Some(i));
                    return (vec![i], standby);
                }
            }
        }
        let rest: Vec<usize> = (0..self.metas.len())
            .filter(|i| !hinted.contains(i))
            .collect();
        hinted.extend(rest);
        (hinted, standby)
    }

    /// Sends a remote command to one server (any meta or replica server), returning its
    /// text answer.
    ///
    /// # Errors
    /// [`CallError`] naming the server.
    pub async fn command(
        &self,
        server: SocketAddr,
        cmd: &str,
        args: &[&str],
    ) -> Result<String, CallError> {
        let req = crate::messages::Command {
            cmd: cmd.to_string(),
            arguments: args.iter().map(ToString::to_string).collect(),
        };
        match self.metas.iter().find(|c| c.server() == server) {
            Some(c) => c.call_string(rpc::CLI, &req, self.timeout).await,
            None => {
                Connection::new(server)
                    .call_string(rpc::CLI, &req, self.timeout)
                    .await
            }
        }
    }
}
