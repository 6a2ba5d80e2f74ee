//! The backend's error: each variant names the server (or node) and what it was asked.

use std::net::SocketAddr;

use rollout_core::NodeId;

use crate::meta::MetaError;
use crate::transport::CallError;

/// The backend's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PegasusError {
    /// The meta servers.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// One server.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A remote command's answer that says it failed, or that cannot be read, in the
    /// server's own words.
    #[error("{server}: remote command {cmd}: {answer}")]
    Command {
        /// The server.
        server: SocketAddr,
        /// The command with its arguments.
        cmd: String,
        /// What it answered, or why it could not be read.
        answer: String,
    },
    /// A server runs a version this backend does not speak, or names none.
    #[error("{server}: {why}")]
    Unsupported {
        /// The server.
        server: SocketAddr,
        /// The version it reported and what is supported.
        why: String,
    },
    /// A change that is not an upstream upgrade path; nothing was touched.
    #[error("{0}")]
    UpgradePath(String),
    /// A node id that is not `host:port`.
    #[error("{0:?} is not a server address (host:port)")]
    BadAddress(String),
    /// The node's process control failed.
    #[error("{node}: {source}")]
    Node {
        /// The node.
        node: NodeId,
        /// What its process control said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A knob this backend does not have.
    #[error("unknown knob {0:?}")]
    UnknownKnob(String),
}
