//! What to roll and how: [`Spec`], [`Selection`] and [`Policy`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Procedure;
use crate::model::{Change, NodeId};

/// What the policy does when a wait passes its deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Restore knobs and stop with an error. The default.
    #[default]
    Abort,
    /// Keep the journal and the wave's nodes as they are and return a halted report (the
    /// knobs that keep the cluster from healing are released meanwhile, and held again by the
    /// resume; the others are kept), so that an
    /// operator can look and then resume (or abort) from the journal.
    Pause,
    /// Leave the node as it is and go on with the next, but only while the node has not been
    /// stopped yet (the gate, drain and quiesce waits); later it aborts.
    Skip,
}

/// How long each wait may go without progress ([`wait_until`](crate::wait::wait_until)): a wait
/// that keeps giving new reasons (ops done, replicas back) runs on, however long its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Deadlines {
    /// The safety gate before a node. Default 10 min.
    pub gate: Duration,
    /// The drain. Default 5 min.
    pub drain: Duration,
    /// The quiesce. Default 5 min.
    pub quiesce: Duration,
    /// The stop. Default 2 min.
    pub stop: Duration,
    /// The start until the node is attached again. Default 30 min (log replay can be long).
    pub ready: Duration,
    /// The rejoin. Default 30 min.
    pub rejoin: Duration,
    /// Full health after a node. Default 60 min.
    pub healthy: Duration,
    /// A temporary replica's snapshot copy and catch-up, and its removal. Default 30 min.
    pub temporary: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            gate: Duration::from_secs(600),
            drain: Duration::from_secs(300),
            quiesce: Duration::from_secs(300),
            stop: Duration::from_secs(120),
            ready: Duration::from_secs(1800),
            rejoin: Duration::from_secs(1800),
            healthy: Duration::from_secs(3600),
            temporary: Duration::from_secs(1800),
        }
    }
}

impl Deadlines {
    /// Every deadline set to `d`; handy in tests.
    pub fn all(d: Duration) -> Self {
        Self {
            gate: d,
            drain: d,
            quiesce: d,
            stop: d,
            ready: d,
            rejoin: d,
            healthy: d,
            temporary: d,
        }
    }
}

/// The rules of a rollout.
///
/// Defaults: `max_parallel` 1 (exactly the upstream procedures), `max_unavailable_per_partition`
/// 1, the high-availability procedure, [`Deadlines::default`], abort on timeout, no canary,
/// polls from 100 ms growing to 1 s, 16 retries of transient control-plane errors
/// (backing off from the poll minimum to 5 s; not-safe-yet errors are retried for as long as
/// the gate deadline). A single-replica partition gets a temporary replica where the backend
/// can add one ([`crate::TemporaryReplica`]); no table's downtime is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    max_parallel: usize,
    max_unavailable: usize,
    procedure: Procedure,
    deadlines: Deadlines,
    on_timeout: OnTimeout,
    canary: Option<usize>,
    poll_min: Duration,
    poll_max: Duration,
    retries: usize,
    #[serde(default)]
    accept_unavailable: Vec<String>,
    #[serde(default = "yes")]
    temporary_replicas: bool,
    #[serde(default)]
    temporary_replica_limit: Option<usize>,
}

fn yes() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_parallel: 1,
            max_unavailable: 1,
            procedure: Procedure::HighAvailability,
            deadlines: Deadlines::default(),
            on_timeout: OnTimeout::Abort,
            canary: None,
            poll_min: Duration::from_millis(100),
            poll_max: Duration::from_secs(1),
            retries: 16,
            accept_unavailable: Vec::new(),
            temporary_replicas: true,
            temporary_replica_limit: None,
        }
    }
}

impl Policy {
    /// How many data nodes may restart together in one wave (at least 1).
    #[must_use]
    pub fn max_parallel(mut self, n: usize) -> Self {
        self.max_parallel = n;
        self
    }

    /// How many replicas of one partition may be down at once, counting those already down
    /// (at least 1).
    #[must_use]
    pub fn max_unavailable_per_partition(mut self, n: usize) -> Self {
        self.max_unavailable = n;
        self
    }

    /// Which steps run for each node.
    #[must_use]
    pub fn procedure(mut self, p: Procedure) -> Self {
        self.procedure = p;
        self
    }

