//! An emulator of a Pegasus cluster: meta servers and replica servers on loopback that speak
//! the real "thrift over rDSN" protocol as a chosen server version does, and serve one
//! `rollout-sim` world, run on the wall clock with a time scale. It is not Pegasus: it
//! answers the RPCs, remote commands and HTTP paths that rollout and the upstream tools use,
//! from the simulator's one model of the cluster.
//!
//! Each version ([`ServerVersion`]: 2.4, 2.5, master) reads requests as that version's C++
//! reader does, with decoders of its own written from that version's IDL (not the backend's
//! codec), so that a request the real server would misread is misread here too, with the
//! same consequences: a 2.5 meta that loses the promote of a move-primary demotes the primary
//! (the real meta then elects a primary right after the demote's remote write,
//! `server_state::on_update_configuration_on_remote_reply` calling `cure()` @v2.5.0; the
//! emulator leaves the partition without one until its next tick), and one whose reader
//! throws dies. It answers in that version's formats
//! (plain or JSON remote-command replies, `/metrics` or perf counters, `server-info`) and
//! refuses what it refuses. Docs: docs/upstream/pegasus.md, with the upstream file and
//! function at each tag.
//!
//! Each process listens on its own port while the world's process runs, and closes it (and
//! every connection) while it does not, so a stopped server refuses connections as a real
//! one does. Restarts go through [`Emulator::node`], the world's own process control; a
//! node's version is the one the world says it runs (an upgrade moves it), so a rolling
//! upgrade runs a mixed-version cluster.

mod clock;
mod commands;
mod http;
mod meta;
mod serve;
mod version;
mod wire;

pub use rollout_emulator_kernel::processes::{Processes, run_process};
pub use version::{ServerVersion, UnknownVersion};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_core::{Cluster, NodeId};
use rollout_sim::emulation::NodeView;
use rollout_sim::{SimBuilder, SimCluster, SimNode};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What went wrong starting an emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// The cluster shape is impossible.
    #[error("the emulated cluster cannot be built: {0}")]
    Build(String),
    /// A port could not be bound on loopback.
    #[error("the emulator could not listen on loopback: {0}")]
    Bind(#[from] std::io::Error),
}

/// The values written through the data path: (app id, partition index, key) → the write's
/// sequence number in the world's ledger, the value and when it expires (seconds since the
/// Pegasus epoch, 2016-01-01; 0 never). A value whose write the serving replica lacks reads
/// as not found: the write was lost.
pub(crate) type Values = Mutex<HashMap<(u32, u32, Vec<u8>), (u32, Vec<u8>, i32)>>;

/// A replica server's perf counters as its last snapshot holds them (2.4/2.5 take one every
/// `perf_counter_update_interval_seconds`, 10 s: `pegasus_counter_reporter::update`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// The process the snapshot was taken of.
    pub(crate) boot: u64,
    /// When, in emulated milliseconds.
    pub(crate) at_ms: u64,
    /// `replica(Count)`: open replicas.
    pub(crate) open: u64,
    /// `closing.replica(Count)`: replicas closed by `replica.kill_partition` whose flush is
    /// not done (`opening.replica(Count)` is always 0: no replica opens while it counts).
    pub(crate) closing: u64,
}

/// The perf-counter snapshot period (`perf_counter_update_interval_seconds`).
pub(crate) const COUNTER_PERIOD_MS: u64 = 10_000;

/// How the emulator's processes map to the world's nodes, and the data path's values.
#[derive(Debug)]
pub(crate) struct Directory {
    /// World node id → its loopback address.
    pub(crate) addr: BTreeMap<NodeId, SocketAddrV4>,
    /// Loopback address → world node id.
    pub(crate) node: BTreeMap<SocketAddrV4, NodeId>,
    /// What clients wrote.
    pub(crate) values: Values,
    /// The world's timings: its meta's freeze thresholds are what the servers report.
    pub(crate) timings: rollout_sim::Timings,
    /// What `cluster_info` reports as `zookeeper_hosts` and `zookeeper_root`.
    pub(crate) zookeeper: Mutex<(String, String)>,
    /// The version a node speaks when the world's version string names none.
    pub(crate) version: ServerVersion,
    /// Each replica server's last perf-counter snapshot.
    pub(crate) counters: Mutex<BTreeMap<NodeId, Counters>>,
    /// What the meta leaders made of each balancer proposal they read.
    pub(crate) proposals: Mutex<Vec<String>>,
    /// Each replica server's replicas closed by `replica.kill_partition` in its current
    /// process.
    pub(crate) killed: Mutex<BTreeMap<NodeId, Killed>>,
}

/// A replica server's process (its boot) and the replicas `replica.kill_partition` closed in
/// it, as (app id, partition index).
pub(crate) type Killed = (u64, BTreeSet<(u32, u32)>);

