//! The flag-file editor on arbitrary input: it never panics, and what it reads it writes back
//! unchanged.

use proptest::prelude::*;
use rollout_openmldb::flags::{self, Format};

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_and_round_trips(
        text in "([-#a-z_=. 0-9:]{0,24}\n?){0,8}",
        props in any::<bool>(),
    ) {
        let format = if props { Format::Properties } else { Format::Gflags };
        if let Ok(f) = flags::parse("x", format, &text) {
            prop_assert_eq!(f.render(), text);
        }
    }

    #[test]
    fn a_set_changes_one_value_and_keeps_every_other_line(
        value in "[a-z0-9:./]{0,12}",
    ) {
        let text = "# tablet\n--endpoint=127.0.0.1:10921\n\n#--zk_session_timeout=10000\n--role=tablet\n";
        let mut f = flags::parse("tablet.flags", Format::Gflags, text).unwrap();
        f.set("zk_session_timeout", &value).unwrap();
        prop_assert_eq!(f.get("zk_session_timeout"), Some(value.as_str()));
        let out = f.render();
        let again = flags::parse("tablet.flags", Format::Gflags, &out).unwrap();
        prop_assert_eq!(again.get("zk_session_timeout"), Some(value.as_str()));
        prop_assert_eq!(again.get("endpoint"), Some("127.0.0.1:10921"));
        let kept: Vec<&str> = out.lines().filter(|l| !l.starts_with("--zk_session_timeout=")).collect();
        prop_assert_eq!(kept, text.lines().collect::<Vec<_>>());
    }
}

#[test]
fn an_edit_on_disk_backs_up_first_and_reverts_from_the_backup() {
    use rollout_openmldb::flags::{backup_path, edit_file, revert_file};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tablet.flags");
    let text = "# tablet\n--endpoint=127.0.0.1:10921\n--zk_session_timeout=10000\n";
    std::fs::write(&path, text).unwrap();
    let before = edit_file(&path, "zk_session_timeout", "20000").unwrap();
    assert_eq!(before.as_deref(), Some("10000"));
    assert_eq!(std::fs::read_to_string(backup_path(&path)).unwrap(), text);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("--zk_session_timeout=20000")
    );
    // A second edit keeps the first backup: it is what the node ran before the rollout.
    edit_file(&path, "zk_session_timeout", "30000").unwrap();
    assert_eq!(std::fs::read_to_string(backup_path(&path)).unwrap(), text);
    revert_file(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert!(!backup_path(&path).exists());
}

#[test]
fn bad_edits_on_disk_change_nothing_and_name_the_file() {
    use rollout_openmldb::flags::{backup_path, edit_file};
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nameserver.flags");
    let e = edit_file(&missing, "auto_failover", "false").unwrap_err();
    assert!(e.to_string().contains("nameserver.flags"), "{e}");
    let path = dir.path().join("tablet.flags");
    let text = "--endpoint=127.0.0.1:10921\nendpoint 1.2.3.4\n";
    std::fs::write(&path, text).unwrap();
    let e = edit_file(&path, "endpoint", "x").unwrap_err();
    assert!(e.to_string().contains("tablet.flags:2"), "{e}");
    std::fs::write(&path, "--endpoint=127.0.0.1:10921\n").unwrap();
    let e = edit_file(&path, "zk_sesion_timeout", "1").unwrap_err();
    assert!(e.to_string().contains("zk_sesion_timeout"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "--endpoint=127.0.0.1:10921\n"
    );
    assert!(!backup_path(&path).exists());
}
