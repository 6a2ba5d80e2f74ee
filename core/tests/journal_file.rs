//! The file journal: JSON lines, fsync, a lock file, an atomic summary, resume state.

use rollout_core::{
    ApplyRecord, Change, FileJournal, Journal, NodeId, Procedure,
    journal::{Entry, InFlight, JournalError, Resume},
};

fn begin() -> Entry {
    Entry::Begin {
        cluster: "c".into(),
        change: Change::Restart,
        nodes: vec![NodeId::new("a:1"), NodeId::new("b:1")],
        procedure: Procedure::HighAvailability,
        retired: Vec::new(),
    }
}

#[test]
fn entries_round_trip_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let j = FileJournal::new(&path);
    assert!(
        j.load().unwrap().is_empty(),
        "a missing file is an empty journal"
    );
    let entries = vec![
        begin(),
        Entry::KnobSaved {
            name: "k".into(),
            original: "1".into(),
        },
        Entry::NodeBegin {
            node: NodeId::new("a:1"),
            boot: Some("7".into()),
            role: None,
        },
    ];
    for e in &entries {
        j.append(e).unwrap();
    }
    assert_eq!(j.load().unwrap(), entries);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}

#[test]
fn the_end_of_a_rollout_writes_a_summary_beside_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let j = FileJournal::new(&path);
    j.append(&begin()).unwrap();
    j.append(&Entry::End {
        outcome: "completed".into(),
    })
    .unwrap();
    let summary = std::fs::read_to_string(dir.path().join("j.jsonl.summary.json")).unwrap();
    assert!(summary.contains("completed"));
    assert!(!dir.path().join("j.jsonl.summary.json.tmp").exists());
}

#[test]
fn the_lock_is_exclusive_and_names_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let a = FileJournal::new(&path);
    let b = FileJournal::new(&path);
    a.lock("rollout of c").unwrap();
    match b.lock("another") {
        Err(JournalError::Locked { holder, .. }) => {
            assert_eq!(holder, format!("pid {} rollout of c", std::process::id()))
        }
        other => panic!("expected locked, got {other:?}"),
    }
    a.unlock();
    b.lock("another").unwrap();
    b.unlock();
}

#[test]
fn resume_state_follows_the_last_rollout() {
    let a = NodeId::new("a:1");
    let record = ApplyRecord::new(a.clone(), Default::default());
    let entries = vec![
        begin(),
        Entry::KnobSaved {
            name: "k1".into(),
            original: "x".into(),
        },
        Entry::KnobSaved {
            name: "k2".into(),
            original: "y".into(),
        },
        Entry::KnobRestored { name: "k2".into() },
        Entry::NodeBegin {
            node: NodeId::new("b:1"),
            boot: None,
            role: None,
        },
        Entry::NodeDone {
            node: NodeId::new("b:1"),
        },
        Entry::NodeBegin {
            node: a.clone(),
            boot: Some("1".into()),
            role: None,
        },
        Entry::NodeApplied {
            record: record.clone(),
        },
    ];
    let r = Resume::from_entries(&entries);
    assert!(r.active);
    assert_eq!(r.knobs, vec![("k1".to_string(), "x".to_string())]);
    assert_eq!(r.finished, vec![NodeId::new("b:1")]);
    let [flight]: [&InFlight; 1] = r.in_flight.iter().collect::<Vec<_>>().try_into().unwrap();
    assert_eq!(flight.node, a);
    assert_eq!(flight.boot.as_deref(), Some("1"));
    assert_eq!(flight.record.as_ref(), Some(&record));
    assert!(!flight.started);
    assert_eq!(flight.role, None);
    let mut ended = entries.clone();
    ended.push(Entry::End {
        outcome: "aborted".into(),
    });
    assert!(!Resume::from_entries(&ended).active);
    ended.push(begin());
    let fresh = Resume::from_entries(&ended);
    assert!(fresh.active && fresh.knobs.is_empty() && fresh.finished.is_empty());
}

#[test]
fn a_torn_last_line_is_dropped_and_the_file_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let j = FileJournal::new(&path);
    j.append(&begin()).unwrap();
    let whole = std::fs::read(&path).unwrap();
    let mut torn = whole.clone();
    // A crash in the middle of a write, even inside a multi-byte character.
    torn.extend_from_slice("{\"entry\":\"node_done\",\"node\":\"caf\u{e9}".as_bytes());
    torn.pop();
    std::fs::write(&path, &torn).unwrap();
    assert_eq!(j.load().unwrap(), vec![begin()]);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        whole,
        "the torn tail is cut off"
    );
    j.append(&Entry::End {
        outcome: "aborted".into(),
    })
    .unwrap();
    assert_eq!(
        j.load().unwrap().len(),
        2,
        "the next append starts on a clean line"
    );
}

#[test]
fn a_corrupt_line_in_the_middle_is_an_error_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let j = FileJournal::new(&path);
    j.append(&begin()).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("garbage\n");
    std::fs::write(&path, &text).unwrap();
    j.append(&begin()).unwrap();
    assert!(matches!(
        j.load(),
        Err(JournalError::Corrupt { line: 2, .. })
    ));
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    // No process has this pid (above the kernel's pid_max).
    std::fs::write(dir.path().join("j.jsonl.lock"), "pid 4294967 rollout of c").unwrap();
    let j = FileJournal::new(&path);
    if cfg!(target_os = "linux") {
        j.lock("rollout of c").unwrap();
        let holder = std::fs::read_to_string(dir.path().join("j.jsonl.lock")).unwrap();
        assert!(holder.starts_with(&format!("pid {} ", std::process::id())));
    } else {
        assert!(matches!(
            j.lock("rollout of c"),
            Err(JournalError::Locked { .. })
        ));
    }
    // A lock whose holder cannot be read as a pid is never taken over.
    j.unlock();
    std::fs::write(dir.path().join("j.jsonl.lock"), "someone").unwrap();
    assert!(matches!(j.lock("x"), Err(JournalError::Locked { .. })));
}
