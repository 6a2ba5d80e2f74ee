//! Plan or run a rolling restart, upgrade or config change of an Apache Pegasus cluster
//! through its meta servers; or start the Pegasus emulator and roll it.
//!
//! ```text
//! cargo run --release --example pegasus -- --meta 10.0.0.1:34601,10.0.0.2:34601 --plan
//! cargo run --release --example pegasus -- --emulate --json
//! cargo run --release --example pegasus -- --emulate --plan
//! ```
//!
//! `--run --cluster FILE` rolls a real cluster, reaching each node's process as the cluster
//! file says (its commands here or over ssh, or the node agent on its host). The emulator
//! is not Pegasus: it serves the simulator's
//! model of a cluster over Pegasus's wire protocol on loopback.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::args::Action;
use crate::common::{BadInput, Exit, Progress, Unmanaged, policy, print_plan};
use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser};
use rollout_core::{Change, MemoryJournal, NodeId, Run, Spec, chain, roll};
use rollout_emulator_pegasus::{Emulator, ServerVersion};
use rollout_pegasus::client::DataClient;
use rollout_pegasus::{PegasusCluster, Timing};
use rollout_sim::{ClientLoad, Flavor, SimBuilder, report_of};

/// Roll an Apache Pegasus cluster one safe step at a time.
#[derive(Parser, Debug)]
#[command(name = "pegasus", version)]
pub struct Args {
    /// The meta servers, comma-separated HOST:PORT (needed to reach a real cluster).
    #[arg(long, value_delimiter = ',')]
    meta: Vec<SocketAddr>,
    /// Collectors to roll last, comma-separated HOST:PORT.
    #[arg(long, value_delimiter = ',')]
    collector: Vec<SocketAddr>,
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
    /// Print the state of the rollout in the journal and change nothing.
    #[arg(long, conflicts_with_all = ["run", "abort"])]
    status: bool,
    /// End the journal's interrupted rollout: knobs restored, a node caught stopped started
    /// again. Needs --cluster.
    #[arg(long, requires = "cluster", conflicts_with = "run")]
    abort: bool,
    /// The change as one value: restart, upgrade:VERSION or config:FILE:SECTION.KEY=VALUE
    /// (the same as --restart, --upgrade VERSION, --set FILE:SECTION.KEY=VALUE).
    #[arg(long, default_value = "restart")]
    change: String,
    #[command(flatten)]
    what: crate::args::ChangeArgs,
    #[command(flatten)]
    rules: crate::args::PolicyArgs,
    /// Start the emulator (3 metas, 6 replica servers, table temp of 64 partitions x 3,
    /// client load) and roll it; its first stdout line names the meta servers.
    #[arg(long)]
    emulate: bool,
    /// How many emulated seconds pass per wall second: with --emulate (default 20), or with
    /// --run against an emulator in serve mode (the command it prints gives it; every wait
    /// and poll is divided by it). Default 1 on a real cluster.
    #[arg(long)]
    scale: Option<u32>,
    /// With --serve: a ZooKeeper, HOST:PORT[,...], that the emulated meta servers report in
    /// cluster_info (under a root of their own), so that the rollout keeps its state there.
    #[arg(long, value_name = "HOST:PORT", requires = "serve")]
    zk: Option<String>,
    #[command(flatten)]
    served: crate::serve::ServeArgs,
    /// With --emulate: ha (the high-availability steps) or naive (the upstream simplified
    /// steps: restart and wait), to compare what the client over the wire sees.
    #[arg(long, value_enum, default_value_t = crate::args::EmulatedStrategy::Ha)]
    strategy: crate::args::EmulatedStrategy,
    /// With --emulate: the seed of the emulated cluster.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// With --emulate: the Pegasus version the emulated servers speak (2.4, 2.5, master).
    #[arg(long, default_value_t = ServerVersion::default())]
    server_version: ServerVersion,
    /// With --emulate: keep serving this many wall seconds before the rollout and after it.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// With --emulate: wall seconds before the rollout instead (default: --hold).
    #[arg(long)]
    hold_before: Option<u64>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn scale(&self) -> u32 {
        crate::serve::scale(self.scale, self.emulate)
    }
}

