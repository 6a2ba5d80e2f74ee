//! The OpenMLDB nameserver as the world's [`Model`]: what it does when a tablet goes, comes
//! back or registers, when its leader changes, and what the engine's drain, rejoin and heal
//! ask of it; the model behind docs/openmldb-interfaces.md, with the op queues in
//! `openmldb` and the ops in `openmldb_ops`.

use std::any::Any;

use rollout_core::{Health, Knob, Procedure, RoleKind};

use super::openmldb::{AUTO_OFFLINE, FENCE, OP_DONE, Op, OpenMldb, ReAdd};
use super::{Model, ModelEv, Profile, Rep, World, us};
use crate::config::Flavor;

impl Model for OpenMldb {
    fn profile(&self) -> Profile {
        Profile {
            flavor: Flavor::OpenMldb,
            write_quorum: 1,
            synchronous: false,
            lease_drops_replicas: false,
            data_survives_restart: false,
            early_start_exits: true,
            partition_prefix: "t",
            min_serving: 1,
            config_files: &[
                "conf/nameserver.flags",
                "conf/tablet.flags",
                "conf/apiserver.flags",
                "conf/taskmanager.properties",
            ],
        }
    }

    fn knobs(&self, procedure: Procedure) -> Vec<Knob> {
        match procedure {
            Procedure::HighAvailability => {
                vec![Knob::rollout("auto_failover", "false").blocks_healing()]
            }
            _ => Vec::new(),
        }
    }

    fn start(&mut self, _: &mut World) {}

    fn on_event(&mut self, w: &mut World, ev: ModelEv) {
        match ev.code {
            OP_DONE => self.op_done(w, ev.a as usize),
            FENCE => self.fence(w, ev.a as usize, ev.b, ev.c == 1),
            AUTO_OFFLINE => {
                let node = ev.a;
                let n = &w.nodes[node as usize];
                if n.boot == ev.c
                    && n.offline
                    && !self.auto_offlined[node as usize]
                    && w.knob("auto_failover") == "true"
                {
                    self.auto_offline(w, node);
                }
            }
            _ => {}
        }
    }

    /// A tablet's process is gone: its memory tables with it (the kernel unloads them); its
    /// leaderships stay in the nameserver's metadata until someone moves them.
    fn data_node_gone(&mut self, w: &mut World, node: u32) {
        let parts = w.nodes[node as usize].parts.clone();
        for p in parts {
            for r in w.parts[p as usize]
                .replicas
                .iter_mut()
                .filter(|r| r.node == node && r.role == Rep::Learner)
            {
                r.role = Rep::Inactive;
            }
        }
    }

    /// The tablet's ZooKeeper session expired: `tablet_heartbeat_timeout` later, auto failover
    /// runs the offline procedure.
    fn data_node_detected(&mut self, w: &mut World, node: u32) {
        let boot = w.nodes[node as usize].boot;
        let d = us(w.t.heartbeat_timeout);
        w.after_model(
            d,
            ModelEv {
                code: AUTO_OFFLINE,
                a: node,
                b: 0,
                c: boot,
            },
        );
    }

    /// A tablet's ZooKeeper node is there again. With auto_failover on, a restarted tablet
    /// (`startup_` prefix) gets the offline procedure if it had not yet, then
    /// RecoverEndpoint; a session blip within the heartbeat timeout changes nothing.
    fn data_node_registered(&mut self, w: &mut World, node: u32, fresh_start: bool) {
        let was_auto = std::mem::take(&mut self.auto_offlined[node as usize]);
        if w.knob("auto_failover") != "true" || !(fresh_start || was_auto) {
            return;
        }
        // A new process runs the offline procedure again, whether or not it ran at the
        // heartbeat timeout (`OnTabletOnline` calls `OnTabletOffline(endpoint, true)`), then
        // RecoverEndpoint recovers what it marked (`RecoverEndpointInternal`, need_restore
        // false, `name_server_task_concurrency` queues).
        if fresh_start {
            self.auto_offline(w, node);
        }
        self.auto_offlined[node as usize] = false;
        let c = self.concurrency;
        self.recover_endpoint(w, node, c);
    }

