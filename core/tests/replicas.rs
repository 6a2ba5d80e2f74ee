//! The placement rule's relief for single-replica partitions: temporary replicas and
//! accepted tables.

use rollout_core::{
    NodeId, NodeInfo, Partition, Policy, Replica, ReplicaRole, Role, RoleKind, Topology,
    plan::{UnsafeWave, wave_is_safe, wave_is_safe_with},
    policy::PolicyError,
    replicas::{Relief, accepted_downtime, check_accepted, place_temporary_replicas},
};

/// `nodes` data nodes; partition `i` of `single` sits alone on node `i % nodes` (table
/// `one`), then one 3-replica partition (table `three`).
fn cluster(nodes: usize, single: usize) -> Topology {
    let data = Role::new("tablet", RoleKind::Data, 0);
    let infos = (0..nodes)
        .map(|i| NodeInfo::new(format!("n{i}:1"), data.clone()))
        .collect();
    let mut parts: Vec<Partition> = (0..single)
        .map(|i| {
            Partition::new(
                format!("one.{i}"),
                1,
                vec![Replica::new(
                    format!("n{}:1", i % nodes),
                    ReplicaRole::Primary,
                )],
            )
            .table("one")
        })
        .collect();
    parts.push(
        Partition::new(
            "three.0",
            3,
            (0..3.min(nodes))
                .map(|i| Replica::new(format!("n{i}:1"), ReplicaRole::Secondary))
                .collect(),
        )
        .table("three"),
    );
    Topology::new(infos, parts)
}

fn relief(policy: &Policy) -> Relief {
    Relief::new(policy, true)
}

#[test]
fn a_single_replica_partition_blocks_its_node_unless_relieved() {
    let t = cluster(3, 6);
    let n0 = [NodeId::new("n0:1")];
    let err = wave_is_safe(&t, &n0, 1).unwrap_err();
    assert!(
        matches!(&err, UnsafeWave::NoReplicaLeft { table: Some(t), going: 1, wanted: 1, .. } if t == "one"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no replica left") && text.contains("--accept-unavailable one"),
        "{text}"
    );
    assert!(wave_is_safe_with(&t, &n0, 1, &relief(&Policy::default())).is_ok());
    let accepted = Relief::new(&Policy::default().accept_unavailable(["one"]), false);
    assert!(wave_is_safe_with(&t, &n0, 1, &accepted).is_ok());
    // A backend that adds no temporary replicas relieves nothing by itself.
    assert!(wave_is_safe_with(&t, &n0, 1, &Relief::new(&Policy::default(), false)).is_err());
    // Temporary replicas are for single-replica partitions only: two of three replicas down
    // stays refused.
    let two = [NodeId::new("n0:1"), NodeId::new("n1:1")];
    assert!(wave_is_safe_with(&t, &two, 1, &relief(&Policy::default())).is_err());
}

#[test]
fn temporary_replicas_spread_over_the_other_nodes_and_respect_the_limit() {
    let t = cluster(4, 12);
    let n0 = [NodeId::new("n0:1")];
    let r = relief(&Policy::default());
    let placed = place_temporary_replicas(&t, &n0, &r, None, &[]).unwrap();
    // n0 holds one.0, one.4 and one.8.
    assert_eq!(placed.len(), 3);
    let mut to: Vec<&str> = placed.iter().map(|p| p.to.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, ["n1:1", "n2:1", "n3:1"], "one per other node");
    assert!(placed.iter().all(|p| p.from.as_str() == "n0:1"));
    // The open ones are kept, not placed twice.
    let again = place_temporary_replicas(&t, &n0, &r, None, &placed[..1]).unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|p| p.partition != placed[0].partition));
    // With a limit of 1 and three other nodes, three fit; a fourth does not.
    assert!(place_temporary_replicas(&t, &n0, &r, Some(1), &[]).is_ok());
    let t = cluster(2, 4);
    let err = place_temporary_replicas(&t, &[NodeId::new("n0:1")], &r, Some(1), &[]).unwrap_err();
    assert!(
        err.contains("temporary_replica_limit") && err.contains("n1:1"),
        "{err}"
    );
    // A dead node gets none.
    let mut t = cluster(3, 3);
    t.nodes[1].alive = false;
    let placed = place_temporary_replicas(&t, &[NodeId::new("n0:1")], &r, None, &[]).unwrap();
    assert!(placed.iter().all(|p| p.to.as_str() == "n2:1"));
}

#[test]
fn accepted_tables_need_no_temporary_replica_and_are_listed_with_their_nodes() {
    let t = cluster(3, 6);
    let policy = Policy::default().accept_unavailable(["one"]);
    let r = relief(&policy);
    let placed = place_temporary_replicas(&t, &[NodeId::new("n0:1")], &r, None, &[]).unwrap();
    assert!(placed.is_empty());
    let all: Vec<NodeId> = (0..3).map(|i| NodeId::new(format!("n{i}:1"))).collect();
    let listed = accepted_downtime(&t, &all, &r);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].table, "one");
    assert_eq!(listed[0].partitions, 6);
    assert_eq!(listed[0].nodes, all);
    assert!(check_accepted(&t, &policy).is_ok());
    let err = check_accepted(&t, &Policy::default().accept_unavailable(["two"])).unwrap_err();
    assert_eq!(
        err,
        PolicyError::UnknownAcceptedTable {
            table: "two".into(),
            known: vec!["one".into(), "three".into()],
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"two\"") && msg.contains("one, three"),
        "{msg}"
    );
}

#[test]
fn a_policy_refuses_a_zero_limit_and_an_empty_table_name() {
    let zero = Policy::default().temporary_replica_limit(0).validate();
    assert_eq!(zero, Err(PolicyError::TemporaryReplicaLimitZero));
    assert!(
        zero.unwrap_err()
            .to_string()
            .contains("temporary_replica_limit")
    );
    assert_eq!(
        Policy::default().accept_unavailable([" "]).validate(),
        Err(PolicyError::EmptyAcceptedTable(" ".into()))
    );
}
