//! Impossible shapes and malformed fault specs: a clear message, never a panic.

use rollout_sim::{Fault, Flavor, Placement, SimBuilder};

fn err(b: &SimBuilder) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async { b.build().unwrap_err().to_string() })
}

#[test]
fn impossible_shapes_are_refused_with_a_reason() {
    let p = || SimBuilder::new(Flavor::Pegasus);
    assert!(err(p().replicas(4).data_nodes(3)).contains("4 replicas need at least 4 data nodes"));
    assert!(err(p().partitions(0)).contains("at least 1 partition"));
    assert!(err(p().data_nodes(0)).contains("at least 1 data node"));
    assert!(err(p().replicas(0)).contains("replicas must be 1 to 5"));
    assert!(err(p().coordinators(0)).contains("coordinators"));
    assert!(err(p().racks(0)).contains("racks"));
    assert!(err(p().racks(2).placement(Placement::RackAware)).contains("needs at least 3 racks"));
    assert!(
        err(p().fault(Fault::FailStart {
            node: rollout_sim::NodeRef::Data(9)
        }))
        .contains("data node 9")
    );
    assert!(
        err(p().fault(Fault::FailStart {
            node: rollout_sim::NodeRef::Addr("nope:1".into())
        }))
        .contains("nope:1")
    );
}

#[test]
fn fault_specs_parse_and_malformed_ones_say_why() {
    for ok in [
        "crash:node=2,at=120",
        "crash:node=replica-2:34801,at=2m",
        "slow-start:node=1,extra=500ms",
        "fail-start:node=3",
        "stuck-drain:node=1",
        "leader-failover:at=90s",
        "transient:p=0.05",
        "partition:node=2,at=100,for=40",
        "orchestrator-crash:step=5",
    ] {
        ok.parse::<Fault>().unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, says) in [
        ("explode:node=1", "unknown fault"),
        ("crash:node=2", "needs at"),
        ("crash:node=0,at=1", "count from 1"),
        ("crash:node=x,at=1", "neither"),
        ("crash:node=1,at=soon", "not a duration"),
        ("crash:node=1,at=-5", "not a duration"),
        ("crash:node=1,at=5,speed=2", "unknown key"),
        ("transient:p=2", "between 0 and 0.9"),
        ("transient:p=abc", "not a number"),
        ("orchestrator-crash:step=0", "counts from 1"),
        ("partition:node=1,at", "not key=value"),
    ] {
        let e = bad.parse::<Fault>().unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
