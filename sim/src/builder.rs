//! [`SimBuilder`]: one builder, many simulated clusters.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollout_core::{NodeId, RoleKind};

use crate::cluster::SimCluster;
use crate::config::{ClientLoad, Flavor, Placement, Timings};
use crate::fault::{Fault, NodeRef};
use crate::world::{Ev, Model, NodeS, OpenMldb, Part, Pegasus, Rep, Replica, World, us};

/// Why a simulated cluster could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(String);

/// Builds simulated clusters.
///
/// Defaults (the `simulate` example's): Pegasus, seed 1, 6 data nodes, 3 coordinators for
/// Pegasus and 2 for OpenMLDB, 1 rack, random placement, 64 partitions, 3 replicas, the
/// flavor's [`Timings`], [`ClientLoad::default`], no faults.
///
/// # Examples
/// ```
/// use rollout_sim::{Flavor, Placement, SimBuilder};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let sim = SimBuilder::new(Flavor::Pegasus)
///     .data_nodes(9)
///     .racks(3)
///     .placement(Placement::RackAware)
///     .seed(42)
///     .build()
///     .unwrap();
/// assert_eq!(sim.node_count(), 9 + 3 + 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SimBuilder {
    flavor: Flavor,
    seed: u64,
    data_nodes: usize,
    coordinators: Option<usize>,
    racks: usize,
    placement: Placement,
    partitions: usize,
    tables: usize,
    replicas: usize,
    timings: Option<Timings>,
    load: ClientLoad,
    faults: Vec<Fault>,
    wake_hints: bool,
    time_scale: u32,
    version: String,
    knob_defaults: Vec<(String, String)>,
}

impl SimBuilder {
    /// A builder with the defaults for `flavor`.
    pub fn new(flavor: Flavor) -> Self {
        Self {
            flavor,
            seed: 1,
            data_nodes: 6,
            coordinators: None,
            racks: 1,
            placement: Placement::Random,
            partitions: 64,
            tables: 1,
            replicas: 3,
            timings: None,
            load: ClientLoad::default(),
            faults: Vec::new(),
            wake_hints: true,
            time_scale: 1,
            version: "1.0.0".into(),
            knob_defaults: Vec::new(),
        }
    }

    /// Whether the cluster's probes wake the engine at its next event (default true). Off,
    /// every wait ends only at the engine's next poll, as against a real cluster without
    /// watches: `lower_bound_secs` then moves away from `virtual_secs`.
    pub fn wake_hints(&mut self, on: bool) -> &mut Self {
        self.wake_hints = on;
        self
    }

    /// How many simulated seconds pass per second of the tokio clock (default 1). An
    /// emulator serving the world over real sockets runs on the wall clock and uses this to
    /// roll an hour-long cluster in minutes; with a paused clock it changes nothing but the
    /// units of the runtime's time. At most 10,000.
    pub fn time_scale(&mut self, scale: u32) -> &mut Self {
        self.time_scale = scale;
        self
    }

    /// The timings the cluster gets: those set, else the flavor's defaults.
    pub fn get_timings(&self) -> Timings {
        self.timings.clone().unwrap_or_else(|| match self.flavor {
            Flavor::Pegasus => Timings::pegasus(),
            Flavor::OpenMldb => Timings::openmldb(),
        })
    }

    /// The time scale.
    pub fn get_time_scale(&self) -> u32 {
        self.time_scale
    }

    /// The software version every node runs at the start (default `1.0.0`): an emulator
    /// sets the server version it speaks, and an upgrade moves a node to another.
    pub fn version(&mut self, version: &str) -> &mut Self {
        self.version = version.to_string();
        self
    }

    /// The software version every node runs at the start.
    pub fn get_version(&self) -> &str {
        &self.version
    }

    /// A knob's value in the coordinators' config, which a new leader starts from, instead
    /// of the flavor's (an emulated server version whose code default differs: Pegasus 2.4
    /// and 2.5 default `meta.lb.assign_delay_ms` to 300000, master to 600000).
    pub fn knob_default(&mut self, name: &str, value: &str) -> &mut Self {
        self.knob_defaults
            .push((name.to_string(), value.to_string()));
        self
    }

    /// The seed: the same seed gives the same run.
    pub fn seed(&mut self, seed: u64) -> &mut Self {
        self.seed = seed;
        self
    }