    /// How long each wait may take.
    #[must_use]
    pub fn deadlines(mut self, d: Deadlines) -> Self {
        self.deadlines = d;
        self
    }

    /// What to do when a wait passes its deadline.
    #[must_use]
    pub fn on_timeout(mut self, t: OnTimeout) -> Self {
        self.on_timeout = t;
        self
    }

    /// Stop (halted, knobs restored) after this many nodes have been rolled; resume later
    /// from the journal.
    #[must_use]
    pub fn canary(mut self, nodes: usize) -> Self {
        self.canary = Some(nodes);
        self
    }

    /// The poll interval of every wait: starts at `min`, grows to `max`.
    #[must_use]
    pub fn poll(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min;
        self.poll_max = max;
        self
    }

    /// How many times a transient control-plane error is retried.
    #[must_use]
    pub fn retries(mut self, n: usize) -> Self {
        self.retries = n;
        self
    }

    /// Accepts that the partitions of these tables (by name, as the backend reports
    /// [`Partition::table`](crate::Partition::table)) are unavailable while a node that holds
    /// their only serving replicas restarts: OpenMLDB's `--allow_single_replica`, and the
    /// only way to roll a Pegasus table with fewer than 3 replicas. The plan lists each
    /// table with the nodes that take it down. A name the cluster does not have is refused
    /// before anything is touched.
    #[must_use]
    pub fn accept_unavailable<S: Into<String>>(
        mut self,
        tables: impl IntoIterator<Item = S>,
    ) -> Self {
        self.accept_unavailable = tables.into_iter().map(Into::into).collect();
        self
    }

    /// Whether single-replica partitions get a temporary replica on another data node while
    /// their node restarts (default `true`; used only where the backend can add one, see
    /// [`Cluster::temporary_replicas`](crate::Cluster::temporary_replicas)).
    /// With `false`, such partitions block their node unless their table is accepted.
    #[must_use]
    pub fn temporary_replicas(mut self, on: bool) -> Self {
        self.temporary_replicas = on;
        self
    }

    /// The most temporary replicas one node holds at once (each costs it the memory of one
    /// partition). Without a limit they spread evenly.
    #[must_use]
    pub fn temporary_replica_limit(mut self, per_node: usize) -> Self {
        self.temporary_replica_limit = Some(per_node);
        self
    }

    /// The tables whose downtime is accepted.
    pub fn get_accept_unavailable(&self) -> &[String] {
        &self.accept_unavailable
    }

    /// Whether temporary replicas are allowed.
    pub fn get_temporary_replicas(&self) -> bool {
        self.temporary_replicas
    }

    /// The per-node limit on temporary replicas, if any.
    pub fn get_temporary_replica_limit(&self) -> Option<usize> {
        self.temporary_replica_limit
    }

    /// Checks that the policy does not contradict itself.
    ///
    /// # Errors
    /// The first setting that is out of range, as a [`PolicyError`] naming it and what it
    /// must be.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_parallel == 0 {
            return Err(PolicyError::MaxParallelZero);
        }
        if self.max_unavailable == 0 {
            return Err(PolicyError::MaxUnavailableZero);
        }
        if self.temporary_replica_limit == Some(0) {
            return Err(PolicyError::TemporaryReplicaLimitZero);
        }
        if let Some(t) = self.accept_unavailable.iter().find(|t| t.trim().is_empty()) {
            return Err(PolicyError::EmptyAcceptedTable(t.clone()));
        }
        if self.canary == Some(0) {
            return Err(PolicyError::CanaryZero);
        }
        if self.poll_min.is_zero() || self.poll_min > self.poll_max {
            return Err(PolicyError::PollBounds {
                min: self.poll_min,
                max: self.poll_max,
            });
        }
        let d = &self.deadlines;
        for (name, v) in [
            ("gate", d.gate),
            ("drain", d.drain),
            ("quiesce", d.quiesce),
            ("stop", d.stop),
            ("ready", d.ready),
            ("rejoin", d.rejoin),
            ("healthy", d.healthy),
            ("temporary", d.temporary),
        ] {
            if v.is_zero() {
                return Err(PolicyError::DeadlineZero(name));
            }
        }
        if self.procedure == Procedure::Simple && self.on_timeout == OnTimeout::Skip {
            return Err(PolicyError::SkipNeedsHighAvailability);
        }
        Ok(())
    }

    /// The wave size limit.
    pub fn get_max_parallel(&self) -> usize {
        self.max_parallel
    }

    /// The per-partition unavailability limit.
    pub fn get_max_unavailable(&self) -> usize {
        self.max_unavailable
    }

    /// The procedure.
    pub fn get_procedure(&self) -> Procedure {
        self.procedure
    }

    /// The deadlines.
    pub fn get_deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// The timeout policy.
    pub fn get_on_timeout(&self) -> OnTimeout {
        self.on_timeout
    }

    /// The canary size, if any.
    pub fn get_canary(&self) -> Option<usize> {
        self.canary
    }

    /// The shortest and longest poll interval of a wait.
    pub fn poll_bounds(&self) -> (Duration, Duration) {
        (self.poll_min, self.poll_max)
    }

    /// How many times a transient error is retried.
    pub fn get_retries(&self) -> usize {
        self.retries
    }
}

