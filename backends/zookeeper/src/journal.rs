//! [`ZkJournal`].

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rollout_core::{
    Journal,
    journal::{Entry, JournalError},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use zookeeper_client as zk;

/// How to reach the ZooKeeper.
#[derive(Clone, Debug)]
pub struct ZkOptions {
    /// The ensemble, `HOST:PORT[,HOST:PORT...]`.
    pub hosts: String,
    /// The cluster's root, such as `/openmldb`; the rollout's znodes go under
    /// `<root>/rollout`.
    pub root: String,
    /// The session timeout: how long after this orchestrator is lost its lock goes.
    /// Default 10 s.
    pub session_timeout: Duration,
    /// How long to try to connect at start. Default 10 s.
    pub connect_timeout: Duration,
    /// Digest authentication, `user:password`, when the cluster's ZooKeeper uses it; the
    /// rollout's znodes then get an ACL for that user alone.
    pub digest: Option<String>,
    /// The cluster's name (what [`Cluster::name`](rollout_core::Cluster::name) gives),
    /// written into `<root>/rollout` when it is made: a journal opened later with another
    /// name is refused, so that a root holding another cluster's rollouts is never mixed
    /// up with this one. `None` checks nothing.
    pub cluster: Option<String>,
    /// Only read: nothing is created or named in ZooKeeper (for `status` from any host); a
    /// root without `rollout` reads as an empty journal with no lock held.
    pub read_only: bool,
}

impl ZkOptions {
    /// `hosts` and `root` with the default timeouts and no authentication.
    pub fn new(hosts: impl Into<String>, root: impl Into<String>) -> Self {
        Self {
            hosts: hosts.into(),
            root: root.into(),
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            digest: None,
            cluster: None,
            read_only: false,
        }
    }

    /// The cluster whose rollouts this root keeps (see [`cluster`](Self::cluster)).
    #[must_use]
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = Some(name.into());
        self
    }
}

/// Who holds the lock: written in the lock znode, shown by `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// The orchestrator's host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it took the lock, seconds since the Unix epoch.
    pub since: u64,
    /// The rollout's owner string (what the engine passes to `lock`).
    pub rollout: String,
    /// Its ZooKeeper session timeout, in seconds: how long after it is lost its lock goes.
    #[serde(default)]
    pub session_secs: Option<u64>,
}

impl std::fmt::Display for LockOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on host {} (pid {}) since {} s after the epoch",
            self.rollout, self.host, self.pid, self.since
        )
    }
}

/// How often a request is tried again while ZooKeeper cannot be reached.
const RETRY: Duration = Duration::from_millis(250);

type Reply<T> = std_mpsc::Sender<Result<T, JournalError>>;

enum Req {
    Lock(String, Reply<()>),
    Unlock(std_mpsc::Sender<()>),
    Load(Reply<Vec<Entry>>),
    Append(Box<Entry>, Reply<()>),
    Fence(Reply<()>),
    Holder(Reply<Option<LockOwner>>),
}

/// A [`Journal`] in ZooKeeper (see the crate docs for the layout and the fencing).
#[derive(Debug)]
pub struct ZkJournal {
    tx: mpsc::UnboundedSender<Req>,
    at: String,
}

