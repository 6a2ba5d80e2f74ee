//! Properties over generated shapes, seeds, fault schedules and orchestrator crash points.
//! A failing case prints its generated input, seed included; `proptest-regressions/` keeps it.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use proptest::prelude::*;
use rollout_sim::{Fault, Flavor, NodeRef, Placement, SimBuilder, SimReport, Strategy as Rollout};
use support::run;

#[derive(Debug, Clone)]
struct Case {
    flavor: Flavor,
    seed: u64,
    data: usize,
    partitions: usize,
    racks: usize,
    rack_aware: bool,
    faults: Vec<Fault>,
}

impl Case {
    fn builder(&self) -> SimBuilder {
        let mut b = SimBuilder::new(self.flavor);
        b.seed(self.seed)
            .data_nodes(self.data)
            .partitions(self.partitions)
            .racks(self.racks)
            .placement(if self.rack_aware {
                Placement::RackAware
            } else {
                Placement::Random
            });
        for f in &self.faults {
            b.fault(f.clone());
        }
        b
    }
}

/// Faults that leave a well-run rollout able to keep every partition at most one replica
/// down: transient control-plane errors, a coordinator failover, a slow start, and a crash of
/// the orchestrator itself.
fn benign(data: usize) -> impl Strategy<Value = Vec<Fault>> {
    let one = prop_oneof![
        (0.0f64..0.3).prop_map(|p| Fault::Transient { p }),
        (0u64..900).prop_map(|s| Fault::LeaderFailover {
            at: Duration::from_secs(s)
        }),
        (1..=data, 1u64..120).prop_map(|(n, s)| Fault::SlowStart {
            node: NodeRef::Data(n),
            extra: Duration::from_secs(s)
        }),
        (1usize..80).prop_map(|step| Fault::OrchestratorCrash { step }),
    ];
    proptest::collection::vec(one, 0..3)
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(Flavor::Pegasus), Just(Flavor::OpenMldb)],
        any::<u64>(),
        3usize..12,
        1usize..80,
        any::<bool>(),
    )
        .prop_flat_map(|(flavor, seed, data, partitions, rack_aware)| {
            let racks = if rack_aware { 3 } else { 1 };
            benign(data).prop_map(move |faults| Case {
                flavor,
                seed,
                data,
                partitions,
                racks,
                rack_aware,
                faults,
            })
        })
}

