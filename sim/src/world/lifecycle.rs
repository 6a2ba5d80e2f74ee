//! Processes: start, stop, exit, crash; failure detection by beacons; coordinator election.

use rollout_core::RoleKind;

use super::{Ev, Rep, World, us};

impl World {
    /// Failure detection: a node beacons (Pegasus) or holds its ZooKeeper session (OpenMLDB)
    /// while its process serves and the network reaches the coordinators, whatever its boot.
    /// When that stops, the coordinator declares it dead `detect` later unless it resumes;
    /// when it resumes, the node attaches after one beacon interval.
    pub(crate) fn beacons_changed(&mut self, node: u32) {
        let n = &self.nodes[node as usize];
        let now_beaconing = n.up() && self.now >= n.contact_lost_until;
        if now_beaconing == n.beaconing {
            return;
        }
        let data = n.kind == RoleKind::Data;
        let n = &mut self.nodes[node as usize];
        n.beaconing = now_beaconing;
        n.fd_epoch += 1;
        let epoch = n.fd_epoch;
        if now_beaconing {
            let d = us(self.t.beacon);
            self.after(d, Ev::Attach { node, epoch });
        } else {
            let d = us(self.t.detect);
            self.after(d, Ev::Detect { node, epoch });
            if self.profile.lease_drops_replicas && data {
                // A replica server that hears from no meta for fd_lease drops its replicas.
                let l = us(self.t.lease);
                self.after(l, Ev::LeaseLost { node, epoch });
            }
        }
    }

    /// The process of `node` is gone (stopped, crashed or exited).
    pub(crate) fn process_gone(&mut self, node: u32) {
        let now = self.now;
        let was_serving = self.nodes[node as usize].serving;
        let kind = self.nodes[node as usize].kind;
        if kind == RoleKind::Data {
            // Followers keep exactly what replication had carried at this instant.
            let parts = self.nodes[node as usize].parts.clone();
            for &p in &parts {
                self.replicate(p);
            }
        }
        let led = self.leader == Some(node);
        {
            let n = &mut self.nodes[node as usize];
            // Once it led at an exit it keeps needing the settle: a crash after the restart
            // does not take that away.
            n.led_at_stop |= led;
            n.running = false;
            n.serving = false;
            n.flush_done = None;
            n.down_since = now;
        }
        if kind == RoleKind::Coordinator && self.leader == Some(node) {
            self.leader = None;
            self.leaderless_since = Some(now);
            let e = us(self.t.election);
            self.after(e, Ev::Elect);
            if self.profile.lease_drops_replicas {
                let l = us(self.t.lease);
                self.after(l, Ev::LeaseCheck { since: now });
            }
        }
        if kind == RoleKind::Data && was_serving {
            if !self.profile.data_survives_restart {
                let parts = self.nodes[node as usize].parts.clone();
                for p in parts {
                    for r in self.parts[p as usize]
                        .replicas
                        .iter_mut()
                        .filter(|r| r.node == node)
                    {
                        r.loaded = false;
                    }
                }
            }
            self.with_model(|m, w| m.data_node_gone(w, node));
        }
        if kind != RoleKind::Data {
            self.nodes[node as usize].attached = false;
        }
        self.beacons_changed(node);
        self.touch_node(node);
    }

    /// The coordinator notices `node` is gone.
    pub(super) fn detect(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        if n.offline {
            return;
        }
        n.offline = true;
        n.attached = false;
        if n.kind == RoleKind::Data {
            self.with_model(|m, w| m.data_node_detected(w, node));
        }
        self.touch_node(node);
    }

    /// A node's beacons (or session) reach the coordinator again.
    pub(super) fn attach(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        let fresh_start = n.attached_boot != n.boot;
        n.attached = true;
        n.offline = false;
        n.attached_boot = n.boot;
        if n.kind == RoleKind::Data {
            self.with_model(|m, w| m.data_node_registered(w, node, fresh_start));
        }
        self.touch_node(node);
    }

