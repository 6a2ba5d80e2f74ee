//! Plan or run a rolling restart, upgrade or configuration update of an OpenMLDB cluster
//! found through its ZooKeeper; or start the OpenMLDB emulator on a real ZooKeeper and roll
//! it.
//!
//! ```text
//! cargo run --release --example openmldb -- --zk 10.0.0.1:2181 --zk-root /openmldb --plan
//! cargo run --release --example openmldb -- --zk 10.0.0.1:2181 --role tablet --set tablet.flags:zk_session_timeout=20000
//! ZK=$(scripts/zookeeper.sh start | tail -1)
//! cargo run --release --example openmldb -- --emulate --zk $ZK --json
//! ```
//!
//! `--run --cluster FILE` rolls a real cluster, reaching each node's process as the cluster
//! file says (its commands here or over ssh, or the node agent on its host). The emulator
//! is not OpenMLDB: it serves the simulator's model of a cluster over OpenMLDB's HTTP/JSON RPCs on loopback, registered in
//! the ZooKeeper given.

#[path = "common.rs"]
mod common;
#[path = "openmldb_serve.rs"]
mod openmldb_serve;
#[path = "serve.rs"]
mod serve;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use common::{Progress, Unmanaged, policy, print_plan};
use rollout_core::{Change, ConfigEdit, NodeId, Run, Selection, Spec, chain, roll};
use rollout_emulator_openmldb::{Emulator, Options, ServerVersion};
use rollout_openmldb::{Config, OpenMldbCluster, Others, Timing};
use rollout_sim::{ClientLoad, Flavor, SimBuilder, Strategy, report_of};

/// Roll an OpenMLDB cluster one safe step at a time.
#[derive(Parser, Debug)]
#[command(name = "openmldb", version)]
struct Args {
    /// The cluster's ZooKeeper, HOST:PORT[,HOST:PORT...].
    #[arg(long, required_unless_present = "emulated_process")]
    zk: Option<String>,
    /// The cluster's root in ZooKeeper (its --zk_root_path).
    #[arg(long, default_value = "/openmldb")]
    zk_root: String,
    /// Print the plan and change nothing (the default without --run).
    #[arg(long, conflicts_with = "run")]
    plan: bool,
    /// Roll the cluster: needs --cluster.
    #[arg(long, requires = "cluster")]
    run: bool,
    /// The cluster file (TOML): how to reach each node's process, by its commands here or
    /// over ssh, or by the node agent on its host (rollout-process's `ClusterFile`).
    #[arg(long, value_name = "FILE")]
    cluster: Option<std::path::PathBuf>,
    #[command(flatten)]
    journal: common::JournalArgs,
    /// Print the state of the rollout in the journal (who holds its lock, since when, the
    /// node in progress, the knobs saved and their originals) and change nothing.
    #[arg(long, conflicts_with_all = ["run", "abort"])]
    status: bool,
    /// End the journal's interrupted rollout: knobs restored, a node caught stopped started
    /// again; from any host. Needs --cluster.
    #[arg(long, requires = "cluster", conflicts_with = "run")]
    abort: bool,
    /// Roll only these roles (nameserver, tablet, apiserver, taskmanager); repeatable.
    #[arg(long)]
    role: Vec<String>,
    /// A configuration update, FILE:KEY=VALUE (tablet.flags:zk_session_timeout=20000, or
    /// taskmanager.properties:KEY=VALUE); repeatable. Files are under each node's conf/.
    #[arg(long)]
    set: Vec<String>,
    /// The change when no --set is given: restart or upgrade:VERSION.
    #[arg(long, default_value = "restart")]
    change: String,
    /// Apiservers to roll after the tablets, comma-separated HOST:PORT (ZooKeeper does not
    /// list them).
    #[arg(long, value_delimiter = ',')]
    apiserver: Vec<String>,
    /// Taskmanagers, comma-separated HOST:PORT (ZooKeeper names only the leader).
    #[arg(long, value_delimiter = ',')]
    taskmanager: Vec<String>,
    /// Start the emulator (2 nameservers, 3 tablets, an apiserver, a taskmanager, client
    /// load) in --zk and roll it.
    #[arg(long)]
    emulate: bool,
    /// How many emulated seconds pass per wall second: with --emulate (default 20), or with
    /// --run against an emulator in serve mode (the command it prints gives it; every wait
    /// and poll is divided by it). Default 1 on a real cluster.
    #[arg(long)]
    scale: Option<u32>,
    #[command(flatten)]
    served: serve::ServeArgs,
    /// With --emulate: ha (fenced leader moves) or naive (restart and wait).
    #[arg(long, default_value = "ha")]
    strategy: String,
    /// With --emulate: the seed of the emulated cluster.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// With --emulate: the OpenMLDB version the emulated servers speak (0.8, 0.9).
    #[arg(long, default_value_t = ServerVersion::default())]
    server_version: ServerVersion,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn zk(&self) -> &str {
        self.zk.as_deref().unwrap_or_default()
    }

