//! Strategies and the report of one simulated rollout (the `simulate` contract).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rollout_core::{
    Change, Event, NodeId, Observer, Outcome, Policy, Procedure, Run, Spec, chain, roll,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::builder::{BuildError, SimBuilder};
use crate::cluster::SimCluster;
use crate::crash::CrashJournal;
use crate::fault::Fault;

/// How the simulated rollout is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The seeds' simplified steps: restart each node and wait until healthy.
    Naive,
    /// The seeds' high-availability steps through the core engine, one node at a time.
    Ha,
    /// The high-availability steps in parallel waves proven safe from live placement.
    Waves,
    /// What an operator picks without knowing the placement: waves where live placement
    /// proves them safe, one node at a time otherwise; the plan says which and why for each
    /// wave ([`Wave::why`](rollout_core::plan::Wave::why)). Runs as [`Strategy::Waves`].
    Auto,
    /// The upstream tools as they behave, not through the core engine:
    /// `pegasus_rolling_update.sh`, or `openmldb_ops.py` with `start.sh` (see the crate's
    /// `script` module docs).
    Script,
}

impl Strategy {
    /// `naive`, `ha`, `waves`, `auto` or `script`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Ha => "ha",
            Self::Waves => "waves",
            Self::Auto => "auto",
            Self::Script => "script",
        }
    }

    /// The spec of a rollout of `change` with this strategy on a cluster of `data_nodes`.
    pub fn spec(self, change: Change, data_nodes: usize) -> Spec {
        Spec::new(change).policy(self.policy(data_nodes))
    }

    /// The core policy this strategy runs with on a cluster of `data_nodes`.
    pub fn policy(self, data_nodes: usize) -> Policy {
        match self {
            Self::Naive => Policy::default().procedure(Procedure::Simple),
            Self::Ha | Self::Script => Policy::default(),
            Self::Waves | Self::Auto => Policy::default().max_parallel(data_nodes.max(1)),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "naive" => Ok(Self::Naive),
            "ha" => Ok(Self::Ha),
            "waves" => Ok(Self::Waves),
            "auto" => Ok(Self::Auto),
            "script" => Ok(Self::Script),
            other => Err(format!(
                "unknown strategy {other:?}: expected naive, ha, waves, auto or script"
            )),
        }
    }
}

