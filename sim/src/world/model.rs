//! The seam between the shared kernel and a flavor's control plane.
//!
//! The kernel ([`World`]) owns time, processes, failure detection, partitions and their
//! replicas, the clients and the ledger. A [`Model`] owns what one upstream system adds: its
//! coordinator's decisions (Pegasus's meta: proposals, promotion, cure; OpenMLDB's
//! nameserver: op queues, auto failover), its own state and its own events. The kernel calls
//! a model only from its event loop and from the cluster's control calls, never from a
//! function a model itself calls, so a model may use any kernel helper. A new flavor is a new
//! `Model`; it touches neither the kernel nor the other flavors.

use std::any::Any;

use rollout_core::{Health, Knob, Procedure};

use super::World;
use crate::config::Flavor;

/// A model's own scheduled event: a code the model defines and three operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ModelEv {
    pub(crate) code: u8,
    pub(crate) a: u32,
    pub(crate) b: u64,
    pub(crate) c: u64,
}

/// What the kernel needs to know of a flavor up front.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Profile {
    /// Which system this models, for reports.
    pub(crate) flavor: Flavor,
    /// Writes need the primary and this many serving members at most (fewer when the table
    /// has fewer replicas): PacificA's `mutation_2pc_min_replica_count` 2; OpenMLDB's leader
    /// alone, 1.
    pub(crate) write_quorum: usize,
    /// Every member has a write before it is acknowledged (PacificA); otherwise followers
    /// receive it after the replication lag.
    pub(crate) synchronous: bool,
    /// A data node whose coordinator is silent for the lease drops its replicas (Pegasus
    /// `fd_lease_seconds`).
    pub(crate) lease_drops_replicas: bool,
    /// A data node's process keeps its data across a restart (Pegasus: on disk); otherwise its
    /// replicas must be reloaded (OpenMLDB memory tables).
    pub(crate) data_survives_restart: bool,
    /// A data node started before the coordinator saw it offline exits (OpenMLDB's
    /// ZNODEEXISTS, issue #2439).
    pub(crate) early_start_exits: bool,
    /// What comes before the table number in a partition id (`1.5` is app 1 partition 5 for
    /// Pegasus, `t1.5` table t1 partition 5 for OpenMLDB).
    pub(crate) partition_prefix: &'static str,
    /// Members a partition needs to keep serving (core `Topology::min_serving`).
    pub(crate) min_serving: u32,
    /// The config files its servers read.
    pub(crate) config_files: &'static [&'static str],
}

/// A flavor's control plane; see the module docs.
pub(crate) trait Model: Send + std::fmt::Debug + 'static {
    fn profile(&self) -> Profile;

    /// The knobs a rollout of `procedure` holds.
    fn knobs(&self, procedure: Procedure) -> Vec<Knob>;

    /// Called once the world is built (schedule the first tick, ...).
    fn start(&mut self, w: &mut World);

    /// One of the model's own events is due.
    fn on_event(&mut self, w: &mut World, ev: ModelEv);

    /// A data node's process is gone (it served until now).
    fn data_node_gone(&mut self, w: &mut World, node: u32);

    /// The coordinator declared a data node dead (Pegasus) or offline (OpenMLDB).
    fn data_node_detected(&mut self, w: &mut World, node: u32);

    /// A data node attached again; `fresh_start` when its process restarted since it last
    /// attached.
    fn data_node_registered(&mut self, w: &mut World, node: u32, fresh_start: bool);

    /// A coordinator leader was elected.
    fn leader_elected(&mut self, w: &mut World);

    /// The rollout's drain of a data node that is not draining yet (the cluster checks).
    fn drain(&mut self, w: &mut World, node: u32);

    /// The rollout's rejoin of a data node that serves again.
    fn rejoin(&mut self, w: &mut World, node: u32);

    /// The most data nodes the coordinator tolerates down at once, with why (core
    /// `Cluster::data_down_limit`).
    fn data_down_limit(&self, w: &World) -> Option<(usize, String)>;

    /// Repairs what the rollout's knobs kept the coordinator from repairing by itself, once
    /// they are released (core `Cluster::heal`).
    fn heal(&mut self, w: &mut World);

    /// Whether the drain of a data node has taken effect (reasons only when `describe`).
    fn drained(&self, w: &World, node: u32, describe: bool) -> Health;

    /// Work the coordinator still has queued or running for `node` (or for any node),
    /// described; `None` when there is none.
    fn pending(&self, w: &World, node: Option<u32>) -> Option<String>;

    /// What keeps a stopped data node from counting as stopped, if anything.
    fn stopped(&self, w: &World, node: u32) -> Option<String>;

    /// A cluster-wide reason the cluster is not healthy that the kernel cannot see.
    fn cluster_health(&self, w: &World) -> Option<Health>;

    /// Whether the system adds temporary replicas (OpenMLDB AddReplicaNS); the others
    /// refuse single-replica partitions unless their table's downtime is accepted.
    fn temporary_replicas(&self) -> bool {
        false
    }

    /// Whether data node `node` is loading its replica of partition `part` now, and if so
    /// whether as the partition's leader: OpenMLDB's tablet holds the table in `kLoading`
    /// while an op's LoadTable runs. `None` when no load runs there.
    fn loading(&self, part: u32, node: u32) -> Option<bool> {
        let _ = (part, node);
        None
    }

    /// The rollout adds a replica of `part` on `node` (idempotent).
    fn add_replica(&mut self, w: &mut World, part: u32, node: u32) {
        let _ = (w, part, node);
    }

    /// The rollout removes the replica of `part` on `node`, its leadership first handed to
    /// the replica on `back` (idempotent).
    fn remove_replica(&mut self, w: &mut World, part: u32, node: u32, back: u32) {
        let _ = (w, part, node, back);
    }

    /// Whether the replica of `part` on `node` has caught up (`removed` false) or is gone
    /// with the partition led again (`removed` true).
    fn temporary(&self, w: &World, part: u32, node: u32, removed: bool) -> Health {
        let _ = (w, part, node, removed);
        Health::failed("this system has no temporary replicas")
    }

    fn as_any_mut(&mut self) -> &mut dyn Any;
}
