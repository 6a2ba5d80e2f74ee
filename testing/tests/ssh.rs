//! `CommandNode` over ssh, for real: a throwaway OpenSSH server on loopback
//! (`scripts/sshd.sh start`, which installs Debian's openssh-server when it is missing) lets
//! the current user in with its own key and host key, and the node drives the test server
//! through a copy of the `start.sh` fixture in a temporary deploy dir, as in `command.rs`.
//!
//! When the script fails these tests fail (they never skip): its stderr is in the message.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rollout_core::{Change, ConfigEdit, Node, NodeId};
use rollout_process::{CommandNode, Commands, ProcessError, Runner, shell_quote};

mod support;
use support::{SERVER, alive, cmdline, free_port, lay_out, servers};
const SSHD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/sshd.sh");

/// The sshd that `scripts/sshd.sh start` started (or found running).
#[derive(Debug)]
struct Sshd {
    port: u16,
    /// Its dir: `id_ed25519` (the user's key) and `known_hosts` (its host key).
    dir: PathBuf,
    /// The user the key lets in: the one running the tests (and the script).
    user: String,
}

impl Sshd {
    /// Its `known_hosts`, holding its real host key.
    fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// An ssh runner for it with the user's key, `known_hosts` and the control dir
    /// `control`. `-F /dev/null` keeps the user's own ssh config out of the test.
    fn runner(&self, known_hosts: &Path, control: &Path) -> Runner {
        let options = [
            "-F".to_string(),
            "/dev/null".to_string(),
            "-i".to_string(),
            self.dir.join("id_ed25519").display().to_string(),
            "-o".to_string(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "-o".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            "-o".to_string(),
            "IdentitiesOnly=yes".to_string(),
        ];
        Runner::Ssh {
            host: "127.0.0.1".to_string(),
            user: Some(self.user.clone()),
            port: Some(self.port),
            options: options.into(),
            control_dir: Some(control.to_path_buf()),
        }
    }
}

/// The sshd, started once per test binary; panics (failing the test) when the script fails.
fn sshd() -> &'static Sshd {
    static SSHD: OnceLock<Result<Sshd, String>> = OnceLock::new();
    match SSHD.get_or_init(start_sshd) {
        Ok(sshd) => sshd,
        Err(e) => panic!("{e}"),
    }
}

fn start_sshd() -> Result<Sshd, String> {
    let ci = if std::env::var_os("CI").is_some() {
        " (CI is set)"
    } else {
        ""
    };
    let out = std::process::Command::new("bash")
        .arg(SSHD_SCRIPT)
        .arg("start")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("could not run bash {SSHD_SCRIPT} start{ci}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "bash {SSHD_SCRIPT} start failed{ci} ({}); these tests need a local OpenSSH \
             server (the script installs Debian's openssh-server with apt-get, as root or \
             through sudo); its stderr:\n{stderr}",
            out.status
        ));
    }
    let last = stdout.lines().last().unwrap_or_default();
    let parsed = last.split_once(' ').and_then(|(addr, dir)| {
        let port = addr.strip_prefix("127.0.0.1:")?.parse::<u16>().ok()?;
        Some((port, PathBuf::from(dir.trim())))
    });
    let Some((port, dir)) = parsed else {
        return Err(format!(
            "bash {SSHD_SCRIPT} start{ci}: its last stdout line {last:?} is not \
             `127.0.0.1:PORT DIR`; stderr:\n{stderr}"
        ));
    };
    Ok(Sshd {
        port,
        dir,
        user: current_user()?,
    })
}

/// The user running the tests: `id -un` (the uid's name, which `$USER` may not be after
/// `su`), else `$USER`.
fn current_user() -> Result<String, String> {
    if let Ok(out) = std::process::Command::new("id").arg("-un").output()
        && out.status.success()
    {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !name.is_empty() {
            return Ok(name);
        }
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| "cannot tell the current user: `id -un` failed and USER is unset".into())
}

/// A deploy dir holding `bin/start.sh` and `conf/tablet.flags`, the loopback endpoint its
/// server listens on, and a control dir for ssh's shared connection. Dropping it kills
/// whatever a failed test left running and closes the shared connection.
struct Deploy {
    dir: tempfile::TempDir,
    control: tempfile::TempDir,
    endpoint: String,
    sshd: &'static Sshd,
}