    fn leader_elected(&mut self, w: &mut World) {
        for q in 0..self.queues.len() {
            self.start_op(w, q);
        }
    }

    /// pre-upgrade, fenced: for each partition it leads, a fenced move to a follower with the
    /// leader's offset (see `openmldb_fence.rs`; the upstream tool's unfenced ChangeLeader
    /// loses the writes clients send the old leader until they re-route, openmldb.md 2.5),
    /// each followed by a RecoverTable of the old leader, as pre-upgrade does: the nameserver
    /// marks a moved leader not alive, and without it the partition would run a replica short
    /// from the move until after the restart.
    fn drain(&mut self, w: &mut World, node: u32) {
        self.move_failed[node as usize] = None;
        w.nodes[node as usize].draining = true;
        w.nodes[node as usize].held = true;
        let led: Vec<u32> = w.nodes[node as usize]
            .parts
            .iter()
            .copied()
            .filter(|&p| w.primary(p).is_some_and(|r| r.node == node))
            .collect();
        self.led[node as usize] = led.clone();
        // A single-replica partition with no temporary replica (its downtime accepted) has
        // no one to take over: it goes down with the tablet.
        let led: Vec<u32> = led
            .into_iter()
            .filter(|&p| w.parts[p as usize].replicas.len() > 1)
            .collect();
        for p in led {
            self.enqueue(
                w,
                Op::FencedMove {
                    part: p,
                    from: node,
                    to: None,
                },
            );
        }
    }

    /// recoverdata for every replica not loaded, then post-upgrade: a fenced move back once
    /// the node's replica has the leader's offset (upstream's explicit candidate is taken
    /// whatever its offset), then RecoverTable of the displaced leader, which the nameserver
    /// marked not alive.
    fn rejoin(&mut self, w: &mut World, node: u32) {
        let i = node as usize;
        if !w.nodes[i].up() {
            // Not back yet: nothing to give it; `rejoined` keeps waiting.
            return;
        }
        w.nodes[i].draining = false;
        // A drain that never finished (the node was skipped) must not block the queues.
        self.cancel_moves_from(w, node);
        // With auto_failover on (a failure being ridden out released it) the nameserver
        // refuses every call below (301) and recovers the tablet itself; the leaderships it
        // had wait for a later rejoin.
        if w.knob("auto_failover") == "true" {
            w.changed();
            return;
        }
        // Idempotent: a tablet that restarted again since its last rejoin is recovered again.
        // With auto_failover off the nameserver still marks the restarted tablet's replicas
        // alive, and RecoverEndpoint skips those: see `recover_unloaded`.
        self.recover_unloaded(w, node);
        for p in std::mem::take(&mut self.led[i]) {
            // A leader that is down is auto failover's to move, not post-upgrade's.
            let from = w.primary(p).map(|r| r.node);
            if let Some(from) = from.filter(|&f| f != node && w.nodes[f as usize].up()) {
                self.enqueue(
                    w,
                    Op::FencedMove {
                        part: p,
                        from,
                        to: Some(node),
                    },
                );
            }
        }
        w.changed();
    }

    fn data_down_limit(&self, _: &World) -> Option<(usize, String)> {
        None
    }

    /// recoverdata for the tablets that no one recovers: those that came back while
    /// auto_failover was off (turning it back on does not reload a tablet that already
    /// registered), and replicas left marked dead by an op that ran while their tablet or
    /// their partition's leader was down. Nothing while auto_failover is on: the nameserver
    /// refuses UpdateTableAliveStatus and RecoverTable then (301, `NameServerImpl` @v0.9.2).
    fn heal(&mut self, w: &mut World) {
        self.heal_fences(w);
        if w.knob("auto_failover") != "false" {
            return;
        }
        for node in 0..w.nodes.len() as u32 {
            let n = &w.nodes[node as usize];
            // Every registered tablet, as the backend's heal does.
            let stranded =
                n.kind == RoleKind::Data && n.up() && n.attached && n.counts.not_back > 0;
            if stranded {
                self.recover_unloaded(w, node);
            }
        }
    }

