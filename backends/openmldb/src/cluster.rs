//! [`OpenMldbCluster`]: the core's control plane over a real OpenMLDB cluster, found through
//! its ZooKeeper and driven through the nameserver's and tablets' HTTP/JSON RPCs; processes
//! are reached through a [`NodeFactory`] (the emulator's now, hosts' later). The steps are in
//! the `steps` module; the zero-loss leader move in `fence`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rollout_core::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    ConfGetResponse, Endpoint, HasStatus, OpStatus, ShowOpStatusRequest, ShowOpStatusResponse,
    ShowTableRequest, ShowTableResponse, ShowTabletResponse, TableInfo, code,
};
use crate::error::OpenMldbError;
use crate::version::{Reported, ServerVersion};
use crate::zk::Zk;

/// One partition to move: (db, table, tid, pid).
pub(crate) type Part = (String, String, u32, u32);

/// A snapshot asked of a tablet: the offset it must reach, and whether the tablet refused
/// the request (105) so that it is asked again.
type Asked = (u64, bool);

/// The snapshots asked of one tablet, by (tid, pid).
pub(crate) type AskedOf = BTreeMap<(u32, u32), Asked>;

/// The backend's waits and deadlines, in the cluster's own seconds; [`Timing::scaled`] divides
/// them for an emulator that runs faster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// Each RPC's deadline. Default 10 s.
    pub rpc: Duration,
    /// Between two polls of an op, an offset, a tablet. Default 200 ms.
    pub poll: Duration,
    /// How long one op may take before the step fails naming it. Default 600 s.
    pub op: Duration,
    /// How long a leader move waits for a follower at the leader's offset. Default 30 s.
    pub catch_up: Duration,
    /// The ZooKeeper session. Default 10 s.
    pub session: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            rpc: Duration::from_secs(10),
            poll: Duration::from_millis(200),
            op: Duration::from_secs(600),
            catch_up: Duration::from_secs(30),
            session: Duration::from_secs(10),
        }
    }
}

impl Timing {
    /// Every wait divided by `scale` (an emulator running `scale` times faster); RPC and
    /// session deadlines keep a floor that real sockets need.
    pub fn scaled(self, scale: u32) -> Self {
        let s = scale.max(1);
        Self {
            rpc: (self.rpc / s).max(Duration::from_millis(500)),
            poll: (self.poll / s).max(Duration::from_millis(5)),
            op: self.op / s,
            catch_up: self.catch_up / s,
            session: self.session.max(Duration::from_secs(4)),
        }
    }
}

pub use rollout_core::NodeFactory;

/// Servers ZooKeeper does not list: the apiservers, and the taskmanagers (ZooKeeper names only
/// their leader).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Others {
    /// The apiservers, `host:port`.
    pub apiservers: Vec<String>,
    /// The taskmanagers, `host:port`.
    pub taskmanagers: Vec<String>,
}

/// Where an OpenMLDB cluster is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    ensemble: String,
    root: String,
    others: Others,
    timing: Timing,
    zk_digest: Option<String>,
}

impl Config {
    /// The cluster in ZooKeeper `ensemble` (`host:port[,host:port...]`) under `root`
    /// (`--zk_root_path`), with the default [`Timing`], no apiserver or taskmanager, and an
    /// anonymous ZooKeeper session.
    pub fn new(ensemble: &str, root: &str) -> Self {
        Self {
            ensemble: ensemble.to_string(),
            root: root.to_string(),
            others: Others::default(),
            timing: Timing::default(),
            zk_digest: None,
        }
    }

    /// The apiservers and taskmanagers, which ZooKeeper does not list.
    #[must_use]
    pub fn others(mut self, others: Others) -> Self {
        self.others = others;
        self
    }

    /// The waits and deadlines.
    #[must_use]
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The digest identity (`user:password`) of a cluster that locks its ZooKeeper nodes
    /// (`--zk_cert`).
    #[must_use]
    pub fn zk_digest(mut self, digest: &str) -> Self {
        self.zk_digest = Some(digest.to_string());
        self
    }
}

