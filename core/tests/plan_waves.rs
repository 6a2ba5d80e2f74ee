//! Planner properties over generated topologies.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rollout_core::{
    NodeId, NodeInfo, Partition, Policy, Replica, ReplicaRole, Role, RoleKind, Topology,
    plan::{build_waves, wave_is_safe},
};

#[derive(Debug, Clone)]
struct Shape {
    data: usize,
    coords: usize,
    stateless: usize,
    leader: usize,
    racks: usize,
    parts: Vec<(Vec<usize>, Vec<bool>)>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (3usize..14, 1usize..5, 0usize..3, 1usize..4).prop_flat_map(
        |(data, coords, stateless, racks)| {
            let part = (1usize..=3).prop_flat_map(move |k| {
                (
                    proptest::sample::subsequence((0..data).collect::<Vec<_>>(), k.min(data))
                        .prop_shuffle(),
                    proptest::collection::vec(proptest::bool::weighted(0.95), k.min(data)),
                )
            });
            (
                Just(data),
                Just(coords),
                Just(stateless),
                0..coords,
                Just(racks),
                proptest::collection::vec(part, 1..40),
            )
                .prop_map(|(data, coords, stateless, leader, racks, parts)| Shape {
                    data,
                    coords,
                    stateless,
                    leader,
                    racks,
                    parts,
                })
        },
    )
}

fn topology(s: &Shape) -> Topology {
    let mut nodes = Vec::new();
    for i in 0..s.data {
        nodes.push(
            NodeInfo::new(format!("d{i}:1"), Role::new("data", RoleKind::Data, 1))
                .zone(format!("rack{}", i % s.racks)),
        );
    }
    for i in 0..s.coords {
        nodes.push(
            NodeInfo::new(
                format!("c{i}:1"),
                Role::new("coord", RoleKind::Coordinator, 0),
            )
            .leader(i == s.leader),
        );
    }
    for i in 0..s.stateless {
        nodes.push(NodeInfo::new(
            format!("s{i}:1"),
            Role::new("web", RoleKind::Stateless, 2),
        ));
    }
    let partitions = s
        .parts
        .iter()
        .enumerate()
        .map(|(p, (holders, alive))| {
            let replicas = holders
                .iter()
                .zip(alive)
                .enumerate()
                .map(|(r, (&n, &alive))| {
                    let role = if r == 0 {
                        ReplicaRole::Primary
                    } else {
                        ReplicaRole::Secondary
                    };
                    Replica::new(format!("d{n}:1"), role).alive(alive)
                })
                .collect();
            Partition::new(format!("1.{p}"), holders.len() as u32, replicas)
        })
        .collect();
    Topology::new(nodes, partitions)
}

