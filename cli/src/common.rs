//! What the commands share: a process handle that refuses to act (for a plan without a
//! cluster file), the cluster file and the run on real hosts, the policy in an emulator's
//! wall time, progress lines on stderr, the plan printer, and how a run ends ([`Exit`]).

use std::sync::Mutex;

use std::time::Duration;

use rollout_core::{
    ApplyRecord, Change, Event, Node, NodeId, NodeStatus, Observer, Policy, Spec, chain, plan,
    policy::Deadlines,
};

/// A process this binary cannot control (no `--cluster` file): planning works, any action
/// says why it cannot.
#[derive(Debug)]
pub(crate) struct Unmanaged(pub(crate) NodeId);

#[derive(Debug, thiserror::Error)]
#[error(
    "{0}: without --cluster FILE this binary does not know how to reach the node's host; --plan only"
)]
pub(crate) struct NoProcessControl(NodeId);

impl Node for Unmanaged {
    type Error = NoProcessControl;
    fn id(&self) -> &NodeId {
        &self.0
    }
    async fn stop(&self) -> Result<(), NoProcessControl> {
        Err(NoProcessControl(self.0.clone()))
    }
    async fn start(&self) -> Result<(), NoProcessControl> {
        Err(NoProcessControl(self.0.clone()))
    }
    async fn status(&self) -> Result<NodeStatus, NoProcessControl> {
        Err(NoProcessControl(self.0.clone()))
    }
    async fn apply(&self, _: &Change) -> Result<ApplyRecord, NoProcessControl> {
        Err(NoProcessControl(self.0.clone()))
    }
    async fn revert(&self, _: &ApplyRecord) -> Result<(), NoProcessControl> {
        Err(NoProcessControl(self.0.clone()))
    }
    async fn is_applied(&self, _: &Change) -> Result<bool, NoProcessControl> {
        Ok(false)
    }
}

/// The policy with every wait and poll in wall time: the cluster's seconds over `scale`.
pub(crate) fn policy(scale: u32) -> Policy {
    let s = scale.max(1);
    let d = Deadlines::default();
    let mut scaled = Deadlines::all(d.gate / s);
    scaled.drain = d.drain / s;
    scaled.quiesce = d.quiesce / s;
    scaled.stop = d.stop / s;
    scaled.ready = d.ready / s;
    scaled.rejoin = d.rejoin / s;
    scaled.healthy = d.healthy / s;
    scaled.temporary = d.temporary / s;
    Policy::default().deadlines(scaled).poll(
        (Duration::from_millis(100) / s).max(Duration::from_millis(2)),
        (Duration::from_secs(1) / s).max(Duration::from_millis(5)),
    )
}

