//! [`AgentConfig`]: the agent's config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ProcessError;
use crate::{CommandNode, Commands, Runner};

/// The agent's config file (TOML): where it listens, its token, its TLS files, and the
/// components it may drive, by name.
///
/// ```
/// use rollout_process::agent::AgentConfig;
///
/// let config = AgentConfig::from_toml("agent.toml", r#"
///     listen = "0.0.0.0:7070"
///     token_file = "/etc/rollout/agent.token"
///
///     [components.tablet]
///     id = "10.0.0.7:10921"
///     runner = { kind = "local" }
///     deploy_dir = "/opt/openmldb"
///     start = "bash bin/start.sh start tablet mon"
///     stop = "bash bin/start.sh stop tablet mon"
///     pid_file = "bin/tablet.pid"
///     child_pid_file = "bin/tablet.pid.child"
///     listen = "10.0.0.7:10921"
///     health_url = "http://10.0.0.7:10921/status"
///     config_files = ["conf/tablet.flags"]
/// "#).unwrap();
/// assert!(config.components.contains_key("tablet"));
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// A file holding the bearer token (its first line; at least 16 characters).
    pub token_file: PathBuf,
    /// TLS: the server's certificate chain and private key (PEM). Without it the agent
    /// speaks plain HTTP/2, for loopback or a network that is already private.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The components, by name (`tablet`, `nameserver`, `replica`, ...), each as
    /// [`Commands`] with the `local` runner.
    pub components: BTreeMap<String, Commands>,
    /// A file the agent appends one JSON line to for every call it gets, refused ones
    /// included: `at` (Unix seconds), `caller`, `component`, `action`, `result`. Relative to
    /// the config file. Without it the calls are recorded in the agent's log only.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
}

/// PEM files for TLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl AgentConfig {
    /// Reads and checks the config file at `path`.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] naming the file when it cannot be read, does not
    /// parse, or a component is not valid (see [`AgentConfig::from_toml`]).
    pub fn load(path: &Path) -> Result<Self, ProcessError> {
        Self::from_toml(&path.display().to_string(), &read_file(path)?)
    }

    /// Parses and checks `text` (the file `name`, for messages): every component runs
    /// with the `local` runner, in an absolute deploy dir, with a name of letters, digits,
    /// `-`, `_` and `.`.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] naming the file and the component.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, ProcessError> {
        let bad = |reason: String| ProcessError::InvalidConfig {
            at: name.to_string(),
            reason,
        };
        let mut config: Self = toml::from_str(text).map_err(|e| {
            let mut reason = e.to_string();
            if ["tls", "listen =", "token_file"]
                .iter()
                .any(|k| reason.contains(&format!("unknown field `{}", k.trim_end_matches(" ="))))
            {
                reason.push_str(
                    "\n(top-level keys, listen, token_file and tls, go before the first \
                     [components.NAME] table)",
                );
            }
            bad(reason)
        })?;
        if config.components.is_empty() {
            return Err(bad(
                "no [components.NAME] table: the agent would do nothing".into(),
            ));
        }
        // Relative paths are relative to the config file, not to where the agent runs.
        let base = Path::new(name).parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.token_file);
        if let Some(a) = &mut config.audit_log {
            rebase(a);
        }
        if let Some(tls) = &mut config.tls {
            rebase(&mut tls.cert);
            rebase(&mut tls.key);
            for (field, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                std::fs::metadata(path)
                    .map_err(|e| bad(format!("{field} {}: {e}", path.display())))?;
            }
        }
        for (component, commands) in &config.components {
            let valid = !component.is_empty()
                && component
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(bad(format!(
                    "component name {component:?}: use letters, digits, '-', '_' and '.' only"
                )));
            }
            if !matches!(commands.runner, Runner::Local) {
                return Err(bad(format!(
                    "component {component}: ssh is not allowed here: an agent runs its \
                     components on its own host (leave runner out, or runner = {{ kind = \
                     \"local\" }})"
                )));
            }
            CommandNode::new(commands.clone())
                .map_err(|e| bad(format!("component {component}: {e}")))?;
        }
        Ok(config)
    }

    /// Checks every component against the orchestrator's cluster file `text` (the file
    /// `name`, for messages): a `[[nodes]]` entry with the component's `id` must reach it
    /// through an agent (`reach = "agent"`) under the same component name. Catches an agent
    /// configured for one node while the cluster file sends another node's calls here.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] naming the component, its id and what the cluster
    /// file says for it.
    pub fn check_cluster_file(&self, name: &str, text: &str) -> Result<(), ProcessError> {
        let bad = |reason: String| ProcessError::InvalidConfig {
            at: name.to_string(),
            reason,
        };
        let raw: toml::Value = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let nodes = raw
            .get("nodes")
            .and_then(toml::Value::as_array)
            .ok_or_else(|| bad("no [[nodes]] entries".into()))?;
        for (component, commands) in &self.components {
            let id = commands.id.as_str();
            let entry = nodes
                .iter()
                .find(|n| n.get("id").and_then(toml::Value::as_str) == Some(id));
            let Some(entry) = entry else {
                return Err(bad(format!(
                    "component {component} (id {id}) of this agent: the cluster file has no \
                     node {id}"
                )));
            };
            let reach = entry.get("reach").and_then(toml::Value::as_str);
            let named = entry.get("component").and_then(toml::Value::as_str);
            if reach != Some("agent") || named != Some(component.as_str()) {
                return Err(bad(format!(
                    "component {component} (id {id}) of this agent: the cluster file reaches \
                     node {id} with reach = {}, component = {} (want reach = \"agent\", \
                     component = {component:?})",
                    reach.unwrap_or("(none)"),
                    named.unwrap_or("(none)")
                )));
            }
        }
        Ok(())
    }

    /// The token from [`token_file`](Self::token_file): its first line, trimmed.
    ///
    /// # Errors
    /// [`ProcessError::InvalidConfig`] when it cannot be read or is shorter than 16
    /// characters.
    pub fn token(&self) -> Result<String, ProcessError> {
        read_token(&self.token_file).map_err(|reason| ProcessError::InvalidConfig {
            at: format!("token_file {}", self.token_file.display()),
            reason: format!(
                "{reason} (make one with: umask 077; head -c 32 /dev/urandom | base64 > FILE)"
            ),
        })
    }
}

/// A bearer token from `path`: its first line, trimmed, at least 16 characters. The one
/// reader of token files, for the agent and for the cluster file's agents.
pub(crate) fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.len() < 16 {
        return Err(format!(
            "its first line holds {} characters, fewer than the 16 a token needs",
            token.len()
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(), "the token file is readable by others than its owner; chmod 600 it");
    }
    Ok(token)
}

/// The text of a config file, or [`ProcessError::InvalidConfig`] naming it.
pub(crate) fn read_file(path: &Path) -> Result<String, ProcessError> {
    std::fs::read_to_string(path).map_err(|e| ProcessError::InvalidConfig {
        at: path.display().to_string(),
        reason: e.to_string(),
    })
}
