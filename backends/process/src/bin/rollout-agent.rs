//! `rollout-agent`: the node agent of rollout-process, one per host.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;

use clap::Parser;
use rollout_process::agent::{AgentConfig, serve};

const CONFIG_HELP: &str = r#"The config file (TOML) lists what this agent may do, and nothing else:

    # Where the agent listens for the orchestrator (gRPC).
    listen = "0.0.0.0:7070"
    # The bearer token every call must carry (first line; 16 characters or more).
    token_file = "/etc/rollout/agent.token"
    # Optional TLS (rustls): the server's certificate chain and key, PEM.
    # tls = { cert = "/etc/rollout/agent.crt", key = "/etc/rollout/agent.key" }

    # One table per component it may drive, by name; the orchestrator's cluster file uses
    # the same name. Commands run with `sh -c` in deploy_dir; their exit codes are not
    # trusted: the pid files, /proc, the port and the health URL are.
    [components.tablet]
    id = "10.0.0.7:10921"                    # the node, as the cluster names it
    runner = { kind = "local" }               # always local on an agent
    deploy_dir = "/opt/openmldb"
    start = "bash bin/start.sh start tablet mon"
    stop = "bash bin/start.sh stop tablet mon"
    pid_file = "bin/tablet.pid"               # relative to deploy_dir
    child_pid_file = "bin/tablet.pid.child"   # start.sh's mon mode: the component's pid
    listen = "10.0.0.7:10921"                 # up = this port accepts connections
    health_url = "http://10.0.0.7:10921/status"
    version_url = "http://10.0.0.7:10921/version"
    config_files = ["conf/tablet.flags"]      # the only files an edit may touch
    # packages_dir = "/opt/openmldb-packages" # upgrades: one directory per version
    # current_link = "/opt/openmldb"          # ... and the link switched to it
    stop_timeout_secs = 60                    # then SIGTERM, then SIGKILL
    start_timeout_secs = 120

Edits are backed up to <file>.bak before the first change and reverted from it. A path
with `..`, or a symbolic link leading out of deploy_dir, is refused. One operation per
component at a time: a second one is refused while the first runs; a stop or start goes on
to its end if the orchestrator disconnects."#;

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
    let names: Vec<&str> = config.components.keys().map(String::as_str).collect();
    eprintln!(
        "rollout-agent: {} on {} ({}), components: {}",
        if args.check { "would serve" } else { "serving" },
        config.listen,
        if config.tls.is_some() { "TLS" } else { "plain" },
        names.join(", ")
    );
    if args.check {
        return std::process::ExitCode::SUCCESS;
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match serve(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollout-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
