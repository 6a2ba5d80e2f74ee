//! Flag and properties files, edited in place: gflags flag files (one `--name=value` per
//! line, `#` comments, blank lines, `--noname` for a false boolean) and Java properties
//! files (`key=value` or `key: value`, `#` or `!` comments). Comments, order and every
//! untouched line are kept byte for byte.
//!
//! ```
//! use rollout_core::conf::{ConfFile, Format};
//!
//! let text = "# tablet\n--endpoint=127.0.0.1:10921\n#--zk_session_timeout=10000\n";
//! let mut f = ConfFile::parse("tablet.flags", Format::Gflags, text).unwrap();
//! assert_eq!(f.get("endpoint"), Some("127.0.0.1:10921"));
//! f.set("zk_session_timeout", "20000").unwrap();
//! assert_eq!(
//!     f.render(),
//!     "# tablet\n--endpoint=127.0.0.1:10921\n#--zk_session_timeout=10000\n--zk_session_timeout=20000\n"
//! );
//! assert!(f.set("no_such_flag", "1").is_err());
//! ```

use std::path::Path;

/// Which syntax a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// gflags flag file: `--name=value`, `--name` (true), `--noname` (false).
    Gflags,
    /// Java properties: `key=value` or `key: value`.
    Properties,
}

impl Format {
    /// The format of a file by its name: `.properties` is Java properties, anything else
    /// gflags.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("properties") => Self::Properties,
            _ => Self::Gflags,
        }
    }
}

/// Why a file could not be read or edited. Each names the file and, where there is one, the
/// line (1-based) or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagsError {
    /// A line that is neither a comment, blank, nor a setting.
    #[error("{file}:{line}: not a setting, comment or blank line: {text:?}")]
    Syntax {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// The line's text.
        text: String,
    },
    /// The key is neither in the file (set or commented out) nor a known flag.
    #[error(
        "{file} has no setting {key:?} (neither set nor commented out) and it is not a flag \
         its server is known to read: check its spelling"
    )]
    UnknownKey {
        /// The file.
        file: String,
        /// The key.
        key: String,
    },
    /// The value cannot be written on one line.
    #[error("{file}: the value for {key:?} holds a line break")]
    BadValue {
        /// The file.
        file: String,
        /// The key.
        key: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Line {
    /// Kept as it is: comments, blanks.
    Other(String),
    /// A setting; `raw` is the line as read, `None` once the value changed.
    Setting {
        key: String,
        value: String,
        raw: Option<String>,
    },
}

/// One configuration file in memory: read, edited, rendered back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfFile {
    name: String,
    format: Format,
    lines: Vec<Line>,
    trailing_newline: bool,
    known: &'static [&'static str],
}

impl ConfFile {
    /// Reads `text` (the file `name`, for messages) in `format`.
    ///
    /// # Errors
    /// [`FlagsError::Syntax`] for a line that is not a setting, comment or blank.
    pub fn parse(name: &str, format: Format, text: &str) -> Result<Self, FlagsError> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let t = raw.trim();
            if t.is_empty()
                || t.starts_with('#')
                || (format == Format::Properties && t.starts_with('!'))
            {
                lines.push(Line::Other(raw.to_string()));
                continue;
            }
            let Some((key, value)) = parse_setting(format, t) else {
                return Err(FlagsError::Syntax {
                    file: name.to_string(),
                    line: i + 1,
                    text: raw.to_string(),
                });
            };
            lines.push(Line::Setting {
                key,
                value,
                raw: Some(raw.to_string()),
            });
        }
        Ok(Self {
            name: name.to_string(),
            format,
            lines,
            trailing_newline: text.ends_with('\n') || text.is_empty(),
            known: &[],
        })
    }

    /// The same file, where (gflags) the flags in `known` may be set though the file does
    /// not mention them: a backend's list of the flags its servers read, so that a typo is
    /// refused and a real flag is appended.
    #[must_use]
    pub fn knowing(mut self, known: &'static [&'static str]) -> Self {
        self.known = known;
        self
    }

    /// The effective value of `key` (the last setting wins, as gflags reads it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().rev().find_map(|l| match l {
            Line::Setting { key: k, value, .. } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    /// Whether `key` may be set here: set or commented out in the file, or (gflags) one of
    /// the flags given to [`knowing`](Self::knowing).
    pub fn knows(&self, key: &str) -> bool {
        self.get(key).is_some()
            || self.lines.iter().any(|l| match l {
                Line::Other(c) => commented_key(self.format, c).as_deref() == Some(key),
                Line::Setting { .. } => false,
            })
            || (self.format == Format::Gflags && self.known.contains(&key))
    }

    /// Sets `key` to `value`: the last setting of it changes in place; a key only commented
    /// out gets its setting right after the last such comment; a known flag the file does
    /// not mention goes at the end.
    ///
    /// # Errors
    /// [`FlagsError::UnknownKey`] when the file does not know `key`, [`FlagsError::BadValue`]
    /// for a value with a line break. Nothing changes then.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), FlagsError> {
        if value.contains(['\n', '\r']) {
            return Err(FlagsError::BadValue {
                file: self.name.clone(),
                key: key.to_string(),
            });
        }
        if !self.knows(key) {
            return Err(FlagsError::UnknownKey {
                file: self.name.clone(),
                key: key.to_string(),
            });
        }
        let setting = Line::Setting {
            key: key.to_string(),
            value: value.to_string(),
            raw: None,
        };
        let last_set = self
            .lines
            .iter()
            .rposition(|l| matches!(l, Line::Setting { key: k, .. } if k == key));
        let last_comment = self.lines.iter().rposition(|l| match l {
            Line::Other(c) => commented_key(self.format, c).as_deref() == Some(key),
            Line::Setting { .. } => false,
        });
        match (last_set, last_comment) {
            (Some(i), _) => self.lines[i] = setting,
            (None, Some(i)) => self.lines.insert(i + 1, setting),
            (None, None) => self.lines.push(setting),
        }
        Ok(())
    }

    /// The file's text: untouched lines as read, changed ones in the file's syntax.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match l {
                Line::Other(s) | Line::Setting { raw: Some(s), .. } => out.push_str(s),
                Line::Setting {
                    key,
                    value,
                    raw: None,
                } => match self.format {
                    Format::Gflags => out.push_str(&format!("--{key}={value}")),
                    Format::Properties => out.push_str(&format!("{key}={value}")),
                },
            }
        }
        if self.trailing_newline && !self.lines.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// A setting line's key and value.
