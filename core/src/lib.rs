//! Roll a replicated database cluster one safe step at a time.
//!
//! `rollout-core` holds the model ([`Topology`], [`Change`], [`Knob`], [`Health`]), the traits a
//! backend implements ([`Cluster`], [`Node`], [`HealthProbe`]), the planner ([`plan()`],
//! [`plan::wave_is_safe`]), the engine ([`roll`], [`abort`]), the [`Journal`] and the typed
//! [`Event`]s.
//! It does no network IO and never spawns tasks: every wait runs in the caller's task on tokio
//! time, so the simulator (`rollout-sim`) drives it in virtual time, and cancelling is dropping
//! the future.
//! [`erased::BoxCluster`] rolls a backend picked at run time; [`Control`] pauses, resumes or cancels a
//! running rollout; [`FileJournal`] survives a crash of the orchestrator.
//!
//! # Examples
//!
//! Roll a simulated six-node Pegasus cluster with the high-availability procedure:
//!
//! ```
//! use rollout_core::{Change, MemoryJournal, Run, Spec, roll, Outcome};
//! use rollout_sim::{Flavor, SimBuilder};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let sim = SimBuilder::new(Flavor::Pegasus).seed(7).build().unwrap();
//! let journal = MemoryJournal::new();
//! let report = roll(&sim, &Spec::new(Change::Restart), Run::new(&journal))
//!     .await
//!     .unwrap();
//! assert_eq!(report.outcome, Outcome::Completed);
//! assert!(report.knobs_restored);
//! # }
//! ```
//!
//! # Writing a backend
//!
//! A backend implements two traits; `examples/memstore.rs` (`cargo run --example memstore`)
//! is a complete one, a leader/follower store in memory, written from this API alone.
//!
//! 1. **An error type** and [`Cluster::classify`]: transient errors (a timeout, "not the
//!    leader") are retried with backoff, not-safe-yet ones (no leader yet, frozen) are waited
//!    out, anything else stops the rollout with its knobs restored.
//! 2. **[`Cluster::topology`]**: the nodes ([`NodeInfo::new`] with a [`Role`] whose
//!    [`RoleKind`] says how the engine treats it) and the partitions ([`Partition::new`],
//!    [`Replica::new`]), with [`Topology::min_serving`]. The placement rule runs on it, so
//!    `alive` must mean "serves now". [`Cluster::nodes`] is worth a cheaper answer on a large
//!    cluster: the engine reads it at every check of a wait.
//! 3. **Knobs**: [`Cluster::knobs`] lists the temporary settings ([`Knob::rollout`],
//!    [`Knob::wave`]; wave knobs are always released while the cluster heals a failure, and
//!    a rollout knob too when marked [`Knob::blocks_healing`]); [`Cluster::read_knob`] and
//!    [`Cluster::write_knob`]. The engine journals, sets, verifies and restores them.
//! 4. **Steps, each with its probe**: [`Cluster::drain`] / `drained` (data nodes and
//!    coordinators), `quiesce` / `quiesced` (data nodes), `ready` (every node), `rejoin` /
//!    `rejoined` (every node, again after a restart on its own, and as the undo of a drain on
//!    a node that was not stopped: make it idempotent), `fully_healthy` and `safe_to_stop`.
//!    [`Cluster::name`] (a stable identity for the journal) and [`Cluster::node`] (a
//!    process handle) are required too. Every other method has a default: `nodes`,
//!    `topology_around`, `down_outside`, `unserving_outside`, `stopped`, `heal`, `settle`,
//!    `data_down_limit`, `temporary_replicas` (none), `check_change` (refuse, as a
//!    [`ChangeError`], what the backend cannot apply) and `classify` (all fatal).
//!    Probes answer [`Health`]: build one from an async closure with [`probe::probe_fn`], or
//!    take a ready one from [`probe::probes`] (`always`, `topology_fully_healthy`); a
//!    `Waiting` reason should change only when something moved, since a deadline is a window
//!    without progress ([`wait::wait_until`]).
//!    Name each partition's table ([`Partition::table`]) so that operators can accept a
//!    table's downtime by name. A backend that can copy a partition to another node
//!    (OpenMLDB AddReplicaNS) implements [`TemporaryReplicas`] and hands it out from
//!    [`Cluster::temporary_replicas`]; then single-replica partitions keep serving while
//!    their node restarts ([`TemporaryReplica`]).
//! 5. **[`Node`]**: `stop`, `start`, `status` ([`NodeStatus::running`] with a boot id that
//!    changes on every start, and [`NodeStatus::exited`] when the process died), `apply`
//!    (returns an [`ApplyRecord`]; called again after a crash, it keeps the first backup),
//!    `revert` and `is_applied` (asked after every restart too: `false` fails the rollout).
//!    A backend that takes its process handles from the operator (ssh, an agent, an
//!    emulator) is built with a [`NodeFactory`] (a closure is one) and hands out each as a
//!    [`MappedNode`], whose errors become the backend's own.
//! 6. **Check it**: `rollout_sim::conformance::check_cluster(&cluster)` (add `rollout-sim`
//!    as a dev-dependency) runs the contract: it drains, stops, changes, reverts and restarts
//!    a data node and writes knobs back, so run it against an emulator or a test cluster,
//!    never a production one; then [`roll`].
//!
//! # Where things are
//!
//! The crate root holds what a backend author and an embedder use: the traits, the model,
//! [`roll`], [`plan()`], [`abort`], [`Spec`], [`Policy`], [`Run`], [`Report`], [`Error`], the
//! journals and the events. The rest is in its module: the plan's parts and the placement
//! rule ([`plan`](mod@plan)), the journal's entries ([`journal`]), probe combinators ([`probe`]), the
//! wait ([`wait`]), the policy's parts ([`policy`]), the per-node steps ([`steps`]), the
//! temporary-replica placement ([`replicas`]), the drains a plan shows ([`drains`]), the
//! type-erased cluster ([`erased`]), errors' parts ([`error`]), events' ([`event`]) and the
//! config-file editors a backend applies a [`Change::Config`] with ([`conf`]).
//!
//! The model types are non-exhaustive and built through constructors, so that a field added
//! later breaks no backend:
//!
//! ```
//! use rollout_core::plan::wave_is_safe;
//! use rollout_core::{NodeId, NodeInfo, Partition, Replica, ReplicaRole, Role, RoleKind, Topology};
//!
//! let data = Role::new("store", RoleKind::Data, 0);
//! let nodes = ["a:1", "b:1", "c:1"].map(|n| NodeInfo::new(n, data.clone())).to_vec();
//! let p = Partition::new("t.0", 3, vec![
//!     Replica::new("a:1", ReplicaRole::Primary),
//!     Replica::new("b:1", ReplicaRole::Secondary),
//!     Replica::new("c:1", ReplicaRole::Secondary),
//! ]);
//! let topology = Topology::new(nodes, vec![p]).min_serving(2);
//! assert!(wave_is_safe(&topology, &[NodeId::new("a:1")], 1).is_ok());
//! assert!(wave_is_safe(&topology, &[NodeId::new("a:1"), NodeId::new("b:1")], 1).is_err());
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod cluster;
pub mod conf;
mod control;
pub mod drains;
mod engine;
pub mod erased;
pub mod error;
pub mod event;
mod factory;
pub mod journal;
mod model;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod replicas;
mod safety;
pub mod steps;
pub mod wait;
mod wave;

pub use cluster::{Cluster, ErrorClass, Node, TemporaryReplicas};
pub use control::Control;
pub use engine::{Outcome, Report, Run, abort, plan, roll};
pub use error::{Error, Phase, Result, chain};
pub use event::{Event, Observer};
pub use factory::{MappedNode, NodeErrorOf, NodeFactory};
pub use journal::{FileJournal, Journal, MemoryJournal};
pub use model::{
    ApplyRecord, Change, ChangeError, ConfigEdit, Health, Knob, KnobScope, NodeId, NodeInfo,
    NodeStatus, Partition, Procedure, Replica, ReplicaRole, Role, RoleKind, Topology,
};
pub use policy::{Policy, Spec};
pub use probe::HealthProbe;
pub use replicas::TemporaryReplica;
