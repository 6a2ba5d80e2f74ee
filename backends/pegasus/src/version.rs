//! Which Pegasus a server runs, as it says itself, and which versions this backend supports
//! and may upgrade between (docs/upstream/pegasus.md §1 and §8).
//!
//! A server names its version in the remote command `server-info`: plain text on 2.4 and 2.5
//! (`Pegasus Server 2.5.0 (<commit>) Release, Started at ...`, `src/server/main.cpp` @v2.5.0),
//! a JSON object with a `version` key on master (`src/server/server_utils.cpp`
//! `register_server_info_cmd`, `2.6.0-SNAPSHOT`).

use std::cmp::Ordering;
use std::fmt;

/// A Pegasus version: major, minor, patch, and a suffix such as `SNAPSHOT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
    /// What follows a `-` (master builds say `SNAPSHOT`).
    pub suffix: Option<String>,
}

impl ServerVersion {
    /// Parses `2.5.0`, `2.6.0-SNAPSHOT`, `v2.4.1`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let (numbers, suffix) = match s.split_once('-') {
            Some((n, x)) => (n, Some(x.to_string())),
            None => (s, None),
        };
        let mut it = numbers.split('.').map(str::parse::<u32>);
        let major = it.next()?.ok()?;
        let minor = it.next()?.ok()?;
        let patch = it.next().unwrap_or(Ok(0)).ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
            suffix,
        })
    }

    /// The version a `server-info` answer names: the text of 2.4/2.5 or master's JSON.
    pub fn from_server_info(answer: &str) -> Option<Self> {
        let t = answer.trim();
        if t.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(t).ok()?;
            return Self::parse(v.get("version")?.as_str()?);
        }
        let rest = t.strip_prefix("Pegasus Server ")?;
        Self::parse(rest.split_whitespace().next()?)
    }

    /// The release line this backend speaks for it, or why it does not support it: 2.4 and
    /// 2.5 (releases), and master (2.6 snapshots).
    ///
    /// # Errors
    /// Any other version, named, with the supported ones.
    pub fn line(&self) -> Result<Line, String> {
        match (self.major, self.minor) {
            (2, 4) => Ok(Line::V2_4),
            (2, 5) => Ok(Line::V2_5),
            (2, 6) => Ok(Line::Master),
            _ => Err(format!(
                "Pegasus {self} is not supported: rollout speaks 2.4, 2.5 and master (2.6.0-SNAPSHOT)"
            )),
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(s) = &self.suffix {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

impl PartialOrd for ServerVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ServerVersion {
    /// By number; a suffixed build (a snapshot) comes before the release of its number.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (&self.suffix, &other.suffix) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

/// A release line this backend speaks, with what differs on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Line {
    /// 2.4.x.
    V2_4,
    /// 2.5.x.
    V2_5,
    /// Master, 2.6.0-SNAPSHOT: `hp_*` fields, JSON remote-command replies, `/metrics`.
    Master,
}

/// Whether a rolling upgrade from `from` to `to` is a path the upstream project supports,
/// and why not:
///
/// - 2.5 must be reached from 2.1 to 2.4, since it reads RocksDB data of the official releases
///   only (`HISTORY.md`, "2.5.0 / Behavior changes", PR #1048); from 2.0.x every partition
///   must first be closed gracefully (issue #902); both are below what this backend speaks;
/// - a downgrade to an older line is no upstream path (2.4's RocksDB fork cannot be counted on
///   to read what 2.5 wrote);
/// - 2.4 or 2.5 to master: master's `hp_*` fields truncate configuration traffic between old
///   and new servers (`configuration_update_request` read by a 2.5 reader stops at the new
///   fields), and PR #1658 leaves upgrading from old versions as future work: not a path
///   the sources show safe.
///
/// # Errors
/// The reason, naming both versions.
pub fn check_upgrade(from: &ServerVersion, to: &ServerVersion) -> Result<(), String> {
    let (a, b) = (from.line()?, to.line()?);
    if b < a {
        return Err(format!(
            "upgrading from {from} to {to} is a downgrade to an older line, which Pegasus does \
             not support (2.5's RocksDB data is not read back by 2.4)"
        ));
    }
    if b == Line::Master && a != Line::Master {
        return Err(format!(
            "upgrading from {from} to {to} (master) is not a supported rolling path: master's \
             host-name fields are misread by {from} servers during the mixed-version window \
             (PR #1658 leaves the upgrade from old versions open)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Line, ServerVersion, check_upgrade};

    fn v(s: &str) -> ServerVersion {
        ServerVersion::parse(s).unwrap()
    }

    #[test]
    fn server_info_names_the_version_in_both_styles() {
        let text = "Pegasus Server 2.5.0 (0ca31b70eac7321bb17fb034105695597245d47b) Release, Started at 2024-05-01 10:00:00";
        assert_eq!(ServerVersion::from_server_info(text), Some(v("2.5.0")));
        let json = r#"{"build_type":"Release","git_SHA":"db756dcd","start_time":"2026-03-13 20:33:17","version":"2.6.0-SNAPSHOT"}"#;
        let m = ServerVersion::from_server_info(json).unwrap();
        assert_eq!(m.to_string(), "2.6.0-SNAPSHOT");
        assert_eq!(m.line(), Ok(Line::Master));
        assert_eq!(
            ServerVersion::from_server_info("unknown command 'server-info'"),
            None
        );
    }

    #[test]
    fn only_2_4_2_5_and_master_are_supported() {
        assert_eq!(v("2.4.1").line(), Ok(Line::V2_4));
        assert!(
            v("2.3.0")
                .line()
                .unwrap_err()
                .contains("2.3.0 is not supported")
        );
        assert!(v("1.12.3").line().is_err());
    }

    #[test]
    fn upgrade_paths_follow_upstream() {
        assert!(check_upgrade(&v("2.4.0"), &v("2.5.0")).is_ok());
        assert!(check_upgrade(&v("2.5.0"), &v("2.5.1")).is_ok());
        assert!(
            check_upgrade(&v("2.5.0"), &v("2.4.0"))
                .unwrap_err()
                .contains("downgrade")
        );
        assert!(
            check_upgrade(&v("2.5.0"), &v("2.6.0-SNAPSHOT"))
                .unwrap_err()
                .contains("not a supported rolling path")
        );
        assert!(check_upgrade(&v("2.3.0"), &v("2.5.0")).is_err());
    }
}
