//! What the commands share: a process handle that refuses to act (for a plan without a
//! cluster file), the cluster file and the run on real hosts, the policy in an emulator's
//! wall time, progress lines on stderr, the plan printer, and how a run ends ([`Exit`]).

use std::sync::Mutex;

use anyhow::Context;
use std::time::Duration;

use rollout_core::{
    ApplyRecord, Change, Deadlines, Event, Node, NodeId, NodeStatus, Observer, Policy, Spec, chain,
    plan,
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
/// backend cannot apply) is [`BadInput`]; the rest fails the run.
pub(crate) fn engine_error<E: std::error::Error + 'static>(
    e: rollout_core::Error<E>,
) -> anyhow::Error {
    if refused(&e) {
        BadInput(chain(&e)).into()
    } else {
        anyhow::anyhow!(chain(&e))
    }
}

/// Whether the engine refused the input before touching anything.
pub(crate) fn refused<E: std::error::Error + 'static>(e: &rollout_core::Error<E>) -> bool {
    use rollout_core::Error as E;
    matches!(
        e,
        E::InvalidPolicy(_)
            | E::EmptySelection
            | E::UnknownNode(_)
            | E::UnsupportedChange { .. }
            | E::Unsafe { .. }
    )
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
                    &rollout_core::Ignore,
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
    journal: &JournalAt,
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
    entries: &[rollout_core::Entry],
) -> std::collections::BTreeMap<String, u32> {
    use rollout_core::Entry;
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

/// The journal's flags, the same in both binaries (flattened into their `Args`).
#[derive(clap::Args, Debug)]
pub(crate) struct JournalArgs {
    /// With --run, --status, --abort: where the rollout's state lives: `zk` (the default
    /// wherever the cluster's ZooKeeper is known: OpenMLDB's --zk, the one a Pegasus meta
    /// server reports in cluster_info; under <root>/rollout, so that any host may resume,
    /// inspect or abort it) or `file:PATH` (else the default: a file per cluster in the
    /// user's state dir).
    #[arg(long = "journal", value_name = "zk|file:PATH")]
    pub(crate) at: Option<String>,
    /// With --journal zk: the ZooKeeper session timeout, in seconds: how long after this
    /// orchestrator is lost (killed, cut off, paused) its lock goes and another host may
    /// resume or abort; and how long it waits for ZooKeeper while it cannot reach it.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub(crate) zk_session_secs: u64,
    /// With --journal zk: a file whose first line is the cluster's ZooKeeper digest
    /// credentials, user:password; the rollout's znodes then get an ACL for that user alone.
    #[arg(long, value_name = "FILE")]
    pub(crate) zk_auth_file: Option<std::path::PathBuf>,
}

impl JournalArgs {
    /// Where the journal is, from these flags: `zk` is the cluster's ZooKeeper hosts and
    /// root when known, `flavor` the cluster kind, `default_file` the file without one.
    pub(crate) fn at(
        &self,
        zk: Option<(&str, &str)>,
        flavor: &str,
        default_file: std::path::PathBuf,
    ) -> anyhow::Result<JournalAt> {
        JournalAt::parse(self.at.as_deref(), zk, flavor, default_file)?
            .session(Duration::from_secs(self.zk_session_secs.max(2)))
            .auth_file(self.zk_auth_file.as_deref())
    }
}

/// Where a run on real hosts journals: `zk` (the cluster's own ZooKeeper, under
/// `<root>/rollout`: the lock and the entries outlive this host) or `file:PATH`.
pub(crate) enum JournalAt {
    /// The cluster's ZooKeeper.
    Zk {
        /// `HOST:PORT[,...]`.
        hosts: String,
        /// The cluster's root.
        root: String,
        /// The cluster (`flavor:root`) that `<root>/rollout` must belong to.
        cluster: String,
        /// The session timeout, when not the default 10 s.
        session: Option<std::time::Duration>,
        /// Digest credentials, `user:password`.
        digest: Option<String>,
    },
    /// A file on this host.
    File(std::path::PathBuf),
}

impl JournalAt {
    /// `--journal`'s value: `zk`, `file:PATH`, or (for compatibility) a bare path. `zk`
    /// is the cluster's ZooKeeper hosts and root when known; `flavor` (`openmldb`,
    /// `pegasus`) names the cluster kind.
    fn parse(
        spec: Option<&str>,
        zk: Option<(&str, &str)>,
        flavor: &str,
        default_file: std::path::PathBuf,
    ) -> anyhow::Result<Self> {
        match (spec, zk) {
            (Some("zk"), Some((hosts, root))) | (None, Some((hosts, root))) => Ok(Self::Zk {
                hosts: hosts.to_string(),
                root: root.to_string(),
                cluster: format!("{flavor}:{}", root.trim_end_matches('/')),
                session: None,
                digest: None,
            }),
            (Some("zk"), None) => anyhow::bail!(
                "--journal zk needs the cluster's ZooKeeper, which this binary does not know here; use --journal file:PATH"
            ),
            (Some(s), _) => Ok(Self::File(s.strip_prefix("file:").unwrap_or(s).into())),
            (None, None) => Ok(Self::File(default_file)),
        }
    }

    /// Opens it: a ZooKeeper journal connects (and refuses a root that does not exist).
    pub(crate) fn open(&self) -> anyhow::Result<Box<dyn rollout_core::Journal>> {
        Ok(match self {
            Self::Zk { .. } => Box::new(self.zk(false)?),
            Self::File(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(rollout_core::FileJournal::new(path))
            }
        })
    }

    /// The digest credentials of a ZooKeeper journal, `user:password`.
    pub(crate) fn digest(&self) -> Option<&str> {
        match self {
            Self::Zk { digest, .. } => digest.as_deref(),
            Self::File(_) => None,
        }
    }

    /// With a ZooKeeper session timeout of `timeout` (a ZooKeeper journal).
    fn session(mut self, timeout: std::time::Duration) -> Self {
        if let Self::Zk { session, .. } = &mut self {
            *session = Some(timeout);
        }
        self
    }

    /// The ZooKeeper journal; `read_only` creates nothing (for `--status`).
    /// With ZooKeeper digest credentials read from `file` (its first line, `user:password`):
    /// the rollout's znodes then get an ACL for that user alone.
    fn auth_file(mut self, file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        if let (Self::Zk { digest, .. }, Some(file)) = (&mut self, file) {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--zk-auth-file {}", file.display()))?;
            let line = text.lines().next().unwrap_or_default().trim();
            anyhow::ensure!(
                line.split_once(':')
                    .is_some_and(|(u, p)| !u.is_empty() && !p.is_empty()),
                "--zk-auth-file {}: its first line must be user:password",
                file.display()
            );
            *digest = Some(line.to_string());
        }
        Ok(self)
    }

    fn zk(&self, read_only: bool) -> anyhow::Result<rollout_zookeeper::ZkJournal> {
        let Self::Zk {
            hosts,
            root,
            cluster,
            session,
            digest,
        } = self
        else {
            anyhow::bail!("not a ZooKeeper journal");
        };
        let mut options = rollout_zookeeper::ZkOptions::new(hosts, root).cluster(cluster);
        options.read_only = read_only;
        options.digest = digest.clone();
        if let Some(s) = session {
            options.session_timeout = *s;
        }
        rollout_zookeeper::ZkJournal::connect(options).map_err(|e| anyhow::anyhow!(chain(&e)))
    }

    /// Where, for people.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Zk { hosts, root, .. } => {
                format!("ZooKeeper {hosts} {}/rollout", root.trim_end_matches('/'))
            }
            Self::File(path) => path.display().to_string(),
        }
    }

    /// Prints who holds the lock (ZooKeeper), the rollout in the journal, the node in
    /// progress and the knobs saved with their originals; one JSON object with `json`.
    pub(crate) fn print_status(&self, json: bool) -> anyhow::Result<()> {
        use rollout_core::Entry;
        let (holder, entries) = match self {
            Self::Zk { .. } => {
                let zk = self.zk(true)?;
                let holder = zk.holder().map_err(|e| anyhow::anyhow!(chain(&e)))?;
                let entries =
                    rollout_core::Journal::load(&zk).map_err(|e| anyhow::anyhow!(chain(&e)))?;
                (holder.map(|o| holder_line(&o)), entries)
            }
            Self::File(_) => (
                None,
                self.open()?
                    .load()
                    .map_err(|e| anyhow::anyhow!(chain(&e)))?,
            ),
        };
        let mut rollout = None;
        let mut done = Vec::new();
        let mut in_progress = None;
        let mut knobs = std::collections::BTreeMap::new();
        let mut ended = None;
        for e in &entries {
            match e {
                Entry::Begin {
                    cluster,
                    change,
                    nodes,
                    ..
                } => {
                    rollout = Some(format!(
                        "{} of {cluster}, {} nodes",
                        change.kind(),
                        nodes.len()
                    ));
                    done.clear();
                    knobs.clear();
                    ended = None;
                }
                Entry::KnobSaved { name, original } => {
                    knobs.insert(name.clone(), original.clone());
                }
                Entry::KnobRestored { name } => {
                    knobs.remove(name);
                }
                Entry::NodeBegin { node, .. } => in_progress = Some(node.to_string()),
                Entry::NodeDone { node } | Entry::NodeSkipped { node, .. } => {
                    done.push(node.to_string());
                    in_progress = None;
                }
                Entry::End { outcome } => ended = Some(outcome.clone()),
                _ => {}
            }
        }
        if json {
            let v = serde_json::json!({
                "journal": self.describe(),
                "lock_holder": holder,
                "rollout": rollout,
                "nodes_done": done,
                "node_in_progress": in_progress,
                "knobs_saved": knobs,
                "ended": ended,
                "entries": entries.len(),
            });
            println!("{v}");
            return Ok(());
        }
        println!("journal: {}", self.describe());
        match (&holder, self) {
            (Some(h), _) => println!("lock: held by {h}"),
            (None, Self::Zk { .. }) => println!("lock: not held"),
            (None, Self::File(path)) => {
                println!("lock: a file journal's lock is {}.lock", path.display());
            }
        }
        match rollout {
            None => println!("no rollout recorded"),
            Some(r) => {
                println!("rollout: {r}");
                println!("nodes done: {}", done.len());
                println!(
                    "node in progress: {}",
                    in_progress.as_deref().unwrap_or("none")
                );
                for (k, v) in &knobs {
                    println!("knob saved: {k} (original {v:?}, not restored yet)");
                }
                println!(
                    "ended: {}",
                    ended
                        .as_deref()
                        .unwrap_or("no: resume with --run or end with --abort")
                );
            }
        }
        Ok(())
    }
}