/// An OpenMLDB cluster reached through its ZooKeeper; `F` makes the process handles.
pub struct OpenMldbCluster<F> {
    pub(crate) zk: Zk,
    name: String,
    pub(crate) others: Others,
    factory: F,
    pub(crate) timing: Timing,
    leader: Mutex<Option<Endpoint>>,
    /// The version each nameserver and tablet reported when connecting, by endpoint.
    pub(crate) versions: BTreeMap<String, ServerVersion>,
    /// Each tablet's address under `--use_name` (ShowTablet's `real_endpoint`), by name.
    real: Mutex<BTreeMap<String, String>>,
    /// How many moves hold each tablet in follower mode (`SetMode`): the hold is released
    /// when the last one ends.
    pub(crate) holds: Mutex<BTreeMap<String, usize>>,
    /// The snapshots each tablet was asked for: (tid, pid) → the offset, and whether the
    /// tablet refused the request for now (105).
    pub(crate) snapshots: Mutex<BTreeMap<NodeId, AskedOf>>,
    /// The highest op id when the cluster was connected: an op after it that failed is the
    /// rollout's concern.
    pub(crate) mark: u64,
    /// Partitions each tablet led when drained, to hand back on rejoin: (db, table, tid, pid).
    pub(crate) led: Mutex<BTreeMap<NodeId, Vec<Part>>>,
    /// Every nameserver seen registered, so that one restarting is still known as one.
    pub(crate) nameservers: Mutex<std::collections::BTreeSet<String>>,
}

impl<F> std::fmt::Debug for OpenMldbCluster<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenMldbCluster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F: NodeFactory> OpenMldbCluster<F> {
    /// Connects through ZooKeeper as `config` says, confirms a nameserver leader, reads the
    /// version of every nameserver and healthy tablet (refusing one this backend does not
    /// speak), and notes the highest op id.
    ///
    /// A moment without a nameserver leader is waited out by each of its reads, for up to
    /// three of the backend's ZooKeeper sessions each.
    ///
    /// # Errors
    /// ZooKeeper unreachable or locked to another identity, no OpenMLDB under the root, no
    /// nameserver that answers as leader in that time, a server of a version other than
    /// 0.8.5+ or 0.9 ([`OpenMldbError::Unsupported`], naming it).
    pub async fn connect(config: &Config, factory: F) -> Result<Self, OpenMldbError> {
        let timing = config.timing;
        let zk = Zk::connect(
            &config.ensemble,
            &config.root,
            timing.session,
            config.zk_digest.as_deref(),
        )
        .await?;
        let mut me = Self {
            name: format!("openmldb:{}{}", config.ensemble, config.root),
            zk,
            others: config.others.clone(),
            factory,
            timing,
            leader: Mutex::new(None),
            versions: BTreeMap::new(),
            real: Mutex::new(BTreeMap::new()),
            holds: Mutex::new(BTreeMap::new()),
            snapshots: Mutex::new(BTreeMap::new()),
            mark: 0,
            led: Mutex::new(BTreeMap::new()),
            nameservers: Mutex::new(std::collections::BTreeSet::new()),
        };
        // A moment without a nameserver leader (the leader was just stopped and a standby
        // is not elected yet, as when a rollout is resumed while it restarts a nameserver)
        // is waited out by each call. A leader that stops answering in the middle of a call
        // (which `ns` does not send again) makes these reads start again, as long as
        // [`Self::election`] has not passed since the first; each read's own wait comes on
        // top, so the whole is bounded by a few elections, not by one.
        let t0 = tokio::time::Instant::now();
        let (ops, versions) = loop {
            let read =
                async { Ok::<_, OpenMldbError>((me.ops(None).await?, me.read_versions().await?)) };
            match read.await {
                Err(e) if e.rediscover() && !e.not_taken() && t0.elapsed() < me.election() => {
                    tokio::time::sleep(me.timing.poll).await;
                }
                r => break r?,
            }
        };
        me.mark = ops.iter().map(|o| o.op_id).max().unwrap_or(0);
        me.versions = versions;
        Ok(me)
    }

