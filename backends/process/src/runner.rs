//! How a command reaches a host: `sh -c` on this machine, or the system `ssh` client.
//!
//! Every command runs with a deadline, with stdin closed, and returns its exit status, stdout
//! and stderr. The exit status is only as trustworthy as the command: the node code reads it
//! for its own small helper commands and never for the deployment's start and stop scripts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::error::ProcessError;

/// How long the output pipes may stay open after the command exited: a daemon it started in
/// the background without redirecting its output would otherwise hold them forever.
const PIPE_GRACE: Duration = Duration::from_millis(300);

/// The most output kept per stream, in bytes; older output is dropped first.
const MAX_OUTPUT: usize = 256 * 1024;

/// The ssh status for a connection failure (and for a remote command that exits with 255).
const SSH_FAILED: i32 = 255;

/// Where a command runs.
///
/// In a cluster file (TOML or JSON), tagged by `kind`:
/// `{ kind = "local" }` or `{ kind = "ssh", host = "10.0.0.7", user = "openmldb" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Runner {
    /// This machine: `sh -c <command>`.
    #[default]
    Local,
    /// Another host, through the system `ssh` client: `BatchMode=yes` (never a prompt),
    /// connection reuse (`ControlMaster=auto`, `ControlPath=<control_dir>/%C`,
    /// `ControlPersist=60`), `ConnectTimeout=10`, and host-key checking as the user's ssh
    /// configuration has it (this crate never turns it off). The remote command is
    /// `sh -c '<command>'`, single-quoted, whatever the remote login shell.
    Ssh {
        /// The host name or address, as `ssh` takes it.
        host: String,
        /// The remote user (`ssh -l`); `None` leaves it to ssh's configuration.
        #[serde(default)]
        user: Option<String>,
        /// The remote port (`ssh -p`); `None` leaves it to ssh's configuration.
        #[serde(default)]
        port: Option<u16>,
        /// More arguments for `ssh`, placed before the host, such as `["-i", "/keys/ops"]`.
        /// Options that turn host-key checking off are refused.
        #[serde(default)]
        options: Vec<String>,
        /// Where the shared connections' sockets live, created with mode 0700 when missing;
        /// `None` is `$HOME/.ssh/rollout`. The path must not contain whitespace.
        #[serde(default)]
        control_dir: Option<PathBuf>,
    },
}

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandOutput {
    /// The exit code, or `None` when a signal ended the command.
    pub code: Option<i32>,
    /// Its standard output (lossy UTF-8, at most the last 256 KiB).
    pub stdout: String,
    /// Its standard error (lossy UTF-8, at most the last 256 KiB).
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last `lines` lines of stdout and of stderr, each under its name, for messages;
    /// `(no output)` when both are empty.
    pub fn tail(&self, lines: usize) -> String {
        let mut parts = Vec::new();
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.trim().is_empty() {
                parts.push(format!("{name}:\n{}", last_lines(text, lines)));
            }
        }
        if parts.is_empty() {
            "(no output)".to_string()
        } else {
            parts.join("\n")
        }
    }

    /// The exit status for messages: `exit status 3` or `killed by a signal`.
    pub fn status_text(&self) -> String {
        match self.code {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_string(),
        }
    }
}

impl Runner {
    /// A runner for `host` over ssh, with ssh's own defaults for the user, port and keys.
    pub fn ssh(host: impl Into<String>) -> Self {
        Self::Ssh {
            host: host.into(),
            user: None,
            port: None,
            options: Vec::new(),
            control_dir: None,
        }
    }

    /// The host commands run on: `localhost`, or the ssh host.
    pub fn host(&self) -> &str {
        match self {
            Self::Local => "localhost",
            Self::Ssh { host, .. } => host,
        }
    }

