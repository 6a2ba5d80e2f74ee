//! What one server says of itself: its version, the freeze thresholds a meta holds, the
//! replicas a replica server has open, and when it started.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use futures_util::future::join_all;
use rollout_core::NodeId;

use crate::answers::{
    REPLICA_COUNTERS, flag_value, ini_value, open_replicas_in, replica_counters_in, reply,
};
use crate::cluster::{NodeFactory, PegasusCluster, addr};
use crate::error::PegasusError;
use crate::messages::{I32Request, ListResponse, NodeInfo as WireNode, node_status, rpc};
use crate::types::{Gpid, RpcAddress, v4};
use crate::version::ServerVersion;

/// How many replicas a replica server reports open, opening or closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenReplicas {
    /// This many.
    Count(u64),
    /// The server has no perf-counter snapshot yet (2.4/2.5 take the first one up to 10 s
    /// after the start).
    NotYet,
}

impl<F: NodeFactory> PegasusCluster<F> {
    /// The version each meta and each ALIVE replica server reports in `server-info`.
    ///
    /// # Errors
    /// A server that answers with no version, or with one this backend does not speak
    /// ([`PegasusError::Unsupported`]).
    pub(crate) async fn read_versions(
        &self,
    ) -> Result<BTreeMap<SocketAddr, ServerVersion>, PegasusError> {
        let nodes: ListResponse<WireNode> = self
            .meta
            .call(rpc::LIST_NODES, &I32Request(node_status::ALIVE))
            .await?;
        let mut servers: Vec<SocketAddr> = self.meta.addresses();
        servers.extend(
            nodes
                .infos
                .iter()
                .filter_map(|n| n.node.0.map(SocketAddr::V4)),
        );
        let answers = join_all(
            servers
                .iter()
                .map(|&s| async move { (s, self.meta.command(s, "server-info", &[]).await) }),
        )
        .await;
        let mut out = BTreeMap::new();
        for (server, answer) in answers {
            // A meta that does not answer (down, being restarted) is not asked again here:
            // the metas that answer decide.
            let Ok(answer) = answer else {
                continue;
            };
            let version = ServerVersion::from_server_info(&answer).ok_or_else(|| {
                PegasusError::Unsupported {
                    server,
                    why: format!("server-info names no Pegasus version: {answer:?}"),
                }
            })?;
            version
                .line()
                .map_err(|why| PegasusError::Unsupported { server, why })?;
            out.insert(server, version);
        }
        Ok(out)
    }

