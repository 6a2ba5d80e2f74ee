//! The ledger under forced leader changes, on the world itself.

use std::time::Duration;

use proptest::prelude::*;

use super::{Op, OpenMldb, Rep, Us, us};
use crate::{ClientLoad, Flavor, SimBuilder};

/// Writes flow from 0 to `stop_ms`; the follower chosen is cut off from replication at
/// `cut_ms` (marked alive while behind, as RecoverTable leaves it); then a ChangeLeader with
/// that follower as explicit candidate runs. The run loses exactly the acknowledged writes
/// the candidate lacked.
fn forced_promotion_loses_what_the_candidate_lacks(seed: u64, cut_ms: u64, stop_ms: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
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
        tokio::time::sleep(Duration::from_millis(cut_ms)).await;
        let (leader, follower) = {
            let mut w = sim.lock();
            w.replicate(0);
            let leader = w.primary(0).expect("a leader").node;
            let f = w.parts[0]
                .replicas
                .iter()
                .position(|r| r.role == Rep::Secondary)
                .expect("a follower");
            w.parts[0].replicas[f].behind_until = Us::MAX;
            (leader, w.parts[0].replicas[f].node)
        };
        tokio::time::sleep(Duration::from_millis(stop_ms.saturating_sub(cut_ms))).await;
        let lacks = {
            let mut w = sim.lock();
            w.clients.stop();
            w.set_knob_for_test("auto_failover", "false");
            let acked = w.parts[0].acked.len() as u64;
            let have = w.parts[0]
                .replicas
                .iter()
                .find(|r| r.node == follower)
                .map_or(0, |r| r.log.len() as u64);
            let op = Op::ChangeLeader {
                part: 0,
                from: leader,
                to: Some(follower),
            };
            OpenMldb::with(&mut w, |m, w| m.enqueue(w, op)).expect("an OpenMLDB world");
            acked - have
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        let truth = sim.truth();
        assert_eq!(
            truth.monitor.writes_lost, lacks,
            "seed {seed}: cut at {cut_ms} ms, writes until {stop_ms} ms"
        );
        assert_eq!(sim.lock().primary(0).map(|r| r.node), Some(follower));
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_forced_promotion_of_a_lagging_replica_loses_exactly_what_it_lacks(
        seed in any::<u64>(),
        cut_ms in 0u64..5_000,
        more_ms in 0u64..5_000,
    ) {
        forced_promotion_loses_what_the_candidate_lacks(seed, cut_ms, cut_ms + more_ms);
    }
}

#[test]
fn a_promotion_at_the_cut_loses_only_what_replication_had_not_carried() {
    forced_promotion_loses_what_the_candidate_lacks(7, 3_000, 3_000);
}

#[test]
fn us_saturates() {
    assert_eq!(us(Duration::MAX), Us::MAX);
}
