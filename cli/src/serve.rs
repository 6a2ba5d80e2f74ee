//! What the emulators' serve mode shares (`openmldb --emulate --serve`, `pegasus --emulate
//! --serve`): the emulated cluster keeps running, each of its processes a real OS process
//! (this binary again, with the hidden `--emulated-process`) started and stopped by its
//! deployment's commands through a node agent of its own emulated host; a cluster file for
//! `--cluster` is written, so that an orchestrator in another process rolls the emulated
//! cluster through the real control plane, the real agent and its journal; `truth.json`
//! beside it holds the emulated cluster's ground truth, rewritten every 200 ms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rollout_core::NodeId;
use rollout_emulator_kernel::processes::Processes;
use rollout_process::agent::{AgentConfig, serve_on};
use rollout_process::shell_quote_path;
use rollout_sim::SimCluster;
use tokio::net::TcpListener;

/// The serve mode's flags, the same in both binaries (flattened into their `Args`).
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// With --emulate: keep the emulated cluster running (until Ctrl-C or SIGTERM), each of
    /// its processes a real OS process behind a node agent of its own emulated host, and
    /// print a cluster file for --cluster and the command that rolls it from another shell.
    #[arg(long)]
    pub(crate) serve: bool,
    /// With --serve: where the emulated hosts' deploy dirs, the cluster file, the agents'
    /// token and truth.json go (default: a new directory under the system's temp dir).
    #[arg(long, value_name = "DIR", requires = "serve")]
    pub(crate) dir: Option<PathBuf>,
    /// An emulated process of a serving emulator (started by its deployment's commands).
    #[arg(long, hide = true, value_name = "ENDPOINT", requires = "control")]
    pub(crate) emulated_process: Option<String>,
    /// The serving emulator's control port, for --emulated-process.
    #[arg(long, hide = true, value_name = "HOST:PORT")]
    pub(crate) control: Option<String>,
}

/// `--scale`: as given, else 20 with `--emulate` and 1 on a real cluster.
pub(crate) fn scale(given: Option<u32>, emulate: bool) -> u32 {
    given.unwrap_or(if emulate { 20 } else { 1 }).max(1)
}

