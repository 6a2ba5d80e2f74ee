//! Single-replica tables (issue 8, part B): the OpenMLDB seed's two choices, a temporary
//! replica added before the drain and removed after the rejoin, or the named tables' downtime
//! accepted; Pegasus tables below 3 replicas refused unless accepted by name; and the bad
//! input around both.

#[path = "support.rs"]
mod support;

use rollout_core::{
    Change, Error, MemoryJournal, Policy, Run, Spec, abort, event::Ignore, journal::Entry, plan,
    roll,
};
use rollout_sim::{Fault, Flavor, SimBuilder, SimReport, Strategy as Rollout, simulate};
use support::{paused_runtime, run_with_restarts};

fn single(flavor: Flavor, seed: u64) -> SimBuilder {
    let mut b = SimBuilder::new(flavor);
    b.seed(seed).replicas(1);
    b
}

fn run_policy(b: &SimBuilder, policy: impl Fn(Policy) -> Policy) -> SimReport {
    paused_runtime().block_on(async {
        let spec = Rollout::Ha.spec(Change::Restart, b.get_data_nodes());
        let spec = spec.clone().policy(policy(spec.policy.clone()));
        simulate(b, Rollout::Ha, &spec, &Ignore).await.unwrap().1
    })
}

#[test]
fn temporary_replicas_keep_openmldb_single_replica_tables_available() {
    for seed in [1, 7, 42] {
        let (r, restarts) = run_with_restarts(&single(Flavor::OpenMldb, seed), Rollout::Ha);
        assert!(r.completed, "seed {seed}: {r:?}");
        assert_eq!(r.requests_failed, 0, "seed {seed}");
        // Only the fences: each leader move (to the temporary replica and back) refuses the
        // partition's writes for about one op, which clients ride out by retrying.
        let moves = 2.0 * r.partitions as f64;
        assert!(
            r.unavailable_partition_secs <= moves * 1.2,
            "seed {seed}: {} partition-seconds",
            r.unavailable_partition_secs
        );
        assert!(
            r.unavailable_tables.values().sum::<f64>() <= moves * 1.2,
            "seed {seed}: {:?}",
            r.unavailable_tables
        );
        // Every partition's only replica sits on one tablet: each one needs a temporary
        // replica once, when that tablet restarts.
        assert_eq!(r.replicas_added, r.partitions as u64, "seed {seed}");
        assert_eq!(
            r.extra_replicas, 0,
            "seed {seed}: a temporary replica left behind"
        );
        assert!(restarts.values().all(|&n| n <= 1));
        assert!(r.knobs_restored);
    }
}

#[test]
fn turning_temporary_replicas_off_refuses_single_replica_tables_unless_accepted() {
    let b = single(Flavor::OpenMldb, 7);
    let r = run_policy(&b, |p| p.temporary_replicas(false));
    assert_eq!(r.outcome, "aborted", "{r:?}");
    assert!(r.error.unwrap().contains("no replica left"));
    assert_eq!(r.restarts, 0, "refused before anything is touched");
    let r = run_policy(&b, |p| {
        p.temporary_replicas(false).accept_unavailable(["t1"])
    });
    assert!(r.completed, "{r:?}");
    assert_eq!(r.replicas_added, 0);
}

#[test]
fn accepting_every_tables_downtime_adds_no_temporary_replica_and_takes_them_down() {
    // The counterfactual of the first test: the downtime accepted instead of copies made.
    let mut b = single(Flavor::OpenMldb, 7);
    b.tables(4);
    let r = run_policy(&b, |p| p.accept_unavailable(["t1", "t2", "t3", "t4"]));
    assert!(r.completed, "{r:?}");
    assert_eq!(r.replicas_added, 0);
    assert!(r.unavailable_partition_secs > 0.0);
    assert_eq!(r.unavailable_tables.len(), 4, "{:?}", r.unavailable_tables);
}

