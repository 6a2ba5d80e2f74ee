//! Bad input is a clear error before anything is touched.

mod support;

use std::time::Duration;

use rollout_core::{
    Change, ChangeError, ConfigEdit, Error, FileJournal, Journal, MemoryJournal, NodeId, Policy,
    Procedure, Run, Spec,
    journal::{Entry, JournalError},
    policy::Selection,
    roll,
};
use rollout_sim::{Flavor, SimBuilder};
use support::Tiny;

fn untouched(c: &Tiny) {
    assert!(c.knobs_restored(), "a knob was changed");
    assert!(
        c.restarts().values().all(|&n| n == 0),
        "a node was restarted"
    );
    assert!(
        !c.log()
            .iter()
            .any(|l| l.starts_with("knob") || l.starts_with("drain")),
        "the cluster was touched: {:?}",
        c.log()
    );
}

async fn reject(spec: Spec, journal: &dyn Journal) -> Error<support::tiny::TinyError> {
    let c = Tiny::new(3, 1, 3);
    let err = roll(&c, &spec, Run::new(journal)).await.unwrap_err();
    untouched(&c);
    err
}

#[tokio::test(start_paused = true)]
async fn unknown_node_is_named() {
    let spec = Spec::new(Change::Restart).selection(Selection::Nodes(vec![
        NodeId::new("d1:1"),
        NodeId::new("nope:9"),
    ]));
    let err = reject(spec, &MemoryJournal::new()).await;
    assert!(
        matches!(&err, Error::UnknownNode(n) if n == "nope:9"),
        "{err}"
    );
    assert!(err.to_string().contains("nope:9"));
}

#[tokio::test(start_paused = true)]
async fn unknown_role_is_named() {
    let spec = Spec::new(Change::Restart).selection(Selection::Roles(vec!["tablet".into()]));
    let err = reject(spec, &MemoryJournal::new()).await;
    assert!(err.to_string().contains("tablet"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn empty_selection_is_refused() {
    let spec = Spec::new(Change::Restart).selection(Selection::Nodes(vec![]));
    let err = reject(spec, &MemoryJournal::new()).await;
    assert!(matches!(err, Error::EmptySelection), "{err}");
}

#[tokio::test(start_paused = true)]
async fn contradictory_policies_are_refused() {
    let d = rollout_core::policy::Deadlines::all(Duration::ZERO);
    for (policy, word) in [
        (Policy::default().max_parallel(0), "max_parallel"),
        (
            Policy::default().max_unavailable_per_partition(0),
            "max_unavailable",
        ),
        (Policy::default().canary(0), "canary"),
        (
            Policy::default().poll(Duration::from_secs(2), Duration::from_secs(1)),
            "poll",
        ),
        (Policy::default().deadlines(d), "deadline"),
        (
            Policy::default()
                .procedure(Procedure::Simple)
                .on_timeout(rollout_core::policy::OnTimeout::Skip),
            "skip",
        ),
    ] {
        let err = reject(
            Spec::new(Change::Restart).policy(policy),
            &MemoryJournal::new(),
        )
        .await;
        assert!(matches!(err, Error::InvalidPolicy(_)), "{err}");
        assert!(
            err.to_string().contains(word),
            "{err} should mention {word}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn malformed_config_edits_are_refused() {
    for edits in [
        vec![],
        vec![ConfigEdit::Set {
            file: "".into(),
            key: "k".into(),
            value: "v".into(),
        }],
        vec![ConfigEdit::Unset {
            file: "f".into(),
            key: "a=b".into(),
        }],
    ] {
        let err = reject(Spec::new(Change::Config { edits }), &MemoryJournal::new()).await;
        assert!(matches!(err, Error::UnsupportedChange { .. }), "{err}");
    }
    let err = reject(
        Spec::new(Change::Upgrade {
            version: " ".into(),
        }),
        &MemoryJournal::new(),
    )
    .await;
    assert!(matches!(err, Error::UnsupportedChange { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_backend_rejects_config_files_it_does_not_have() {
    let sim = SimBuilder::new(Flavor::OpenMldb).build().unwrap();
    let spec = Spec::new(Change::Config {
        edits: vec![ConfigEdit::Set {
            file: "conf/tablet.flag".into(),
            key: "zk_session_timeout".into(),
            value: "10000".into(),
        }],
    });
    let err = roll(&sim, &spec, Run::new(&MemoryJournal::new()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("conf/tablet.flag"), "{err}");
    // The refusal is typed: the file it names, as the backend's `ChangeError::Edit`.
    assert!(
        matches!(
            &err,
            Error::UnsupportedChange {
                kind: "config",
                reason: ChangeError::Edit { file, .. },
            } if file == "conf/tablet.flag"
        ),
        "{err:?}"
    );
    assert!(sim.truth().restarts.values().all(|&n| n == 0));
}

#[tokio::test(start_paused = true)]
async fn a_journal_of_another_cluster_is_refused() {
    let journal = MemoryJournal::new();
    journal
        .append(&Entry::Begin {
            cluster: "prod-east".into(),
            change: Change::Restart,
            nodes: vec![],
            procedure: Procedure::HighAvailability,
            retired: Vec::new(),
        })
        .unwrap();
    let err = reject(Spec::new(Change::Restart), &journal).await;
    assert!(
        matches!(err, Error::Journal(JournalError::WrongCluster { .. })),
        "{err}"
    );
    assert!(rollout_core::chain(&err).contains("prod-east"));
}

#[tokio::test(start_paused = true)]
async fn a_journal_of_another_change_is_refused() {
    let journal = MemoryJournal::new();
    journal
        .append(&Entry::Begin {
            cluster: "tiny".into(),
            change: Change::Upgrade {
                version: "9".into(),
            },
            nodes: vec![],
            procedure: Procedure::HighAvailability,
            retired: Vec::new(),
        })
        .unwrap();
    let err = reject(Spec::new(Change::Restart), &journal).await;
    assert!(
        matches!(err, Error::Journal(JournalError::OtherRollout)),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_journal_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollout.jsonl");
    std::fs::write(&path, "{\"entry\":\"halted\",\"reason\":\"x\"}\nnot json\n").unwrap();
    let journal = FileJournal::new(&path);
    let err = reject(Spec::new(Change::Restart), &journal).await;
    match &err {
        Error::Journal(JournalError::Corrupt { line, .. }) => assert_eq!(*line, 2),
        other => panic!("expected a corrupt journal, got {other}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_lock_is_refused() {
    let journal = MemoryJournal::new();
    journal.lock("someone else").unwrap();
    let err = reject(Spec::new(Change::Restart), &journal).await;
    assert!(
        matches!(err, Error::Journal(JournalError::Locked { .. })),
        "{err}"
    );
    assert!(rollout_core::chain(&err).contains("someone else"));
}

#[tokio::test(start_paused = true)]
async fn single_replica_partitions_block_the_plan_before_anything_is_touched() {
    let sim = SimBuilder::new(Flavor::Pegasus)
        .replicas(1)
        .build()
        .unwrap();
    let err = roll(
        &sim,
        &Spec::new(Change::Restart),
        Run::new(&MemoryJournal::new()),
    )
    .await
    .unwrap_err();
    match &err {
        Error::Unsafe { node, reason } => {
            assert!(node.as_str().starts_with("replica-"));
            assert!(reason.contains("no replica left"), "{reason}");
        }
        other => panic!("expected unsafe, got {other}"),
    }
    assert!(sim.truth().knobs_restored);
    assert!(sim.truth().restarts.values().all(|&n| n == 0));
}
