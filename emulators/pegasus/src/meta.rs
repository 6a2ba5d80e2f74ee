//! The meta server's RPCs, per version (docs/upstream/pegasus.md §2.1; `meta_service.cpp`,
//! `server_state.cpp`, `server_load_balancer.cpp`, `partition_guardian.cpp` at each tag).

use rollout_core::{Cluster, NodeId};
use rollout_sim::SimCluster;
use rollout_sim::emulation::{ClusterView, NodeView, PartitionView, Proposal};

use crate::Directory;
use crate::serve::{Answer, decode, reply, rpc, rpc_error};
use crate::version::ServerVersion;
use crate::wire::frame::Request;
use crate::wire::idl::{self, AppOut, Balancer, ConfigOut, NodeOut};

/// `node_status`.
const NS_ALIVE: i32 = 1;
const NS_UNALIVE: i32 = 2;

/// `config_type`.
const CT_UPGRADE_TO_PRIMARY: i32 = 2;
const CT_DOWNGRADE_TO_SECONDARY: i32 = 5;
const CT_DOWNGRADE_TO_INACTIVE: i32 = 6;

/// `meta_function_level`.
const LEVELS: [(i32, &str); 5] = [
    (100, "stopped"),
    (200, "blind"),
    (300, "freezed"),
    (400, "steady"),
    (500, "lively"),
];
const LEVEL_QUERY: i32 = 10_000;
const STEADY: i32 = 400;

/// The table name of world table `t`: `temp` when there is one, as a fresh onebox has.
pub(crate) fn app_name(view: &ClusterView, t: u32) -> String {
    if view.tables == 1 {
        "temp".into()
    } else {
        format!("t{t}")
    }
}

/// A meta RPC's answer.
pub(crate) async fn answer(
    sim: &SimCluster,
    dir: &Directory,
    node: &NodeView,
    v: ServerVersion,
    req: &Request,
) -> Answer {
    let view = sim.view();
    if view.leader.as_ref() != Some(&node.id) {
        return standby(dir, &view, v, req);
    }
    let m = Meta {
        sim,
        dir,
        view: &view,
        node,
        v,
    };
    match req.rpc.as_str() {
        rpc::LIST_NODES => match decode(req, |r| idl::i32_request(r, 0)) {
            Ok(filter) => m.list_nodes(req, filter),
            Err(died) => died,
        },
        rpc::LIST_APPS => match decode(req, |r| idl::list_apps_request(r, v)) {
            Ok(_) => m.list_apps(req),
            Err(died) => died,
        },
        rpc::QUERY_CONFIG => match decode(req, idl::query_cfg) {
            Ok(q) => m.query_cfg(req, &q),
            Err(died) => died,
        },
        rpc::CLUSTER_INFO => match decode(req, |r| idl::i32_request(r, 0)) {
            Ok(_) => m.cluster_info(req),
            Err(died) => died,
        },
        rpc::CONTROL_META => match decode(req, |r| idl::i32_request(r, 0)) {
            Ok(level) => m.control_meta(req, level).await,
            Err(died) => died,
        },
        rpc::PROPOSE_BALANCER => match decode(req, |r| idl::balancer(r, v)) {
            Ok(b) => {
                let err = m.propose(&b);
                reply(req, |o| idl::err_only(o, err))
            }
            Err(died) => died,
        },
        _ => rpc_error(req, "ERR_HANDLER_NOT_FOUND"),
    }
}

/// A standby. Thrift clients cannot be forwarded, so it answers `ERR_FORWARD_TO_OTHERS`,
/// and a configuration query names the leader in `partitions[0].primary`
/// (`meta_service::check_status` @v2.4.0, `check_leader_status` @v2.5.0,
/// `on_query_configuration_by_index`). A proposal is looked up by app before leadership is
/// checked on 2.5 and master, and a standby has no apps: `ERR_INVALID_PARAMETERS` on 2.5,
/// `ERR_APP_NOT_EXIST` on master (`on_propose_balancer`).
fn standby(dir: &Directory, view: &ClusterView, v: ServerVersion, req: &Request) -> Answer {
    let forward = "ERR_FORWARD_TO_OTHERS";
    match req.rpc.as_str() {
        rpc::QUERY_CONFIG => {
            let hint = ConfigOut {
                primary: view.leader.as_ref().map_or(0, |l| dir.raw_addr(l)),
                hp_primary: view.leader.as_ref().and_then(|l| dir.host_name(l)),
                ..ConfigOut::default()
            };
            reply(req, |o| {
                idl::query_cfg_response(o, v, forward, (0, 0), std::slice::from_ref(&hint));
            })
        }
        rpc::LIST_NODES | rpc::LIST_APPS | rpc::CLUSTER_INFO | rpc::CONTROL_META => {
            reply(req, |o| idl::err_only(o, forward))
        }
        rpc::PROPOSE_BALANCER => {
            let e = match v {
                ServerVersion::V2_4 => forward,
                ServerVersion::V2_5 => "ERR_INVALID_PARAMETERS",
                _ => "ERR_APP_NOT_EXIST",
            };
            reply(req, |o| idl::err_only(o, e))
        }
        _ => rpc_error(req, "ERR_HANDLER_NOT_FOUND"),
    }
}

