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

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::args::Action;
use crate::common::{BadInput, Exit, Progress, Unmanaged, policy, print_plan};
use anyhow::bail;
use clap::{CommandFactory, FromArgMatches, Parser};
use rollout_core::{Change, NodeId, Run, Spec, chain, roll};
use rollout_emulator_openmldb::{Emulator, Options, ServerVersion};
use rollout_openmldb::{Config, OpenMldbCluster, Others, Timing};
use rollout_sim::{ClientLoad, Flavor, SimBuilder, report_of};

/// Roll an OpenMLDB cluster one safe step at a time.
#[derive(Parser, Debug)]
#[command(name = "openmldb", version)]
pub struct Args {
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
    journal: crate::journal::JournalArgs,
    /// Print the state of the rollout in the journal (who holds its lock, since when, the
    /// node in progress, the knobs saved and their originals) and change nothing.
    #[arg(long, conflicts_with_all = ["run", "abort"])]
    status: bool,
    /// End the journal's interrupted rollout: knobs restored, a node caught stopped started
    /// again; from any host. Needs --cluster.
    #[arg(long, requires = "cluster", conflicts_with = "run")]
    abort: bool,
    /// The change as one value: restart or upgrade:VERSION (the same as --restart and
    /// --upgrade VERSION).
    #[arg(long, default_value = "restart")]
    change: String,
    /// The change and the nodes: --restart, --upgrade VERSION, --set FILE:KEY=VALUE (a bare
    /// file name is under each node's conf/: tablet.flags:zk_session_timeout=20000), --role
    /// (nameserver, tablet, apiserver, taskmanager) or --node.
    #[command(flatten)]
    what: crate::args::ChangeArgs,
    #[command(flatten)]
    rules: crate::args::PolicyArgs,
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
    served: crate::serve::ServeArgs,
    /// With --emulate: ha (fenced leader moves) or naive (restart and wait).
    #[arg(long, value_enum, default_value_t = crate::args::EmulatedStrategy::Ha)]
    strategy: crate::args::EmulatedStrategy,
    /// With --emulate: the seed of the emulated cluster.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// With --emulate: the OpenMLDB version the emulated servers speak (0.8, 0.9).
    #[arg(long, default_value_t = ServerVersion::default())]
    server_version: ServerVersion,
    /// With --emulate: keep serving this many wall seconds before the rollout and after it.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// With --emulate: wall seconds before the rollout instead (default: --hold).
    #[arg(long)]
    hold_before: Option<u64>,
    /// With --emulate: after the hold, write to FILE every row a client put through the
    /// tablets (the upstream SDK's INSERT) as a JSON array of {key, table, pid, held,
    /// value_hex}, `held` whether the partition's serving replica holds it.
    #[arg(long, value_name = "FILE")]
    client_writes: Option<std::path::PathBuf>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn zk(&self) -> &str {
        self.zk.as_deref().unwrap_or_default()
    }

    fn scale(&self) -> u32 {
        crate::serve::scale(self.scale, self.emulate)
    }
}

fn parse_change(c: &str) -> anyhow::Result<Change> {
    match c {
        "restart" => Ok(Change::Restart),
        c => match c.strip_prefix("upgrade:") {
            Some(v) if !v.is_empty() => Ok(Change::Upgrade {
                version: v.to_string(),
            }),
            _ => bail!("unknown change {c:?}: expected restart or upgrade:VERSION (or --set)"),
        },
    }
}

async fn real(args: &Args, change: Change) -> anyhow::Result<Exit> {
    if (args.run || args.abort) && args.cluster.is_none() {
        return Err(BadInput(
            "run and abort need --cluster FILE: how to reach each node's process".into(),
        )
        .into());
    }
    let others = Others {
        apiservers: args.apiserver.clone(),
        taskmanagers: args.taskmanager.clone(),
    };
    let mut spec = args.what.select(Spec::new(change));
    let scale = args.scale();
    if scale > 1 {
        spec.policy = policy(scale);
    }
    spec.policy = args.rules.apply(spec.policy);
    let journal = args.journal.at(
        Some((args.zk(), &args.zk_root)),
        "openmldb",
        crate::common::default_journal(&format!("openmldb{}", args.zk_root)),
    )?;
    if args.status {
        journal.print_status(args.json)?;
        return Ok(Exit::Completed);
    }
    let mut config = Config::new(args.zk(), &args.zk_root)
        .others(others)
        .timing(Timing::default().scaled(scale));
    if let Some(d) = journal.digest() {
        config = config.zk_digest(d);
    }
    let Some(file) = crate::common::cluster_file(args.cluster.as_deref())? else {
        let cluster = crate::common::connecting(
            "the OpenMLDB cluster",
            OpenMldbCluster::connect(&config, |id: &NodeId| Some(Unmanaged(id.clone()))),
        )
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
        return print_plan(&cluster, &spec, args.json).await;
    };
    let cluster = crate::common::connecting(
        "the OpenMLDB cluster",
        OpenMldbCluster::connect(&config, move |id: &NodeId| file.node(id)),
    )
    .await
    .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    if args.abort {
        return crate::common::abort_real(&cluster, &journal).await;
    }
    if !args.run {
        return print_plan(&cluster, &spec, args.json).await;
    }
    crate::common::run_real(&cluster, &spec, &journal, args.json).await
}

