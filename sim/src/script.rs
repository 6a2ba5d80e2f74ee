//! The upstream tools as a strategy (`--strategy script`), so that rollout races its real
//! peers on the same seed: their steps, time boxes, polling intervals and soft timeouts, as
//! docs/procedures.md ("The upstream script as it behaves", "The upstream tools as they
//! behave") describes them. Their text parsing is not modelled, only what they do to the
//! cluster.
//!
//! Where a tool waits with no timeout, the script here gives up after [`FOREVER`] and the run
//! ends `aborted` saying so: a wait the real tool would never leave.

use std::time::Duration;

use rollout_core::{Change, Cluster, Node, NodeId, RoleKind, Spec};
use tokio::time::sleep;

use crate::cluster::SimCluster;
use crate::config::Flavor;
use std::sync::Arc;

use crate::world::waits::CondFn;
use crate::world::{Op, OpenMldb, Rep, World};

/// How long a wait with no timeout in the upstream tool runs here before the run is reported
/// as stuck: two virtual hours.
pub(crate) const FOREVER: Duration = Duration::from_secs(2 * 3600);

/// Runs the upstream procedure for the cluster's flavor. `Err` names where the tool failed or
/// would wait forever.
pub(crate) async fn run(sim: &SimCluster, spec: &Spec) -> Result<(), String> {
    let change = &spec.change;
    match sim.flavor() {
        Flavor::Pegasus => pegasus(sim, change).await,
        Flavor::OpenMldb => {
            let allow = !spec.policy.get_accept_unavailable().is_empty();
            openmldb(sim, change, allow).await
        }
    }
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// Nodes of a kind, in the order a deployment lists them (minos task order).
fn nodes_where(sim: &SimCluster, keep: impl Fn(RoleKind, &str) -> bool) -> Vec<(u32, NodeId)> {
    let w = sim.lock();
    w.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| keep(n.kind, n.role))
        .map(|(i, n)| (i as u32, n.id.clone()))
        .collect()
}

/// A shell or CLI command: retried up to three times a second apart (the ops tool's habit),
/// then the tool exits with the error.
async fn command<T>(
    what: &str,
    mut f: impl AsyncFnMut() -> Result<T, crate::SimError>,
) -> Result<T, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
        sleep(one_second()).await;
    }
    Err(format!("{what} failed: {last}"))
}

/// Polls `done` every `every` until it holds or `limit` passes; whether it held.
async fn poll(
    sim: &SimCluster,
    every: Duration,
    limit: Duration,
    done: impl Fn(&World) -> bool + Send + Sync + 'static,
) -> bool {
    let done: CondFn = Arc::new(done);
    // The world records when the condition first held; the lower bound counts the rest of
    // the poll interval as idle.
    let watch = Watch::new(sim, done.clone());
    let end = tokio::time::Instant::now() + limit;
    loop {
        {
            let mut w = sim.lock();
            if done(&w) {
                watch.seen(&mut w);
                return true;
            }
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        sleep(every).await;
    }
}

/// A driver's condition registered with the world for as long as it is polled.
struct Watch<'a> {
    sim: &'a SimCluster,
    id: u64,
}

impl<'a> Watch<'a> {
    fn new(sim: &'a SimCluster, cond: CondFn) -> Self {
        let id = sim.lock().waits.register_fn(cond);
        Self { sim, id }
    }

    /// The tool saw its condition hold: its idle time since the condition began to ends here.
    fn seen(&self, w: &mut World) {
        let now = w.now;
        w.waits.finish(self.id, now);
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.sim.lock().waits.cancel(self.id);
    }
}

/// minos (Pegasus) or `start.sh restart` (OpenMLDB): stop, wait `gap`, apply the change, start.
async fn restart(
    sim: &SimCluster,
    id: &NodeId,
    change: &Change,
    gap: Duration,
) -> Result<(), String> {
    let node = sim.node(id).ok_or_else(|| format!("unknown node {id}"))?;
    command(&format!("stop {id}"), async || node.stop().await).await?;
    let gone = id.clone();
    let stopped = poll(sim, one_second(), Duration::from_secs(60), move |w| {
        !w.nodes.iter().any(|n| n.id == gone && n.running)
    })
    .await;
    if !stopped {
        return Err(format!("{id} did not stop within 60 s"));
    }
    sleep(gap).await;
    command(&format!("apply the change on {id}"), async || {
        node.apply(change).await
    })
    .await?;
    command(&format!("start {id}"), async || node.start().await).await
}

