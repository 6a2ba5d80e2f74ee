//! Meta servers that are starting, restarting or changing leadership: a meta whose RPC layer
//! has no handler yet (`ERR_HANDLER_NOT_FOUND` until `meta_service::start` registers them,
//! @v2.5.0) is "not yet", like a standby, never a failure; a leader that restarted at the
//! same address lost the knobs (they live in its memory) and gets them again.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use rollout_core::{Cluster, ErrorClass, Health, HealthProbe};
use rollout_pegasus::messages::{ClusterInfoResponse, Empty, rpc};
use rollout_pegasus::meta::{MetaClient, MetaError};

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_restarted_leader_without_handlers_yet_is_passed_over_for_the_new_leader() {
    let (a, sa) = support::serve(support::leader_meta()).await;
    let (b, sb) = support::serve(support::Server {
        leads: false,
        leader: Some(a),
        ..support::leader_meta()
    })
    .await;
    let meta = MetaClient::new(&[a, b], T);
    let _: ClusterInfoResponse = meta.call(rpc::CLUSTER_INFO, &Empty).await.unwrap();
    assert_eq!(meta.leader(), Some(a));
    // a restarts and is still connecting to ZooKeeper; b took the lock.
    {
        let mut sa = sa.lock().unwrap();
        sa.starting = true;
        sa.leads = false;
    }
    sb.lock().unwrap().leads = true;
    assert_eq!(
        meta.leader_since(),
        None,
        "the first leader found is no change"
    );
    let r: Result<ClusterInfoResponse, _> = meta.call(rpc::CLUSTER_INFO, &Empty).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(meta.leader(), Some(b));
    // The change is seen, and dated no earlier than the election.
    assert_eq!(meta.leader_since().map(|(l, _)| l), Some(b));
}

#[tokio::test]
async fn the_same_meta_leading_again_after_it_was_lost_is_a_new_election() {
    let (a, sa) = support::serve(support::leader_meta()).await;
    let meta = MetaClient::new(&[a], T);
    let _: ClusterInfoResponse = meta.call(rpc::CLUSTER_INFO, &Empty).await.unwrap();
    sa.lock().unwrap().starting = true;
    let r: Result<ClusterInfoResponse, _> = meta.call(rpc::CLUSTER_INFO, &Empty).await;
    assert!(r.is_err(), "a starting meta is no leader: {r:?}");
    assert_eq!(meta.leader_since(), None);
    sa.lock().unwrap().starting = false;
    let _: ClusterInfoResponse = meta.call(rpc::CLUSTER_INFO, &Empty).await.unwrap();
    assert_eq!(meta.leader_since().map(|(l, _)| l), Some(a));
}

/// Metas none of which has its handlers yet answer as a replica server or a collector given
/// as a meta would (`ERR_HANDLER_NOT_FOUND`): nothing says an election is under way, so the
/// client says so at once instead of waiting.
#[tokio::test]
async fn metas_that_are_all_starting_are_unreachable_not_an_election() {
    let starting = || support::Server {
        starting: true,
        ..support::leader_meta()
    };
    let (a, _) = support::serve(starting()).await;
    let (b, _) = support::serve(starting()).await;
    let meta = MetaClient::new(&[a, b], T);
    let err = meta
        .call::<_, ClusterInfoResponse>(rpc::CLUSTER_INFO, &Empty)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("ERR_HANDLER_NOT_FOUND"), "{err}");
}

/// A replica server given as the only meta: connecting fails after its first tries, not after
/// `Timing::meta_election` (each try is counted by the server).
#[tokio::test]
async fn connecting_to_a_server_that_is_no_meta_fails_without_waiting() {
    let (a, sa) = support::serve(support::Server {
        starting: true,
        ..support::leader_meta()
    })
    .await;
    let err = support::connect(&[a], &[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            rollout_pegasus::PegasusError::Meta(MetaError::Unreachable { .. })
        ),
        "{err}"
    );
    let tries = sa.lock().unwrap().rpcs;
    assert!(tries <= 4, "it waited for a leader: {tries} RPCs");
}

/// Connecting (as a resumed orchestrator does) while the meta leader is down and the standby
/// still forwards to it, before the standby takes the lock and while it loads its state:
/// waited out, not a failure.
#[tokio::test]
async fn connecting_during_a_meta_election_waits_for_the_new_leader() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let (b, sb) = support::serve(support::Server {
        leads: false,
        leader: Some(dead),
        leads_after: Some(12),
        loading: 6,
        ..support::leader_meta()
    })
    .await;
    let cluster = support::connect(&[dead, b], &[])
        .await
        .unwrap_or_else(|e| panic!("connect met no meta leader and gave up: {e}"));
    assert!(sb.lock().unwrap().leads, "connected before b led");
    assert_eq!(
        sb.lock().unwrap().loading,
        0,
        "connected while b still loaded"
    );
    assert_eq!(
        cluster.server_version().map(ToString::to_string).as_deref(),
        Some("2.5.0")
    );
}