impl ZkJournal {
    /// Connects to the ensemble and makes `<root>/rollout` and its `entries` when missing.
    ///
    /// # Errors
    /// [`JournalError::Store`] naming the ensemble when it cannot be reached within
    /// `connect_timeout`, authentication fails, or the root does not exist (a root of no
    /// cluster is refused: the rollout's state belongs to a cluster).
    pub fn connect(options: ZkOptions) -> Result<Self, JournalError> {
        let at = format!(
            "{}{}/rollout",
            options.hosts,
            options.root.trim_end_matches('/')
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let worker_at = at.clone();
        std::thread::Builder::new()
            .name("rollout-zookeeper".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(store(&worker_at, e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Session::open(&options, &worker_at).await {
                        Ok(session) => {
                            let _ = ready_tx.send(Ok(()));
                            session.serve(rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| store(&at, e))?;
        ready_rx
            .recv()
            .map_err(|_| store(&at, "the ZooKeeper thread ended"))??;
        Ok(Self { tx, at })
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Req) -> Result<T, JournalError> {
        let (reply, answer) = std_mpsc::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| store(&self.at, "the ZooKeeper session ended"))?;
        answer
            .recv()
            .map_err(|_| store(&self.at, "the ZooKeeper session ended"))?
    }

    /// Who holds the lock now, if anyone.
    ///
    /// # Errors
    /// [`JournalError::Store`] when ZooKeeper cannot be read.
    pub fn holder(&self) -> Result<Option<LockOwner>, JournalError> {
        self.ask(Req::Holder)
    }
}

impl Journal for ZkJournal {
    fn lock(&self, owner: &str) -> Result<(), JournalError> {
        self.ask(|r| Req::Lock(owner.to_string(), r))
    }

    fn unlock(&self) {
        let (done, wait) = std_mpsc::channel();
        if self.tx.send(Req::Unlock(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    fn load(&self) -> Result<Vec<Entry>, JournalError> {
        self.ask(Req::Load)
    }

    fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        self.ask(|r| Req::Append(Box::new(entry.clone()), r))
    }

    fn fence(&self) -> Result<(), JournalError> {
        self.ask(Req::Fence)
    }
}

fn store(at: &str, reason: impl std::fmt::Display) -> JournalError {
    JournalError::Store {
        at: at.to_string(),
        reason: reason.to_string(),
    }
}

/// The session, on its own thread.
struct Session {
    client: zk::Client,
    /// `<root>/rollout`.
    dir: String,
    at: String,
    acl: Vec<zk::Acl>,
    /// This orchestrator's lock node, once it asked.
    mine: Option<String>,
    /// The summary's version after this orchestrator's last append: each append sets it
    /// conditionally, so that an append retried after a lost connection is never recorded
    /// twice.
    summary_version: Option<i32>,
    /// How long a request is retried while ZooKeeper cannot be reached.
    patience: Duration,
    read_only: bool,
}

impl Session {
    async fn open(options: &ZkOptions, at: &str) -> Result<Self, JournalError> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(options.session_timeout)
            .with_connection_timeout(options.connect_timeout);
        if let Some(digest) = &options.digest {
            connector = connector.with_auth("digest", digest.as_bytes());
        }
        let client =
            tokio::time::timeout(options.connect_timeout, connector.connect(&options.hosts))
                .await
                .map_err(|_| {
                    store(
                        at,
                        format!(
                            "ZooKeeper did not answer within {} s; nothing was changed",
                            options.connect_timeout.as_secs()
                        ),
                    )
                })?
                .map_err(|e| store(at, format!("cannot connect: {e}; nothing was changed")))?;
        let root = options.root.trim_end_matches('/').to_string();
        if !root.is_empty() {
            client
                .check_stat(&root)
                .await
                .map_err(|e| store(at, e))?
                .ok_or_else(|| {
                    store(
                        at,
                        format!(
                            "{root} does not exist in this ZooKeeper: it holds no cluster there; \
                         check the root"
                        ),
                    )
                })?;
        }
        let acl = match &options.digest {
            Some(digest) => {
                let user = digest.split(':').next().unwrap_or_default();
                vec![zk::Acl::new(
                    zk::Permission::ALL,
                    zk::AuthId::new("auth", user),
                )]
            }
            None => zk::Acls::anyone_all().to_vec(),
        };
        let session = Self {
            client,
            dir: format!("{root}/rollout"),
            at: at.to_string(),
            acl,
            mine: None,
            summary_version: None,
            patience: options.session_timeout,
            read_only: options.read_only,
        };
        if session.read_only {
            let made = session
                .patiently(|| session.client.check_stat(&session.dir))
                .await
                .map_err(|e| session.err(e))?;
            if made.is_some() {
                session.check_cluster(options.cluster.as_deref()).await?;
            }
            return Ok(session);
        }
        session
            .ensure_with(&session.dir, options.cluster.as_deref().unwrap_or(""))
            .await?;
        session.check_cluster(options.cluster.as_deref()).await?;
        session.ensure(&format!("{}/entries", session.dir)).await?;
        session.ensure(&session.summary()).await?;
        Ok(session)
    }

    fn summary(&self) -> String {
        format!("{}/summary", self.dir)
    }

    /// `<root>/rollout` names the cluster it was made for: another name is refused.
    async fn check_cluster(&self, cluster: Option<&str>) -> Result<(), JournalError> {
        let Some(cluster) = cluster else {
            return Ok(());
        };
        let (data, _) = self
            .patiently(|| self.client.get_data(&self.dir))
            .await
            .map_err(|e| self.err(format!("reading {}: {e}", self.dir)))?;
        let found = String::from_utf8_lossy(&data).to_string();
        if found.is_empty() && !self.read_only {
            // Made before it held a name: it takes this one, unless another was written since.
            let (_, stat) = self
                .patiently(|| self.client.get_data(&self.dir))
                .await
                .map_err(|e| self.err(format!("reading {}: {e}", self.dir)))?;
            return match self
                .client
                .set_data(&self.dir, cluster.as_bytes(), Some(stat.version))
                .await
            {
                Ok(_) => Ok(()),
                Err(zk::Error::BadVersion) => Box::pin(self.check_cluster(Some(cluster))).await,
                Err(e) => Err(self.err(format!("naming {}: {e}", self.dir))),
            };
        }
        if !found.is_empty() && found != cluster {
            return Err(self.err(format!(
                "{} keeps the rollouts of cluster {found:?}, not {cluster:?}: this root holds \
                 another cluster; check the ZooKeeper root; nothing was changed",
                self.dir
            )));
        }
        Ok(())
    }

    /// Runs `op` again while ZooKeeper cannot be reached (the connection lost, the server
    /// restarting), for at most the session timeout: within it this orchestrator's session,
    /// and so its lock, may still be alive. An expired session is not retried.
    async fn patiently<T, F, Fut>(&self, mut op: F) -> Result<T, zk::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, zk::Error>>,
    {
        let until = tokio::time::Instant::now() + self.patience;
        loop {
            match op().await {
                Err(e) if unreachable(&e) && tokio::time::Instant::now() < until => {
                    tracing::warn!(at = %self.at, "ZooKeeper unreachable; waiting within the session");
                    tokio::time::sleep(RETRY).await;
                }
                r => return r,
            }
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> JournalError {
        store(&self.at, e)
    }

    async fn ensure(&self, path: &str) -> Result<(), JournalError> {
        self.ensure_with(path, "").await
    }

    async fn ensure_with(&self, path: &str, data: &str) -> Result<(), JournalError> {
        let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&self.acl));
        match self
            .patiently(|| self.client.create(path, data.as_bytes(), &opts))
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(self.err(format!("creating {path}: {e}"))),
        }
    }

    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Req>) {
        while let Some(req) = rx.recv().await {
            match req {
                Req::Lock(owner, r) => {
                    let _ = r.send(self.lock(&owner).await);
                }
                Req::Unlock(done) => {
                    if let Some(mine) = self.mine.take() {
                        let _ = self.client.delete(&mine, None).await;
                    }
                    let _ = done.send(());
                }
                Req::Load(r) => {
                    let _ = r.send(self.load().await);
                }
                Req::Append(entry, r) => {
                    let _ = r.send(self.append(&entry).await);
                }
                Req::Fence(r) => {
                    let _ = r.send(self.fence().await);
                }
                Req::Holder(r) => {
                    let _ = r.send(self.holder().await.map(|h| h.map(|(_, o)| o)));
                }
            }
        }
    }

    /// The lowest lock node and its owner.
    async fn holder(&self) -> Result<Option<(String, LockOwner)>, JournalError> {
        let mut locks: Vec<String> = match self
            .patiently(|| self.client.list_children(&self.dir))
            .await
        {
            Err(zk::Error::NoNode) if self.read_only => Vec::new(),
            r => r.map_err(|e| self.err(e))?,
        }
        .into_iter()
        .filter(|c| c.starts_with("lock-"))
        .collect();
        locks.sort();
        for name in locks {
            let path = format!("{}/{name}", self.dir);
            match self.patiently(|| self.client.get_data(&path)).await {
                Ok((data, _)) => {
                    let owner = serde_json::from_slice(&data).map_err(|e| {
                        self.err(format!("{path} does not hold a rollout lock owner: {e}"))
                    })?;
                    return Ok(Some((path, owner)));
                }
                // Its session ended between the listing and the read.
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(None)
    }

    async fn lock(&mut self, rollout: &str) -> Result<(), JournalError> {
        if self.mine.is_some() {
            return Ok(());
        }
        let owner = LockOwner {
            host: hostname(),
            pid: std::process::id(),
            since: wall_secs(),
            rollout: rollout.to_string(),
            session_secs: Some(self.patience.as_secs()),
        };
        let data = serde_json::to_vec(&owner).map_err(|e| self.err(e))?;
        let opts = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::new(&self.acl));
        let (_, seq) = self
            .client
            .create(&format!("{}/lock-", self.dir), &data, &opts)
            .await
            .map_err(|e| self.err(format!("taking the lock: {e}")))?;
        let mine = format!("{}/lock-{seq}", self.dir);
        // A holder that was a process of this host and is gone (killed) keeps the lock only
        // until ZooKeeper expires its session: wait for that, bounded.
        let t0 = tokio::time::Instant::now();
        let mut told = false;
        loop {
            match self.holder().await? {
                Some((path, _)) if path == mine => {
                    self.mine = Some(mine);
                    return Ok(());
                }
                // Bounded by the holder's session (twice, as ZooKeeper may expire a session
                // up to a tick late), else this one's.
                Some((_, owner))
                    if owner.host == hostname()
                        && !pid_alive(owner.pid)
                        && t0.elapsed()
                            < 2 * owner
                                .session_secs
                                .map_or(self.patience, Duration::from_secs)
                                + Duration::from_secs(5) =>
                {
                    if !told {
                        tracing::warn!(holder = %owner, "the lock's holder, a process of this host, is gone; waiting for ZooKeeper to expire its session");
                        told = true;
                    }
                    tokio::time::sleep(RETRY).await;
                }
                other => {
                    let _ = self.client.delete(&mine, None).await;
                    // The path named is the holder's own lock node: removing it by hand (when
                    // its holder is known dead) frees the lock and nothing else.
                    let (path, holder) = other.map_or_else(
                        || (self.dir.clone(), "nobody".to_string()),
                        |(p, o)| (p, o.to_string()),
                    );
                    return Err(JournalError::Locked {
                        path: path.into(),
                        holder,
                    });
                }
            }
        }
    }

    async fn load(&self) -> Result<Vec<Entry>, JournalError> {
        let entries = format!("{}/entries", self.dir);
        let mut names = match self.patiently(|| self.client.list_children(&entries)).await {
            Err(zk::Error::NoNode) if self.read_only => Vec::new(),
            r => r.map_err(|e| self.err(e))?,
        };
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let path = format!("{entries}/{name}");
            let (data, _) = self
                .patiently(|| self.client.get_data(&path))
                .await
                .map_err(|e| self.err(format!("reading {path}: {e}")))?;
            let entry = serde_json::from_slice(&data).map_err(|e| {
                self.err(format!(
                    "{path} is not a rollout journal entry ({e}): a corrupt or foreign znode; \
                     move it aside or abort the rollout"
                ))
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// One transaction: this orchestrator's lock node still exists, the entry is created,
    /// the summary is set if it has not changed since this orchestrator's last append.
    /// While ZooKeeper is unreachable it is retried within the session timeout; a retry
    /// whose first try was in fact committed finds the summary holding this entry, and
    /// records nothing twice.
    async fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let Some(mine) = self.mine.clone() else {
            return Err(self.err("an append without the lock"));
        };
        let data = serde_json::to_vec(entry).map_err(|e| self.err(e))?;
        let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::new(&self.acl));
        let summary = self.summary();
        let until = tokio::time::Instant::now() + self.patience;
        let mut retried = false;
        // The summary's version is known before the first try: a retry that finds it moved
        // and holding this entry knows that its first try was committed.
        let mut version = match self.summary_version {
            Some(v) => v,
            None => self.summary_now().await?.1,
        };
        loop {
            let mut writer = self.client.new_multi_writer();
            writer
                .add_check_version(&mine, 0)
                .and_then(|()| writer.add_create(&format!("{}/entries/e-", self.dir), &data, &opts))
                .and_then(|()| writer.add_set_data(&summary, &data, Some(version)))
                .map_err(|e| self.err(e))?;
            match writer.commit().await {
                Ok(results) => {
                    self.summary_version = match results.get(2) {
                        Some(zk::MultiWriteResult::SetData { stat }) => Some(stat.version),
                        _ => None,
                    };
                    return Ok(());
                }
                Err(zk::MultiWriteError::OperationFailed { index: 0, .. }) => {
                    return Err(self.lost().await);
                }
                Err(zk::MultiWriteError::OperationFailed { index: 2, .. }) => {
                    // The summary moved: this append's own earlier try was committed before
                    // the connection dropped, or the version known here is stale.
                    let (now, moved) = self.summary_now().await?;
                    if retried && now == data {
                        self.summary_version = Some(moved);
                        return Ok(());
                    }
                    if moved == version {
                        return Err(
                            self.err(format!("{summary} could not be set; nothing was recorded"))
                        );
                    }
                    version = moved;
                    self.summary_version = Some(moved);
                }
                Err(zk::MultiWriteError::RequestFailed { source })
                    if unreachable(&source) && tokio::time::Instant::now() < until =>
                {
                    tracing::warn!(at = %self.at, "ZooKeeper unreachable; waiting within the session");
                    retried = true;
                    tokio::time::sleep(RETRY).await;
                }
                Err(zk::MultiWriteError::RequestFailed {
                    source: zk::Error::SessionExpired | zk::Error::ClientClosed,
                }) => return Err(self.lost().await),
                Err(zk::MultiWriteError::RequestFailed { source }) if unreachable(&source) => {
                    return Err(self.err(format!(
                        "appending: {source}; nothing more is recorded or done (ZooKeeper was \
                         not reachable within the session timeout, {} s)",
                        self.patience.as_secs()
                    )));
                }
                Err(e) => {
                    return Err(self.err(format!(
                        "appending: {e}; nothing was recorded, and nothing more is done"
                    )));
                }
            }
        }
    }

    /// The summary's data and version.
    async fn summary_now(&self) -> Result<(Vec<u8>, i32), JournalError> {
        let summary = self.summary();
        self.patiently(|| self.client.get_data(&summary))
            .await
            .map(|(data, stat)| (data, stat.version))
            .map_err(|e| self.err(format!("reading {summary}: {e}")))
    }

    /// This orchestrator's lock node still exists (a transaction that only checks it, so
    /// that the answer is ZooKeeper's ordered view, not a cached read).
    async fn fence(&self) -> Result<(), JournalError> {
        let Some(mine) = &self.mine else {
            return Err(self.err("an action without the lock"));
        };
        let result = self
            .patiently(|| async {
                let mut writer = self.client.new_multi_writer();
                writer.add_check_version(mine, 0)?;
                match writer.commit().await {
                    Ok(_) => Ok(true),
                    Err(zk::MultiWriteError::OperationFailed { .. }) => Ok(false),
                    Err(zk::MultiWriteError::RequestFailed { source }) => Err(source),
                }
            })
            .await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) | Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => {
                Err(self.lost().await)
            }
            Err(e) if unreachable(&e) => Err(self.err(format!(
                "checking the lock: {e}; nothing more is done (ZooKeeper was not reachable \
                 within the session timeout, {} s)",
                self.patience.as_secs()
            ))),
            Err(e) => Err(self.err(format!("checking the lock: {e}; nothing more is done"))),
        }
    }

    async fn lost(&self) -> JournalError {
        let holder = match self.holder().await {
            Ok(Some((_, o))) => format!("the lock is now held by {o}"),
            Ok(None) => "nobody holds it now".to_string(),
            Err(_) => "who holds it now is unknown".to_string(),
        };
        JournalError::LockLost {
            at: self.dir.clone(),
            holder,
        }
    }
}

/// Errors that say ZooKeeper could not be reached or did not answer (the connection lost or
/// reset, a request timed out), as opposed to an answer.
fn unreachable(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss
            | zk::Error::Timeout
            | zk::Error::Custom(_)
            | zk::Error::UnexpectedError(_)
    )
}

/// Whether process `pid` of this host exists (Linux `/proc`).
fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Seconds since the Unix epoch, for people reading who holds the lock since when: the one
/// wall-clock read of this crate, which no wait depends on.
#[allow(clippy::disallowed_methods)]
fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
