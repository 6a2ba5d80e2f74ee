//! For tests against a real ZooKeeper (this workspace's and a backend author's): the shared
//! server of `scripts/zookeeper.sh` (Debian's package on loopback), and private servers a
//! test may restart or freeze without disturbing the others. The script is found in this
//! crate's source tree, so these work from a checkout of the workspace.

#![allow(
    clippy::disallowed_methods,
    reason = "a real server's start and outage pass in wall time, which no paused clock drives"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/zookeeper.sh");

fn script(dir: Option<&Path>, command: &str) -> Result<String, String> {
    let mut c = Command::new("bash");
    c.arg(SCRIPT).arg(command);
    if let Some(dir) = dir {
        c.env("ROLLOUT_ZK_DIR", dir).env_remove("ROLLOUT_ZK_PORT");
    }
    let out = c
        .output()
        .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/zookeeper.sh {command} failed (CI={:?}): {}",
            std::env::var("CI").ok(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string())
}

/// The shared ZooKeeper, `HOST:PORT`: `ROLLOUT_ZK` (set by `.ci/run`), else the one
/// `scripts/zookeeper.sh start` starts or finds.
///
/// # Panics
/// When no ZooKeeper can be had: a test that needs one fails, it never skips.
pub fn zookeeper() -> String {
    if let Ok(a) = std::env::var("ROLLOUT_ZK") {
        return a;
    }
    script(None, "start").unwrap_or_else(|e| panic!("{e}"))
}

/// A standalone ZooKeeper of one test alone (its own directory and port), stopped and its
/// data removed when dropped.
#[derive(Debug)]
pub struct PrivateZooKeeper {
    dir: PathBuf,
    hosts: String,
}

impl PrivateZooKeeper {
    /// Starts one in a directory named after `name` and this process.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rollout-zk-{name}-{}", std::process::id()));
        let hosts = script(Some(&dir), "start").unwrap_or_else(|e| panic!("{e}"));
        Self { dir, hosts }
    }

    /// `HOST:PORT`.
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// Stops the server and starts it again on the same port with its data: sessions and
    /// znodes survive, as in a server restart. Returns `HOST:PORT`.
    ///
    /// # Errors
    /// The script's complaint.
    pub fn restart(&self) -> Result<String, String> {
        script(Some(&self.dir), "restart")
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the server's JVM.
    ///
    /// # Panics
    /// When its pid cannot be read or the signal not sent.
    pub fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join("zookeeper.pid")).expect("the pid file");
        let ok = Command::new("kill")
            .args([signal, pid.trim()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {}", pid.trim());
    }
}

impl Drop for PrivateZooKeeper {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("zookeeper.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
        }
        let _ = script(Some(&self.dir), "stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