impl Directory {
    pub(crate) fn addr_of(&self, id: &NodeId) -> Option<SocketAddrV4> {
        self.addr.get(id).copied()
    }

    /// The version `node` runs: the world's version string when it names one the emulator
    /// speaks (`2.5.0`, `2.6.0-SNAPSHOT`, `master`), else the emulator's.
    pub(crate) fn version_of(&self, node: &NodeView) -> ServerVersion {
        version::of_release(&node.version).unwrap_or(self.version)
    }

    /// `rpc_address` of a world node: `ip << 32 | port << 16 | 1`, 0 when it has none.
    pub(crate) fn raw_addr(&self, id: &NodeId) -> i64 {
        self.addr_of(id).map_or(0, |a| {
            (i64::from(u32::from(*a.ip())) << 32) | (i64::from(a.port()) << 16) | 1
        })
    }

    /// The world node behind a raw `rpc_address`.
    pub(crate) fn node_of_raw(&self, raw: i64) -> Option<NodeId> {
        let ip = Ipv4Addr::from((raw >> 32) as u32);
        let port = ((raw >> 16) & 0xffff) as u16;
        self.node.get(&SocketAddrV4::new(ip, port)).cloned()
    }

    /// How master names a node: the reverse DNS of its IP (`host_port::from_address`,
    /// `rpc_host_port.cpp` @master), which for loopback is `localhost`.
    pub(crate) fn host_name(&self, id: &NodeId) -> Option<(String, u16)> {
        self.addr_of(id).map(|a| (host_name(*a.ip()), a.port()))
    }

    /// The world node a master host name names.
    pub(crate) fn node_of_name(&self, hp: &(String, u16)) -> Option<NodeId> {
        self.node
            .iter()
            .find(|(a, _)| a.port() == hp.1 && host_name(*a.ip()) == hp.0)
            .map(|(_, id)| id.clone())
    }
}

/// The reverse DNS name of an emulated server's IP: the emulator serves on loopback only.
fn host_name(ip: Ipv4Addr) -> String {
    if ip.is_loopback() {
        "localhost".into()
    } else {
        ip.to_string()
    }
}

/// A running emulated cluster. Dropping it stops every server.
#[derive(Debug)]
pub struct Emulator {
    sim: SimCluster,
    dir: Arc<Directory>,
    version: ServerVersion,
    supervisors: Vec<JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for s in &self.supervisors {
            s.abort();
        }
    }
}

