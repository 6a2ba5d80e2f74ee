//! Node implementations for rollout on real hosts: processes driven by the deployment's own
//! commands, here or over ssh.
//!
//! - [`Runner`]: how a command reaches its host, `sh -c` on this machine or the system `ssh`
//!   client (batch mode, shared connections, host-key checking left on), each command with a
//!   deadline.
//! - [`CommandNode`], configured by [`Commands`]: a [`rollout_core::Node`] whose process is
//!   started and stopped by the deployment's scripts (OpenMLDB's
//!   `bin/start.sh start|stop <component> [mon]`), found through its pid files and `/proc`,
//!   and checked from the orchestrator (its port, an HTTP health URL). The scripts' exit
//!   codes are not trusted: a start is done when the process is up and answers, a stop when
//!   nothing of the component runs, SIGKILL included.
//! - [`files`]: config files edited on the host with the backends' editors
//!   ([`rollout_core::conf`]), backed up to `<file>.bak` first and reverted from it.
//! - [`ProcessError`]: every failure names the host or node, what was being done and what to
//!   do next.
//!
//! Hosts must run Linux (`/proc`) with a POSIX `sh` and the usual tools (`cat`, `head`,
//! `tr`, `kill`, `stat`, `sha256sum`, `readlink`, `ln`, GNU `mv -T`).
//!
//! # Examples
//!
//! Restart an OpenMLDB tablet over ssh (`no_run`: it needs the host):
//!
//! ```no_run
//! use rollout_core::{Node, NodeId};
//! use rollout_process::{CommandNode, Commands, Runner};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rollout_process::ProcessError> {
//! let commands = Commands::new(
//!     NodeId::new("10.0.0.7:10921"),
//!     Runner::ssh("10.0.0.7"),
//!     "/opt/openmldb",
//!     "bash bin/start.sh start tablet",
//!     "bash bin/start.sh stop tablet",
//!     "bin/tablet.pid",
//! )
//! .listen("10.0.0.7:10921")
//! .health_url("http://10.0.0.7:10921/status")
//! .version_url("http://10.0.0.7:10921/version")
//! .config_files(["conf/tablet.flags"]);
//! let node = CommandNode::new(commands)?;
//! let before = node.status().await?;
//! node.stop().await?;
//! node.start().await?;
//! let after = node.status().await?;
//! assert!(after.running && after.boot != before.boot);
//! # Ok(())
//! # }
//! ```
//!
//! A cluster file describes each node the same way; see [`Commands`] for its fields.
#![doc(test(attr(deny(warnings))))]

pub mod agent;
mod change;
mod cluster_file;
mod command;
mod config;
mod error;
pub mod files;
mod procfs;
mod runner;
mod stop;

pub use cluster_file::{ClusterFile, ProcessNode};
pub use command::CommandNode;
pub use config::Commands;
pub use error::{ProcessError, Result};
pub use runner::{CommandOutput, Runner, shell_quote, shell_quote_path};
