//! The Pegasus world as an emulator serves it ([`rollout_sim::emulation`]), on tokio's paused
//! clock: the meta's view of a crashed replica server, the balancer proposals across a
//! leader change, and a downgrade checked when it runs.

use std::time::Duration;

use rollout_core::NodeId;
use rollout_sim::emulation::{PartitionView, Proposal};
use rollout_sim::{Flavor, SimBuilder, SimCluster};

fn pegasus(replicas: usize) -> SimCluster {
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.seed(7).replicas(replicas);
    b.build().expect("a valid shape")
}

/// Partition 0 of table 1 now.
fn first(sim: &SimCluster) -> PartitionView {
    sim.view()
        .partitions
        .into_iter()
        .find(|p| p.table == 1 && p.index == 0)
        .expect("partition 1.0")
}

async fn after(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_replica_server_stays_alive_to_the_meta_until_failure_detection() {
    let sim = pegasus(3);
    let id = NodeId::new("replica-1:34801");
    assert!(sim.kill(&id));
    let v = sim.node_view(&id).unwrap();
    assert!(!v.running);
    assert!(
        v.alive,
        "the meta hears nothing yet: the node is still ALIVE to it"
    );
    // fd_grace_seconds (22 s) after its last beacon, the meta declares it dead.
    after(21.0).await;
    assert!(sim.node_view(&id).unwrap().alive);
    after(2.0).await;
    assert!(!sim.node_view(&id).unwrap().alive);
}

#[tokio::test(start_paused = true)]
async fn a_new_meta_leader_starts_with_no_pending_proposal() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, to) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    let move_primary = Proposal::MovePrimary {
        from: from.clone(),
        to: to.clone(),
    };
    sim.propose(1, 0, &move_primary).unwrap();
    // The leader dies before its next lb tick; another meta is elected.
    let old = sim.view().leader.unwrap();
    assert!(sim.kill(&old));
    after(10.5).await;
    let leader = sim.view().leader.expect("a new leader");
    assert_ne!(leader, old);
    // The proposal lived in the old leader's memory: nothing moved, nothing is pending.
    assert_eq!(first(&sim).primary.as_ref(), Some(&from));
    sim.propose(1, 0, &move_primary).unwrap();
    // The demote at the new leader's next tick, the promote on its reply.
    after(12.0).await;
    assert_eq!(first(&sim).primary.as_ref(), Some(&to));
}

#[tokio::test(start_paused = true)]
async fn clearing_the_proposals_forgets_the_pending_ones() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, to) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    sim.propose(
        1,
        0,
        &Proposal::MovePrimary {
            from: from.clone(),
            to,
        },
    )
    .unwrap();
    sim.clear_proposals();
    // The next tick has nothing to run.
    after(10.5).await;
    assert_eq!(first(&sim).primary.as_ref(), Some(&from));
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_whose_target_is_not_the_primary_is_dropped_when_it_runs() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (a, b) = (p.secondaries[0].clone(), p.secondaries[1].clone());
    // The primary moved since the proposal was made: the target is a secondary now.
    let stale = Proposal::Downgrade {
        target: a.clone(),
        node: b.clone(),
    };
    sim.propose(1, 0, &stale).unwrap();
    after(10.5).await;
    let now = first(&sim);
    assert_eq!(now.secondaries, vec![a, b.clone()]);
    // Dropped, not pending.
    let fresh = Proposal::Downgrade {
        target: now.primary.clone().unwrap(),
        node: b,
    };
    sim.propose(1, 0, &fresh).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_runs_even_when_it_leaves_the_primary_alone() {
    let sim = pegasus(2);
    let p = first(&sim);
    let (primary, secondary) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    let down = Proposal::Downgrade {
        target: primary.clone(),
        node: secondary.clone(),
    };
    sim.propose(1, 0, &down).unwrap();
    after(10.5).await;
    let now = first(&sim);
    assert_eq!(now.primary, Some(primary));
    assert!(now.secondaries.is_empty(), "{now:?}");
    assert!(now.others.contains(&secondary), "{now:?}");
}

