//! OpenMLDB backend for rollout: the parts that talk to a real cluster.
//!
//! - [`zk`]: discovery through the cluster's ZooKeeper (nameserver leader candidates, tablets,
//!   `auto_failover`, the taskmanager), with watches as wake hints.
//! - [`api`]: the nameserver's and tablets' RPCs over brpc's HTTP/JSON mapping, with the
//!   return codes the backend acts on.
//! - [`flags`]: the servers' flag files and the taskmanager's properties, edited keeping
//!   comments and order.
//! - [`OpenMldbError`]: every failure names the server and the RPC, with its
//!   [`ErrorClass`](rollout_core::ErrorClass).
//!
//! The `OpenMldbCluster` control plane, its emulator and the `openmldb` reference binary
//! build on these (issue 10; see ARCHITECTURE.md). The zero-loss leader move they implement,
//! and why it is safe, is in docs/openmldb-fences.md.

pub mod api;
mod cluster;
mod error;
mod fence;
pub mod flags;
mod recover;
mod snapshot;
mod steps;
mod unfence;
pub mod version;
mod view;
pub mod zk;

pub use cluster::{Config, NodeFactory, OpenMldbCluster, OpenMldbNode, Others, Timing};
pub use error::OpenMldbError;
pub use version::ServerVersion;
