//! An emulated OpenMLDB cluster, not OpenMLDB: nameservers, tablets, an apiserver and a
//! taskmanager on loopback that answer the HTTP/JSON RPCs `rollout_openmldb::OpenMldbCluster`
//! uses, from a [`rollout_sim`] world run on the wall clock (the one model of the cluster),
//! and register in a real ZooKeeper as OpenMLDB does: an ephemeral sequential
//! `<root>/leader/lock_request` node per running nameserver, an ephemeral `<root>/nodes/<endpoint>`
//! per running tablet (`startup_<endpoint>` as a started process writes it),
//! `<root>/config/auto_failover`, `<root>/taskmanager/leader`. A stopped process closes its
//! port and its ZooKeeper nodes go.

mod serve;

pub use rollout_emulator_kernel::processes::{Processes, run_process};

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_core::{Cluster, NodeId};
use rollout_sim::{SimBuilder, SimCluster, SimNode};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use zookeeper_client as zk;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// The world could not be built.
    #[error("the emulated cluster could not be built: {0}")]
    Build(String),
    /// A port could not be bound on loopback.
    #[error("the emulator could not listen on loopback: {0}")]
    Bind(#[from] std::io::Error),
    /// ZooKeeper refused.
    #[error("ZooKeeper {0}: {1}")]
    ZooKeeper(String, String),
}

/// How the emulator's processes map to the world's nodes.
#[derive(Debug)]
pub(crate) struct Directory {
    pub(crate) addr: BTreeMap<NodeId, SocketAddrV4>,
    pub(crate) node: BTreeMap<SocketAddrV4, NodeId>,
    /// Tablets with a MakeSnapshot running.
    pub(crate) snapshotting: Mutex<BTreeSet<NodeId>>,
    pub(crate) ensemble: String,
    pub(crate) root: String,
}

impl Directory {
    pub(crate) fn addr_of(&self, id: &NodeId) -> Option<SocketAddrV4> {
        self.addr.get(id).copied()
    }

    /// A world node's endpoint as clients see it.
    pub(crate) fn endpoint(&self, id: &NodeId) -> String {
        self.addr_of(id)
            .map_or_else(|| id.to_string(), |a| a.to_string())
    }

    /// The world node behind an endpoint.
    pub(crate) fn world(&self, endpoint: &str) -> Option<NodeId> {
        let a: SocketAddrV4 = endpoint.parse().ok()?;
        self.node.get(&a).cloned()
    }
}

/// A running emulated cluster. Dropping it stops every server.
#[derive(Debug)]
pub struct Emulator {
    sim: SimCluster,
    dir: Arc<Directory>,
    supervisors: Vec<JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for s in &self.supervisors {
            s.abort();
        }
    }
}

async fn zk_client(ensemble: &str) -> Result<zk::Client, EmulatorError> {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .connect(ensemble)
        .await
        .map_err(|e| EmulatorError::ZooKeeper(ensemble.to_string(), e.to_string()))
}

async fn ensure(c: &zk::Client, path: &str, data: &str) -> Result<(), EmulatorError> {
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let mut at = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        at.push('/');
        at.push_str(p);
        let d = if i + 1 == parts.len() {
            data.as_bytes()
        } else {
            b""
        };
        match c.create(&at, d, &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(EmulatorError::ZooKeeper(at, e.to_string())),
        }
    }
    Ok(())
}