/// Who holds the lock, and for how long now.
fn holder_line(o: &rollout_zookeeper::LockOwner) -> String {
    #[allow(
        clippy::disallowed_methods,
        reason = "an age for people, no wait depends on it"
    )]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{} on host {} (pid {}), for {} s",
        o.rollout,
        o.host,
        o.pid,
        now.saturating_sub(o.since)
    )
}

/// Ends the journal's interrupted rollout on `cluster` (knobs restored, a node caught
/// stopped started again), from any host.
pub(crate) async fn abort_real<C: rollout_core::Cluster>(
    cluster: &C,
    journal: &JournalAt,
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

/// The change and the selection, one grammar for both systems: `--restart` (the default),
/// `--upgrade VERSION`, `--set FILE:KEY=VALUE` (repeatable; an INI key as `SECTION.KEY`),
/// and `--role` or `--node` to roll only part of the cluster.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct ChangeArgs {
    /// Restart every selected node with what it has (the default change).
    #[arg(long, conflicts_with_all = ["upgrade", "set"])]
    pub(crate) restart: bool,
    /// Upgrade every selected node to VERSION (its package staged as the deployment says).
    #[arg(long, value_name = "VERSION", conflicts_with = "set")]
    pub(crate) upgrade: Option<String>,
    /// A configuration update, FILE:KEY=VALUE; an INI key as SECTION.KEY
    /// (config.ini:replication.mutation_2pc_min_replica_count=2, tablet.flags:KEY=VALUE);
    /// repeatable.
    #[arg(long, value_name = "FILE:KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Roll only the nodes of this role (as the plan names roles); repeatable.
    #[arg(long, conflicts_with = "node")]
    pub(crate) role: Vec<String>,
    /// Roll only this node, HOST:PORT as the plan names it; repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) node: Vec<String>,
}

