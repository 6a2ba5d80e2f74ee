//! The core error, generic over the backend's error.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journal::JournalError;
use crate::model::NodeId;
pub use crate::policy::PolicyError;

/// A step of a rollout, named in errors, events and the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Reading the topology and building the plan.
    Plan,
    /// Saving, setting and verifying knobs.
    Guard,
    /// The safety gate before a node: fully healthy, safe to stop, placement re-checked.
    Gate,
    /// Adding temporary replicas of single-replica partitions.
    AddReplica,
    /// Waiting until the temporary replicas have caught up.
    WaitReplica,
    /// Moving primaries and leaderships away.
    Drain,
    /// Waiting for the drain to take effect.
    WaitDrained,
    /// Flushing so that the restart replays little.
    Quiesce,
    /// Waiting for the quiesce to take effect.
    WaitQuiesced,
    /// Stopping the process.
    Stop,
    /// Waiting for the process to stop.
    WaitStopped,
    /// Applying the change.
    Apply,
    /// Starting the process.
    Start,
    /// Waiting for the process to run and attach to the control plane.
    WaitReady,
    /// Giving the node its replicas back.
    Rejoin,
    /// Waiting for the rejoin to take effect.
    WaitRejoined,
    /// Waiting for the whole cluster to be fully healthy.
    WaitHealthy,
    /// Removing temporary replicas once their node serves again.
    RemoveReplica,
    /// Putting knobs back to their original values.
    Restore,
    /// Reverting a change that did not come up.
    Revert,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Plan => "plan",
            Self::Guard => "guard",
            Self::Gate => "gate",
            Self::AddReplica => "add replica",
            Self::WaitReplica => "wait replica",
            Self::RemoveReplica => "remove replica",
            Self::Drain => "drain",
            Self::WaitDrained => "wait drained",
            Self::Quiesce => "quiesce",
            Self::WaitQuiesced => "wait quiesced",
            Self::Stop => "stop",
            Self::WaitStopped => "wait stopped",
            Self::Apply => "apply",
            Self::Start => "start",
            Self::WaitReady => "wait ready",
            Self::Rejoin => "rejoin",
            Self::WaitRejoined => "wait rejoined",
            Self::WaitHealthy => "wait healthy",
            Self::Restore => "restore",
            Self::Revert => "revert",
        };
        f.write_str(s)
    }
}

/// Shows a node for messages, or `cluster` for cluster-wide steps.
#[derive(Debug)]
pub(crate) struct Target<'a>(pub(crate) &'a Option<NodeId>);

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(node) => write!(f, "node {node}"),
            None => f.write_str("the cluster"),
        }
    }
}

/// What went wrong in a rollout. Every variant that happens during a run names the node
/// (or the cluster) and the phase; the backend's error is the `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E: std::error::Error + 'static> {
    /// The policy contradicts itself; nothing was touched.
    #[error("invalid policy: {0}")]
    InvalidPolicy(PolicyError),
    /// The selection is empty; nothing was touched.
    #[error("the selection is empty: name at least one node or role")]
    EmptySelection,
    /// The selection names a node or role the cluster does not have; nothing was touched.
    #[error("unknown node {0}: it is not in the cluster's topology")]
    UnknownNode(String),
    /// The selection names a role no node of the cluster has; nothing was touched.
    #[error("unknown role {0}: no node of the cluster's topology has it")]
    UnknownRole(String),
    /// The backend cannot apply the change; nothing was touched.
    #[error("the {kind} change cannot be applied: {reason}")]
    UnsupportedChange {
        /// `restart`, `config` or `upgrade`.
        kind: &'static str,
        /// Why: malformed, or refused by the backend ([`Cluster::check_change`]).
        ///
        /// [`Cluster::check_change`]: crate::Cluster::check_change
        reason: crate::model::ChangeError,
    },
    /// Some selected nodes cannot be stopped without losing a partition; nothing was touched.
    #[error("node {node} cannot be made safe: {reason}")]
    Unsafe {
        /// The first such node.
        node: NodeId,
        /// Why, such as "partition 2.5 has 1 replica".
        reason: String,
    },
    /// The journal or its lock failed, or belongs to another rollout.
    #[error("journal: {0}")]
    Journal(JournalError),
    /// A backend call failed in a way retrying cannot fix.
    #[error("{phase} failed on {}", Target(.node))]
    Backend {
        /// The node, or `None` for a cluster-wide step.
        node: Option<NodeId>,
        /// The phase.
        phase: Phase,
        /// The backend error.
        #[source]
        source: E,
    },
    /// A wait ran past its deadline and the policy said abort.
    #[error("{phase} on {} timed out after {after:?}: {reason}", Target(.node))]
    Timeout {
        /// The node, or `None` for a cluster-wide wait.
        node: Option<NodeId>,
        /// The phase.
        phase: Phase,
        /// The deadline that passed.
        after: Duration,
        /// The last reason the probe gave.
        reason: String,
    },
    /// A probe said the condition will not hold without an operator.
    #[error("{phase} on {} failed: {reason}", Target(.node))]
    Unhealthy {
        /// The node, or `None`.
        node: Option<NodeId>,
        /// The phase.
        phase: Phase,
        /// The probe's reason.
        reason: String,
    },
    /// A node outside the wave failed while the wave ran, and riding it out (releasing the
    /// knobs that keep the cluster from healing, waiting until it is fully healthy) did not
    /// bring the cluster back within its bounds. The wave's nodes were not stopped while it
    /// was down.
    #[error("a failure outside the wave during {phase}: {reason}")]
    OutsideFailure {
        /// The node that failed, when one is known.
        node: Option<NodeId>,
        /// The phase of the wave when it was seen.
        phase: Phase,
        /// What was seen, and what riding it out found.
        reason: String,
    },
    /// A knob did not read back the value just written.
    #[error("knob {name} reads back {found:?} after writing {expected:?}")]
    KnobMismatch {
        /// The knob.
        name: String,
        /// What was written.
        expected: String,
        /// What was read.
        found: String,
    },
    /// Knobs the rollout changed and could not put back, each tried again and still failing:
    /// every one is listed with its value now and its original, so that an operator can set
    /// them by hand (or run `abort`, which tries again from the journal).
    #[error(
        "knobs left changed: {}; set them back by hand or run abort ({reason})",
        KnobsLeft(.knobs)
    )]
    KnobsNotRestored {
        /// Each knob left changed.
        knobs: Vec<KnobLeft>,
        /// Why the first of them could not be restored, with its causes.
        reason: String,
    },
    /// The rollout was cancelled through its [`Control`](crate::Control); knobs were restored.
    #[error("the rollout was cancelled before {}", Target(.node))]
    Cancelled {
        /// The node it would have rolled next.
        node: Option<NodeId>,
    },
}

