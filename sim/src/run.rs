//! Strategies and the report of one simulated rollout (the `simulate` contract).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rollout_core::{Change, Event, Observer, Outcome, Policy, Procedure, Run, Spec, chain, roll};
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
}

impl Strategy {
    /// `naive`, `ha` or `waves`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Ha => "ha",
            Self::Waves => "waves",
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
            Self::Ha => Policy::default(),
            Self::Waves => Policy::default().max_parallel(data_nodes.max(1)),
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
            other => Err(format!(
                "unknown strategy {other:?}: expected naive, ha or waves"
            )),
        }
    }
}

/// The report of one simulated rollout: exactly the JSON fields of the `simulate` contract
/// (DESIGN.md section 7), flat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// `pegasus` or `openmldb`.
    pub flavor: String,
    /// `naive`, `ha` or `waves`.
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
    /// Whether the rollout completed.
    pub completed: bool,
    /// The error with its chain, when it did not complete.
    pub error: Option<String>,
    /// Virtual seconds from the first step to the last.
    pub virtual_secs: f64,
    /// The roll time had every wait ended the instant its condition first held.
    pub lower_bound_secs: f64,
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
    /// Whether every knob ended at its original value.
    pub knobs_restored: bool,
    /// Orchestrator-initiated restarts, all nodes.
    pub restarts: u64,
    /// The most restarts of any one node.
    pub max_restarts_per_node: u64,
    /// Journal records written (added to the contract: the range of `orchestrator-crash`
    /// steps that land inside the rollout).
    pub journal_records: usize,
    /// Whether the orchestrator crashed and a new one resumed from the journal.
    pub resumed: bool,
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
    let crash_at = builder.get_faults().iter().find_map(|f| match f {
        Fault::OrchestratorCrash { step } => Some(*step),
        _ => None,
    });
    let journal = CrashJournal::new(crash_at.unwrap_or(usize::MAX));
    let waves = Mutex::new(None::<usize>);
    let watch = |e: &Event| {
        if let Event::PlanReady { plan } = e {
            let mut w = waves.lock().unwrap_or_else(|e| e.into_inner());
            w.get_or_insert(plan.waves.len());
        }
        observer.on_event(e);
    };
    let t0 = Instant::now();
    let mut result = journal
        .race(roll(&sim, spec, Run::new(&journal).observe(&watch)))
        .await;
    let resumed = result.is_none();
    if resumed {
        // The orchestrator died; a new one resumes from the journal.
        journal.disarm();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let run = Run::new(&journal).observe(&watch);
        result = Some(roll(&sim, spec, run).await);
    }
    let result = result.expect("set above");
    let virtual_secs = t0.elapsed().as_secs_f64();
    // Let requests in flight finish before reading the counters.
    tokio::time::sleep(builder_timeout()).await;
    let truth = sim.truth();
    let (outcome, error) = match &result {
        Ok(r) => match &r.outcome {
            Outcome::Completed => ("completed", None),
            Outcome::Halted(reason) => ("halted", Some(reason.clone())),
        },
        Err(e) => ("aborted", Some(chain(e))),
    };
    let m = &truth.monitor;
    let slack = Duration::from_micros(m.slack_us).as_secs_f64();
    let report = SimReport {
        flavor: builder.get_flavor().to_string(),
        strategy: strategy.to_string(),
        seed: builder.get_seed(),
        nodes: sim.node_count(),
        data_nodes: builder.get_data_nodes(),
        partitions: builder.get_partitions(),
        replicas: builder.get_replicas(),
        outcome: outcome.into(),
        completed: outcome == "completed",
        error,
        virtual_secs,
        lower_bound_secs: (virtual_secs - slack).max(0.0),
        wall_ms: 0,
        waves: waves.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(0),
        requests_ok: m.requests_ok,
        requests_failed: m.requests_failed,
        unavailable_partition_secs: m.unavailable_us as f64 / 1e6,
        writes_acked: m.writes_acked,
        writes_lost: m.writes_lost,
        max_replicas_down: m.max_replicas_down,
        knobs_restored: truth.knobs_restored,
        restarts: truth.restarts.values().map(|&r| u64::from(r)).sum(),
        max_restarts_per_node: truth
            .restarts
            .values()
            .map(|&r| u64::from(r))
            .max()
            .unwrap_or(0),
        journal_records: journal.entries().len(),
        resumed,
    };
    Ok((sim, report))
}

fn builder_timeout() -> Duration {
    crate::config::ClientLoad::default().timeout
}