fn parse_setting(format: Format, t: &str) -> Option<(String, String)> {
    match format {
        Format::Gflags => {
            let body = t.strip_prefix("--").or_else(|| t.strip_prefix('-'))?;
            let (key, value) = match body.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match body.strip_prefix("no") {
                    Some(k) if !k.is_empty() && is_key(k) => (k.to_string(), "false".into()),
                    _ => (body.to_string(), "true".into()),
                },
            };
            is_key(&key).then_some((key, value))
        }
        Format::Properties => {
            let i = t.find(['=', ':'])?;
            let key = t[..i].trim().to_string();
            let value = t[i + 1..].trim_start().to_string();
            (!key.is_empty()).then_some((key, value))
        }
    }
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// The key of a commented-out setting (`#--key=value`, `# key=value`).
fn commented_key(format: Format, line: &str) -> Option<String> {
    let t = line.trim().strip_prefix('#')?.trim_start();
    parse_setting(format, t).map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_renders_back_byte_for_byte_when_nothing_changed() {
        for text in [
            "",
            "--a=1\n",
            "# c\n\n  --endpoint=1.2.3.4:5\n--nox\n--y\n",
            "--no_trailing=1",
        ] {
            let f = ConfFile::parse("t.flags", Format::Gflags, text).unwrap();
            assert_eq!(f.render(), text);
        }
    }

    #[test]
    fn gflags_booleans_read_as_gflags_reads_them() {
        let f =
            ConfFile::parse("t.flags", Format::Gflags, "--use_name\n--noauto_failover\n").unwrap();
        assert_eq!(f.get("use_name"), Some("true"));
        assert_eq!(f.get("auto_failover"), Some("false"));
    }

    #[test]
    fn the_last_setting_wins_and_is_the_one_changed() {
        let mut f = ConfFile::parse("t.flags", Format::Gflags, "--a=1\n# x\n--a=2\n").unwrap();
        assert_eq!(f.get("a"), Some("2"));
        f.set("a", "3").unwrap();
        assert_eq!(f.render(), "--a=1\n# x\n--a=3\n");
    }

    #[test]
    fn properties_keep_their_comments_and_order() {
        let text =
            "! top\nserver.port=9902\n# zookeeper.session_timeout=5000\nspark.master=local\n";
        let mut f = ConfFile::parse("taskmanager.properties", Format::Properties, text).unwrap();
        f.set("zookeeper.session_timeout", "10000").unwrap();
        f.set("server.port", "9903").unwrap();
        assert_eq!(
            f.render(),
            "! top\nserver.port=9903\n# zookeeper.session_timeout=5000\nzookeeper.session_timeout=10000\nspark.master=local\n"
        );
        assert!(matches!(
            f.set("spark.mastr", "x"),
            Err(FlagsError::UnknownKey { .. })
        ));
    }

    #[test]
    fn bad_input_is_refused_naming_the_file_and_line() {
        let e = ConfFile::parse("tablet.flags", Format::Gflags, "--a=1\nendpoint 1.2.3.4\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "tablet.flags:2: not a setting, comment or blank line: \"endpoint 1.2.3.4\""
        );
        let mut f = ConfFile::parse("tablet.flags", Format::Gflags, "--a=1\n").unwrap();
        let before = f.clone();
        assert!(f.set("a", "1\n--role=nameserver").is_err());
        assert!(f.set("zk_sesion_timeout", "1").is_err());
        assert_eq!(f, before);
    }
}
