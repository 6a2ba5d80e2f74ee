//! `rollout`: see the crate docs of `rollout_cli`.

fn main() -> std::process::ExitCode {
    rollout_cli::main_with(std::env::args_os())
}
