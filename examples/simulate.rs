//! Roll a simulated Pegasus or OpenMLDB cluster and report what its clients saw.
//!
//! ```text
//! cargo run --release --example simulate -- --strategy ha --seed 7 --json
//! ```
//!
//! Flags and JSON fields are the contract of docs/contracts.md.
//!
//! The same as `rollout simulate` (the `rollout-cli` crate), with the flags of docs/contracts.md.

fn main() -> std::process::ExitCode {
    rollout_cli::simulate::main()
}
