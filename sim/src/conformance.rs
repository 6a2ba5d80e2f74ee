//! A contract suite any [`Cluster`] implementation can run: the simulator always, real
//! backends against their emulators.

use std::time::Duration;

use rollout_core::{Cluster, Health, HealthProbe, Node, RoleKind, wait_until};

/// Checks the contract of `cluster` on a quiet, healthy cluster, and restores what it changes.
///
/// What it checks: the topology lists nodes and every node has a handle; every knob the
/// high-availability procedure needs can be read and written back unchanged; the cluster is
/// fully healthy; every node reports a running status with a boot id; a data node can be
/// drained (its probe then holds), and rejoined, after which the cluster is fully healthy again.
///
/// # Errors
/// A message naming the first broken rule.
pub async fn check_cluster<C: Cluster>(cluster: &C) -> Result<(), String> {
    async fn wait<C: Cluster, P: HealthProbe<Error = C::Error>>(
        cluster: &C,
        probe: P,
        what: &str,
    ) -> Result<(), String> {
        let deadline = Duration::from_secs(600);
        let poll = (Duration::from_millis(100), Duration::from_secs(1));
        wait_until(&probe, deadline, poll, |e| cluster.classify(e), |_| {})
            .await
            .map_err(|e| match e {
                rollout_core::WaitError::Timeout(r) => format!("{what}: timed out: {r}"),
                rollout_core::WaitError::Failed(r) => format!("{what}: failed: {r}"),
                rollout_core::WaitError::Probe(e) => format!("{what}: {e}"),
            })
    }
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
    for k in cluster.knobs(rollout_core::Procedure::HighAvailability) {
        let v = cluster
            .read_knob(&k.name)
            .await
            .map_err(|e| format!("read knob {}: {e}", k.name))?;
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
    wait(
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
        wait(cluster, cluster.drained(id), "drained").await?;
        cluster
            .rejoin(id)
            .await
            .map_err(|e| format!("rejoin {id}: {e}"))?;
        wait(cluster, cluster.rejoined(id), "rejoined").await?;
        wait(
            cluster,
            cluster.fully_healthy(),
            "fully healthy after rejoin",
        )
        .await?;
    }
    Ok(())
}
