//! The flag-file editor on arbitrary input: it never panics, and what it reads it writes back
//! unchanged.

use proptest::prelude::*;
use rollout_openmldb::flags::{ConfFile, Format};

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_and_round_trips(
        text in "([-#a-z_=. 0-9:]{0,24}\n?){0,8}",
        props in any::<bool>(),
    ) {
        let format = if props { Format::Properties } else { Format::Gflags };
        if let Ok(f) = ConfFile::parse("x", format, &text) {
            prop_assert_eq!(f.render(), text);
        }
    }

    #[test]
    fn a_set_changes_one_value_and_keeps_every_other_line(
        value in "[a-z0-9:./]{0,12}",
    ) {
        let text = "# tablet\n--endpoint=127.0.0.1:10921\n\n#--zk_session_timeout=10000\n--role=tablet\n";
        let mut f = ConfFile::parse("tablet.flags", Format::Gflags, text).unwrap();
        f.set("zk_session_timeout", &value).unwrap();
        prop_assert_eq!(f.get("zk_session_timeout"), Some(value.as_str()));
        let out = f.render();
        let again = ConfFile::parse("tablet.flags", Format::Gflags, &out).unwrap();
        prop_assert_eq!(again.get("zk_session_timeout"), Some(value.as_str()));
        prop_assert_eq!(again.get("endpoint"), Some("127.0.0.1:10921"));
        let kept: Vec<&str> = out.lines().filter(|l| !l.starts_with("--zk_session_timeout=")).collect();
        prop_assert_eq!(kept, text.lines().collect::<Vec<_>>());
    }
}
