//! `openmldb --emulate --serve`: the emulated OpenMLDB cluster keeps running, registered in
//! ZooKeeper, each of its processes a real OS process behind a node agent of its own
//! emulated host (see `serve.rs`); the rollout's journal goes to the same ZooKeeper root.
//! `truth.json` adds to the shared ground truth each partition's term (every leader change
//! moves it) and the count of nameserver ops: what an orchestrator did beyond restarts and
//! knobs.

use std::collections::BTreeMap;
use std::path::Path;

use rollout_emulator_openmldb::{Emulator, Options, ServerVersion};
use rollout_process::shell_quote_path;
use rollout_sim::{ClientLoad, Flavor, SimBuilder};

use crate::serve;

/// The roles an emulated OpenMLDB cluster has, in the order they are laid out.
const ROLES: [&str; 4] = ["nameserver", "tablet", "apiserver", "taskmanager"];

/// Serves the emulated cluster until SIGINT or SIGTERM.
pub(crate) async fn serve(
    version: ServerVersion,
    zk: &str,
    zk_root: &str,
    seed: u64,
    scale: u32,
    dir: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let mut builder = SimBuilder::new(Flavor::OpenMldb);
    builder
        .seed(seed)
        .data_nodes(3)
        .coordinators(2)
        .time_scale(scale)
        .load(ClientLoad::default());
    let root = format!(
        "{}-emulated-{}",
        zk_root.trim_end_matches('/'),
        std::process::id()
    );
    let emu = Emulator::start(&builder, zk, &root, Options::new(version)).await?;
    let nodes: Vec<(String, String)> = ROLES
        .iter()
        .flat_map(|role| {
            emu.endpoints(role)
                .into_iter()
                .map(|e| ((*role).to_string(), e))
        })
        .collect();
    let hosts = serve::start_hosts(
        "openmldb",
        dir,
        &nodes,
        |l| emu.serve_processes(l),
        |role, ep| {
            (
                format!("{role}.flags"),
                format!("--endpoint={ep}\n--zk_cluster={zk}\n--zk_root_path={root}\n"),
            )
        },
    )
    .await?;
    let (cluster_file, truth_file) = (&hosts.cluster_file, &hosts.truth_file);
    let apiservers = emu.endpoints("apiserver").join(",");
    let taskmanagers = emu.endpoints("taskmanager").join(",");
    let command = format!(
        "cargo run --release --example openmldb -- --zk {zk} --zk-root {root} --cluster {} \
         --apiserver {apiservers} --taskmanager {taskmanagers} --scale {scale} --run --journal zk",
        shell_quote_path(cluster_file)
    );
    let info = serde_json::json!({
        "zk": zk,
        "zk_root": root,
        "cluster_file": cluster_file,
        "truth_file": truth_file,
        "apiserver": apiservers,
        "taskmanager": taskmanagers,
        "scale": scale,
        "command": command,
    });
    serve::announce(
        &info,
        json,
        &format!(
            "emulated OpenMLDB cluster in serve mode (not OpenMLDB: rollout's simulator behind \
             the real RPCs; each process a real OS process behind a node agent), ZooKeeper {zk} \
             root {root}, {scale}x time"
        ),
    );
    serve::until_signal(truth_file, || {
        let mut truth = serve::truth(emu.sim(), |id| emu.endpoint_of(id));
        // Every leader change moves a partition's term; every nameserver op is counted.
        let terms: BTreeMap<String, u64> = emu
            .sim()
            .openmldb_partitions()
            .iter()
            .map(|p| (format!("{}.{}", p.table, p.pid), p.term))
            .collect();
        truth.insert("terms".into(), serde_json::json!(terms));
        truth.insert("ops".into(), emu.sim().openmldb_ops().len().into());
        serde_json::Value::Object(truth)
    })
    .await
}
