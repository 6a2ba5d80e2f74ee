//! Engine behaviour through the public API, against the in-test cluster and the simulator:
//! the same test bodies, two fixtures, all on tokio's paused clock.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use rollout_core::{
    Change, Control, Error, Event, MemoryJournal, Outcome, Phase, Policy, ReplicaRole, RoleKind,
    Run, Spec, abort,
    journal::Entry,
    policy::{Deadlines, OnTimeout},
    roll,
};
use rollout_sim::SimCluster;
use support::{At, CrashJournal, EVERY, Failing, Fixture, Opts, Tiny, all_running};

/// Instantiates a generic test body for both fixtures.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod tiny {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name::<super::Tiny>().await
                }
            )*
        }
        mod sim {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    super::$name::<super::SimCluster>().await
                }
            )*
        }
    };
}

both!(
    completes_restarting_every_node_once_and_restores_knobs,
    restores_knobs_and_restarts_nodes_after_a_failure_in_every_phase,
    abort_policy_stops_on_a_stuck_drain_naming_node_and_phase,
    pause_policy_halts_keeping_knobs_until_abort_restores_them,
    skip_policy_leaves_a_stuck_node_out_and_rolls_the_rest,
    resumes_after_an_interruption_at_every_step_without_double_restarts,
    resumes_parallel_waves_after_an_interruption_at_every_step,
    control_cancel_stops_between_nodes_and_restores_knobs,
    control_pause_waits_for_resume,
    canary_halts_after_n_nodes_and_a_second_run_finishes,
    crash_looping_start_aborts_with_the_node_running_again_or_reported,
    dry_run_plan_touches_nothing,
    abort_after_a_dropped_rollout_at_every_step_brings_the_cluster_back,
);

fn policy() -> Policy {
    Policy::default().deadlines(Deadlines::all(Duration::from_secs(600)))
}

fn spec() -> Spec {
    Spec::new(Change::Restart).policy(policy())
}

fn assert_once<F: Fixture>(c: &F) {
    for (node, n) in c.restarts() {
        assert_eq!(n, 1, "node {node} restarted {n} times");
    }
}

async fn completes_restarting_every_node_once_and_restores_knobs<F: Fixture>() {
    let c = F::build(&Opts::default());
    let journal = MemoryJournal::new();
    let report = roll(&c, &spec(), Run::new(&journal)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.knobs_restored);
    assert!(c.knobs_restored());
    assert_once(&c);
    assert!(all_running(&c).await);
    assert_eq!(
        journal.entries().last(),
        Some(&Entry::End {
            outcome: "completed".into()
        })
    );
}

async fn restores_knobs_and_restarts_nodes_after_a_failure_in_every_phase<F: Fixture>() {
    for at in EVERY {
        // The second call of each kind fails: the first node has been rolled by then (or, for
        // knob writes, the first knob is already changed).
        let c = Failing::new(F::build(&Opts::default()), at, 1);
        let journal = MemoryJournal::new();
        let err = roll(&c, &spec(), Run::new(&journal)).await.unwrap_err();
        assert!(c.fired(), "{at:?}: the injected failure never ran");
        assert!(c.inner.knobs_restored(), "{at:?}: knobs not restored");
        if at != At::WriteKnob {
            assert!(err.node().is_some(), "{at:?}: {err} names no node");
            assert!(err.phase().is_some(), "{at:?}: {err} names no phase");
        }
        assert!(
            all_running(&c.inner).await,
            "{at:?}: a node was left stopped"
        );
        for (node, n) in c.inner.restarts() {
            assert!(n <= 2, "{at:?}: node {node} restarted {n} times");
        }
        assert_eq!(
            journal.entries().last(),
            Some(&Entry::End {
                outcome: "aborted".into()
            }),
            "{at:?}"
        );
    }
}

/// A fixture whose second data node never finishes its drain.
fn stuck_at_node_2<F: Fixture>() -> F {
    F::build(&Opts {
        stuck_drain: Some(2),
        ..Opts::default()
    })
}

