//! What the tests against a real ZooKeeper share.
#![allow(dead_code, unreachable_pub)]

/// The ZooKeeper the tests use: `ROLLOUT_ZK` (set by `.ci/run`), else one started with
/// `scripts/zookeeper.sh` (Debian's package, on loopback). A ZooKeeper that cannot be had
/// fails the test, it never skips it.
pub fn zookeeper() -> String {
    if let Ok(a) = std::env::var("ROLLOUT_ZK") {
        return a;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/zookeeper.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("start")
        .output()
        .expect("run scripts/zookeeper.sh");
    assert!(
        out.status.success(),
        "scripts/zookeeper.sh start failed (CI={:?}): {}",
        std::env::var("CI").ok(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("HOST:PORT")
        .to_string()
}