/// The directory of a serving emulator: `dir`, or a new one under the system's temp dir.
fn serve_dir(dir: Option<&Path>, flavor: &str) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            std::env::temp_dir().join(format!("rollout-{flavor}-emulated-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.canonicalize()?)
}

/// A serving emulator's hosts: where they are laid out, the cluster file, the ground truth's
/// file, and the control port its processes hold.
pub(crate) struct Hosts {
    pub(crate) cluster_file: PathBuf,
    pub(crate) truth_file: PathBuf,
    /// Served while held.
    _processes: Processes,
}

/// One emulated host per `(role, endpoint)` of `nodes` under `dir` (or a new directory for
/// `flavor`), each with its deploy dir (`conf/<file>` from `config(role, endpoint)`, `bin/`,
/// `logs/`) and its node agent on loopback; the emulator's control port is served by
/// `serve_processes`; each node's process is started as a deployment starts it, and the
/// hosts are given out once each holds its node.
pub(crate) async fn start_hosts(
    flavor: &str,
    dir: Option<&Path>,
    nodes: &[(String, String)],
    serve_processes: impl FnOnce(TcpListener) -> Processes,
    config: impl Fn(&str, &str) -> (String, String),
) -> anyhow::Result<Hosts> {
    let dir = &serve_dir(dir, flavor)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let control: SocketAddr = listener.local_addr()?;
    let processes = serve_processes(listener);
    let token_file = dir.join("agent.token");
    write_token(&token_file)?;
    let exe = std::env::current_exe().context("the path of this binary")?;
    let mut cluster = String::from(
        "# Written by `--emulate --serve`: the emulated cluster's processes, each behind the\n\
         # node agent of its emulated host.\n",
    );
    let mut starts = Vec::new();
    for (role, endpoint) in nodes {
        let host = dir.join(endpoint.replace(':', "_"));
        for sub in ["bin", "conf", "logs"] {
            std::fs::create_dir_all(host.join(sub))?;
        }
        let (file, text) = config(role, endpoint);
        std::fs::write(host.join("conf").join(&file), text)?;
        let start = format!(
            "nohup {} --emulated-process {endpoint} --control {control} >> logs/{role}.log 2>&1 \
             < /dev/null & echo $! > bin/{role}.pid",
            shell_quote_path(&exe)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let agent = AgentConfig::from_toml(
            &format!("the agent of {endpoint}"),
            &agent_toml(&host, role, endpoint, &start, &file, &token_file),
        )
        .map_err(|e| anyhow::anyhow!(rollout_core::chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = serve_on(agent, listener, std::future::pending()).await {
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
    for (host, start) in &starts {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(start)
            .current_dir(host)
            .status()
            .await?;
        anyhow::ensure!(status.success(), "{start} failed in {}", host.display());
    }
    // The cluster file is given out once each process holds its node (and handles SIGTERM).
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
    Ok(Hosts {
        cluster_file,
        truth_file: dir.join("truth.json"),
        _processes: processes,
    })
}

fn agent_toml(
    host: &Path,
    role: &str,
    endpoint: &str,
    start: &str,
    config: &str,
    token: &Path,
) -> String {
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
config_files = ["conf/{config}"]
stop_timeout_secs = 20
start_timeout_secs = 60
"#,
        token = token.display().to_string(),
        dir = host.display().to_string(),
        stop = format!("kill -TERM \"$(cat bin/{role}.pid)\" 2>/dev/null; true"),
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

/// The emulated cluster's ground truth, by endpoint: restarts, crashes, whether each node
/// runs, knobs, client requests and writes.
pub(crate) fn truth(
    sim: &SimCluster,
    endpoint_of: impl Fn(&NodeId) -> String,
) -> serde_json::Map<String, serde_json::Value> {
    let truth = sim.truth();
    let by_endpoint = |m: &BTreeMap<NodeId, u32>| -> BTreeMap<String, u32> {
        m.iter().map(|(id, n)| (endpoint_of(id), *n)).collect()
    };
    let running: BTreeMap<String, bool> = sim
        .node_ids()
        .iter()
        .map(|id| (endpoint_of(id), sim.running(id) == Some(true)))
        .collect();
    let m = &truth.monitor;
    let v = serde_json::json!({
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
    match v {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// Prints what a serving emulator gives out: one JSON line with `json`, else lines for
/// people.
pub(crate) fn announce(info: &serde_json::Value, json: bool, what: &str) {
    if json {
        println!("{info}");
        return;
    }
    println!("{what}");
    let s = |k: &str| info[k].as_str().unwrap_or_default().to_string();
    println!("cluster file: {}", s("cluster_file"));
    println!("ground truth: {} (rewritten every 200 ms)", s("truth_file"));
    println!("roll it from another shell:\n  {}", s("command"));
    println!("stop with Ctrl-C");
}

/// Rewrites `path` from `truth` every 200 ms (atomically) until SIGINT or SIGTERM, then once
/// more. Every emulated process exits once its control connection closes, when this process
/// exits.
pub(crate) async fn until_signal(
    path: &Path,
    truth: impl Fn() -> serde_json::Value,
) -> anyhow::Result<()> {
    let write = || -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, truth().to_string())?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if let Err(e) = write() {
                    eprintln!("warning: {}: {e:#}", path.display());
                }
            }
        }
    }
    write()
}

/// The body of one emulated process (`--emulated-process ENDPOINT --control HOST:PORT`):
/// lives while the emulated node runs; SIGTERM shuts it down cleanly.
pub(crate) async fn emulated_process(endpoint: &str, control: &str) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    rollout_emulator_kernel::processes::run_process(control, endpoint, async move {
        term.recv().await;
    })
    .await
    .with_context(|| format!("emulated process {endpoint}"))
}