struct Meta<'a> {
    sim: &'a SimCluster,
    dir: &'a Directory,
    view: &'a ClusterView,
    node: &'a NodeView,
    v: ServerVersion,
}

impl Meta<'_> {
    /// Whether the meta is frozen: too few replica servers alive
    /// (`meta_service::check_freeze`).
    fn frozen(&self) -> bool {
        let data: Vec<&NodeView> = self
            .view
            .nodes
            .iter()
            .filter(|n| n.role == "replica")
            .collect();
        let alive = data.iter().filter(|n| n.alive).count();
        let t = &self.dir.timings;
        alive < t.min_live || alive * 100 < data.len() * t.live_percentage as usize
    }

    /// `on_list_nodes`: alive nodes, then dead ones; master names each by host too.
    fn list_nodes(&self, req: &Request, filter: i32) -> Answer {
        let mut infos: Vec<NodeOut> = self
            .view
            .nodes
            .iter()
            .filter(|n| n.role == "replica")
            .map(|n| NodeOut {
                status: if n.alive { NS_ALIVE } else { NS_UNALIVE },
                addr: self.dir.raw_addr(&n.id),
                name: self.dir.host_name(&n.id),
            })
            .filter(|i| filter == 0 || i.status == filter)
            .collect();
        infos.sort_by_key(|i| i.status);
        reply(req, |o| idl::list_nodes(o, self.v, "ERR_OK", &infos))
    }

    fn apps(&self) -> Vec<AppOut> {
        (1..=self.view.tables)
            .map(|t| {
                let parts = self.view.partitions.iter().filter(|p| p.table == t);
                let (count, wanted) = parts.fold((0, 0), |(c, w), p| (c + 1, w.max(p.wanted)));
                AppOut {
                    id: t as i32,
                    name: app_name(self.view, t),
                    partitions: count,
                    max_replicas: wanted as i32,
                }
            })
            .collect()
    }

    fn list_apps(&self, req: &Request) -> Answer {
        let apps = self.apps();
        reply(req, |o| idl::list_apps(o, "ERR_OK", &apps))
    }

    fn config(&self, p: &PartitionView) -> ConfigOut {
        let d = self.dir;
        ConfigOut {
            app: p.table as i32,
            pidx: p.index as i32,
            ballot: p.ballot as i64,
            max_replicas: p.wanted as i32,
            primary: p.primary.as_ref().map_or(0, |n| d.raw_addr(n)),
            secondaries: p.secondaries.iter().map(|n| d.raw_addr(n)).collect(),
            last_drops: Vec::new(),
            hp_primary: p.primary.as_ref().and_then(|n| d.host_name(n)),
            hp_secondaries: p
                .secondaries
                .iter()
                .filter_map(|n| d.host_name(n))
                .collect(),
            hp_last_drops: Vec::new(),
        }
    }

    /// `query_configuration_by_index`: every partition when no index is given or none of
    /// them is in range.
    fn query_cfg(&self, req: &Request, q: &idl::QueryCfg) -> Answer {
        let table = (1..=self.view.tables).find(|&t| app_name(self.view, t) == q.app_name);
        let Some(t) = table else {
            return reply(req, |o| {
                idl::query_cfg_response(o, self.v, "ERR_OBJECT_NOT_FOUND", (0, 0), &[]);
            });
        };
        let all: Vec<&PartitionView> = self
            .view
            .partitions
            .iter()
            .filter(|p| p.table == t)
            .collect();
        let in_range = |i: &i32| usize::try_from(*i).is_ok_and(|i| i < all.len());
        let any = q.indices.iter().any(in_range);
        let partitions: Vec<ConfigOut> = all
            .iter()
            .filter(|p| !any || q.indices.contains(&(p.index as i32)))
            .map(|p| self.config(p))
            .collect();
        reply(req, |o| {
            idl::query_cfg_response(
                o,
                self.v,
                "ERR_OK",
                (t as i32, all.len() as i32),
                &partitions,
            );
        })
    }

    /// `on_query_cluster_info`, its keys in order; master names metas by host.
    fn cluster_info(&self, req: &Request) -> Answer {
        let name = |id: &NodeId| -> String {
            match (
                self.v.host_ports(),
                self.dir.host_name(id),
                self.dir.addr_of(id),
            ) {
                (true, Some((h, p)), _) => format!("{h}:{p}"),
                (_, _, Some(a)) => a.to_string(),
                _ => id.to_string(),
            }
        };
        let metas: Vec<String> = self
            .view
            .nodes
            .iter()
            .filter(|n| n.role == "meta")
            .map(|n| name(&n.id))
            .collect();
        let level = if self.frozen() {
            "freezed".to_string()
        } else {
            self.view
                .knobs
                .get("meta_level")
                .cloned()
                .unwrap_or_else(|| "steady".into())
        };
        let (zk_hosts, zk_root) = self
            .dir
            .zookeeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Named after the first meta, so that it stays the same across leader changes.
        let cluster = format!("emulated-{}", metas.first().map_or("", String::as_str));
        let pairs = [
            ("meta_servers", metas.join(",")),
            ("primary_meta_server", name(&self.node.id)),
            ("zookeeper_hosts", zk_hosts),
            ("zookeeper_root", zk_root),
            ("meta_function_level", level),
            ("balance_operation_count", "0".to_string()),
            ("primary_replica_count_stddev", "0.00".to_string()),
            ("total_replica_count_stddev", "0.00".to_string()),
            ("cluster_name", cluster),
        ];
        reply(req, |o| idl::cluster_info(o, "ERR_OK", &pairs))
    }

    /// `on_control_meta_level`: 10000 asks; a known level is stored; the old stored level is
    /// the answer. Any level at or below steady also clears the pending proposals, changed
    /// or not (`meta_service::on_control_meta_level` @v2.5.0 queues
    /// `server_state::clear_proposals`).
    async fn control_meta(&self, req: &Request, level: i32) -> Answer {
        let name = |l: i32| LEVELS.iter().find(|(n, _)| *n == l).map(|(_, s)| *s);
        let old = self
            .view
            .knobs
            .get("meta_level")
            .and_then(|l| LEVELS.iter().find(|(_, s)| s == l).map(|(n, _)| *n))
            .unwrap_or(400);
        let err = if level == LEVEL_QUERY {
            "ERR_OK"
        } else {
            match name(level) {
                Some(n) => {
                    if level <= STEADY {
                        self.sim.clear_proposals();
                    }
                    match Cluster::write_knob(self.sim, "meta_level", n).await {
                        Ok(()) => "ERR_OK",
                        Err(_) => "ERR_INVALID_STATE",
                    }
                }
                None => "ERR_INVALID_PARAMETERS",
            }
        };
        reply(req, |o| idl::meta_control(o, err, old))
    }

    /// `on_propose_balancer` then `register_proposals`; what runs at the next tick is the
    /// world's (`partition_guardian::from_proposals`). An unknown app or partition is refused
    /// (`ERR_INVALID_PARAMETERS`, master `ERR_APP_NOT_EXIST`), as is a second proposal while
    /// one is pending; an action whose node is not alive to the meta is accepted and dropped
    /// at the tick with only a log line, as on the server.
    fn propose(&self, b: &Balancer) -> &'static str {
        let unknown = if self.v.host_ports() {
            "ERR_APP_NOT_EXIST"
        } else {
            "ERR_INVALID_PARAMETERS"
        };
        let (Ok(table), Ok(index)) = (u32::try_from(b.gpid.0), u32::try_from(b.gpid.1)) else {
            return unknown;
        };
        let Some(part) = self
            .view
            .partitions
            .iter()
            .find(|p| p.table == table && p.index == index)
        else {
            self.log(format!("refused {}.{}: {unknown}", b.gpid.0, b.gpid.1));
            return unknown;
        };
        // The meta names each action's node by `hp_*` when set (master), else by its address
        // (which master reverse-resolves to the same name).
        let node = |raw: i64, hp: Option<&(String, u16)>| match (self.v.host_ports(), hp) {
            (true, Some(hp)) => self.dir.node_of_name(hp),
            _ => self.dir.node_of_raw(raw),
        };
        let alive = |n: &Option<NodeId>| {
            n.as_ref().is_some_and(|n| {
                self.view
                    .nodes
                    .iter()
                    .any(|x| &x.id == n && x.alive && x.role == "replica")
            })
        };
        let kinds: Vec<i32> = b.actions.iter().map(|a| a.kind).collect();
        let proposal = match (kinds.as_slice(), b.actions.as_slice()) {
            // Queued as sent; each action is checked when it runs, at the tick
            // (`partition_guardian::from_proposals` @v2.5.0).
            ([CT_DOWNGRADE_TO_SECONDARY, CT_UPGRADE_TO_PRIMARY], [down, up]) => {
                let from = node(down.node, down.hp_node.as_ref());
                let to = node(up.node, up.hp_node.as_ref());
                Some(match (from, to) {
                    (Some(from), Some(to)) => Proposal::MovePrimary { from, to },
                    _ => Proposal::Unrunnable,
                })
            }
            // A move-primary and the downgrade of what stays behind, in one list: the meta
            // sends the downgrade on the promote's reply (`on_update_configuration_on_remote_reply`
            // then `cure` @v2.5.0). Its target, when unset, is filled at registration with the
            // primary of that moment (the old one), which no longer leads when the downgrade
            // comes up, so it is dropped then; so is an unknown node, after the move.
            (
                [
                    CT_DOWNGRADE_TO_SECONDARY,
                    CT_UPGRADE_TO_PRIMARY,
                    CT_DOWNGRADE_TO_INACTIVE,
                ],
                [down, up, third],
            ) => {
                let from = node(down.node, down.hp_node.as_ref());
                let to = node(up.node, up.hp_node.as_ref());
                let unset = third.target == 0 && third.hp_target.is_none();
                let target = if unset {
                    part.primary.clone()
                } else {
                    node(third.target, third.hp_target.as_ref())
                };
                let n = node(third.node, third.hp_node.as_ref());
                Some(match (from, to, target, n) {
                    (Some(from), Some(to), Some(target), Some(node)) => {
                        Proposal::MoveThenDowngrade {
                            from,
                            to,
                            target,
                            node,
                        }
                    }
                    (Some(from), Some(to), _, _) => Proposal::MovePrimary { from, to },
                    _ => Proposal::Unrunnable,
                })
            }
            // A move-primary whose promote a 2.4/2.5 reader lost: the demote runs (its empty
            // target filled with the primary), the empty action then clears the rest.
            ([CT_DOWNGRADE_TO_SECONDARY, 0], [down, _]) => {
                let from = node(down.node, down.hp_node.as_ref());
                let runs = alive(&from) && from == part.primary;
                Some(match from.filter(|_| runs) {
                    Some(from) => Proposal::Demote { from },
                    None => Proposal::Unrunnable,
                })
            }
            // Queued as sent, an invalid target filled with the primary, refused when there is
            // none (`server_load_balancer::register_proposals` @v2.5.0); whether the target
            // leads and the node is a member is checked when it runs, at the tick.
            ([CT_DOWNGRADE_TO_INACTIVE], [one]) => {
                let unset = one.target == 0 && one.hp_target.is_none();
                let target = if unset {
                    if part.primary.is_none() {
                        self.log(format!("refused {table}.{index}: no primary to send it to"));
                        return "ERR_INVALID_PARAMETERS";
                    }
                    part.primary.clone()
                } else {
                    node(one.target, one.hp_target.as_ref())
                };
                let n = node(one.node, one.hp_node.as_ref());
                Some(match (target, n) {
                    (Some(target), Some(n)) => Proposal::Downgrade { target, node: n },
                    _ => Proposal::Unrunnable,
                })
            }
            ([], _) => return "ERR_INVALID_PARAMETERS",
            _ => Some(Proposal::Unrunnable),
        };
        let part_id = format!("{table}.{index}");
        let proposal = proposal.unwrap_or(Proposal::Unrunnable);
        let what = match &proposal {
            Proposal::MovePrimary { to, .. } => format!("move-primary {part_id} to {to}"),
            Proposal::Unrunnable => format!("unrunnable {part_id} (dropped at the tick)"),
            Proposal::Demote { .. } => format!("demote {part_id}"),
            Proposal::MoveThenDowngrade {
                to, target, node, ..
            } => {
                format!("move-primary {part_id} to {to}, then downgrade {node} (to {target})")
            }
            Proposal::Downgrade { target, node } => {
                format!("downgrade {part_id} {node} (to {target})")
            }
            other => format!("{other:?} {part_id}"),
        };
        match self.sim.propose(table, index, &proposal) {
            Ok(()) => {
                self.log(what);
                "ERR_OK"
            }
            Err(why) => {
                self.log(format!("refused {part_id}: {why}"));
                "ERR_INVALID_PARAMETERS"
            }
        }
    }

    fn log(&self, what: String) {
        tracing::debug!(meta = %self.node.id, "{what}");
        self.dir
            .proposals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }
}
