//! `Runner` on this machine, and the ssh runner's refusals and connection errors on loopback.

use std::time::Duration;

use rollout_process::{ProcessError, Runner};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_local_command_returns_its_exit_code_stdout_and_stderr() {
    let out = Runner::Local
        .run("a test", "echo out; echo err >&2; exit 3", DEADLINE)
        .await
        .unwrap();
    assert_eq!(out.code, Some(3));
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert!(!out.success());
}

#[tokio::test]
async fn run_in_runs_in_the_directory_and_says_97_when_it_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Runner::Local
        .run_in(dir.path(), "pwd", "pwd", DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        std::path::Path::new(out.stdout.trim())
            .canonicalize()
            .unwrap(),
        dir.path().canonicalize().unwrap()
    );
    let missing = dir.path().join("missing");
    let out = Runner::Local
        .run_in(&missing, "pwd", "pwd", DEADLINE)
        .await
        .unwrap();
    assert_eq!(out.code, Some(97));
}

#[tokio::test]
async fn a_command_past_its_deadline_is_killed_and_named() {
    let began = Instant::now();
    let err = Runner::Local
        .run(
            "the sleeper",
            "echo started; exec sleep 30",
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(matches!(err, ProcessError::Timeout { .. }), "{err:?}");
    let message = err.to_string();
    for part in ["localhost", "the sleeper", "started"] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[tokio::test]
async fn a_background_process_holding_the_output_does_not_hold_the_command() {
    // `sleep` inherits stdout and keeps it open for 3 s after `sh` exits.
    let began = Instant::now();
    let out = Runner::Local
        .run("a launcher", "sleep 3 & echo launched", DEADLINE)
        .await
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout, "launched\n");
}

/// An ssh runner for `db1` with `options`.
fn with_options(options: &[&str]) -> Runner {
    Runner::Ssh {
        host: "db1".into(),
        user: None,
        port: None,
        options: options.iter().map(|o| o.to_string()).collect(),
        control_dir: None,
    }
}

#[test]
fn ssh_settings_that_turn_host_key_checking_off_or_read_as_options_are_refused() {
    let off: [&[&str]; 3] = [
        &["-o", "StrictHostKeyChecking=no"],
        &["-oStrictHostKeyChecking=off"],
        &["-o", "stricthostkeychecking no"],
    ];
    for options in off {
        let err = with_options(options).validate().unwrap_err();
        assert!(err.contains("host-key checking"), "{options:?}: {err}");
    }
    let fine = with_options(&["-i", "/keys/ops", "-o", "StrictHostKeyChecking=yes"]);
    assert!(fine.validate().is_ok());
    assert!(Runner::ssh("-oProxyCommand=evil").validate().is_err());
    assert!(Runner::ssh("").validate().is_err());
    assert!(Runner::ssh("db1").validate().is_ok());
}

#[tokio::test]
async fn ssh_to_a_closed_port_is_unreachable_naming_the_host() {
    let control = tempfile::tempdir().unwrap();
    let runner = Runner::Ssh {
        host: "127.0.0.1".into(),
        user: None,
        port: Some(1),
        options: Vec::new(),
        control_dir: Some(control.path().join("cm")),
    };
    let err = runner.run("a probe", "true", DEADLINE).await.unwrap_err();
    assert!(matches!(err, ProcessError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("127.0.0.1") && message.contains("a probe"),
        "{message}"
    );
}
