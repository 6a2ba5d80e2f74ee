//! `pegasus --emulate --serve`: the emulated Pegasus cluster keeps running, each of its
//! processes (metas, replica servers, the collector) a real OS process behind a node agent of
//! its own emulated host (see `serve.rs`). With `--zk`, its meta servers report that
//! ZooKeeper and a root of their own in `cluster_info`, as a real cluster does, so that the
//! rollout keeps its state there.

use std::path::Path;

use anyhow::Context;
use rollout_emulator_pegasus::{Emulator, ServerVersion};
use rollout_process::shell_quote_path;
use rollout_sim::{ClientLoad, Flavor, SimBuilder};
use zookeeper_client as zk;

use crate::serve;

/// The roles an emulated Pegasus cluster has, in the order they are laid out.
const ROLES: [&str; 3] = ["meta", "replica", "collector"];

/// Serves the emulated cluster until SIGINT or SIGTERM.
pub(crate) async fn serve(
    zookeeper: Option<&str>,
    version: ServerVersion,
    seed: u64,
    scale: u32,
    dir: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let mut builder = SimBuilder::new(Flavor::Pegasus);
    builder
        .seed(seed)
        .time_scale(scale)
        .load(ClientLoad::default());
    let emu = Emulator::start(&builder, version).await?;
    let root = format!("/pegasus-emulated-{}", std::process::id());
    if let Some(hosts) = zookeeper {
        make_root(hosts, &root).await?;
        emu.report_zookeeper(hosts, &root);
    }
    let nodes: Vec<(String, String)> = ROLES
        .iter()
        .flat_map(|role| {
            emu.role_addrs(role)
                .into_iter()
                .map(|a| ((*role).to_string(), a.to_string()))
        })
        .collect();
    let hosts = serve::start_hosts(
        "pegasus",
        dir,
        &nodes,
        |l| emu.serve_processes(l),
        |role, _| ("config.ini".to_string(), format!("[{role}]\n")),
    )
    .await?;
    let (cluster_file, truth_file) = (&hosts.cluster_file, &hosts.truth_file);
    let metas = emu
        .metas()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let collectors = emu
        .collectors()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let journal = if zookeeper.is_some() {
        "--journal zk"
    } else {
        "--journal file:rollout.journal"
    };
    let command = format!(
        "cargo run --release --example pegasus -- --meta {metas} --collector {collectors} \
         --cluster {} --scale {scale} --run {journal}",
        shell_quote_path(cluster_file)
    );
    let info = serde_json::json!({
        "meta": metas,
        "collector": collectors,
        "zk": zookeeper,
        "zk_root": zookeeper.map(|_| root.clone()),
        "cluster_file": cluster_file,
        "truth_file": truth_file,
        "scale": scale,
        "command": command,
    });
    serve::announce(
        &info,
        json,
        &format!(
            "emulated Pegasus cluster in serve mode (not Pegasus: rollout's simulator behind the \
             real protocol; each process a real OS process behind a node agent), {scale}x time{}",
            zookeeper.map_or(String::new(), |z| format!(", ZooKeeper {z} root {root}"))
        ),
    );
    serve::until_signal(truth_file, || {
        serde_json::Value::Object(serve::truth(emu.sim(), |id| emu.endpoint_of(id)))
    })
    .await
}

/// Makes the emulated cluster's root in ZooKeeper, as a meta server makes its own.
async fn make_root(hosts: &str, root: &str) -> anyhow::Result<()> {
    let client = zk::Client::connect(hosts)
        .await
        .with_context(|| format!("ZooKeeper {hosts}"))?;
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    match client.create(root, b"", &opts).await {
        Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("ZooKeeper {hosts}: creating {root}: {e}")),
    }
}