    /// A numeric flag of `server` from `/config?name=` (served on the RPC port; 2.4 has
    /// fewer flags), or `None` when it does not show one.
    async fn flag(&self, server: SocketAddr, name: &str) -> Option<u32> {
        let body = self
            .http
            .get(format!("http://{server}/config?name={name}"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        flag_value(&body)
    }

    /// [`crate::Timing::election_grace`] from the leader: `fd_grace_seconds` plus
    /// `fd_check_interval_seconds`, from `/config` where they are flags (2.5, master:
    /// `common/replication_common.cpp`), else from the remote command `config-dump`, which
    /// prints every configuration key the process read with its value, defaults included
    /// (`configuration::dump`, registered by `dsn_run` in `runtime/service_api_c.cpp`
    /// @v2.4.0; 2.4 reads both into `replication_options`). Divided by the timing's scale,
    /// with where it came from.
    ///
    /// # Errors
    /// What the leader did not show (one value, neither, or a call that failed), in words.
    pub(crate) async fn read_election_grace(
        &self,
        leader: SocketAddr,
    ) -> Result<(std::time::Duration, String), String> {
        let (mut grace, mut check) = (
            self.flag(leader, "fd_grace_seconds").await,
            self.flag(leader, "fd_check_interval_seconds").await,
        );
        let mut how = "/config";
        let mut failed = None;
        if grace.is_none() || check.is_none() {
            match self.meta.command(leader, "config-dump", &[]).await {
                Ok(dump) => {
                    let from_dump = |key| ini_value(&dump, "replication", key);
                    how = if grace.is_none() && check.is_none() {
                        "config-dump"
                    } else {
                        "/config and config-dump"
                    };
                    grace = grace.or_else(|| from_dump("fd_grace_seconds"));
                    check = check.or_else(|| from_dump("fd_check_interval_seconds"));
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        match (grace, check) {
            (Some(g), Some(c)) => Ok((
                std::time::Duration::from_secs(u64::from(g) + u64::from(c))
                    / self.timing.scale.max(1),
                format!(
                    "fd_grace_seconds {g} plus fd_check_interval_seconds {c}, read from the leader {leader} ({how})"
                ),
            )),
            _ => {
                let shown = match (grace, check) {
                    (Some(_), None) => "only fd_grace_seconds",
                    (None, Some(_)) => "only fd_check_interval_seconds",
                    _ => "neither fd_grace_seconds nor fd_check_interval_seconds",
                };
                Err(match failed {
                    Some(e) => {
                        format!("{leader} shows {shown} in /config, and config-dump failed: {e}")
                    }
                    None => format!("{leader} shows {shown}"),
                })
            }
        }
    }

    /// The meta's freeze thresholds, with where they came from: the minimum live count from
    /// the leader's `/config?name=min_live_node_count_for_unfreeze` (a flag on every version,
    /// served on the RPC port), and the live percentage from the remote command
    /// `meta.live_percentage`, the value `check_freeze` compares with on every version
    /// (docs/upstream/pegasus.md §7; 2.4 has no such flag, and `/config` would not show a
    /// change made at run time). A value that cannot be read takes the code default (3,
    /// 65) and the source says so, so that the plan's limit names an assumption as one.
    pub(crate) async fn freeze_thresholds(&self, leader: SocketAddr) -> (usize, u32, String) {
        let min_live = self.flag(leader, "min_live_node_count_for_unfreeze").await;
        let pct = match self.meta.command(leader, "meta.live_percentage", &[]).await {
            Ok(a) => reply("meta.live_percentage", &a)
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok()),
            Err(_) => None,
        };
        let source = match (min_live, pct) {
            (Some(_), Some(_)) => format!("read from the leader {leader}"),
            _ => format!(
                "{leader} did not answer every threshold: the code defaults are assumed where \
                 it did not"
            ),
        };
        (min_live.unwrap_or(3) as usize, pct.unwrap_or(65), source)
    }

    /// The replicas `node` knows (`RPC_QUERY_REPLICA_INFO`, closed ones included) with their
    /// `partition_status`. The request carries the address only: 2.4 and 2.5 have no field
    /// 2, and the handler ignores the request anyway (`replica_stub::on_query_replica_info`).
    pub(crate) async fn replicas_of(
        &self,
        node: &NodeId,
    ) -> Result<Vec<(Gpid, i32)>, PegasusError> {
        let a = addr(node)?;
        let conn = crate::transport::Connection::new(a);
        let req = crate::messages::QueryReplicaInfoRequest {
            node1: v4(a).map(RpcAddress::new).unwrap_or_default(),
        };
        let resp: crate::messages::QueryReplicaInfoResponse = conn
            .call(rpc::QUERY_REPLICA_INFO, &req, self.timing.rpc)
            .await?;
        Ok(resp.replicas)
    }

    async fn get(&self, a: SocketAddr, path: &str) -> Result<(u16, String), String> {
        let r = self
            .http
            .get(format!("http://{a}{path}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(|e| e.to_string())?))
    }

    /// How many replicas `node` has open, opening or closing: the seed's "no replica open"
    /// signal, read the way the server's version offers it (docs/upstream/pegasus.md §4.6,
    /// §5.1):
    /// - master's `/metrics` gauges `total_replicas`, `opening_replicas`, `closing_replicas`;
    /// - else 2.4/2.5's live `/perfCounter?name=` of the three replica counters
    ///   (`perf_counter_http_service.cpp`);
    /// - else the remote command `perf-counters '.*replica(Count)'` the upstream script uses,
    ///   from the server's last snapshot.
    ///
    /// # Errors
    /// A server that answers none of them, naming what each answered.
    pub(crate) async fn open_replicas(&self, node: &NodeId) -> Result<OpenReplicas, PegasusError> {
        let a = addr(node)?;
        let metrics = self
            .get(
                a,
                "/metrics?types=server&metrics=total_replicas,opening_replicas,closing_replicas",
            )
            .await;
        if let Ok((200, body)) = &metrics
            && let Some(n) = open_replicas_in(body)
        {
            return Ok(OpenReplicas::Count(n));
        }
        let mut live = Some(0u64);
        for name in REPLICA_COUNTERS {
            let value = match self.get(a, &format!("/perfCounter?name={name}")).await {
                Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["value"].as_str().and_then(|s| s.parse::<f64>().ok())),
                _ => None,
            };
            live = live.zip(value).map(|(sum, v)| sum + v.max(0.0) as u64);
        }
        if let Some(n) = live {
            return Ok(OpenReplicas::Count(n));
        }
        let answer = self
            .meta
            .command(a, "perf-counters", &[".*replica(Count)"])
            .await?;
        match replica_counters_in(&answer) {
            Ok(Some(n)) => Ok(OpenReplicas::Count(n)),
            Ok(None) => Ok(OpenReplicas::NotYet),
            Err(why) => Err(PegasusError::Command {
                server: a,
                cmd: "open replica count (/metrics, /perfCounter, perf-counters)".into(),
                answer: format!(
                    "/metrics: {}; perf-counters: {why}",
                    match metrics {
                        Ok((s, b)) => format!("{s} {}", b.chars().take(120).collect::<String>()),
                        Err(e) => e,
                    }
                ),
            }),
        }
    }

    /// The server's `/recentStartTime` (`{"RecentStartTime": "YYYY-MM-DD hh:mm:ss"}`,
    /// `builtin_http_calls.cpp` on every version); `None` when it does not answer one.
    pub(crate) async fn start_time(&self, node: &NodeId) -> Option<String> {
        self.start_time_at(addr(node).ok()?).await
    }

    /// `/recentStartTime` of the server at `a`.
    pub(crate) async fn start_time_at(&self, a: SocketAddr) -> Option<String> {
        let (_, body) = self.get(a, "/recentStartTime").await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["RecentStartTime"].as_str().map(str::to_owned)
    }

    /// When the meta or replica server at `a` started: its `/recentStartTime`, else the start
    /// time in its `server-info` (2.4/2.5 text, master JSON; the same
    /// `%Y-%m-%d %H:%M:%S` format, docs/upstream/pegasus.md §1.1); `None` when it says
    /// neither.
    pub(crate) async fn process_start(&self, a: SocketAddr) -> Option<String> {
        if let Some(t) = self.start_time_at(a).await {
            return Some(t);
        }
        let answer = self.meta.command(a, "server-info", &[]).await.ok()?;
        crate::answers::started_in_server_info(&answer)
    }

    /// Whether `a`'s HTTP server answers `/version` (`get_version_handler`,
    /// `builtin_http_calls.cpp` @v2.5.0; a collector's values are empty, so only the answer
    /// counts).
    pub(crate) async fn http_version(&self, a: SocketAddr) -> Result<(), String> {
        match self.get(a, "/version").await? {
            (200, _) => Ok(()),
            (status, body) => Err(format!(
                "status {status}: {}",
                body.chars().take(120).collect::<String>()
            )),
        }
    }

    /// Remembers `node`'s start time before its stop, where it reports one.
    pub(crate) async fn note_start_time(&self, node: &NodeId) {
        if let Some(t) = self.start_time(node).await {
            self.started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node.clone(), t);
        }
    }

    /// `Some(before)` while `node` still reports the start time noted before its stop (or
    /// none at all); `None` once it moved, or when none was noted (a resumed rollout).
    pub(crate) async fn same_start_time(&self, node: &NodeId) -> Option<String> {
        let before = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()?;
        let now = self.start_time(node).await;
        if now.is_none() || now.as_ref() == Some(&before) {
            return Some(before);
        }
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        None
    }
}
