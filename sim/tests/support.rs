//! Helpers shared by the simulator's tests.
#![allow(dead_code, unreachable_pub)]

use rollout_core::{Change, event::Ignore};
use rollout_sim::{SimBuilder, SimReport, Strategy, simulate};

/// A current-thread runtime on tokio's paused clock: a simulated hour takes milliseconds.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// Runs one rollout on a fresh paused-clock runtime and returns its report.
pub fn run(builder: &SimBuilder, strategy: Strategy) -> SimReport {
    run_with_restarts(builder, strategy).0
}

/// Like [`run`], also returning orchestrator restarts per node.
pub fn run_with_restarts(
    builder: &SimBuilder,
    strategy: Strategy,
) -> (
    SimReport,
    std::collections::BTreeMap<rollout_core::NodeId, u32>,
) {
    paused_runtime().block_on(async {
        let spec = strategy.spec(Change::Restart, builder.get_data_nodes());
        let (sim, report) = simulate(builder, strategy, &spec, &Ignore)
            .await
            .expect("a valid shape");
        (report, sim.truth().restarts)
    })
}

/// Runs one rollout of `spec` on a fresh paused-clock runtime and returns its report.
pub fn run_spec(builder: &SimBuilder, strategy: Strategy, spec: &rollout_core::Spec) -> SimReport {
    paused_runtime().block_on(async {
        simulate(builder, strategy, spec, &Ignore)
            .await
            .expect("a valid shape")
            .1
    })
}
