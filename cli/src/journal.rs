//! Where a rollout keeps its journal: the journal flags, a file or the cluster's ZooKeeper,
//! and the state it prints for `status`.

use anyhow::Context;
use rollout_core::chain;
use std::time::Duration;

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
        use rollout_core::journal::Entry;
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