fn parse_change(s: &str) -> anyhow::Result<Change> {
    if s == "restart" {
        return Ok(Change::Restart);
    }
    if let Some(v) = s.strip_prefix("upgrade:") {
        return Ok(Change::Upgrade {
            version: v.to_string(),
        });
    }
    if let Some(rest) = s.strip_prefix("config:") {
        let (file, kv) = rest
            .split_once(':')
            .context("config:FILE:SECTION.KEY=VALUE")?;
        let (key, value) = kv
            .split_once('=')
            .context("config:FILE:SECTION.KEY=VALUE")?;
        return Ok(Change::Config {
            edits: vec![rollout_core::ConfigEdit::Set {
                file: file.to_string(),
                key: key.to_string(),
                value: value.to_string(),
            }],
        });
    }
    bail!(
        "unknown change {s:?}: expected restart, upgrade:VERSION or config:FILE:SECTION.KEY=VALUE"
    )
}

async fn real(args: &Args, change: Change) -> anyhow::Result<Exit> {
    if args.meta.is_empty() {
        return Err(BadInput(
            "--meta HOST:PORT[,...] is needed to reach a real cluster (or roll the emulator: emulate)"
                .into(),
        )
        .into());
    }
    if (args.run || args.abort) && args.cluster.is_none() {
        return Err(BadInput(
            "run and abort need --cluster FILE: how to reach each node's process".into(),
        )
        .into());
    }
    let scale = args.scale();
    let mut spec = args.what.select(Spec::new(change));
    if scale > 1 {
        spec.policy = policy(scale);
    }
    spec.policy = args.rules.apply(spec.policy);
    let first = args
        .meta
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let default_file = crate::common::default_journal(&format!("pegasus-{first}"));
    // A journal named as a file needs no meta server to be read.
    if args.status && args.journal.at.as_deref().is_some_and(|j| j != "zk") {
        args.journal
            .at(None, "pegasus", default_file)?
            .print_status(args.json)?;
        return Ok(Exit::Completed);
    }
    let file = crate::common::cluster_file(args.cluster.as_deref())?;
    // Without a cluster file, or only to look: the nodes are not controlled from here.
    let plain = crate::common::connecting(
        "the meta servers",
        PegasusCluster::connect(
            &args.meta,
            &args.collector,
            |id: &NodeId| Some(Unmanaged(id.clone())),
            Timing::default().scaled(scale),
        ),
    )
    .await
    .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    // The rollout's state lives by default in the ZooKeeper the meta server reports.
    let journal = args
        .journal
        .at(plain.zookeeper(), "pegasus", default_file)?;
    if args.status {
        journal.print_status(args.json)?;
        return Ok(Exit::Completed);
    }
    let Some(file) = file.filter(|_| args.run || args.abort) else {
        return print_plan(&plain, &spec, args.json).await;
    };
    let cluster = crate::common::connecting(
        "the meta servers",
        PegasusCluster::connect(
            &args.meta,
            &args.collector,
            move |id: &NodeId| file.node(id),
            Timing::default().scaled(scale),
        ),
    )
    .await
    .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    if args.abort {
        return crate::common::abort_real(&cluster, &journal).await;
    }
    crate::common::run_real(&cluster, &spec, &journal, args.json).await
}