/// Which nodes a rollout covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "names", rename_all = "snake_case")]
pub enum Selection {
    /// Every node of the cluster.
    #[default]
    All,
    /// These nodes.
    Nodes(Vec<NodeId>),
    /// Every node of these roles.
    Roles(Vec<String>),
}

/// One rollout: a change, the nodes it applies to and the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Spec {
    /// What to apply.
    pub change: Change,
    /// To which nodes.
    pub selection: Selection,
    /// Under which rules.
    pub policy: Policy,
}

impl Spec {
    /// A rollout of `change` to every node with the default policy.
    pub fn new(change: Change) -> Self {
        Self {
            change,
            selection: Selection::All,
            policy: Policy::default(),
        }
    }

    /// Restricts the rollout to `selection`.
    #[must_use]
    pub fn selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// Sets the policy.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}

/// A policy that contradicts itself, or that names what the cluster does not have
/// ([`Policy::validate`], [`check_accepted`](crate::replicas::check_accepted)); nothing was
/// touched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// `max_parallel` is 0.
    #[error("max_parallel must be at least 1")]
    MaxParallelZero,
    /// `max_unavailable_per_partition` is 0.
    #[error("max_unavailable_per_partition must be at least 1")]
    MaxUnavailableZero,
    /// `temporary_replica_limit` is 0.
    #[error(
        "temporary_replica_limit must be at least 1 (turn temporary replicas off with \
         temporary_replicas(false) instead)"
    )]
    TemporaryReplicaLimitZero,
    /// `accept_unavailable` names an empty (or blank) table.
    #[error("accept_unavailable names an empty table {0:?}")]
    EmptyAcceptedTable(String),
    /// `canary` is 0.
    #[error("canary must stop after at least 1 node")]
    CanaryZero,
    /// The poll interval's bounds are not `0 < min <= max`.
    #[error("poll interval must satisfy 0 < min <= max, got {min:?}..{max:?}")]
    PollBounds {
        /// The shortest poll interval.
        min: Duration,
        /// The longest poll interval.
        max: Duration,
    },
    /// A deadline is zero: `gate`, `drain`, `quiesce`, `stop`, `ready`, `rejoin`, `healthy`
    /// or `temporary`.
    #[error("the {0} deadline must be longer than zero")]
    DeadlineZero(&'static str),
    /// `on_timeout` skip with the simple procedure.
    #[error(
        "on_timeout skip needs the high-availability procedure: the simple one has no step \
         before the stop where skipping is safe"
    )]
    SkipNeedsHighAvailability,
    /// `accept_unavailable` names a table the cluster does not have.
    #[error("accept_unavailable names table {table:?}, {}", unknown_table(.known))]
    UnknownAcceptedTable {
        /// The name.
        table: String,
        /// The tables the cluster's control plane names (none: it names no tables).
        known: Vec<String>,
    },
}

fn unknown_table(known: &[String]) -> String {
    if known.is_empty() {
        "but this cluster's control plane names no tables".into()
    } else {
        format!(
            "which the cluster does not have (tables: {})",
            known.join(", ")
        )
    }
}