/// `admin_tools/pegasus_rolling_update.sh <cluster> <metas> all`.
async fn pegasus(sim: &SimCluster, change: &Change) -> Result<(), String> {
    // Knobs go to the meta leader only, and live in its memory.
    command("set_meta_level steady", async || {
        sim.write_knob("meta_level", "steady").await
    })
    .await?;
    command("meta.lb.assign_delay_ms 180000000", async || {
        sim.write_knob("meta.lb.assign_delay_ms", "180000000").await
    })
    .await?;
    for (i, id) in nodes_where(sim, |k, _| k == RoleKind::Data) {
        command(
            "meta.lb.add_secondary_max_count_for_one_node 0",
            async || {
                sim.write_knob("meta.lb.add_secondary_max_count_for_one_node", "0")
                    .await
            },
        )
        .await?;
        // migrate_node every 10th second, `nodes -d` primary count every second, 29 polls;
        // a timeout is only logged.
        let led_nothing = Watch::new(
            sim,
            Arc::new(move |w: &World| w.nodes[i as usize].counts.primaries == 0),
        );
        for s in 0..29 {
            if s % 10 == 0 {
                let mut w = sim.call("migrate_node").await.map_err(|e| e.to_string())?;
                w.nodes[i as usize].draining = true;
                w.nodes[i as usize].held = true;
                w.nodes[i as usize].move_only = true;
            }
            sleep(one_second()).await;
            let mut w = sim.lock();
            if w.nodes[i as usize].counts.primaries == 0 {
                led_nothing.seen(&mut w);
                break;
            }
        }
        drop(led_nothing);
        // downgrade_node at second 0 and 50, replica count polled up to 89 times.
        let serves_nothing = Watch::new(
            sim,
            Arc::new(move |w: &World| w.nodes[i as usize].counts.members == 0),
        );
        for s in 0..89 {
            if s == 0 || s == 50 {
                let mut w = sim
                    .call("downgrade_node")
                    .await
                    .map_err(|e| e.to_string())?;
                w.nodes[i as usize].move_only = false;
            }
            sleep(one_second()).await;
            let mut w = sim.lock();
            if w.nodes[i as usize].counts.members == 0 {
                serves_nothing.seen(&mut w);
                break;
            }
        }
        drop(serves_nothing);
        // replica.kill_partition for each downgraded gpid, then poll the replica counters.
        command("replica.kill_partition", async || sim.quiesce(&id).await).await?;
        poll(sim, one_second(), Duration::from_secs(90), move |w| {
            w.nodes[i as usize].flush_done.is_some_and(|t| t <= w.now)
        })
        .await;
        restart(sim, &id, change, Duration::ZERO).await?;
        {
            let mut w = sim.lock();
            w.nodes[i as usize].draining = false;
            w.nodes[i as usize].move_only = false;
        }
        // `nodes -d` until ALIVE: no timeout upstream.
        let alive = poll(sim, one_second(), FOREVER, move |w| {
            let n = &w.nodes[i as usize];
            n.up() && n.attached
        })
        .await;
        if !alive {
            return Err(format!(
                "{id} never showed ALIVE; the script would wait forever"
            ));
        }
        command(
            "meta.lb.add_secondary_max_count_for_one_node 100",
            async || {
                sim.write_knob("meta.lb.add_secondary_max_count_for_one_node", "100")
                    .await
            },
        )
        .await?;
        // `ls -d` until every app is fully healthy: no timeout upstream.
        let healthy = poll(sim, one_second(), FOREVER, |w| w.unhealthy.is_empty()).await;
        if !healthy {
            return Err(format!(
                "the cluster never became fully healthy after {id}; the script would wait forever"
            ));
        }
    }
    for knob in [
        "meta.lb.add_secondary_max_count_for_one_node",
        "meta.lb.assign_delay_ms",
    ] {
        let default = sim
            .lock()
            .knob_defaults
            .get(knob)
            .cloned()
            .unwrap_or_default();
        command(&format!("{knob} DEFAULT"), async || {
            sim.write_knob(knob, &default).await
        })
        .await?;
    }
    // minos rolling_update --job meta, 20 s between tasks, nothing checked; then the
    // collector.
    for (_, id) in nodes_where(sim, |k, _| k == RoleKind::Coordinator) {
        restart(sim, &id, change, Duration::ZERO).await?;
        sleep(Duration::from_secs(20)).await;
    }
    for (_, id) in nodes_where(sim, |k, _| k == RoleKind::Stateless) {
        restart(sim, &id, change, Duration::ZERO).await?;
    }
    Ok(())
}

