//! `openmldb --emulate --serve`: the emulated OpenMLDB cluster keeps running, registered in
//! ZooKeeper, with each emulated process a real OS process (this binary again, with the
//! hidden `--emulated-process`), started and stopped by its deployment's commands through a
//! node agent of its own emulated host; a cluster file for `--cluster` is printed, so that an
//! orchestrator in another process rolls it through the real control plane, the real agent
//! and the ZooKeeper journal. `truth.json` beside the cluster file holds the emulated
//! cluster's ground truth (restarts per node, requests failed, writes lost, knobs), rewritten
//! every 200 ms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rollout_openmldb::emulator::Emulator;
use rollout_process::agent::{AgentConfig, serve_on};
use rollout_process::shell_quote_path;
use rollout_sim::{ClientLoad, Flavor, SimBuilder};
use tokio::net::TcpListener;

/// The roles an emulated OpenMLDB cluster has, in the order they are laid out.
const ROLES: [&str; 4] = ["nameserver", "tablet", "apiserver", "taskmanager"];

/// Serves the emulated cluster until SIGINT or SIGTERM.
pub(crate) async fn serve(
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
    let emu = Emulator::start(&builder, zk, &root).await?;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            std::env::temp_dir().join(format!("rollout-openmldb-emulated-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let control = TcpListener::bind("127.0.0.1:0").await?;
    let control_addr = control.local_addr()?;
    let processes = emu.serve_processes(control);
    let token_file = dir.join("agent.token");
    write_token(&token_file)?;
    let exe = std::env::current_exe().context("the path of this binary")?;

    let mut cluster = String::from(
        "# Written by `openmldb --emulate --serve`: the emulated cluster's processes, each\n\
         # behind the node agent of its emulated host.\n",
    );
    let mut starts = Vec::new();
    for role in ROLES {
        for endpoint in emu.endpoints(role) {
            let host = dir.join(endpoint.replace(':', "_"));
            let start = lay_out(
                &host,
                role,
                &endpoint,
                &exe,
                &control_addr.to_string(),
                zk,
                &root,
            )?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let config = AgentConfig::from_toml(
                &format!("the agent of {endpoint}"),
                &agent_toml(&host, role, &endpoint, &start, &token_file),
            )
            .map_err(|e| anyhow::anyhow!(rollout_core::chain(&e)))?;
            tokio::spawn(async move {
                if let Err(e) = serve_on(config, listener, std::future::pending()).await {
                    eprintln!("error: an emulated host's agent ended: {e}");
                }
            });
            cluster.push_str(&format!(
                "\n[[nodes]]\nreach = \"agent\"\nid = \"{endpoint}\"\ncomponent = \"{role}\"\n\
                 agent = {{ url = \"{url}\", token_file = {token:?} }}\n",
                token = token_file.display().to_string(),
            ));
            starts.push((host, start));
        }
    }
    // The processes of the running cluster, started as a deployment starts them; the
    // cluster file is printed once each holds its node (and handles SIGTERM).
    for (host, start) in &starts {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(start)
            .current_dir(host)
            .status()
            .await?;
        anyhow::ensure!(status.success(), "{start} failed in {}", host.display());
    }
    let t0 = tokio::time::Instant::now();
    while processes.attached() < starts.len() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "{} of the {} emulated processes came up within 30 s; see logs/ under {}",
            processes.attached(),
            starts.len(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cluster_file = dir.join("cluster.toml");
    std::fs::write(&cluster_file, cluster)?;
    let truth_file = dir.join("truth.json");
    let apiservers = emu.endpoints("apiserver").join(",");
    let taskmanagers = emu.endpoints("taskmanager").join(",");
    let command = format!(
        "cargo run --release --example openmldb -- --zk {zk} --zk-root {root} --cluster {} \
         --apiserver {apiservers} --taskmanager {taskmanagers} --scale {scale} --run --journal zk",
        shell_quote_path(&cluster_file)
    );
    if json {
        let v = serde_json::json!({
            "zk": zk,
            "zk_root": root,
            "cluster_file": cluster_file,
            "truth_file": truth_file,
            "apiserver": apiservers,
            "taskmanager": taskmanagers,
            "scale": scale,
            "command": command,
        });
        println!("{v}");
    } else {
        println!(
            "emulated OpenMLDB cluster in serve mode (not OpenMLDB: rollout's simulator behind \
             the real RPCs; each process a real OS process behind a node agent), ZooKeeper {zk} \
             root {root}, {scale}x time"
        );
        println!("cluster file: {}", cluster_file.display());
        println!(
            "ground truth: {} (rewritten every 200 ms)",
            truth_file.display()
        );
        println!("roll it from another shell:\n  {command}");
        println!("stop with Ctrl-C");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if let Err(e) = write_truth(&emu, &truth_file) {
                    eprintln!("warning: {}: {e:#}", truth_file.display());
                }
            }
        }
    }
    write_truth(&emu, &truth_file)?;
    // Every emulated process exits once its control connection closes, when this process
    // exits. The root stays in ZooKeeper, for a look at the rollout's journal after.
    Ok(())
}

/// One emulated host's deploy dir: `conf/<role>.flags` (what a configuration change edits),
/// `bin/` for the pid file, `logs/`. Returns the start command.
fn lay_out(
    host: &Path,
    role: &str,
    endpoint: &str,
    exe: &Path,
    control: &str,
    zk: &str,
    root: &str,
) -> anyhow::Result<String> {
    for sub in ["bin", "conf", "logs"] {
        std::fs::create_dir_all(host.join(sub))?;
    }
    std::fs::write(
        host.join(format!("conf/{role}.flags")),
        format!("--endpoint={endpoint}\n--zk_cluster={zk}\n--zk_root_path={root}\n"),
    )?;
    Ok(format!(
        "nohup {} --emulated-process {endpoint} --control {control} >> logs/{role}.log 2>&1 \
         < /dev/null & echo $! > bin/{role}.pid",
        shell_quote_path(exe)
    ))
}

fn agent_toml(host: &Path, role: &str, endpoint: &str, start: &str, token: &Path) -> String {
    format!(
        r#"listen = "127.0.0.1:1"
token_file = {token:?}
[components.{role}]
id = "{endpoint}"
deploy_dir = {dir:?}
start = {start:?}
stop = {stop:?}
pid_file = "bin/{role}.pid"
listen = "{endpoint}"
config_files = ["conf/{role}.flags"]
stop_timeout_secs = 20
start_timeout_secs = 60
"#,
        token = token.display().to_string(),
        dir = host.display().to_string(),
        stop = format!("kill -TERM \"$(cat bin/{role}.pid)\" 2>/dev/null; true",),
    )
}

/// A fresh token for the emulated hosts' agents, readable by this user alone.
fn write_token(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())?;
    Ok(())
}

