//! Roll a simulated Pegasus or OpenMLDB cluster and report what its clients saw.
//!
//! ```text
//! cargo run --release --example simulate -- --strategy ha --seed 7 --json
//! ```
//!
//! Flags and JSON fields are the contract of docs/contracts.md.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use rollout_core::{Change, Event, Observer, Phase, policy::OnTimeout};
use rollout_sim::{ClientLoad, Fault, Flavor, Placement, SimBuilder, Strategy, simulate};

/// Roll a simulated cluster one safe step at a time, in virtual time.
#[derive(Parser, Debug)]
#[command(name = "simulate", version)]
pub struct Args {
    /// pegasus or openmldb.
    #[arg(long, default_value = "pegasus")]
    flavor: Flavor,
    /// naive (restart and wait), ha (the high-availability steps), waves (parallel waves
    /// proven safe from placement), auto (the same: waves where placement proves them safe,
    /// one at a time otherwise, each wave's reason in the plan) or script (the upstream tools
    /// as they behave: pegasus_rolling_update.sh, or openmldb_ops.py with start.sh).
    #[arg(long, default_value = "ha")]
    strategy: Strategy,
    /// Data nodes (replica servers or tablets).
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Coordinators (default 3 metas for pegasus, 2 nameservers for openmldb).
    #[arg(long)]
    coordinators: Option<usize>,
    /// Racks; data node i sits in rack i mod R.
    #[arg(long, default_value_t = 1)]
    racks: usize,
    /// random or rack-aware.
    #[arg(long, default_value = "random")]
    placement: Placement,
    /// Partitions.
    #[arg(long, default_value_t = 64)]
    partitions: usize,
    /// Replicas per partition.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Tables the partitions are split into (named t1, t2, ...).
    #[arg(long, default_value_t = 1)]
    tables: usize,
    /// Accept that this table is unavailable while a node holding its only replicas
    /// restarts (OpenMLDB's --allow_single_replica; the only way to roll a Pegasus table with
    /// fewer than 3 replicas), repeatable. Without it, OpenMLDB single-replica partitions get
    /// a temporary replica on another tablet.
    #[arg(
        long = "accept-unavailable",
        value_name = "TABLE",
        alias = "allow-single-replica"
    )]
    accept_unavailable: Vec<String>,
    /// Never add temporary replicas (single-replica partitions then need --accept-unavailable).
    #[arg(long)]
    no_temporary_replicas: bool,
    /// The most temporary replicas one data node holds at once (each costs it one partition's
    /// memory).
    #[arg(long, value_name = "N")]
    temporary_replica_limit: Option<usize>,
    /// Client requests per virtual second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// The seed; the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A fault to inject, repeatable: crash:node=2,at=120 | slow-start:node=2,extra=60 |
    /// fail-start:node=2 | stuck-drain:node=2 | leader-failover:at=300 | transient:p=0.05 |
    /// partition:node=2,at=100,for=40 | orchestrator-crash:step=5
    #[arg(long = "fault")]
    faults: Vec<Fault>,
    /// What to do when a wait passes its deadline: abort (restore knobs and stop), pause (halt,
    /// keeping state for a resume) or skip (leave a node out, only before it is stopped).
    #[arg(long, default_value = "abort")]
    on_timeout: OnTimeoutArg,
    /// Halt after this many nodes (a canary); knobs are restored at the halt.
    #[arg(long)]
    canary: Option<usize>,
    /// Print the plan and stop, touching nothing.
    #[arg(long)]
    dry_run: bool,
    /// Turn the simulator's wake hints off: waits then end only when the engine polls, as
    /// against a cluster that offers no watch, and lower_bound_secs shows what that costs.
    #[arg(long)]
    no_wake_hints: bool,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// `--on-timeout` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OnTimeoutArg {
    Abort,
    Pause,
    Skip,
}

impl From<OnTimeoutArg> for OnTimeout {
    fn from(a: OnTimeoutArg) -> Self {
        match a {
            OnTimeoutArg::Abort => OnTimeout::Abort,
            OnTimeoutArg::Pause => OnTimeout::Pause,
            OnTimeoutArg::Skip => OnTimeout::Skip,
        }
    }
}

