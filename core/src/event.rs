//! Typed events a rollout emits while it runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Phase;
use crate::model::NodeId;
use crate::plan::Plan;
use crate::replicas::TemporaryReplica;

/// Something that happened in a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The plan is built; nothing has been touched yet.
    PlanReady {
        /// The plan.
        plan: Box<Plan>,
    },
    /// An interrupted rollout is being resumed from the journal.
    Resumed {
        /// Nodes the journal records as finished.
        finished: Vec<NodeId>,
        /// Nodes the journal shows in progress: they are finished first, together, as the
        /// resumed wave.
        in_flight: Vec<NodeId>,
    },
    /// A knob was changed.
    KnobChanged {
        /// The knob.
        name: String,
        /// Its value before.
        from: String,
        /// Its value now.
        to: String,
    },
    /// A knob was put back to its original value.
    KnobRestored {
        /// The knob.
        name: String,
        /// Its original value.
        value: String,
    },
    /// A temporary replica is being added (journaled first).
    TemporaryReplicaAdded {
        /// The replica.
        replica: TemporaryReplica,
    },
    /// A temporary replica was removed: its node serves the partition again.
    TemporaryReplicaRemoved {
        /// The replica.
        replica: TemporaryReplica,
    },
    /// A wave starts.
    WaveStarted {
        /// 0-based index in the plan; for the resumed wave of an interrupted rollout (its
        /// nodes in progress), [`RESUMED_WAVE`].
        index: usize,
        /// Its nodes.
        nodes: Vec<NodeId>,
    },
    /// A phase starts on a node (or on the cluster).
    PhaseStarted {
        /// The node, or `None`.
        node: Option<NodeId>,
        /// The phase.
        phase: Phase,
    },
    /// A phase finished.
    PhaseFinished {
        /// The node, or `None`.
        node: Option<NodeId>,
        /// The phase.
        phase: Phase,
        /// How long it took.
        took: Duration,
    },
    /// A wait is still waiting; emitted when the reason changes.
    Waiting {
        /// The node, or `None`.
        node: Option<NodeId>,
        /// The phase.
        phase: Phase,
        /// What blocks.
        reason: String,
    },
    /// A node is done.
    NodeDone {
        /// The node.
        node: NodeId,
    },
    /// A node was left out.
    NodeSkipped {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The rollout halted and can be resumed.
    Halted {
        /// Why.
        reason: String,
    },
    /// The rollout completed.
    Done {
        /// Nodes rolled in this run.
        rolled: usize,
    },
    /// A failed wave is being rolled back: its nodes that did not come up get back what apply
    /// replaced and are started again.
    RollbackStarted {
        /// The wave's nodes.
        nodes: Vec<NodeId>,
    },
    /// The roll back of a failed wave ended (each node as far as it could go).
    RollbackDone {
        /// The wave's nodes.
        nodes: Vec<NodeId>,
    },
    /// A node got back what apply had replaced (its previous version or config).
    NodeReverted {
        /// The node.
        node: NodeId,
    },
    /// [`abort`](crate::abort) ended an interrupted rollout.
    AbortDone {
        /// The nodes it brought back.
        nodes: Vec<NodeId>,
    },
    /// The rollout failed. Knobs were restored unless the error says they were not (the
    /// journal then keeps their originals for [`abort`](crate::abort)).
    Failed {
        /// The error, with its chain.
        error: String,
        /// The node the error names, if any.
        node: Option<NodeId>,
        /// The phase it happened in, if any.
        phase: Option<Phase>,
    },
}

/// The [`Event::WaveStarted`] index of the resumed wave.
pub const RESUMED_WAVE: usize = usize::MAX;

/// Receives events. Implemented for closures and for an unbounded tokio channel sender,
/// whose receiver is then the event stream.
pub trait Observer: Send + Sync {
    /// Called for every event, in order. Must not block.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Observer for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

impl Observer for tokio::sync::mpsc::UnboundedSender<Event> {
    fn on_event(&self, event: &Event) {
        // A dropped receiver means nobody listens any more; the rollout goes on.
        let _ = self.send(event.clone());
    }
}

/// An observer that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignore;

impl Observer for Ignore {
    fn on_event(&self, _: &Event) {}
}