/// Toggles auto_failover off for one ops-tool command and back to what it was after.
async fn with_auto_failover_off<T, E: From<String>>(
    sim: &SimCluster,
    body: impl AsyncFnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let was = command("confget auto_failover", async || {
        sim.read_knob("auto_failover").await
    })
    .await?;
    if was == "true" {
        command("confset auto_failover false", async || {
            sim.write_knob("auto_failover", "false").await
        })
        .await?;
    }
    let out = body().await;
    if was == "true" {
        command("confset auto_failover true", async || {
            sim.write_knob("auto_failover", "true").await
        })
        .await?;
    }
    out
}

impl From<String> for PostUpgrade {
    fn from(s: String) -> Self {
        Self::Failed(s)
    }
}

/// Queues an op and waits for it (`showopstatus` every 2 s, no timeout upstream).
async fn op(sim: &SimCluster, op: Op) -> Result<(), String> {
    let what = format!("{op:?}");
    {
        let mut w = sim.call("op").await.map_err(|e| e.to_string())?;
        OpenMldb::with(&mut w, |m, w| m.enqueue(w, op));
    }
    sleep(one_second()).await;
    let done = poll(sim, Duration::from_secs(2), FOREVER, |w| !ops_pending(w)).await;
    if done {
        Ok(())
    } else {
        Err(format!(
            "{what} never finished; openmldb_ops.py would wait forever"
        ))
    }
}

/// The seed's configuration update with `openmldb_ops.py` and `start.sh`.
async fn openmldb(
    sim: &SimCluster,
    change: &Change,
    allow_single_replica: bool,
) -> Result<(), String> {
    let restart_gap = Duration::from_secs(15);
    for (_, id) in nodes_where(sim, |k, r| k == RoleKind::Coordinator && r != "taskmanager") {
        restart(sim, &id, change, restart_gap).await?;
    }
    for (e, id) in nodes_where(sim, |k, _| k == RoleKind::Data) {
        // pre-upgrade: for every partition E leads, changeleader auto then recovertable E.
        let led: Vec<u32> = {
            let w = sim.lock();
            w.nodes[e as usize]
                .parts
                .iter()
                .copied()
                .filter(|&p| w.primary(p).is_some_and(|r| r.node == e))
                .collect()
        };
        // A single-replica partition first gets a replica on the tablet with the fewest
        // (addreplica, wait), and its leadership goes there; with --allow_single_replica
        // (any accepted table here: the tool's flag is all or nothing) it is skipped.
        let mut temps: Vec<(u32, u32)> = Vec::new();
        with_auto_failover_off(sim, async || {
            for &p in &led {
                let single = sim.lock().parts[p as usize].replicas.len() == 1;
                let to = match (single, allow_single_replica) {
                    (true, true) => continue,
                    (true, false) => {
                        let Some(desc) = fewest_replicas(&sim.lock(), e) else {
                            continue;
                        };
                        op(
                            sim,
                            Op::AddReplica {
                                part: p,
                                node: desc,
                            },
                        )
                        .await?;
                        temps.push((p, desc));
                        Some(desc)
                    }
                    (false, _) => None,
                };
                op(
                    sim,
                    Op::ChangeLeader {
                        part: p,
                        from: e,
                        to,
                    },
                )
                .await?;
                op(sim, Op::RecoverTable { part: p, node: e }).await?;
            }
            Ok::<(), String>(())
        })
        .await?;
        restart(sim, &id, change, restart_gap).await?;
        // recoverdata only when auto_failover is off (it is back on here: the tool restores
        // it after each command, so the nameserver recovers the tablet by itself).
        if sim.lock().knob("auto_failover") == "false" {
            with_auto_failover_off(sim, async || {
                let mut w = sim.call("recoverdata").await.map_err(|e| e.to_string())?;
                OpenMldb::with(&mut w, |m, w| m.recover_data(w, e));
                Ok::<(), String>(())
            })
            .await?;
        }
        // post-upgrade: wait for no op, then leaders back with an explicit candidate and the
        // displaced leader recovered. It fails while the restarted tablet has not reloaded a
        // partition; the operator runs it again (the statfile is only removed on success).
        let deadline = tokio::time::Instant::now() + FOREVER;
        loop {
            match post_upgrade(sim, e, &id, &led, &temps).await {
                Ok(()) => break,
                Err(PostUpgrade::NotLoaded(why)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%why, "post-upgrade failed; the operator runs it again");
                    sleep(Duration::from_secs(10)).await;
                }
                Err(PostUpgrade::NotLoaded(why) | PostUpgrade::Failed(why)) => return Err(why),
            }
        }
        // The operator confirms (showopstatus, showtablestatus) before the next tablet.
        let healthy = poll(sim, Duration::from_secs(2), FOREVER, |w| {
            w.unhealthy.is_empty()
                && !ops_pending(w)
                && w.parts
                    .iter()
                    .all(|p| p.replicas.iter().all(|r| r.role != Rep::Inactive))
        })
        .await;
        if !healthy {
            return Err(format!("tables never showed healthy after {id}"));
        }
    }
    for (_, id) in nodes_where(sim, |k, r| k == RoleKind::Stateless || r == "taskmanager") {
        restart(sim, &id, change, restart_gap).await?;
    }
    Ok(())
}

