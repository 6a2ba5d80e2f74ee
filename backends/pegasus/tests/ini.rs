//! The config.ini editor keeps every byte but the value it sets.

use proptest::prelude::*;
use rollout_pegasus::ini::{self, IniError};

const SAMPLE: &str = "; Pegasus sample\r\n[apps.replica]\r\ntype = replica\r\n\r\n[replication]\r\n# how often the meta checks\r\nlb_interval_ms = 10000 ; ten seconds\r\nfd_grace_seconds=22\r\n\r\n[pegasus.server]\r\nrocksdb_write_buffer_size = 67108864\r\n";

#[test]
fn an_edit_changes_one_value_and_keeps_comments_order_and_line_endings() {
    let edited = ini::set(SAMPLE, "replication", "lb_interval_ms", "5000").unwrap();
    assert_eq!(
        edited,
        SAMPLE.replace("lb_interval_ms = 10000 ;", "lb_interval_ms = 5000 ;")
    );
    let edited = ini::set(SAMPLE, "replication", "fd_grace_seconds", "30").unwrap();
    assert_eq!(
        edited,
        SAMPLE.replace("fd_grace_seconds=22", "fd_grace_seconds=30")
    );
    // A dotted section.
    let edited = ini::set(SAMPLE, "pegasus.server", "rocksdb_write_buffer_size", "1").unwrap();
    assert_eq!(
        ini::get(&edited, "pegasus.server", "rocksdb_write_buffer_size"),
        Some("1")
    );
    assert_eq!(ini::get(SAMPLE, "apps.replica", "type"), Some("replica"));
}

#[test]
fn an_unknown_section_or_key_is_refused_naming_what_the_file_has() {
    let err = ini::set(SAMPLE, "replica", "lb_interval_ms", "1").unwrap_err();
    assert!(matches!(err, IniError::NoSection { .. }));
    assert!(
        err.to_string()
            .contains("apps.replica, replication, pegasus.server"),
        "{err}"
    );
    let err = ini::set(SAMPLE, "replication", "lb_interval", "1").unwrap_err();
    assert!(
        err.to_string().contains("lb_interval_ms, fd_grace_seconds"),
        "{err}"
    );
    assert!(ini::set(SAMPLE, "replication", "lb_interval_ms", "1\n[x]").is_err());
    assert_eq!(
        ini::split_key("pegasus.server.rocksdb_write_buffer_size").unwrap(),
        ("pegasus.server", "rocksdb_write_buffer_size")
    );
    assert!(ini::split_key("nodot").is_err());
}

proptest! {
    /// Setting a key and reading it back gives the value; no other line changes.
    #[test]
    fn set_then_get_round_trips_and_touches_one_line(value in "[a-zA-Z0-9_.:,/-]{0,20}") {
        let edited = ini::set(SAMPLE, "replication", "fd_grace_seconds", &value).unwrap();
        prop_assert_eq!(ini::get(&edited, "replication", "fd_grace_seconds"), Some(value.as_str()));
        let before: Vec<&str> = SAMPLE.split('\n').collect();
        let after: Vec<&str> = edited.split('\n').collect();
        prop_assert_eq!(before.len(), after.len());
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        prop_assert!(changed <= 1);
    }

    /// No input makes the editor panic.
    #[test]
    fn any_text_is_handled(text in "\\PC{0,200}", key in "[a-z.]{0,8}") {
        let _ = ini::set(&text, "s", &key, "v");
        let _ = ini::get(&text, "s", &key);
    }
}