/// The report of one simulated rollout: exactly the JSON fields of the `simulate` contract
/// (docs/contracts.md), flat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// `pegasus` or `openmldb`.
    pub flavor: String,
    /// `naive`, `ha`, `waves`, `auto` or `script`.
    pub strategy: String,
    /// The seed.
    pub seed: u64,
    /// Every node, of every role.
    pub nodes: usize,
    /// Data nodes.
    pub data_nodes: usize,
    /// Partitions.
    pub partitions: usize,
    /// Replicas per partition.
    pub replicas: usize,
    /// `completed`, `halted` or `aborted`.
    pub outcome: String,
    /// Whether the rollout completed: every selected node rolled, none skipped.
    pub completed: bool,
    /// Whether the engine refused the input before touching anything (a policy that
    /// contradicts itself, an empty or unknown selection, a change the backend cannot apply,
    /// a node that cannot be made safe). Not part of the JSON contract.
    #[serde(skip)]
    pub refused: bool,
    /// The error with its chain, when it did not complete.
    pub error: Option<String>,
    /// Virtual seconds from the first step to the last.
    pub virtual_secs: f64,
    /// The roll time had every wait ended the instant its condition first held:
    /// `virtual_secs` less the engine's idle time, as the world measured it (see
    /// [`SimBuilder::wake_hints`]).
    pub lower_bound_secs: f64,
    /// What no procedure can avoid on this cluster for the plan's waves: per wave the slowest
    /// node's stop, start and catch-up, and the seed's settle after the coordinator that led
    /// ([`SimCluster::physical_bound`]). `virtual_secs / physical_bound_secs` says how close
    /// to the limit the roll came; a completed roll never takes less.
    #[serde(default)]
    pub physical_bound_secs: f64,
    /// Wall-clock milliseconds; the caller fills it in.
    pub wall_ms: u64,
    /// Waves in the plan.
    pub waves: usize,
    /// Client requests served.
    pub requests_ok: u64,
    /// Client requests that failed (timed out after retries).
    pub requests_failed: u64,
    /// Partition-seconds during which a partition could not take writes.
    pub unavailable_partition_secs: f64,
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Acknowledged writes lost.
    pub writes_lost: u64,
    /// The most replicas of one partition down at once.
    pub max_replicas_down: usize,
    /// The same, counting only the replicas on nodes the rollout had drained or stopped (a
    /// crash outside the wave does not count): at most `max_unavailable_per_partition` when
    /// the rollout keeps its rule.
    #[serde(default)]
    pub max_replicas_down_by_rollout: usize,
    /// Whether every knob ended at its original value, and (for the core engine's strategies)
    /// the rollout restored every knob it had saved: a coordinator failover that resets them
    /// does not count.
    pub knobs_restored: bool,
    /// Orchestrator-initiated restarts, all nodes.
    pub restarts: u64,
    /// The most restarts of any one node.
    pub max_restarts_per_node: u64,
    /// Nodes a skip policy left out (added to the contract with `skipped_nodes`).
    pub skipped: usize,
    /// The nodes left out, by address.
    pub skipped_nodes: Vec<String>,
    /// Median virtual latency of served requests, milliseconds (retries included).
    pub latency_p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub latency_p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub latency_p999_ms: f64,
    /// The slowest served request, milliseconds.
    pub latency_max_ms: f64,
    /// Journal records written (added to the contract: the range of `orchestrator-crash`
    /// steps that land inside the rollout).
    pub journal_records: usize,
    /// Whether the orchestrator crashed and a new one resumed from the journal.
    pub resumed: bool,
    /// Tables.
    #[serde(default)]
    pub tables: usize,
    /// Partition-seconds each table could not take writes, for the tables that were
    /// unavailable at some point (as `unavailable_partition_secs`, by table).
    #[serde(default)]
    pub unavailable_tables: BTreeMap<String, f64>,
    /// Temporary replicas added during the run (completed AddReplica ops).
    #[serde(default)]
    pub replicas_added: u64,
    /// Replicas beyond what their partition wants at the end: temporary replicas the run
    /// left behind (0 unless a failure kept one as a partition's only copy).
    #[serde(default)]
    pub extra_replicas: u64,
}