#[test]
fn accepted_tables_are_the_only_ones_unavailable_and_are_reported() {
    let mut b = single(Flavor::OpenMldb, 7);
    b.tables(4);
    let r = run_policy(&b, |p| p.accept_unavailable(["t2"]));
    assert!(r.completed, "{r:?}");
    // t2 goes down with each restart; the others only for their leader moves' fences, about
    // one second per move, two moves per partition.
    let t2 = r.unavailable_tables["t2"];
    for (table, secs) in &r.unavailable_tables {
        if table != "t2" {
            assert!(*secs <= 2.0 * 16.0 * 1.2, "{table}: {secs} s; {r:?}");
            assert!(*secs * 5.0 < t2, "{table}: {secs} s against t2's {t2} s");
        }
    }
    // t1, t3 and t4 went through temporary replicas: 3 of 4 tables' partitions.
    assert_eq!(r.replicas_added, 48);
    assert_eq!(r.extra_replicas, 0);
}

#[test]
fn the_plan_shows_temporary_replicas_with_their_cost_and_accepted_tables_by_name() {
    paused_runtime().block_on(async {
        let mut b = single(Flavor::OpenMldb, 7);
        b.tables(2);
        let sim = b.build().unwrap();
        let spec = Spec::new(Change::Restart).policy(Policy::default().accept_unavailable(["t2"]));
        let p = plan(&sim, &spec).await.unwrap();
        assert_eq!(p.temporary_replicas.len(), 32, "t1's partitions");
        assert!(
            p.temporary_replicas
                .iter()
                .all(|t| t.table.as_deref() == Some("t1"))
        );
        assert!(p.temporary_replicas.iter().all(|t| t.from != t.to));
        assert_eq!(p.accepted_unavailable.len(), 1);
        assert_eq!(p.accepted_unavailable[0].table, "t2");
        assert_eq!(p.accepted_unavailable[0].partitions, 32);
        let text = p.to_string();
        assert!(
            text.contains("temporary replica(s), each costing its node one partition's memory"),
            "{text}"
        );
        assert!(
            text.contains("accepted unavailable: table t2 (32 partition(s))"),
            "{text}"
        );
        assert!(
            text.contains("add replica -> wait replica -> drain"),
            "{text}"
        );
        assert!(text.contains("wait rejoined -> remove replica"), "{text}");
        // A dry run touches nothing.
        assert_eq!(sim.truth().monitor.replicas_added, 0);
    });
}

#[test]
fn pegasus_tables_below_three_replicas_are_refused_unless_accepted_by_name() {
    for replicas in [1, 2] {
        let mut b = SimBuilder::new(Flavor::Pegasus);
        b.seed(3).replicas(replicas).tables(2);
        let r = run_policy(&b, |p| p);
        assert_eq!(r.outcome, "aborted", "{replicas} replicas: {r:?}");
        let err = r.error.unwrap();
        assert!(err.contains("accept its downtime by name"), "{err}");
        assert_eq!(r.restarts, 0, "refused before anything is touched");
        // Accepting one table is not enough: the other still blocks.
        let r = run_policy(&b, |p| p.accept_unavailable(["t1"]));
        assert_eq!(r.outcome, "aborted", "{replicas} replicas");
        assert!(r.error.unwrap().contains("table t2"));
        let r = run_policy(&b, |p| p.accept_unavailable(["t1", "t2"]));
        assert!(r.completed, "{replicas} replicas: {r:?}");
        assert_eq!(r.max_restarts_per_node, 1);
        assert_eq!(r.replicas_added, 0, "Pegasus adds no temporary replicas");
        assert!(!r.unavailable_tables.is_empty());
    }
}

