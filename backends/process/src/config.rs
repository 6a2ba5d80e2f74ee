//! [`Commands`]: how one node's process is started, stopped, found and checked.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rollout_core::NodeId;
use serde::{Deserialize, Deserializer};

use crate::runner::Runner;

/// How one node's process is driven: the deployment's own start and stop commands, where its
/// pid files are, and how to tell that it is up.
///
/// Paths are paths on the node's host. `deploy_dir` is absolute; `pid_file`,
/// `child_pid_file` and `config_files` are relative to it and stay inside it.
///
/// Defaults: `runner` local, `stop_timeout_secs` 30, `start_timeout_secs` 120, `command_timeout_secs` 60,
/// `pid_file_wait_secs` 3; no child pid file, listen address, health or version check,
/// config files, packages dir or `current` link.
///
/// In a cluster file (shown as JSON; TOML has the same fields):
///
/// ```
/// use rollout_process::{CommandNode, Commands};
///
/// let commands: Commands = serde_json::from_str(r#"{
///     "id": "10.0.0.7:10921",
///     "runner": { "kind": "ssh", "host": "10.0.0.7", "user": "openmldb" },
///     "deploy_dir": "/opt/openmldb",
///     "start": "bash bin/start.sh start tablet mon",
///     "stop": "bash bin/start.sh stop tablet mon",
///     "pid_file": "bin/tablet.pid",
///     "child_pid_file": "bin/tablet.pid.child",
///     "listen": "10.0.0.7:10921",
///     "health_url": "http://10.0.0.7:10921/status",
///     "version_url": "http://10.0.0.7:10921/version",
///     "config_files": ["conf/tablet.flags"],
///     "stop_timeout_secs": 60
/// }"#).unwrap();
/// let node = CommandNode::new(commands).unwrap();
/// assert_eq!(node.component(), "tablet");
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    pub(crate) id: NodeId,
    #[serde(default)]
    pub(crate) runner: Runner,
    pub(crate) deploy_dir: PathBuf,
    pub(crate) start: String,
    pub(crate) stop: String,
    pub(crate) pid_file: PathBuf,
    #[serde(default)]
    pub(crate) child_pid_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) listen: Option<String>,
    #[serde(default)]
    pub(crate) health_url: Option<String>,
    #[serde(default)]
    pub(crate) version_url: Option<String>,
    #[serde(default)]
    pub(crate) version_command: Option<String>,
    #[serde(default)]
    pub(crate) config_files: Vec<PathBuf>,
    #[serde(default)]
    pub(crate) packages_dir: Option<PathBuf>,
    #[serde(default)]
    pub(crate) current_link: Option<PathBuf>,
    #[serde(
        rename = "stop_timeout_secs",
        default = "default_stop_timeout",
        deserialize_with = "secs"
    )]
    pub(crate) stop_timeout: Duration,
    #[serde(
        rename = "start_timeout_secs",
        default = "default_start_timeout",
        deserialize_with = "secs"
    )]
    pub(crate) start_timeout: Duration,
    #[serde(
        rename = "command_timeout_secs",
        default = "default_command_timeout",
        deserialize_with = "secs"
    )]
    pub(crate) command_timeout: Duration,
    #[serde(
        rename = "pid_file_wait_secs",
        default = "default_pid_file_wait",
        deserialize_with = "secs"
    )]
    pub(crate) pid_file_wait: Duration,
}