/// Wall-clock time, for the report's `wall_ms` only: the simulation itself runs on tokio's
/// paused clock.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// Log timestamps in the simulation's virtual seconds.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(tokio::time::Instant::now);
        write!(w, "{:>10.3}s", start.elapsed().as_secs_f64())
    }
}

/// Shows progress: a bar on a terminal, per-node lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Observer for Progress {
    fn on_event(&self, event: &Event) {
        if self.quiet {
            return;
        }
        let line = match event {
            Event::PlanReady { plan } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(plan.node_count() as u64);
                }
                let mut text = format!(
                    "plan: {} nodes in {} waves",
                    plan.node_count(),
                    plan.waves.len()
                );
                for w in &plan.warnings {
                    text.push_str(&format!("\nwarning: {w}"));
                }
                Some(text)
            }
            Event::Resumed {
                finished,
                in_flight,
                ..
            } => Some(format!(
                "orchestrator restarted: resuming, {} node(s) already done, {} in progress",
                finished.len(),
                in_flight.len()
            )),
            Event::KnobChanged { name, from, to } => Some(format!("knob {name}: {from} -> {to}")),
            Event::KnobRestored { name, value } => Some(format!("knob {name} restored to {value}")),
            Event::PhaseFinished {
                node: Some(node),
                phase: Phase::WaitReady,
                took,
            } => Some(format!("{node}: back after {:.1}s", took.as_secs_f64())),
            Event::NodeDone { node } => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    bar.set_message(node.to_string());
                }
                Some(format!("{node}: done"))
            }
            Event::NodeSkipped { node, reason } => Some(format!("{node}: skipped: {reason}")),
            Event::Halted { reason } => Some(format!("halted: {reason}")),
            Event::Failed { error, .. } => Some(format!("failed: {error}")),
            Event::NodeReverted { node } => Some(format!("{node}: reverted")),
            Event::TemporaryReplicaAdded { replica } => Some(format!("adding the {replica}")),
            Event::TemporaryReplicaRemoved { replica } => Some(format!("removed the {replica}")),
            Event::RollbackStarted { nodes } => Some(format!(
                "rolling back the failed wave: {}",
                nodes
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => None,
        };
        if let Some(line) = line {
            match &self.bar {
                Some(bar) => bar.println(line),
                None => println!("{line}"),
            }
        }
    }
}

/// The `simulate` example: its flags from the process's arguments.
pub fn main() -> ExitCode {
    run(Args::parse())
}

/// `rollout simulate`: the flags of docs/contracts.md.
pub fn command() -> clap::Command {
    Args::command()
        .name("simulate")
        .version(None::<&str>)
        .about("Roll a simulated Pegasus or OpenMLDB cluster in virtual time and report what its clients saw")
}

/// Runs `rollout simulate` from the matches of [`command`].
pub fn run_matches(matches: &clap::ArgMatches) -> ExitCode {
    match Args::from_arg_matches(matches) {
        Ok(args) => run(args),
        Err(e) => e.exit(),
    }
}

