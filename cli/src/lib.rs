//! The `rollout` command: one binary for operators, with a subcommand per system.
//!
//! ```text
//! rollout simulate [--flavor pegasus|openmldb] [--strategy naive|ha|waves|auto|script] ...
//! rollout pegasus  plan|run|status|abort|emulate [--meta HOST:PORT,...] [--restart | --upgrade V | --set FILE:KEY=VALUE] ...
//! rollout openmldb plan|run|status|abort|emulate [--zk HOST:PORT] [--restart | --upgrade V | --set FILE:KEY=VALUE] ...
//! rollout completions bash|zsh|fish|elvish|powershell
//! ```
//!
//! Exit codes: 0 completed, 1 aborted or failed, 2 bad input (nothing touched), 3 halted or
//! paused (the operator decides). Progress goes to stderr, one line per node phase with the
//! wall seconds since the start and every new reason a wait gives; `--json` leaves stdout to
//! the report. The `simulate`, `pegasus` and `openmldb` examples of `rollout-examples` call
//! [`simulate::main`], [`pegasus::main`] and [`openmldb::main`], with the flags of
//! docs/contracts.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// Every binary built on this crate (`rollout`, and the `simulate`, `pegasus` and `openmldb`
/// examples) allocates with mimalloc: the simulator allocates and frees a log entry per
/// replica per write and an event per step, and runs about a tenth faster with it at 10,000
/// and 100,000 partitions (docs/benchmarks.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod common;
mod journal;
pub mod openmldb;
mod openmldb_serve;
pub mod pegasus;
mod pegasus_serve;
mod serve;
pub mod simulate;

pub use args::Action;
pub use common::{BadInput, Exit};

/// The whole `rollout` command, for parsing and for shell completions.
pub fn command() -> clap::Command {
    clap::Command::new("rollout")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Roll a replicated database cluster one safe step at a time, so that its clients do not notice")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(simulate::command())
        .subcommand(pegasus::command())
        .subcommand(openmldb::command())
        .subcommand(
            clap::Command::new("completions")
                .about("Print a shell completion script for rollout")
                .arg(
                    clap::Arg::new("shell")
                        .required(true)
                        .value_parser(clap::value_parser!(clap_complete::Shell)),
                ),
        )
}

/// Runs `rollout` with `args` (the program name first) and returns its exit code.
pub fn main_with<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    // A serving emulator starts its processes as this binary again with the hidden
    // `--emulated-process` (the same code whichever system serves).
    if args.get(1).is_some_and(|a| a == "--emulated-process") {
        let mut rest = vec![std::ffi::OsString::from("pegasus")];
        rest.extend(args.into_iter().skip(1));
        return pegasus::run_args(rest);
    }
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return std::process::ExitCode::from(code);
        }
    };
    let action = |name: &str| {
        Action::ALL
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(a, _, _)| *a)
    };
    match matches.subcommand() {
        Some(("simulate", m)) => simulate::run_matches(m),
        Some((system @ ("pegasus" | "openmldb"), m)) => match m.subcommand() {
            Some((name, sub)) => match action(name) {
                Some(a) if system == "pegasus" => pegasus::run_action(a, sub),
                Some(a) => openmldb::run_action(a, sub),
                None => std::process::ExitCode::from(2),
            },
            None => std::process::ExitCode::from(2),
        },
        Some(("completions", m)) => {
            let shell = *m
                .get_one::<clap_complete::Shell>("shell")
                .expect("a required argument");
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "rollout", &mut script);
            // A reader that stops early (`| head`) is no error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            std::process::ExitCode::SUCCESS
        }
        _ => std::process::ExitCode::from(2),
    }
}
