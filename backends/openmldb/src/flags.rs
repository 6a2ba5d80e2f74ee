//! OpenMLDB's configuration files, edited in place: gflags flag files
//! (`conf/{nameserver,tablet,apiserver}.flags`: one `--name=value` per line, `#` comments,
//! blank lines, `--noname` for a false boolean) and the taskmanager's Java properties file
//! (`conf/taskmanager.properties`: `key=value`, `#` or `!` comments). Comments, order and
//! every untouched line are kept byte for byte. Reference: shared/reference/openmldb.md §5.
//!
//! ```
//! use rollout_openmldb::flags::{ConfFile, Format};
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

/// Flags of OpenMLDB's servers that a file may set without mentioning them first, from
/// `src/flags.cc` (shared/reference/openmldb.md §6.1). Anything else must appear in the file,
/// set or commented out, to be edited: a typo is refused, never appended.
pub const KNOWN_FLAGS: &[&str] = &[
    "auto_failover",
    "tablet_heartbeat_timeout",
    "tablet_offline_check_interval",
    "zk_session_timeout",
    "zk_keep_alive_check_interval",
    "name_server_task_concurrency",
    "name_server_task_max_concurrency",
    "name_server_task_pool_size",
    "name_server_task_wait_time",
    "name_server_op_execute_timeout",
    "get_task_status_interval",
    "get_table_status_interval",
    "check_binlog_sync_progress_delta",
    "max_op_num",
    "system_table_replica_num",
    "replica_num",
    "partition_num",
    "make_snapshot_time",
    "make_snapshot_check_interval",
    "make_snapshot_threshold_offset",
    "make_snapshot_offline_interval",
    "snapshot_pool_size",
    "binlog_single_file_max_size",
    "binlog_sync_to_disk_interval",
    "binlog_delete_interval",
    "binlog_notify_on_put",
    "task_pool_size",
    "load_table_thread_num",
    "load_table_batch",
    "load_table_queue_size",
    "gc_on_table_recover_count",
    "stream_bandwidth_limit",
    "request_timeout_ms",
    "request_max_retry",
    "skip_grant_tables",
    "use_name",
    "data_dir",
    "db_root_path",
    "ssd_root_path",
    "hdd_root_path",
    "recycle_bin_root_path",
    "recycle_ttl",
    "recycle_bin_enabled",
    "endpoint",
    "role",
    "zk_cluster",
    "zk_root_path",
    "openmldb_log_dir",
    "log_level",
];

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
         OpenMLDB's servers know: check its spelling"
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
        })
    }

    /// The effective value of `key` (the last setting wins, as gflags reads it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().rev().find_map(|l| match l {
            Line::Setting { key: k, value, .. } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    /// Whether `key` may be set here: set or commented out in the file, or (gflags) a
    /// known flag.
    pub fn knows(&self, key: &str) -> bool {
        self.get(key).is_some()
            || self.lines.iter().any(|l| match l {
                Line::Other(c) => commented_key(self.format, c).as_deref() == Some(key),
                Line::Setting { .. } => false,
            })
            || (self.format == Format::Gflags && KNOWN_FLAGS.contains(&key))
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

/// Why a file on disk could not be edited or put back; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The file could not be read, backed up or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse, or refuses the edit.
    #[error(transparent)]
    Flags(#[from] FlagsError),
}

fn io(path: &Path, source: std::io::Error) -> EditError {
    EditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The backup of `path`: `<path>.bak`, as the seed's `cp conf/tablet.flags conf/tablet.flags.bak`.
pub fn backup_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".bak");
    p.into()
}

/// Sets `key` to `value` in the file at `path` (its format by its name), after copying it to
/// [`backup_path`] unless a backup is there already (a resumed edit keeps the first one).
/// The new text is written to a temporary file beside it and renamed over it. Returns the
/// value the key had, if any.
///
/// # Errors
/// The file is missing or unreadable, does not parse, does not know `key`, or cannot be
/// written; the file is left as it was then.
pub fn edit_file(path: &Path, key: &str, value: &str) -> Result<Option<String>, EditError> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let name = path.display().to_string();
    let mut f = ConfFile::parse(&name, Format::of(path), &text)?;
    let before = f.get(key).map(str::to_owned);
    f.set(key, value)?;
    let backup = backup_path(path);
    if !backup.exists() {
        std::fs::copy(path, &backup).map_err(|e| io(&backup, e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".rollout-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, f.render()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    Ok(before)
}

/// Puts `path` back from its backup and removes the backup.
///
/// # Errors
/// No backup, or it cannot be copied back.
pub fn revert_file(path: &Path) -> Result<(), EditError> {
    let backup = backup_path(path);
    std::fs::copy(&backup, path).map_err(|e| io(&backup, e))?;
    std::fs::remove_file(&backup).map_err(|e| io(&backup, e))?;
    Ok(())
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