/// Runs one rollout of `spec` on a cluster from `builder`, in the current tokio runtime (use a
/// paused clock: a simulated hour then takes milliseconds). `strategy` names the run in the
/// report; [`Strategy::spec`] builds the matching spec.
///
/// An `orchestrator-crash` fault drops the rollout's future after that many journal records,
/// like a killed process, and starts it again from the journal 10 virtual seconds later.
///
/// # Errors
/// When the cluster cannot be built.
pub async fn simulate(
    builder: &SimBuilder,
    strategy: Strategy,
    spec: &Spec,
    observer: &dyn Observer,
) -> Result<(SimCluster, SimReport), BuildError> {
    let sim = builder.build()?;
    if strategy == Strategy::Script {
        return Ok(script_run(builder, sim, spec).await);
    }
    let crash_at = builder.get_faults().iter().find_map(|f| match f {
        Fault::OrchestratorCrash { step } => Some(*step),
        _ => None,
    });
    let journal = CrashJournal::new(crash_at.unwrap_or(usize::MAX));
    let waves = Mutex::new(None::<Vec<Vec<NodeId>>>);
    let watch = |e: &Event| {
        if let Event::PlanReady { plan } = e {
            let mut w = waves.lock().unwrap_or_else(|e| e.into_inner());
            w.get_or_insert_with(|| plan.waves.iter().map(|w| w.nodes.clone()).collect());
        }
        observer.on_event(e);
    };
    let t0 = Instant::now();
    let mut result = journal
        .race(roll(&sim, spec, Run::new(&journal).observe(&watch)))
        .await;
    let resumed = result.is_none();
    if resumed {
        // The orchestrator died; a new one resumes from the journal 10 s later, time the
        // lower bound counts as idle.
        journal.disarm();
        let died = sim.started().elapsed();
        tokio::time::sleep(Duration::from_secs(10)).await;
        sim.note_idle(died, sim.started().elapsed());
        let run = Run::new(&journal).observe(&watch);
        result = Some(roll(&sim, spec, run).await);
    }
    let result = result.expect("set above");
    let virtual_secs = t0.elapsed().as_secs_f64();
    // Let requests in flight finish before reading the counters.
    tokio::time::sleep(builder.get_load().timeout).await;
    let skipped: Vec<String> = match &result {
        Ok(r) => r.skipped.iter().map(|(n, _)| n.to_string()).collect(),
        Err(_) => Vec::new(),
    };
    let (outcome, error) = match &result {
        Ok(r) => match &r.outcome {
            Outcome::Completed if r.skipped.is_empty() => ("completed", None),
            Outcome::Completed => (
                "halted",
                Some(format!(
                    "{} nodes were skipped: {}",
                    r.skipped.len(),
                    r.skipped
                        .iter()
                        .map(|(n, why)| format!("{n} ({why})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            ),
            Outcome::Halted(reason) => ("halted", Some(reason.clone())),
        },
        Err(e) => ("aborted", Some(chain(e))),
    };
    let refused = result
        .as_ref()
        .err()
        .is_some_and(rollout_core::Error::is_refusal);
    // Every knob the rollout saved it also restored (a new coordinator leader starting from
    // its config would put them back without the rollout; that must not count).
    let restored_by_rollout = rollout_core::journal::Resume::from_entries(&journal.entries())
        .knobs
        .is_empty();
    let mut r = report(
        builder,
        strategy,
        &sim,
        Measured {
            restored_by_rollout,
            outcome,
            error,
            virtual_secs,
            plan: waves
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default(),
            skipped,
            journal_records: journal.entries().len(),
            resumed,
        },
    );
    r.refused = refused;
    Ok((sim.clone(), r))
}

/// Runs the upstream tools' procedure (no journal: they keep none).
async fn script_run(builder: &SimBuilder, sim: SimCluster, spec: &Spec) -> (SimCluster, SimReport) {
    let t0 = Instant::now();
    let result = crate::script::run(&sim, spec).await;
    let virtual_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(builder.get_load().timeout).await;
    let (outcome, error) = match result {
        Ok(()) => ("completed", None),
        Err(e) => ("aborted", Some(e)),
    };
    let report = report(
        builder,
        Strategy::Script,
        &sim,
        Measured {
            // The upstream tools keep no journal: only the cluster's reading says.
            restored_by_rollout: true,
            outcome,
            error,
            virtual_secs,
            // The upstream tools restart every node, one at a time.
            plan: sim.node_ids().into_iter().map(|id| vec![id]).collect(),
            skipped: Vec::new(),
            journal_records: 0,
            resumed: false,
        },
    );
    (sim, report)
}

/// The report of a rollout that another driver ran on `sim` (an emulator serving the world
/// over a real protocol): `result` is the engine's, `virtual_secs` the cluster's time the
/// roll took, `lower_bound_secs` the bound of a pure simulation of the same shape and seed,
/// reported as it is (the emulator's probes are not the world's, so the emulated run's own
/// idle time cannot be measured; a roll faster than that bound shows the two procedures
/// differ), `plan` the plan's waves (each a list of node ids), `journal` what the journal
/// holds.
pub fn report_of(
    builder: &SimBuilder,
    sim: &SimCluster,
    result: &Result<rollout_core::Report, String>,
    (virtual_secs, lower_bound_secs): (f64, f64),
    plan: &[Vec<NodeId>],
    journal: &[rollout_core::journal::Entry],
) -> SimReport {
    let (outcome, error, skipped) = match result {
        Ok(r) => match &r.outcome {
            Outcome::Completed if r.skipped.is_empty() => ("completed", None, Vec::new()),
            Outcome::Completed => (
                "halted",
                Some(format!("{} nodes were skipped", r.skipped.len())),
                r.skipped.iter().map(|(n, _)| n.to_string()).collect(),
            ),
            Outcome::Halted(reason) => ("halted", Some(reason.clone()), Vec::new()),
        },
        Err(e) => ("aborted", Some(e.clone()), Vec::new()),
    };
    let mut r = report(
        builder,
        Strategy::Ha,
        sim,
        Measured {
            restored_by_rollout: rollout_core::journal::Resume::from_entries(journal)
                .knobs
                .is_empty(),
            outcome,
            error,
            virtual_secs,
            plan: plan.to_vec(),
            skipped,
            journal_records: journal.len(),
            resumed: false,
        },
    );
    r.lower_bound_secs = lower_bound_secs;
    r
}

/// What a strategy's driver measured itself; [`report`] adds the world's truth.
pub(crate) struct Measured {
    /// Whether the driver restored every knob it changed (the cluster's own reading is
    /// checked besides).
    pub(crate) restored_by_rollout: bool,
    pub(crate) outcome: &'static str,
    pub(crate) error: Option<String>,
    pub(crate) virtual_secs: f64,
    /// The plan's waves, each a list of node ids.
    pub(crate) plan: Vec<Vec<NodeId>>,
    pub(crate) skipped: Vec<String>,
    pub(crate) journal_records: usize,
    pub(crate) resumed: bool,
}

/// The report of a finished run: the driver's measurements and the world's truth.
pub(crate) fn report(
    builder: &SimBuilder,
    strategy: Strategy,
    sim: &SimCluster,
    m: Measured,
) -> SimReport {
    let truth = sim.truth();
    let Measured {
        restored_by_rollout,
        outcome,
        error,
        virtual_secs,
        plan,
        skipped,
        journal_records,
        resumed,
    } = m;
    let idle = truth.idle.as_secs_f64();
    let ms = |v: u64| v as f64 / 1000.0;
    let m = &truth.monitor;
    SimReport {
        flavor: builder.get_flavor().to_string(),
        strategy: strategy.to_string(),
        seed: builder.get_seed(),
        nodes: sim.node_count(),
        data_nodes: builder.get_data_nodes(),
        partitions: builder.get_partitions(),
        replicas: builder.get_replicas(),
        outcome: outcome.into(),
        completed: outcome == "completed",
        refused: false,
        error,
        virtual_secs,
        lower_bound_secs: (virtual_secs - idle).max(0.0),
        physical_bound_secs: sim.physical_bound(&plan).as_secs_f64(),
        wall_ms: 0,
        waves: plan.len(),
        requests_ok: m.requests_ok,
        requests_failed: m.requests_failed,
        unavailable_partition_secs: m.unavailable_us as f64 / 1e6,
        writes_acked: m.writes_acked,
        writes_lost: m.writes_lost,
        max_replicas_down: m.max_replicas_down,
        max_replicas_down_by_rollout: m.max_replicas_down_by_rollout,
        knobs_restored: truth.knobs_restored && restored_by_rollout,
        restarts: truth.restarts.values().map(|&r| u64::from(r)).sum(),
        max_restarts_per_node: truth
            .restarts
            .values()
            .map(|&r| u64::from(r))
            .max()
            .unwrap_or(0),
        skipped: skipped.len(),
        skipped_nodes: skipped,
        latency_p50_ms: ms(m.latency_p50_us),
        latency_p99_ms: ms(m.latency_p99_us),
        latency_p999_ms: ms(m.latency_p999_us),
        latency_max_ms: ms(m.latency_max_us),
        journal_records,
        resumed,
        tables: builder.get_tables(),
        unavailable_tables: m
            .unavailable_table_us
            .iter()
            .enumerate()
            .filter(|(_, us)| **us > 0)
            .map(|(t, &us)| (format!("t{}", t + 1), us as f64 / 1e6))
            .collect(),
        replicas_added: m.replicas_added,
        extra_replicas: m.extra_replicas,
    }
}
