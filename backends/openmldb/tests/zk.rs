//! Discovery against a real ZooKeeper (Debian's package, started by `scripts/zookeeper.sh`),
//! with the nodes laid out as OpenMLDB writes them (docs/openmldb-interfaces.md).
//! `ROLLOUT_ZK` names the server; without it the test starts one with the script, and under
//! CI a missing ZooKeeper fails the test rather than skipping it.

#[path = "support.rs"]
mod support;

use std::time::Duration;

use rollout_openmldb::OpenMldbError;
use rollout_openmldb::zk::{TabletNode, Zk};
use support::zookeeper;
use zookeeper_client as zk;

async fn put(c: &zk::Client, path: &str, data: &str, mode: zk::CreateMode) {
    let opts = mode.with_acls(zk::Acls::anyone_all());
    let mut at = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        at.push('/');
        at.push_str(p);
        let last = i + 1 == parts.len();
        let (d, o) = if last {
            (data.as_bytes(), &opts)
        } else {
            (
                &b""[..],
                &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
            )
        };
        match c.create(&at, d, o).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => panic!("create {at}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reads_the_layout_openmldb_writes() {
    let ensemble = zookeeper();
    let root = format!("/rollout-test-{}", std::process::id());
    let c = zk::Client::connect(&ensemble).await.expect("connect");
    // Two nameservers, the second registered first; a tablet restarted, one re-registered.
    put(
        &c,
        &format!("{root}/leader/lock_request0000000002"),
        "10.0.0.2:7527",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/leader/lock_request0000000001"),
        "ns-a",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/map/names/ns-a"),
        "10.0.0.1:7527",
        zk::CreateMode::Persistent,
    )
    .await;
    put(
        &c,
        &format!("{root}/nodes/10.0.0.5:10921"),
        "startup_10.0.0.5:10921",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/nodes/10.0.0.6:10921"),
        "10.0.0.6:10921",
        zk::CreateMode::Ephemeral,
    )
    .await;
    put(
        &c,
        &format!("{root}/config/auto_failover"),
        "true",
        zk::CreateMode::Persistent,
    )
    .await;
    put(
        &c,
        &format!("{root}/taskmanager/leader"),
        "10.0.0.9:9902",
        zk::CreateMode::Ephemeral,
    )
    .await;

    let z = Zk::connect(&ensemble, &root, Duration::from_secs(10), None)
        .await
        .unwrap();
    assert_eq!(
        z.nameservers().await.unwrap(),
        ["10.0.0.1:7527", "10.0.0.2:7527"]
    );
    assert_eq!(z.leader().await.unwrap(), "10.0.0.1:7527");
    assert_eq!(
        z.tablets().await.unwrap(),
        [
            TabletNode {
                endpoint: "10.0.0.5:10921".into(),
                fresh_start: true
            },
            TabletNode {
                endpoint: "10.0.0.6:10921".into(),
                fresh_start: false
            },
        ]
    );
    assert_eq!(z.auto_failover().await.unwrap(), Some(true));
    assert_eq!(
        z.taskmanager().await.unwrap().as_deref(),
        Some("10.0.0.9:9902")
    );

    // A change wakes the watch: the leader's lock node goes (its session ended).
    let wake = {
        let z = z.clone();
        tokio::spawn(async move { z.changed().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.delete(&format!("{root}/leader/lock_request0000000001"), None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), wake)
        .await
        .expect("the watch fired")
        .unwrap()
        .unwrap();
    assert_eq!(z.leader().await.unwrap(), "10.0.0.2:7527");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_without_openmldb_and_a_dead_ensemble_are_refused_by_name() {
    let ensemble = zookeeper();
    let err = Zk::connect(
        &ensemble,
        "/no-openmldb-here",
        Duration::from_secs(10),
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OpenMldbError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/no-openmldb-here"), "{err}");

    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let err = Zk::connect(&dead, "/openmldb", Duration::from_secs(3), None)
        .await
        .unwrap_err();
    assert!(matches!(err, OpenMldbError::ZooKeeper { .. }), "{err}");
    assert!(err.to_string().contains(&dead), "{err}");
}