impl<E: std::error::Error + 'static> Error<E> {
    /// Whether the engine refused the input before touching anything: a policy that
    /// contradicts itself, an empty or unknown selection, a change the backend cannot apply,
    /// a node that cannot be made safe. A command reports these as bad input.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::InvalidPolicy(_)
                | Self::EmptySelection
                | Self::UnknownNode(_)
                | Self::UnknownRole(_)
                | Self::UnsupportedChange { .. }
                | Self::Unsafe { .. }
        )
    }

    /// The node the error names, if any.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            Self::Unsafe { node, .. } => Some(node),
            Self::Backend { node, .. }
            | Self::Timeout { node, .. }
            | Self::Unhealthy { node, .. }
            | Self::OutsideFailure { node, .. }
            | Self::Cancelled { node } => node.as_ref(),
            _ => None,
        }
    }

    /// The phase the error happened in, if any.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Self::Backend { phase, .. }
            | Self::Timeout { phase, .. }
            | Self::Unhealthy { phase, .. }
            | Self::OutsideFailure { phase, .. } => Some(*phase),
            Self::KnobMismatch { .. } => Some(Phase::Guard),
            Self::KnobsNotRestored { .. } => Some(Phase::Restore),
            _ => None,
        }
    }
}

/// A knob the rollout could not put back: its value now (`None` when it could not be read)
/// and its original.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KnobLeft {
    /// The knob.
    pub name: String,
    /// What it reads now.
    pub current: Option<String>,
    /// What it was before the rollout.
    pub original: String,
}

struct KnobsLeft<'a>(&'a [KnobLeft]);

impl fmt::Display for KnobsLeft<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match &k.current {
                Some(c) => write!(f, "{} is {c:?} (was {:?})", k.name, k.original)?,
                None => write!(f, "{} cannot be read (was {:?})", k.name, k.original)?,
            }
        }
        Ok(())
    }
}

/// The core result type.
pub type Result<T, E> = std::result::Result<T, Error<E>>;

/// An error and its sources on one line. A source whose text the line already holds (an
/// error that shows its source in its own message and also returns it from `source`) is not
/// repeated.
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// #[error("disk full")]
/// struct Disk;
/// #[derive(Debug, thiserror::Error)]
/// #[error("writing the journal")]
/// struct Quiet(#[source] Disk);
/// #[derive(Debug, thiserror::Error)]
/// #[error("writing the journal: {0}")]
/// struct Loud(#[source] Disk);
/// assert_eq!(rollout_core::chain(&Quiet(Disk)), "writing the journal: disk full");
/// assert_eq!(rollout_core::chain(&Loud(Disk)), "writing the journal: disk full");
/// ```
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