fn stuck_policy(on_timeout: OnTimeout) -> Spec {
    let d = Deadlines::all(Duration::from_secs(600));
    let mut d2 = d;
    d2.drain = Duration::from_secs(60);
    Spec::new(Change::Restart).policy(Policy::default().deadlines(d2).on_timeout(on_timeout))
}

async fn abort_policy_stops_on_a_stuck_drain_naming_node_and_phase<F: Fixture>() {
    let c = stuck_at_node_2::<F>();
    let journal = MemoryJournal::new();
    let t0 = tokio::time::Instant::now();
    let err = roll(&c, &stuck_policy(OnTimeout::Abort), Run::new(&journal))
        .await
        .unwrap_err();
    match &err {
        Error::Timeout { node, phase, .. } => {
            assert_eq!(node.as_ref(), Some(&c.data(2)));
            assert_eq!(*phase, Phase::WaitDrained);
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(t0.elapsed() >= Duration::from_secs(60));
    assert!(c.knobs_restored());
    assert_eq!(c.restarts()[&c.data(2)], 0);
    assert_eq!(c.restarts()[&c.data(1)], 1);
}

async fn pause_policy_halts_keeping_knobs_until_abort_restores_them<F: Fixture>() {
    let c = stuck_at_node_2::<F>();
    let journal = MemoryJournal::new();
    let report = roll(&c, &stuck_policy(OnTimeout::Pause), Run::new(&journal))
        .await
        .unwrap();
    match &report.outcome {
        Outcome::Halted(reason) => assert!(reason.contains(c.data(2).as_str()), "{reason}"),
        other => panic!("expected halted, got {other:?}"),
    }
    assert!(!c.knobs_restored(), "pause keeps the knobs for the resume");
    assert!(
        !journal
            .entries()
            .iter()
            .any(|e| matches!(e, Entry::End { .. }))
    );
    assert!(abort(&c, Run::new(&journal)).await.unwrap());
    assert!(c.knobs_restored());
    assert!(all_running(&c).await);
    assert!(
        !abort(&c, Run::new(&journal)).await.unwrap(),
        "nothing left to abort"
    );
}

async fn skip_policy_leaves_a_stuck_node_out_and_rolls_the_rest<F: Fixture>() {
    let c = stuck_at_node_2::<F>();
    let journal = MemoryJournal::new();
    let report = roll(&c, &stuck_policy(OnTimeout::Skip), Run::new(&journal))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, c.data(2));
    assert!(c.knobs_restored());
    for (node, n) in c.restarts() {
        let want = u32::from(node != c.data(2));
        assert_eq!(n, want, "node {node}");
    }
}

async fn resumes_after_an_interruption_at_every_step_without_double_restarts<F: Fixture>() {
    resume_at_every_step::<F>(&spec()).await;
}

async fn resumes_parallel_waves_after_an_interruption_at_every_step<F: Fixture>() {
    let spec = spec().policy(policy().max_parallel(4));
    let c = F::build(&Opts::default());
    let plan = rollout_core::plan(&c, &spec).await.unwrap();
    assert!(
        plan.waves.iter().any(|w| w.nodes.len() > 1),
        "the fixture should allow parallel waves: {plan}"
    );
    resume_at_every_step::<F>(&spec).await;
}

/// How many journal records an uninterrupted run of `spec` writes.
async fn journal_length<F: Fixture>(spec: &Spec) -> usize {
    let c = F::build(&Opts::default());
    let journal = MemoryJournal::new();
    roll(&c, spec, Run::new(&journal)).await.unwrap();
    journal.entries().len()
}

async fn resume_at_every_step<F: Fixture>(spec: &Spec) {
    let spec = || spec.clone();
    // How many journal records an uninterrupted run writes.
    let total = journal_length::<F>(&spec()).await;
    for step in 1..total {
        let c = F::build(&Opts::default());
        let journal = CrashJournal::new(step);
        let first = journal.race(roll(&c, &spec(), Run::new(&journal))).await;
        let report = match first {
            // The closing restores and End are written without an await between them: a
            // crash there lands after the rollout has finished.
            Some(done) => {
                let rest = &journal.entries()[step..];
                assert!(
                    rest.iter()
                        .all(|e| matches!(e, Entry::KnobRestored { .. } | Entry::End { .. })),
                    "step {step}: the crash did not happen before {rest:?}"
                );
                done.unwrap()
            }
            None => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let report = roll(&c, &spec(), Run::new(&journal))
                    .await
                    .unwrap_or_else(|e| panic!("step {step}: resume failed: {e}"));
                assert!(report.resumed, "step {step}");
                report
            }
        };
        assert_eq!(report.outcome, Outcome::Completed, "step {step}");
        assert!(c.knobs_restored(), "step {step}: knobs not restored");
        for (node, n) in c.restarts() {
            assert_eq!(n, 1, "step {step}: node {node} restarted {n} times");
        }
    }
}