    /// The version each nameserver and each healthy tablet reports on its `/version` page;
    /// one still starting is asked again for up to a ZooKeeper session.
    async fn read_versions(&self) -> Result<BTreeMap<String, ServerVersion>, OpenMldbError> {
        let mut servers = self.zk.nameservers().await?;
        servers.extend(
            self.tablets()
                .await?
                .tablets
                .into_iter()
                .filter(|t| t.state == "kHealthy")
                .map(|t| t.endpoint),
        );
        let mut out = BTreeMap::new();
        for server in servers {
            let e = self.endpoint(&server);
            let t0 = tokio::time::Instant::now();
            let version = loop {
                let page = match e.version().await {
                    Ok(p) => p,
                    // Gone between the listing and the call: the ones that answer decide.
                    Err(err) if err.class() == rollout_core::ErrorClass::Transient => break None,
                    Err(err) => return Err(err),
                };
                match ServerVersion::from_page(&page) {
                    Some(Reported::Version(v)) => break Some(v),
                    Some(Reported::Starting) if t0.elapsed() < self.timing.session => {
                        tokio::time::sleep(self.timing.poll).await;
                    }
                    _ => {
                        return Err(OpenMldbError::Unsupported {
                            server: e.addr.clone(),
                            why: format!("/version names no OpenMLDB version: {page:?}"),
                        });
                    }
                }
            };
            if let Some(v) = version {
                v.check().map_err(|why| OpenMldbError::Unsupported {
                    server: e.addr.clone(),
                    why,
                })?;
                out.insert(server, v);
            }
        }
        Ok(out)
    }

    /// The version the nameserver leader reported when connecting (each server's is read;
    /// during an upgrade they differ).
    pub fn server_version(&self) -> Option<&ServerVersion> {
        self.leader_addr()
            .and_then(|l| self.versions.get(&l))
            .or_else(|| self.versions.values().next())
    }

