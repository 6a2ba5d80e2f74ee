//! The Pegasus world as an emulator serves it ([`rollout_sim::emulation`]), on tokio's paused
//! clock: the meta's view of a crashed replica server.

use std::time::Duration;

use rollout_core::NodeId;
use rollout_sim::{Flavor, SimBuilder, SimCluster};

fn pegasus() -> SimCluster {
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.seed(7);
    b.build().expect("a valid shape")
}

async fn after(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_replica_server_stays_alive_to_the_meta_until_failure_detection() {
    let sim = pegasus();
    let id = NodeId::new("replica-1:34801");
    assert!(sim.kill(&id));
    let v = sim.node_view(&id).unwrap();
    assert!(!v.running);
    assert!(v.alive, "the meta hears nothing yet: the node is still ALIVE to it");
    // fd_grace_seconds (22 s) after its last beacon, the meta declares it dead.
    after(21.0).await;
    assert!(sim.node_view(&id).unwrap().alive);
    after(2.0).await;
    assert!(!sim.node_view(&id).unwrap().alive);
}
