//! [`CommandNode`]: a process on a host, driven by the deployment's own start and stop
//! commands, watched through its pid files and `/proc`.
//!
//! The deployment's scripts are not trusted: OpenMLDB's `start.sh` exits 0 even when the
//! start failed, and its `stop` returns before the process has exited. So a start is done
//! when the pid file names a live process that listens and answers its health check, and a
//! stop when no process of the component runs, whatever the commands' exit status.

use std::time::Duration;

use rollout_core::{ApplyRecord, Change, Node, NodeId, NodeStatus};
use tokio::time::Instant;

use crate::config::Commands;
use crate::error::ProcessError;
use crate::procfs::{self, PidFile, Probe};
use crate::runner::{CommandOutput, NO_DIR, Runner, shell_quote_path};

/// How often waits poll the host.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// The deadline of one health or version request, and of one TCP connect.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// How many lines of the start command's output an error shows.
pub(crate) const TAIL: usize = 20;

/// A node whose process runs on a host, started and stopped by shell commands.
///
/// Build one with [`CommandNode::new`] from [`Commands`]. It implements [`Node`]:
/// - `status`: the pid file (the child pid file in monitor mode) names a live process
///   (`/proc/<pid>` exists and is not a zombie); `boot` is `<pid>@<start ticks>` (the start
///   time in clock ticks since the host booted), so it changes on every start; `version`
///   comes from the process (the version URL or command) and `config_digest` is the SHA-256
///   of the config files' `sha256sum` listing; a pid file whose process is gone is reported
///   in `exited`.
/// - `stop`: runs the stop command, waits up to `stop_timeout` for every process of the
///   component to exit, then sends SIGTERM (the monitor first) and waits a third of it, then
///   SIGKILL (logged as a warning). Returns once nothing of the component runs.
/// - `start`: refuses when something of the component runs, runs the start command, then
///   waits until the pid file names a live process, the `listen` address accepts a
///   connection and the health URL answers 2xx; a process that exits meanwhile fails the
///   start at once.
/// - `apply`: a restart changes nothing; a config change edits the listed config files
///   (backed up to `<file>.bak`), refusing any other file; an upgrade switches the `current`
///   symlink to `<packages_dir>/<version>`. `revert` puts back what `apply` recorded.
/// - `is_applied`: an upgrade is applied when the running process reports the version; a
///   config change when every edited file holds its value and the process started after the
///   file was last modified (to the second).
#[derive(Clone, Debug)]
pub struct CommandNode {
    pub(crate) c: std::sync::Arc<Commands>,
    pub(crate) http: reqwest::Client,
}

/// A live process of the component, as first seen.
#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
    /// Whether it is the monitor (monitor mode's main pid file).
    pub(crate) monitor: bool,
}

/// One pid file as read, checked against `/proc`.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    /// The file, relative to the deploy dir.
    pub(crate) file: String,
    /// Whether the file exists.
    pub(crate) present: bool,
    /// The pid it names.
    pub(crate) pid: Option<u32>,
    /// Its process, when it runs.
    pub(crate) live: Option<procfs::Proc>,
}

/// The component's pid files: the main one (the monitor's in monitor mode) and the child's.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) main: Slot,
    pub(crate) child: Option<Slot>,
}

impl Seen {
    /// The component's own process: the child in monitor mode.
    pub(crate) fn component(&self) -> &Slot {
        self.child.as_ref().unwrap_or(&self.main)
    }

    /// The live processes, the monitor first.
    pub(crate) fn live(&self) -> Vec<Tracked> {
        let monitor = self.child.is_some();
        [(&self.main, monitor)]
            .into_iter()
            .chain(self.child.iter().map(|c| (c, false)))
            .filter_map(|(slot, monitor)| {
                let live = slot.live?;
                Some(Tracked {
                    pid: slot.pid?,
                    start_ticks: live.start_ticks,
                    monitor,
                })
            })
            .collect()
    }
}

impl CommandNode {
    /// A node driven as `commands` says.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] when a setting is invalid: a relative `deploy_dir`, a
    /// pid or config file outside it, an empty command, a zero timeout, an ssh host or option
    /// that [`Runner::validate`] refuses.
    pub fn new(commands: Commands) -> Result<Self, ProcessError> {
        let at = commands.id.to_string();
        let c = commands
            .validate()
            .map_err(|reason| ProcessError::InvalidConfig { at, reason })?;
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Ok(Self {
            c: std::sync::Arc::new(c),
            http,
        })
    }

    /// Its settings, with relative paths normalized.
    pub fn commands(&self) -> &Commands {
        &self.c
    }

    /// Where its commands run.
    pub fn runner(&self) -> &Runner {
        &self.c.runner
    }

