//! `PegasusCluster`: the core traits over a Pegasus cluster's meta servers, with the
//! processes reached through a node factory.
//!
//! The steps follow the upstream high-availability rolling restart
//! (docs/procedures.md) and avoid the traps of the sources
//! (docs/upstream/pegasus.md): flow control is turned on with the add-secondary count,
//! primaries move only to a current secondary of a fully healthy partition, secondaries are
//! downgraded only where a primary and another secondary stay, `replica.kill_partition`
//! always names its partition, `hp_*` fields go only to a meta whose own answers carry them,
//! and the `meta.lb.*` knobs, which only the leader has, are written again on a new leader.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rollout_core::NodeId;
use tokio::time::Instant;

use crate::error::PegasusError;
use crate::messages::{ClusterInfoResponse, Empty, rpc};
use crate::meta::{MetaClient, MetaError};
use crate::version::ServerVersion;

/// How long things take: per-call deadline and the pace of re-proposals, in the cluster's
/// time (divide by an emulator's time scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// Each RPC's deadline. Default 5 s (the shell's).
    pub rpc: Duration,
    /// How long a proposal may go unanswered before it is submitted again: a little more
    /// than one `lb_interval_ms` (10 s). Default 12 s.
    pub repropose: Duration,
    /// How long the rollout waits after a meta server is ready before the next step: the
    /// rolling-update doc's "wait for more than 30 seconds" so that the replica servers'
    /// beacons continue, which no RPC shows (docs/procedures.md).
    /// Default 30 s. Only after the meta that led: replica servers beacon to the leader
    /// alone and switch on its loss (`slave_failure_detector_with_multimaster`,
    /// `src/failure_detector/failure_detector_multimaster.cpp`), so a standby's restart
    /// leaves their beacons as they were. What it is for is also observed:
    /// [`Timing::election_grace`].
    pub meta_settle: Duration,
    /// How long after an election the new leader's node list proves no beacon:
    /// `fd_grace_seconds` plus `fd_check_interval_seconds`, since the leader registers every
    /// replica server of its configurations as just heard from (`meta_service::start_service`)
    /// and declares a silent one dead at the first check after the grace
    /// (`failure_detector::check_all_records`, @v2.4.0, @v2.5.0, master). Read from the
    /// leader's `/config` where these are flags (2.5, master); this value otherwise (2.4 reads
    /// them from `config.ini` only). Default 24 s: the sample `config.ini`'s 22 s plus the
    /// code's 2 s (the code default grace is 10 s on 2.4 and 2.5, 22 s on master).
    pub election_grace: Duration,
    /// How long the metas may be without a leader before connecting gives up: the dead
    /// leader's lock is an ephemeral ZooKeeper node that lives for the meta's session
    /// (`[zookeeper] timeout_ms`, 30 s by default: `src/zookeeper/zookeeper_session.cpp`,
    /// @v2.5.0), then a standby takes the lock and starts its service. Default 90 s, three
    /// such sessions. (Once connected, the engine's gate deadline bounds such a wait.)
    pub meta_election: Duration,
    /// How many times faster than real time the cluster runs (an emulator's scale; 1 for a
    /// real cluster): durations read from the cluster are divided by it. Set by
    /// [`Timing::scaled`].
    pub scale: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            rpc: Duration::from_secs(5),
            repropose: Duration::from_secs(12),
            meta_settle: Duration::from_secs(30),
            election_grace: Duration::from_secs(24),
            meta_election: Duration::from_secs(90),
            scale: 1,
        }
    }
}

impl Timing {
    /// Every duration divided by `scale` (an emulator running `scale` times faster).
    pub fn scaled(self, scale: u32) -> Self {
        let s = scale.max(1);
        Self {
            rpc: (self.rpc / s).max(Duration::from_millis(200)),
            repropose: self.repropose / s,
            meta_settle: self.meta_settle / s,
            election_grace: self.election_grace / s,
            meta_election: self.meta_election / s,
            scale: self.scale.max(1).saturating_mul(s),
        }
    }
}

/// The knobs written to the meta leader, so that a new leader, which starts from its config
/// (`meta_service::start` registers the `meta.lb.*` commands after the leader lock), gets
/// them again, and so does the same leader restarted at the same address.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// The leader they were written to.
    pub(crate) leader: Option<SocketAddr>,
    /// When that leader's process started, as it reports it (unknown when it did not say).
    pub(crate) started: Option<String>,
    /// Each knob's value as last written.
    pub(crate) values: BTreeMap<String, String>,
}

/// How long a new meta leader's node list proves nothing, as this backend knows it.
#[derive(Debug)]
struct Grace {
    /// In the rollout's time.
    value: Duration,
    /// Where the value came from, in words.
    source: String,
    /// The leader change (leader, when seen) it was last asked for.
    asked: Option<(SocketAddr, Instant)>,
}

/// Where an assumed grace came from: the timing's value, and why.
fn assumed(why: &str) -> String {
    format!("{why}: the rollout's Timing::election_grace is assumed")
}

