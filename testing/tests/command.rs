//! `CommandNode` against real processes on loopback: the test server, started and stopped by
//! a copy of the `start.sh` fixture (modelled on OpenMLDB's) in a temporary deploy dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollout_core::{Change, ConfigEdit, Node, NodeId};
use rollout_process::{CommandNode, Commands, ProcessError, Runner, shell_quote};
use tokio::time::Instant;

mod support;
use support::{FIXTURE, SERVER, alive, cmdline, free_port, lay_out, servers};

/// A deploy dir holding `bin/start.sh` and `conf/tablet.flags`, and the loopback endpoint its
/// server listens on. Dropping it kills whatever a failed test left running.
struct Deploy {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Deploy {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let endpoint = format!("127.0.0.1:{}", free_port());
        lay_out(dir.path(), "tablet", &endpoint);
        Self { dir, endpoint }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The fixture's commands for component `tablet`, the server getting `server_args`,
    /// `start.sh` getting `mode` (`""` or `"mon"`).
    fn commands(&self, server_args: &str, mode: &str) -> Commands {
        self.commands_stopped_by(
            server_args,
            mode,
            &format!("bash bin/start.sh stop tablet {mode}"),
        )
    }

    /// As [`Deploy::commands`] with another stop command.
    fn commands_stopped_by(&self, server_args: &str, mode: &str, stop: &str) -> Commands {
        let env = format!(
            "ROLLOUT_TEST_SERVER={} SERVER_ARGS={}",
            shell_quote(SERVER),
            shell_quote(server_args)
        );
        let commands = Commands::new(
            NodeId::new(self.endpoint.as_str()),
            Runner::Local,
            self.path(),
            format!("{env} bash bin/start.sh start tablet {mode}"),
            stop,
            "bin/tablet.pid",
        )
        .listen(self.endpoint.as_str())
        .health_url(format!("http://{}/status", self.endpoint))
        .version_url(format!("http://{}/version", self.endpoint))
        .config_files(["conf/tablet.flags"])
        .start_timeout(Duration::from_secs(20))
        .stop_timeout(Duration::from_secs(5))
        .command_timeout(Duration::from_secs(20));
        if mode == "mon" {
            commands.child_pid_file("bin/tablet.pid.child")
        } else {
            commands
        }
    }