/// Prints progress on stderr (stdout stays for the report): the plan's size, each wave,
/// each phase of each node with how long it took, and every new reason a wait gives, each
/// line stamped with the wall seconds since the command started; on a terminal, a bar of
/// the nodes done under those lines.
pub(crate) struct Progress {
    pub(crate) waves: Mutex<Vec<Vec<rollout_core::NodeId>>>,
    pub(crate) started: std::time::Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Progress from now.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn new() -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} nodes {msg}")
                    .expect("the template is valid"),
            );
            bar
        });
        Self {
            waves: Mutex::new(Vec::new()),
            started: std::time::Instant::now(),
            bar,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn on_event(&self, e: &Event) {
        if let Event::PlanReady { plan } = e {
            *self.waves.lock().unwrap_or_else(|e| e.into_inner()) =
                plan.waves.iter().map(|w| w.nodes.clone()).collect();
        }
        let target = |n: &Option<rollout_core::NodeId>| {
            n.as_ref()
                .map_or_else(|| "cluster".to_string(), ToString::to_string)
        };
        let line = match e {
            Event::PlanReady { plan } => Some(format!(
                "plan: {} nodes in {} waves",
                plan.node_count(),
                plan.waves.len()
            )),
            Event::WaveStarted { index, nodes } => Some(format!(
                "wave {}: {}",
                index.saturating_add(1),
                nodes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Event::KnobChanged { name, from, to } => Some(format!("knob {name}: {from} -> {to}")),
            Event::KnobRestored { name, value } => Some(format!("knob {name} restored to {value}")),
            Event::PhaseFinished { node, phase, took } => Some(format!(
                "{}: {phase} done in {:.1}s",
                target(node),
                took.as_secs_f64()
            )),
            Event::Waiting {
                node,
                phase,
                reason,
            } => Some(format!("{}: {phase} waits: {reason}", target(node))),
            Event::NodeDone { node } => Some(format!("{node}: done")),
            Event::NodeSkipped { node, reason } => Some(format!("{node}: skipped: {reason}")),
            Event::Failed { error, .. } => Some(format!("failed: {error}")),
            Event::Halted { reason } => Some(format!("halted: {reason}")),
            _ => None,
        };
        if let Some(bar) = &self.bar {
            match e {
                Event::PlanReady { plan } => bar.set_length(plan.node_count() as u64),
                Event::NodeDone { .. } | Event::NodeSkipped { .. } => bar.inc(1),
                Event::WaveStarted { nodes, .. } => bar.set_message(
                    nodes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                _ => {}
            }
        }
        if let Some(l) = line {
            let l = format!("[{:>7.1}s] {l}", self.started.elapsed().as_secs_f64());
            match &self.bar {
                Some(bar) => bar.suspend(|| eprintln!("{l}")),
                None => eprintln!("{l}"),
            }
        }
    }
}

/// Awaits `connect`, saying on stderr every [`CONNECT_NOTICE`] that it still runs: a backend
/// connecting to a cluster without a leader (an election under way) waits for one, bounded
/// by its timing, and the operator sees why nothing happens yet.
pub(crate) async fn connecting<T>(what: &str, connect: impl std::future::Future<Output = T>) -> T {
    noticed(connect, |waited| {
        eprintln!(
            "connecting to {what}: {} s so far; no leader has answered yet (an election, a \
             restarting server or a slow ZooKeeper); the wait is bounded",
            waited.as_secs()
        );
    })
    .await
}

/// Awaits `work`, calling `notice` with the time waited every [`CONNECT_NOTICE`] until it
/// ends.
async fn noticed<T>(
    work: impl std::future::Future<Output = T>,
    mut notice: impl FnMut(Duration),
) -> T {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(started + CONNECT_NOTICE, CONNECT_NOTICE);
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => notice(started.elapsed()),
        }
    }
}

/// How often [`connecting`] says it still waits.
const CONNECT_NOTICE: Duration = Duration::from_secs(5);

/// Prints the plan of `spec` (as JSON with `json`), changing nothing.
pub(crate) async fn print_plan<C: rollout_core::Cluster>(
    cluster: &C,
    spec: &Spec,
    json: bool,
) -> anyhow::Result<Exit> {
    let p = plan(cluster, spec).await.map_err(engine_error)?;
    if json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        print!("{p}");
    }
    Ok(Exit::Completed)
}

/// How a command ended, as its exit code says: 0 completed, 1 aborted or failed, 3 halted or
/// paused (the operator decides what next); bad input ([`BadInput`]) is 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything selected was done (or there was nothing to do): 0.
    Completed,
    /// The roll aborted or a call failed: 1.
    Failed,
    /// The roll halted (a canary, a pause, a skipped node) and waits for the operator: 3.
    Halted,
}

impl Exit {
    /// The exit of a finished roll: halted or with nodes skipped is [`Exit::Halted`].
    pub(crate) fn of(report: &rollout_core::Report) -> Self {
        match report.outcome {
            rollout_core::Outcome::Completed if report.skipped.is_empty() => Self::Completed,
            _ => Self::Halted,
        }
    }

    /// The exit of a simulated or emulated report's `outcome`.
    pub(crate) fn of_outcome(outcome: &str) -> Self {
        match outcome {
            "completed" => Self::Completed,
            "halted" => Self::Halted,
            _ => Self::Failed,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Completed => Self::SUCCESS,
            Exit::Failed => Self::from(1),
            Exit::Halted => Self::from(3),
        }
    }
}