async fn control_cancel_stops_between_nodes_and_restores_knobs<F: Fixture>() {
    let c = F::build(&Opts::default());
    let journal = MemoryJournal::new();
    let control = Control::new();
    let cancel_after_first = |e: &Event| {
        if matches!(e, Event::NodeDone { .. }) {
            control.cancel();
        }
    };
    let err = roll(
        &c,
        &spec(),
        Run::new(&journal)
            .observe(&cancel_after_first)
            .control(&control),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert!(c.knobs_restored());
    let restarted: u32 = c.restarts().values().sum();
    assert_eq!(restarted, 1);
    assert_eq!(
        journal.entries().last(),
        Some(&Entry::End {
            outcome: "cancelled".into()
        })
    );
}

async fn control_pause_waits_for_resume<F: Fixture>() {
    let c = F::build(&Opts::default());
    let journal = MemoryJournal::new();
    let control = Control::new();
    let paused_at = Mutex::new(None);
    let pause_after_first = |e: &Event| {
        if matches!(e, Event::NodeDone { .. }) && paused_at.lock().unwrap().is_none() {
            control.pause();
            *paused_at.lock().unwrap() = Some(tokio::time::Instant::now());
        }
    };
    let run = Run::new(&journal)
        .observe(&pause_after_first)
        .control(&control);
    let operator = async {
        while paused_at.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            c.restarts().values().sum::<u32>(),
            1,
            "nothing rolls while paused"
        );
        control.resume();
    };
    let spec = spec();
    let (report, ()) = tokio::join!(roll(&c, &spec, run), operator);
    assert_eq!(report.unwrap().outcome, Outcome::Completed);
    assert_once(&c);
}

async fn canary_halts_after_n_nodes_and_a_second_run_finishes<F: Fixture>() {
    let c = F::build(&Opts::default());
    let journal = MemoryJournal::new();
    let canary = spec().policy(policy().canary(2));
    let report = roll(&c, &canary, Run::new(&journal)).await.unwrap();
    assert!(matches!(report.outcome, Outcome::Halted(_)));
    assert_eq!(report.rolled.len(), 2);
    assert!(c.knobs_restored(), "a canary halt restores knobs");
    let report = roll(&c, &spec(), Run::new(&journal)).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.resumed);
    assert_once(&c);
}

async fn crash_looping_start_aborts_with_the_node_running_again_or_reported<F: Fixture>() {
    let c = F::build(&Opts {
        fail_start: Some(1),
        ..Opts::default()
    });
    let journal = MemoryJournal::new();
    let mut d = Deadlines::all(Duration::from_secs(600));
    d.ready = Duration::from_secs(120);
    let err = roll(
        &c,
        &Spec::new(Change::Upgrade {
            version: "2".into(),
        })
        .policy(Policy::default().deadlines(d)),
        Run::new(&journal),
    )
    .await
    .unwrap_err();
    assert_eq!(err.node(), Some(&c.data(1)));
    assert_eq!(err.phase(), Some(Phase::WaitReady));
    assert!(c.knobs_restored());
    let msg = rollout_core::chain(&err);
    assert!(
        msg.contains("wait ready") && msg.contains(c.data(1).as_str()),
        "{msg}"
    );
}