impl Emulator {
    /// Builds the world from `builder` (a Pegasus flavor), every node running `version`, and
    /// starts one server per process on 127.0.0.1. Call it inside a tokio runtime with the
    /// real clock.
    ///
    /// # Errors
    /// An impossible shape, another flavor, or no free loopback port.
    pub async fn start(
        builder: &SimBuilder,
        version: ServerVersion,
    ) -> Result<Self, EmulatorError> {
        if builder.get_flavor() != rollout_sim::Flavor::Pegasus {
            return Err(EmulatorError::Build(
                "the Pegasus emulator serves a Pegasus world".into(),
            ));
        }
        let mut b = builder.clone();
        b.version(version.release());
        if version != ServerVersion::Master {
            // The code default of `replica_assign_delay_ms_for_dropouts` on 2.4 and 2.5
            // (`meta_options::initialize` @v2.4.0, `partition_guardian.cpp` @v2.5.0).
            b.knob_default("meta.lb.assign_delay_ms", "300000");
        }
        let sim = b.build().map_err(|e| EmulatorError::Build(e.to_string()))?;
        let mut listeners = Vec::new();
        let mut dir = Directory {
            addr: BTreeMap::new(),
            node: BTreeMap::new(),
            values: Values::default(),
            timings: builder.get_timings(),
            zookeeper: Mutex::new(("emulated".into(), "/pegasus/emulated".into())),
            version,
            counters: Mutex::new(BTreeMap::new()),
            proposals: Mutex::new(Vec::new()),
            killed: Mutex::new(BTreeMap::new()),
        };
        for id in sim.node_ids() {
            let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).await?;
            let SocketAddr::V4(a) = l.local_addr()? else {
                return Err(EmulatorError::Build("loopback gave an IPv6 address".into()));
            };
            dir.addr.insert(id.clone(), a);
            dir.node.insert(a, id.clone());
            listeners.push((id, l));
        }
        let dir = Arc::new(dir);
        let supervisors = listeners
            .into_iter()
            .map(|(id, l)| tokio::spawn(supervise(sim.clone(), dir.clone(), id, l)))
            .collect();
        Ok(Self {
            sim,
            dir,
            version,
            supervisors,
        })
    }

    /// The simulated world behind the servers (for its ground truth: lost writes, restarts).
    pub fn sim(&self) -> &SimCluster {
        &self.sim
    }

    /// The version the cluster started with.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// What the meta leaders made of each balancer proposal, as they read it, oldest first:
    /// `move-primary APP.PIDX to NODE`, `demote APP.PIDX` (a move-primary whose promote was
    /// lost reading it), `downgrade APP.PIDX NODE`, `dropped APP.PIDX: why` (accepted, and
    /// cleared at the next tick), `refused APP.PIDX: ERR`. A meta whose reader threw on a
    /// proposal died instead (see [`SimCluster::truth`]'s crashes).
    pub fn proposals(&self) -> Vec<String> {
        self.dir
            .proposals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The meta servers' addresses, in the world's order.
    pub fn metas(&self) -> Vec<SocketAddr> {
        self.role_addrs("meta")
    }

    /// The collectors' addresses.
    pub fn collectors(&self) -> Vec<SocketAddr> {
        self.role_addrs("collector")
    }

    /// The addresses of the servers of `role` (`meta`, `replica`, `collector`).
    pub fn role_addrs(&self, role: &str) -> Vec<SocketAddr> {
        self.sim
            .view()
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .filter_map(|n| self.dir.addr_of(&n.id))
            .map(SocketAddr::V4)
            .collect()
    }

    /// The address of the world's node `id` (as `127.0.0.1:PORT`), or its id when it has none.
    pub fn endpoint_of(&self, id: &NodeId) -> String {
        self.dir
            .addr_of(id)
            .map_or_else(|| id.to_string(), |a| a.to_string())
    }

    /// The world's node behind a loopback address (as `127.0.0.1:PORT`).
    pub fn world_id(&self, addr: &str) -> Option<NodeId> {
        let a: SocketAddrV4 = addr.parse().ok()?;
        self.dir.node.get(&a).cloned()
    }

    /// Has `cluster_info` report `hosts` (`HOST:PORT[,...]`) and `root` as the cluster's
    /// ZooKeeper (by default it reports `emulated`, which no tool can reach), so that
    /// rollout keeps its state there, as on a real cluster. The emulator itself does not
    /// use ZooKeeper.
    pub fn report_zookeeper(&self, hosts: &str, root: &str) {
        *self.dir.zookeeper.lock().unwrap_or_else(|e| e.into_inner()) =
            (hosts.to_string(), root.to_string());
    }

    /// Serves the control port of this cluster's emulated processes on `listener`, each a
    /// real OS process running [`run_process`] and naming itself by its address (see
    /// [`rollout_emulator_kernel::processes`]): the serve mode of the reference binary.
    pub fn serve_processes(&self, listener: TcpListener) -> Processes {
        let dir = self.dir.clone();
        rollout_emulator_kernel::processes::serve(
            self.sim.clone(),
            listener,
            Arc::new(move |addr: &str| {
                let a: SocketAddrV4 = addr.parse().ok()?;
                dir.node.get(&a).cloned()
            }),
        )
    }

    /// The process at `addr` (`127.0.0.1:PORT`), controlled through the world: stop, start,
    /// status, apply, revert. This is the emulator's node factory for `PegasusCluster`.
    pub fn node(&self, addr: &NodeId) -> Option<SimNode> {
        self.world_id(addr.as_str())
            .and_then(|id| Cluster::node(&self.sim, &id))
    }
}

/// Keeps `id`'s port open exactly while its process runs, and takes a replica server's perf
/// counter snapshots.
async fn supervise(sim: SimCluster, dir: Arc<Directory>, id: NodeId, first: TcpListener) {
    let addr = dir.addr_of(&id).expect("every node has an address");
    let mut listener = Some(first);
    let mut accepting: Option<JoinHandle<()>> = None;
    let tick = Duration::from_millis(5);
    loop {
        let running = sim.running(&id).unwrap_or(false);
        match (running, accepting.is_some()) {
            (true, false) => {
                let l = match listener.take() {
                    Some(l) => Some(l),
                    None => TcpListener::bind(addr).await.ok(),
                };
                if let Some(l) = l {
                    let (sim, dir, id) = (sim.clone(), dir.clone(), id.clone());
                    accepting = Some(tokio::spawn(accept(l, sim, dir, id)));
                }
            }
            (false, true) => {
                // The process is gone: its port closes and, with the accept task's set,
                // every connection drops.
                if let Some(a) = accepting.take() {
                    a.abort();
                }
                listener = None;
            }
            _ => {}
        }
        if running {
            commands::snapshot_counters(&sim, &dir, &id).await;
        }
        tokio::time::sleep(tick).await;
    }
}

async fn accept(l: TcpListener, sim: SimCluster, dir: Arc<Directory>, id: NodeId) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(serve::connection(
            stream,
            sim.clone(),
            dir.clone(),
            id.clone(),
        ));
        while conns.try_join_next().is_some() {}
    }
}