    /// Data nodes (replica servers or tablets).
    pub fn data_nodes(&mut self, n: usize) -> &mut Self {
        self.data_nodes = n;
        self
    }

    /// Coordinators (metas or nameservers).
    pub fn coordinators(&mut self, n: usize) -> &mut Self {
        self.coordinators = Some(n);
        self
    }

    /// Racks; data node `i` sits in rack `i mod racks`.
    pub fn racks(&mut self, n: usize) -> &mut Self {
        self.racks = n;
        self
    }

    /// How replicas are placed.
    pub fn placement(&mut self, p: Placement) -> &mut Self {
        self.placement = p;
        self
    }

    /// Partitions.
    pub fn partitions(&mut self, n: usize) -> &mut Self {
        self.partitions = n;
        self
    }

    /// Tables the partitions are split into, in contiguous runs (default 1). Table `k`
    /// (1-based) is named `t<k>`; its partitions are `<k>.<index>` (Pegasus app `k`) or
    /// `t<k>.<index>` (OpenMLDB).
    pub fn tables(&mut self, n: usize) -> &mut Self {
        self.tables = n;
        self
    }

    /// Replicas per partition.
    pub fn replicas(&mut self, n: usize) -> &mut Self {
        self.replicas = n;
        self
    }

    /// Overrides the flavor's timings.
    pub fn timings(&mut self, t: Timings) -> &mut Self {
        self.timings = Some(t);
        self
    }

    /// The client load.
    pub fn load(&mut self, load: ClientLoad) -> &mut Self {
        self.load = load;
        self
    }

    /// Adds a fault.
    pub fn fault(&mut self, f: Fault) -> &mut Self {
        self.faults.push(f);
        self
    }

    /// The client load.
    pub fn get_load(&self) -> &ClientLoad {
        &self.load
    }

    /// The flavor.
    pub fn get_flavor(&self) -> Flavor {
        self.flavor
    }

    /// The seed.
    pub fn get_seed(&self) -> u64 {
        self.seed
    }

    /// The faults.
    pub fn get_faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Data nodes.
    pub fn get_data_nodes(&self) -> usize {
        self.data_nodes
    }

    /// Partitions.
    pub fn get_partitions(&self) -> usize {
        self.partitions
    }

    /// Tables.
    pub fn get_tables(&self) -> usize {
        self.tables
    }

    /// Replicas per partition.
    pub fn get_replicas(&self) -> usize {
        self.replicas
    }

