//! The ledger under forced leader changes, on the world itself.

use std::time::Duration;

use proptest::prelude::*;

use super::{Op, OpenMldb, Rep, Us, us};
use crate::{ClientLoad, Flavor, SimBuilder};

/// A current-thread runtime on tokio's paused clock: virtual time only.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Writes flow for `warm_ms`, then pause until replication has carried them all; the chosen
/// follower is cut off from replication (marked alive while behind, as RecoverTable leaves it);
/// writes flow again for `more_ms` and stop; then a ChangeLeader with that follower as explicit
/// candidate runs. The run loses exactly the writes acknowledged while the follower was cut
/// off, counted from the acknowledgements, not from any replica's log.
fn forced_promotion_loses_what_the_candidate_lacks(seed: u64, warm_ms: u64, more_ms: u64) {
    let rt = paused_runtime();
    rt.block_on(async {
        let mut load = ClientLoad::at_rate(400);
        load.writes_per_mille = 1000;
        let sim = SimBuilder::new(Flavor::OpenMldb)
            .seed(seed)
            .data_nodes(3)
            .partitions(1)
            .load(load)
            .build()
            .expect("shape");
        tokio::time::sleep(Duration::from_millis(warm_ms)).await;
        sim.lock().clients.stop();
        // Longer than the replication lag and the client timeout: every ack is replicated.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (leader, follower, before) = {
            let mut w = sim.lock();
            w.replicate(0);
            let leader = w.primary(0).expect("a leader").node;
            let f = w.parts[0]
                .replicas
                .iter()
                .position(|r| r.role == Rep::Secondary)
                .expect("a follower");
            w.parts[0].replicas[f].behind_until = Us::MAX;
            let now = w.now;
            w.clients.resume(now);
            (leader, w.parts[0].replicas[f].node, w.mon.writes_acked)
        };
        tokio::time::sleep(Duration::from_millis(more_ms)).await;
        let lacks = {
            let mut w = sim.lock();
            w.clients.stop();
            w.set_knob_for_test("auto_failover", "false");
            let op = Op::ChangeLeader {
                part: 0,
                from: leader,
                to: Some(follower),
            };
            OpenMldb::with(&mut w, |m, w| m.enqueue(w, op)).expect("an OpenMLDB world");
            w.mon.writes_acked - before
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        let truth = sim.truth();
        assert_eq!(
            truth.monitor.writes_lost, lacks,
            "seed {seed}: warm {warm_ms} ms, then {more_ms} ms cut off"
        );
        assert_eq!(sim.lock().primary(0).map(|r| r.node), Some(follower));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_forced_promotion_of_a_lagging_replica_loses_exactly_what_it_lacks(
        seed in any::<u64>(),
        warm_ms in 0u64..5_000,
        more_ms in 0u64..5_000,
    ) {
        forced_promotion_loses_what_the_candidate_lacks(seed, warm_ms, more_ms);
    }
}

#[test]
fn a_promotion_of_a_caught_up_follower_loses_nothing() {
    forced_promotion_loses_what_the_candidate_lacks(7, 3_000, 0);
}

#[test]
fn us_saturates() {
    assert_eq!(us(Duration::MAX), Us::MAX);
}

/// Writes flow without pause at `rate` per second; after `warm_ms` one leader move runs, fenced
/// or as upstream's plain ChangeLeader with no candidate, and writes keep flowing for ten
/// seconds. Returns the writes lost and whether the leadership moved.
fn move_under_writes(seed: u64, rate: u32, warm_ms: u64, fenced: bool) -> (u64, bool) {
    let rt = paused_runtime();
    rt.block_on(async {
        let mut load = ClientLoad::at_rate(rate);
        load.writes_per_mille = 1000;
        let sim = SimBuilder::new(Flavor::OpenMldb)
            .seed(seed)
            .data_nodes(3)
            .partitions(1)
            .load(load)
            .build()
            .expect("shape");
        tokio::time::sleep(Duration::from_millis(warm_ms)).await;
        let leader = {
            let mut w = sim.lock();
            w.set_knob_for_test("auto_failover", "false");
            let leader = w.primary(0).expect("a leader").node;
            let op = if fenced {
                Op::FencedMove {
                    part: 0,
                    from: leader,
                    to: None,
                }
            } else {
                Op::ChangeLeader {
                    part: 0,
                    from: leader,
                    to: None,
                }
            };
            OpenMldb::with(&mut w, |m, w| m.enqueue(w, op)).expect("an OpenMLDB world");
            leader
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        sim.lock().clients.stop();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let moved = sim.lock().primary(0).is_some_and(|r| r.node != leader);
        (sim.truth().monitor.writes_lost, moved)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn a_fenced_move_under_steady_writes_loses_nothing(
        seed in any::<u64>(),
        rate in 1u32..400,
        warm_ms in 0u64..3_000,
    ) {
        let (lost, moved) = move_under_writes(seed, rate, warm_ms, true);
        prop_assert_eq!(lost, 0);
        prop_assert!(moved);
    }
}

#[test]
fn an_unfenced_move_under_the_same_writes_loses_some() {
    let (lost, moved) = move_under_writes(7, 200, 1_000, false);
    assert!(moved);
    assert!(
        lost > 0,
        "the deposed leader took writes for the route refresh"
    );
    let (lost, moved) = move_under_writes(7, 200, 1_000, true);
    assert!(moved);
    assert_eq!(lost, 0);
}

/// A RecoverTable of a follower with nothing loaded, while its partition's leader is down and
/// auto failover is off, fails (`RecoverEndpointTable` finds no alive leader, @v0.9.2): the
/// stale replica does not become the leader, and the writes only the down leader and the
/// other follower hold are not lost.
#[test]
fn a_recovery_without_an_alive_leader_fails_and_promotes_nothing() {
    let rt = paused_runtime();
    rt.block_on(async {
        let mut load = ClientLoad::at_rate(200);
        load.writes_per_mille = 1000;
        let sim = SimBuilder::new(Flavor::OpenMldb)
            .seed(3)
            .data_nodes(3)
            .partitions(1)
            .load(load)
            .build()
            .expect("shape");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (leader, stale) = {
            let mut w = sim.lock();
            w.set_knob_for_test("auto_failover", "false");
            let leader = w.primary(0).expect("a leader").node;
            let stale = w.parts[0]
                .replicas
                .iter()
                .find(|r| r.role == Rep::Secondary)
                .expect("a follower")
                .node;
            // The follower's tablet restarts: it has nothing loaded and misses what follows.
            w.process_gone(stale);
            (leader, stale)
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        {
            let mut w = sim.lock();
            w.clients.stop();
            w.replicate(0);
            w.process_gone(leader);
            let r = w.parts[0]
                .replicas
                .iter_mut()
                .find(|r| r.node == stale)
                .expect("the stale replica");
            r.role = Rep::Inactive;
            w.nodes[stale as usize].running = true;
            w.nodes[stale as usize].serving = true;
            w.note_liveness(stale);
            let op = Op::RecoverTable {
                part: 0,
                node: stale,
            };
            OpenMldb::with(&mut w, |m, w| m.enqueue(w, op)).expect("an OpenMLDB world");
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let w = sim.lock();
        let r = w.parts[0]
            .replicas
            .iter()
            .find(|r| r.node == stale)
            .expect("the stale replica");
        assert_eq!((r.role, r.loaded), (Rep::Inactive, false));
        assert!(
            w.primary(0).is_some_and(|p| p.node == leader),
            "the down leader keeps its flag"
        );
        drop(w);
        assert_eq!(sim.truth().monitor.writes_lost, 0);
    });
}

/// A replica server dies, then the meta leader fails over before the old leader declared
/// it dead. The new leader registers it as just heard from (`meta_service::start_service`
/// @v2.4.0, @v2.5.0, master): ALIVE, its primaries left in place, and the cluster's health
/// not to be read from its node list, until `fd_grace_seconds` plus a check interval after
/// the election; only then is it declared dead and its primaries moved. Without the
/// failover it is declared dead `fd_grace_seconds` after its crash.
#[test]
fn a_new_pegasus_meta_leader_holds_a_crashed_node_alive_until_its_grace_has_run() {
    use rollout_core::{Health, RoleKind};

    let rt = paused_runtime();
    rt.block_on(async {
        let world = |failover: bool| {
            let sim = SimBuilder::new(Flavor::Pegasus)
                .seed(3)
                .data_nodes(4)
                .partitions(8)
                .build()
                .expect("shape");
            let crashed = {
                let mut w = sim.lock();
                let d = (0..w.nodes.len() as u32)
                    .find(|&n| w.nodes[n as usize].kind == RoleKind::Data)
                    .expect("a replica server");
                // Gone for good (no supervisor brings it back).
                w.process_gone(d);
                if failover {
                    w.schedule(us(Duration::from_secs(3)), super::Ev::LeaderFailover);
                }
                d
            };
            (sim, crashed)
        };
        let primaries_on = |w: &super::World, n: u32| {
            (0..w.parts.len() as u32)
                .filter(|&p| w.primary(p).is_some_and(|r| r.node == n))
                .count()
        };
        let (quiet, q) = world(false);
        let (failed_over, f) = world(true);
        let had = primaries_on(&failed_over.lock(), f);
        assert!(had > 0, "the crashed node led some partitions");
        // 30 s: past the crash's own grace (22 s), inside the new leader's (elected at 13 s).
        tokio::time::sleep(Duration::from_secs(30)).await;
        {
            let w = quiet.lock();
            assert!(
                w.nodes[q as usize].offline,
                "declared dead 22 s after its crash"
            );
        }
        {
            let w = failed_over.lock();
            let n = &w.nodes[f as usize];
            assert!(n.attached && !n.offline, "ALIVE to the new leader");
            assert_eq!(primaries_on(&w, f), had, "its primaries stay put");
            match super::conditions::eval(&w, super::conditions::Kind::FullyHealthy, None, true) {
                Health::Waiting(why) => assert!(why.contains("election grace"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        // 13 s + 24 s: declared dead; the primaries move at the following ticks.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let w = failed_over.lock();
        assert!(
            w.nodes[f as usize].offline,
            "declared dead once the grace has run"
        );
        assert_eq!(primaries_on(&w, f), 0, "its primaries moved");
    });
}

/// A tablet asked for a partition it is loading answers as its `CheckTable` does: the table
/// exists and is a follower (103), not missing (100).
#[test]
fn a_tablet_loading_a_replica_answers_follower_not_missing() {
    let rt = paused_runtime();
    rt.block_on(async {
        let sim = SimBuilder::new(Flavor::OpenMldb)
            .seed(7)
            .data_nodes(4)
            .partitions(1)
            .build()
            .expect("shape");
        let node = {
            let w = sim.lock();
            let holders: Vec<u32> = w.parts[0].replicas.iter().map(|r| r.node).collect();
            let n = (0..w.nodes.len() as u32)
                .find(|&n| {
                    w.nodes[n as usize].kind == rollout_core::RoleKind::Data
                        && !holders.contains(&n)
                })
                .expect("a tablet without the partition");
            w.nodes[n as usize].id.clone()
        };
        let code = |sim: &crate::SimCluster| sim.openmldb_put_check(1, 0, &node).err().map(|e| e.0);
        assert_eq!(code(&sim), Some(100));
        let add = crate::emulation_openmldb::NsOp::AddReplica {
            table: 1,
            pid: 0,
            node: node.clone(),
        };
        sim.openmldb_op(&add).expect("AddReplicaNS taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = node_index(&sim, &node);
        assert!(
            sim.lock().parts[0]
                .replicas
                .iter()
                .all(|r| r.node != n || !r.loaded),
            "the copy is still loading"
        );
        assert_eq!(code(&sim), Some(103), "loading, as a follower");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(code(&sim), Some(103), "loaded, a follower");
    });
}

fn node_index(sim: &crate::SimCluster, id: &rollout_core::NodeId) -> u32 {
    let w = sim.lock();
    (0..w.nodes.len() as u32)
        .find(|&n| &w.nodes[n as usize].id == id)
        .expect("a node")
}

/// The Pegasus meta counts a secondary it is adding (a learner here) as a replica of its node
/// from the cure that assigned it (`newly_add_partition` in
/// `partition_guardian::on_missing_secondary`), so a node re-learning after its restart does
/// not look less loaded to `on_missing_primary` (`newly_partitions::less_primaries`).
#[test]
fn a_learner_counts_as_a_replica_when_the_meta_picks_a_primary() {
    use super::Replica;

    let found = (1..64u64).find_map(|seed| {
        let sim = SimBuilder::new(Flavor::Pegasus)
            .seed(seed)
            .data_nodes(5)
            .partitions(32)
            .build()
            .expect("shape");
        let mut w = sim.lock();
        for p in 0..w.parts.len() as u32 {
            let secondaries: Vec<u32> = w.parts[p as usize]
                .replicas
                .iter()
                .filter(|r| r.role == Rep::Secondary)
                .map(|r| r.node)
                .collect();
            let [a, b] = secondaries[..] else { continue };
            // The first secondary wins without learners, and would lose with enough of them.
            let (ka, kb) = (w.meta_load(a, 0), w.meta_load(b, 0));
            if !(ka <= kb && ka.0 == kb.0) {
                continue;
            }
            let room: Vec<u32> = (0..w.parts.len() as u32)
                .filter(|&q| q != p && w.parts[q as usize].replicas.iter().all(|r| r.node != a))
                .collect();
            let need = (kb.1 - ka.1 + 1) as usize;
            if room.len() < need {
                continue;
            }
            for &q in &room[..need] {
                w.parts[q as usize]
                    .replicas
                    .push(Replica::new(a, Rep::Learner));
                w.touch(q);
            }
            // The primary is gone from the configuration: the meta picks one of the two.
            if let Some(r) = w.parts[p as usize]
                .replicas
                .iter_mut()
                .find(|r| r.role == Rep::Primary)
            {
                r.role = Rep::Inactive;
            }
            w.touch(p);
            assert!(w.promote(p, 0), "seed {seed}: a secondary is promoted");
            let chosen = w.primary(p).map(|r| r.node);
            return Some((seed, chosen, b));
        }
        None
    });
    let (seed, chosen, want) = found.expect("a seed with two tied secondaries");
    assert_eq!(
        chosen,
        Some(want),
        "seed {seed}: the node with learners is passed over"
    );
}
