//! The drain: balancer proposals that move a replica server's primaries and downgrade its
//! secondaries, re-proposed while the node stays.

use rollout_core::NodeId;
use tokio::time::Instant;

use crate::cluster::{NodeFactory, PegasusCluster, addr};
use crate::error::PegasusError;
use crate::messages::{BalancerRequest, ErrResponse, ProposalAction, config_type, rpc};
use crate::meta::MetaError;
use crate::snapshot::Member;
use crate::types::{Gpid, RpcAddress, v4};

impl<F: NodeFactory> PegasusCluster<F> {
    /// Submits the proposals that drain `node` now: move its primaries of fully healthy
    /// partitions to a current secondary, downgrade its secondaries where a primary and
    /// another secondary stay. Returns how many partitions still hold it.
    ///
    /// Membership is matched by host name on master and by address on 2.4 and 2.5 (see
    /// `Snapshot::members`). An action names its nodes by the configuration's address, and
    /// by host name only where the meta's own answers carry names (master's `hp_primary`,
    /// `hp_secondaries`), copied from them: 2.4 and 2.5 have no such field and misread one
    /// (`configuration_proposal_action` has ids 1-3 in their IDL), and master matches a name
    /// against its own, dropping a proposal whose name it does not know
    /// (`partition_guardian::from_proposals` @master).
    pub(crate) async fn propose_drain(&self, node: &NodeId) -> Result<usize, PegasusError> {
        let me = v4(addr(node)?).map(RpcAddress::new).unwrap_or_default();
        let snap = self.snapshot().await?;
        // A member's action carries the configuration's address and, on master, the meta's
        // own name for it.
        let action = |target: &Member, node: &Member, kind: i32| ProposalAction {
            target: target.addr,
            node: node.addr,
            kind,
            hp_target: target.hp.clone(),
            hp_node: node.hp.clone(),
        };
        let mut left = 0;
        for (app, q) in &snap.apps {
            for p in &q.partitions {
                let members = snap.members(p);
                let Some(mine) = members.iter().find(|m| m.id == me) else {
                    continue;
                };
                // Only members ALIVE to the meta count: a dead one in the configuration
                // takes no writes, and the downgrade that follows a move is not counted by the
                // meta.
                let alive = members.iter().filter(|m| m.alive).count();
                let full = alive >= p.max_replica_count.max(0) as usize;
                // On master every member carries its host name; one without it would reach
                // the replica as an address its host-name list does not hold.
                let named = members.iter().filter(|m| m.hp.is_some()).count();
                if named != 0 && named != members.len() {
                    continue;
                }
                // Tables below three replicas are not drained: their downtime is accepted
                // by name, or the plan refused them.
                if app.max_replica_count < 3 {
                    continue;
                }
                left += 1;
                let gpid = Gpid::new(app.app_id, p.pid.partition_index);
                let secondaries: Vec<&Member> = members.iter().filter(|m| !m.primary).collect();
                let req = if mine.primary {
                    let Some(to) = secondaries.iter().find(|s| s.alive) else {
                        continue;
                    };
                    if !full {
                        continue;
                    }
                    BalancerRequest {
                        gpid,
                        // The move, then the downgrade of what stays behind, in one list: the
                        // meta sends each action on the reply to the previous one
                        // (`server_state::on_update_configuration_on_remote_reply` then
                        // `partition_guardian::cure`, all three versions), so the partition
                        // drains within one lb tick instead of two.
                        action_list: vec![
                            action(mine, mine, config_type::DOWNGRADE_TO_SECONDARY),
                            action(to, to, config_type::UPGRADE_TO_PRIMARY),
                            action(to, mine, config_type::DOWNGRADE_TO_INACTIVE),
                        ],
                        force: Some(false),
                        balance_type: Some(0),
                    }
                } else {
                    let Some(primary) = members.iter().find(|m| m.primary) else {
                        continue;
                    };
                    if secondaries.iter().filter(|m| m.alive).count() < 2 {
                        continue;
                    }
                    BalancerRequest {
                        gpid,
                        action_list: vec![action(
                            primary,
                            mine,
                            config_type::DOWNGRADE_TO_INACTIVE,
                        )],
                        force: Some(false),
                        balance_type: None,
                    }
                };
                let _: ErrResponse = match self.meta.call(rpc::PROPOSE_BALANCER, &req).await {
                    Ok(r) => r,
                    // One pending already, or the partition moved: the next round decides.
                    Err(MetaError::App { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
            }
        }
        self.proposed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), Instant::now());
        Ok(left)
    }

    /// Whether a tick has passed since the last proposals for `node`.
    pub(crate) fn repropose_due(&self, node: &NodeId) -> bool {
        self.proposed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .is_none_or(|t| t.elapsed() >= self.timing.repropose)
    }
}
