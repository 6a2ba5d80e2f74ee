//! End to end, with real processes: an emulated OpenMLDB cluster in serve mode (each of its
//! processes a real OS process behind a node agent, registered in a real ZooKeeper) rolled by
//! orchestrator processes (the `openmldb` reference binary) that journal in that ZooKeeper,
//! and are killed, stopped past their session, raced, or see the ZooKeeper server restart.
//! The ground truth (restarts per node, knobs, writes lost) is the emulated cluster's own,
//! from its `truth.json`.

#![allow(
    clippy::disallowed_methods,
    reason = "real processes and a real ZooKeeper run in wall time, which no paused clock drives"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rollout_zookeeper::testing::{PrivateZooKeeper, zookeeper};
use serde_json::Value;

/// Which emulator, and its reference binary.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    OpenMldb,
    Pegasus,
}

impl Flavor {
    fn bin(self) -> &'static str {
        match self {
            Self::OpenMldb => env!("CARGO_BIN_EXE_openmldb"),
            Self::Pegasus => env!("CARGO_BIN_EXE_pegasus"),
        }
    }

    /// How many processes its emulated cluster has.
    fn nodes(self) -> usize {
        match self {
            Self::OpenMldb => 7,
            Self::Pegasus => 10,
        }
    }
}

/// One emulated cluster at a time: each runs 7 processes, 7 agents and client load, and the
/// machine may have 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `f` gives `Some`, or fails naming `what`.
fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn last_json(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

/// An emulated cluster in serve mode; stopped (SIGTERM) when dropped.
struct Serve {
    flavor: Flavor,
    child: Child,
    info: Value,
    dir: tempfile::TempDir,
}

impl Serve {
    fn start(zk: &str) -> Self {
        Self::start_as(Flavor::OpenMldb, zk)
    }

    fn start_as(flavor: Flavor, zk: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("serve.out");
        let child = Command::new(flavor.bin())
            .args([
                "--emulate",
                "--serve",
                "--json",
                "--scale",
                "20",
                "--zk",
                zk,
            ])
            .arg("--dir")
            .arg(dir.path().join("cluster"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("serve.err")).unwrap())
            .spawn()
            .unwrap();
        // Made first, so that a failure below still stops it.
        let mut serve = Self {
            flavor,
            child,
            info: Value::Null,
            dir,
        };
        serve.info = until(
            "the emulator in serve mode",
            Duration::from_secs(60),
            || last_json(&std::fs::read_to_string(&out).unwrap_or_default()),
        );
        serve
    }

    fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap().to_string()
    }

    /// An orchestrator rolling this cluster (a restart), journaling in its ZooKeeper, run
    /// from `cwd`, with a ZooKeeper session of `session_secs`.
    fn orchestrator(&self, cwd: &Path, session_secs: u64) -> Command {
        let mut c = Command::new(self.flavor.bin());
        c.current_dir(cwd);
        match self.flavor {
            Flavor::OpenMldb => c
                .args(["--zk", &self.s("zk"), "--zk-root", &self.s("zk_root")])
                .args(["--apiserver", &self.s("apiserver")])
                .args(["--taskmanager", &self.s("taskmanager")]),
            Flavor::Pegasus => c
                .args(["--meta", &self.s("meta")])
                .args(["--collector", &self.s("collector")]),
        };
        c.args(["--cluster", &self.s("cluster_file")])
            .args(["--scale", "20", "--run", "--journal", "zk", "--json"])
            .args(["--zk-session-secs", &session_secs.to_string()]);
        c
    }

    fn spawn(&self, cwd: &Path, session_secs: u64, name: &str) -> Orchestrator {
        let file = |ext: &str| {
            std::fs::File::create(self.dir.path().join(format!("{name}.{ext}"))).unwrap()
        };
        Orchestrator(
            self.orchestrator(cwd, session_secs)
                .stdout(file("out"))
                .stderr(file("err"))
                .spawn()
                .unwrap(),
        )
    }

    fn output_of(&self, name: &str) -> (String, String) {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.path().join(format!("{name}.{ext}")))
                .unwrap_or_default()
        };
        (read("out"), read("err"))
    }

    /// `--status --json`, from a directory of its own.
    fn status(&self) -> Value {
        let cwd = tempfile::tempdir().unwrap();
        let mut c = Command::new(self.flavor.bin());
        c.current_dir(cwd.path());
        match self.flavor {
            // The journal found from the cluster: its ZooKeeper, or the one the meta reports.
            Flavor::OpenMldb => c.args(["--zk", &self.s("zk"), "--zk-root", &self.s("zk_root")]),
            Flavor::Pegasus => c.args(["--meta", &self.s("meta")]),
        };
        let out = c.args(["--status", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_json(&String::from_utf8_lossy(&out.stdout)).expect("status JSON")
    }

    /// Waits until a rollout is in progress with `done` nodes done.
    fn wait_in_progress(&self, done: usize) -> Value {
        until("the rollout in progress", Duration::from_secs(180), || {
            let s = self.status();
            (s["nodes_done"].as_array().is_some_and(|d| d.len() >= done)
                && !s["node_in_progress"].is_null())
            .then_some(s)
        })
    }

    /// The emulated cluster's ground truth as of now: the first `truth.json` written after
    /// this call (the emulator rewrites it every 200 ms).
    fn truth(&self) -> Value {
        let path = self.s("truth_file");
        let asked = std::time::SystemTime::now();
        let text = until("truth.json rewritten", Duration::from_secs(10), || {
            let written = std::fs::metadata(&path).ok()?.modified().ok()?;
            (written > asked)
                .then(|| std::fs::read_to_string(&path).ok())
                .flatten()
        });
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// An orchestrator process, killed (after a SIGCONT) if the test ends before it does.
struct Orchestrator(Child);

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            signal(&self.0, "-CONT");
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn finished(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the orchestrator failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&stdout).expect("the report's JSON line")
}

/// Every node of the emulated cluster restarted exactly once, knobs back, nothing lost.
fn assert_rolled_once(serve: &Serve) -> Value {
    let truth = serve.truth();
    let restarts = truth["restarts"].as_object().unwrap();
    assert_eq!(restarts.len(), serve.flavor.nodes(), "{truth}");
    assert!(
        restarts.values().all(|n| n == 1),
        "a node was restarted twice or not at all: {truth}"
    );
    assert_eq!(truth["knobs_restored"], true, "{truth}");
    assert_eq!(truth["writes_lost"], 0, "{truth}");
    assert!(
        truth["running"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r == true),
        "{truth}"
    );
    truth
}

fn wait_exit(child: &mut Orchestrator, timeout: Duration) -> std::process::ExitStatus {
    until("the orchestrator's exit", timeout, || {
        child.0.try_wait().unwrap()
    })
}

#[test]
fn an_orchestrator_killed_mid_rollout_is_resumed_from_another_directory() {
    killed_and_resumed(Flavor::OpenMldb);
}

/// The same with Pegasus: its journal in the ZooKeeper its meta servers report.
#[test]
fn a_pegasus_orchestrator_killed_mid_rollout_is_resumed_from_another_directory() {
    killed_and_resumed(Flavor::Pegasus);
}

fn killed_and_resumed(flavor: Flavor) {
    let _serial = serial();
    let serve = Serve::start_as(flavor, &zookeeper());
    let first = tempfile::tempdir().unwrap();
    let mut a = serve.spawn(first.path(), 4, "a");
    let during = serve.wait_in_progress(2);
    let holder = during["lock_holder"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(holder.contains(&format!("pid {}", a.0.id())), "{during}");
    signal(&a.0, "-KILL");
    let _ = a.0.wait();
    // From another host's view: the rollout is not over, knobs are saved.
    let after = serve.status();
    assert!(after["ended"].is_null(), "{after}");
    assert!(
        !after["knobs_saved"].as_object().unwrap().is_empty(),
        "{after}"
    );
    // The same command, from another working directory: it waits for the killed
    // orchestrator's session to expire, then resumes.
    let second: PathBuf = tempfile::tempdir().unwrap().keep();
    let report = finished(&serve.orchestrator(&second, 4).output().unwrap());
    let _ = std::fs::remove_dir_all(&second);
    assert_eq!(report["completed"], true, "{report}");
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(report["max_restarts_per_node"], 1, "{report}");
    assert_eq!(report["knobs_restored"], true, "{report}");
    assert_rolled_once(&serve);
    assert!(serve.status()["ended"].as_str().is_some());
}

#[test]
fn an_orchestrator_stopped_past_its_session_changes_nothing_once_another_took_over() {
    let _serial = serial();
    let serve = Serve::start(&zookeeper());
    let first = tempfile::tempdir().unwrap();
    let mut a = serve.spawn(first.path(), 4, "a");
    serve.wait_in_progress(1);
    signal(&a.0, "-STOP");
    // B is refused while A's session lives, naming A; then takes over and finishes.
    let second = tempfile::tempdir().unwrap();
    let mut refused = 0;
    let report = until("B taking over", Duration::from_secs(60), || {
        let out = serve.orchestrator(second.path(), 4).output().unwrap();
        if out.status.success() {
            return Some(finished(&out));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("holds the lock") && err.contains(&format!("pid {}", a.0.id())),
            "B failed otherwise: {err}"
        );
        refused += 1;
        None
    });
    assert!(refused >= 1, "B was never refused while A's session lived");
    assert_eq!(report["completed"], true, "{report}");
    assert_eq!(report["resumed"], true, "{report}");
    let truth = assert_rolled_once(&serve);
    let journal = serve.status();
    // A wakes up: it must change nothing, record nothing, and say why it stops.
    signal(&a.0, "-CONT");
    let status = wait_exit(&mut a, Duration::from_secs(60));
    assert!(!status.success(), "A went on after its lock was taken");
    let (_, err) = serve.output_of("a");
    assert!(err.contains("no longer held"), "A's error: {err}");
    let after = serve.truth();
    assert_eq!(after["restarts"], truth["restarts"], "A restarted a node");
    assert_eq!(after["knobs"], truth["knobs"], "A changed a knob");
    assert_eq!(
        after["ops"], truth["ops"],
        "A made the nameserver run an op"
    );
    assert_eq!(after["terms"], truth["terms"], "A moved a leader");
    assert_eq!(
        serve.status()["entries"],
        journal["entries"],
        "A recorded something"
    );
}

#[test]
fn of_two_orchestrators_started_at_once_exactly_one_proceeds() {
    let _serial = serial();
    let serve = Serve::start(&zookeeper());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = serve.spawn(d1.path(), 4, "a");
    let mut b = serve.spawn(d2.path(), 4, "b");
    let sa = wait_exit(&mut a, Duration::from_secs(300));
    let sb = wait_exit(&mut b, Duration::from_secs(300));
    assert!(
        sa.success() != sb.success(),
        "not exactly one proceeded: {:?} {:?}\n{:?}\n{:?}",
        sa,
        sb,
        serve.output_of("a"),
        serve.output_of("b")
    );
    let (winner, loser) = if sa.success() { ("a", "b") } else { ("b", "a") };
    let report = last_json(&serve.output_of(winner).0).unwrap();
    assert_eq!(report["completed"], true, "{report}");
    let err = serve.output_of(loser).1;
    assert!(
        err.contains("holds the lock") && err.contains("rollout of openmldb"),
        "the other did not say who holds the lock: {err}"
    );
    assert_rolled_once(&serve);
}

#[test]
fn a_rollout_rides_through_a_zookeeper_server_restart() {
    let _serial = serial();
    let zk = PrivateZooKeeper::start("e2e-restart");
    let serve = Serve::start(zk.hosts());
    let dir = tempfile::tempdir().unwrap();
    let mut a = serve.spawn(dir.path(), 10, "a");
    serve.wait_in_progress(1);
    zk.restart().unwrap();
    let status = wait_exit(&mut a, Duration::from_secs(300));
    let (out, err) = serve.output_of("a");
    assert!(
        status.success(),
        "the rollout did not survive the restart: {err}"
    );
    let report = last_json(&out).unwrap();
    assert_eq!(report["completed"], true, "{report}");
    assert_eq!(report["resumed"], false, "{report}");
    assert_rolled_once(&serve);
}
