//! A contract suite any [`Cluster`] implementation can run: the simulator always, real
//! backends against their emulators.

use std::time::Duration;

use rollout_core::{
    Change, Cluster, Health, HealthProbe, Node, NodeId, ReplicaRole, RoleKind, probe::probe_fn,
    wait::wait_until,
};

/// Checks the contract of `cluster` on a quiet, healthy cluster, and restores what it changes.
/// The node sequence runs with the high-availability knobs held as the engine holds them
/// (all set before the drain, the wave's released once the node is ready, every one put
/// back at the end, also when a check fails).
///
/// What it checks: the topology lists nodes and every node has a handle; every knob the
/// high-availability procedure needs can be read and written back unchanged; the cluster is
/// fully healthy; every node reports a running status with a boot id. Then, on one data node,
/// the whole node sequence: drain (twice: idempotent) until `drained` holds, and the topology
/// then shows it leading nothing; `Node::stop` until its status says it no longer runs and
/// `stopped` holds; `Node::apply` of an upgrade twice keeps the first backup; `Node::revert`
/// puts it back (`is_applied` is false after the restart); `Node::start` gives a new boot id;
/// `ready`, then rejoin until `rejoined` holds, and the topology then shows every replica on
/// the node serving; the cluster is fully healthy again.
///
/// # Errors
/// A message naming the first broken rule.
pub async fn check_cluster<C: Cluster>(cluster: &C) -> Result<(), String> {
    let topology = cluster
        .topology()
        .await
        .map_err(|e| format!("topology: {e}"))?;
    if topology.nodes.is_empty() {
        return Err("topology lists no nodes".into());
    }
    for n in &topology.nodes {
        let node = cluster
            .node(&n.id)
            .ok_or_else(|| format!("node {} is in the topology but has no handle", n.id))?;
        let status = node
            .status()
            .await
            .map_err(|e| format!("status of {}: {e}", n.id))?;
        if !status.running || status.boot.is_none() {
            return Err(format!(
                "node {} does not report running with a boot id",
                n.id
            ));
        }
    }
    if cluster.node(&"no-such-node:1".into()).is_some() {
        return Err("node() returns a handle for an unknown node".into());
    }
    let mut originals = Vec::new();
    for k in cluster.knobs(rollout_core::Procedure::HighAvailability) {
        let v = cluster
            .read_knob(&k.name)
            .await
            .map_err(|e| format!("read knob {}: {e}", k.name))?;
        originals.push((k.clone(), v.clone()));
        cluster
            .write_knob(&k.name, &v)
            .await
            .map_err(|e| format!("write knob {}: {e}", k.name))?;
        let again = cluster
            .read_knob(&k.name)
            .await
            .map_err(|e| format!("read knob {}: {e}", k.name))?;
        if again != v {
            return Err(format!(
                "knob {} reads {again:?} after writing {v:?}",
                k.name
            ));
        }
    }
    wait_for(
        cluster,
        cluster.fully_healthy(),
        "fully healthy at the start",
    )
    .await?;
    if let Some(data) = topology
        .nodes
        .iter()
        .find(|n| n.role.kind == RoleKind::Data)
    {
        let id = &data.id;
        // The knobs as the engine holds them around a data wave; put back whatever happens.
        set_knobs(cluster, &originals, |k, _| k.during.clone()).await?;
        let checked = data_node(cluster, id, &originals).await;
        let restored = set_knobs(cluster, &originals, |_, v| v.to_string()).await;
        checked?;
        restored?;
        wait_for(
            cluster,
            cluster.fully_healthy(),
            "fully healthy with the knobs restored",
        )
        .await?;
    }
    Ok(())
}

/// Writes every knob to what `value` gives it (from the knob and its original).
async fn set_knobs<C: Cluster>(
    cluster: &C,
    knobs: &[(rollout_core::Knob, String)],
    value: impl Fn(&rollout_core::Knob, &str) -> String,
) -> Result<(), String> {
    for (k, original) in knobs {
        let v = value(k, original);
        cluster
            .write_knob(&k.name, &v)
            .await
            .map_err(|e| format!("write knob {} = {v}: {e}", k.name))?;
    }
    Ok(())
}

