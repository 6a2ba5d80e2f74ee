//! The cluster's ZooKeeper nodes, as OpenMLDB's processes write them (docs/upstream/openmldb.md
//! §7; `src/zk/zk_client.cc` `ZkClient::Register`, `RegisterName`, `src/zk/dist_lock.cc`,
//! `NameServerImpl::Init`, the taskmanager's `FailoverWatcher`).

use std::time::Duration;

use rollout_core::NodeId;
use rollout_sim::SimCluster;
use zookeeper_client as zk;

use crate::{Directory, EmulatorError};

/// A session, with the cluster's digest identity when it has one.
pub(crate) async fn client(dir: &Directory) -> Result<zk::Client, EmulatorError> {
    let mut connector = zk::Client::connector().with_session_timeout(Duration::from_secs(4));
    if let Some(cert) = &dir.options.zk_cert {
        connector = connector.with_auth("digest", cert.as_bytes());
    }
    connector
        .connect(&dir.ensemble)
        .await
        .map_err(|e| EmulatorError::ZooKeeper(dir.ensemble.clone(), e.to_string()))
}

/// Creates `path` (and its parents) with `data` unless it exists.
pub(crate) async fn ensure(
    c: &zk::Client,
    dir: &Directory,
    path: &str,
    data: &str,
) -> Result<(), EmulatorError> {
    let opts = zk::CreateMode::Persistent.with_acls(dir.acls());
    let mut at = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        at.push('/');
        at.push_str(p);
        let d = if i + 1 == parts.len() {
            data.as_bytes()
        } else {
            b""
        };
        match c.create(&at, d, &opts).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(EmulatorError::ZooKeeper(at, e.to_string())),
        }
    }
    Ok(())
}

/// The nodes a nameserver leader makes at its start: the parents the processes register
/// under, `config/auto_failover` (the world's value), `table/notify` (a counter),
/// `table/db_table_data` (the tables, written by [`crate::catalog::publish`]) and the
/// database's `db/<db>`.
pub(crate) async fn prepare(sim: &SimCluster, dir: &Directory) -> Result<(), EmulatorError> {
    let c = client(dir).await?;
    let auto = sim
        .view()
        .knobs
        .get("auto_failover")
        .cloned()
        .unwrap_or_default();
    let root = &dir.root;
    for d in ["/leader", "/nodes", "/taskmanager", "/map/names"] {
        ensure(&c, dir, &format!("{root}{d}"), "").await?;
    }
    ensure(&c, dir, &format!("{root}/table/notify"), "1").await?;
    ensure(&c, dir, &format!("{root}/table/db_table_data"), "").await?;
    ensure(&c, dir, &format!("{root}/db/{}", crate::nameserver::DB), "").await?;
    ensure(&c, dir, &format!("{root}/config/auto_failover"), &auto).await?;
    Ok(())
}

/// Writes the world's `auto_failover` to `<root>/config/auto_failover`, as `ConfSet` does.
pub(crate) async fn set_auto_failover(dir: &Directory, value: &str) -> Result<(), String> {
    let c = client(dir).await.map_err(|e| e.to_string())?;
    c.set_data(
        &format!("{}/config/auto_failover", dir.root),
        value.as_bytes(),
        None,
    )
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// One process's registration while it serves.
#[derive(Debug, Default)]
pub(crate) struct Registered {
    node: Option<(zk::Client, String)>,
}

impl Registered {
    /// Registers `id` while it serves and removes the registration once it does not; a
    /// session that expired took its nodes with it, so it registers again on a new one, as
    /// OpenMLDB's processes do.
    /// A nameserver that the world does not hold leader waits to register until the
    /// world's leader, when it serves, has, so that the leader's
    /// `lock_request` node has the lowest sequence number, which is what makes a nameserver
    /// leader (`DistLock`) and what the SDK reads as the leader (the first child of
    /// `<root>/leader` in sorted order, `ClusterSDK::GetNsAddress`).
    pub(crate) async fn follow(
        &mut self,
        dir: &Directory,
        id: &NodeId,
        role: &str,
        serving: bool,
        sim: &SimCluster,
    ) {
        let wants = serving && matches!(role, "nameserver" | "tablet" | "taskmanager");
        if self.node.as_ref().is_some_and(|(c, _)| {
            matches!(
                c.state(),
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
            )
        }) {
            self.node = None;
        }
        match (wants, self.node.is_some()) {
            (true, false) => {
                let leader = (role == "nameserver")
                    .then(|| sim.view().leader)
                    .flatten()
                    .filter(|l| l != id && sim.node_view(l).is_some_and(|n| n.serving));
                if let Some(leader) = leader
                    && !leader_registered(dir, &leader).await
                {
                    return;
                }
                self.node = register(dir, id, role).await;
            }
            (false, true) => {
                if let Some((c, path)) = self.node.take() {
                    let _ = c.delete(&path, None).await;
                }
            }
            _ => {}
        }
    }
}

/// Whether `leader` has a `lock_request` node under `<root>/leader`.
async fn leader_registered(dir: &Directory, leader: &NodeId) -> bool {
    let Ok(c) = client(dir).await else {
        return false;
    };
    let root = format!("{}/leader", dir.root);
    let endpoint = dir.endpoint(leader);
    let Ok(children) = c.list_children(&root).await else {
        return false;
    };
    for child in children {
        if let Ok((data, _)) = c.get_data(&format!("{root}/{child}")).await
            && data == endpoint.as_bytes()
        {
            return true;
        }
    }
    false
}

async fn register(dir: &Directory, id: &NodeId, role: &str) -> Option<(zk::Client, String)> {
    let c = client(dir).await.ok()?;
    let endpoint = dir.endpoint(id);
    let real = dir.real(id);
    let root = &dir.root;
    if endpoint != real {
        // `--use_name`: the name's address, a persistent node.
        let path = format!("{root}/map/names/{endpoint}");
        ensure(&c, dir, &path, &real).await.ok()?;
        c.set_data(&path, real.as_bytes(), None).await.ok()?;
    }
    let port = real.rsplit(':').next().unwrap_or_default();
    let (path, data, mode) = match role {
        "nameserver" => (
            format!("{root}/leader/lock_request"),
            endpoint.clone(),
            zk::CreateMode::EphemeralSequential,
        ),
        "tablet" => (
            format!("{root}/nodes/{endpoint}"),
            format!("startup_{endpoint}"),
            zk::CreateMode::Ephemeral,
        ),
        // `server.host` defaults to 0.0.0.0 in the taskmanager's properties.
        _ => (
            format!("{root}/taskmanager/leader"),
            format!("0.0.0.0:{port}"),
            zk::CreateMode::Ephemeral,
        ),
    };
    let opts = mode.with_acls(dir.acls());
    let (_, seq) = c.create(&path, data.as_bytes(), &opts).await.ok()?;
    let made = if mode == zk::CreateMode::EphemeralSequential {
        format!("{path}{seq}")
    } else {
        path
    };
    Some((c, made))
}
