//! The `rollout` binary as an operator runs it: subcommands, exit codes, stdout for the
//! report and stderr for progress.

use std::process::{Command, Output};

fn rollout(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(args)
        .output()
        .expect("the rollout binary runs")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("an exit code, not a signal")
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("a report line");
    serde_json::from_str(line).expect("the last line is JSON")
}

#[test]
fn help_lists_every_subcommand() {
    let out = rollout(&["--help"]);
    assert_eq!(code(&out), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["simulate", "pegasus", "openmldb", "completions"] {
        assert!(text.contains(sub), "{sub} missing from --help: {text}");
    }
    for system in ["pegasus", "openmldb"] {
        let out = rollout(&[system, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        for action in ["plan", "run", "status", "abort", "emulate"] {
            assert!(text.contains(action), "{system} {action}: {text}");
        }
    }
}

#[test]
fn simulate_exits_by_outcome() {
    let done = rollout(&["simulate", "--json", "--partitions", "16"]);
    assert_eq!(code(&done), 0, "{}", String::from_utf8_lossy(&done.stderr));
    let r = last_json(&done);
    assert_eq!(r["completed"], true, "{r}");
    assert!(r["physical_bound_secs"].as_f64().unwrap() > 0.0, "{r}");
    let failed = rollout(&[
        "simulate",
        "--json",
        "--partitions",
        "16",
        "--fault",
        "fail-start:node=3",
    ]);
    assert_eq!(code(&failed), 1);
    assert_eq!(last_json(&failed)["outcome"], "aborted");
    let halted = rollout(&["simulate", "--json", "--partitions", "16", "--canary", "2"]);
    assert_eq!(code(&halted), 3);
    assert_eq!(last_json(&halted)["outcome"], "halted");
    // Refused by the engine before anything is touched (a two-replica Pegasus table): bad
    // input, whatever the report's outcome says.
    let refused = rollout(&[
        "simulate",
        "--json",
        "--partitions",
        "16",
        "--replicas",
        "2",
    ]);
    assert_eq!(code(&refused), 2);
    assert_eq!(last_json(&refused)["restarts"], 0);
}

#[test]
fn bad_input_exits_2_with_one_line_and_touches_nothing() {
    for args in [
        &["frobnicate"][..],
        &["simulate", "--bogus"],
        &["simulate", "--strategy", "fastest"],
        &["pegasus", "emulate", "--set", "config.ini:no-value"],
        &["pegasus", "emulate", "--set", "config.ini:=1"],
        &["pegasus", "emulate", "--upgrade", "2.5.0", "--set", "a:b=c"],
        &["pegasus", "plan"],
        &["pegasus", "run", "--meta", "127.0.0.1:1"],
        &["openmldb", "run", "--zk", "127.0.0.1:1"],
        &[
            "openmldb",
            "plan",
            "--zk",
            "127.0.0.1:1",
            "--set",
            "tablet.flags",
        ],
    ] {
        let out = rollout(args);
        assert_eq!(
            code(&out),
            2,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}

#[test]
fn completions_are_printed_for_a_shell() {
    // A reader that stops early is no error.
    let early = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} completions bash | head -c 10 >/dev/null",
            env!("CARGO_BIN_EXE_rollout")
        ))
        .output()
        .unwrap();
    assert!(early.status.success());
    assert!(
        !String::from_utf8_lossy(&early.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    let out = rollout(&["completions", "bash"]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rollout"));
    assert_eq!(code(&rollout(&["completions", "tcsh-of-the-future"])), 2);
}
