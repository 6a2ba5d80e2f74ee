//! Plan or run a rolling restart, upgrade or config change of an Apache Pegasus cluster
//! through its meta servers; or start the Pegasus emulator and roll it.
//!
//! ```text
//! cargo run --release --example pegasus -- --meta 10.0.0.1:34601,10.0.0.2:34601 --plan
//! cargo run --release --example pegasus -- --emulate --json
//! cargo run --release --example pegasus -- --emulate --plan
//! ```
//!
//! `--run --cluster FILE` rolls a real cluster, reaching each node's process as the cluster
//! file says (its commands here or over ssh, or the node agent on its host). The emulator
//! is not Pegasus: it serves the simulator's
//! model of a cluster over Pegasus's wire protocol on loopback.
//!
//! The same as `rollout pegasus ACTION` (the `rollout-cli` crate), the action given as a mode flag (`--plan`, `--run`, `--status`, `--abort`, `--emulate`), with the flags of docs/contracts.md.

fn main() -> std::process::ExitCode {
    rollout_cli::pegasus::main()
}