async fn dry_run_plan_touches_nothing<F: Fixture>() {
    let c = F::build(&Opts::default());
    let plan = rollout_core::plan(&c, &spec()).await.unwrap();
    assert!(!plan.waves.is_empty());
    assert!(plan.blocked.is_empty());
    assert!(!plan.knobs.is_empty());
    let text = plan.to_string();
    assert!(text.contains("wave"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
    assert!(json["waves"].is_array());
    // Each data node's drain, counted from the topology: its primaries move, its replicas go
    // down; the text names every one.
    let topology = rollout_core::Cluster::topology(&c).await.unwrap();
    let data: Vec<_> = plan
        .waves
        .iter()
        .filter(|w| w.kind == RoleKind::Data)
        .flat_map(|w| w.nodes.clone())
        .collect();
    assert_eq!(
        plan.drains
            .iter()
            .map(|d| d.node.clone())
            .collect::<Vec<_>>(),
        data
    );
    for d in &plan.drains {
        let on = |role: Option<ReplicaRole>| {
            topology
                .partitions
                .iter()
                .flat_map(|p| &p.replicas)
                .filter(|r| r.node == d.node && role.is_none_or(|x| r.role == x))
                .count()
        };
        assert_eq!(d.taken_down(), on(None), "{d}");
        assert_eq!(d.moved(), on(Some(ReplicaRole::Primary)), "{d}");
        assert!(text.contains(&d.to_string()), "{text}");
    }
    assert!(c.knobs_restored());
    assert!(c.restarts().values().all(|&n| n == 0));
}

#[tokio::test(start_paused = true)]
async fn tiny_stuck_node_paused_then_unstuck_resumes_to_completion() {
    let c = stuck_at_node_2::<Tiny>();
    let journal = MemoryJournal::new();
    let report = roll(&c, &stuck_policy(OnTimeout::Pause), Run::new(&journal))
        .await
        .unwrap();
    assert!(matches!(report.outcome, Outcome::Halted(_)));
    c.set_stuck_drain("d2:1", false);
    let report = roll(&c, &stuck_policy(OnTimeout::Pause), Run::new(&journal))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    assert!(report.resumed);
    assert!(c.knobs_restored());
    assert_once(&c);
}

#[tokio::test(start_paused = true)]
async fn tiny_steps_run_in_the_documented_order() {
    let c = Tiny::new(3, 1, 3);
    let journal = MemoryJournal::new();
    let spec = Spec::new(Change::Restart)
        .selection(rollout_core::policy::Selection::Nodes(vec!["d1:1".into()]));
    roll(&c, &spec, Run::new(&journal)).await.unwrap();
    let log = c.log();
    let pos = |s: &str| {
        log.iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("{s} missing from {log:?}"))
    };
    assert!(pos("knob balancer=off") < pos("knob add_replicas=0"));
    assert!(pos("knob add_replicas=0") < pos("drain d1:1"));
    assert!(pos("drain d1:1") < pos("quiesce d1:1"));
    assert!(pos("quiesce d1:1") < pos("stop d1:1"));
    assert!(pos("stop d1:1") < pos("apply d1:1"));
    assert!(pos("apply d1:1") < pos("start d1:1"));
    assert!(pos("start d1:1") < pos("knob add_replicas=100"));
    assert!(pos("knob add_replicas=100") < pos("rejoin d1:1"));
    assert!(pos("rejoin d1:1") < pos("knob add_replicas=10"));
    assert!(pos("knob add_replicas=10") < pos("knob balancer=on"));
}

#[tokio::test(start_paused = true)]
async fn tiny_leader_coordinator_rolls_last() {
    let c = Tiny::new(3, 3, 3);
    let journal = MemoryJournal::new();
    roll(&c, &spec(), Run::new(&journal)).await.unwrap();
    let stops: Vec<String> = c
        .log()
        .into_iter()
        .filter_map(|l| l.strip_prefix("stop ").map(str::to_string))
        .collect();
    let coords: Vec<&str> = stops
        .iter()
        .map(String::as_str)
        .filter(|s| s.starts_with('c'))
        .collect();
    assert_eq!(
        coords,
        ["c2:1", "c3:1", "c1:1"],
        "standbys first, leader c1 last"
    );
    assert!(stops.iter().position(|s| s == "d3:1") < stops.iter().position(|s| s == "c2:1"));
    assert_eq!(stops.last().map(String::as_str), Some("s1:1"));
}

#[tokio::test(start_paused = true)]
async fn upgrade_is_not_repeated_on_nodes_already_at_the_target() {
    let c = Tiny::new(3, 1, 3);
    let upgrade = Spec::new(Change::Upgrade {
        version: "2".into(),
    });
    roll(&c, &upgrade, Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    assert!(c.versions().values().all(|v| v == "2"));
    let report = roll(&c, &upgrade, Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    assert!(report.rolled.is_empty());
    assert_eq!(report.skipped.len(), 5);
    assert!(c.restarts().values().all(|&n| n == 1));
}

#[test]
fn the_rollout_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = <SimCluster as Fixture>::build(&Opts::default());
        let journal = MemoryJournal::new();
        let spec = spec();
        let fut = roll(&sim, &spec, Run::new(&journal));
        is_send(&fut);
        let tiny = Tiny::new(3, 1, 3);
        let fut2 = roll(&tiny, &spec, Run::new(&journal));
        is_send(&fut2);
    });
}

