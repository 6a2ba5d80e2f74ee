//! Roll a replicated database cluster one safe step at a time.
//!
//! `rollout-core` holds the model ([`Topology`], [`Change`], [`Knob`], [`Health`]), the traits a
//! backend implements ([`Cluster`], [`Node`], [`HealthProbe`]), the planner ([`plan()`],
//! [`wave_is_safe`]), the engine ([`roll`], [`abort`]), the [`Journal`] and the typed
//! [`Event`]s.
//! It does no network IO and never spawns tasks: every wait runs in the caller's task on tokio
//! time, so the simulator (`rollout-sim`) drives it in virtual time, and cancelling is dropping
//! the future.
//! [`BoxCluster`] rolls a backend picked at run time; [`Control`] pauses, resumes or cancels a
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
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod cluster;
mod control;
mod engine;
mod erased;
mod error;
mod event;
mod journal;
mod model;
mod plan;
mod policy;
mod probe;
mod wait;

pub use cluster::{Cluster, ErrorClass, Node, Procedure};
pub use control::Control;
pub use engine::{Outcome, Report, Run, abort, chain, plan, roll};
pub use erased::{
    BoxCluster, BoxFuture, BoxNode, BoxProbe, DynCluster, DynError, DynNode, DynProbe, Which,
};
pub use error::{Error, Phase, Result, Target};
pub use event::{Event, Ignore, Observer, RESUMED_WAVE};
pub use journal::{Entry, FileJournal, InFlight, Journal, JournalError, MemoryJournal, Resume};
pub use model::{
    ApplyRecord, Change, ConfigEdit, Health, Knob, KnobScope, NodeId, NodeInfo, NodeStatus,
    Partition, Replica, ReplicaRole, Role, RoleKind, Topology,
};
pub use plan::{
    Blocked, Plan, PlannedKnob, SelectionError, Wave, build_waves, build_waves_limited,
    outside_failure, outside_node_failure, resolve_selection, steps, steps_for, warnings,
    wave_is_safe,
};
pub use policy::{Deadlines, OnTimeout, Policy, Selection, Spec};
pub use probe::{And, HealthProbe, Or, ProbeFn, probe_fn, probes};
pub use wait::{PROGRESS_CAP, WaitError, wait_until};
