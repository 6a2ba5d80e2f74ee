//! What the engine waits for, evaluated on the world's state: the one definition the
//! simulator's probes answer with and the idle-time measurement ([`super::waits`]) watches.

use rollout_core::{Health, RoleKind};

use super::World;

/// A condition the engine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Drained,
    Quiesced,
    Stopped,
    Ready,
    Rejoined,
    FullyHealthy,
    SafeToStop,
    /// The temporary replica of this partition on the node has caught up.
    TemporaryReady(u32),
    /// The temporary replica of this partition on the node is gone, the partition led.
    TemporaryRemoved(u32),
}

/// Evaluates `kind` for `node` (`None` for cluster-wide conditions). With `describe` false the
/// reasons are left empty, for callers that only need whether it holds.
pub(crate) fn eval(w: &World, kind: Kind, node: Option<u32>, describe: bool) -> Health {
    let why = |f: &dyn Fn() -> String| Health::Waiting(if describe { f() } else { String::new() });
    let Some(i) = node else {
        return match kind {
            Kind::FullyHealthy => fully_healthy(w, describe),
            _ => Health::failed("the node is not in this cluster"),
        };
    };
    let n = &w.nodes[i as usize];
    let name = || n.id.to_string();
    match kind {
        Kind::FullyHealthy => fully_healthy(w, describe),
        Kind::TemporaryReady(p) => w.model().temporary(w, p, i, false),
        Kind::TemporaryRemoved(p) => w.model().temporary(w, p, i, true),
        Kind::SafeToStop => {
            if w.leader.is_none() {
                Health::waiting("no coordinator leader")
            } else {
                Health::Healthy
            }
        }
        Kind::Drained => {
            if n.kind != RoleKind::Data {
                return Health::Healthy;
            }
            w.model().drained(w, i, describe)
        }
        Kind::Quiesced => match n.flush_done {
            _ if n.kind != RoleKind::Data => Health::Healthy,
            Some(t) if t <= w.now => Health::Healthy,
            Some(_) => why(&|| format!("node {} is still flushing", name())),
            None => why(&|| format!("node {} has not been asked to flush", name())),
        },
        Kind::Stopped => {
            if n.running {
                why(&|| format!("node {} still runs", name()))
            } else if let Some(reason) = w.model().stopped(w, i) {
                Health::Waiting(reason)
            } else {
                Health::Healthy
            }
        }
        Kind::Ready => {
            if !n.running {
                // Whether an exit ends the wait is the node's to say (its status names the
                // incarnation that exited); a supervisor may start it again.
                match &n.exit_reason {
                    Some(reason) => why(&|| format!("node {} is not running: {reason}", name())),
                    None => why(&|| format!("node {} is not running", name())),
                }
            } else if !n.serving {
                why(&|| format!("node {} is not serving yet", name()))
            } else if n.kind != RoleKind::Stateless && !n.attached {
                why(&|| format!("node {} is not attached to the coordinator", name()))
            } else if n.is_elected_coordinator() && w.leader.is_none() {
                Health::waiting("no coordinator leader has been elected")
            } else {
                Health::Healthy
            }
        }
        Kind::Rejoined => {
            if n.kind != RoleKind::Data {
                return Health::Healthy;
            }
            if n.counts.not_back > 0 {
                return why(&|| {
                    format!(
                        "node {} has {} replicas not serving yet",
                        name(),
                        n.counts.not_back
                    )
                });
            }
            match w.model().pending(w, Some(i)) {
                Some(op) => Health::Waiting(op),
                None => Health::Healthy,
            }
        }
    }
}

fn fully_healthy(w: &World, describe: bool) -> Health {
    let why = |f: &dyn Fn() -> String| Health::Waiting(if describe { f() } else { String::new() });
    if w.leader.is_none() {
        return Health::waiting("no coordinator leader");
    }
    if let Some(n) = w
        .nodes
        .iter()
        .find(|n| !n.up() || (n.kind == RoleKind::Data && !n.attached))
    {
        return why(&|| format!("node {} is not alive", n.id));
    }
    if let Some(op) = w.model().pending(w, None) {
        return Health::Waiting(op);
    }
    if let Some(h) = w.model().cluster_health(w) {
        return h;
    }
    if let Some(&p) = w.unhealthy.iter().next() {
        return why(&|| {
            format!(
                "partition {p} has {}/{} replicas serving",
                w.members(p),
                w.parts[p as usize].wanted
            )
        });
    }
    if let Some(n) = w.nodes.iter().find(|n| n.draining) {
        return why(&|| format!("node {} is drained", n.id));
    }
    Health::Healthy
}