    /// The pid a pid file (relative to the deploy dir) holds.
    fn pid(&self, file: &str) -> Option<u32> {
        std::fs::read_to_string(self.path().join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("logs/tablet.log")).unwrap_or_default()
    }
}

impl Drop for Deploy {
    fn drop(&mut self) {
        // The monitor first, so that it does not restart the server being killed.
        let mut pids: Vec<u32> = ["bin/tablet.pid", "bin/tablet.pid.child"]
            .iter()
            .filter_map(|f| self.pid(f))
            .filter(|&p| {
                let cmdline = cmdline(p);
                cmdline.contains("start.sh") || cmdline.contains(&self.endpoint)
            })
            .collect();
        pids.extend(servers(&self.endpoint));
        for pid in pids {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// For 2 s, polling: no server runs or listens on the endpoint, and the child pid file names
/// no other process than `child` (the monitor did not restart the component).
async fn nothing_comes_back(d: &Deploy, child: u32) {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            servers(&d.endpoint),
            Vec::<u32>::new(),
            "a server runs again"
        );
        assert!(
            std::net::TcpStream::connect(d.endpoint.as_str()).is_err(),
            "something listens on {} again",
            d.endpoint
        );
        if let Some(now) = d.pid("bin/tablet.pid.child") {
            assert_eq!(now, child, "the monitor restarted the component");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let content = std::fs::read(&path).unwrap();
                files.insert(path, content);
            }
        }
    }
    files
}

fn set(file: &str, key: &str, value: &str) -> ConfigEdit {
    ConfigEdit::Set {
        file: file.to_string(),
        key: key.to_string(),
        value: value.to_string(),
    }
}

#[tokio::test]
async fn a_restart_stops_the_process_then_starts_a_new_incarnation() {
    let d = Deploy::new();
    let node = CommandNode::new(d.commands("--version 1.2.3", "")).unwrap();
    node.start().await.unwrap();
    let first = node.status().await.unwrap();
    let pid = d.pid("bin/tablet.pid").expect("the pid file");
    assert!(first.running, "{first:?}");
    assert!(
        first
            .boot
            .as_deref()
            .is_some_and(|b| b.starts_with(&format!("{pid}@"))),
        "{first:?}"
    );
    assert_eq!(first.version.as_deref(), Some("1.2.3"));
    assert!(
        first.config_digest.as_ref().is_some_and(|d| d.len() == 64),
        "{first:?}"
    );

    node.stop().await.unwrap();
    assert!(!alive(pid), "pid {pid} still runs after the stop");
    let stopped = node.status().await.unwrap();
    assert!(!stopped.running && stopped.boot.is_none(), "{stopped:?}");

    node.start().await.unwrap();
    let second = node.status().await.unwrap();
    assert!(second.running, "{second:?}");
    assert!(
        second.boot.is_some() && second.boot != first.boot,
        "{second:?}"
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn is_applied_compares_an_upgrade_with_the_running_version() {
    let d = Deploy::new();
    let node = CommandNode::new(d.commands("--version 1.2.3", "")).unwrap();
    let upgrade = |v: &str| Change::Upgrade {
        version: v.to_string(),
    };
    assert!(
        !node.is_applied(&upgrade("1.2.3")).await.unwrap(),
        "not running"
    );
    node.start().await.unwrap();
    assert!(node.is_applied(&upgrade("1.2.3")).await.unwrap());
    assert!(!node.is_applied(&upgrade("1.2.4")).await.unwrap());
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_sigkilled_after_the_stop_timeout() {
    let d = Deploy::new();
    let stop_timeout = Duration::from_secs(1);
    let commands = d.commands("--ignore-term", "").stop_timeout(stop_timeout);
    let node = CommandNode::new(commands).unwrap();
    node.start().await.unwrap();
    let pid = d.pid("bin/tablet.pid").expect("the pid file");

    let began = Instant::now();
    node.stop().await.unwrap();
    let took = began.elapsed();
    assert!(!alive(pid), "pid {pid} survived the stop");
    assert!(d.log().contains("ignoring SIGTERM"), "{}", d.log());
    assert!(took >= stop_timeout, "stopped after {took:?}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    assert!(!node.status().await.unwrap().running);
}

#[tokio::test]
async fn in_mon_mode_a_stop_leaves_neither_monitor_nor_child_and_nothing_comes_back() {
    let d = Deploy::new();
    let node = CommandNode::new(d.commands("", "mon")).unwrap();
    node.start().await.unwrap();
    let monitor = d.pid("bin/tablet.pid").expect("the monitor's pid file");
    let child = d.pid("bin/tablet.pid.child").expect("the child's pid file");
    assert!(alive(monitor) && alive(child));
    assert!(node.status().await.unwrap().running);

    node.stop().await.unwrap();
    assert!(!alive(monitor), "the monitor {monitor} survived the stop");
    assert!(!alive(child), "the child {child} survived the stop");
    nothing_comes_back(&d, child).await;
    assert!(!node.status().await.unwrap().running);
}

#[tokio::test]
async fn in_mon_mode_signals_stop_the_monitor_before_the_child() {
    let d = Deploy::new();
    // The stop command does nothing: the node itself stops both by SIGTERM. Had it signalled
    // the child first, the monitor would have restarted it within 0.2 s under a new pid.
    let commands = d
        .commands_stopped_by("", "mon", "true")
        .stop_timeout(Duration::from_secs(1));
    let node = CommandNode::new(commands).unwrap();
    node.start().await.unwrap();
    let monitor = d.pid("bin/tablet.pid").expect("the monitor's pid file");
    let child = d.pid("bin/tablet.pid.child").expect("the child's pid file");

    node.stop().await.unwrap();
    assert!(!alive(monitor), "the monitor {monitor} survived the stop");
    assert!(!alive(child), "the child {child} survived the stop");
    assert_eq!(
        d.pid("bin/tablet.pid.child"),
        Some(child),
        "the child was restarted"
    );
    nothing_comes_back(&d, child).await;
    let status = node.status().await.unwrap();
    assert!(!status.running, "{status:?}");
    assert_eq!(
        status.exited.as_deref(),
        Some(format!("pid {child} from bin/tablet.pid.child is gone").as_str())
    );
}

#[tokio::test]
async fn a_start_that_fails_returns_an_error_quickly_naming_the_node() {
    let d = Deploy::new();
    let commands = d
        .commands("--fail", "")
        .start_timeout(Duration::from_secs(60));
    let node = CommandNode::new(commands).unwrap();
    let began = Instant::now();
    let err = node.start().await.unwrap_err();
    let took = began.elapsed();
    assert!(matches!(err, ProcessError::StartFailed { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&d.endpoint), "{message}");
    // The server's own words, through the start command's output.
    assert!(message.contains("failing at start"), "{message}");
    assert!(took < Duration::from_secs(10), "failed after {took:?}");
    assert!(!node.status().await.unwrap().running);
}

#[tokio::test]
async fn an_edit_of_a_file_not_in_config_files_is_refused_with_nothing_changed() {
    let d = Deploy::new();
    std::fs::write(d.path().join("conf/other.flags"), "--greeting=untouched\n").unwrap();
    let node = CommandNode::new(d.commands("", "")).unwrap();
    let before = snapshot(d.path());
    // The listed file comes first: it is refused all the same, since every edit is checked
    // before any is made.
    let change = Change::Config {
        edits: vec![
            set("conf/tablet.flags", "greeting", "bye"),
            set("conf/other.flags", "greeting", "bye"),
        ],
    };
    let err = node.apply(&change).await.unwrap_err();
    assert!(matches!(err, ProcessError::Refused { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("conf/other.flags"), "{message}");
    assert!(message.contains(&d.endpoint), "{message}");
    assert_eq!(snapshot(d.path()), before);
}

#[tokio::test]
async fn an_edit_of_a_path_leaving_the_deploy_dir_is_refused_with_nothing_changed() {
    let d = Deploy::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("tablet.flags");
    std::fs::write(&victim, "--greeting=untouched\n").unwrap();
    let node = CommandNode::new(d.commands("", "")).unwrap();
    let before = (snapshot(d.path()), snapshot(outside.path()));
    let escaping = [
        "../conf/tablet.flags".to_string(),
        "conf/../../tablet.flags".to_string(),
        victim.display().to_string(),
        format!("{}/conf/../conf/tablet.flags", d.path().display()),
    ];
    for file in escaping {
        let change = Change::Config {
            edits: vec![set(&file, "greeting", "bye")],
        };
        let err = node.apply(&change).await.unwrap_err();
        assert!(
            matches!(err, ProcessError::Refused { .. }),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains("leaves the deploy dir"), "{err}");
    }
    assert_eq!((snapshot(d.path()), snapshot(outside.path())), before);
}

#[tokio::test]
async fn garbage_in_the_pid_file_is_a_clear_error_naming_the_host_and_the_file() {
    let d = Deploy::new();
    std::fs::write(d.path().join("bin/tablet.pid"), "pid=12abc\n").unwrap();
    let node = CommandNode::new(d.commands("", "")).unwrap();
    let errors = [
        node.status().await.unwrap_err(),
        node.stop().await.unwrap_err(),
        node.start().await.unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, ProcessError::BadPidFile { .. }), "{err:?}");
        let message = err.to_string();
        for part in ["localhost", "bin/tablet.pid", "pid=12abc"] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
    }
    assert!(!d.path().join("logs").exists(), "the start command ran");
}

#[tokio::test]
async fn a_pid_file_naming_a_gone_process_reads_as_not_running_and_says_so() {
    let d = Deploy::new();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(d.path().join("bin/tablet.pid"), format!("{pid}\n")).unwrap();
    let node = CommandNode::new(d.commands("", "")).unwrap();
    let status = node.status().await.unwrap();
    assert!(!status.running, "{status:?}");
    assert_eq!(
        status.exited.as_deref(),
        Some(format!("pid {pid} from bin/tablet.pid is gone").as_str())
    );
}

#[tokio::test]
async fn a_restart_change_applies_nothing_and_never_reads_as_applied() {
    let d = Deploy::new();
    let node = CommandNode::new(d.commands("", "")).unwrap();
    let before = snapshot(d.path());
    let record = node.apply(&Change::Restart).await.unwrap();
    assert!(record.backup.is_empty(), "{record:?}");
    assert_eq!(&record.node, node.id());
    node.revert(&record).await.unwrap();
    assert_eq!(snapshot(d.path()), before);
    assert!(!node.is_applied(&Change::Restart).await.unwrap());
}

/// `GET path` on the test server, its body.
async fn get(endpoint: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(endpoint).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_config_edit_is_backed_up_read_by_the_new_process_and_reverted_byte_for_byte() {
    let d = Deploy::new();
    let args = "--config conf/tablet.flags";
    let node = CommandNode::new(d.commands(args, "")).unwrap();
    node.start().await.unwrap();
    assert_eq!(get(&d.endpoint, "/config").await, "hello");
    let original = std::fs::read_to_string(d.path().join("conf/tablet.flags")).unwrap();
    let change = Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/tablet.flags".into(),
            key: "greeting".into(),
            value: "bonjour".into(),
        }],
    };
    // Refused while the process runs: nothing on disk changes.
    assert!(node.apply(&change).await.is_err());
    assert!(!d.path().join("conf/tablet.flags.bak").exists());
    node.stop().await.unwrap();
    let record = node.apply(&change).await.unwrap();
    // Applied twice (a resumed rollout): the backup stays the original.
    node.apply(&change).await.unwrap();
    let bak = std::fs::read_to_string(d.path().join("conf/tablet.flags.bak")).unwrap();
    assert_eq!(bak, original);
    let edited = std::fs::read_to_string(d.path().join("conf/tablet.flags")).unwrap();
    assert_eq!(
        edited,
        original.replace("--greeting=hello", "--greeting=bonjour")
    );
    assert!(!node.is_applied(&change).await.unwrap(), "not running yet");
    node.start().await.unwrap();
    assert_eq!(get(&d.endpoint, "/config").await, "bonjour");
    assert!(node.is_applied(&change).await.unwrap());
    node.stop().await.unwrap();
    node.revert(&record).await.unwrap();
    let back = std::fs::read_to_string(d.path().join("conf/tablet.flags")).unwrap();
    assert_eq!(back, original);
    assert!(!d.path().join("conf/tablet.flags.bak").exists());
}

#[tokio::test]
async fn an_edit_of_a_key_the_file_does_not_have_is_refused_naming_it_with_nothing_changed() {
    let d = Deploy::new();
    let node = CommandNode::new(d.commands("", "")).unwrap();
    let before = std::fs::read_to_string(d.path().join("conf/tablet.flags")).unwrap();
    let change = Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/tablet.flags".into(),
            key: "greting".into(),
            value: "x".into(),
        }],
    };
    let e = node.apply(&change).await.unwrap_err().to_string();
    assert!(e.contains("greting") && e.contains("tablet.flags"), "{e}");
    let after = std::fs::read_to_string(d.path().join("conf/tablet.flags")).unwrap();
    assert_eq!(after, before);
    assert!(!d.path().join("conf/tablet.flags.bak").exists());
}

#[tokio::test]
async fn an_upgrade_switches_the_package_link_and_a_revert_switches_it_back() {
    // packages/1.0 and packages/2.0, each a deployment whose start reads its VERSION file;
    // `current` links to the running one and is the node's deploy dir.
    let root = tempfile::tempdir().unwrap();
    let endpoint = format!("127.0.0.1:{}", free_port());
    for v in ["1.0", "2.0"] {
        let dir = root.path().join("packages").join(v);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::copy(FIXTURE, dir.join("bin/start.sh")).unwrap();
        std::fs::write(dir.join("VERSION"), v).unwrap();
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        std::fs::write(
            dir.join("conf/tablet.flags"),
            format!("--endpoint={endpoint}\n"),
        )
        .unwrap();
    }
    let current = root.path().join("current");
    std::os::unix::fs::symlink(root.path().join("packages/1.0"), &current).unwrap();
    let start = format!(
        "ROLLOUT_TEST_SERVER={} SERVER_ARGS=\"--version $(cat VERSION)\" bash bin/start.sh start tablet",
        shell_quote(SERVER)
    );
    let node = CommandNode::new(
        Commands::new(
            NodeId::new(endpoint.as_str()),
            Runner::Local,
            &current,
            start,
            "bash bin/start.sh stop tablet",
            "bin/tablet.pid",
        )
        .listen(endpoint.as_str())
        .version_url(format!("http://{endpoint}/version"))
        .packages(root.path().join("packages"), &current)
        .start_timeout(Duration::from_secs(20))
        .stop_timeout(Duration::from_secs(5)),
    )
    .unwrap();
    let upgrade = Change::Upgrade {
        version: "2.0".into(),
    };
    node.start().await.unwrap();
    assert_eq!(node.status().await.unwrap().version.as_deref(), Some("1.0"));
    node.stop().await.unwrap();
    let record = node.apply(&upgrade).await.unwrap();
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        root.path().join("packages/2.0")
    );
    node.start().await.unwrap();
    assert_eq!(node.status().await.unwrap().version.as_deref(), Some("2.0"));
    assert!(node.is_applied(&upgrade).await.unwrap());
    node.stop().await.unwrap();
    node.revert(&record).await.unwrap();
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        root.path().join("packages/1.0")
    );
    node.start().await.unwrap();
    assert_eq!(node.status().await.unwrap().version.as_deref(), Some("1.0"));
    node.stop().await.unwrap();
}