    fn scale(&self) -> u32 {
        serve::scale(self.scale, self.emulate)
    }
}

fn change_of(args: &Args) -> anyhow::Result<Change> {
    if !args.set.is_empty() {
        let mut edits = Vec::new();
        for s in &args.set {
            let (file, kv) = s.split_once(':').context("--set FILE:KEY=VALUE")?;
            let (key, value) = kv.split_once('=').context("--set FILE:KEY=VALUE")?;
            if key.is_empty() {
                bail!("--set {s}: no key");
            }
            let file = if file.contains('/') {
                file.to_string()
            } else {
                format!("conf/{file}")
            };
            edits.push(ConfigEdit::Set {
                file,
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        return Ok(Change::Config { edits });
    }
    match args.change.as_str() {
        "restart" => Ok(Change::Restart),
        c => match c.strip_prefix("upgrade:") {
            Some(v) if !v.is_empty() => Ok(Change::Upgrade {
                version: v.to_string(),
            }),
            _ => bail!("unknown change {c:?}: expected restart or upgrade:VERSION (or --set)"),
        },
    }
}

fn spec_of(args: &Args, change: Change) -> Spec {
    let spec = Spec::new(change);
    if args.role.is_empty() {
        spec
    } else {
        spec.selection(Selection::Roles(args.role.clone()))
    }
}

async fn real(args: &Args, change: Change) -> anyhow::Result<()> {
    let others = Others {
        apiservers: args.apiserver.clone(),
        taskmanagers: args.taskmanager.clone(),
    };
    let mut spec = spec_of(args, change);
    let scale = args.scale();
    if scale > 1 {
        spec.policy = policy(scale);
    }
    let journal = args.journal.at(
        Some((args.zk(), &args.zk_root)),
        "openmldb",
        common::default_journal(&format!("openmldb{}", args.zk_root)),
    )?;
    if args.status {
        return journal.print_status(args.json);
    }
    let mut config = Config::new(args.zk(), &args.zk_root)
        .others(others)
        .timing(Timing::default().scaled(scale));
    if let Some(d) = journal.digest() {
        config = config.zk_digest(d);
    }
    let Some(file) = common::cluster_file(args.cluster.as_deref())? else {
        let cluster = OpenMldbCluster::connect(&config, |id: &NodeId| Some(Unmanaged(id.clone())))
            .await
            .map_err(|e| anyhow::anyhow!(chain(&e)))?;
        return print_plan(&cluster, &spec, args.json).await;
    };
    let cluster = OpenMldbCluster::connect(&config, move |id: &NodeId| file.node(id))
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    if args.abort {
        return common::abort_real(&cluster, &journal).await;
    }
    if !args.run {
        return print_plan(&cluster, &spec, args.json).await;
    }
    common::run_real(&cluster, &spec, &journal, args.json).await
}

async fn emulate(args: &Args, change: Change) -> anyhow::Result<()> {
    let mut builder = SimBuilder::new(Flavor::OpenMldb);
    builder
        .seed(args.seed)
        .data_nodes(3)
        .coordinators(2)
        .time_scale(args.scale())
        .load(ClientLoad::default());
    let strategy = match args.strategy.as_str() {
        "ha" => Strategy::Ha,
        "naive" => Strategy::Naive,
        other => bail!("unknown strategy {other:?}: expected ha or naive"),
    };
    // The pure simulation of the same shape and seed, for comparison.
    let sim_report = common::pure_simulation(&builder, strategy, change.clone()).await?;
    let root = format!(
        "{}-emulated-{}",
        args.zk_root.trim_end_matches('/'),
        std::process::id()
    );
    let emu = Arc::new(
        Emulator::start(
            &builder,
            args.zk(),
            &root,
            Options::new(args.server_version),
        )
        .await?,
    );
    let nameservers = emu.endpoints("nameserver");
    println!("nameservers: {}", nameservers.join(","));
    println!(
        "emulated OpenMLDB cluster (not OpenMLDB: rollout's simulator behind the real RPCs), \
         ZooKeeper {} root {root}, {}x time",
        args.zk(),
        args.scale()
    );
    // The processes register in ZooKeeper once they serve.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = emu.clone();
    let others = Others {
        apiservers: emu.endpoints("apiserver"),
        taskmanagers: emu.endpoints("taskmanager"),
    };
    let config = Config::new(args.zk(), &root)
        .others(others)
        .timing(Timing::default().scaled(args.scale()));
    let cluster = OpenMldbCluster::connect(&config, move |id: &NodeId| e.node(id))
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    let procedure = match strategy {
        Strategy::Naive => rollout_core::Procedure::Simple,
        _ => rollout_core::Procedure::HighAvailability,
    };
    let mut spec = spec_of(args, change);
    spec.policy = policy(args.scale()).procedure(procedure);
    if args.plan {
        return print_plan(&cluster, &spec, args.json).await;
    }
    // The rollout's state in the emulated cluster's own ZooKeeper root, as on a real one
    // (`--journal file:PATH` keeps it in a file instead).
    let journal = args
        .journal
        .at(
            Some((args.zk(), &root)),
            "openmldb",
            common::default_journal(&root),
        )?
        .open()?;
    let progress = Progress {
        quiet: args.json,
        waves: Mutex::new(Vec::new()),
    };
    let rows_before = cluster
        .row_counts()
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    let t0 = emu.sim().truth().elapsed;
    // The emulator runs on the wall clock (not paused), so this is the roll's wall time.
    let wall = tokio::time::Instant::now();
    let result = roll(&cluster, &spec, Run::new(&*journal).observe(&progress))
        .await
        .map_err(|e| chain(&e));
    let took = (emu.sim().truth().elapsed - t0).as_secs_f64();
    // Requests in flight finish before the counters are read; the seed's last check: every
    // table's row count grows again under the clients' writes.
    tokio::time::sleep(ClientLoad::default().timeout / args.scale()).await;
    let rows_after = cluster
        .row_counts()
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    let rows_grew = rows_before
        .iter()
        .all(|(t, before)| rows_after.get(t).is_some_and(|after| after > before));
    let waves = progress
        .waves
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut report = report_of(
        &builder,
        emu.sim(),
        &result,
        (took, sim_report.lower_bound_secs),
        &waves,
        &journal.load().map_err(|e| anyhow::anyhow!(chain(&e)))?,
    );
    report.wall_ms = u64::try_from(wall.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut json = serde_json::to_value(&report)?;
    json["sim_virtual_secs"] = sim_report.virtual_secs.into();
    json["emulated"] = true.into();
    json["strategy"] = args.strategy.clone().into();
    json["time_scale"] = args.scale().into();
    json["nameservers"] = nameservers.join(",").into();
    json["server_version"] = cluster
        .server_version()
        .map_or(serde_json::Value::Null, |v| v.to_string().into());
    json["zk_root"] = root.into();
    json["rows_before"] = serde_json::to_value(&rows_before)?;
    json["rows_after"] = serde_json::to_value(&rows_after)?;
    json["rows_grew"] = rows_grew.into();
    if args.json {
        println!("{json}");
    } else {
        let r = &report;
        println!();
        println!(
            "emulated openmldb {} rollout, seed {}: {}",
            args.strategy, args.seed, r.outcome
        );
        if let Some(e) = &r.error {
            println!("  error: {e}");
        }
        println!(
            "  time: {:.0} emulated s (the pure simulation: {:.0} s, ratio {:.2})",
            r.virtual_secs,
            sim_report.virtual_secs,
            r.virtual_secs / sim_report.virtual_secs.max(1e-9)
        );
        println!(
            "  clients: {} requests ok, {} failed; {} writes acked, {} lost",
            r.requests_ok, r.requests_failed, r.writes_acked, r.writes_lost
        );
        println!(
            "  invariants: max {} replica(s) of a partition down, max {} restart(s) per node, knobs restored: {}",
            r.max_replicas_down, r.max_restarts_per_node, r.knobs_restored
        );
        println!(
            "  rows per table before and after: {rows_before:?} -> {rows_after:?} (grew: {rows_grew})"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let change = match change_of(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    common::run_main(async {
        let served = &args.served;
        if let (Some(endpoint), Some(control)) = (&served.emulated_process, &served.control) {
            return serve::emulated_process(endpoint, control).await;
        }
        if served.serve {
            return openmldb_serve::serve(
                args.server_version,
                args.zk(),
                &args.zk_root,
                args.seed,
                args.scale(),
                served.dir.as_deref(),
                args.json,
            )
            .await;
        }
        if args.emulate {
            emulate(&args, change).await
        } else {
            real(&args, change).await
        }
    })
}