    /// The component's name for messages: the pid file's name without its extension
    /// (`tablet` for `bin/tablet.pid`).
    pub fn component(&self) -> String {
        self.c.pid_file.file_stem().map_or_else(
            || self.c.id.to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    }

    pub(crate) fn host(&self) -> String {
        self.c.runner.host().to_string()
    }

    /// Reads the pid files and the processes they (and `extra`) name.
    pub(crate) async fn read(&self, extra: &[u32]) -> Result<(Seen, Probe), ProcessError> {
        let mut files = vec![self.c.pid_file.as_path()];
        files.extend(self.c.child_pid_file.as_deref());
        let script = procfs::script(&files, extra);
        let what = "reading the pid files and /proc";
        let out = self
            .c
            .runner
            .run_in(&self.c.deploy_dir, what, &script, self.c.command_timeout)
            .await?;
        if out.code == Some(NO_DIR) {
            return Err(ProcessError::NoDeployDir {
                node: self.c.id.clone(),
                host: self.host(),
                dir: self.c.deploy_dir.display().to_string(),
            });
        }
        self.check(&out, what)?;
        let probe =
            procfs::parse(&out.stdout, files.len()).map_err(|reason| ProcessError::BadOutput {
                host: self.host(),
                what: what.to_string(),
                reason: format!(
                    "{reason}; check that the host runs Linux with /proc and a POSIX sh"
                ),
                text: out.stdout.chars().take(300).collect(),
            })?;
        let slot = |i: usize, file: &std::path::Path| -> Result<Slot, ProcessError> {
            let file = file.display().to_string();
            let (present, pid) = match &probe.files[i] {
                PidFile::Absent => (false, None),
                PidFile::Empty => (true, None),
                PidFile::Pid(pid) => (true, Some(*pid)),
                PidFile::Garbage(content) => {
                    return Err(ProcessError::BadPidFile {
                        node: self.c.id.clone(),
                        host: self.host(),
                        file,
                        content: content.clone(),
                    });
                }
            };
            let live = pid.and_then(|p| probe.alive(p));
            Ok(Slot {
                file,
                present,
                pid,
                live,
            })
        };
        let main = slot(0, self.c.pid_file.as_path())?;
        let child = self
            .c
            .child_pid_file
            .as_deref()
            .map(|f| slot(1, f))
            .transpose()?;
        Ok((Seen { main, child }, probe))
    }

    /// Fails with [`ProcessError::Command`] unless `out` is a success.
    pub(crate) fn check(&self, out: &CommandOutput, what: &str) -> Result<(), ProcessError> {
        if out.success() {
            return Ok(());
        }
        Err(ProcessError::Command {
            host: self.host(),
            what: what.to_string(),
            status: out.status_text(),
            stderr: crate::runner::last_lines(&out.stderr, 5),
        })
    }

    async fn status_now(&self) -> Result<NodeStatus, ProcessError> {
        let (seen, _) = self.read(&[]).await?;
        let comp = seen.component();
        match (comp.pid, comp.live) {
            (Some(pid), Some(live)) => {
                let mut status = NodeStatus::running().boot(format!("{pid}@{}", live.start_ticks));
                if let Some(version) = self.version().await {
                    status = status.version(version);
                }
                match self.config_digest().await {
                    Ok(Some(digest)) => status = status.config_digest(digest),
                    Ok(None) => {}
                    Err(e) => tracing::debug!(node = %self.c.id, error = %e, "no config digest"),
                }
                Ok(status)
            }
            (Some(pid), None) => {
                let mut reason = format!("pid {pid} from {} is gone", comp.file);
                if seen.child.is_some()
                    && seen.main.live.is_some()
                    && let Some(mpid) = seen.main.pid
                {
                    reason.push_str(&format!(
                        " (its monitor, pid {mpid} from {}, may restart it)",
                        seen.main.file
                    ));
                }
                Ok(NodeStatus::stopped().exited(reason))
            }
            (None, _) if comp.present => {
                Ok(NodeStatus::stopped().exited(format!("{} is empty", comp.file)))
            }
            (None, _) => Ok(NodeStatus::stopped()),
        }
    }

    /// The running version, from the version URL or command; `None` when it cannot be had.
    pub(crate) async fn version(&self) -> Option<String> {
        if let Some(url) = &self.c.version_url {
            let answer = match self.http.get(url).send().await {
                Ok(r) if r.status().is_success() => r.text().await.ok(),
                Ok(r) => {
                    tracing::debug!(node = %self.c.id, %url, status = %r.status(), "no version");
                    None
                }
                Err(e) => {
                    tracing::debug!(node = %self.c.id, %url, error = %e, "no version");
                    None
                }
            };
            return answer.as_deref().and_then(first_line);
        }
        let command = self.c.version_command.as_deref()?;
        let what = format!("the version command `{command}`");
        match self
            .c
            .runner
            .run_in(&self.c.deploy_dir, &what, command, self.c.command_timeout)
            .await
        {
            Ok(out) if out.success() => first_line(&out.stdout),
            Ok(out) => {
                tracing::debug!(node = %self.c.id, output = %out.tail(3), "no version");
                None
            }
            Err(e) => {
                tracing::debug!(node = %self.c.id, error = %e, "no version");
                None
            }
        }
    }

    /// The SHA-256 of `sha256sum`'s listing of the config files as they are on disk now;
    /// `None` without config files.
    pub(crate) async fn config_digest(&self) -> Result<Option<String>, ProcessError> {
        if self.c.config_files.is_empty() {
            return Ok(None);
        }
        let files: Vec<String> = self
            .c
            .config_files
            .iter()
            .map(|f| shell_quote_path(f.as_path()))
            .collect();
        let script = format!(
            "sums=$(sha256sum -- {}) || exit 1\nprintf '%s\\n' \"$sums\" | sha256sum",
            files.join(" ")
        );
        let what = "hashing the config files";
        let out = self
            .c
            .runner
            .run_in(&self.c.deploy_dir, what, &script, self.c.command_timeout)
            .await?;
        self.check(&out, what)?;
        let digest = out.stdout.split_whitespace().next().unwrap_or("");
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ProcessError::BadOutput {
                host: self.host(),
                what: what.to_string(),
                reason: "not a SHA-256 digest; check that the host has sha256sum (GNU coreutils \
                         or BusyBox)"
                    .to_string(),
                text: out.stdout.chars().take(200).collect(),
            });
        }
        Ok(Some(digest.to_string()))
    }

    /// Why the process (which runs) is not ready yet, or `None` when it is.
    async fn not_ready(&self) -> Option<String> {
        if let Some(addr) = &self.c.listen {
            match tokio::time::timeout(HTTP_TIMEOUT, tokio::net::TcpStream::connect(addr.as_str()))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Some(format!("{addr} to accept connections ({e})")),
                Err(_) => return Some(format!("{addr} to accept connections (connect timed out)")),
            }
        }
        if let Some(url) = &self.c.health_url {
            match self.http.get(url).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => return Some(format!("{url} to answer 2xx (it answered {})", r.status())),
                Err(e) => return Some(format!("{url} to answer ({e})")),
            }
        }
        None
    }

    async fn start_now(&self) -> Result<(), ProcessError> {
        let (seen, _) = self.read(&[]).await?;
        if let Some(t) = seen.live().first() {
            let slot = if t.monitor || seen.child.is_none() {
                &seen.main
            } else {
                seen.component()
            };
            return Err(ProcessError::AlreadyRunning {
                node: self.c.id.clone(),
                component: self.component(),
                pid: t.pid,
                file: slot.file.clone(),
            });
        }
        // A pid file left by a process that died: not the new process until it changes.
        let stale = seen.component().pid;
        let what = format!("the start command `{}`", self.c.start);
        let out = self
            .c
            .runner
            .run_in(
                &self.c.deploy_dir,
                &what,
                &self.c.start,
                self.c.command_timeout,
            )
            .await?;
        tracing::info!(
            node = %self.c.id, host = self.c.runner.host(), status = %out.status_text(),
            "ran the start command (its exit status is not trusted)"
        );
        tracing::debug!(node = %self.c.id, output = %out.tail(TAIL), "start command output");
        let returned = Instant::now();
        let deadline = returned + self.c.start_timeout;
        loop {
            let (seen, _) = self.read(&[]).await?;
            let comp = seen.component();
            let waiting_for = match (comp.pid, comp.live) {
                (Some(_), Some(_)) => match self.not_ready().await {
                    None => {
                        tracing::info!(node = %self.c.id, "started and ready");
                        return Ok(());
                    }
                    Some(reason) => reason,
                },
                (Some(pid), None) if Some(pid) != stale => {
                    return Err(ProcessError::StartFailed {
                        node: self.c.id.clone(),
                        reason: format!("pid {pid} from {} exited", comp.file),
                        output: out.tail(TAIL),
                    });
                }
                _ => {
                    if returned.elapsed() >= self.c.pid_file_wait {
                        return Err(ProcessError::StartFailed {
                            node: self.c.id.clone(),
                            reason: format!(
                                "the start command returned and {} named no new process within \
                                 {:?}",
                                comp.file, self.c.pid_file_wait
                            ),
                            output: out.tail(TAIL),
                        });
                    }
                    format!("{} to name a new process", comp.file)
                }
            };
            if Instant::now() >= deadline {
                return Err(ProcessError::StartTimeout {
                    node: self.c.id.clone(),
                    after: self.c.start_timeout,
                    waiting_for,
                    output: out.tail(TAIL),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The first non-empty line of `text`, trimmed.
fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect())
}

impl Node for CommandNode {
    type Error = ProcessError;

    fn id(&self) -> &NodeId {
        &self.c.id
    }

    async fn stop(&self) -> Result<(), ProcessError> {
        self.stop_now().await
    }

    async fn start(&self) -> Result<(), ProcessError> {
        self.start_now().await
    }

    async fn status(&self) -> Result<NodeStatus, ProcessError> {
        self.status_now().await
    }

    async fn apply(&self, change: &Change) -> Result<ApplyRecord, ProcessError> {
        self.apply_change(change).await
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), ProcessError> {
        self.revert_record(record).await
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, ProcessError> {
        self.change_applied(change).await
    }
}