/// A Pegasus cluster reached through its meta servers; `F` makes the process handles.
pub struct PegasusCluster<F> {
    pub(crate) meta: MetaClient,
    name: String,
    pub(crate) collectors: Vec<SocketAddr>,
    factory: F,
    pub(crate) timing: Timing,
    /// `min_live_node_count_for_unfreeze` and the live percentage, read from the leader
    /// when connecting, and where they came from.
    freeze: (usize, u32, String),
    /// [`Timing::election_grace`] as known (in the rollout's time).
    grace: Mutex<Grace>,
    /// The version each server reported when connecting (metas and replica servers).
    pub(crate) versions: BTreeMap<SocketAddr, ServerVersion>,
    pub(crate) proposed: Mutex<BTreeMap<NodeId, Instant>>,
    /// Each node's `/recentStartTime` read before its stop, to see that it moved.
    pub(crate) started: Mutex<BTreeMap<NodeId, String>>,
    /// Whether each meta was the leader when its wave began: only the leader's restart moves
    /// the replica servers' beacons to another meta.
    pub(crate) led: Mutex<BTreeMap<NodeId, bool>>,
    pub(crate) written: Mutex<Written>,
    pub(crate) http: reqwest::Client,
    /// `zookeeper_hosts` and `zookeeper_root` from `cluster_info`.
    zookeeper: Option<(String, String)>,
}

impl<F> std::fmt::Debug for PegasusCluster<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PegasusCluster")
            .field("name", &self.name)
            .field("metas", &self.meta.addresses())
            .finish_non_exhaustive()
    }
}

pub use rollout_core::NodeFactory;

/// A factory's node, its errors in this backend's error ([`PegasusError::Node`]).
pub type PegasusNode<N> = rollout_core::MappedNode<N, PegasusError>;