/// Drain, the node sequence, release of the wave's knobs, rejoin: on one data node.
async fn data_node<C: Cluster>(
    cluster: &C,
    id: &NodeId,
    knobs: &[(rollout_core::Knob, String)],
) -> Result<(), String> {
    {
        if cluster
            .safe_to_stop(id)
            .check()
            .await
            .map_err(|e| e.to_string())?
            != Health::Healthy
        {
            return Err(format!("a healthy cluster says {id} is not safe to stop"));
        }
        cluster
            .drain(id)
            .await
            .map_err(|e| format!("drain {id}: {e}"))?;
        cluster
            .drain(id)
            .await
            .map_err(|e| format!("drain {id} again (idempotent): {e}"))?;
        wait_for(cluster, cluster.drained(id), "drained").await?;
        views_agree(cluster, id, "drained").await?;
        let t = cluster
            .topology()
            .await
            .map_err(|e| format!("topology: {e}"))?;
        if let Some(p) = t.partitions.iter().find(|p| {
            p.replicas
                .iter()
                .any(|r| &r.node == id && r.alive && r.role == ReplicaRole::Primary)
        }) {
            return Err(format!(
                "drained holds, yet the topology shows {id} serving as primary of {}",
                p.id
            ));
        }
        node_sequence(cluster, id).await?;
        // The node is up: the wave's knobs go back, as the engine releases them.
        for (k, original) in knobs
            .iter()
            .filter(|(k, _)| k.scope == rollout_core::KnobScope::Wave)
        {
            let v = k.after_wave.clone().unwrap_or_else(|| original.clone());
            cluster
                .write_knob(&k.name, &v)
                .await
                .map_err(|e| format!("write knob {} = {v}: {e}", k.name))?;
        }
        cluster
            .rejoin(id)
            .await
            .map_err(|e| format!("rejoin {id}: {e}"))?;
        wait_for(cluster, cluster.rejoined(id), "rejoined").await?;
        views_agree(cluster, id, "rejoined").await?;
        let t = cluster
            .topology()
            .await
            .map_err(|e| format!("topology: {e}"))?;
        if let Some(p) = t
            .partitions
            .iter()
            .find(|p| p.replicas.iter().any(|r| &r.node == id && !r.alive))
        {
            return Err(format!(
                "rejoined holds, yet {id}'s replica of partition {} does not serve",
                p.id
            ));
        }
        wait_for(
            cluster,
            cluster.fully_healthy(),
            "fully healthy after rejoin",
        )
        .await?;
    }
    Ok(())
}

/// The partial views the engine reads per wave agree with the whole topology read at the
/// same moment (the cluster is quiet): [`Cluster::topology_around`] holds exactly the
/// partitions with a replica on `id`, as `topology` shows them, and `id`'s node;
/// [`Cluster::down_outside`] and [`Cluster::unserving_outside`] answer as their defaults do,
/// with nothing exempt and with `id` exempt.
async fn views_agree<C: Cluster>(cluster: &C, id: &NodeId, stage: &str) -> Result<(), String> {
    let whole = cluster
        .topology()
        .await
        .map_err(|e| format!("topology: {e}"))?;
    let around = cluster
        .topology_around(std::slice::from_ref(id))
        .await
        .map_err(|e| format!("topology around {id}: {e}"))?;
    let mut mine: Vec<_> = whole
        .partitions
        .iter()
        .filter(|p| p.replicas.iter().any(|r| &r.node == id))
        .collect();
    let mut got: Vec<_> = around
        .partitions
        .iter()
        .filter(|p| p.replicas.iter().any(|r| &r.node == id))
        .collect();
    mine.sort_by(|a, b| a.id.cmp(&b.id));
    got.sort_by(|a, b| a.id.cmp(&b.id));
    if mine != got {
        return Err(format!(
            "{stage}: the topology around {id} shows {} of its partitions, the whole topology {} \
             (or they differ)",
            got.len(),
            mine.len()
        ));
    }
    if around.node(id) != whole.node(id) {
        return Err(format!(
            "{stage}: the topology around {id} shows its node as {:?}, the whole topology as {:?}",
            around.node(id),
            whole.node(id)
        ));
    }
    if around.min_serving != whole.min_serving {
        return Err(format!(
            "{stage}: the topology around {id} has another min_serving"
        ));
    }
    for exempt in [&[][..], std::slice::from_ref(id)] {
        let down = cluster
            .down_outside(exempt)
            .await
            .map_err(|e| format!("down_outside: {e}"))?;
        let want = rollout_core::plan::outside_node_failure(&whole.nodes, exempt);
        if down != want {
            return Err(format!(
                "{stage}: down_outside({exempt:?}) answers {down:?}, the nodes say {want:?}"
            ));
        }
        let unserving = cluster
            .unserving_outside(exempt)
            .await
            .map_err(|e| format!("unserving_outside: {e}"))?;
        let want = rollout_core::plan::outside_failure(&whole, exempt)
            .filter(|_| rollout_core::plan::outside_node_failure(&whole.nodes, exempt).is_none());
        if unserving.is_some() != want.is_some() {
            return Err(format!(
                "{stage}: unserving_outside({exempt:?}) answers {unserving:?}, the topology says \
                 {want:?}"
            ));
        }
    }
    Ok(())
}