impl Commands {
    /// A node `id` on `runner`'s host, deployed in `deploy_dir`, started and stopped by the
    /// shell commands `start` and `stop` (run in `deploy_dir`, their exit status ignored),
    /// whose process id is in `pid_file` (relative to `deploy_dir`).
    pub fn new(
        id: impl Into<NodeId>,
        runner: Runner,
        deploy_dir: impl Into<PathBuf>,
        start: impl Into<String>,
        stop: impl Into<String>,
        pid_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            id: id.into(),
            runner,
            deploy_dir: deploy_dir.into(),
            start: start.into(),
            stop: stop.into(),
            pid_file: pid_file.into(),
            child_pid_file: None,
            listen: None,
            health_url: None,
            version_url: None,
            version_command: None,
            config_files: Vec::new(),
            packages_dir: None,
            current_link: None,
            stop_timeout: default_stop_timeout(),
            start_timeout: default_start_timeout(),
            command_timeout: default_command_timeout(),
            pid_file_wait: default_pid_file_wait(),
        }
    }

    /// Daemon mode with a monitor (OpenMLDB's `mon`): `pid_file` then holds the monitor's pid
    /// and this file (relative to `deploy_dir`, such as `bin/tablet.pid.child`) the
    /// component's. A stop signals the monitor first, so that it does not restart the
    /// component behind the rollout's back.
    #[must_use]
    pub fn child_pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.child_pid_file = Some(path.into());
        self
    }

    /// The `host:port` the process listens on once up; a start waits until it accepts a TCP
    /// connection from the orchestrator.
    #[must_use]
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// An HTTP URL that answers 2xx once the process is up (OpenMLDB `/status`); a start
    /// waits for it.
    #[must_use]
    pub fn health_url(mut self, url: impl Into<String>) -> Self {
        self.health_url = Some(url.into());
        self
    }

    /// An HTTP URL whose body is the running version (OpenMLDB `/version`). Takes
    /// precedence over [`version_command`](Self::version_command).
    #[must_use]
    pub fn version_url(mut self, url: impl Into<String>) -> Self {
        self.version_url = Some(url.into());
        self
    }

    /// A shell command, run in `deploy_dir`, whose first line of output is the running
    /// version.
    #[must_use]
    pub fn version_command(mut self, command: impl Into<String>) -> Self {
        self.version_command = Some(command.into());
        self
    }

    /// The config files (relative to `deploy_dir`) that changes may edit; their SHA-256
    /// digest is the status's `config_digest`.
    #[must_use]
    pub fn config_files<P: Into<PathBuf>>(mut self, files: impl IntoIterator<Item = P>) -> Self {
        self.config_files = files.into_iter().map(Into::into).collect();
        self
    }

    /// Upgrades: the directory (absolute) holding one directory per version, such as
    /// `/opt/openmldb/packages/0.9.2`, and the symlink (absolute) switched to the new one,
    /// such as `/opt/openmldb/current` (usually the `deploy_dir`).
    #[must_use]
    pub fn packages(
        mut self,
        packages_dir: impl Into<PathBuf>,
        current_link: impl Into<PathBuf>,
    ) -> Self {
        self.packages_dir = Some(packages_dir.into());
        self.current_link = Some(current_link.into());
        self
    }

    /// How long a stop waits after the stop command for the process to exit before it sends
    /// SIGTERM itself (then a third of it before SIGKILL). Default 30 s.
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// How long a start waits, after the start command returned, for the process to be up
    /// (pid file, port, health URL). Default 120 s.
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The deadline of each command run on the host (the start and stop commands too);
    /// past it the command is killed. Default 60 s.
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long after the start command returned the pid file may take to name a process
    /// before the start counts as failed. OpenMLDB's `start.sh` (and its `mon`) write it
    /// before they return, so this is only a margin. Default 3 s.
    #[must_use]
    pub fn pid_file_wait(mut self, wait: Duration) -> Self {
        self.pid_file_wait = wait;
        self
    }

    /// Checks the settings and normalizes the relative paths (`./conf/x` is `conf/x`).
    pub(crate) fn validate(mut self) -> Result<Self, String> {
        self.runner.validate()?;
        if !self.deploy_dir.is_absolute() {
            return Err(format!(
                "deploy_dir {} must be an absolute path",
                self.deploy_dir.display()
            ));
        }
        if self.start.trim().is_empty() || self.stop.trim().is_empty() {
            return Err("the start and stop commands must not be empty".into());
        }
        let dir = self.deploy_dir.clone();
        let inside_or = |what: &str, p: &Path| {
            inside(&dir, p).ok_or_else(|| {
                format!(
                    "{what} {} must be a file inside the deploy dir {}",
                    p.display(),
                    dir.display()
                )
            })
        };
        self.pid_file = inside_or("pid_file", self.pid_file.as_path())?;
        if let Some(child) = &self.child_pid_file {
            self.child_pid_file = Some(inside_or("child_pid_file", child.as_path())?);
        }
        self.config_files = self
            .config_files
            .iter()
            .map(|f| inside_or("config file", f.as_path()))
            .collect::<Result<_, _>>()?;
        for (what, p) in [
            ("packages_dir", &self.packages_dir),
            ("current_link", &self.current_link),
        ] {
            if let Some(p) = p
                && (!p.is_absolute() || p.to_string_lossy().contains('\n'))
            {
                return Err(format!("{what} {} must be an absolute path", p.display()));
            }
        }
        if self.packages_dir.is_some() != self.current_link.is_some() {
            return Err("packages_dir and current_link go together".into());
        }
        if let Some(listen) = &self.listen {
            let ok = listen.parse::<std::net::SocketAddr>().is_ok();
            if !ok {
                return Err(format!(
                    "listen {listen:?} must be IP:PORT, such as 10.0.0.7:10921 (the address the \
                     process accepts connections on)"
                ));
            }
        }
        for (what, url) in [
            ("health_url", &self.health_url),
            ("version_url", &self.version_url),
        ] {
            if let Some(url) = url {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && reqwest::Url::parse(url).is_ok();
                if !ok {
                    return Err(format!(
                        "{what} {url:?} must be an http:// or https:// URL, such as \
                         http://10.0.0.7:10921/status"
                    ));
                }
            }
        }
        if [self.stop_timeout, self.start_timeout, self.command_timeout]
            .iter()
            .any(Duration::is_zero)
        {
            return Err("stop, start and command timeouts must be more than zero".into());
        }
        Ok(self)
    }
}

/// `path` relative to `dir` with `.` components removed, when it names something strictly
/// inside `dir`: a relative path without `..`, or an absolute one under `dir`.
/// Symbolic links are not followed.
pub(crate) fn inside(dir: &Path, path: &Path) -> Option<PathBuf> {
    let rel = if path.is_absolute() {
        path.strip_prefix(dir).ok()?
    } else {
        path
    };
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_pid_file_wait() -> Duration {
    Duration::from_secs(3)
}

/// Reads a number of seconds (fractions allowed) as a `Duration`.
fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = f64::deserialize(d)?;
    Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_deploy_dir_only() {
        let dir = Path::new("/opt/db");
        let ok = |p: &str| inside(dir, Path::new(p)).map(|p| p.display().to_string());
        assert_eq!(ok("conf/a.flags").as_deref(), Some("conf/a.flags"));
        assert_eq!(ok("./conf/./a.flags").as_deref(), Some("conf/a.flags"));
        assert_eq!(ok("/opt/db/conf/a.flags").as_deref(), Some("conf/a.flags"));
        assert_eq!(ok("../db/conf/a.flags"), None);
        assert_eq!(ok("conf/../../etc/passwd"), None);
        assert_eq!(ok("/etc/passwd"), None);
        assert_eq!(ok("/opt/dbx/a"), None);
        assert_eq!(ok("."), None);
    }
}