#[tokio::test]
async fn a_health_probe_over_a_failover_waits_instead_of_failing() {
    let (a, sa) = support::serve(support::leader_meta()).await;
    let (b, sb) = support::serve(support::Server {
        leads: false,
        leader: Some(a),
        ..support::leader_meta()
    })
    .await;
    let cluster = support::connect(&[a, b], &[]).await.unwrap();
    // The same failover seen by a rollout that takes a new leader's node list at once.
    let mut trusting = rollout_pegasus::Timing::default().scaled(5);
    trusting.election_grace = Duration::ZERO;
    let none: support::Factory = |_| None;
    let at_once = rollout_pegasus::PegasusCluster::connect(&[a, b], &[], none, trusting)
        .await
        .unwrap();
    sa.lock().unwrap().starting = true;
    let probe = cluster.fully_healthy();
    // No leader while a starts and b still forwards: not yet.
    match probe.check().await {
        Ok(Health::Waiting(why)) => assert!(why.contains("no meta leader"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        at_once.fully_healthy().check().await,
        Ok(Health::Waiting(_))
    ));
    // b leads. Its node list proves no beacon until its failure detector's grace has run
    // (`meta_service::start_service` registers every replica server as just heard from): the
    // fake serves no `/config` flag, so the timing's grace is assumed, and said.
    {
        let mut sb = sb.lock().unwrap();
        sb.leads = true;
        sb.leader = None;
    }
    match probe.check().await {
        Ok(Health::Waiting(why)) => {
            assert!(
                why.contains(&format!("meta leader {b} was seen taking over")),
                "{why}"
            );
            assert!(why.contains("Timing::election_grace is assumed"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // With no grace to wait the same answers are healthy, whatever a says.
    assert_eq!(
        at_once.fully_healthy().check().await.unwrap(),
        Health::Healthy
    );
}

#[tokio::test]
async fn a_remote_command_a_restarting_leader_has_no_handler_for_is_transient() {
    let (a, sa) = support::serve(support::leader_meta()).await;
    let cluster = support::connect(&[a], &[]).await.unwrap();
    sa.lock().unwrap().no_cli = true;
    let err = cluster
        .read_knob("meta.lb.assign_delay_ms")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ERR_HANDLER_NOT_FOUND"), "{err}");
    assert_eq!(cluster.classify(&err), ErrorClass::Transient);
}

const DELAY: &str = "meta.lb.assign_delay_ms";

#[tokio::test]
async fn a_leader_restarted_at_the_same_address_gets_the_knobs_again() {
    let (a, sa) = support::serve(support::leader_meta()).await;
    let cluster = support::connect(&[a], &[]).await.unwrap();
    cluster.write_knob(DELAY, "3600000").await.unwrap();
    assert_eq!(sa.lock().unwrap().knobs[DELAY], "3600000");
    // The same process: nothing is written again.
    cluster.topology().await.unwrap();
    assert_eq!(sa.lock().unwrap().knob_writes, 1);
    // The only meta restarted and took the lock again, from its config.
    support::restart(&sa, "2024-05-01 10:07:00");
    cluster.topology().await.unwrap();
    assert_eq!(sa.lock().unwrap().knobs[DELAY], "3600000");
    assert_eq!(cluster.read_knob(DELAY).await.unwrap(), "3600000");
}

#[tokio::test]
async fn without_http_the_restart_is_told_by_server_info() {
    let (a, sa) = support::serve(support::Server {
        no_http: true,
        ..support::leader_meta()
    })
    .await;
    let cluster = support::connect(&[a], &[]).await.unwrap();
    cluster.write_knob(DELAY, "3600000").await.unwrap();
    support::restart(&sa, "2024-05-01 10:07:00");
    // A knob written after the restart brings the others back with it.
    cluster
        .write_knob("meta.lb.add_secondary_max_count_for_one_node", "0")
        .await
        .unwrap();
    let s = sa.lock().unwrap();
    assert_eq!(s.knobs[DELAY], "3600000");
    assert_eq!(s.knobs["meta.lb.add_secondary_max_count_for_one_node"], "0");
}
