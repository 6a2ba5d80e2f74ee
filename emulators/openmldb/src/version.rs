//! The OpenMLDB versions the emulator can be, and what differs between them
//! (docs/upstream/openmldb.md §1 and §8, from the sources at v0.8.5 and v0.9.x).

use std::fmt;
use std::str::FromStr;

/// An OpenMLDB server version the emulator speaks as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ServerVersion {
    /// Tag v0.8.5: HTTP calls need no `Authorization` header.
    V0_8,
    /// Tag v0.9.2 (v0.9.1 to v0.9.3 serve the same): every HTTP call on a connection needs an
    /// `Authorization` header unless the connection's first request was a builtin page such
    /// as `/version` (`cmd/openmldb.cc` installs the authenticator from v0.9.1; brpc checks
    /// the first request of a connection).
    #[default]
    V0_9,
}

impl ServerVersion {
    /// Every version, oldest first.
    pub const ALL: [Self; 2] = [Self::V0_8, Self::V0_9];

    /// The name `--server-version` takes: `0.8`, `0.9`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_8 => "0.8",
            Self::V0_9 => "0.9",
        }
    }

    /// What a release build's brpc `/version` page answers: `OPENMLDB_VERSION`, the three
    /// numbers and the short commit (`cmd/openmldb.cc`, `Server::set_version`).
    pub fn release(self) -> &'static str {
        match self {
            Self::V0_8 => "0.8.5-d12babd",
            Self::V0_9 => "0.9.2-bfe5ba6",
        }
    }

    /// Whether an HTTP call needs an `Authorization` header.
    pub(crate) fn needs_authorization(self) -> bool {
        self == Self::V0_9
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version name the emulator does not speak.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no emulated OpenMLDB {0:?}: the emulator speaks 0.8 (0.8.5) and 0.9 (0.9.2)")]
pub struct UnknownVersion(pub String);

impl FromStr for ServerVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, UnknownVersion> {
        of_release(s).ok_or_else(|| UnknownVersion(s.to_string()))
    }
}

/// The version a release string names: `0.8`, `0.8.5`, `0.8.5-<commit>`, `0.9`, `0.9.x`.
pub(crate) fn of_release(s: &str) -> Option<ServerVersion> {
    let numbers = s.split('-').next().unwrap_or(s);
    let prefix = |p: &str| numbers == p || numbers.starts_with(&format!("{p}."));
    if prefix("0.9") {
        Some(ServerVersion::V0_9)
    } else if prefix("0.8") {
        Some(ServerVersion::V0_8)
    } else {
        None
    }
}
