//! Plan or run a rolling restart, upgrade or configuration update of an OpenMLDB cluster
//! found through its ZooKeeper; or start the OpenMLDB emulator on a real ZooKeeper and roll
//! it.
//!
//! ```text
//! cargo run --release --example openmldb -- --zk 10.0.0.1:2181 --zk-root /openmldb --plan
//! cargo run --release --example openmldb -- --zk 10.0.0.1:2181 --role tablet --set tablet.flags:zk_session_timeout=20000
//! ZK=$(scripts/zookeeper.sh start | tail -1)
//! cargo run --release --example openmldb -- --emulate --zk $ZK --json
//! ```
//!
//! `--run --cluster FILE` rolls a real cluster, reaching each node's process as the cluster
//! file says (its commands here or over ssh, or the node agent on its host). The emulator
//! is not OpenMLDB: it serves the simulator's model of a cluster over OpenMLDB's HTTP/JSON RPCs on loopback, registered in
//! the ZooKeeper given.
//!
//! The same as `rollout openmldb ACTION` (the `rollout-cli` crate), the action given as a mode flag (`--plan`, `--run`, `--status`, `--abort`, `--emulate`), with the flags of docs/contracts.md.

fn main() -> std::process::ExitCode {
    rollout_cli::openmldb::main()
}