/// Stop, apply twice, revert, start: the `Node` contract on a drained data node.
async fn node_sequence<C: Cluster>(cluster: &C, id: &NodeId) -> Result<(), String> {
    let node = cluster
        .node(id)
        .ok_or_else(|| format!("node {id} has no handle"))?;
    let before = node
        .status()
        .await
        .map_err(|e| format!("status of {id}: {e}"))?
        .boot;
    node.stop().await.map_err(|e| format!("stop {id}: {e}"))?;
    let stopped = probe_fn(|| async {
        let s = node.status().await?;
        Ok(if s.running {
            Health::waiting("still runs")
        } else {
            Health::Healthy
        })
    });
    wait_for(cluster, stopped.and(cluster.stopped(id)), "stopped").await?;
    views_agree(cluster, id, "stopped").await?;
    let change = Change::Upgrade {
        version: "conformance-check".into(),
    };
    let first = node
        .apply(&change)
        .await
        .map_err(|e| format!("apply on {id}: {e}"))?;
    let second = node
        .apply(&change)
        .await
        .map_err(|e| format!("apply on {id} again: {e}"))?;
    if second.backup != first.backup {
        return Err(format!(
            "apply on {id} twice backed up its own first result: {:?} then {:?}",
            first.backup, second.backup
        ));
    }
    node.revert(&first)
        .await
        .map_err(|e| format!("revert on {id}: {e}"))?;
    node.start().await.map_err(|e| format!("start {id}: {e}"))?;
    let started = probe_fn(|| async {
        let s = node.status().await?;
        Ok(if !s.running {
            Health::waiting("not running")
        } else if s.boot.is_some() && s.boot == before {
            Health::waiting("same boot id as before the stop")
        } else {
            Health::Healthy
        })
    });
    wait_for(cluster, started.and(cluster.ready(id)), "started and ready").await?;
    if node
        .is_applied(&change)
        .await
        .map_err(|e| format!("is_applied on {id}: {e}"))?
    {
        return Err(format!(
            "{id} reports the reverted change as applied after its restart"
        ));
    }
    Ok(())
}

async fn wait_for<C: Cluster, P: HealthProbe<Error = C::Error>>(
    cluster: &C,
    probe: P,
    what: &str,
) -> Result<(), String> {
    let deadline = Duration::from_secs(600);
    let poll = (Duration::from_millis(100), Duration::from_secs(1));
    wait_until(&probe, deadline, poll, |e| cluster.classify(e), |_| {})
        .await
        .map_err(|e| match e {
            rollout_core::wait::WaitError::Timeout(r) => format!("{what}: timed out: {r}"),
            rollout_core::wait::WaitError::Failed(r) => format!("{what}: failed: {r}"),
            rollout_core::wait::WaitError::Probe(e) => format!("{what}: {e}"),
            other => format!("{what}: {other}"),
        })
}