/// Why a post-upgrade run failed.
enum PostUpgrade {
    /// The restarted tablet has not loaded a partition yet: worth running again.
    NotLoaded(String),
    /// Anything else.
    Failed(String),
}

/// One run of `openmldb_ops.py --cmd=post-upgrade --endpoints=E`.
async fn post_upgrade(
    sim: &SimCluster,
    e: u32,
    id: &NodeId,
    led: &[u32],
    temps: &[(u32, u32)],
) -> Result<(), PostUpgrade> {
    with_auto_failover_off(sim, async || {
        if !poll(sim, Duration::from_secs(2), FOREVER, |w| !ops_pending(w)).await {
            return Err(PostUpgrade::Failed(
                "ops never finished before post-upgrade".into(),
            ));
        }
        for &p in led {
            let (loaded, leader) = {
                let w = sim.lock();
                let loaded = w.parts[p as usize]
                    .replicas
                    .iter()
                    .any(|r| r.node == e && r.loaded);
                (loaded, w.primary(p).map(|r| r.node))
            };
            if !loaded {
                return Err(PostUpgrade::NotLoaded(format!(
                    "post-upgrade on {id}: get empty table status for partition {p}"
                )));
            }
            match leader {
                Some(l) if l != e => {
                    op(
                        sim,
                        Op::ChangeLeader {
                            part: p,
                            from: l,
                            to: Some(e),
                        },
                    )
                    .await
                    .map_err(PostUpgrade::Failed)?;
                    op(sim, Op::RecoverTable { part: p, node: l })
                        .await
                        .map_err(PostUpgrade::Failed)?;
                    if let Some(&(_, temp)) = temps.iter().find(|(q, _)| *q == p) {
                        op(
                            sim,
                            Op::DelReplica {
                                part: p,
                                node: temp,
                            },
                        )
                        .await
                        .map_err(PostUpgrade::Failed)?;
                    }
                }
                Some(_) => {}
                None => {
                    return Err(PostUpgrade::Failed(format!(
                        "post-upgrade on {id}: partition {p} has no leader"
                    )));
                }
            }
        }
        Ok(())
    })
    .await
}

/// The tablet other than `e` with the fewest replicas (the tool's `desc`), among those
/// that host some replica.
fn fewest_replicas(w: &World, e: u32) -> Option<u32> {
    (0..w.nodes.len() as u32)
        .filter(|&n| n != e && w.nodes[n as usize].kind == RoleKind::Data)
        .filter(|&n| !w.nodes[n as usize].parts.is_empty())
        .min_by_key(|&n| (w.nodes[n as usize].parts.len(), n))
}

/// Whether the nameserver has any op queued or running.
fn ops_pending(w: &World) -> bool {
    w.model().pending(w, None).is_some()
}
