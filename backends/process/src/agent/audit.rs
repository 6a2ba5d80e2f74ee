//! The agent's audit log: one line per call, refused ones included.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where the agent records every call it gets: as `tracing` events with target
/// `rollout_agent::audit` always (stderr, so journald under systemd), and as JSON lines
/// appended to the config's `audit_log` file when it names one. A line holds `at` (Unix
/// seconds, wall clock), `caller` (the peer's `IP:PORT`, or `unknown`), `component`,
/// `action` (`status`, `stop`, `start`, `apply restart|upgrade|config`, `revert`,
/// `is_applied`, or `call` for one refused before it was read) and `result` (`ok`, `done`,
/// `started`, or `refused: ...` / `failed: ...` with the reason).
#[derive(Clone, Debug, Default)]
pub(crate) struct Audit {
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl Audit {
    /// Appends to `path` (created with mode 0600 when missing), or records to the log only.
    pub(crate) fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        Ok(Self {
            file: Some(Arc::new(Mutex::new(file))),
        })
    }

    /// Records one call.
    pub(crate) fn record(
        &self,
        caller: Option<std::net::SocketAddr>,
        component: &str,
        action: &str,
        result: &str,
    ) {
        let caller = caller.map_or_else(|| "unknown".to_string(), |a| a.to_string());
        tracing::info!(
            target: "rollout_agent::audit",
            %caller,
            component,
            action,
            result,
            "call"
        );
        let Some(file) = &self.file else {
            return;
        };
        let line = serde_json::json!({
            "at": unix_now(),
            "caller": caller,
            "component": component,
            "action": action,
            "result": result,
        });
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(f, "{line}") {
            tracing::error!(error = %e, "the audit log cannot be written");
        }
    }
}

/// Wall-clock seconds since the Unix epoch: an audit line is read against other hosts' logs.
#[allow(clippy::disallowed_methods)]
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
