//! Balancer proposals as the emulated meta queues them: `control_meta` at or below steady
//! clears the pending ones (`meta_service::on_control_meta_level` @v2.5.0), and a downgrade
//! without a target is sent to the primary (`server_load_balancer::register_proposals`).

use std::time::Duration;

use rollout_emulator_pegasus::{Emulator, ServerVersion};
use rollout_pegasus::messages::{
    BalancerRequest, ErrResponse, I32Request, I32Response, ProposalAction, QueryConfigRequest,
    QueryConfigResponse, config_type, rpc,
};
use rollout_pegasus::meta::{MetaClient, MetaError};
use rollout_pegasus::types::{Gpid, RpcAddress};
use rollout_sim::{Flavor, SimBuilder, Timings};

/// An lb tick of ten emulated minutes (twelve seconds of wall time): no proposal runs while
/// a test looks at the queue.
fn builder() -> SimBuilder {
    let mut t = Timings::pegasus();
    t.tick = Duration::from_secs(600);
    let mut b = SimBuilder::new(Flavor::Pegasus);
    b.seed(7).time_scale(50).timings(t);
    b
}

async fn members(meta: &MetaClient) -> (RpcAddress, Vec<RpcAddress>) {
    let q: QueryConfigResponse = meta
        .call(
            rpc::QUERY_CONFIG,
            &QueryConfigRequest {
                app_name: "temp".into(),
                partition_indices: vec![0],
            },
        )
        .await
        .unwrap();
    (q.partitions[0].primary, q.partitions[0].secondaries.clone())
}

fn action(target: RpcAddress, node: RpcAddress, kind: i32) -> ProposalAction {
    ProposalAction {
        target,
        node,
        kind,
        hp_target: None,
        hp_node: None,
    }
}

/// Proposes `actions` for partition 1.0: the meta's error name.
async fn propose(meta: &MetaClient, actions: Vec<ProposalAction>) -> String {
    let req = BalancerRequest {
        gpid: Gpid::new(1, 0),
        action_list: actions,
        force: Some(false),
        balance_type: None,
    };
    match meta
        .call::<_, ErrResponse>(rpc::PROPOSE_BALANCER, &req)
        .await
    {
        Ok(_) => "ERR_OK".into(),
        Err(MetaError::App { err, .. }) => err.as_str().to_string(),
        Err(e) => panic!("{e}"),
    }
}

async fn control_meta(meta: &MetaClient, level: i32) {
    let _: I32Response = meta
        .call(rpc::CONTROL_META, &I32Request(level))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_level_at_or_below_steady_clears_the_pending_proposals() {
    let emu = Emulator::start(&builder(), ServerVersion::default())
        .await
        .unwrap();
    let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
    let (primary, secondaries) = members(&meta).await;
    let move_primary = || {
        vec![
            action(primary, primary, config_type::DOWNGRADE_TO_SECONDARY),
            action(
                secondaries[0],
                secondaries[0],
                config_type::UPGRADE_TO_PRIMARY,
            ),
        ]
    };
    assert_eq!(propose(&meta, move_primary()).await, "ERR_OK");
    assert_eq!(
        propose(&meta, move_primary()).await,
        "ERR_INVALID_PARAMETERS",
        "one is pending"
    );
    // lively (500) keeps them.
    control_meta(&meta, 500).await;
    assert_eq!(
        propose(&meta, move_primary()).await,
        "ERR_INVALID_PARAMETERS"
    );
    // steady (400), unchanged or not, clears them.
    control_meta(&meta, 400).await;
    assert_eq!(propose(&meta, move_primary()).await, "ERR_OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_without_a_target_is_sent_to_the_primary() {
    let emu = Emulator::start(&builder(), ServerVersion::default())
        .await
        .unwrap();
    let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
    let (primary, secondaries) = members(&meta).await;
    let down = action(
        RpcAddress::none(),
        secondaries[1],
        config_type::DOWNGRADE_TO_INACTIVE,
    );
    assert_eq!(propose(&meta, vec![down]).await, "ERR_OK");
    let to = emu
        .world_id(&primary.0.unwrap().to_string())
        .unwrap()
        .to_string();
    let log = emu.proposals();
    assert!(
        log.last()
            .is_some_and(|l| l.ends_with(&format!("(to {to})"))),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_then_downgrade_list_is_queued_whole_and_an_unset_target_is_the_old_primary() {
    let emu = Emulator::start(&builder(), ServerVersion::default())
        .await
        .unwrap();
    let meta = MetaClient::new(&emu.metas(), Duration::from_secs(1));
    let (primary, secondaries) = members(&meta).await;
    let name = |a: RpcAddress| emu.world_id(&a.0.unwrap().to_string()).unwrap().to_string();
    let list = |third_target: RpcAddress| {
        vec![
            action(primary, primary, config_type::DOWNGRADE_TO_SECONDARY),
            action(
                secondaries[0],
                secondaries[0],
                config_type::UPGRADE_TO_PRIMARY,
            ),
            action(third_target, primary, config_type::DOWNGRADE_TO_INACTIVE),
        ]
    };
    assert_eq!(propose(&meta, list(secondaries[0])).await, "ERR_OK");
    let (from, to) = (name(primary), name(secondaries[0]));
    let want = format!("move-primary 1.0 to {to}, then downgrade {from} (to {to})");
    assert_eq!(emu.proposals().last(), Some(&want));
    // The whole list is one pending proposal.
    assert_eq!(
        propose(&meta, list(secondaries[0])).await,
        "ERR_INVALID_PARAMETERS"
    );
    control_meta(&meta, 400).await;
    assert_eq!(propose(&meta, list(RpcAddress::none())).await, "ERR_OK");
    let want = format!("move-primary 1.0 to {to}, then downgrade {from} (to {from})");
    assert_eq!(emu.proposals().last(), Some(&want));
}
