//! An emulated OpenMLDB cluster, not OpenMLDB: nameservers, tablets, an apiserver and a
//! taskmanager on loopback that answer brpc's HTTP/JSON calls of the NameServer and
//! TabletServer services as a chosen server version does, from a [`rollout_sim`] world run
//! on the wall clock (the one model of the cluster), and register in a real ZooKeeper as
//! OpenMLDB does: an ephemeral sequential `<root>/leader/lock_request` node per running
//! nameserver, an ephemeral `<root>/nodes/<endpoint>` per running tablet (`startup_<endpoint>`
//! as a started process writes it), `<root>/config/auto_failover`, `<root>/taskmanager/leader`
//! (`0.0.0.0:<port>`, the taskmanager's default `server.host`), and under `--use_name`
//! `<root>/map/names/<name>`. A stopped process closes its port and its ZooKeeper nodes go.
//!
//! Each version ([`ServerVersion`]: 0.8, 0.9) decodes a request as brpc's `json2pb` does
//! against the services' protos (the emulator's own, `proto/*.proto`, written from the
//! upstream ones), refuses what the nameserver and tablets refuse (with their return
//! codes), and requires an `Authorization` header where that version does. Docs:
//! docs/upstream/openmldb.md, with the upstream file and function at each tag.

mod brpc;
mod catalog;
mod http;
mod nameserver;
mod proto;
mod registration;
mod snapshots;
mod tablet;
mod version;

pub use catalog::ClientWrite;
pub use rollout_emulator_kernel::processes::{Processes, run_process};
pub use version::{ServerVersion, UnknownVersion};

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollout_core::{Cluster, NodeId};
use rollout_sim::emulation::NodeView;
use rollout_sim::{SimBuilder, SimCluster, SimNode};
use tokio::net::{TcpListener, TcpStream};
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

/// How the emulated cluster is deployed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The version its servers run (an upgrade moves a node to another).
    pub version: ServerVersion,
    /// Nameservers and tablets run with `--use_name`: they are known by a name, mapped to
    /// their address in `<root>/map/names` and ShowTablet's `real_endpoint`
    /// (`GetRealEndpoint` in `cmd/openmldb.cc`).
    pub use_name: bool,
    /// Their ZooKeeper nodes are locked to this digest identity, `user:password`
    /// (`--zk_cert`: `zoo_add_auth` and `ZOO_CREATOR_ALL_ACL`, `ZkClient::Init`).
    pub zk_cert: Option<String>,
}

impl Options {
    /// The options of a plain cluster of `version`.
    pub fn new(version: ServerVersion) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    /// Under `--use_name`.
    #[must_use]
    pub fn use_name(mut self) -> Self {
        self.use_name = true;
        self
    }

    /// With ZooKeeper nodes locked to `user:password`.
    #[must_use]
    pub fn zk_cert(mut self, cert: &str) -> Self {
        self.zk_cert = Some(cert.to_string());
        self
    }
}

/// How the emulator's processes map to the world's nodes.
#[derive(Debug)]
pub(crate) struct Directory {
    pub(crate) addr: BTreeMap<NodeId, SocketAddrV4>,
    pub(crate) node: BTreeMap<SocketAddrV4, NodeId>,
    pub(crate) ensemble: String,
    pub(crate) root: String,
    pub(crate) options: Options,
    /// Each tablet's snapshots: MANIFEST offsets and the work queued on its snapshot pool.
    pub(crate) snapshots: Mutex<snapshots::Snapshots>,
    /// The rows clients put over `baidu_std` and tablets acknowledged.
    pub(crate) puts: Mutex<catalog::Puts>,
}

impl Directory {
    pub(crate) fn addr_of(&self, id: &NodeId) -> Option<SocketAddrV4> {
        self.addr.get(id).copied()
    }

    /// Whether `id` goes by a name (`--use_name`: nameservers and tablets).
    fn named(&self, id: &NodeId) -> bool {
        self.options.use_name
            && (id.as_str().starts_with("tablet") || id.as_str().starts_with("nameserver"))
    }

    /// A world node's endpoint as the cluster names it: its address, or under `--use_name`
    /// its name.
    pub(crate) fn endpoint(&self, id: &NodeId) -> String {
        if self.named(id) {
            return id
                .as_str()
                .split(':')
                .next()
                .unwrap_or(id.as_str())
                .to_string();
        }
        self.real(id)
    }

    /// A world node's address (`real_endpoint`).
    pub(crate) fn real(&self, id: &NodeId) -> String {
        self.addr_of(id)
            .map_or_else(|| id.to_string(), |a| a.to_string())
    }

    /// The world node behind an endpoint: a name or an address.
    pub(crate) fn world(&self, endpoint: &str) -> Option<NodeId> {
        if let Ok(a) = endpoint.parse::<SocketAddrV4>() {
            return self.node.get(&a).cloned();
        }
        self.addr
            .keys()
            .find(|id| self.named(id) && self.endpoint(id) == endpoint)
            .cloned()
    }

    /// The version `node` runs: the world's version string when it names one the emulator
    /// speaks, else the emulator's.
    pub(crate) fn version_of(&self, node: &NodeView) -> ServerVersion {
        version::of_release(&node.version).unwrap_or(self.options.version)
    }

