//! Which OpenMLDB a server runs, as its brpc `/version` page says (docs/upstream/openmldb.md
//! §1: `<major>.<minor>.<bug>-<short commit>` for a release build, `Server::set_version` in
//! `src/cmd/openmldb.cc`), which versions this backend supports, and which upgrades are
//! upstream paths.

use std::fmt;

/// An OpenMLDB version: major, minor, bug, and the commit after the `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Bug-fix number.
    pub bug: u32,
    /// The build's commit, when given.
    pub commit: Option<String>,
}

/// What a `/version` answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reported {
    /// A version.
    Version(ServerVersion),
    /// brpc's generated name of the service class (`openmldb::tablet::TabletImpl`): the
    /// process has just opened its port and not set its version yet; ask again.
    Starting,
}

impl ServerVersion {
    /// Parses `0.9.2`, `0.9.2-bfe5ba6`, `v0.8.5`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let (numbers, commit) = match s.split_once('-') {
            Some((n, c)) => (n, Some(c.to_string())),
            None => (s, None),
        };
        let mut it = numbers.split('.').map(str::parse::<u32>);
        let major = it.next()?.ok()?;
        let minor = it.next()?.ok()?;
        let bug = it.next().unwrap_or(Ok(0)).ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            bug,
            commit,
        })
    }

    /// What a `/version` answer says, `None` for an answer that is neither.
    pub fn from_page(body: &str) -> Option<Reported> {
        let t = body.trim();
        if t.contains("::") {
            return Some(Reported::Starting);
        }
        Self::parse(t).map(Reported::Version)
    }

    /// Whether this backend speaks to it: 0.8.5 and later 0.8 builds, and every 0.9.
    ///
    /// # Errors
    /// Any other version, named, with the supported ones: before 0.8.5 OpenMLDB ran a fork of
    /// brpc this backend was not checked against (`third-party/cmake/FetchBrpc.cmake`).
    pub fn check(&self) -> Result<(), String> {
        let ok = matches!((self.major, self.minor), (0, 8) if self.bug >= 5)
            || (self.major, self.minor) == (0, 9);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "OpenMLDB {self} is not supported: rollout speaks 0.8.5 and later 0.8, and 0.9"
            ))
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.bug)
    }
}

/// Whether a rolling upgrade from `from` to `to` is an upstream path
/// (`docs/en/maintain/upgrade.md` @v0.9.3, the same page at v0.8.5): both supported, and not
/// a downgrade to an older minor line, which the page does not describe (0.9.1's index
/// types, for one, reach 0.8.5 tablets as unknown fields).
///
/// # Errors
/// The reason, naming both versions.
pub fn check_upgrade(from: &ServerVersion, to: &ServerVersion) -> Result<(), String> {
    from.check()?;
    to.check()?;
    if (to.major, to.minor) < (from.major, from.minor) {
        return Err(format!(
            "{from} to {to} is a downgrade to an older line, which OpenMLDB's upgrade procedure \
             does not cover"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Reported, ServerVersion, check_upgrade};

    fn v(s: &str) -> ServerVersion {
        ServerVersion::parse(s).unwrap()
    }

    #[test]
    fn the_version_page_in_every_state() {
        assert_eq!(
            ServerVersion::from_page("0.9.2-bfe5ba6"),
            Some(Reported::Version(v("0.9.2-bfe5ba6")))
        );
        assert_eq!(
            ServerVersion::from_page("openmldb::tablet::TabletImpl"),
            Some(Reported::Starting)
        );
        assert_eq!(ServerVersion::from_page("<html>"), None);
    }

    #[test]
    fn supported_versions_and_upgrade_paths() {
        assert!(v("0.8.5").check().is_ok() && v("0.9.3").check().is_ok());
        assert!(
            v("0.8.4")
                .check()
                .unwrap_err()
                .contains("0.8.4 is not supported")
        );
        assert!(v("0.10.0").check().is_err());
        assert!(check_upgrade(&v("0.8.5"), &v("0.9.2")).is_ok());
        assert!(check_upgrade(&v("0.9.2"), &v("0.9.3")).is_ok());
        assert!(
            check_upgrade(&v("0.9.2"), &v("0.8.5"))
                .unwrap_err()
                .contains("downgrade")
        );
        assert!(check_upgrade(&v("0.9.2"), &v("0.10.0")).is_err());
    }
}
