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
                    let op = w
                        .model()
                        .pending(w, Some(i))
                        .unwrap_or_else(|| "no op is queued or running for it".to_string());
                    format!(
                        "node {} has {} replicas not serving yet, such as {}; {op}",
                        name(),
                        n.counts.not_back,
                        first_not_back(w, i)
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
    if let Some(why) = grace(w, describe) {
        return why;
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

/// Waiting while the leader's election grace runs ([`crate::Timings::election_grace`]):
/// what it lists ALIVE then proves no beacon, so the backend's probes cannot pass.
fn grace(w: &World, describe: bool) -> Option<Health> {
    let until = w.grace_until.filter(|&u| w.now < u)?;
    Some(Health::Waiting(if describe {
        format!(
            "the coordinator leader holds every data node alive until its election grace has \
             run ({:.0} s left)",
            (until - w.now) as f64 / 1e6
        )
    } else {
        String::new()
    }))
}

/// The first replica of node `i` that does not serve yet, described: its partition, role and
/// whether its data is loaded.
fn first_not_back(w: &World, i: u32) -> String {
    let n = &w.nodes[i as usize];
    let len = n.parts.len();
    let from = n.not_back_hint.get().min(len);
    (from..len)
        .chain(0..from)
        .find_map(|k| {
            let p = n.parts[k];
            let r = w.parts[p as usize].replicas.iter().find(|r| r.node == i)?;
            let back = r.loaded && matches!(r.role, super::Rep::Primary | super::Rep::Secondary);
            (!back).then(|| {
                n.not_back_hint.set(k);
                format!(
                    "partition {p} ({:?}, {})",
                    r.role,
                    if r.loaded { "loaded" } else { "not loaded" }
                )
            })
        })
        .unwrap_or_else(|| "one not found".to_string())
}

/// The first replica on a live data node outside `exempt` that the topology would show as a
/// primary or secondary not serving (dropped, or a member with nothing loaded), named as
/// [`rollout_core::plan::outside_failure`] names it; a node that is down is the node watch's.
pub(crate) fn unserving_outside(
    w: &World,
    exempt: &[rollout_core::NodeId],
) -> Option<(rollout_core::NodeId, String)> {
    for (i, n) in w.nodes.iter().enumerate() {
        let unserving = n.counts.not_back.saturating_sub(n.counts.learners);
        if n.kind != RoleKind::Data || !n.up() || unserving == 0 || exempt.contains(&n.id) {
            continue;
        }
        let len = n.parts.len();
        let from = n.not_back_hint.get().min(len);
        let found = (from..len).chain(0..from).find_map(|k| {
            let p = n.parts[k];
            let r = w.parts[p as usize]
                .replicas
                .iter()
                .find(|r| r.node == i as u32)?;
            let serves = r.loaded && matches!(r.role, super::Rep::Primary | super::Rep::Secondary);
            (!serves && r.role != super::Rep::Learner).then(|| {
                n.not_back_hint.set(k);
                p
            })
        })?;
        let id = &w.labels.0[found as usize];
        return Some((
            n.id.clone(),
            format!(
                "partition {id}'s replica on {} outside the wave does not serve",
                n.id
            ),
        ));
    }
    None
}