fn check_invariants(c: &Case, r: &SimReport) -> Result<(), TestCaseError> {
    prop_assert!(r.completed, "seed {}: {:?}", c.seed, r.error);
    prop_assert!(
        r.max_replicas_down <= 1,
        "seed {}: {} replicas down",
        c.seed,
        r.max_replicas_down
    );
    prop_assert!(r.knobs_restored, "seed {}: knobs not restored", c.seed);
    prop_assert!(
        r.virtual_secs >= r.physical_bound_secs && r.physical_bound_secs > 0.0,
        "seed {}: {} s below the physical bound {} s",
        c.seed,
        r.virtual_secs,
        r.physical_bound_secs
    );
    prop_assert!(
        r.max_restarts_per_node <= 1,
        "seed {}: a node restarted twice",
        c.seed
    );
    prop_assert_eq!(
        r.restarts,
        r.nodes as u64,
        "seed {}: not every node restarted",
        c.seed
    );
    if c.flavor == Flavor::Pegasus {
        prop_assert_eq!(
            r.writes_lost,
            0,
            "seed {}: acknowledged writes lost",
            c.seed
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ha_keeps_the_invariants_under_benign_faults(c in case()) {
        let r = run(&c.builder(), Rollout::Ha);
        check_invariants(&c, &r)?;
        prop_assert!(r.lower_bound_secs <= r.virtual_secs);
        // Retry backoff and the resumed orchestrator's restart delay are idle time: only
        // runs without them hold the 5 % bar.
        let idle_faults = c.faults.iter().any(|f| {
            matches!(f, Fault::Transient { .. } | Fault::OrchestratorCrash { .. })
        });
        if !idle_faults {
            prop_assert!(r.virtual_secs <= r.lower_bound_secs * 1.05 + 1.0, "{r:?}");
        }
    }

    #[test]
    fn waves_keep_the_invariants_under_benign_faults(c in case()) {
        let r = run(&c.builder(), Rollout::Waves);
        check_invariants(&c, &r)?;
    }

    #[test]
    fn a_halted_rollout_names_its_node_and_reason(seed in any::<u64>(), node in 1usize..6, flavor in prop_oneof![Just(Flavor::Pegasus), Just(Flavor::OpenMldb)]) {
        let mut b = SimBuilder::new(flavor);
        b.seed(seed).fault(Fault::StuckDrain { node: NodeRef::Data(node) });
        let r = run(&b, Rollout::Ha);
        prop_assert!(!r.completed);
        let err = r.error.clone().unwrap_or_default();
        prop_assert!(err.contains("node "), "seed {seed}: {err}");
        prop_assert!(err.contains("timed out"), "seed {seed}: {err}");
        prop_assert!(r.knobs_restored, "seed {seed}");
        prop_assert!(r.max_restarts_per_node <= 1, "seed {seed}");
    }
}

/// Any fault of docs/contracts.md ("Faults"), several at once, any policy.
fn any_fault(data: usize) -> impl Strategy<Value = Fault> {
    let node = move || (1..=data).prop_map(NodeRef::Data);
    let secs = |hi: u64| (0..hi).prop_map(Duration::from_secs);
    prop_oneof![
        (node(), secs(900)).prop_map(|(node, at)| Fault::Crash { node, at }),
        (node(), secs(120)).prop_map(|(node, extra)| Fault::SlowStart { node, extra }),
        node().prop_map(|node| Fault::FailStart { node }),
        node().prop_map(|node| Fault::StuckDrain { node }),
        secs(900).prop_map(|at| Fault::LeaderFailover { at }),
        (0.0f64..0.5).prop_map(|p| Fault::Transient { p }),
        (node(), secs(600), secs(120)).prop_map(|(node, at, duration)| Fault::Partition {
            node,
            at,
            duration
        }),
        (1usize..80).prop_map(|step| Fault::OrchestratorCrash { step }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Whatever goes wrong, the rollout ends with its knobs restored (unless it halted on
    /// purpose, keeping them for the resume), no node restarted twice, and an error that
    /// names a node or the cluster when it did not complete.
    #[test]
    fn any_fault_mix_keeps_knobs_and_the_one_restart_rule(
        flavor in prop_oneof![Just(Flavor::Pegasus), Just(Flavor::OpenMldb)],
        seed in any::<u64>(),
        (data, faults) in (3usize..9).prop_flat_map(|d| {
            (Just(d), proptest::collection::vec(any_fault(d), 1..4))
        }),
        partitions in 1usize..60,
        strategy in prop_oneof![Just(Rollout::Naive), Just(Rollout::Ha), Just(Rollout::Waves), Just(Rollout::Script)],
    ) {
        let mut b = SimBuilder::new(flavor);
        b.seed(seed).data_nodes(data).partitions(partitions);
        for f in &faults {
            b.fault(f.clone());
        }
        let r = run(&b, strategy);
        if r.completed {
            // No roll finishes below what no procedure can avoid.
            prop_assert!(
                r.virtual_secs >= r.physical_bound_secs,
                "seed {seed} {strategy}: {} s below the physical bound {} s",
                r.virtual_secs,
                r.physical_bound_secs
            );
        }
        if strategy == Rollout::Script {
            return Ok(());
        }
        prop_assert!(r.max_restarts_per_node <= 1, "seed {seed}: a node restarted twice");
        if r.outcome != "halted" {
            prop_assert!(r.knobs_restored, "seed {seed}: knobs not restored: {:?}", r.error);
        }
        if !r.completed {
            let err = r.error.clone().unwrap_or_default();
            prop_assert!(err.contains("node ") || err.contains("cluster") || err.contains("tablet"), "seed {seed}: {err}");
        }
    }
}
