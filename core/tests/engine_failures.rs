//! How a run ends when something fails: nothing waited for that the rollout did not cause,
//! and knobs it cannot put back named one by one.

mod support;

use std::time::Duration;

use rollout_core::{
    Change, Error, MemoryJournal, NodeId, Phase, Policy, Run, Spec, journal::Entry,
    policy::Deadlines, roll,
};
use support::{At, Failing, Tiny};

fn spec() -> Spec {
    Spec::new(Change::Restart)
        .policy(Policy::default().deadlines(Deadlines::all(Duration::from_secs(1800))))
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_stop_ends_the_node_at_once_without_waiting_for_a_restart() {
    // A drained node is ready only once it restarted, as a Pegasus server is (its start time
    // must move): waiting for that after a failure before its stop would wait for the whole
    // ready deadline for a restart the rollout never made.
    let tiny = Tiny::new(4, 1, 8);
    tiny.ready_after_restart();
    let cluster = Failing::new(tiny.clone(), At::Quiesce, 0);
    let journal = MemoryJournal::new();
    let t0 = tokio::time::Instant::now();
    let err = roll(&cluster, &spec(), Run::new(&journal))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "the failed run took {took:?}"
    );
    assert_eq!(err.node(), Some(&NodeId::new("d1:1")), "{err}");
    assert_eq!(err.phase(), Some(Phase::Quiesce), "{err}");
    assert!(
        rollout_core::chain(&err).contains("injected failure in Quiesce"),
        "{err}"
    );
    assert!(tiny.knobs_restored());
    assert!(tiny.restarts().values().all(|&n| n == 0));
    // Nothing is left in progress: the journal is closed.
    assert!(
        matches!(journal.entries().last(), Some(Entry::End { .. })),
        "{:?}",
        journal.entries().last()
    );
}

/// How many knob writes a clean run makes.
async fn knob_writes() -> usize {
    let cluster = Failing::new(Tiny::new(4, 1, 8), At::WriteKnob, usize::MAX);
    roll(&cluster, &spec(), Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    cluster.calls()
}

#[tokio::test(start_paused = true)]
async fn a_restore_that_fails_once_is_tried_again() {
    let writes = knob_writes().await;
    let tiny = Tiny::new(4, 1, 8);
    // The last write of a clean run is the last restore.
    let cluster = Failing::new(tiny.clone(), At::WriteKnob, writes - 1);
    let report = roll(&cluster, &spec(), Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    assert!(cluster.fired());
    assert!(report.knobs_restored);
    assert!(tiny.knobs_restored());
}

#[tokio::test(start_paused = true)]
async fn a_restore_that_keeps_failing_names_each_knob_with_its_value_and_original() {
    let writes = knob_writes().await;
    let tiny = Tiny::new(4, 1, 8);
    let cluster = Failing::from(tiny.clone(), At::WriteKnob, writes - 1);
    let err = roll(&cluster, &spec(), Run::new(&MemoryJournal::new()))
        .await
        .unwrap_err();
    let Error::KnobsNotRestored { knobs, reason } = &err else {
        panic!("{err}");
    };
    assert_eq!(knobs.len(), 1, "{err}");
    let k = &knobs[0];
    assert_eq!(
        k.current.as_deref(),
        Some(tiny.knob_value(&k.name).as_str())
    );
    assert_ne!(k.current.as_deref(), Some(k.original.as_str()));
    assert!(reason.contains("injected failure"), "{reason}");
    let msg = err.to_string();
    assert!(
        msg.contains(&k.name) && msg.contains(&k.original) && msg.contains("abort"),
        "{msg}"
    );
    assert_eq!(err.phase(), Some(Phase::Restore));
}