/// The emulated cluster's ground truth, by endpoint, replaced atomically.
fn write_truth(emu: &Emulator, path: &PathBuf) -> anyhow::Result<()> {
    let truth = emu.sim().truth();
    let by_endpoint = |m: &BTreeMap<rollout_core::NodeId, u32>| -> BTreeMap<String, u32> {
        m.iter().map(|(id, n)| (emu.endpoint_of(id), *n)).collect()
    };
    let running: BTreeMap<String, bool> = emu
        .sim()
        .node_ids()
        .iter()
        .map(|id| (emu.endpoint_of(id), emu.sim().running(id) == Some(true)))
        .collect();
    let m = &truth.monitor;
    // Every leader change moves a partition's term; every nameserver op is counted: what an
    // orchestrator did to the cluster beyond restarts and knobs.
    let terms: BTreeMap<String, u64> = emu
        .sim()
        .openmldb_partitions()
        .iter()
        .map(|p| (format!("{}.{}", p.table, p.pid), p.term))
        .collect();
    let v = serde_json::json!({
        "terms": terms,
        "ops": emu.sim().openmldb_ops().len(),
        "emulated_secs": truth.elapsed.as_secs_f64(),
        "restarts": by_endpoint(&truth.restarts),
        "max_restarts_per_node": truth.restarts.values().copied().max().unwrap_or(0),
        "crashes": by_endpoint(&truth.crashes),
        "running": running,
        "knobs": truth.knobs,
        "knobs_restored": truth.knobs_restored,
        "requests_ok": m.requests_ok,
        "requests_failed": m.requests_failed,
        "writes_acked": m.writes_acked,
        "writes_lost": m.writes_lost,
    });
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, v.to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The body of one emulated process (`--emulated-process ENDPOINT --control HOST:PORT`):
/// lives while the emulated node runs; SIGTERM shuts it down cleanly.
pub(crate) async fn emulated_process(endpoint: &str, control: &str) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    rollout_openmldb::emulator::run_process(control, endpoint, async move {
        term.recv().await;
    })
    .await
    .with_context(|| format!("emulated process {endpoint}"))
}