impl Deploy {
    fn new() -> Self {
        let sshd = sshd();
        let dir = tempfile::tempdir().expect("a temporary dir");
        let endpoint = format!("127.0.0.1:{}", free_port());
        lay_out(dir.path(), "tablet", &endpoint);
        Self {
            dir,
            control: tempfile::tempdir().expect("a temporary dir"),
            endpoint,
            sshd,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// ssh's control dir (the runner creates it).
    fn control_dir(&self) -> PathBuf {
        self.control.path().join("cm")
    }

    /// A node for component `tablet` driven over ssh, ssh checking the host key against
    /// `known_hosts`.
    fn node(&self, known_hosts: &Path) -> CommandNode {
        let env = format!("ROLLOUT_TEST_SERVER={}", shell_quote(SERVER));
        let commands = Commands::new(
            NodeId::new(self.endpoint.as_str()),
            self.sshd.runner(known_hosts, &self.control_dir()),
            self.path(),
            format!("{env} bash bin/start.sh start tablet"),
            "bash bin/start.sh stop tablet",
            "bin/tablet.pid",
        )
        .listen(self.endpoint.as_str())
        .health_url(format!("http://{}/status", self.endpoint))
        .config_files(["conf/tablet.flags"])
        .start_timeout(Duration::from_secs(20))
        .stop_timeout(Duration::from_secs(5))
        .command_timeout(Duration::from_secs(20));
        CommandNode::new(commands).unwrap()
    }

    /// The pid a pid file (relative to the deploy dir) holds.
    fn pid(&self, file: &str) -> Option<u32> {
        std::fs::read_to_string(self.path().join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Deploy {
    fn drop(&mut self) {
        let mut pids: Vec<u32> = self
            .pid("bin/tablet.pid")
            .filter(|&p| cmdline(p).contains(&self.endpoint))
            .into_iter()
            .collect();
        pids.extend(servers(&self.endpoint));
        for pid in pids {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // The shared connection would otherwise linger for ControlPersist's 60 s.
        let _ = std::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-o"])
            .arg(format!("ControlPath={}/%C", self.control_dir().display()))
            .args(["-O", "exit", "-l", self.sshd.user.as_str(), "-p"])
            .arg(self.sshd.port.to_string())
            .arg("127.0.0.1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The environment `pid` started with.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|&c| c == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` was started from an ssh session of the sshd on `port`: its environment has
/// `SSH_CONNECTION=127.0.0.1 <client port> 127.0.0.1 <port>`.
fn started_over_ssh(pid: u32, port: u16) -> bool {
    let suffix = format!(" 127.0.0.1 {port}");
    environ(pid)
        .iter()
        .any(|v| v.starts_with("SSH_CONNECTION=127.0.0.1 ") && v.ends_with(&suffix))
}

#[tokio::test]
async fn a_restart_over_ssh_stops_and_starts_a_new_incarnation() {
    let d = Deploy::new();
    let node = d.node(&d.sshd.known_hosts());

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
    assert!(
        started_over_ssh(pid, d.sshd.port),
        "pid {pid} was not started through the sshd on port {}: {:?}",
        d.sshd.port,
        environ(pid)
    );

    node.stop().await.unwrap();
    assert!(!alive(pid), "pid {pid} still runs after the stop");
    let stopped = node.status().await.unwrap();
    assert!(!stopped.running && stopped.boot.is_none(), "{stopped:?}");

    node.start().await.unwrap();
    let second = node.status().await.unwrap();
    let pid2 = d.pid("bin/tablet.pid").expect("the pid file");
    assert!(second.running, "{second:?}");
    assert!(
        second.boot.is_some() && second.boot != first.boot,
        "{first:?} then {second:?}"
    );
    assert!(started_over_ssh(pid2, d.sshd.port), "{:?}", environ(pid2));

    node.stop().await.unwrap();
    assert!(!alive(pid2), "pid {pid2} still runs after the stop");
    assert!(!node.status().await.unwrap().running);
}

#[tokio::test]
async fn a_changed_host_key_is_refused_naming_the_host_and_nothing_runs() {
    let d = Deploy::new();
    // Another ed25519 key recorded for [127.0.0.1]:PORT: the host's key "changed".
    let keys = tempfile::tempdir().unwrap();
    let other = keys.path().join("other");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "not the host", "-f"])
        .arg(&other)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh-keygen");
    assert!(made.status.success(), "ssh-keygen: {made:?}");
    let public = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = public.split_whitespace();
    let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
    let real = std::fs::read_to_string(d.sshd.known_hosts()).unwrap();
    assert!(!real.contains(key), "the same key twice: {real}");
    let known_hosts = keys.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {kind} {key}\n", d.sshd.port),
    )
    .unwrap();
    let node = d.node(&known_hosts);

    let errors = [
        node.start().await.unwrap_err(),
        node.status().await.unwrap_err(),
    ];
    for err in errors {
        match &err {
            ProcessError::HostKeyChanged { host, .. } => assert_eq!(host, "127.0.0.1"),
            wrong => panic!("not HostKeyChanged: {wrong:?}"),
        }
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }
    // start.sh creates logs/ first thing and the pid file once the server is up.
    assert!(!d.path().join("bin/tablet.pid").exists(), "a pid file");
    assert!(!d.path().join("logs").exists(), "the start command ran");
    assert_eq!(servers(&d.endpoint), Vec::<u32>::new(), "a server runs");
    assert!(
        std::net::TcpStream::connect(d.endpoint.as_str()).is_err(),
        "something listens on {}",
        d.endpoint
    );
}

#[tokio::test]
async fn a_config_edit_over_ssh_keeps_a_backup_and_reverts() {
    let d = Deploy::new();
    let node = d.node(&d.sshd.known_hosts());
    assert!(!node.status().await.unwrap().running);
    let file = d.path().join("conf/tablet.flags");
    let bak = d.path().join("conf/tablet.flags.bak");
    let original = std::fs::read(&file).unwrap();
    let change = Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/tablet.flags".into(),
            key: "greeting".into(),
            value: "bonjour".into(),
        }],
    };

    let record = node.apply(&change).await.unwrap();
    assert_eq!(std::fs::read(&bak).unwrap(), original, "the backup");
    let edited = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        edited,
        String::from_utf8(original.clone())
            .unwrap()
            .replace("--greeting=hello", "--greeting=bonjour")
    );

    node.revert(&record).await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), original, "not reverted");
    assert!(!bak.exists(), "the backup outlived the revert");
}