    /// The ACLs of the nodes the cluster creates.
    pub(crate) fn acls(&self) -> zk::Acls<'static> {
        if self.options.zk_cert.is_some() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
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

impl Emulator {
    /// Builds the world from `builder` (an OpenMLDB flavor), every node running
    /// `options.version`, registers it in ZooKeeper `ensemble` under `root`, and starts one
    /// server per process on 127.0.0.1. Call it inside a tokio runtime with the real clock.
    ///
    /// # Errors
    /// An impossible shape, another flavor, no free loopback port, ZooKeeper unreachable.
    pub async fn start(
        builder: &SimBuilder,
        ensemble: &str,
        root: &str,
        options: Options,
    ) -> Result<Self, EmulatorError> {
        if builder.get_flavor() != rollout_sim::Flavor::OpenMldb {
            return Err(EmulatorError::Build(
                "the OpenMLDB emulator serves an OpenMLDB world".into(),
            ));
        }
        let mut b = builder.clone();
        b.version(options.version.release());
        let sim = b.build().map_err(|e| EmulatorError::Build(e.to_string()))?;
        let mut listeners = Vec::new();
        let mut dir = Directory {
            addr: BTreeMap::new(),
            node: BTreeMap::new(),
            ensemble: ensemble.to_string(),
            root: root.to_string(),
            options,
            snapshots: Mutex::new(snapshots::Snapshots::default()),
            puts: Mutex::new(catalog::Puts::new()),
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
        registration::prepare(&sim, &dir).await?;
        let mut supervisors: Vec<JoinHandle<()>> = listeners
            .into_iter()
            .map(|(id, l)| tokio::spawn(supervise(sim.clone(), dir.clone(), id, l)))
            .collect();
        supervisors.push(tokio::spawn(catalog::publish(sim.clone(), dir.clone())));
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

    /// Every row a client put through the tablets' `baidu_std` port (the upstream SDK's
    /// `INSERT`) and a tablet acknowledged, by key, each with whether the replica serving
    /// its partition holds it now.
    pub fn client_writes(&self) -> Vec<ClientWrite> {
        let puts = self.dir.puts.lock().unwrap_or_else(|e| e.into_inner());
        catalog::client_writes(&self.sim, &puts)
    }

    /// The ZooKeeper root the cluster registers under (the SDK's `zkPath`).
    pub fn root(&self) -> &str {
        &self.dir.root
    }

    /// The version the cluster started with.
    pub fn version(&self) -> ServerVersion {
        self.dir.options.version
    }

    /// The endpoints of the servers of `role` (`nameserver`, `tablet`, `apiserver`,
    /// `taskmanager`): names under `--use_name`.
    pub fn endpoints(&self, role: &str) -> Vec<String> {
        self.sim
            .view()
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| self.dir.endpoint(&n.id))
            .collect()
    }

    /// The endpoint of the world's node `id`: its address, or under `--use_name` its name.
    pub fn endpoint_of(&self, id: &NodeId) -> String {
        self.dir.endpoint(id)
    }

    /// The address of the world's node `id`.
    pub fn address_of(&self, id: &NodeId) -> String {
        self.dir.real(id)
    }

    /// The world's node behind an endpoint (a name or an address).
    pub fn world_id(&self, endpoint: &str) -> Option<NodeId> {
        self.dir.world(endpoint)
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

/// Keeps `id`'s port open while its process serves, and its ZooKeeper registration.
async fn supervise(sim: SimCluster, dir: Arc<Directory>, id: NodeId, first: TcpListener) {
    let addr = dir.addr_of(&id).expect("every node has an address");
    let mut listener = Some(first);
    let mut accepting: Option<JoinHandle<()>> = None;
    let mut registered = registration::Registered::default();
    let tick = Duration::from_millis(5);
    loop {
        let view = sim.node_view(&id);
        let serving = view.as_ref().is_some_and(|n| n.serving);
        let role = view.as_ref().map_or("", |n| n.role);
        // A port answers once its process serves (a nameserver opens it after its Init).
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
        registered.follow(&dir, &id, role, serving, &sim).await;
        tokio::time::sleep(tick).await;
    }
}

/// One connection, in the protocol its first four bytes name: `baidu_std` (`PRPC`), else
/// HTTP, as a brpc server tells them apart on one port (`InputMessenger::CutInputMessage`).
async fn serve_connection(mut stream: TcpStream, sim: SimCluster, dir: Arc<Directory>, id: NodeId) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(4);
    let mut chunk = [0u8; 4];
    while head.len() < 4 {
        match stream.read(&mut chunk[..4 - head.len()]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    if head == brpc::MAGIC {
        brpc::connection(stream, head, sim, dir, id).await;
    } else {
        http::connection(stream, head, sim, dir, id).await;
    }
}

async fn accept(l: TcpListener, sim: SimCluster, dir: Arc<Directory>, id: NodeId) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        conns.spawn(serve_connection(
            stream,
            sim.clone(),
            dir.clone(),
            id.clone(),
        ));
        while conns.try_join_next().is_some() {}
    }
}
