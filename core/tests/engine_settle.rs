//! After the last stateful wave, when only stateless waves follow (Pegasus's collector after
//! the metas): what that wave's end would have waited for is left to the roll's end, so the
//! stateless nodes roll meanwhile, and the roll still ends only on a fully healthy cluster.

mod support;

use std::time::Duration;

use rollout_core::{
    Change, Cluster, Error, Health, HealthProbe, MemoryJournal, Outcome, Phase, Policy, Run, Spec,
    journal::Entry,
    policy::{Deadlines, OnTimeout, Selection},
    roll,
};
use support::Tiny;

/// A cluster of `data` data nodes and `coords` coordinators that is unhealthy for 60 s
/// after `node`'s start.
fn sick(data: usize, coords: usize, node: &str) -> Tiny {
    let c = Tiny::new(data, coords, 3);
    c.sick_after_start(node, Duration::from_secs(60));
    c
}

/// Restarts every node of `c`, which must complete.
async fn restart_completes(c: &Tiny) {
    let report = roll(
        c,
        &Spec::new(Change::Restart),
        Run::new(&MemoryJournal::new()),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn the_stateless_wave_rolls_while_the_cluster_shows_its_health_after_the_last_coordinator() {
    // As a new Pegasus meta leader during its failure detector's grace.
    let c = sick(3, 1, "c1:1");
    let t0 = tokio::time::Instant::now();
    restart_completes(&c).await;
    let log = c.log();
    assert!(
        log.iter()
            .any(|l| l == "start s1:1 while the cluster recovers"),
        "the stateless node rolled after the wait: {log:?}"
    );
    // And the stateless wave's own end, the roll's last, waited for it.
    assert!(
        t0.elapsed() >= Duration::from_secs(60),
        "{:?}",
        t0.elapsed()
    );
    assert!(c.knobs_restored());
}

#[tokio::test(start_paused = true)]
async fn a_data_wave_still_waits_for_health_before_the_stateless_one() {
    let c = sick(3, 0, "d3:1");
    restart_completes(&c).await;
    let log = c.log();
    assert!(
        !log.iter()
            .any(|l| l.ends_with("while the cluster recovers")),
        "{log:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cluster_that_stays_unhealthy_after_the_last_coordinator_fails_the_roll() {
    let c = Tiny::new(3, 1, 3);
    c.sick_after_start("c1:1", Duration::from_secs(24 * 3600));
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart)
        .policy(Policy::default().deadlines(Deadlines::all(Duration::from_secs(600))));
    let err = roll(&c, &spec, Run::new(&journal)).await.unwrap_err();
    match &err {
        Error::Timeout { phase, .. } => assert_eq!(*phase, Phase::WaitHealthy, "{err}"),
        other => panic!("{other}"),
    }
    assert!(c.knobs_restored(), "knobs go back on failure too");
}

#[tokio::test(start_paused = true)]
async fn an_orchestrator_crash_at_every_step_still_ends_on_a_healthy_cluster() {
    use support::CrashJournal;

    let fixture = || {
        let c = Tiny::new(3, 1, 3);
        c.sick_after_start("c1:1", Duration::from_secs(60));
        c
    };
    let spec = Spec::new(Change::Restart);
    let total = {
        let journal = MemoryJournal::new();
        roll(&fixture(), &spec, Run::new(&journal)).await.unwrap();
        journal.entries().len()
    };
    for step in 1..total {
        let c = fixture();
        let journal = CrashJournal::new(step);
        let report = match journal.race(roll(&c, &spec, Run::new(&journal))).await {
            Some(done) => done.unwrap(),
            None => roll(&c, &spec, Run::new(&journal))
                .await
                .unwrap_or_else(|e| panic!("step {step}: resume failed: {e}")),
        };
        assert_eq!(report.outcome, Outcome::Completed, "step {step}");
        assert_eq!(
            c.fully_healthy().check().await.unwrap(),
            Health::Healthy,
            "step {step}: the roll ended on a cluster still recovering"
        );
        assert!(c.knobs_restored(), "step {step}");
        for (node, n) in c.restarts() {
            assert_eq!(n, 1, "step {step}: node {node} restarted {n} times");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_is_waited_for_at_its_own_end_when_no_stateless_node_is_left_to_roll() {
    // The collector is already at the target, so it is left out of the plan: the
    // coordinator's wave is the last one, and its own end waits for the cluster's health.
    let c = Tiny::new(3, 1, 3);
    let upgrade = || {
        Spec::new(Change::Upgrade {
            version: "2".into(),
        })
    };
    roll(
        &c,
        &upgrade().selection(Selection::Nodes(vec!["s1:1".into()])),
        Run::new(&MemoryJournal::new()),
    )
    .await
    .unwrap();
    c.sick_after_start("c1:1", Duration::from_secs(60));
    let report = roll(&c, &upgrade(), Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(c.fully_healthy().check().await.unwrap(), Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_canary_ending_at_the_last_coordinator_restores_knobs_only_on_a_healthy_cluster() {
    let c = Tiny::new(3, 1, 3);
    c.sick_after_start("c1:1", Duration::from_secs(60));
    let spec = Spec::new(Change::Restart).policy(Policy::default().canary(4));
    let report = roll(&c, &spec, Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::Halted(_)),
        "{:?}",
        report.outcome
    );
    assert!(c.knobs_restored());
    assert_eq!(c.fully_healthy().check().await.unwrap(), Health::Healthy);
    assert!(
        !c.log().iter().any(|l| l.starts_with("stop s1")),
        "the canary stops before s1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_after_the_last_coordinator_stays_a_pause() {
    // The stateless wave's own end times out on the unhealthy cluster and pauses: the roll's
    // end must not wait for health again and turn the pause into an abort.
    let c = Tiny::new(3, 1, 3);
    c.sick_after_start("c1:1", Duration::from_secs(24 * 3600));
    let spec = Spec::new(Change::Restart).policy(
        Policy::default()
            .deadlines(Deadlines::all(Duration::from_secs(600)))
            .on_timeout(OnTimeout::Pause),
    );
    let journal = MemoryJournal::new();
    let report = roll(&c, &spec, Run::new(&journal)).await.unwrap();
    assert!(
        matches!(report.outcome, Outcome::Halted(_)),
        "{:?}",
        report.outcome
    );
    assert!(
        !c.knobs_restored(),
        "a pause keeps the knobs for the resume"
    );
    assert!(
        !journal
            .entries()
            .iter()
            .any(|e| matches!(e, Entry::End { .. }))
    );
}
