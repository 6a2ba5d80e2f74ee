//! The simulated clients: requests at a fixed rate over the partitions, each retried until it
//! is served or its timeout passes, with its virtual latency recorded.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hdrhistogram::Histogram;
use rand::Rng;

use super::{Rep, Replica, Us, World, us};
use crate::config::ClientLoad;

/// A client request waiting for its next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Req {
    part: u32,
    write: bool,
    issued: Us,
    deadline: Us,
}

/// The client side: the load, the requests waiting to retry, and the latency of every
/// request served.
pub(crate) struct Clients {
    pub(crate) load: ClientLoad,
    next_req: Us,
    interval: Us,
    retries: BinaryHeap<Reverse<(Us, u64, Req)>>,
    seq: u64,
    /// Microseconds from issue to the attempt that was served, per served request.
    pub(crate) latency: Histogram<u64>,
    /// The slowest served request, exactly (the histogram rounds).
    pub(crate) latency_max: Us,
}

impl Clients {
    pub(crate) fn new(load: ClientLoad) -> Self {
        let interval = if load.rate == 0 {
            u64::MAX
        } else {
            1_000_000 / u64::from(load.rate)
        };
        Self {
            load,
            next_req: interval.min(u64::MAX / 2),
            interval,
            retries: BinaryHeap::new(),
            seq: 0,
            latency_max: 0,
            // Up to two hours at three significant digits.
            latency: Histogram::new_with_bounds(1, 7_200_000_000, 3)
                .expect("constant bounds are valid"),
        }
    }

    /// Stops every client: no new request, no retry.
    #[cfg(test)]
    pub(crate) fn stop(&mut self) {
        self.next_req = Us::MAX;
        self.retries.clear();
    }

    /// Starts the clients again at `now`.
    #[cfg(test)]
    pub(crate) fn resume(&mut self, now: Us) {
        self.next_req = now.saturating_add(self.interval);
    }

    /// When the next request or retry is due.
    pub(crate) fn next_due(&self) -> Us {
        self.retries
            .peek()
            .map_or(Us::MAX, |Reverse((t, _, _))| *t)
            .min(self.next_req)
    }
}

impl World {
    /// Runs the request or retry due now.
    pub(super) fn client_step(&mut self) {
        let at = self.now;
        let req = if self.clients.next_req == at {
            self.clients.next_req = self.clients.next_req.saturating_add(self.clients.interval);
            let part = self.rng.random_range(0..self.parts.len() as u32);
            let write = self.rng.random_range(0..1000) < self.clients.load.writes_per_mille;
            Req {
                part,
                write,
                issued: at,
                deadline: at + us(self.clients.load.timeout),
            }
        } else {
            let Some(Reverse((_, _, req))) = self.clients.retries.pop() else {
                return;
            };
            req
        };
        self.attempt(req);
    }

    /// One attempt of a request at `self.now`.
    fn attempt(&mut self, req: Req) {
        let ok = if req.write {
            self.try_write(req.part)
        } else {
            self.readable(req.part)
        };
        if ok {
            self.mon.requests_ok += 1;
            let latency = self.now - req.issued;
            // Saturates at the histogram's top, which is above any timeout the builder allows.
            self.clients.latency.saturating_record(latency);
            self.clients.latency_max = self.clients.latency_max.max(latency);
            return;
        }
        let next = self.now + us(self.clients.load.retry);
        if next <= req.deadline {
            self.clients.seq += 1;
            let seq = self.clients.seq;
            self.clients.retries.push(Reverse((next, seq, req)));
        } else {
            self.mon.requests_failed += 1;
        }
    }

    /// A write from a client outside the world (an emulator's data path): acknowledged as
    /// the world's own clients' writes are, and recorded in the ledger; its sequence number,
    /// or `None` when the partition refuses it now.
    pub(crate) fn external_write(&mut self, p: u32) -> Option<u32> {
        self.try_write(p)
            .then(|| self.parts[p as usize].next_seq.saturating_sub(1))
    }

    /// The checks a tablet makes before a write or a delete of partition `p` on tablet `n`
    /// (`TabletImpl::Put`, `TabletImpl::Delete`, `CheckTable` @v0.9.2 and @v0.8.5): 453 in
    /// follower-cluster mode, 100 the partition not loaded, 103 not leading there.
    ///
    /// # Errors
    /// The return code and message.
    pub(crate) fn tablet_check(&self, p: u32, n: u32) -> Result<(), (i32, &'static str)> {
        if self.nodes[n as usize].write_hold > 0 {
            return Err((453, "is follower cluster"));
        }
        let loaded = self.nodes[n as usize].up()
            && self.parts[p as usize]
                .replicas
                .iter()
                .any(|r| r.node == n && r.loaded);
        if !loaded {
            // The tablet's `CheckTable` (`src/tablet/tablet_impl.cc` @v0.9.2, the same
            // @v0.8.5): no table 100; a table still loading is checked for leadership first,
            // 103 as a follower, 104 as the leader.
            return Err(match self.model().loading(p, n) {
                None => (100, "table does not exist"),
                Some(false) => (103, "table is follower"),
                Some(true) => (104, "table is loading"),
            });
        }
        if !self.leads_on_tablet(p, n) {
            return Err((103, "table is follower"));
        }
        Ok(())
    }