/// Input the command refuses before touching anything (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The engine's error as the command reports it: what the engine refused before touching
/// anything (a policy that contradicts itself, an empty or unknown selection, a change the
/// backend cannot apply, or a change a node's host refused while the plan was read, such as
/// an edit of a file it does not have) is [`BadInput`]; the rest fails the run.
pub(crate) fn engine_error<E: std::error::Error + 'static>(
    e: rollout_core::Error<E>,
) -> anyhow::Error {
    if e.is_refusal() || refused_while_planning(&e) {
        BadInput(chain(&e)).into()
    } else {
        anyhow::anyhow!(chain(&e))
    }
}

/// Whether `e` is a node's refusal (a [`rollout_process::ProcessError::is_refusal`] among its
/// sources) while the plan was read, when nothing has been touched yet.
fn refused_while_planning<E: std::error::Error + 'static>(e: &rollout_core::Error<E>) -> bool {
    if e.phase() != Some(rollout_core::error::Phase::Plan) {
        return false;
    }
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        if c.downcast_ref::<rollout_process::ProcessError>()
            .is_some_and(rollout_process::ProcessError::is_refusal)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A command's `main`: logs on stderr (`RUST_LOG`), a two-thread runtime, and `body`'s error
/// printed as `error: ...`, with exit code 2 for [`BadInput`] and 1 for the rest.
pub(crate) fn run_main<F>(body: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<Exit>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(body) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<BadInput>().is_some() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::from(1)
            }
        }
    }
}

/// The pure simulation of `builder`'s shape and seed (at time scale 1, on a paused clock in
/// its own thread), rolled with `strategy`: what an emulated run is compared with.
pub(crate) async fn pure_simulation(
    builder: &rollout_sim::SimBuilder,
    strategy: rollout_sim::Strategy,
    change: Change,
) -> anyhow::Result<rollout_sim::SimReport> {
    let mut b = builder.clone();
    b.time_scale(1);
    let spec = strategy.spec(change, b.get_data_nodes());
    let (_, report) = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map(|rt| {
                rt.block_on(rollout_sim::simulate(
                    &b,
                    strategy,
                    &spec,
                    &rollout_core::event::Ignore,
                ))
            })
    })
    .await??
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(report)
}