impl Emulator {
    /// Builds the world from `builder` (an OpenMLDB flavor), registers it in ZooKeeper
    /// `ensemble` under `root`, and starts one server per process on 127.0.0.1. Call it
    /// inside a tokio runtime with the real clock.
    ///
    /// # Errors
    /// An impossible shape, another flavor, no free loopback port, ZooKeeper unreachable.
    pub async fn start(
        builder: &SimBuilder,
        ensemble: &str,
        root: &str,
    ) -> Result<Self, EmulatorError> {
        if builder.get_flavor() != rollout_sim::Flavor::OpenMldb {
            return Err(EmulatorError::Build(
                "the OpenMLDB emulator serves an OpenMLDB world".into(),
            ));
        }
        let sim = builder
            .build()
            .map_err(|e| EmulatorError::Build(e.to_string()))?;
        let c = zk_client(ensemble).await?;
        let auto = sim
            .view()
            .knobs
            .get("auto_failover")
            .cloned()
            .unwrap_or_default();
        for dir in ["/leader", "/nodes", "/taskmanager", "/table/notify"] {
            ensure(&c, &format!("{root}{dir}"), "").await?;
        }
        ensure(&c, &format!("{root}/config/auto_failover"), &auto).await?;
        let mut listeners = Vec::new();
        let mut dir = Directory {
            addr: BTreeMap::new(),
            node: BTreeMap::new(),
            snapshotting: Mutex::new(BTreeSet::new()),
            ensemble: ensemble.to_string(),
            root: root.to_string(),
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
            supervisors,
        })
    }

    /// The simulated world behind the servers (for its ground truth).
    pub fn sim(&self) -> &SimCluster {
        &self.sim
    }

    /// The endpoints of the servers of `role` (`nameserver`, `tablet`, `apiserver`,
    /// `taskmanager`).
    pub fn endpoints(&self, role: &str) -> Vec<String> {
        self.sim
            .view()
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| self.dir.endpoint(&n.id))
            .collect()
    }

    /// The endpoint of the world's node `id` (for example `tablet-1:10921`).
    pub fn endpoint_of(&self, id: &NodeId) -> String {
        self.dir.endpoint(id)
    }

    /// Serves the control port of this cluster's emulated processes on `listener`, each a
    /// real OS process running [`run_process`] and naming itself by its endpoint (see
    /// [`rollout_emulator_kernel::processes`]): the serve mode of the reference binary.
    pub fn serve_processes(&self, listener: TcpListener) -> Processes {
        let dir = self.dir.clone();
        rollout_emulator_kernel::processes::serve(
            self.sim.clone(),
            listener,
            Arc::new(move |endpoint: &str| dir.world(endpoint)),
        )
    }

    /// The process at `endpoint`, controlled through the world: this is the emulator's node
    /// factory for `OpenMldbCluster`.
    pub fn node(&self, endpoint: &NodeId) -> Option<SimNode> {
        self.dir
            .world(endpoint.as_str())
            .and_then(|id| Cluster::node(&self.sim, &id))
    }
}

/// Keeps `id`'s port open while its process runs, and its ZooKeeper registration while it
/// serves.
async fn supervise(sim: SimCluster, dir: Arc<Directory>, id: NodeId, first: TcpListener) {
    let addr = dir.addr_of(&id).expect("every node has an address");
    let endpoint = addr.to_string();
    let mut listener = Some(first);
    let mut accepting: Option<JoinHandle<()>> = None;
    let mut registered: Option<(zk::Client, String)> = None;
    let tick = Duration::from_millis(5);
    loop {
        let view = sim.node_view(&id);
        let running = view.as_ref().is_some_and(|n| n.running);
        let serving = view.as_ref().is_some_and(|n| n.serving);
        let role = view.as_ref().map_or("", |n| n.role);
        // A port answers once its process serves (a nameserver opens it after its Init).
        let _ = running;
        match (serving, accepting.is_some()) {
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
                if let Some(a) = accepting.take() {
                    a.abort();
                }
                listener = None;
            }
            _ => {}
        }
        // The taskmanager leader node and the nameservers' lock nodes follow the world's
        // processes; a tablet registers once it serves.
        let wants = serving && matches!(role, "nameserver" | "tablet" | "taskmanager");
        // A session ZooKeeper expired (it was away longer than the session timeout) took
        // the registration with it: register again on a new session, as OpenMLDB's
        // processes do on a session expiry.
        if registered.as_ref().is_some_and(|(c, _)| {
            matches!(
                c.state(),
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
            )
        }) {
            registered = None;
        }
        match (wants, registered.is_some()) {
            (true, false) => {
                if let Ok(c) = zk_client(&dir.ensemble).await {
                    let (path, data, mode) = match role {
                        "nameserver" => (
                            format!("{}/leader/lock_request", dir.root),
                            endpoint.clone(),
                            zk::CreateMode::EphemeralSequential,
                        ),
                        "tablet" => (
                            format!("{}/nodes/{endpoint}", dir.root),
                            format!("startup_{endpoint}"),
                            zk::CreateMode::Ephemeral,
                        ),
                        _ => (
                            format!("{}/taskmanager/leader", dir.root),
                            endpoint.clone(),
                            zk::CreateMode::Ephemeral,
                        ),
                    };
                    let opts = mode.with_acls(zk::Acls::anyone_all());
                    if let Ok((_, seq)) = c.create(&path, data.as_bytes(), &opts).await {
                        let made = if mode == zk::CreateMode::EphemeralSequential {
                            format!("{path}{seq}")
                        } else {
                            path
                        };
                        registered = Some((c, made));
                    }
                }
            }
            (false, true) => {
                if let Some((c, path)) = registered.take() {
                    let _ = c.delete(&path, None).await;
                }
            }
            _ => {}
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
