//! A collector has no CLI handler (upstream registers the remote-command RPC in the meta and
//! the replica server only, `info_collector_app.cpp` @v2.5.0 starts the HTTP server alone):
//! its readiness is read over HTTP on the same port.

#[path = "support.rs"]
mod support;

use rollout_core::{Cluster, Health, HealthProbe, NodeId};

#[tokio::test]
async fn a_restarted_collector_is_ready_over_http_though_it_never_answers_the_cli() {
    let (meta, _) = support::serve(support::leader_meta()).await;
    let (c, state) = support::serve(support::collector("2024-05-01 10:00:00")).await;
    let cluster = support::connect(&[meta], &[c]).await.unwrap();
    let id = NodeId::new(c.to_string());
    // The drain notes the start time; the same process still runs.
    cluster.drain(&id).await.unwrap();
    match cluster.ready(&id).check().await.unwrap() {
        Health::Waiting(why) => assert!(why.contains("/recentStartTime"), "{why}"),
        other => panic!("ready before its restart: {other:?}"),
    }
    // It restarted: a new start time, and still no CLI handler.
    state.lock().unwrap().started = "2024-05-01 10:05:00".into();
    assert_eq!(cluster.ready(&id).check().await.unwrap(), Health::Healthy);
}

#[tokio::test]
async fn a_collector_whose_http_server_does_not_answer_is_not_ready() {
    let (meta, _) = support::serve(support::leader_meta()).await;
    // A port nobody listens on.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let cluster = support::connect(&[meta], &[gone]).await.unwrap();
    let id = NodeId::new(gone.to_string());
    match cluster.ready(&id).check().await.unwrap() {
        Health::Waiting(why) => assert!(why.contains("/version"), "{why}"),
        other => panic!("a collector that does not answer is {other:?}"),
    }
}