async fn emulate(args: &Args, change: Change) -> anyhow::Result<Exit> {
    let mut builder = SimBuilder::new(Flavor::OpenMldb);
    builder
        .seed(args.seed)
        .data_nodes(3)
        .coordinators(2)
        .time_scale(args.scale())
        .load(ClientLoad::default());
    let strategy = args.strategy.sim();
    // The pure simulation of the same shape and seed, for comparison.
    let sim_report = crate::common::pure_simulation(&builder, strategy, change.clone()).await?;
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
    println!("zk root: {root}");
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
    let procedure = args.strategy.procedure();
    let mut spec = args.what.select(Spec::new(change));
    spec.policy = args.rules.apply(policy(args.scale()).procedure(procedure));
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
            crate::common::default_journal(&root),
        )?
        .open()?;
    tokio::time::sleep(Duration::from_secs(args.hold_before.unwrap_or(args.hold))).await;
    let progress = Progress::new();
    let rows_before = cluster
        .row_counts()
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    let t0 = emu.sim().truth().elapsed;
    // The emulator runs on the wall clock (not paused), so this is the roll's wall time.
    let wall = tokio::time::Instant::now();
    let result = roll(&cluster, &spec, Run::new(&*journal).observe(&progress)).await;
    let refused = result
        .as_ref()
        .err()
        .is_some_and(rollout_core::Error::is_refusal);
    let result = result.map_err(|e| chain(&e));
    let took = (emu.sim().truth().elapsed - t0).as_secs_f64();
    // For a client outside (scripts/realclient.sh): the roll is over, the hold begins.
    println!("rollout finished");
    std::io::Write::flush(&mut std::io::stdout())?;
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
    // The plan names nodes by their addresses; the world by its own ids.
    let waves: Vec<Vec<NodeId>> = progress
        .waves
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|w| {
            w.iter()
                .map(|n| emu.world_id(n.as_str()).unwrap_or_else(|| n.clone()))
                .collect()
        })
        .collect();
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
    json["strategy"] = args.strategy.name().into();
    json["time_scale"] = args.scale().into();
    json["nameservers"] = nameservers.join(",").into();
    json["server_version"] = cluster
        .server_version()
        .map_or(serde_json::Value::Null, |v| v.to_string().into());
    json["zk_root"] = root.into();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let writes = emu.client_writes();
    json["client_writes"] = writes.len().into();
    json["client_writes_lost"] = writes.iter().filter(|w| !w.held).count().into();
    if let Some(path) = &args.client_writes {
        let rows: Vec<serde_json::Value> = writes
            .iter()
            .map(|w| {
                let hex: String = w.value.iter().map(|b| format!("{b:02x}")).collect();
                serde_json::json!({
                    "key": w.key, "table": w.table, "pid": w.pid, "held": w.held,
                    "value_hex": hex,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_vec(&rows)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
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
            args.strategy.name(),
            args.seed,
            r.outcome
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
    if refused {
        return Err(BadInput(report.error.unwrap_or_default()).into());
    }
    Ok(Exit::of_outcome(&report.outcome))
}

/// The `openmldb` example: its flags from the process's arguments.
pub fn main() -> ExitCode {
    run(Args::parse())
}

/// `rollout openmldb`: its actions, each with the example's flags (the mode flags hidden).
pub fn command() -> clap::Command {
    crate::args::action_commands(
        Args::command(),
        "openmldb",
        "OpenMLDB: plan, run, status, abort through its ZooKeeper, or roll the emulator",
    )
}

/// Runs `rollout openmldb ACTION` from the matches of [`command`]'s subcommand.
pub fn run_action(action: Action, matches: &clap::ArgMatches) -> ExitCode {
    match Args::from_arg_matches(matches) {
        Ok(mut args) => {
            crate::args::set_modes(
                action,
                [
                    &mut args.plan,
                    &mut args.run,
                    &mut args.status,
                    &mut args.abort,
                    &mut args.emulate,
                ],
            );
            run(args)
        }
        Err(e) => e.exit(),
    }
}

fn run(args: Args) -> ExitCode {
    let served = &args.served;
    crate::common::run_system(
        args.what.change(Some(&args.change), parse_change, true),
        served,
        args.emulate,
        || {
            crate::openmldb_serve::serve(
                args.server_version,
                args.zk(),
                &args.zk_root,
                args.seed,
                args.scale(),
                served.dir.as_deref(),
                args.json,
            )
        },
        |change| async {
            if args.emulate {
                emulate(&args, change).await
            } else {
                real(&args, change).await
            }
        },
    )
}
