//! OpenMLDB's configuration files, edited in place: gflags flag files
//! (`conf/{nameserver,tablet,apiserver}.flags`: one `--name=value` per line, `#` comments,
//! blank lines, `--noname` for a false boolean) and the taskmanager's Java properties file
//! (`conf/taskmanager.properties`: `key=value`, `#` or `!` comments). Comments, order and
//! every untouched line are kept byte for byte. Reference: docs/openmldb-interfaces.md.
//!
//! ```
//! use rollout_openmldb::flags::{self, Format};
//!
//! let text = "# tablet\n--endpoint=127.0.0.1:10921\n#--zk_session_timeout=10000\n";
//! let mut f = flags::parse("tablet.flags", Format::Gflags, text).unwrap();
//! assert_eq!(f.get("endpoint"), Some("127.0.0.1:10921"));
//! f.set("zk_session_timeout", "20000").unwrap();
//! assert_eq!(
//!     f.render(),
//!     "# tablet\n--endpoint=127.0.0.1:10921\n#--zk_session_timeout=10000\n--zk_session_timeout=20000\n"
//! );
//! assert!(f.set("no_such_flag", "1").is_err());
//! // A flag OpenMLDB's servers read, though the file does not mention it, goes at the end:
//! f.set("auto_failover", "false").unwrap();
//! assert!(f.render().ends_with("--auto_failover=false\n"));
//! ```

use std::path::Path;

/// Flags of OpenMLDB's servers that a file may set without mentioning them first, from
/// `src/flags.cc` (docs/openmldb-interfaces.md), at every supported version: a flag
/// only later versions define (`skip_grant_tables`, from 0.9) must appear in the file to be
/// edited, since gflags refuses an unknown flag in a flagfile and 0.8.5 would not start.
/// Anything else must appear in the file, set or commented out, to be edited: a typo is
/// refused, never appended.
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

pub use rollout_core::conf::{ConfFile, FlagsError, Format};

/// Reads `text` (the file `name`, for messages) in `format`, knowing [`KNOWN_FLAGS`].
///
/// # Errors
/// [`FlagsError::Syntax`] for a line that is not a setting, comment or blank.
pub fn parse(name: &str, format: Format, text: &str) -> Result<ConfFile, FlagsError> {
    ConfFile::parse(name, format, text).map(|f| f.knowing(KNOWN_FLAGS))
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
    let mut f = parse(&name, Format::of(path), &text)?;
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