/// Brute force: the replicas of each partition that are down or on the wave.
fn down_with(t: &Topology, wave: &[NodeId]) -> Vec<(usize, usize, usize)> {
    t.partitions
        .iter()
        .filter(|p| p.replicas.iter().any(|r| wave.contains(&r.node)))
        .map(|p| {
            let up = p
                .replicas
                .iter()
                .filter(|r| r.alive && !wave.contains(&r.node))
                .count();
            (p.wanted as usize - up, up, p.wanted as usize)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_selected_node_is_planned_exactly_once(s in shape(), par in 1usize..6, maxu in 1usize..3) {
        let t = topology(&s);
        let all: Vec<NodeId> = t.nodes.iter().map(|n| n.id.clone()).collect();
        let policy = Policy::default().max_parallel(par).max_unavailable_per_partition(maxu);
        let (waves, blocked) = build_waves(&t, &all, &policy);
        let mut seen: Vec<NodeId> = waves.iter().flat_map(|w| w.nodes.clone()).collect();
        seen.extend(blocked.iter().map(|b| b.node.clone()));
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        prop_assert_eq!(unique.len(), seen.len(), "a node is planned twice");
        prop_assert_eq!(unique, all.into_iter().collect::<BTreeSet<_>>());
    }

    #[test]
    fn waves_keep_role_order_and_the_leader_goes_last(s in shape(), par in 1usize..6) {
        let t = topology(&s);
        let all: Vec<NodeId> = t.nodes.iter().map(|n| n.id.clone()).collect();
        let (waves, _) = build_waves(&t, &all, &Policy::default().max_parallel(par));
        let ranks: Vec<u32> = waves
            .iter()
            .map(|w| t.node(&w.nodes[0]).unwrap().role.rank)
            .collect();
        prop_assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "ranks {:?}", ranks);
        let coord_waves: Vec<_> = waves.iter().filter(|w| w.kind == RoleKind::Coordinator).collect();
        prop_assert!(coord_waves.iter().all(|w| w.nodes.len() == 1));
        let last = coord_waves.last().unwrap();
        prop_assert!(t.node(&last.nodes[0]).unwrap().leader, "the leader is not last");
        for w in &waves {
            prop_assert!(w.nodes.iter().all(|n| t.node(n).unwrap().role.name == w.role));
        }
    }

    #[test]
    fn no_wave_breaks_max_unavailable(s in shape(), par in 1usize..8, maxu in 1usize..3) {
        let live = topology(&s);
        let all: Vec<NodeId> = live.nodes.iter().map(|n| n.id.clone()).collect();
        let policy = Policy::default().max_parallel(par).max_unavailable_per_partition(maxu);
        let (waves, blocked) = build_waves(&live, &all, &policy);
        // Waves are packed on placement; replicas down right now are the gate's business.
        let mut t = live.clone();
        t.partitions.iter_mut().flat_map(|p| p.replicas.iter_mut()).for_each(|r| r.alive = true);
        for w in &waves {
            prop_assert!(w.nodes.len() <= par);
            for (down, up, wanted) in down_with(&t, &w.nodes) {
                prop_assert!(down <= maxu, "{down} of {wanted} down in wave {:?}", w.nodes);
                prop_assert!(up >= 1, "a partition loses every replica in wave {:?}", w.nodes);
            }
            prop_assert!(wave_is_safe(&t, &w.nodes, maxu).is_ok());
        }
        for b in &blocked {
            prop_assert!(wave_is_safe(&t, std::slice::from_ref(&b.node), maxu).is_err());
        }
    }

    #[test]
    fn max_parallel_one_is_one_node_per_wave(s in shape()) {
        let t = topology(&s);
        let all: Vec<NodeId> = t.nodes.iter().map(|n| n.id.clone()).collect();
        let (waves, _) = build_waves(&t, &all, &Policy::default());
        prop_assert!(waves.iter().all(|w| w.nodes.len() == 1));
    }

    #[test]
    fn wave_is_safe_agrees_with_brute_force(s in shape(), pick in proptest::collection::vec(0usize..14, 1..5), maxu in 1usize..3) {
        let t = topology(&s);
        let wave: Vec<NodeId> = pick
            .iter()
            .filter(|&&i| i < s.data)
            .map(|i| NodeId::new(format!("d{i}:1")))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let brute = down_with(&t, &wave).iter().all(|&(down, up, _)| down <= maxu && up >= 1);
        prop_assert_eq!(wave_is_safe(&t, &wave, maxu).is_ok(), brute);
    }
}

#[test]
fn rack_aware_placement_packs_one_rack_per_wave() {
    // Nine nodes in three racks; every partition has one replica per rack.
    let s = Shape {
        data: 9,
        coords: 1,
        stateless: 0,
        leader: 0,
        racks: 3,
        parts: (0..27)
            .map(|p| {
                (
                    vec![p % 3 * 3, (p / 3) % 3 * 3 + 1, (p / 9) * 3 + 2],
                    vec![true; 3],
                )
            })
            .collect(),
    };
    let t = topology(&s);
    let data: Vec<NodeId> = (0..9).map(|i| NodeId::new(format!("d{i}:1"))).collect();
    let (waves, blocked) = build_waves(&t, &data, &Policy::default().max_parallel(9));
    assert!(blocked.is_empty());
    assert_eq!(waves.len(), 3, "{waves:?}");
}

#[test]
fn a_coordinator_role_without_a_standby_is_a_warning() {
    let mut s = Shape {
        data: 3,
        coords: 1,
        stateless: 0,
        leader: 0,
        racks: 1,
        parts: vec![(vec![0, 1, 2], vec![true; 3])],
    };
    let t = topology(&s);
    let all: Vec<NodeId> = t.nodes.iter().map(|n| n.id.clone()).collect();
    let w = rollout_core::plan::warnings(&t, &all);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("c0:1") && w[0].contains("only coord"),
        "{w:?}"
    );
    let data_only: Vec<NodeId> = all
        .iter()
        .filter(|n| n.as_str().starts_with('d'))
        .cloned()
        .collect();
    assert!(rollout_core::plan::warnings(&t, &data_only).is_empty());
    s.coords = 2;
    let t = topology(&s);
    let all: Vec<NodeId> = t.nodes.iter().map(|n| n.id.clone()).collect();
    assert!(rollout_core::plan::warnings(&t, &all).is_empty());
}