impl ChangeArgs {
    /// The change: `--set`, else `--upgrade`, else `legacy` (the older `--change` value,
    /// parsed by `parse_legacy`), else a restart. `conf_dir` puts a bare file name under
    /// the node's `conf/` (OpenMLDB's layout).
    pub(crate) fn change(
        &self,
        legacy: Option<&str>,
        parse_legacy: impl Fn(&str) -> anyhow::Result<Change>,
        conf_dir: bool,
    ) -> Result<Change, BadInput> {
        let given = usize::from(self.restart)
            + usize::from(self.upgrade.is_some())
            + usize::from(!self.set.is_empty());
        if let Some(l) = legacy.filter(|l| *l != "restart") {
            if given > 0 {
                return Err(BadInput(format!(
                    "--change {l} and --restart, --upgrade or --set: give one change"
                )));
            }
            return parse_legacy(l).map_err(|e| BadInput(format!("{e:#}")));
        }
        if let Some(v) = &self.upgrade {
            if v.trim().is_empty() {
                return Err(BadInput("--upgrade needs a VERSION".into()));
            }
            return Ok(Change::Upgrade { version: v.clone() });
        }
        if self.set.is_empty() {
            return Ok(Change::Restart);
        }
        let mut edits = Vec::new();
        for s in &self.set {
            let bad = || BadInput(format!("--set {s}: expected FILE:KEY=VALUE"));
            let (file, kv) = s.split_once(':').ok_or_else(bad)?;
            let (key, value) = kv.split_once('=').ok_or_else(bad)?;
            if file.is_empty() {
                return Err(BadInput(format!("--set {s}: no file")));
            }
            if key.is_empty() {
                return Err(BadInput(format!("--set {s}: no key")));
            }
            let file = if conf_dir && !file.contains('/') {
                format!("conf/{file}")
            } else {
                file.to_string()
            };
            edits.push(rollout_core::ConfigEdit::Set {
                file,
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        Ok(Change::Config { edits })
    }

    /// `spec` limited to `--role` or `--node`.
    pub(crate) fn select(&self, spec: Spec) -> Spec {
        if !self.node.is_empty() {
            spec.selection(rollout_core::Selection::Nodes(
                self.node.iter().map(NodeId::new).collect(),
            ))
        } else if !self.role.is_empty() {
            spec.selection(rollout_core::Selection::Roles(self.role.clone()))
        } else {
            spec
        }
    }
}

/// What `rollout pegasus|openmldb ACTION` does; the examples' mode flags (`--plan`, `--run`,
/// `--status`, `--abort`, `--emulate`) say the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Print the plan of a real cluster; changes nothing.
    Plan,
    /// Roll a real cluster (needs `--cluster`).
    Run,
    /// Print the state of the rollout in the journal; changes nothing.
    Status,
    /// End the journal's interrupted rollout (needs `--cluster`).
    Abort,
    /// Start the emulator and roll it (`--serve` keeps it serving instead).
    Emulate,
}

impl Action {
    /// Every action, in the order `--help` lists them, with its one-line description.
    pub const ALL: [(Self, &'static str, &'static str); 5] = [
        (
            Self::Plan,
            "plan",
            "Print the plan for a real cluster; changes nothing",
        ),
        (
            Self::Run,
            "run",
            "Roll a real cluster, one safe step at a time (needs --cluster)",
        ),
        (
            Self::Status,
            "status",
            "Print the state of the rollout in the journal; changes nothing",
        ),
        (
            Self::Abort,
            "abort",
            "End the journal's interrupted rollout: knobs restored, a stopped node started (needs --cluster)",
        ),
        (
            Self::Emulate,
            "emulate",
            "Start the emulator and roll it, or keep it serving with --serve",
        ),
    ];
}

/// `base` (an example's command) as the subcommands of one system, the mode flags hidden
/// since the action sets them.
pub(crate) fn action_commands(
    base: clap::Command,
    name: &'static str,
    about: &'static str,
) -> clap::Command {
    let mut system = clap::Command::new(name)
        .about(about)
        .subcommand_required(true)
        .arg_required_else_help(true);
    for (_, action, what) in Action::ALL {
        let mut c = base.clone().name(action).about(what).version(None::<&str>);
        for flag in ["plan", "run", "status", "abort", "emulate"] {
            c = c.mut_arg(flag, |a| a.hide(true));
        }
        system = system.subcommand(c);
    }
    system
}

/// `--strategy` of the emulated rollouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EmulatedStrategy {
    /// The high-availability steps (drain, quiesce, fenced moves).
    Ha,
    /// The upstream simplified steps: restart and wait.
    Naive,
}

impl EmulatedStrategy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ha => "ha",
            Self::Naive => "naive",
        }
    }

    pub(crate) fn sim(self) -> rollout_sim::Strategy {
        match self {
            Self::Ha => rollout_sim::Strategy::Ha,
            Self::Naive => rollout_sim::Strategy::Naive,
        }
    }

    pub(crate) fn procedure(self) -> rollout_core::Procedure {
        match self {
            Self::Ha => rollout_core::Procedure::HighAvailability,
            Self::Naive => rollout_core::Procedure::Simple,
        }
    }
}