fn run(args: Args) -> ExitCode {
    // The engine's spans and events (each phase with its node) on stderr, with RUST_LOG,
    // for example RUST_LOG=rollout_core=debug.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_timer(VirtualTime)
        .init();
    let mut builder = SimBuilder::new(args.flavor);
    builder
        .seed(args.seed)
        .data_nodes(args.nodes)
        .racks(args.racks)
        .placement(args.placement)
        .partitions(args.partitions)
        .replicas(args.replicas)
        .tables(args.tables)
        .load(ClientLoad::at_rate(args.rate))
        .wake_hints(!args.no_wake_hints);
    if let Some(c) = args.coordinators {
        builder.coordinators(c);
    }
    for f in &args.faults {
        builder.fault(f.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime always builds");
    let mut spec = args.strategy.spec(Change::Restart, args.nodes);
    let mut policy = spec.policy.clone().on_timeout(args.on_timeout.into());
    policy = policy
        .accept_unavailable(args.accept_unavailable.iter().cloned())
        .temporary_replicas(!args.no_temporary_replicas);
    if let Some(n) = args.temporary_replica_limit {
        policy = policy.temporary_replica_limit(n);
    }
    if let Some(n) = args.canary {
        policy = policy.canary(n);
    }
    if let Err(e) = policy.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    spec = spec.policy(policy);
    let wall = wall_clock();
    let result = runtime.block_on(async {
        if args.dry_run {
            let sim = builder.build()?;
            let plan = rollout_core::plan(&sim, &spec)
                .await
                .map_err(|e| anyhow::anyhow!(rollout_core::chain(&e)))?;
            if args.json {
                println!("{}", serde_json::to_string(&plan)?);
            } else {
                print!("{plan}");
            }
            return Ok(None);
        }
        let bar = (!args.json && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} nodes {msg}")
                    .expect("the template is valid"),
            );
            bar
        });
        let progress = Progress {
            bar,
            quiet: args.json,
        };
        let (_, report) = simulate(&builder, args.strategy, &spec, &progress).await?;
        if let Some(bar) = &progress.bar {
            bar.finish_and_clear();
        }
        anyhow::Ok(Some(report))
    });
    let mut report = match result {
        Ok(Some(r)) => r,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    report.wall_ms = u64::try_from(wall.elapsed().as_millis()).unwrap_or(u64::MAX);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("reports always serialize")
        );
    } else {
        let r = &report;
        println!();
        println!(
            "{} {} rollout of {} nodes ({} data, {} partitions x {} replicas), seed {}: {}",
            r.flavor,
            r.strategy,
            r.nodes,
            r.data_nodes,
            r.partitions,
            r.replicas,
            r.seed,
            r.outcome
        );
        if let Some(e) = &r.error {
            println!("  error: {e}");
        }
        println!(
            "  time: {:.0} virtual s (lower bound {:.0} s; physical bound {:.0} s, {:.2}x) in {} waves, {} ms wall",
            r.virtual_secs,
            r.lower_bound_secs,
            r.physical_bound_secs,
            r.virtual_secs / r.physical_bound_secs.max(f64::MIN_POSITIVE),
            r.waves,
            r.wall_ms
        );
        println!(
            "  clients: {} requests ok, {} failed; {} writes acked, {} lost; {:.1} partition-seconds unavailable",
            r.requests_ok,
            r.requests_failed,
            r.writes_acked,
            r.writes_lost,
            r.unavailable_partition_secs
        );
        println!(
            "  latency (virtual, retries included): p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            r.latency_p50_ms, r.latency_p99_ms, r.latency_p999_ms, r.latency_max_ms
        );
        if r.skipped > 0 {
            println!("  skipped: {}", r.skipped_nodes.join(", "));
        }
        if r.replicas_added > 0 || r.extra_replicas > 0 {
            println!(
                "  temporary replicas: {} added, {} left at the end",
                r.replicas_added, r.extra_replicas
            );
        }
        if !r.unavailable_tables.is_empty() {
            let tables: Vec<String> = r
                .unavailable_tables
                .iter()
                .map(|(t, secs)| format!("{t} {secs:.1}"))
                .collect();
            println!(
                "  tables unavailable (partition-seconds): {}",
                tables.join(", ")
            );
        }
        println!(
            "  invariants: max {} replica(s) of a partition down, {} restarts (max {} per node), knobs restored: {}",
            r.max_replicas_down, r.restarts, r.max_restarts_per_node, r.knobs_restored
        );
    }
    // 0 completed, 1 aborted, 3 halted (the operator decides); 2 is bad input (above, and
    // what the engine refused before touching anything).
    if report.refused {
        // Refused before anything was touched: bad input.
        return ExitCode::from(2);
    }
    match report.outcome.as_str() {
        "completed" => ExitCode::SUCCESS,
        "halted" => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}
