//! The conformance suite against the simulator, both flavors.

use rollout_sim::{Flavor, SimBuilder, conformance::check_cluster};

#[tokio::test(start_paused = true)]
async fn pegasus_simulator_conforms() {
    let sim = SimBuilder::new(Flavor::Pegasus).build().unwrap();
    check_cluster(&sim).await.unwrap();
    assert!(sim.truth().knobs_restored);
    assert_eq!(sim.truth().monitor.requests_failed, 0);
}

#[tokio::test(start_paused = true)]
async fn openmldb_simulator_conforms() {
    let sim = SimBuilder::new(Flavor::OpenMldb).build().unwrap();
    check_cluster(&sim).await.unwrap();
    assert!(sim.truth().knobs_restored);
    assert_eq!(sim.truth().monitor.requests_failed, 0);
}
