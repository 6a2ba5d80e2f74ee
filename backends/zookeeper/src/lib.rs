//! Rollout state in the cluster's own ZooKeeper: [`ZkJournal`], a
//! [`Journal`](rollout_core::Journal) whose entries and lock live under
//! `<cluster root>/rollout`, so that they outlive the orchestrator's host, and whose every
//! append is fenced by the lock.
//!
//! Layout, under the root given (Pegasus's `cluster_root`, OpenMLDB's `--zk_root_path`):
//!
//! - `rollout/lock-<seq>`: ephemeral sequential, one per orchestrator that asked; the lowest
//!   holds the lock, its data the owner (host, pid, start time, rollout). When the holder's
//!   session expires its node goes with it, and another orchestrator may resume or abort
//!   with no manual cleanup.
//! - `rollout/entries/e-<seq>`: persistent sequential, one JSON [`Entry`] each (well under
//!   ZooKeeper's 1 MB), in order.
//! - `rollout/summary`: the last entry, for people and `status`.
//!
//! Every append is one ZooKeeper transaction that checks this orchestrator's own lock node
//! and creates the entry; and right before each action on the cluster the engine asks
//! [`Journal::fence`](rollout_core::Journal::fence), a transaction that only checks the lock
//! node. An orchestrator whose session expired (paused past its timeout, cut off) can
//! record nothing more and, since every action waits for its check, does nothing more.
//!
//! While ZooKeeper cannot be reached (a lost connection, a server restarting), each request
//! is tried again for up to the session timeout: within it the session, and so the lock,
//! may still be alive, and the rollout goes on where it was. Past it the step fails, the
//! rollout stops, and the lock goes with the session; `status` and a resume or `abort` from
//! any host take it from there. An append retried after a lost connection is recorded once:
//! it sets the summary only at the version it last saw.
//!
//! `<root>/rollout` holds the name of the cluster it was made for
//! ([`ZkOptions::cluster`]); a journal opened for another cluster is refused.
//!
//! The client is async ([`zookeeper_client`]); [`Journal`](rollout_core::Journal) is not,
//! so the session lives on a thread of its own with its own runtime, and each call waits for
//! its answer (as a file journal waits for its fsync).
//!
//! ```no_run
//! use rollout_core::{Journal, NodeId, journal::Entry};
//! use rollout_zookeeper::{ZkJournal, ZkOptions};
//!
//! let journal = ZkJournal::connect(ZkOptions::new("10.0.0.1:2181", "/openmldb"))?;
//! journal.lock("restart of openmldb")?;
//! journal.append(&Entry::NodeDone { node: NodeId::new("10.0.0.7:10921") })?;
//! // Another host, later, sees who holds the lock and what was done.
//! println!("{:?}", journal.holder()?);
//! # Ok::<(), rollout_core::journal::JournalError>(())
//! ```
//!
//! [`Entry`]: rollout_core::journal::Entry

mod journal;
pub mod testing;

pub use journal::{LockOwner, ZkJournal, ZkOptions};