    /// The oldest version any server reported when connecting.
    pub fn oldest_version(&self) -> Option<&ServerVersion> {
        self.versions.values().min()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn factory(&self) -> &F {
        &self.factory
    }

    /// The server `endpoint` names, reached at its address: under `--use_name` a tablet's
    /// name maps to ShowTablet's `real_endpoint`.
    pub(crate) fn endpoint(&self, endpoint: &str) -> Endpoint {
        let real = self
            .real
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(endpoint)
            .cloned();
        Endpoint::new(real.as_deref().unwrap_or(endpoint), self.timing.rpc)
    }

    /// Calls the nameserver leader: the remembered one, else each registered nameserver in
    /// election order until one answers as leader (code 0). A standby (code 300), one
    /// stopping (HTTP 503) or one not reached makes it ask the next; one that may have
    /// acted (no answer in time, the connection lost mid-call) ends the try, so that a call
    /// is never sent twice here. While no registered nameserver took the call (the leader
    /// was just stopped and a standby is not elected yet, or the only nameserver restarts)
    /// it asks again, for up to [`Self::election`].
    ///
    /// # Errors
    /// The server's error; when none answered as leader, a standby's answer if one gave
    /// one, else the last failure; [`OpenMldbError::NotFound`] when no nameserver is
    /// registered (a nameserver's registration is its ZooKeeper session's: the list names
    /// only processes that ran within a session).
    pub(crate) async fn ns<Q: Serialize + ?Sized, R: DeserializeOwned + HasStatus>(
        &self,
        method: &'static str,
        request: &Q,
    ) -> Result<R, OpenMldbError> {
        let t0 = tokio::time::Instant::now();
        loop {
            match self.ns_round(method, request).await {
                Round::Answered(r) => return r,
                Round::NoLeader(e) if t0.elapsed() < self.election() => {
                    tracing::debug!(method, error = %e, "no nameserver leader yet; asking again");
                    tokio::time::sleep(self.timing.poll).await;
                }
                Round::NoLeader(e) => return Err(e),
            }
        }
    }

    /// How long a cluster may be without a nameserver leader: the dead leader's
    /// `lock_request` node lives until its ZooKeeper session ends (`--zk_session_timeout`,
    /// 10 s in the shipped `nameserver.flags`; `src/zk/dist_lock.cc` @v0.9.2), then a standby
    /// takes the lock and recovers its state before it answers. Three of this backend's
    /// sessions ([`Timing::session`], 10 s by default), which stand for the cluster's.
    pub(crate) fn election(&self) -> Duration {
        3 * self.timing.session
    }

    /// One try of [`Self::ns`]: the remembered leader, then each registered nameserver.
    async fn ns_round<Q: Serialize + ?Sized, R: DeserializeOwned + HasStatus>(
        &self,
        method: &'static str,
        request: &Q,
    ) -> Round<R> {
        let forget = || *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // A standby's (or a stopping server's) answer, else the last failure.
        let (mut answer, mut failure) = (None, None);
        let mut note = |err: OpenMldbError| {
            if err.answered() {
                answer = Some(err);
            } else {
                failure = Some(err);
            }
        };
        let cached = self
            .leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(e) = cached {
            match e.call("NameServer", method, request).await {
                Err(err) if err.not_taken() => note(err),
                Err(err) if err.rediscover() => {
                    forget();
                    return Round::Answered(Err(err));
                }
                other => return Round::Answered(other),
            }
        }
        let servers = match self.zk.nameservers().await {
            Ok(s) => s,
            Err(e) => return Round::Answered(Err(e)),
        };
        for addr in servers {
            let e = self.endpoint(&addr);
            match e.call("NameServer", method, request).await {
                Err(err) if err.not_taken() => note(err),
                Err(err) if err.rediscover() => {
                    forget();
                    return Round::Answered(Err(err));
                }
                other => {
                    if other.is_ok() {
                        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    }
                    return Round::Answered(other);
                }
            }
        }
        forget();
        match answer.or(failure) {
            Some(e) => Round::NoLeader(e),
            None => Round::Answered(Err(OpenMldbError::NotFound {
                zk: self.zk.name().to_string(),
                reason: "no nameserver is registered".into(),
            })),
        }
    }

    /// The confirmed leader's address, if one answered last.
    pub(crate) fn leader_addr(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|e| e.addr.clone())
    }

    pub(crate) async fn tablets(&self) -> Result<ShowTabletResponse, OpenMldbError> {
        let r: ShowTabletResponse = self.ns("ShowTablet", &serde_json::json!({})).await?;
        let mut real = self.real.lock().unwrap_or_else(|e| e.into_inner());
        for t in &r.tablets {
            match t.real_endpoint.as_deref() {
                Some(addr) if addr != "-" && addr != t.endpoint => {
                    real.insert(t.endpoint.clone(), addr.to_string());
                }
                _ => {}
            }
        }
        drop(real);
        Ok(r)
    }

    pub(crate) async fn tables(&self) -> Result<Vec<TableInfo>, OpenMldbError> {
        let r: ShowTableResponse = self
            .ns("ShowTable", &ShowTableRequest { show_all: true })
            .await?;
        Ok(r.table_info)
    }

    /// Ops, optionally of one partition.
    pub(crate) async fn ops(
        &self,
        of: Option<(&str, &str, u32)>,
    ) -> Result<Vec<OpStatus>, OpenMldbError> {
        let req = match of {
            Some((db, name, pid)) => ShowOpStatusRequest {
                name: Some(name.to_string()),
                pid: Some(pid),
                db: (!db.is_empty()).then(|| db.to_string()),
                op_id: None,
            },
            None => ShowOpStatusRequest::default(),
        };
        let r: ShowOpStatusResponse = self.ns("ShowOPStatus", &req).await?;
        Ok(r.op_status)
    }

