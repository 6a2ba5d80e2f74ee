//! Pause, resume and cancel a running rollout from another task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A handle to pause, resume or cancel a rollout between nodes. Clones share the state.
///
/// A paused rollout finishes the node in progress, then waits before the next wave.
/// A cancelled one finishes the node in progress, restores its knobs and returns
/// [`Error::Cancelled`](crate::Error::Cancelled).
/// Dropping the rollout's future instead stops it at once; the journal then holds what a later
/// [`roll`](crate::roll) or [`abort`](crate::abort) needs to resume or restore.
#[derive(Debug, Clone, Default)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    paused: AtomicBool,
    cancelled: AtomicBool,
    notify: Notify,
}

impl Control {
    /// A handle in the running state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pauses before the next wave.
    pub fn pause(&self) {
        self.inner.paused.store(true, Ordering::SeqCst);
    }

    /// Lets a paused rollout go on.
    pub fn resume(&self) {
        self.inner.paused.store(false, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Cancels before the next wave.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether a pause was asked for.
    pub fn is_paused(&self) -> bool {
        self.inner.paused.load(Ordering::SeqCst)
    }

    /// Whether a cancel was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Waits while paused; returns `true` if cancelled.
    pub(crate) async fn checkpoint(&self) -> bool {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return true;
            }
            if !self.is_paused() {
                return false;
            }
            notified.await;
        }
    }
}
