//! The counterfactual lower bound: how long the engine stayed idle after what it waited for
//! already held.
//!
//! Every probe the engine creates registers its condition here. The world evaluates each
//! registered condition whenever its state changes, independent of the engine's polling and
//! of the wake hints, and records the instant it began to hold (and forgets it when it stops
//! holding); when the engine's probe first sees it hold, the interval from that instant to
//! then is idle time. A condition made of several probes (`and`) is registered by each
//! simulator probe in it, so the idle time counts from when one part held: the bound errs
//! low, never high. A transient
//! control-plane error opens an idle interval that the engine's next call closes (its retry
//! backoff), and the caller may add others (a resumed orchestrator's restart delay). The
//! idle time is the union of the intervals, so parallel waits are not counted twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::conditions::{Kind, eval};
use super::{Us, World};

/// A condition a driver waits for that is not one of the engine's probes (the upstream
/// tools' polls).
pub(crate) type CondFn = Arc<dyn Fn(&World) -> bool + Send + Sync>;

/// A registered condition.
#[derive(Clone)]
enum Cond {
    Probe(Kind, Option<u32>),
    Fn(CondFn),
}

impl std::fmt::Debug for Cond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Probe(kind, node) => write!(f, "{kind:?} {node:?}"),
            Self::Fn(_) => f.write_str("a driver's condition"),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Waits {
    next_id: u64,
    /// Registered conditions that have not held yet.
    pending: BTreeMap<u64, Cond>,
    /// Registered conditions that hold, with the instant they began to.
    held: BTreeMap<u64, (Us, Cond)>,
    /// Closed idle intervals.
    idle: Vec<(Us, Us)>,
    /// An idle interval opened by a transient error, closed by the engine's next call.
    open: Option<Us>,
    pub(super) dirty: bool,
}

impl Waits {
    /// Registers a condition the engine starts waiting for at `now`.
    pub(crate) fn register(&mut self, kind: Kind, node: Option<u32>) -> u64 {
        self.insert(Cond::Probe(kind, node))
    }

    /// Registers a driver's own condition.
    pub(crate) fn register_fn(&mut self, cond: CondFn) -> u64 {
        self.insert(Cond::Fn(cond))
    }

    fn insert(&mut self, cond: Cond) -> u64 {
        self.next_id += 1;
        self.pending.insert(self.next_id, cond);
        self.dirty = true;
        self.next_id
    }

    /// The engine saw the condition hold at `now`: the wait is over.
    pub(crate) fn finish(&mut self, id: u64, now: Us) {
        self.pending.remove(&id);
        if let Some((t, _)) = self.held.remove(&id)
            && now > t
        {
            self.idle.push((t, now));
        }
    }

    /// The engine dropped the probe without seeing its condition hold.
    pub(crate) fn cancel(&mut self, id: u64) {
        self.pending.remove(&id);
        self.held.remove(&id);
    }

    /// A control call at `now`: it ends an idle interval a transient error opened.
    pub(crate) fn call(&mut self, now: Us) {
        if let Some(t) = self.open.take()
            && now > t
        {
            self.idle.push((t, now));
        }
    }

    /// A control call failed transiently at `now`.
    pub(crate) fn transient(&mut self, now: Us) {
        self.open.get_or_insert(now);
    }

    /// Adds an idle interval.
    pub(crate) fn idle(&mut self, from: Us, to: Us) {
        if to > from {
            self.idle.push((from, to));
        }
    }

    /// The union of the idle intervals, in microseconds.
    pub(crate) fn idle_us(&self) -> Us {
        let mut v = self.idle.clone();
        v.sort_unstable();
        let (mut total, mut end) = (0, 0);
        for (a, b) in v {
            let a = a.max(end);
            if b > a {
                total += b - a;
                end = b;
            }
        }
        total
    }
}

fn holds(w: &World, cond: &Cond) -> bool {
    match cond {
        Cond::Probe(kind, node) => eval(w, *kind, *node, false).is_healthy(),
        Cond::Fn(f) => f(w),
    }
}

/// Records the instant each registered condition begins to hold, and forgets the ones that
/// stopped holding before the engine saw them (the state changed just now).
pub(super) fn evaluate(w: &mut World) {
    let now = w.now;
    let began: Vec<u64> = w
        .waits
        .pending
        .iter()
        .filter(|(_, cond)| holds(w, cond))
        .map(|(&id, _)| id)
        .collect();
    let stopped: Vec<u64> = w
        .waits
        .held
        .iter()
        .filter(|(_, (_, cond))| !holds(w, cond))
        .map(|(&id, _)| id)
        .collect();
    for id in began {
        if let Some(cond) = w.waits.pending.remove(&id) {
            w.waits.held.insert(id, (now, cond));
        }
    }
    for id in stopped {
        if let Some((_, cond)) = w.waits.held.remove(&id) {
            w.waits.pending.insert(id, cond);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_intervals_count_once() {
        let mut w = Waits::default();
        w.idle(0, 10);
        w.idle(5, 15);
        w.idle(20, 25);
        assert_eq!(w.idle_us(), 20);
    }

    #[test]
    fn a_transient_error_is_idle_until_the_next_call() {
        let mut w = Waits::default();
        w.transient(100);
        w.transient(150);
        w.call(400);
        w.call(500);
        assert_eq!(w.idle_us(), 300);
    }
}
