//! Master keys its node sets and configurations by host name: `list_nodes` gives each node's
//! forward DNS as `node` and its name as `hp_node`, while a configuration carries the
//! replica's own address plus `hp_*` (`meta_service::on_list_nodes`, `meta_data.h`
//! `node_mapper` @master). Members are matched by name there, by address on 2.4 and 2.5.

#[path = "support.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddrV4};

use rollout_core::{Cluster, Health, HealthProbe, NodeId};
use rollout_pegasus::messages::{
    AppInfo, NodeInfo, PartitionConfiguration, app_status, config_type, node_status,
};
use rollout_pegasus::types::{Gpid, HostPort, RpcAddress};

const PORTS: [u16; 3] = [34801, 34802, 34803];

fn at(ip: [u8; 4], port: u16) -> RpcAddress {
    RpcAddress::new(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn name(port: u16) -> HostPort {
    HostPort::new(format!("replica-{}.example", port - 34800), port)
}

/// A leader whose three replica servers hold one partition of `temp`: the node list names
/// them at `listed`, the configuration at `configured`, with names when `master`.
fn meta(listed: [u8; 4], configured: [u8; 4], master: bool) -> support::Server {
    let hp = |p: u16| master.then(|| name(p));
    let nodes = PORTS
        .iter()
        .map(|&p| NodeInfo {
            status: node_status::ALIVE,
            node: at(listed, p),
            hp_node: hp(p),
        })
        .collect();
    let part = PartitionConfiguration {
        pid: Gpid::new(1, 0),
        ballot: 3,
        max_replica_count: 3,
        primary: at(configured, PORTS[0]),
        secondaries: vec![at(configured, PORTS[1]), at(configured, PORTS[2])],
        hp_primary: hp(PORTS[0]),
        hp_secondaries: master.then(|| vec![name(PORTS[1]), name(PORTS[2])]),
        hp_last_drops: master.then(Vec::new),
        ..PartitionConfiguration::default()
    };
    let app = AppInfo {
        status: app_status::AVAILABLE,
        app_type: "pegasus".into(),
        app_name: "temp".into(),
        app_id: 1,
        partition_count: 1,
        is_stateful: true,
        max_replica_count: 3,
    };
    let mut s = support::leader_meta();
    s.nodes = nodes;
    s.apps = vec![(app, vec![part])];
    if master {
        s.server_info = "{\"build_type\":\"Release\",\"git_SHA\":\"db756dcd\",\"start_time\":\"2024-05-01 10:00:00\",\"version\":\"2.6.0-SNAPSHOT\"}".into();
    }
    s
}

fn id(ip: [u8; 4], port: u16) -> NodeId {
    NodeId::new(SocketAddrV4::new(Ipv4Addr::from(ip), port).to_string())
}

/// The forward DNS of the names (`list_nodes`) is not the address the replicas serve on and
/// write into their configurations (a host whose name resolves to another IP).
const DNS: [u8; 4] = [127, 0, 0, 2];
const OWN: [u8; 4] = [127, 0, 0, 1];

#[tokio::test]
async fn on_master_members_are_matched_to_the_node_list_by_host_name() {
    let (m, _) = support::serve(meta(DNS, OWN, true)).await;
    let cluster = support::connect(&[m], &[]).await.unwrap();
    assert_eq!(
        cluster.fully_healthy().check().await.unwrap(),
        Health::Healthy
    );
    let t = cluster.topology().await.unwrap();
    let replicas = &t.partitions[0].replicas;
    assert_eq!(replicas.len(), 3);
    assert!(replicas.iter().all(|r| r.alive), "{replicas:?}");
    assert_eq!(replicas[0].node, id(DNS, PORTS[0]));
    // The node as rollout names it still holds its partition.
    match cluster.drained(&id(DNS, PORTS[1])).check().await.unwrap() {
        Health::Waiting(why) => assert!(why.contains("1 partition"), "{why}"),
        other => panic!("a member counted drained: {other:?}"),
    }
}

#[tokio::test]
async fn a_drain_on_master_names_members_as_the_configuration_and_the_meta_do() {
    let (m, state) = support::serve(meta(DNS, OWN, true)).await;
    let cluster = support::connect(&[m], &[]).await.unwrap();
    cluster.drain(&id(DNS, PORTS[0])).await.unwrap();
    let s = state.lock().unwrap();
    let [req] = s.proposals.as_slice() else {
        panic!("{:?}", s.proposals);
    };
    let actions = &req.action_list;
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[0].kind, config_type::DOWNGRADE_TO_SECONDARY);
    assert_eq!(actions[0].node, at(OWN, PORTS[0]));
    assert_eq!(actions[0].hp_node, Some(name(PORTS[0])));
    assert_eq!(actions[1].kind, config_type::UPGRADE_TO_PRIMARY);
    assert_eq!(actions[1].node, at(OWN, PORTS[1]));
    assert_eq!(actions[1].hp_node, Some(name(PORTS[1])));
    // Then the old primary leaves, sent to the new one, in the same list.
    assert_eq!(actions[2].kind, config_type::DOWNGRADE_TO_INACTIVE);
    assert_eq!(actions[2].target, at(OWN, PORTS[1]));
    assert_eq!(actions[2].hp_target, Some(name(PORTS[1])));
    assert_eq!(actions[2].node, at(OWN, PORTS[0]));
    assert_eq!(actions[2].hp_node, Some(name(PORTS[0])));
}

#[tokio::test]
async fn on_2_5_members_are_matched_by_address_and_no_names_are_sent() {
    let here = [127, 0, 0, 3];
    let (m, state) = support::serve(meta(here, here, false)).await;
    let cluster = support::connect(&[m], &[]).await.unwrap();
    assert_eq!(
        cluster.fully_healthy().check().await.unwrap(),
        Health::Healthy
    );
    cluster.drain(&id(here, PORTS[2])).await.unwrap();
    let s = state.lock().unwrap();
    let [req] = s.proposals.as_slice() else {
        panic!("{:?}", s.proposals);
    };
    let [down] = req.action_list.as_slice() else {
        panic!("{:?}", req.action_list);
    };
    assert_eq!(down.kind, config_type::DOWNGRADE_TO_INACTIVE);
    assert_eq!(
        (down.target, down.node),
        (at(here, PORTS[0]), at(here, PORTS[2]))
    );
    assert_eq!(
        (down.hp_target.as_ref(), down.hp_node.as_ref()),
        (None, None)
    );
}
