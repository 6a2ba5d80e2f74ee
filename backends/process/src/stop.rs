//! How [`CommandNode`] stops its process: the stop command, then SIGTERM, then SIGKILL, the
//! monitor first in monitor mode, until nothing of the component runs.

use std::time::Duration;

use tokio::time::Instant;

use crate::command::{CommandNode, POLL, TAIL, Tracked};
use crate::error::ProcessError;

/// The least a stop waits for the process to exit after SIGKILL (freeing a large memory
/// takes seconds).
const KILL_WAIT: Duration = Duration::from_secs(5);

impl CommandNode {
    pub(crate) async fn stop_now(&self) -> Result<(), ProcessError> {
        let (seen, _) = self.read(&[]).await?;
        let mut tracked = seen.live();
        if tracked.is_empty() {
            tracing::debug!(node = %self.c.id, "not running: nothing to stop");
            return Ok(());
        }
        let what = format!("the stop command `{}`", self.c.stop);
        match self
            .c
            .runner
            .run_in(
                &self.c.deploy_dir,
                &what,
                &self.c.stop,
                self.c.command_timeout,
            )
            .await
        {
            Ok(out) => {
                tracing::info!(
                    node = %self.c.id, host = self.c.runner.host(), status = %out.status_text(),
                    "ran the stop command (its exit status is not trusted)"
                );
                tracing::debug!(node = %self.c.id, output = %out.tail(TAIL), "stop command output");
            }
            Err(e @ ProcessError::Timeout { .. }) => {
                tracing::warn!(node = %self.c.id, error = %e, "the stop command hung; stopping by signals");
            }
            Err(e) => return Err(e),
        }
        if self
            .wait_until(&mut tracked, self.c.stop_timeout, |t| t.is_empty())
            .await?
        {
            return Ok(());
        }
        let third = self.c.stop_timeout / 3;
        for (signal, wait) in [("TERM", third), ("KILL", third.max(KILL_WAIT))] {
            // The monitor first, so that it does not restart the component.
            let monitors: Vec<Tracked> = tracked.iter().filter(|t| t.monitor).cloned().collect();
            if !monitors.is_empty() {
                self.signal(&monitors, signal).await?;
                self.wait_until(&mut tracked, third, |t| !t.iter().any(|t| t.monitor))
                    .await?;
            }
            let rest = tracked.clone();
            if !rest.is_empty() {
                self.signal(&rest, signal).await?;
            }
            if self
                .wait_until(&mut tracked, wait, |t| t.is_empty())
                .await?
            {
                return Ok(());
            }
        }
        Err(ProcessError::StopFailed {
            node: self.c.id.clone(),
            host: self.host(),
            component: self.component(),
            pids: pid_list(&tracked),
        })
    }

    /// Polls every 200 ms, for at most `within`, until `done` holds for the component's live
    /// processes: `tracked` loses the processes that exited and gains any the pid files name
    /// (a monitor may have restarted the component). Returns whether `done` held.
    async fn wait_until(
        &self,
        tracked: &mut Vec<Tracked>,
        within: Duration,
        done: impl Fn(&[Tracked]) -> bool,
    ) -> Result<bool, ProcessError> {
        let until = Instant::now() + within;
        loop {
            let pids: Vec<u32> = tracked.iter().map(|t| t.pid).collect();
            let (seen, probe) = self.read(&pids).await?;
            // A pid whose start time changed was reused by another process: this one is gone.
            tracked.retain(|t| {
                probe
                    .alive(t.pid)
                    .is_some_and(|p| p.start_ticks == t.start_ticks)
            });
            for t in seen.live() {
                if !tracked.iter().any(|k| k.pid == t.pid) {
                    tracked.push(t);
                }
            }
            tracked.sort_by_key(|t| !t.monitor);
            if done(tracked.as_slice()) {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends `SIG<signal>` to each of `targets` still running with the same start time.
    async fn signal(&self, targets: &[Tracked], signal: &str) -> Result<(), ProcessError> {
        for t in targets {
            let role = if t.monitor { "monitor of " } else { "" };
            if signal == "KILL" {
                tracing::warn!(
                    node = %self.c.id, host = self.c.runner.host(), component = %self.component(),
                    pid = t.pid, "SIGKILL to the {role}{} after the stop command and SIGTERM", self.component()
                );
            } else {
                tracing::info!(
                    node = %self.c.id, host = self.c.runner.host(), pid = t.pid,
                    "SIG{signal} to the {role}{}", self.component()
                );
            }
        }
        let list: Vec<String> = targets
            .iter()
            .map(|t| format!("{}:{}", t.pid, t.start_ticks))
            .collect();
        let script = SIGNAL
            .replace("@SIG@", signal)
            .replace("@TARGETS@", &list.join(" "));
        let what = format!("sending SIG{signal} to pid {}", pid_list(targets));
        let out = self
            .c
            .runner
            .run(&what, &script, self.c.command_timeout)
            .await?;
        if !out.stdout.trim().is_empty() {
            tracing::warn!(node = %self.c.id, output = %out.stdout.trim(), "kill failed");
        }
        Ok(())
    }
}

/// Sends `@SIG@` to each `pid:start_ticks` of `@TARGETS@` whose `/proc/<pid>/stat` still
/// shows that start time (field 22: the 20th after `pid (comm) `), so that a reused pid is
/// never signalled. Prints what `kill` said when it failed.
const SIGNAL: &str = r#"set -f
for t in @TARGETS@; do
  pid=${t%%:*}
  ticks=${t#*:}
  s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
  s=${s##*') '}
  set -- $s
  [ "${20:-}" = "$ticks" ] || continue
  kill -s @SIG@ "$pid" 2>&1 || printf 'kill -s @SIG@ %s failed\n' "$pid"
done
exit 0
"#;

fn pid_list(t: &[Tracked]) -> String {
    t.iter()
        .map(|t| t.pid.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