/// The error of a factory's node on `node`.
pub(crate) fn node_err(
    node: &NodeId,
    _what: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> PegasusError {
    PegasusError::Node {
        node: node.clone(),
        source,
    }
}

pub(crate) fn addr(id: &NodeId) -> Result<SocketAddr, PegasusError> {
    id.as_str()
        .parse()
        .map_err(|_| PegasusError::BadAddress(id.to_string()))
}

impl<F: NodeFactory> PegasusCluster<F> {
    /// Connects to the meta servers `metas`, reads the cluster's name, the version of every
    /// meta and replica server (refusing one this backend does not speak) and the freeze
    /// thresholds from the leader, and takes process handles from `factory`. `collectors`
    /// are rolled last.
    ///
    /// A moment without a meta leader (the leader was just stopped, as when a rollout is
    /// resumed while it restarts a meta, and another meta answers as a standby) is waited
    /// out, for up to [`Timing::meta_election`]; metas none of which can be reached are an
    /// error at once.
    ///
    /// # Errors
    /// No meta answers as the leader within [`Timing::meta_election`], its answers cannot be
    /// read, or a server runs a version other than 2.4, 2.5 or master
    /// ([`PegasusError::Unsupported`], naming it).
    pub async fn connect(
        metas: &[SocketAddr],
        collectors: &[SocketAddr],
        factory: F,
        timing: Timing,
    ) -> Result<Self, PegasusError> {
        let meta = MetaClient::new(metas, timing.rpc);
        let election = Instant::now() + timing.meta_election;
        let (info, waited) = through_election(election, &timing, || async {
            let info: ClusterInfoResponse = meta.call(rpc::CLUSTER_INFO, &Empty).await?;
            Ok(info)
        })
        .await?;
        let name = info
            .get("cluster_name")
            .map(str::to_string)
            .or_else(|| info.get("zookeeper_root").map(str::to_string))
            .unwrap_or_else(|| {
                metas
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            });
        // The meta server's ZooKeeper, where the rollout's state may live too; an ensemble
        // given without a port (or not at all) is taken as unknown.
        let zookeeper =
            crate::answers::zookeeper_of(info.get("zookeeper_hosts"), info.get("zookeeper_root"));
        let mut cluster = Self {
            meta,
            name: format!("pegasus:{name}"),
            collectors: collectors.to_vec(),
            factory,
            timing,
            freeze: (3, 65, String::new()),
            grace: Mutex::new(Grace {
                value: timing.election_grace,
                source: String::new(),
                asked: None,
            }),
            versions: BTreeMap::new(),
            proposed: Mutex::new(BTreeMap::new()),
            started: Mutex::new(BTreeMap::new()),
            led: Mutex::new(BTreeMap::new()),
            written: Mutex::new(Written::default()),
            http: reqwest::Client::builder()
                .timeout(timing.rpc)
                .build()
                .unwrap_or_default(),
            zookeeper,
        };
        let (versions, waited_again) =
            through_election(election, &timing, || cluster.read_versions()).await?;
        cluster.versions = versions;
        // A leader elected while these reads waited holds every configured node ALIVE for
        // its failure detector's grace: the health probe must not trust its node list yet,
        // as it would not for an election it saw.
        if waited || waited_again {
            cluster.meta.note_election();
        }
        // The leader as of the last read: one elected during these reads is asked, not the
        // one that answered first.
        let leader = cluster.meta.leader().ok_or_else(|| {
            PegasusError::Meta(MetaError::NoLeader {
                tried: String::new(),
                last: "no leader after a successful call".into(),
            })
        })?;
        cluster.freeze = cluster.freeze_thresholds(leader).await;
        let (value, source) = match cluster.read_election_grace(leader).await {
            Ok(read) => read,
            Err(why) => (timing.election_grace, assumed(&why)),
        };
        cluster.grace = Mutex::new(Grace {
            value,
            source,
            asked: None,
        });
        Ok(cluster)
    }

    /// The cluster's ZooKeeper as its meta server reports it in `cluster_info`
    /// (`zookeeper_hosts`, `HOST:PORT[,...]`, and `zookeeper_root`; see
    /// `src/meta/meta_service.cpp`, and `cluster_info` in the admin shell); `None` when it
    /// reports none that can be used.
    pub fn zookeeper(&self) -> Option<(&str, &str)> {
        self.zookeeper
            .as_ref()
            .map(|(h, r)| (h.as_str(), r.as_str()))
    }

    /// The version the meta leader reported when connecting (each server's is read; during
    /// an upgrade they differ).
    pub fn server_version(&self) -> Option<&ServerVersion> {
        self.meta
            .leader()
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

    pub(crate) fn meta(&self) -> &MetaClient {
        &self.meta
    }

    pub(crate) fn factory(&self) -> &F {
        &self.factory
    }

    pub(crate) fn freeze(&self) -> (usize, u32, &str) {
        (self.freeze.0, self.freeze.1, &self.freeze.2)
    }

    /// How long after a leader change the meta leader's node list proves nothing
    /// ([`Timing::election_grace`] in the rollout's time), as last read, with where it came
    /// from (a flag, `config-dump`, or the timing's value assumed).
    pub fn election_grace(&self) -> (Duration, String) {
        let g = self.grace.lock().unwrap_or_else(|e| e.into_inner());
        (g.value, g.source.clone())
    }

    /// Why the meta leader's node list cannot be trusted yet, if it cannot: this client saw
    /// it take over less than [`Timing::election_grace`] ago. The grace is asked of the
    /// leader once per leader change seen (a version whose code default differs, or a
    /// changed flag), and the longest value known is kept; a leader that does not show it
    /// keeps the longer of that and the timing's.
    pub(crate) async fn election_window(&self) -> Option<String> {
        let (leader, since) = self.meta.leader_since()?;
        let asked = self.grace.lock().unwrap_or_else(|e| e.into_inner()).asked;
        if asked != Some((leader, since)) {
            let read = self.read_election_grace(leader).await;
            let mut g = self.grace.lock().unwrap_or_else(|e| e.into_inner());
            g.asked = Some((leader, since));
            let (value, source) = match read {
                Ok(read) => read,
                Err(why) => (self.timing.election_grace, assumed(&why)),
            };
            if value > g.value {
                (g.value, g.source) = (value, source);
            }
        }
        let (grace, source) = {
            let g = self.grace.lock().unwrap_or_else(|e| e.into_inner());
            (g.value, g.source.clone())
        };
        let seen = since.elapsed();
        let left = grace.checked_sub(seen).filter(|d| !d.is_zero())?;
        Some(format!(
            "the meta leader {leader} was seen taking over {:.1} s ago and holds every replica \
             server ALIVE until its failure detector's grace has run ({:.1} s, {source}); {:.1} s left",
            seen.as_secs_f64(),
            grace.as_secs_f64(),
            left.as_secs_f64()
        ))
    }

    pub(crate) fn is_meta(&self, node: &NodeId) -> bool {
        addr(node).is_ok_and(|a| self.is_meta_addr(a))
    }

    pub(crate) fn is_meta_addr(&self, a: SocketAddr) -> bool {
        self.meta.addresses().contains(&a)
    }

    pub(crate) fn is_collector(&self, node: &NodeId) -> bool {
        addr(node).is_ok_and(|a| self.collectors.contains(&a))
    }
}

/// `read`, tried again while no meta answers as the leader, until `deadline` (shared by the
/// reads of one connect, [`Timing::meta_election`] after its first); a second apart in the
/// cluster's time. Also says whether it waited.
async fn through_election<T, Fut>(
    deadline: Instant,
    timing: &Timing,
    mut read: impl FnMut() -> Fut,
) -> Result<(T, bool), PegasusError>
where
    Fut: std::future::Future<Output = Result<T, PegasusError>>,
{
    let mut waited = false;
    loop {
        match read().await {
            // A standby or a loading leader answered: an election may be under way. Not
            // `Unreachable`, which waiting does not mend.
            Err(e @ PegasusError::Meta(MetaError::NoLeader { .. }))
                if Instant::now() < deadline =>
            {
                waited = true;
                tracing::info!(error = %e, "no meta leader yet (an election in progress?); asking again");
                tokio::time::sleep(Duration::from_secs(1) / timing.scale.max(1)).await;
            }
            r => return r.map(|v| (v, waited)),
        }
    }
}