async fn emulate(args: &Args, change: Change) -> anyhow::Result<Exit> {
    let mut builder = SimBuilder::new(Flavor::Pegasus);
    builder
        .seed(args.seed)
        .time_scale(args.scale())
        .load(ClientLoad::default());
    // The pure simulation of the same shape and seed, for comparison.
    let strategy = args.strategy.sim();
    let sim_report = crate::common::pure_simulation(&builder, strategy, change.clone()).await?;
    let emu = Arc::new(Emulator::start(&builder, args.server_version).await?);
    let metas: Vec<String> = emu.metas().iter().map(ToString::to_string).collect();
    println!("meta servers: {}", metas.join(","));
    println!(
        "emulated Pegasus cluster (not Pegasus: rollout's simulator behind the real protocol), {}x time",
        args.scale()
    );
    let e = emu.clone();
    let cluster = PegasusCluster::connect(
        &emu.metas(),
        &emu.collectors(),
        move |id: &NodeId| e.node(id),
        Timing::default().scaled(args.scale()),
    )
    .await
    .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    let procedure = args.strategy.procedure();
    let spec = args
        .what
        .select(Spec::new(change))
        .policy(args.rules.apply(policy(args.scale()).procedure(procedure)));
    if args.plan {
        return print_plan(&cluster, &spec, args.json).await;
    }
    tokio::time::sleep(Duration::from_secs(args.hold_before.unwrap_or(args.hold))).await;
    // Our own client writes through the data path over the wire during the rollout, with
    // the emulated cluster's client timeout and retry (3 s, 250 ms) in wall time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(wire_load(emu.metas(), stop.clone(), args.scale()));
    let journal = MemoryJournal::new();
    let progress = Progress::new();
    let t0 = emu.sim().truth().elapsed;
    // The emulator runs on the wall clock (not paused), so this is the roll's wall time.
    let wall = tokio::time::Instant::now();
    let result = roll(&cluster, &spec, Run::new(&journal).observe(&progress)).await;
    let refused = result
        .as_ref()
        .err()
        .is_some_and(rollout_core::Error::is_refusal);
    let result = result.map_err(|e| chain(&e));
    let took = (emu.sim().truth().elapsed - t0).as_secs_f64();
    // For a client outside (scripts/realclient.sh): the roll is over, the hold begins.
    println!("rollout finished");
    std::io::Write::flush(&mut std::io::stdout())?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let wire = load.await?;
    let wire_lost = wire_lost(&emu.metas(), &wire.acked).await;
    // Requests in flight finish before the counters are read.
    tokio::time::sleep(ClientLoad::default().timeout / args.scale()).await;
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
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
        &journal.entries(),
    );
    report.wall_ms = u64::try_from(wall.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut json = serde_json::to_value(&report)?;
    json["sim_virtual_secs"] = sim_report.virtual_secs.into();
    json["emulated"] = true.into();
    json["strategy"] = args.strategy.name().into();
    json["time_scale"] = args.scale().into();
    json["meta_servers"] = metas.join(",").into();
    json["server_version"] = cluster
        .server_version()
        .map_or(serde_json::Value::Null, |v| v.to_string().into());
    json["wire_writes_acked"] = wire.acked.len().into();
    json["wire_writes_failed"] = wire.failed.into();
    json["wire_writes_lost"] = wire_lost.into();
    if args.json {
        println!("{json}");
    } else {
        let r = &report;
        println!();
        println!(
            "emulated pegasus {} rollout, seed {}: {}",
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
            "  our client over the wire: {} writes acked, {} failed, {} lost",
            wire.acked.len(),
            wire.failed,
            wire_lost
        );
        println!(
            "  invariants: max {} replica(s) of a partition down, max {} restart(s) per node, knobs restored: {}",
            r.max_replicas_down, r.max_restarts_per_node, r.knobs_restored
        );
    }
    if refused {
        return Err(BadInput(report.error.unwrap_or_default()).into());
    }
    Ok(Exit::of_outcome(&report.outcome))
}

/// What a client writing over the wire saw.
struct Wire {
    acked: Vec<(Vec<u8>, Vec<u8>)>,
    failed: usize,
}

/// Writes keys through the data path until `stop`.
async fn wire_load(
    metas: Vec<SocketAddr>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    scale: u32,
) -> Wire {
    let s = scale.max(1);
    let client = DataClient::new(
        &metas,
        "temp",
        Duration::from_secs(3) / s,
        (Duration::from_millis(250) / s).max(Duration::from_millis(2)),
    );
    let mut wire = Wire {
        acked: Vec::new(),
        failed: 0,
    };
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (k, v) = (format!("k{i}").into_bytes(), format!("v{i}").into_bytes());
        match client.put(&k, &v).await {
            Ok(()) => wire.acked.push((k, v)),
            Err(_) => wire.failed += 1,
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wire
}

/// Acknowledged writes a read after the rollout does not find with their value.
async fn wire_lost(metas: &[SocketAddr], acked: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let reader = DataClient::new(
        metas,
        "temp",
        Duration::from_secs(2),
        Duration::from_millis(10),
    );
    let mut lost = 0;
    for (k, v) in acked {
        if reader.get(k).await.ok().flatten().as_deref() != Some(v.as_slice()) {
            lost += 1;
        }
    }
    lost
}

/// The `pegasus` example: its flags from the process's arguments.
pub fn main() -> ExitCode {
    run(Args::parse())
}

/// The `pegasus` example's flags from `args` (the program name first).
pub(crate) fn run_args(args: Vec<std::ffi::OsString>) -> ExitCode {
    match Args::try_parse_from(args) {
        Ok(a) => run(a),
        Err(e) => e.exit(),
    }
}

/// `rollout pegasus`: its actions, each with the example's flags (the mode flags hidden).
pub fn command() -> clap::Command {
    crate::args::action_commands(
        Args::command(),
        "pegasus",
        "Apache Pegasus: plan, run, status, abort against its metas, or roll the emulator",
    )
}

/// Runs `rollout pegasus ACTION` from the matches of [`command`]'s subcommand.
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
        args.what.change(Some(&args.change), parse_change, false),
        served,
        args.emulate,
        || {
            crate::pegasus_serve::serve(
                args.zk.as_deref(),
                args.server_version,
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