#[test]
fn an_unknown_accepted_table_is_refused_before_anything_is_touched() {
    paused_runtime().block_on(async {
        let sim = single(Flavor::OpenMldb, 1).build().unwrap();
        let journal = MemoryJournal::new();
        let spec =
            Spec::new(Change::Restart).policy(Policy::default().accept_unavailable(["orders"]));
        let err = roll(&sim, &spec, Run::new(&journal)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidPolicy(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("\"orders\"") && msg.contains("tables: t1"),
            "{msg}"
        );
        assert!(journal.entries().is_empty());
        assert!(sim.truth().restarts.values().all(|&n| n == 0));
    });
}

#[test]
fn no_room_for_a_temporary_replica_is_refused_before_anything_is_touched() {
    paused_runtime().block_on(async {
        // One tablet: nowhere else to put a copy.
        let mut b = single(Flavor::OpenMldb, 1);
        b.data_nodes(1);
        let sim = b.build().unwrap();
        let journal = MemoryJournal::new();
        let err = roll(&sim, &Spec::new(Change::Restart), Run::new(&journal))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no room for a temporary replica"), "{msg}");
        assert!(msg.contains("no other data node is alive"), "{msg}");
        assert!(journal.entries().is_empty());
        // A per-node limit too small for the spread.
        let sim = single(Flavor::OpenMldb, 1).build().unwrap();
        let journal = MemoryJournal::new();
        let spec = Spec::new(Change::Restart).policy(Policy::default().temporary_replica_limit(1));
        let msg = roll(&sim, &spec, Run::new(&journal))
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("temporary_replica_limit"), "{msg}");
        assert!(journal.entries().is_empty());
        assert!(sim.truth().restarts.values().all(|&n| n == 0));
    });
}

#[test]
fn a_failed_start_keeps_the_temporary_replicas_and_abort_removes_them_once_the_tablet_serves() {
    paused_runtime().block_on(async {
        let mut b = single(Flavor::OpenMldb, 1);
        b.fault("fail-start:node=1".parse::<Fault>().unwrap());
        let sim = b.build().unwrap();
        let journal = MemoryJournal::new();
        let err = roll(&sim, &Spec::new(Change::Restart), Run::new(&journal))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exited after its start"), "{err}");
        // The crash-looping tablet does not serve: its temporary replicas are the only
        // copies, so they stay, and the journal stays open for `abort`.
        let kept = sim.truth().monitor.extra_replicas;
        assert!(kept > 0);
        let open = rollout_core::journal::Resume::from_entries(&journal.entries());
        assert_eq!(open.temporaries.len() as u64, kept);
        // The operator fixes the tablet; abort brings it back and removes them.
        sim.fix_start("tablet-1:10921");
        assert!(abort(&sim, Run::new(&journal)).await.unwrap());
        assert_eq!(sim.truth().monitor.extra_replicas, 0);
        assert!(matches!(journal.entries().last(), Some(Entry::End { .. })));
    });
}

#[test]
fn an_orchestrator_crash_at_every_step_leaves_no_temporary_replica_behind() {
    let mut b = single(Flavor::OpenMldb, 5);
    b.data_nodes(3).partitions(16).tables(2);
    let policy = |p: Policy| p.accept_unavailable(["t2"]);
    let clean = run_policy(&b, policy);
    assert!(clean.completed, "{clean:?}");
    assert!(clean.replicas_added > 0);
    for step in 1..clean.journal_records {
        let mut c = b.clone();
        c.fault(
            format!("orchestrator-crash:step={step}")
                .parse::<Fault>()
                .unwrap(),
        );
        let r = run_policy(&c, policy);
        assert!(r.completed, "crash at step {step}: {r:?}");
        assert_eq!(r.extra_replicas, 0, "crash at step {step}");
        assert_eq!(r.max_restarts_per_node, 1, "crash at step {step}");
        assert!(r.knobs_restored, "crash at step {step}");
        // t1 is down only for its fences (about a second per leader move).
        let t1 = r.unavailable_tables.get("t1").copied().unwrap_or(0.0);
        assert!(
            t1 <= 4.0 * 8.0 * 1.2,
            "crash at step {step}: {:?}",
            r.unavailable_tables
        );
    }
}