#[tokio::test(start_paused = true)]
async fn a_move_and_downgrade_list_drains_the_partition_within_one_tick() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, to) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    let list = Proposal::MoveThenDowngrade {
        from: from.clone(),
        to: to.clone(),
        target: to.clone(),
        node: from.clone(),
    };
    sim.propose(1, 0, &list).unwrap();
    // Three reconfigurations, each action sent on the reply to the one before: the demote at
    // the tick (10 s), leaving the partition without a primary; the promote of `to` half a
    // reconfiguration later (10.5 s: the two halves of a move take the 1 s the upstream doc
    // gives the migration); the downgrade of `from` (11.5 s); all long before the next tick.
    after(10.25).await;
    let demoted = first(&sim);
    assert_eq!(demoted.primary, None, "{demoted:?}");
    assert!(demoted.secondaries.contains(&from) && demoted.secondaries.contains(&to));
    after(0.5).await;
    assert_eq!(first(&sim).primary.as_ref(), Some(&to));
    assert!(first(&sim).secondaries.contains(&from));
    after(1.0).await;
    let now = first(&sim);
    assert_eq!(now.primary.as_ref(), Some(&to));
    assert!(!now.secondaries.contains(&from), "{now:?}");
    assert!(now.others.contains(&from), "{now:?}");
    // Nothing is left pending: a new proposal is taken.
    sim.propose(
        1,
        0,
        &Proposal::MovePrimary {
            from: to.clone(),
            to: from,
        },
    )
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_list_whose_downgrade_targets_the_old_primary_moves_and_then_drops_it() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, to) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    // An unset target is filled with the primary at registration: the old one, which no
    // longer leads once the move is done, so the downgrade is dropped.
    let list = Proposal::MoveThenDowngrade {
        from: from.clone(),
        to: to.clone(),
        target: from.clone(),
        node: from.clone(),
    };
    sim.propose(1, 0, &list).unwrap();
    after(12.0).await;
    let now = first(&sim);
    assert_eq!(now.primary.as_ref(), Some(&to));
    assert!(now.secondaries.contains(&from), "{now:?}");
}

#[tokio::test(start_paused = true)]
async fn a_move_whose_primary_changed_since_it_was_proposed_is_dropped_when_it_runs() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, a, b) = (
        p.primary.clone().unwrap(),
        p.secondaries[0].clone(),
        p.secondaries[1].clone(),
    );
    // Proposed as if `a` led: the demote of a node that is not the primary is invalid, so
    // the whole list goes and nothing moves.
    let stale = Proposal::MovePrimary {
        from: a.clone(),
        to: b.clone(),
    };
    sim.propose(1, 0, &stale).unwrap();
    after(10.5).await;
    assert_eq!(first(&sim).primary.as_ref(), Some(&from));
    // Dropped, not pending.
    sim.propose(1, 0, &Proposal::MovePrimary { from, to: b })
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_move_to_a_node_gone_dead_demotes_and_the_meta_promotes_another_secondary_at_once() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, to) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    // `to` dies; the meta declares it dead after fd_grace (22 s).
    assert!(sim.kill(&to));
    after(23.0).await;
    assert!(!sim.node_view(&to).unwrap().alive);
    let mv = Proposal::MovePrimary {
        from: from.clone(),
        to: to.clone(),
    };
    sim.propose(1, 0, &mv).unwrap();
    // At the tick (30 s) the demote runs. On its reply the promote of the dead `to` is
    // invalid: the meta clears the list and, in the same `cure`, promotes an alive
    // secondary (`on_missing_primary`), long before the next tick (40 s).
    after(7.25).await;
    assert_eq!(first(&sim).primary, None, "{:?}", first(&sim));
    after(0.5).await;
    let now = first(&sim);
    let primary = now.primary.clone().expect("promoted at once");
    assert_ne!(primary, to, "{now:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unrunnable_list_holds_the_slot_until_the_tick() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, to) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    sim.propose(1, 0, &Proposal::Unrunnable).unwrap();
    let mv = Proposal::MovePrimary { from, to };
    assert!(sim.propose(1, 0, &mv).is_err(), "one is pending");
    after(10.5).await;
    sim.propose(1, 0, &mv).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_promote_sent_to_a_crashed_node_is_lost_until_the_meta_declares_it_dead() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (from, to) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    let mv = Proposal::MovePrimary {
        from: from.clone(),
        to: to.clone(),
    };
    sim.propose(1, 0, &mv).unwrap();
    // The demote runs at the tick (10 s); `to` crashes before the promote. With no primary
    // nobody kicks it out, the meta still sees it ALIVE and sends it the upgrade, which
    // nothing answers.
    after(10.1).await;
    assert_eq!(first(&sim).primary, None, "{:?}", first(&sim));
    assert!(sim.kill(&to));
    after(0.65).await;
    assert_eq!(first(&sim).primary, None, "{:?}", first(&sim));
    // The next tick sends it again, lost again: still no primary.
    after(10.0).await;
    assert_eq!(first(&sim).primary, None, "{:?}", first(&sim));
    // Declared dead (22 s after its last beacon), the list no longer applies: the next tick
    // promotes another secondary.
    after(25.0).await;
    let now = first(&sim);
    assert!(now.primary.is_some() && now.primary != Some(to), "{now:?}");
}

