//! A journal that marks where the orchestrator "crashes", for resume tests.

use std::sync::atomic::{AtomicUsize, Ordering};

use rollout_core::{
    Journal, MemoryJournal,
    journal::{Entry, JournalError},
};
use tokio::sync::Notify;

/// A journal (a [`MemoryJournal`] unless told otherwise) that fires once it holds `at`
/// records: [`race`](CrashJournal::race) then drops the rollout's future, as a killed
/// orchestrator would stop, and a later `roll` on the same journal resumes.
///
/// With the simulator, every control-plane call is a yield point, so the drop lands right
/// after the record.
#[derive(Debug)]
pub struct CrashJournal<J = MemoryJournal> {
    inner: J,
    len: AtomicUsize,
    at: AtomicUsize,
    hit: Notify,
}

impl CrashJournal {
    /// An in-memory journal that fires at its `at`-th record.
    pub fn new(at: usize) -> Self {
        Self::wrap(MemoryJournal::new(), at)
    }
}

impl<J: Journal> CrashJournal<J> {
    /// Wraps `inner` (a [`FileJournal`](rollout_core::FileJournal), say); fires once it holds
    /// `at` records, counting those it already has.
    pub fn wrap(inner: J, at: usize) -> Self {
        let len = inner.load().map_or(0, |e| e.len());
        Self {
            inner,
            len: AtomicUsize::new(len),
            at: AtomicUsize::new(at),
            hit: Notify::new(),
        }
    }

    /// The wrapped journal.
    pub fn into_inner(self) -> J {
        self.inner
    }

    /// Never fires again.
    pub fn disarm(&self) {
        self.at.store(usize::MAX, Ordering::SeqCst);
    }

    /// Every record (empty if the journal cannot be read).
    pub fn entries(&self) -> Vec<Entry> {
        self.inner.load().unwrap_or_default()
    }

    /// Runs `fut` until it finishes (`Some`) or the journal fires (`None`: `fut` is dropped).
    pub async fn race<F: Future>(&self, fut: F) -> Option<F::Output> {
        use std::task::Poll;
        let mut fut = std::pin::pin!(fut);
        let mut crash = std::pin::pin!(self.hit.notified());
        std::future::poll_fn(move |cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if crash.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

impl<J: Journal> Journal for CrashJournal<J> {
    fn lock(&self, owner: &str) -> Result<(), JournalError> {
        self.inner.lock(owner)
    }

    fn unlock(&self) {
        self.inner.unlock()
    }

    fn load(&self) -> Result<Vec<Entry>, JournalError> {
        self.inner.load()
    }

    fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        self.inner.append(entry)?;
        if self.len.fetch_add(1, Ordering::SeqCst) + 1 == self.at.load(Ordering::SeqCst) {
            self.hit.notify_one();
        }
        Ok(())
    }

    fn fence(&self) -> Result<(), JournalError> {
        self.inner.fence()
    }
}
