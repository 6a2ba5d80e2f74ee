//! Fencing: the engine checks the journal's lock ([`Journal::fence`]) right before every
//! action on the cluster, and once the lock is lost it acts no more, wherever that happens.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use rollout_core::{
    Change, Error, Journal, MemoryJournal, Run, Spec,
    journal::{Entry, JournalError},
    roll,
};
use support::Tiny;

/// A memory journal whose lock is lost at its `at`-th fence (as a ZooKeeper lock goes when
/// the orchestrator's session expires); every fence is written into the cluster's call log.
struct LosesLock {
    inner: MemoryJournal,
    tiny: Tiny,
    fences: AtomicUsize,
    at: usize,
}

impl LosesLock {
    fn new(tiny: &Tiny, at: usize) -> Self {
        Self {
            inner: MemoryJournal::new(),
            tiny: tiny.clone(),
            fences: AtomicUsize::new(0),
            at,
        }
    }
}

impl Journal for LosesLock {
    fn lock(&self, owner: &str) -> Result<(), JournalError> {
        self.inner.lock(owner)
    }
    fn unlock(&self) {
        self.inner.unlock();
    }
    fn load(&self) -> Result<Vec<Entry>, JournalError> {
        self.inner.load()
    }
    fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        // As in ZooKeeper, an append is conditional on the lock too.
        if self.fences.load(Ordering::SeqCst) >= self.at {
            return Err(lost());
        }
        self.inner.append(entry)
    }
    fn fence(&self) -> Result<(), JournalError> {
        self.tiny.note("fence");
        if self.fences.fetch_add(1, Ordering::SeqCst) + 1 >= self.at {
            return Err(lost());
        }
        Ok(())
    }
}

fn lost() -> JournalError {
    JournalError::LockLost {
        at: "the test's lock".into(),
        holder: "another orchestrator holds it".into(),
    }
}

fn spec() -> Spec {
    Spec::new(Change::Upgrade {
        version: "2.0".into(),
    })
}

/// A cluster whose first drain of each node is refused with a transient error: the engine
/// retries it, and a retry is an action too.
fn tiny() -> Tiny {
    let tiny = Tiny::new(5, 3, 8);
    tiny.flaky_drain();
    tiny
}

#[tokio::test(start_paused = true)]
async fn every_action_on_the_cluster_and_every_retry_comes_right_after_a_lock_check() {
    let tiny = tiny();
    let journal = LosesLock::new(&tiny, usize::MAX);
    roll(&tiny, &spec(), Run::new(&journal)).await.unwrap();
    let log = tiny.log();
    let actions = log.iter().filter(|l| *l != "fence").count();
    assert!(actions > 20, "the rollout did too little to test: {log:?}");
    for (i, line) in log.iter().enumerate().filter(|(_, l)| *l != "fence") {
        assert_eq!(
            i.checked_sub(1).map(|p| log[p].as_str()),
            Some("fence"),
            "{line:?} (call {i}) was not preceded by a lock check: {log:?}"
        );
    }
    for kind in [
        "knob",
        "drain-refused",
        "drain",
        "stop",
        "apply",
        "start",
        "rejoin",
    ] {
        assert!(
            log.iter().any(|l| l.starts_with(kind)),
            "no {kind} in {log:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn once_the_lock_is_lost_the_engine_changes_nothing_more_at_every_step() {
    let fences = {
        let tiny = tiny();
        let journal = LosesLock::new(&tiny, usize::MAX);
        roll(&tiny, &spec(), Run::new(&journal)).await.unwrap();
        tiny.log().iter().filter(|l| *l == "fence").count()
    };
    for at in 1..=fences {
        let tiny = tiny();
        let journal = LosesLock::new(&tiny, at);
        let err = roll(&tiny, &spec(), Run::new(&journal))
            .await
            .expect_err(&format!(
                "lost at fence {at}: the rollout went on without its lock"
            ));
        assert!(
            matches!(err, Error::Journal(JournalError::LockLost { .. })),
            "lost at fence {at}: {err}"
        );
        let log = tiny.log();
        let lost = log
            .iter()
            .enumerate()
            .filter(|(_, l)| *l == "fence")
            .nth(at - 1)
            .map(|(i, _)| i)
            .unwrap();
        let after: Vec<&String> = log[lost..].iter().filter(|l| *l != "fence").collect();
        assert!(
            after.is_empty(),
            "lost at fence {at}: the engine still did {after:?}"
        );
    }
}
