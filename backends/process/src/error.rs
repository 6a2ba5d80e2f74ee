//! The crate's error: every variant names the host or the node, what was being done, and what
//! to do next.

use std::time::Duration;

use rollout_core::{ErrorClass, NodeId};

use crate::files::FilesError;

/// What went wrong running a command on a host or controlling a node's process.
///
/// Runner failures ([`Spawn`](Self::Spawn), [`Timeout`](Self::Timeout),
/// [`Unreachable`](Self::Unreachable), [`HostKeyChanged`](Self::HostKeyChanged),
/// [`Command`](Self::Command), [`BadOutput`](Self::BadOutput)) name the host; the others name
/// the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The command could not be launched on this machine (`sh` or `ssh` missing, no
    /// processes left, the ssh control directory could not be created).
    #[error("{host}: could not launch {what}; check that `sh` and `ssh` are installed and on PATH")]
    Spawn {
        /// The host the command was for (`localhost` for a local runner).
        host: String,
        /// The command, or what it was for.
        what: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A command did not finish within its deadline and was killed (only the command itself:
    /// what it started in the background keeps running).
    #[error(
        "{host}: {what} did not finish within {after:?} and was killed; its last output: {output}; \
         check the host (load, a hung mount, a prompt) or raise the deadline"
    )]
    Timeout {
        /// The host.
        host: String,
        /// The command, or what it was for.
        what: String,
        /// The deadline.
        after: Duration,
        /// The last lines it wrote.
        output: String,
    },

    /// ssh exited with status 255: the host could not be reached or the connection broke.
    /// A remote command that itself exits with 255 is reported the same way.
    #[error(
        "{host}: ssh could not reach the host or lost the connection (exit status 255) while \
         running {what}: {stderr}; the command may or may not have run; check `ssh {host} true` \
         by hand"
    )]
    Unreachable {
        /// The host.
        host: String,
        /// The command, or what it was for.
        what: String,
        /// The end of ssh's stderr.
        stderr: String,
    },

    /// ssh refused the host's key ("Host key verification failed"): it is unknown or it
    /// changed since it was recorded in `known_hosts`. Nothing was run.
    #[error(
        "{host}: ssh refused the host key (unknown, or changed since it was recorded in \
         known_hosts), so nothing was run ({what}); verify the host's key out of band, update \
         known_hosts, then retry"
    )]
    HostKeyChanged {
        /// The host.
        host: String,
        /// The command, or what it was for.
        what: String,
    },

    /// A helper command whose exit status is trusted (reading a file, hashing the config
    /// files, switching a symlink) failed.
    #[error("{host}: {what} failed ({status}): {stderr}; run it by hand on the host to see why")]
    Command {
        /// The host.
        host: String,
        /// What was being done.
        what: String,
        /// The exit status, or the signal that ended it.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },

    /// The host answered with something this crate cannot read.
    #[error("{host}: {what}: cannot read the answer {text:?}: {reason}")]
    BadOutput {
        /// The host.
        host: String,
        /// What was being read.
        what: String,
        /// Why it did not parse, and what to check.
        reason: String,
        /// The start of the answer.
        text: String,
    },

    /// The deployment directory does not exist on the host.
    #[error(
        "node {node} on {host}: the deploy dir {dir} does not exist; fix deploy_dir or install the deployment"
    )]
    NoDeployDir {
        /// The node.
        node: NodeId,
        /// The host.
        host: String,
        /// The directory.
        dir: String,
    },

    /// A pid file holds something that is not a process id.
    #[error(
        "node {node} on {host}: the pid file {file} holds {content:?}, not a process id; check by \
         hand that no process of the component runs, then remove the file"
    )]
    BadPidFile {
        /// The node.
        node: NodeId,
        /// The host.
        host: String,
        /// The pid file, relative to the deploy dir.
        file: String,
        /// What it holds (its first 64 bytes, without whitespace).
        content: String,
    },

    /// `start` found the component (or its monitor) already running.
    #[error(
        "node {node}: refusing to start: {component} already runs (pid {pid} from {file}); stop it first"
    )]
    AlreadyRunning {
        /// The node.
        node: NodeId,
        /// The component (the pid file's name without `.pid`).
        component: String,
        /// The running process.
        pid: u32,
        /// The pid file that names it.
        file: String,
    },

    /// The process exited during its start, or never came up.
    #[error(
        "node {node}: the start failed: {reason}; see the component's log; the start command's \
         last output:\n{output}"
    )]
    StartFailed {
        /// The node.
        node: NodeId,
        /// What was seen.
        reason: String,
        /// The last lines of the start command's stdout and stderr.
        output: String,
    },

    /// The process runs but was not ready within the start deadline.
    #[error(
        "node {node}: not ready {after:?} after the start command returned: still waiting for \
         {waiting_for}; check the component's log, or raise start_timeout_secs; the start \
         command's last output:\n{output}"
    )]
    StartTimeout {
        /// The node.
        node: NodeId,
        /// The deadline.
        after: Duration,
        /// The condition that did not hold.
        waiting_for: String,
        /// The last lines of the start command's stdout and stderr.
        output: String,
    },

    /// A process of the component survived the stop command, SIGTERM and SIGKILL.
    #[error(
        "node {node} on {host}: {component} still runs after SIGKILL (pids {pids}); it may be \
         stuck in the kernel (state D) or owned by another user; check the host"
    )]
    StopFailed {
        /// The node.
        node: NodeId,
        /// The host.
        host: String,
        /// The component.
        component: String,
        /// The survivors.
        pids: String,
    },

    /// A change or revert was refused before anything was touched.
    #[error("node {node}: refusing {what}: {reason}; nothing was changed")]
    Refused {
        /// The node.
        node: NodeId,
        /// What was asked.
        what: String,
        /// Why it is refused.
        reason: String,
    },

    /// Editing or restoring a config file failed.
    #[error(
        "node {node}: {what} {file} failed: {source}; nothing was changed by this edit, and \
         files edited before it were restored from their `.bak` backups"
    )]
    Files {
        /// The node.
        node: NodeId,
        /// `editing` or `restoring`.
        what: &'static str,
        /// The file, as a path on the host.
        file: String,
        /// What the file editor said.
        #[source]
        source: Box<FilesError>,
    },

    /// The node's agent refused the call or the operation failed there.
    #[error("node {node}: {what} through the agent at {agent} failed: {reason}")]
    Agent {
        /// The node.
        node: NodeId,
        /// The agent's URL.
        agent: String,
        /// What was asked.
        what: String,
        /// What the agent said.
        reason: String,
        /// Whether the agent could not be reached or did not answer in time (a retry may
        /// succeed), rather than refused.
        transient: bool,
        /// Whether the agent refused the request as invalid before touching anything (an
        /// edit of a file the component does not have, a path outside its deploy dir).
        refused: bool,
    },

    /// The node's configuration is invalid.
    #[error("{at}: invalid configuration: {reason}")]
    InvalidConfig {
        /// The node or host it is about.
        at: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl ProcessError {
    /// How the engine should treat the error: a lost connection, a command past its
    /// deadline or an agent that cannot be reached is [`Transient`](ErrorClass::Transient), anything else
    /// [`Fatal`](ErrorClass::Fatal). A host key that changed is fatal: only an operator may
    /// accept a new key.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::Agent {
                transient: true, ..
            } => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        }
    }
}

impl ProcessError {
    /// Whether the request was refused before anything was touched, here or by the node's
    /// agent: bad input (an edit of a file the node does not have, a path outside its deploy
    /// dir), not a failure of the node.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. } | Self::Agent { refused: true, .. }
        )
    }
}

/// `Result` with [`ProcessError`].
pub type Result<T, E = ProcessError> = std::result::Result<T, E>;
