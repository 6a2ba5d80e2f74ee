//! [`ClusterFile`]: how an orchestrator reaches each node of a cluster, for the reference
//! binaries' `--cluster FILE`, and [`ProcessNode`], the node it makes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rollout_core::{ApplyRecord, Change, Node, NodeId, NodeStatus};
use serde::Deserialize;

use crate::agent::{AgentEndpoint, AgentNode};
use crate::error::ProcessError;
use crate::{CommandNode, Commands};

/// A cluster file (TOML): one `[[nodes]]` entry per process rollout may restart, each
/// reached by its deployment's commands (`reach = "command"`, on this machine or over ssh
/// by its `runner`) or by the node agent on its host (`reach = "agent"`).
///
/// ```
/// use rollout_core::NodeId;
/// use rollout_process::ClusterFile;
///
/// let token = std::env::temp_dir().join("rollout-doc-agent.token");
/// std::fs::write(&token, "a-token-of-thirty-two-characters\n").unwrap();
/// let text = format!(r#"
///     [[nodes]]
///     reach = "command"
///     id = "10.0.0.7:10921"
///     runner = {{ kind = "ssh", host = "10.0.0.7", user = "openmldb" }}
///     deploy_dir = "/opt/openmldb"
///     start = "bash bin/start.sh start tablet"
///     stop = "bash bin/start.sh stop tablet"
///     pid_file = "bin/tablet.pid"
///     listen = "10.0.0.7:10921"
///
///     [[nodes]]
///     reach = "agent"
///     id = "10.0.0.8:10921"
///     component = "tablet"
///     agent = {{ url = "http://10.0.0.8:7070", token_file = {token:?} }}
/// "#);
/// let file = ClusterFile::from_toml("cluster.toml", &text).unwrap();
/// assert!(file.node(&NodeId::new("10.0.0.8:10921")).is_some());
/// assert!(file.node(&NodeId::new("10.0.0.9:10921")).is_none());
/// ```
#[derive(Clone, Debug)]
pub struct ClusterFile {
    nodes: BTreeMap<NodeId, ProcessNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    nodes: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(tag = "reach", rename_all = "lowercase")]
enum Entry {
    Command(Box<Commands>),
    Agent(AgentEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    id: NodeId,
    component: String,
    agent: AgentFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    url: String,
    token_file: PathBuf,
    #[serde(default)]
    ca_cert: Option<PathBuf>,
}

impl ClusterFile {
    /// Reads the file at `path`.
    ///
    /// # Errors
    /// As [`ClusterFile::from_toml`], or the file cannot be read.
    pub fn load(path: &Path) -> Result<Self, ProcessError> {
        Self::from_toml(&path.display().to_string(), &crate::agent::read_file(path)?)
    }

    /// Parses `text` (the file `name`, for messages); agent tokens are read from their
    /// files.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] naming the file: it does not parse, a node is listed
    /// twice, a node's commands are not valid, or an agent's token file cannot be read.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, ProcessError> {
        let bad = |reason: String| ProcessError::InvalidConfig {
            at: name.to_string(),
            reason,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut nodes = BTreeMap::new();
        for entry in raw.nodes {
            let node = match entry {
                Entry::Command(c) => ProcessNode::Command(CommandNode::new(*c)?),
                Entry::Agent(a) => {
                    let token = crate::agent::read_token(&a.agent.token_file).map_err(|e| {
                        bad(format!(
                            "node {}: token file {}: {e}",
                            a.id,
                            a.agent.token_file.display()
                        ))
                    })?;
                    let ep = AgentEndpoint {
                        url: a.agent.url,
                        token,
                        ca_cert: a.agent.ca_cert,
                    };
                    ProcessNode::Agent(AgentNode::new(a.id, a.component, &ep)?)
                }
            };
            let id = node.id().clone();
            if nodes.insert(id.clone(), node).is_some() {
                return Err(bad(format!("node {id} is listed twice")));
            }
        }
        Ok(Self { nodes })
    }

    /// The node `id`, if the file lists it.
    pub fn node(&self, id: &NodeId) -> Option<ProcessNode> {
        self.nodes.get(id).cloned()
    }

    /// Every node the file lists.
    pub fn ids(&self) -> impl Iterator<Item = &NodeId> {
        self.nodes.keys()
    }
}

/// A node of a [`ClusterFile`]: driven by its commands or by its host's agent.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ProcessNode {
    /// The deployment's commands, here or over ssh.
    Command(CommandNode),
    /// The node agent on its host.
    Agent(AgentNode),
}

impl Node for ProcessNode {
    type Error = ProcessError;

    fn id(&self) -> &NodeId {
        match self {
            Self::Command(n) => n.id(),
            Self::Agent(n) => n.id(),
        }
    }

    async fn stop(&self) -> Result<(), ProcessError> {
        match self {
            Self::Command(n) => n.stop().await,
            Self::Agent(n) => n.stop().await,
        }
    }

    async fn start(&self) -> Result<(), ProcessError> {
        match self {
            Self::Command(n) => n.start().await,
            Self::Agent(n) => n.start().await,
        }
    }

    async fn status(&self) -> Result<NodeStatus, ProcessError> {
        match self {
            Self::Command(n) => n.status().await,
            Self::Agent(n) => n.status().await,
        }
    }

    async fn apply(&self, change: &Change) -> Result<ApplyRecord, ProcessError> {
        match self {
            Self::Command(n) => n.apply(change).await,
            Self::Agent(n) => n.apply(change).await,
        }
    }

    async fn revert(&self, record: &ApplyRecord) -> Result<(), ProcessError> {
        match self {
            Self::Command(n) => n.revert(record).await,
            Self::Agent(n) => n.revert(record).await,
        }
    }

    async fn is_applied(&self, change: &Change) -> Result<bool, ProcessError> {
        match self {
            Self::Command(n) => n.is_applied(change).await,
            Self::Agent(n) => n.is_applied(change).await,
        }
    }
}