    /// The node leads nothing, but single-replica partitions with no other replica
    /// (accepted as unavailable: pre-upgrade with `--allow_single_replica` skips them).
    fn drained(&self, w: &World, node: u32, describe: bool) -> Health {
        // Kept by `World::touch`: the drain runs while every change re-evaluates this.
        let n = &w.nodes[node as usize];
        let leads = n.counts.primaries.saturating_sub(n.counts.sole_primaries);
        if let Some(why) = &self.move_failed[node as usize] {
            return Health::failed(why.clone());
        }
        if leads > 0 {
            return Health::Waiting(if describe {
                format!("node {} is still leader of {leads} partitions", n.id)
            } else {
                String::new()
            });
        }
        match self.pending(w, Some(node)) {
            Some(op) => Health::Waiting(op),
            None => Health::Healthy,
        }
    }

    fn pending(&self, w: &World, node: Option<u32>) -> Option<String> {
        match node {
            Some(n) if self.node_ops[n as usize] == 0 => None,
            None if !self.ops_pending() => None,
            _ => self.describe(w, node),
        }
    }

    fn stopped(&self, w: &World, node: u32) -> Option<String> {
        let n = &w.nodes[node as usize];
        (n.kind == RoleKind::Data && !n.offline).then(|| {
            format!(
                "tablet {} still has a ZooKeeper session; the nameserver has not seen it offline",
                n.id
            )
        })
    }

    /// With auto failover off nothing reloads a tablet that restarted on its own.
    fn cluster_health(&self, w: &World) -> Option<Health> {
        if w.knob("auto_failover") != "false" {
            return None;
        }
        let stranded = w.nodes.iter().enumerate().find(|(i, n)| {
            n.kind == RoleKind::Data
                && !n.draining
                && self.led[*i].is_empty()
                && n.counts.unloaded > 0
        })?;
        Some(Health::failed(format!(
            "tablet {} restarted outside the rollout and auto_failover is off, so nothing \
             reloads its replicas: recover them (recoverdata) or abort to turn auto_failover \
             back on",
            stranded.1.id
        )))
    }

    /// A load runs for the length of the op that loads: a RecoverTable's reload (as a
    /// follower, or a single replica as leader) or an AddReplica's copy (as a follower).
    /// The op's first tasks, before its LoadTable, count as loading too.
    fn loading(&self, part: u32, node: u32) -> Option<bool> {
        self.running
            .iter()
            .flatten()
            .find_map(|(op, _, _)| match *op {
                Op::ReAddReplica {
                    part: p,
                    node: n,
                    how,
                } if p == part && n == node => match how {
                    ReAdd::Reload => Some(false),
                    ReAdd::Single => Some(true),
                    ReAdd::Simplify => None,
                },
                Op::AddReplica { part: p, node: n } if p == part && n == node => Some(false),
                _ => None,
            })
    }

    fn temporary_replicas(&self) -> bool {
        true
    }

    /// pre-upgrade for a single-replica table: AddReplicaNS on another tablet.
    fn add_replica(&mut self, w: &mut World, part: u32, node: u32) {
        let present = w.parts[part as usize]
            .replicas
            .iter()
            .any(|r| r.node == node);
        if !present {
            // AddReplicaNS runs with concurrency 1: queue 0 (openmldb.md 2.6).
            self.enqueue_once(w, Op::AddReplica { part, node }, 1);
        }
    }

    /// post-upgrade for a single-replica table: the leadership back to `back` if the
    /// temporary replica holds it (a fenced move to that candidate), then DelReplicaNS.
    fn remove_replica(&mut self, w: &mut World, part: u32, node: u32, back: u32) {
        if !w.parts[part as usize]
            .replicas
            .iter()
            .any(|r| r.node == node)
        {
            return;
        }
        if w.primary(part).is_some_and(|r| r.node == node) {
            let c = self.concurrency;
            self.enqueue_once(
                w,
                Op::FencedMove {
                    part,
                    from: node,
                    to: Some(back),
                },
                c,
            );
        }
        let c = self.concurrency;
        self.enqueue_once(w, Op::DelReplica { part, node }, c);
    }

    fn temporary(&self, w: &World, part: u32, node: u32, removed: bool) -> Health {
        self.temporary_health(w, part, node, removed)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
