//! A deterministic simulated Pegasus or OpenMLDB cluster in virtual time, for rollout.
//!
//! [`SimBuilder`] builds a [`SimCluster`] that implements the core [`Cluster`] trait over an
//! in-memory world driven by tokio's clock: under a paused clock a simulated hour takes
//! milliseconds, and the same seed replays the same run.
//! One kernel (events, processes, failure detection by beacons, clients, a ledger of every
//! acknowledged write) serves a model per flavor: Pegasus's meta (PacificA, proposals run at
//! the lb tick with their reconfiguration windows, promotion, cure under flow control) and
//! OpenMLDB's nameserver (op queues, unfenced ChangeLeader, RecoverTable, auto failover).
//! Its monitor records what clients saw ([`Truth`]): failed requests, lost writes from the
//! ledger, unavailability, latency per request, and the engine's idle time.
//! [`simulate`] runs one rollout with a [`Strategy`] (the core engine's `naive`, `ha` and
//! `waves`, or `script`, the upstream tools as they behave) and returns the [`SimReport`]
//! that the `simulate` example prints; [`CrashJournal`] drops a rollout at a chosen journal record, for
//! resume tests; [`conformance::check_cluster`] is the contract suite for any backend.
//!
//! # Examples
//! ```
//! use rollout_core::{Change, event::Ignore};
//! use rollout_sim::{Flavor, SimBuilder, Strategy, simulate};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let builder = SimBuilder::new(Flavor::Pegasus).seed(7).clone();
//! let spec = Strategy::Ha.spec(Change::Restart, builder.get_data_nodes());
//! let (_, report) = simulate(&builder, Strategy::Ha, &spec, &Ignore)
//! .await
//! .unwrap();
//! assert!(report.completed);
//! assert_eq!(report.requests_failed, 0);
//! assert_eq!(report.max_replicas_down, 1);
//! # }
//! ```
//!
//! [`Cluster`]: rollout_core::Cluster
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod bound;
mod builder;
mod cluster;
mod config;
pub mod conformance;
mod crash;
pub mod emulation;
pub mod emulation_openmldb;
mod emulation_openmldb_puts;
mod fault;
mod monitor;
mod node;
mod probe;
mod run;
mod script;
mod world;

pub use builder::{BuildError, SimBuilder};
pub use cluster::{SimCluster, SimError, Truth};
pub use config::{ClientLoad, Flavor, Placement, Timings};
pub use crash::CrashJournal;
pub use fault::{Fault, NodeRef};
pub use monitor::Monitor;
pub use node::SimNode;
pub use run::{SimReport, Strategy, report_of, simulate};