    fn check(&self) -> Result<usize, BuildError> {
        let err = |m: String| Err(BuildError(m));
        let coordinators = self.coordinators.unwrap_or(match self.flavor {
            Flavor::Pegasus => 3,
            Flavor::OpenMldb => 2,
        });
        if self.data_nodes == 0 {
            return err("a cluster needs at least 1 data node (--nodes)".into());
        }
        if self.data_nodes > 10_000 {
            return err(format!(
                "{} data nodes is more than the simulator's 10000",
                self.data_nodes
            ));
        }
        if coordinators == 0 || coordinators > 9 {
            return err(format!("coordinators must be 1 to 9, got {coordinators}"));
        }
        if self.partitions == 0 {
            return err("a cluster needs at least 1 partition (--partitions)".into());
        }
        if self.partitions > 1_000_000 {
            return err(format!(
                "{} partitions is more than the simulator's 1000000",
                self.partitions
            ));
        }
        if self.time_scale == 0 || self.time_scale > 10_000 {
            return err(format!(
                "the time scale must be 1 to 10000, got {}",
                self.time_scale
            ));
        }
        if self.tables == 0 || self.tables > self.partitions || self.tables > 10_000 {
            return err(format!(
                "tables must be 1 to the number of partitions ({}, at most 10000), got {}",
                self.partitions, self.tables
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return err(format!("replicas must be 1 to 5, got {}", self.replicas));
        }
        if self.replicas > self.data_nodes {
            return err(format!(
                "{} replicas need at least {} data nodes, got {}",
                self.replicas, self.replicas, self.data_nodes
            ));
        }
        if self.racks == 0 || self.racks > self.data_nodes {
            return err(format!(
                "racks must be 1 to the number of data nodes ({}), got {}",
                self.data_nodes, self.racks
            ));
        }
        if self.placement == Placement::RackAware && self.racks < self.replicas {
            return err(format!(
                "rack-aware placement of {} replicas needs at least {} racks, got {}",
                self.replicas, self.replicas, self.racks
            ));
        }
        if let Some(t) = &self.timings {
            t.check().map_err(BuildError)?;
        }
        let hour = std::time::Duration::from_secs(3600);
        if self.load.timeout > hour
            || self.load.retry.is_zero()
            || self.load.retry > self.load.timeout
        {
            return err(format!(
                "client timeout must be at most an hour and retry between 0 and the timeout, got {:?} and {:?}",
                self.load.timeout, self.load.retry
            ));
        }
        // The ledger keeps every acknowledged write on every replica (about 40 bytes each).
        if self.load.rate > 100_000 {
            return err(format!(
                "a rate of {} requests/s is more than the simulator's 100000",
                self.load.rate
            ));
        }
        for f in &self.faults {
            if let Some(r) = fault_node(f) {
                self.node_index(r, coordinators)?;
            }
        }
        Ok(coordinators)
    }

    fn node_index(&self, r: &NodeRef, coordinators: usize) -> Result<u32, BuildError> {
        match r {
            NodeRef::Data(n) if *n <= self.data_nodes => Ok((n - 1) as u32),
            NodeRef::Data(n) => Err(BuildError(format!(
                "fault names data node {n}, but the cluster has {}",
                self.data_nodes
            ))),
            NodeRef::Addr(a) => names(self.flavor, self.data_nodes, coordinators)
                .iter()
                .position(|(id, ..)| id.as_str() == a)
                .map(|i| i as u32)
                .ok_or_else(|| BuildError(format!("fault names unknown node {a}"))),
        }
    }

    /// Builds a cluster. Call it inside the tokio runtime that will drive it (with a paused
    /// clock for virtual time): its clock starts now.
    ///
    /// # Errors
    /// An impossible shape or a fault naming a node the cluster does not have.
    pub fn build(&self) -> Result<SimCluster, BuildError> {
        let coordinators = self.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5eed_0fc1_u64);
        let mut nodes: Vec<NodeS> = names(self.flavor, self.data_nodes, coordinators)
            .into_iter()
            .map(|(id, role, kind, rank, zone)| NodeS::new(id, role, kind, rank, zone))
            .collect();
        for (i, n) in nodes.iter_mut().enumerate().take(self.data_nodes) {
            n.zone = Some(zone_of(i, self.racks));
        }
        for n in &mut nodes {
            n.version.clone_from(&self.version);
        }
        let data: Vec<u32> = (0..self.data_nodes as u32).collect();
        let mut parts = Vec::with_capacity(self.partitions);
        for p in 0..self.partitions as u32 {
            let chosen: Vec<u32> = match self.placement {
                Placement::Random => {
                    let mut pick: Vec<u32> = data.clone();
                    let (head, _) = pick.partial_shuffle(&mut rng, self.replicas);
                    head.to_vec()
                }
                Placement::RackAware => {
                    let mut racks: Vec<usize> = (0..self.racks).collect();
                    let (head, _) = racks.partial_shuffle(&mut rng, self.replicas);
                    head.iter()
                        .map(|&r| {
                            let in_rack: Vec<u32> = data
                                .iter()
                                .copied()
                                .filter(|&n| n as usize % self.racks == r)
                                .collect();
                            in_rack[rng.random_range(0..in_rack.len())]
                        })
                        .collect()
                }
            };
            let primary = rng.random_range(0..chosen.len());
            let replicas = chosen
                .iter()
                .enumerate()
                .map(|(i, &node)| {
                    let role = if i == primary {
                        Rep::Primary
                    } else {
                        Rep::Secondary
                    };
                    Replica::new(node, role)
                })
                .collect();
            for &n in &chosen {
                nodes[n as usize].parts.push(p);
            }
            let table = (u64::from(p) * self.tables as u64 / self.partitions as u64) as u16;
            let first = (u64::from(table) * self.partitions as u64).div_ceil(self.tables as u64);
            parts.push(Part {
                replicas,
                table,
                index: p - first as u32,
                wanted: self.replicas as u8,
                healthy: false,
                ..Part::default()
            });
        }
        let knobs: BTreeMap<String, String> = match self.flavor {
            Flavor::Pegasus => [
                ("meta_level", "steady"),
                ("meta.lb.assign_delay_ms", "600000"),
                ("meta.lb.add_secondary_enable_flow_control", "false"),
                ("meta.lb.add_secondary_max_count_for_one_node", "10"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            Flavor::OpenMldb => [("auto_failover".to_string(), "true".to_string())].into(),
        };
        let mut knobs = knobs;
        knobs.extend(self.knob_defaults.iter().cloned());
        let timings = self
            .timings
            .clone()
            .unwrap_or_else(|| Timings::of(self.flavor));
        let model: Box<dyn Model> = match self.flavor {
            Flavor::Pegasus => Box::new(Pegasus::default()),
            Flavor::OpenMldb => Box::new(OpenMldb::new(
                timings.op_queues,
                timings.op_queues_max,
                nodes.len(),
            )),
        };
        let mut world = World::new(
            model,
            timings,
            self.load.clone(),
            self.seed,
            nodes,
            parts,
            knobs,
        );
        world.wake_hints = self.wake_hints;
        for f in &self.faults {
            let node = fault_node(f)
                .map(|r| self.node_index(r, coordinators))
                .transpose()?;
            let n = node.unwrap_or(0);
            match f {
                Fault::Crash { at, .. } => world.schedule(us(*at), Ev::Crash { node: n }),
                Fault::SlowStart { extra, .. } => world.nodes[n as usize].slow_start = us(*extra),
                Fault::FailStart { .. } => world.nodes[n as usize].fail_start = true,
                Fault::StuckDrain { .. } => world.nodes[n as usize].stuck_drain = true,
                Fault::LeaderFailover { at } => world.schedule(us(*at), Ev::LeaderFailover),
                Fault::Transient { p } => world.transient_p = *p,
                Fault::Partition { at, duration, .. } => world.schedule(
                    us(*at),
                    Ev::ContactLost {
                        node: n,
                        until: us(*at).saturating_add(us(*duration)),
                    },
                ),
                Fault::OrchestratorCrash { .. } => {}
            }
        }
        Ok(SimCluster::new(
            world,
            format!("sim-{}-{}", self.flavor, self.seed),
            u64::from(self.time_scale),
        ))
    }
}

fn fault_node(f: &Fault) -> Option<&NodeRef> {
    match f {
        Fault::Crash { node, .. }
        | Fault::SlowStart { node, .. }
        | Fault::FailStart { node }
        | Fault::StuckDrain { node }
        | Fault::Partition { node, .. } => Some(node),
        _ => None,
    }
}

type NodeName = (NodeId, &'static str, RoleKind, u32, Option<String>);

/// Every node of the cluster: data nodes first (so data node `i` is index `i`), then the
/// coordinators and the rest.
fn names(flavor: Flavor, data: usize, coordinators: usize) -> Vec<NodeName> {
    let mut out = Vec::new();
    let (data_role, data_port, data_rank) = match flavor {
        Flavor::Pegasus => ("replica", 34801, 0),
        Flavor::OpenMldb => ("tablet", 10921, 1),
    };
    for i in 0..data {
        out.push((
            NodeId::new(format!("{data_role}-{}:{data_port}", i + 1)),
            data_role,
            RoleKind::Data,
            data_rank,
            None,
        ));
    }
    match flavor {
        Flavor::Pegasus => {
            for i in 0..coordinators {
                out.push((
                    NodeId::new(format!("meta-{}:34601", i + 1)),
                    "meta",
                    RoleKind::Coordinator,
                    1,
                    None,
                ));
            }
            out.push((
                NodeId::new("collector-1:34101"),
                "collector",
                RoleKind::Stateless,
                2,
                None,
            ));
        }
        Flavor::OpenMldb => {
            for i in 0..coordinators {
                out.push((
                    NodeId::new(format!("ns-{}:9527", i + 1)),
                    "nameserver",
                    RoleKind::Coordinator,
                    0,
                    None,
                ));
            }
            out.push((
                NodeId::new("apiserver-1:9080"),
                "apiserver",
                RoleKind::Stateless,
                2,
                None,
            ));
            out.push((
                NodeId::new("taskmanager-1:9902"),
                "taskmanager",
                RoleKind::Coordinator,
                3,
                None,
            ));
        }
    }
    out
}

/// The rack of data node `index`.
fn zone_of(index: usize, racks: usize) -> String {
    format!("rack-{}", index % racks + 1)
}