/// The cluster file of `--cluster`, read and checked before anything else.
pub(crate) fn cluster_file(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<rollout_process::ClusterFile>> {
    path.map(|p| rollout_process::ClusterFile::load(p).map_err(|e| anyhow::anyhow!(chain(&e))))
        .transpose()
}

/// Where a run on real hosts journals without `--journal`: `$XDG_STATE_HOME/rollout/` (or
/// `~/.local/state/rollout/`), one file per cluster name.
pub(crate) fn default_journal(cluster: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("rollout");
    let name: String = cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.journal"))
}

/// Rolls `cluster` on its real hosts: progress lines (not with `json`), the journal in
/// `journal` (a run interrupted earlier resumes from it and from the live cluster), then
/// the report, as one JSON line with `json`.
pub(crate) async fn run_real<C: rollout_core::Cluster>(
    cluster: &C,
    spec: &Spec,
    journal: &crate::journal::JournalAt,
    json: bool,
) -> anyhow::Result<Exit> {
    let file = journal.open()?;
    let progress = Progress::new();
    eprintln!("journal: {}", journal.describe());
    let report = rollout_core::roll(
        cluster,
        spec,
        rollout_core::Run::new(&*file).observe(&progress),
    )
    .await
    .map_err(engine_error)?;
    if json {
        let starts = starts_recorded(&file.load().map_err(|e| anyhow::anyhow!(chain(&e)))?);
        let mut v = serde_json::to_value(&report)?;
        v["completed"] = matches!(report.outcome, rollout_core::Outcome::Completed).into();
        v["journal"] = journal.describe().into();
        v["max_restarts_per_node"] = starts.values().copied().max().unwrap_or(0).into();
        v["starts_recorded"] = serde_json::to_value(&starts)?;
        println!("{v}");
    } else {
        println!(
            "{:?}: {} nodes rolled, knobs restored: {}",
            report.outcome,
            report.rolled.len(),
            report.knobs_restored
        );
    }
    Ok(Exit::of(&report))
}

/// How many starts the journal records for each node in its last rollout, all runs of it
/// (a resumed one too): each start is recorded right before it is made, so a node started
/// twice shows 2. On a real cluster this is what the orchestrator can know of restarts
/// (a crash between the record and the start counts one start too many, never too few).
pub(crate) fn starts_recorded(
    entries: &[rollout_core::journal::Entry],
) -> std::collections::BTreeMap<String, u32> {
    use rollout_core::journal::Entry;
    let mut starts = std::collections::BTreeMap::new();
    for e in entries {
        match e {
            Entry::Begin { .. } => starts.clear(),
            Entry::NodeStarting { node } => *starts.entry(node.to_string()).or_insert(0) += 1,
            _ => {}
        }
    }
    starts
}

/// Ends the journal's interrupted rollout on `cluster` (knobs restored, a node caught
/// stopped started again), from any host.
pub(crate) async fn abort_real<C: rollout_core::Cluster>(
    cluster: &C,
    journal: &crate::journal::JournalAt,
) -> anyhow::Result<Exit> {
    let j = journal.open()?;
    let ended = rollout_core::abort(cluster, rollout_core::Run::new(&*j))
        .await
        .map_err(engine_error)?;
    println!(
        "{}",
        if ended {
            "aborted: knobs restored, nodes in progress rejoined"
        } else {
            "no rollout was in progress"
        }
    );
    Ok(Exit::Completed)
}

/// A system's command once its flags are parsed: the change (bad input exits 2), then an
/// emulated process of a serving emulator, the serve mode (`serve`, with `--emulate`
/// only), or the roll (`roll`).
pub(crate) fn run_system<S, R>(
    change: Result<Change, BadInput>,
    served: &crate::serve::ServeArgs,
    emulate: bool,
    serve: impl FnOnce() -> S,
    roll: impl FnOnce(Change) -> R,
) -> std::process::ExitCode
where
    S: std::future::Future<Output = anyhow::Result<()>>,
    R: std::future::Future<Output = anyhow::Result<Exit>>,
{
    let change = match change {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    run_main(async move {
        if let (Some(endpoint), Some(control)) = (&served.emulated_process, &served.control) {
            return crate::serve::emulated_process(endpoint, control)
                .await
                .map(|()| Exit::Completed);
        }
        if served.serve {
            if !emulate {
                return Err(BadInput("--serve serves the emulator: emulate --serve".into()).into());
            }
            return serve().await.map(|()| Exit::Completed);
        }
        roll(change).await
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rollout_core::error::Phase;
    use rollout_core::{Error, NodeId};
    use rollout_process::ProcessError;

    use super::{BadInput, engine_error};

    /// A backend error wrapping a node's error, as `PegasusError::Node` does.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Wrapped(#[source] ProcessError);

    fn refused() -> ProcessError {
        ProcessError::Refused {
            node: NodeId::new("10.0.0.1:34801"),
            what: "an edit of conf/nothing.flags".into(),
            reason: "it is not one of the node's config_files".into(),
        }
    }

    /// The node's refusal as the engine reports it in `phase`.
    fn refused_in(phase: Phase) -> anyhow::Error {
        engine_error(Error::Backend {
            node: Some(NodeId::new("10.0.0.1:34801")),
            phase,
            source: Wrapped(refused()),
        })
    }

    #[test]
    fn a_node_refusal_while_planning_is_bad_input_named_once() {
        let e = refused_in(Phase::Plan);
        let bad = e.downcast_ref::<BadInput>().expect("bad input");
        assert_eq!(bad.0.matches("conf/nothing.flags").count(), 1, "{}", bad.0);
    }

    #[test]
    fn the_same_refusal_after_the_plan_fails_the_run() {
        let e = refused_in(Phase::Apply);
        assert!(e.downcast_ref::<BadInput>().is_none(), "{e:#}");
    }

    /// A connect that takes 12 s (in tokio's paused time) gives its value, with a notice at
    /// 5 s and at 10 s and none after it ended.
    #[tokio::test(start_paused = true)]
    async fn a_slow_connect_is_awaited_through_its_notices() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(12)).await;
            42
        };
        let mut notices = Vec::new();
        assert_eq!(
            super::noticed(slow, |t| notices.push(t.as_secs())).await,
            42
        );
        assert_eq!(notices, [5, 10]);
    }
}