    pub(super) fn elect(&mut self) {
        if self.leader.is_some() {
            return;
        }
        let candidate = self
            .nodes
            .iter()
            .position(|n| n.is_elected_coordinator() && n.up());
        match candidate {
            Some(c) => {
                self.leader = Some(c as u32);
                self.leaderless_since = None;
                self.with_model(|m, w| m.leader_elected(w));
                self.start_grace();
                self.changed();
            }
            None => {
                let e = us(self.t.election);
                self.after(e, Ev::Elect);
            }
        }
    }

    /// A new leader's failure detector starts from its partition configurations
    /// ([`crate::Timings::election_grace`]; `meta_service::start_service`,
    /// `failure_detector::register_worker` @v2.4.0, @v2.5.0, master): every data node that is
    /// a primary or secondary somewhere is ALIVE to it at once, beaconing or not, and none is
    /// declared dead before the grace has run (the `Ev::Detect` handler defers them); a node
    /// in no configuration is listed only once its first beacon reaches the new leader.
    fn start_grace(&mut self) {
        let grace = us(self.t.election_grace);
        if grace == 0 {
            return;
        }
        let until = self.now.saturating_add(grace);
        self.grace_until = Some(until);
        self.schedule(until, Ev::GraceOver);
        for node in 0..self.nodes.len() as u32 {
            let n = &self.nodes[node as usize];
            if n.kind != RoleKind::Data {
                continue;
            }
            let member = n.parts.iter().any(|&p| {
                self.parts[p as usize].replicas.iter().any(|r| {
                    r.node == node && matches!(r.role, super::Rep::Primary | super::Rep::Secondary)
                })
            });
            let (beaconing, epoch) = (n.beaconing, n.fd_epoch);
            let n = &mut self.nodes[node as usize];
            match (member, beaconing) {
                (true, false) => {
                    n.attached = true;
                    n.offline = false;
                    self.schedule(until, Ev::Detect { node, epoch });
                }
                // A pending attach still registers it with the model when it comes.
                (true, true) => {
                    n.attached = true;
                    n.offline = false;
                }
                (false, true) => {
                    n.attached = false;
                    n.fd_epoch += 1;
                    let epoch = n.fd_epoch;
                    let d = us(self.t.beacon);
                    self.after(d, Ev::Attach { node, epoch });
                }
                // Down and in no configuration: the new leader does not know it.
                (false, false) => n.attached = false,
            }
            self.touch_node(node);
        }
    }

    /// Launches the process of `node`: it serves after start plus replay.
    pub(crate) fn launch(&mut self, node: u32) {
        let replay = self.nodes[node as usize]
            .unflushed
            .saturating_mul(us(self.t.replay_per_write));
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.running = true;
        n.serving = false;
        n.boot += 1;
        n.started_at = now;
        n.flush_done = None;
        n.exit_reason = None;
        if let Some((v, d)) = n.staged.take() {
            n.version = v;
            n.digest = d;
        }
        let boot = n.boot;
        let zk_race = self.profile.early_start_exits && n.kind == RoleKind::Data && !n.offline;
        if n.fail_start || zk_race {
            // Crash loop, or OpenMLDB's ZNODEEXISTS exit when the old session still exists.
            let d = 3_000_000;
            self.after(d, Ev::Exit { node, boot });
        } else {
            let d = us(self.t.start)
                .saturating_add(replay)
                .saturating_add(self.nodes[node as usize].slow_start);
            self.after(d, Ev::Serving { node, boot });
        }
        self.note_liveness(node);
        self.changed();
    }

    /// A replica server that saw no meta for fd_lease turns its replicas inactive.
    pub(crate) fn drop_replicas(&mut self, n: u32) {
        let parts = self.nodes[n as usize].parts.clone();
        for p in parts {
            self.replicate(p);
            let mut member_lost = false;
            for r in self.parts[p as usize]
                .replicas
                .iter_mut()
                .filter(|r| r.node == n && r.role != Rep::Inactive)
            {
                member_lost |= matches!(r.role, Rep::Primary | Rep::Secondary);
                r.role = Rep::Inactive;
            }
            if member_lost {
                self.reconfigure(p);
            }
            self.touch(p);
        }
        self.changed();
    }
}