    /// Checks the settings: a host that is not empty and cannot be read as an ssh option, a
    /// user likewise, a control dir without whitespace, and no option that turns host-key
    /// checking off.
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let Self::Ssh {
            host,
            user,
            options,
            control_dir,
            ..
        } = self
        else {
            return Ok(());
        };
        let bad = |s: &str| s.is_empty() || s.starts_with('-') || s.contains(char::is_whitespace);
        if bad(host.as_str()) {
            return Err(format!(
                "ssh host {host:?} is empty, starts with '-' or has spaces"
            ));
        }
        if user.as_deref().is_some_and(bad) {
            return Err(format!(
                "ssh user {user:?} is empty, starts with '-' or has spaces"
            ));
        }
        if let Some(dir) = control_dir
            && (dir.to_string_lossy().contains(char::is_whitespace) || !dir.is_absolute())
        {
            return Err(format!(
                "ssh control_dir {} must be an absolute path without whitespace",
                dir.display()
            ));
        }
        for o in options {
            let flat: String = o
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_whitespace() { '=' } else { c })
                .collect();
            if flat.contains("stricthostkeychecking=no")
                || flat.contains("stricthostkeychecking=off")
            {
                return Err(format!(
                    "ssh option {o:?} turns host-key checking off, which is refused; record the \
                     host's key in known_hosts instead"
                ));
            }
        }
        Ok(())
    }

    /// Runs `script` with `sh -c` on the host and waits for it, at most `deadline`.
    /// `what` names the command in errors and logs.
    ///
    /// The command runs in its own process group with stdin closed. Once it exits, its output
    /// pipes get 300 ms to close (a daemon it started may hold them). A non-zero exit status
    /// is not an error: check [`CommandOutput::code`].
    ///
    /// # Errors
    /// [`ProcessError::Spawn`] when it cannot be launched, [`ProcessError::Timeout`] past the
    /// deadline (the command is killed; what it started in the background is not), and for
    /// ssh: [`ProcessError::HostKeyChanged`] when ssh refused the host key,
    /// [`ProcessError::Unreachable`] for any other exit status 255.
    ///
    /// # Cancel safety
    /// Dropping the future kills the command (the local `sh` or the `ssh` client); a remote
    /// command may go on running on its host.
    pub async fn run(
        &self,
        what: &str,
        script: &str,
        deadline: Duration,
    ) -> Result<CommandOutput, ProcessError> {
        // The builder is not kept across an await.
        let mut child = {
            let mut cmd = self.command(what, script)?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .process_group(0);
            cmd.spawn().map_err(|source| ProcessError::Spawn {
                host: self.host().to_string(),
                what: what.to_string(),
                source,
            })?
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
        let finished = tokio::time::timeout(deadline, async {
            let wait = async {
                let status = child.wait().await;
                let _ = exited_tx.send(());
                status
            };
            let read = async {
                let pipes =
                    async { tokio::join!(drain(stdout, &mut out), drain(stderr, &mut err)) };
                let grace = async {
                    let _ = exited_rx.await;
                    tokio::time::sleep(PIPE_GRACE).await;
                };
                tokio::select! {
                    _ = pipes => {}
                    () = grace => {}
                }
            };
            let (status, ()) = tokio::join!(wait, read);
            status
        })
        .await;
        let output = |code| CommandOutput {
            code,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        };
        let status = match finished {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => {
                return Err(ProcessError::Spawn {
                    host: self.host().to_string(),
                    what: what.to_string(),
                    source,
                });
            }
            Err(_elapsed) => {
                // `kill` also reaps it; kill_on_drop would only send the signal.
                let _ = child.kill().await;
                return Err(ProcessError::Timeout {
                    host: self.host().to_string(),
                    what: what.to_string(),
                    after: deadline,
                    output: output(None).tail(5),
                });
            }
        };
        let result = output(status.code());
        if matches!(self, Self::Ssh { .. }) && result.code == Some(SSH_FAILED) {
            let host = self.host().to_string();
            let what = what.to_string();
            if result.stderr.contains("Host key verification failed")
                || result
                    .stderr
                    .contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            {
                return Err(ProcessError::HostKeyChanged { host, what });
            }
            return Err(ProcessError::Unreachable {
                host,
                what,
                stderr: last_lines(&result.stderr, 5),
            });
        }
        Ok(result)
    }

    /// Runs `script` in `dir` on the host: `cd '<dir>' || exit 97`, then the script.
    /// Exit status 97 therefore means that `dir` is missing (or that the script returned it).
    ///
    /// # Errors
    /// As [`Runner::run`].
    pub async fn run_in(
        &self,
        dir: &Path,
        what: &str,
        script: &str,
        deadline: Duration,
    ) -> Result<CommandOutput, ProcessError> {
        let script = format!("cd {} || exit {NO_DIR}\n{script}", shell_quote_path(dir));
        self.run(what, &script, deadline).await
    }

    /// The command that runs `script` on the host.
    fn command(&self, what: &str, script: &str) -> Result<Command, ProcessError> {
        match self {
            Self::Local => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(script);
                Ok(cmd)
            }
            Self::Ssh {
                host,
                user,
                port,
                options,
                control_dir,
            } => {
                let dir = match control_dir {
                    Some(dir) => dir.clone(),
                    None => std::env::var_os("HOME")
                        .map(|home| PathBuf::from(home).join(".ssh").join("rollout"))
                        .ok_or_else(|| ProcessError::InvalidConfig {
                            at: host.clone(),
                            reason: "HOME is not set, so the ssh control_dir must be given"
                                .to_string(),
                        })?,
                };
                ensure_private_dir(&dir).map_err(|source| ProcessError::Spawn {
                    host: host.clone(),
                    what: format!("{what} (creating the ssh control dir {})", dir.display()),
                    source,
                })?;
                // ssh expands `%` tokens in ControlPath: a `%` of the directory is doubled.
                let control_path = format!(
                    "ControlPath={}/%C",
                    dir.display().to_string().replace('%', "%%")
                );
                let mut cmd = Command::new("ssh");
                cmd.args(["-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o"])
                    .arg(control_path)
                    .args(["-o", "ControlPersist=60", "-o", "ConnectTimeout=10"]);
                if let Some(user) = user {
                    cmd.arg("-l").arg(user);
                }
                if let Some(port) = port {
                    cmd.arg("-p").arg(port.to_string());
                }
                cmd.args(options)
                    .arg("--")
                    .arg(host)
                    .arg(format!("sh -c {}", shell_quote(script)));
                Ok(cmd)
            }
        }
    }
}

/// The exit status [`Runner::run_in`] gives when the directory is missing.
pub(crate) const NO_DIR: i32 = 97;

/// Quotes `s` for a POSIX shell: between single quotes, each `'` written as `'\''`.
///
/// ```
/// use rollout_process::shell_quote;
///
/// assert_eq!(shell_quote("it's"), r"'it'\''s'");
/// assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
/// ```
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes a path for a POSIX shell, as [`shell_quote`] (a path that is not UTF-8 is read
/// lossily).
pub fn shell_quote_path(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads `pipe` to its end into `buf`, keeping at most [`MAX_OUTPUT`] bytes (the newest).
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, buf: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_OUTPUT {
                    let cut = buf.len() - MAX_OUTPUT;
                    buf.drain(..cut);
                }
            }
        }
    }
}

/// Creates `dir` (and its parents) with mode 0700 where missing.
fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