async fn abort_after_a_dropped_rollout_at_every_step_brings_the_cluster_back<F: Fixture>() {
    let total = journal_length::<F>(&spec()).await;
    for step in 1..total {
        let c = F::build(&Opts::default());
        let journal = CrashJournal::new(step);
        if journal
            .race(roll(&c, &spec(), Run::new(&journal)))
            .await
            .is_some()
        {
            continue; // finished before the drop could land
        }
        assert!(abort(&c, Run::new(&journal)).await.unwrap(), "step {step}");
        assert!(c.knobs_restored(), "step {step}: knobs not restored");
        assert!(all_running(&c).await, "step {step}: a node was left down");
        let healthy = rollout_core::wait::wait_until(
            &c.fully_healthy(),
            Duration::from_secs(3600),
            (Duration::from_millis(100), Duration::from_secs(1)),
            |e| c.classify(e),
            |_| {},
        )
        .await;
        assert!(
            healthy.is_ok(),
            "step {step}: never fully healthy again: {healthy:?}"
        );
        for (node, n) in c.restarts() {
            assert!(n <= 1, "step {step}: node {node} restarted {n} times");
        }
        assert!(
            matches!(journal.entries().last(), Some(Entry::End { .. })),
            "step {step}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_apply_in_a_parallel_wave_reverts_the_nodes_that_took_it() {
    let tiny = Tiny::build(&Opts::default());
    let upgrade = Spec::new(Change::Upgrade {
        version: "2".into(),
    })
    .policy(policy().max_parallel(4));
    let plan = rollout_core::plan(&tiny, &upgrade).await.unwrap();
    assert!(plan.waves[0].nodes.len() >= 2, "{plan}");
    let c = Failing::new(tiny.clone(), At::Apply, 1);
    let err = roll(&c, &upgrade, Run::new(&MemoryJournal::new()))
        .await
        .unwrap_err();
    assert_eq!(err.phase(), Some(Phase::Apply), "{err}");
    assert!(all_running(&tiny).await);
    assert!(
        tiny.versions().values().all(|v| v == "1"),
        "a node kept the new version: {:?}",
        tiny.versions()
    );
    assert!(tiny.knobs_restored());
}

#[tokio::test(start_paused = true)]
async fn a_boxed_cluster_rolls_like_the_generic_one_and_keeps_error_classes() {
    let build = || {
        let mut b = rollout_sim::SimBuilder::new(rollout_sim::Flavor::Pegasus);
        b.seed(9).fault("transient:p=0.2".parse().unwrap());
        b.build().unwrap()
    };
    let generic = build();
    let direct = roll(&generic, &spec(), Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    let boxed_sim = build();
    let boxed = rollout_core::erased::BoxCluster::new(boxed_sim.clone());
    let erased = roll(&boxed, &spec(), Run::new(&MemoryJournal::new()))
        .await
        .unwrap();
    assert_eq!(direct.outcome, Outcome::Completed);
    assert_eq!(
        erased.outcome,
        Outcome::Completed,
        "transient errors must stay transient"
    );
    assert_eq!(direct.rolled, erased.rolled);
    assert!(boxed_sim.truth().knobs_restored);
    assert_eq!(generic.truth().restarts, boxed_sim.truth().restarts);
}

/// Crashes a rollout of a fresh `build()` cluster at every journal step and resumes it, each
/// time completing with every node restarted once and the knobs restored; returns how many
/// crashes left the cluster in the state `interesting` looks for (so that a test can show
/// its case was met).
async fn crash_and_resume_at_every_step(
    build: impl Fn() -> Tiny,
    interesting: impl AsyncFn(&Tiny) -> bool,
) -> usize {
    let spec = spec();
    let total = {
        let c = build();
        let journal = MemoryJournal::new();
        roll(&c, &spec, Run::new(&journal)).await.unwrap();
        journal.entries().len()
    };
    let mut seen = 0;
    for step in 1..total {
        let c = build();
        let journal = CrashJournal::new(step);
        let Some(first) = journal.race(roll(&c, &spec, Run::new(&journal))).await else {
            if interesting(&c).await {
                seen += 1;
            }
            let report = roll(&c, &spec, Run::new(&journal))
                .await
                .unwrap_or_else(|e| panic!("step {step}: resume failed: {e}"));
            assert!(report.resumed, "step {step}");
            assert_eq!(report.outcome, Outcome::Completed, "step {step}");
            assert!(c.knobs_restored(), "step {step}");
            for (node, n) in c.restarts() {
                assert_eq!(n, 1, "step {step}: node {node} restarted {n} times");
            }
            continue;
        };
        first.unwrap();
    }
    seen
}

/// A data node left stopped by a crashed rollout whose replicas the coordinator dropped
/// meanwhile (a Pegasus meta after its lease) makes its neighbours look unsafe to stop; the
/// resume finishes it first and plans the rest again, after a crash at every step.
#[tokio::test(start_paused = true)]
async fn resumes_when_a_node_left_down_had_its_replicas_dropped_at_every_step() {
    let blocked = crash_and_resume_at_every_step(
        || {
            let c = Tiny::new(7, 3, 8);
            c.drop_replicas_of_stopped();
            c
        },
        async |c: &Tiny| {
            !rollout_core::plan(c, &spec())
                .await
                .unwrap()
                .blocked
                .is_empty()
        },
    )
    .await;
    assert!(
        blocked > 0,
        "no crash left a node down that blocked the plan"
    );
}

/// A stopped coordinator that the topology no longer lists (an OpenMLDB nameserver is known
/// only from its ZooKeeper registration while it runs) is still resumed from the journal,
/// after a crash at every step.
#[tokio::test(start_paused = true)]
async fn resumes_a_stopped_coordinator_the_topology_no_longer_lists_at_every_step() {
    let hidden = crash_and_resume_at_every_step(
        || {
            let c = Tiny::new(7, 3, 8);
            c.hide_stopped_coordinators();
            c
        },
        async |c: &Tiny| {
            rollout_core::Cluster::topology(c)
                .await
                .unwrap()
                .nodes
                .len()
                < 11
        },
    )
    .await;
    assert!(
        hidden > 0,
        "no crash left a coordinator stopped and unlisted"
    );
}
