//! Every fault of docs/contracts.md ("Faults"), one at a time, with the invariants that must
//! survive it.

#[path = "support.rs"]
mod support;

use rollout_sim::{Fault, Flavor, SimBuilder, Strategy};
use support::{run, run_with_restarts};

fn with(flavor: Flavor, spec: &str) -> SimBuilder {
    let mut b = SimBuilder::new(flavor);
    b.seed(5).fault(spec.parse::<Fault>().unwrap());
    b
}

const BOTH: [Flavor; 2] = [Flavor::Pegasus, Flavor::OpenMldb];

#[test]
fn transient_control_plane_errors_are_retried() {
    for f in BOTH {
        let r = run(&with(f, "transient:p=0.3"), Strategy::Ha);
        assert!(r.completed, "{f}: {:?}", r.error);
        assert_eq!(r.requests_failed, 0, "{f}");
        assert!(r.knobs_restored && r.max_restarts_per_node == 1, "{f}");
    }
}

#[test]
fn a_coordinator_failover_mid_rollout_is_survived_and_knobs_end_restored() {
    for f in BOTH {
        for at in [5, 40, 120, 300] {
            let r = run(&with(f, &format!("leader-failover:at={at}")), Strategy::Ha);
            assert!(r.completed, "{f} at {at}: {:?}", r.error);
            assert!(r.knobs_restored, "{f} at {at}");
            assert!(r.max_replicas_down <= 1, "{f} at {at}");
            assert_eq!(r.max_restarts_per_node, 1, "{f} at {at}");
        }
    }
}

#[test]
fn a_slow_start_only_takes_longer() {
    for f in BOTH {
        let base = run(&SimBuilder::new(f).seed(5).clone(), Strategy::Ha);
        let slow = run(&with(f, "slow-start:node=3,extra=90"), Strategy::Ha);
        assert!(slow.completed, "{f}");
        assert!(slow.virtual_secs >= base.virtual_secs + 90.0, "{f}");
        assert_eq!(slow.requests_failed, 0, "{f}");
    }
}

#[test]
fn a_crash_looping_node_aborts_the_rollout_naming_it_with_knobs_restored() {
    for f in BOTH {
        let r = run(&with(f, "fail-start:node=2"), Strategy::Ha);
        assert_eq!(r.outcome, "aborted", "{f}");
        let err = r.error.unwrap();
        assert!(
            err.contains("wait ready") && err.contains("-2:"),
            "{f}: {err}"
        );
        assert!(r.knobs_restored, "{f}");
        assert_eq!(
            r.max_restarts_per_node, 1,
            "{f}: restarting it again is the operator's call"
        );
    }
}

#[test]
fn a_stuck_drain_times_out_before_the_node_is_stopped() {
    for f in BOTH {
        let (r, restarts) = run_with_restarts(&with(f, "stuck-drain:node=1"), Strategy::Ha);
        assert_eq!(r.outcome, "aborted", "{f}");
        let err = r.error.unwrap();
        assert!(
            err.contains("wait drained") && err.contains("-1:"),
            "{f}: {err}"
        );
        let stuck = match f {
            Flavor::Pegasus => "replica-1:34801",
            Flavor::OpenMldb => "tablet-1:10921",
        };
        assert_eq!(restarts[&stuck.into()], 0, "{f}: {stuck} was stopped");
        assert_eq!(r.requests_failed, 0, "{f}");
        assert!(r.knobs_restored, "{f}");
    }
}

#[test]
fn a_crash_of_another_node_is_reported_not_hidden() {
    // A replica server crashes while another is being rolled: two nodes are down at once,
    // which the monitor reports; the rollout still completes once the crashed one is back.
    let r = run(&with(Flavor::Pegasus, "crash:node=2,at=30"), Strategy::Ha);
    assert!(r.completed, "{:?}", r.error);
    assert_eq!(r.max_replicas_down, 2);
    assert!(r.knobs_restored);
    // OpenMLDB with auto_failover off would never reload a tablet that restarted on its
    // own: the rollout gives auto_failover back at once, recovers what it missed, waits until
    // the cluster is healthy, then goes on.
    let (r, restarts) =
        run_with_restarts(&with(Flavor::OpenMldb, "crash:node=2,at=30"), Strategy::Ha);
    assert!(r.completed, "{:?}", r.error);
    assert!(r.knobs_restored);
    assert!(restarts.values().all(|&n| n == 1), "{restarts:?}");
}

#[test]
fn a_coordinator_losing_contact_with_a_node_ends_with_knobs_restored() {
    for f in BOTH {
        let r = run(&with(f, "partition:node=3,at=20,for=40"), Strategy::Ha);
        assert!(r.knobs_restored, "{f}");
        assert!(r.max_restarts_per_node <= 1, "{f}");
        if !r.completed {
            assert!(r.error.unwrap().contains("node "), "{f}");
        }
    }
}

#[test]
fn an_orchestrator_crash_at_every_step_resumes_without_double_restarts() {
    for f in BOTH {
        let total = run(&SimBuilder::new(f).seed(5).clone(), Strategy::Ha).journal_records;
        assert!(total > 30, "{f}: {total} records");
        for step in 1..total {
            let r = run(
                &with(f, &format!("orchestrator-crash:step={step}")),
                Strategy::Ha,
            );
            assert!(r.completed, "{f} step {step}: {:?}", r.error);
            // The closing knob restores are written back to back, with no await between
            // them: a crash there lands after the rollout has finished.
            assert!(
                r.resumed || step + 6 >= total,
                "{f} step {step}: no crash happened"
            );
            assert!(r.knobs_restored, "{f} step {step}");
            assert_eq!(r.max_restarts_per_node, 1, "{f} step {step}");
            assert_eq!(r.restarts, r.nodes as u64, "{f} step {step}");
            assert!(r.max_replicas_down <= 1, "{f} step {step}");
            assert_eq!(r.requests_failed, 0, "{f} step {step}");
        }
    }
}