#[tokio::test(start_paused = true)]
async fn a_demote_alone_is_followed_by_the_secondary_with_the_fewest_primaries() {
    let sim = pegasus(3);
    let view = sim.view();
    let primaries = |n: &NodeId, but: u32| {
        view.partitions
            .iter()
            .filter(|p| p.primary.as_ref() == Some(n) && !(p.table == 1 && p.index == but))
            .count()
    };
    let members = |n: &NodeId| {
        view.partitions
            .iter()
            .filter(|p| p.primary.as_ref() == Some(n) || p.secondaries.contains(n))
            .count()
    };
    // A partition whose first secondary is not the least loaded one, and whose least loaded
    // candidate (the old primary included) is unique.
    let (index, from, want) = view
        .partitions
        .iter()
        .filter(|p| p.table == 1)
        .find_map(|p| {
            let from = p.primary.clone()?;
            let mut load: Vec<((usize, usize), NodeId)> = p
                .secondaries
                .iter()
                .chain([&from])
                .map(|n| ((primaries(n, p.index), members(n)), n.clone()))
                .collect();
            load.sort();
            let unique = load.len() > 1 && load[0].0 < load[1].0;
            (unique && load[0].1 != p.secondaries[0]).then(|| (p.index, from, load[0].1.clone()))
        })
        .expect("such a partition");
    sim.propose(1, index, &Proposal::Demote { from }).unwrap();
    after(10.25).await;
    let part = |sim: &SimCluster| {
        sim.view()
            .partitions
            .into_iter()
            .find(|p| p.table == 1 && p.index == index)
            .unwrap()
    };
    assert_eq!(part(&sim).primary, None);
    // On the demote's reply the meta promotes at once (`on_missing_primary`).
    after(0.5).await;
    assert_eq!(part(&sim).primary, Some(want));
}

#[tokio::test(start_paused = true)]
async fn a_downgrade_of_a_secondary_refuses_reads_while_it_runs() {
    let sim = pegasus(3);
    let p = first(&sim);
    let (primary, secondary) = (p.primary.clone().unwrap(), p.secondaries[0].clone());
    assert!(sim.readable(1, 0, &primary));
    let down = Proposal::Downgrade {
        target: primary.clone(),
        node: secondary,
    };
    sim.propose(1, 0, &down).unwrap();
    // The primary is PS_INACTIVE while its configuration update is at the meta.
    after(10.5).await;
    assert!(!sim.readable(1, 0, &primary));
    after(1.0).await;
    assert!(sim.readable(1, 0, &primary));
}

/// The secondary the meta promotes after `from` is demoted from partition `(table, index)`,
/// ranked as `rank` orders a candidate's (table primaries, table members, primaries,
/// members), when one ranks first alone.
fn least_loaded(
    view: &rollout_sim::emulation::ClusterView,
    p: &PartitionView,
    from: &NodeId,
    rank: impl Fn((usize, usize, usize, usize)) -> (usize, usize, usize, usize),
) -> Option<NodeId> {
    let count = |n: &NodeId, same_table: bool, primary: bool| {
        view.partitions
            .iter()
            .filter(|q| !same_table || q.table == p.table)
            .filter(|q| !(q.table == p.table && q.index == p.index && primary))
            .filter(|q| q.primary.as_ref() == Some(n) || (!primary && q.secondaries.contains(n)))
            .count()
    };
    let mut load: Vec<_> = p
        .secondaries
        .iter()
        .chain([from])
        .map(|n| {
            let key = (
                count(n, true, true),
                count(n, true, false),
                count(n, false, true),
                count(n, false, false),
            );
            (rank(key), n.clone())
        })
        .collect();
    load.sort();
    (load.len() > 1 && load[0].0 < load[1].0).then(|| load[0].1.clone())
}

#[tokio::test(start_paused = true)]
async fn a_missing_primary_goes_to_the_secondary_with_the_fewest_primaries_of_its_table() {
    // A two-table cluster with a partition where the table's counts and the node's totals
    // pick different secondaries (`newly_partitions::less_primaries` ranks the table first).
    let (sim, table, index, from, want) = (1..64)
        .find_map(|seed| {
            let mut b = SimBuilder::new(Flavor::Pegasus);
            b.seed(seed).tables(2).partitions(16);
            let sim = b.build().expect("a valid shape");
            let view = sim.view();
            view.partitions
                .iter()
                .find_map(|p| {
                    let from = p.primary.clone()?;
                    let by_table = least_loaded(&view, p, &from, |k| k)?;
                    let by_total = least_loaded(&view, p, &from, |(_, _, tp, tm)| (tp, tm, 0, 0))?;
                    (by_table != by_total).then_some((p.table, p.index, from, by_table))
                })
                .map(|(table, index, from, want)| (sim, table, index, from, want))
        })
        .expect("a seed with such a partition");
    sim.propose(table, index, &Proposal::Demote { from })
        .unwrap();
    after(10.75).await;
    let now = sim
        .view()
        .partitions
        .into_iter()
        .find(|p| p.table == table && p.index == index)
        .unwrap();
    assert_eq!(now.primary, Some(want), "{now:?}");
}
