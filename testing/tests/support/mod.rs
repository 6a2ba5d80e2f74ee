//! What the process tests share: the test server and the `start.sh` fixture, free loopback
//! ports, `/proc` readers, and an agent serving in the test process.
#![allow(dead_code)]

use std::path::Path;

use rollout_process::agent::{AgentConfig, serve_on};

/// The test server binary.
pub(crate) const SERVER: &str = env!("CARGO_BIN_EXE_rollout-test-server");
/// The `start.sh` fixture, modelled on OpenMLDB's.
pub(crate) const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/start.sh");

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Lays out a deploy dir in `root`: `bin/start.sh` and `conf/<name>.flags` holding
/// `--endpoint=<endpoint>` and `--greeting=hello`.
pub(crate) fn lay_out(root: &Path, name: &str, endpoint: &str) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("conf")).unwrap();
    std::fs::copy(FIXTURE, root.join("bin/start.sh")).unwrap();
    std::fs::write(
        root.join(format!("conf/{name}.flags")),
        format!("--endpoint={endpoint}\n--greeting=hello\n"),
    )
    .unwrap();
}

/// `/proc/<pid>/cmdline` with spaces for the NULs; empty for a zombie or a gone process.
pub(crate) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether `pid` runs: `/proc/<pid>/stat` exists and its state is not zombie or dead.
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X" | "x"))
}

/// The live test servers listening on `endpoint`.
pub(crate) fn servers(endpoint: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let cmdline = cmdline(pid);
            cmdline.contains("rollout-test-server") && cmdline.contains(endpoint) && alive(pid)
        })
        .collect()
}

/// Serves the agent config `toml` on a loopback port in this process; its URL and the
/// sender that stops it (dropping it stops it too).
pub(crate) async fn spawn_agent(toml: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = AgentConfig::from_toml("agent.toml", toml).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve_on(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (url, stop)
}
