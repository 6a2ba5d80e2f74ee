//! What a caller hands a run and gets back: [`Run`], [`Report`], [`Outcome`]; the journal's
//! lock held for a run's length.

use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::event::{Ignore, Observer};
use crate::journal::Journal;
use crate::model::NodeId;

/// How a rollout that returned `Ok` ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// Every planned node is rolled or, under [`OnTimeout::Skip`](crate::policy::OnTimeout::Skip), listed in
    /// [`Report::skipped`]; knobs are restored.
    Completed,
    /// Stopped on purpose (canary, pause on timeout); run [`roll`](crate::roll) again to resume
    /// or [`abort`](crate::abort) to restore.
    Halted(String),
}

/// What a rollout did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Nodes rolled in this run, in order.
    pub rolled: Vec<NodeId>,
    /// Nodes left out, with the reason.
    pub skipped: Vec<(NodeId, String)>,
    /// Waves in the plan of this run.
    pub waves: usize,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
    /// Whether every knob is back at its original value.
    pub knobs_restored: bool,
}

/// Where a rollout records, reports and takes orders: the journal (required), an observer and
/// a [`Control`].
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub(super) journal: &'a dyn Journal,
    pub(super) observer: &'a dyn Observer,
    pub(super) control: Option<&'a Control>,
}

impl std::fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").finish_non_exhaustive()
    }
}

impl<'a> Run<'a> {
    /// A run that records to `journal` and reports to nobody.
    pub fn new(journal: &'a dyn Journal) -> Self {
        Self {
            journal,
            observer: &Ignore,
            control: None,
        }
    }

    /// Sends every event to `observer`.
    #[must_use]
    pub fn observe(mut self, observer: &'a dyn Observer) -> Self {
        self.observer = observer;
        self
    }

    /// Takes pause, resume and cancel from `control`.
    #[must_use]
    pub fn control(mut self, control: &'a Control) -> Self {
        self.control = Some(control);
        self
    }
}

/// Holds the journal's lock for as long as it lives.
pub(super) struct LockGuard<'a>(pub(super) &'a dyn Journal);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}
