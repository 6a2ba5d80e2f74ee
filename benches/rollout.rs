//! Criterion benches: a full `ha` rollout of 100 data nodes and 10,000 partitions in the
//! simulator, and the planner and health evaluation at growing sizes.
//!
//! `cargo bench -p rollout-benches`; read the sizes against each other (ratios), not the
//! absolute times of this machine.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rollout_core::{
    Change, Cluster, HealthProbe, NodeId, Policy,
    event::Ignore,
    plan::{build_waves, wave_is_safe},
    probe::probes,
};
use rollout_sim::{Flavor, Placement, SimBuilder, Strategy, simulate};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn builder(data: usize, partitions: usize) -> SimBuilder {
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.data_nodes(data)
        .partitions(partitions)
        .racks(3)
        .placement(Placement::RackAware);
    b
}

fn full_rollout(c: &mut Criterion) {
    let mut g = c.benchmark_group("ha_rollout");
    g.sample_size(10);
    let b = builder(100, 10_000);
    g.bench_function("pegasus_100_nodes_10000_partitions", |bench| {
        bench.iter(|| {
            runtime().block_on(async {
                let spec = Strategy::Ha.spec(Change::Restart, 100);
                let (_, report) = simulate(&b, Strategy::Ha, &spec, &Ignore).await.unwrap();
                assert!(report.completed);
                black_box(report)
            })
        })
    });
    // Cost per partition must stay flat: 3 nodes holding 100,000 partitions each.
    let wide = {
        let mut b = SimBuilder::new(Flavor::Pegasus);
        b.data_nodes(3).partitions(100_000);
        b
    };
    g.bench_function("pegasus_3_nodes_100000_partitions", |bench| {
        bench.iter(|| {
            runtime().block_on(async {
                let spec = Strategy::Ha.spec(Change::Restart, 3);
                let (_, report) = simulate(&wide, Strategy::Ha, &spec, &Ignore).await.unwrap();
                black_box(report)
            })
        })
    });
    g.finish();
}

fn planner(c: &mut Criterion) {
    let mut g = c.benchmark_group("planner");
    for (data, partitions) in [(10, 1_000), (30, 3_000), (100, 10_000), (300, 30_000)] {
        let rt = runtime();
        let topology = rt.block_on(async {
            let sim = builder(data, partitions).build().unwrap();
            sim.topology().await.unwrap()
        });
        let all: Vec<NodeId> = topology.nodes.iter().map(|n| n.id.clone()).collect();
        g.bench_with_input(
            BenchmarkId::new("build_waves_parallel", data),
            &topology,
            |bench, t| bench.iter(|| build_waves(t, &all, &Policy::default().max_parallel(data))),
        );
        g.bench_with_input(
            BenchmarkId::new("wave_is_safe_one_node", data),
            &topology,
            |bench, t| bench.iter(|| wave_is_safe(t, &all[..1], 1)),
        );
    }
    g.finish();
}

fn health(c: &mut Criterion) {
    let mut g = c.benchmark_group("health");
    for (data, partitions) in [(10, 1_000), (30, 3_000), (100, 10_000), (300, 30_000)] {
        let rt = runtime();
        let (sim, topology) = rt.block_on(async {
            let sim = builder(data, partitions).build().unwrap();
            let t = sim.topology().await.unwrap();
            (sim, t)
        });
        g.bench_with_input(
            BenchmarkId::new("topology_fully_healthy", data),
            &topology,
            |bench, t| bench.iter(|| probes::topology_fully_healthy(t)),
        );
        g.bench_with_input(
            BenchmarkId::new("sim_fully_healthy_probe", data),
            &sim,
            |bench, sim| {
                bench.iter(|| rt.block_on(async { sim.fully_healthy().check().await.unwrap() }))
            },
        );
        g.bench_with_input(
            BenchmarkId::new("sim_topology_read", data),
            &sim,
            |bench, sim| bench.iter(|| rt.block_on(async { sim.topology().await.unwrap() })),
        );
    }
    g.finish();
}

criterion_group!(benches, full_rollout, planner, health);
criterion_main!(benches);
