//! The world's own events, as they fall due: a process gone or serving, beacons attaching or
//! a node declared dead, elections, leases, injected crashes and partitions.

use rollout_core::RoleKind;

use super::{Ev, World, us};

impl World {
    /// Runs event `ev`, due now.
    pub(super) fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Model(e) => self.with_model(|m, w| m.on_event(w, e)),
            Ev::StopDone { node, boot } | Ev::Exit { node, boot } => {
                let n = &self.nodes[node as usize];
                if n.boot == boot && n.running {
                    if matches!(ev, Ev::Exit { .. }) {
                        self.nodes[node as usize].exit_reason = Some(if n.fail_start {
                            "the process exited during start (injected crash loop)".into()
                        } else {
                            "the process exited with ZNODEEXISTS: its old ZooKeeper session \
                             still existed when it started"
                                .into()
                        });
                    }
                    self.process_gone(node);
                }
            }
            Ev::Serving { node, boot } => {
                let n = &mut self.nodes[node as usize];
                if n.boot == boot && n.running && !n.serving {
                    n.serving = true;
                    n.unflushed = 0;
                    if n.is_elected_coordinator() && self.leader.is_none() {
                        // A coordinator that comes up with no leader campaigns at once.
                        self.schedule(self.now, Ev::Elect);
                    }
                    self.beacons_changed(node);
                    self.touch_node(node);
                }
            }
            Ev::Attach { node, epoch } => {
                let n = &self.nodes[node as usize];
                if n.fd_epoch == epoch && n.beaconing {
                    self.attach(node);
                }
            }
            Ev::Detect { node, epoch } => {
                let n = &self.nodes[node as usize];
                if n.fd_epoch == epoch && !n.beaconing {
                    match self.grace_until {
                        // A leader in its first grace declares no node dead.
                        Some(until) if self.now < until => {
                            self.schedule(until, Ev::Detect { node, epoch });
                        }
                        _ => self.detect(node),
                    }
                }
            }
            Ev::Unblock { part } => self.touch(part),
            Ev::Flushed { node } => {
                let n = &mut self.nodes[node as usize];
                if n.flush_done.is_some_and(|t| t <= self.now) {
                    n.unflushed = 0;
                    self.changed();
                }
            }
            Ev::Elect => self.elect(),
            Ev::GraceOver => self.changed(),
            Ev::LeaseCheck { since } => {
                if self.leader.is_none() && self.leaderless_since == Some(since) {
                    let data: Vec<u32> = (0..self.nodes.len() as u32)
                        .filter(|&n| self.nodes[n as usize].kind == RoleKind::Data)
                        .collect();
                    for n in data {
                        self.drop_replicas(n);
                    }
                }
            }
            Ev::LeaseLost { node, epoch } => {
                let n = &self.nodes[node as usize];
                if n.fd_epoch == epoch && !n.beaconing && n.running {
                    self.drop_replicas(node);
                }
            }
            Ev::Crash { node } => {
                if self.nodes[node as usize].running {
                    self.nodes[node as usize].held = false;
                    self.nodes[node as usize].crashes += 1;
                    self.nodes[node as usize].exit_reason = Some("the process crashed".into());
                    self.process_gone(node);
                    let delay = us(self.t.crash_restart);
                    self.after(delay, Ev::CrashRestart { node });
                }
            }
            Ev::CrashRestart { node } => {
                if !self.nodes[node as usize].running {
                    self.launch(node);
                }
            }
            Ev::ContactLost { node, until } => {
                let n = &mut self.nodes[node as usize];
                n.contact_lost_until = n.contact_lost_until.max(until);
                self.beacons_changed(node);
                let back = self.nodes[node as usize].contact_lost_until - self.now;
                self.after(back, Ev::ContactBack { node });
            }
            Ev::ContactBack { node } => self.beacons_changed(node),
            Ev::LeaderFailover => {
                if let Some(l) = self.leader {
                    self.nodes[l as usize].crashes += 1;
                    self.process_gone(l);
                    let delay = us(self.t.crash_restart);
                    self.after(delay, Ev::CrashRestart { node: l });
                }
            }
        }
    }
}