/// Sets a system's mode flags (`--plan`, `--run`, `--status`, `--abort`, `--emulate`, in that
/// order) from a `rollout` action.
pub(crate) fn set_modes(action: Action, flags: [&mut bool; 5]) {
    let actions = [
        Action::Plan,
        Action::Run,
        Action::Status,
        Action::Abort,
        Action::Emulate,
    ];
    for (flag, a) in flags.into_iter().zip(actions) {
        *flag = action == a;
    }
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

/// The policy flags of a roll, real or emulated: a canary and what a wait past its
/// deadline does.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct PolicyArgs {
    /// Halt after this many nodes (a canary); run the same command again to go on.
    #[arg(long, value_name = "N")]
    pub(crate) canary: Option<usize>,
    /// What a wait past its deadline does: abort (restore knobs and stop), pause (halt,
    /// keeping state for a resume) or skip (leave a node out, only before it is stopped).
    #[arg(long, value_enum)]
    pub(crate) on_timeout: Option<OnTimeoutArg>,
}

/// `--on-timeout` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum OnTimeoutArg {
    Abort,
    Pause,
    Skip,
}

impl PolicyArgs {
    /// `policy` with these flags.
    pub(crate) fn apply(&self, mut policy: rollout_core::Policy) -> rollout_core::Policy {
        if let Some(n) = self.canary {
            policy = policy.canary(n);
        }
        if let Some(t) = self.on_timeout {
            policy = policy.on_timeout(match t {
                OnTimeoutArg::Abort => rollout_core::OnTimeout::Abort,
                OnTimeoutArg::Pause => rollout_core::OnTimeout::Pause,
                OnTimeoutArg::Skip => rollout_core::OnTimeout::Skip,
            });
        }
        policy
    }
}
