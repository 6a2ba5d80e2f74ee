//! `rollout-agent`: the node agent of rollout-process, one per host.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use clap::Parser;
use rollout_process::agent::{AgentConfig, serve_on};

const CONFIG_HELP: &str = r#"The config file (TOML) lists what this agent may do, and nothing else.
Top-level keys come first, before the first [components.NAME] table:

    listen = "0.0.0.0:7070"                   # required: IP:PORT for the orchestrator (gRPC)
    token_file = "/etc/rollout/agent.token"   # required: the bearer token, first line,
                                              # 16+ characters; relative to this file
    # tls = { cert = "agent.crt", key = "agent.key" }   # optional (rustls); without it
                                              # the token crosses the network in clear text
    # audit_log = "/var/log/rollout/agent-audit.jsonl"  # optional: one JSON line per call
                                              # (at, caller, component, action, result),
                                              # refused ones included; always also logged

    # One table per component it may drive, by name (letters, digits, - _ .); the
    # orchestrator's cluster file uses the same name. Commands run with `sh -c` in
    # deploy_dir as the agent's user, with its environment; their exit codes are not
    # trusted: the pid files, /proc, the port and the health URL are.
    [components.tablet]
    id = "10.0.0.7:10921"                     # required: the node, as the cluster names it
    deploy_dir = "/opt/openmldb"              # required, absolute
    start = "bash bin/start.sh start tablet mon"   # required
    stop = "bash bin/start.sh stop tablet mon"     # required
    pid_file = "bin/tablet.pid"               # required, inside deploy_dir
    child_pid_file = "bin/tablet.pid.child"   # start.sh's mon mode: the component's pid
                                              # (the monitor is stopped first)
    listen = "10.0.0.7:10921"                 # up = this IP:PORT accepts connections
    health_url = "http://10.0.0.7:10921/status"    # up = 2xx here
    version_url = "http://10.0.0.7:10921/version"  # or version_command = "..."
    config_files = ["conf/tablet.flags"]      # the only files an edit may touch
    # packages_dir = "/opt/openmldb-packages" # upgrades: one directory per version...
    # current_link = "/opt/openmldb"          # ...and the link switched to it
    stop_timeout_secs = 30                    # default 30; then SIGTERM, and SIGKILL a
                                              # third of it later
    start_timeout_secs = 120                  # default 120: pid file, port, health URL
    command_timeout_secs = 60                 # default 60: each command, start and stop
                                              # included, is killed past it
    pid_file_wait_secs = 3                    # default 3: a start whose pid file names no
                                              # process by then has failed
    # runner is local (the default); ssh is refused here.

Make a token:  install -d -m 700 /etc/rollout; (umask 077; head -c 32 /dev/urandom |
base64 > /etc/rollout/agent.token); give the same token to the orchestrator's cluster file.

Edits are backed up to <file>.bak before the first change and reverted from it. A path
with `..`, or a symbolic link leading out of deploy_dir, is refused. One operation per
component at a time: a second one is refused while the first runs; a stop or start goes on
to its end if the orchestrator disconnects. On SIGTERM the agent stops taking calls and
waits for the calls in flight; a command it started keeps running if the agent itself is
killed, and the next call sees the live state (pid files and /proc), not a record. Logs go
to stderr (RUST_LOG=debug for more).

Under systemd use the shipped rollout-agent.service: KillMode=process, so that stopping or
restarting the agent never stops the databases it started."#;

/// The node agent: stops, starts, reports on and reconfigures this host's database
/// processes for a rollout orchestrator, within what its config file allows.
#[derive(Debug, Parser)]
#[command(name = "rollout-agent", version, after_long_help = CONFIG_HELP)]
struct Args {
    /// The config file (TOML); `--help` shows its fields.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the config file and the token, print what would be served, and exit.
    #[arg(long)]
    check: bool,
    /// The orchestrator's cluster file: refuse to start unless it reaches every component
    /// of this agent, by its id, through an agent under the same component name.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match AgentConfig::load(&args.config).and_then(|c| c.token().map(|_| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rollout-agent: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.cluster {
        let checked = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| {
                config
                    .check_cluster_file(&path.display().to_string(), &text)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = checked {
            eprintln!("rollout-agent: {}: {e}", args.config.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    let names: Vec<&str> = config.components.keys().map(String::as_str).collect();
    if args.check {
        eprintln!(
            "rollout-agent: {}: would serve on {} ({}), components: {}",
            args.config.display(),
            config.listen,
            if config.tls.is_some() {
                "TLS"
            } else {
                "plain HTTP/2: the token crosses the network in clear text"
            },
            names.join(", ")
        );
        return std::process::ExitCode::SUCCESS;
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "rollout-agent: {}: listen {}: cannot bind: {e}",
                args.config.display(),
                config.listen
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "rollout-agent: serving on {} ({}), components: {}",
        config.listen,
        if config.tls.is_some() { "TLS" } else { "plain" },
        names.join(", ")
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match serve_on(config, listener, shutdown).await {
        Ok(()) => {
            eprintln!("rollout-agent: stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollout-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