    /// Each table's rows (`[db.]table` → the sum of its partitions' leader `record_cnt`),
    /// for the seed's check after the last tablet that the row counts grow again under
    /// write traffic.
    ///
    /// # Errors
    /// The nameserver could not be read.
    pub async fn row_counts(&self) -> Result<BTreeMap<String, u64>, OpenMldbError> {
        let mut out = BTreeMap::new();
        for t in self.tables().await? {
            let name = if t.db.is_empty() {
                t.name.clone()
            } else {
                format!("{}.{}", t.db, t.name)
            };
            let rows = t
                .table_partition
                .iter()
                .filter_map(|p| p.partition_meta.iter().find(|m| m.is_leader && m.is_alive))
                .map(|m| m.record_cnt)
                .sum();
            out.insert(name, rows);
        }
        Ok(out)
    }

    /// `auto_failover` as the nameserver holds it.
    pub(crate) async fn auto_failover(&self) -> Result<String, OpenMldbError> {
        let r: ConfGetResponse = self.ns("ConfGet", &serde_json::json!({})).await?;
        r.conf
            .into_iter()
            .find(|p| p.key == "auto_failover")
            .map(|p| p.value.to_ascii_lowercase())
            .ok_or_else(|| OpenMldbError::App {
                server: self.leader_addr().unwrap_or_default(),
                method: "ConfGet",
                code: code::OK,
                msg: "no auto_failover in the answer".into(),
            })
    }

    /// Waits until every op on `on` newer than `mark` finished.
    pub(crate) async fn wait_ops(
        &self,
        on: (&str, &str, u32),
        mark: u64,
        what: &'static str,
    ) -> Result<(), OpenMldbError> {
        let deadline = tokio::time::Instant::now() + self.timing.op;
        loop {
            // No leader for a moment (a nameserver failover): keep waiting, within the
            // deadline.
            let ops = match self.ops(Some(on)).await {
                Ok(ops) => ops,
                Err(e)
                    if e.class() == rollout_core::ErrorClass::Transient
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.timing.poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let newer: Vec<&OpStatus> = ops.iter().filter(|o| o.op_id > mark).collect();
            if let Some(bad) = newer
                .iter()
                .find(|o| matches!(o.status.as_str(), "kFailed" | "kCanceled"))
            {
                return Err(self.op_error(what, on, bad, "ended"));
            }
            if !newer.is_empty() && newer.iter().all(|o| o.finished()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match newer.iter().find(|o| !o.finished()) {
                    Some(o) => self.op_error(what, on, o, "has not finished in time; it is"),
                    None => OpenMldbError::App {
                        server: self.leader_addr().unwrap_or_default(),
                        method: what,
                        code: code::OK,
                        msg: format!(
                            "no op appeared for {}.{} partition {} within {} s",
                            on.0,
                            on.1,
                            on.2,
                            self.timing.op.as_secs()
                        ),
                    },
                });
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    fn op_error(
        &self,
        what: &'static str,
        on: (&str, &str, u32),
        o: &OpStatus,
        how: &str,
    ) -> OpenMldbError {
        OpenMldbError::App {
            server: self.leader_addr().unwrap_or_default(),
            method: what,
            code: -1,
            msg: format!(
                "op {} ({}) on {}{}{} partition {} {how} {}",
                o.op_id,
                o.op_type,
                on.0,
                if on.0.is_empty() { "" } else { "." },
                on.1,
                on.2,
                o.status
            ),
        }
    }
}

/// A factory's node, its errors in this backend's error ([`OpenMldbError::Node`]).
pub type OpenMldbNode<N> = rollout_core::MappedNode<N, OpenMldbError>;

/// The error of a factory's node on `node` in operation `what`.
pub(crate) fn node_err(
    node: &NodeId,
    what: &'static str,
    e: Box<dyn std::error::Error + Send + Sync>,
) -> OpenMldbError {
    OpenMldbError::Node {
        node: node.to_string(),
        what: if what == "is_applied" { "status" } else { what }.to_string(),
        reason: e.to_string(),
    }
}

/// What one round over the nameservers gave.
enum Round<R> {
    /// A nameserver answered as leader, or a call may have been taken (the last error).
    Answered(Result<R, OpenMldbError>),
    /// No registered nameserver took the call: each a standby, stopping, or not reached (a
    /// standby's answer if one gave one, else the last failure).
    NoLeader(OpenMldbError),
}