    /// A write a client outside the world sent to tablet `n` for partition `p` (OpenMLDB
    /// `TabletServer.Put`): decided by what that tablet holds, as `TabletImpl::Put` does
    /// (`src/tablet/tablet_impl.cc` @v0.9.2, the same @v0.8.5), not by where the world's
    /// clients would route it. A tablet held in follower mode answers 453; one without the
    /// partition loaded 100; a replica that is not leader on its tablet, or is fenced, 103.
    /// A leader a ChangeLeader moved away from is not told (`NameServerImpl::ChangeLeader`):
    /// it still leads on its tablet until a RecoverTable or a restart, and takes the write
    /// into its own log only, where no follower of the new term will ever read it.
    ///
    /// # Errors
    /// The tablet's return code and message.
    pub(crate) fn tablet_put(&mut self, p: u32, n: u32) -> Result<u32, (i32, &'static str)> {
        self.tablet_check(p, n)?;
        let part = &self.parts[p as usize];
        let seq = part.next_seq;
        let primary = part
            .replicas
            .iter()
            .any(|r| r.node == n && r.role == Rep::Primary);
        if !primary {
            // A leader moved away from and never told: its own log only.
            self.ack(p, |r| r.node == n);
            return Ok(seq);
        }
        // A leader on its tablet takes it: the tablet has no reconfiguration window.
        self.replicate(p);
        self.ack(p, |r| r.role == Rep::Primary);
        self.count_unflushed(p);
        Ok(seq)
    }

    /// A write: the replica clients route it to takes it and it is acknowledged, or it is
    /// refused (the client retries). The ledger records each acknowledged write's identity on
    /// the replica that took it; replication carries it to followers.
    fn try_write(&mut self, p: u32) -> bool {
        let now = self.now;
        // A deposed OpenMLDB leader that clients still route to takes writes its followers
        // reject (they follow the new term): only its own log has them.
        if let Some((node, until)) = self.parts[p as usize].stale_leader {
            if now < until {
                // A fenced one refuses them (it is a follower on its tablet): clients retry.
                if self.parts[p as usize].fenced == Some(node) {
                    return false;
                }
                let part = &self.parts[p as usize];
                let taken = self.nodes[node as usize].up()
                    && part.replicas.iter().any(|r| r.node == node && r.loaded);
                if taken {
                    self.ack(p, |r| r.node == node);
                }
                // Otherwise clients still route to the deposed leader, which is gone: the
                // write fails until their routing refreshes.
                return taken;
            } else {
                let part = &mut self.parts[p as usize];
                part.stale_leader = None;
                if part.fenced == Some(node) {
                    part.fenced = None;
                }
            }
        }
        if !self.writable(p) {
            return false;
        }
        if self.profile.synchronous {
            // PacificA: every member prepared it before the ack. Replicating once after the
            // ack gives every connected follower the same log as replicating before it too
            // (a follow copies all the leader acked, and truncates what diverged, either way).
            self.ack(p, |r| r.role == Rep::Primary);
            self.replicate(p);
        } else {
            self.replicate(p);
            self.ack(p, |r| r.role == Rep::Primary);
        }
        self.count_unflushed(p);
        true
    }

    /// One more write each member of `p` holds in memory only.
    fn count_unflushed(&mut self, p: u32) {
        for i in 0..self.parts[p as usize].replicas.len() {
            let r = &self.parts[p as usize].replicas[i];
            if matches!(r.role, Rep::Primary | Rep::Secondary) && r.loaded {
                let n = &mut self.nodes[r.node as usize];
                if n.up() {
                    n.unflushed += 1;
                }
            }
        }
    }

    /// Acknowledges the next write of partition `p`, taken by the first replica `takes`
    /// picks: the ledger records it as acknowledged and in that replica's log.
    fn ack(&mut self, p: u32, takes: impl Fn(&Replica) -> bool) {
        let now = self.now;
        let part = &mut self.parts[p as usize];
        let seq = part.next_seq;
        part.next_seq += 1;
        if let Some(r) = part.replicas.iter_mut().find(|r| takes(r)) {
            r.log.push(seq, now);
        }
        self.mon.writes_acked += 1;
    }
}
