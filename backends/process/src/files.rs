//! Config files on a host, edited through a [`Runner`] with the same editors as the
//! backends ([`rollout_core::conf`]): the file is read with `cat`, edited in memory
//! (comments, order and every untouched byte kept; a key the file does not have is refused),
//! backed up to `<path>.bak` unless a backup is there already (a resumed `apply` keeps the
//! original), written to `<path>.rollout-tmp` and renamed over the file, so a reader never
//! sees half a file. The same commands work on this machine and over ssh.

use std::path::Path;
use std::time::Duration;

use crate::error::ProcessError;
use crate::runner::{Runner, shell_quote, shell_quote_path};

/// The largest file edited (bytes): the new text travels inside one command line.
pub const MAX_FILE: usize = 100 * 1024;

/// Each command's deadline.
const DEADLINE: Duration = Duration::from_secs(30);

/// Why a config file could not be edited or restored; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// The command failed (a missing file, no permission): its output.
    #[error("{path}: {what} failed: {output}")]
    Command {
        /// The file, as a path on the host.
        path: String,
        /// What was run.
        what: &'static str,
        /// The command's exit status and stderr.
        output: String,
    },
    /// The command could not run at all (ssh unreachable, a timeout).
    #[error("{path}: {source}")]
    Run {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Box<ProcessError>,
    },
    /// The file does not parse, or refuses the edit (no such key, a line break in the value).
    #[error(transparent)]
    Conf(#[from] rollout_core::conf::ConfError),
    /// The file is larger than [`MAX_FILE`].
    #[error("{path} is {len} bytes, more than the {MAX_FILE} this editor rewrites")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size in bytes.
        len: usize,
    },
}

async fn run(
    runner: &Runner,
    path: &Path,
    what: &'static str,
    script: &str,
) -> Result<String, FilesError> {
    let shown = path.display().to_string();
    let out = runner
        .run(what, script, DEADLINE)
        .await
        .map_err(|e| FilesError::Run {
            path: shown.clone(),
            source: Box::new(e),
        })?;
    if !out.success() {
        return Err(FilesError::Command {
            path: shown,
            what,
            output: format!("{}: {}", out.status_text(), out.tail(5)),
        });
    }
    Ok(out.stdout)
}

fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// Sets `key` to `value` in the config file at `path` on the runner's host, backing the file
/// up to `<path>.bak` first (an existing backup is kept). Returns the value the key had.
///
/// # Errors
/// [`FilesError`] when the file is missing or unreadable, does not parse, does not have
/// `key`, is too large, or cannot be written; the file is unchanged then.
pub async fn edit(
    runner: &Runner,
    path: &Path,
    key: &str,
    value: &str,
) -> Result<Option<String>, FilesError> {
    let q = shell_quote_path(path);
    let text = run(runner, path, "reading the file", &format!("cat -- {q}")).await?;
    if text.len() > MAX_FILE {
        return Err(FilesError::TooLarge {
            path: path.display().to_string(),
            len: text.len(),
        });
    }
    let name = path.display().to_string();
    let (edited, before) = rollout_core::conf::edit(&name, &text, key, value)?;
    let bak = shell_quote_path(&sibling(path, ".bak"));
    let tmp = shell_quote_path(&sibling(path, ".rollout-tmp"));
    let script = format!(
        "set -e\n[ -e {bak} ] || cp -p -- {q} {bak}\n\
         cp -p -- {q} {tmp}\nprintf '%s' {} > {tmp}\nmv -f -- {tmp} {q}\n",
        shell_quote(&edited)
    );
    run(runner, path, "backing up and writing the file", &script).await?;
    Ok(before)
}

/// Puts the backup `<path>.bak` back in place of `path` on the runner's host and removes it.
///
/// # Errors
/// [`FilesError::Command`] when there is no backup or it cannot be copied back.
pub async fn revert(runner: &Runner, path: &Path) -> Result<(), FilesError> {
    let q = shell_quote_path(path);
    let bak = shell_quote_path(&sibling(path, ".bak"));
    let script = format!("set -e\n[ -e {bak} ]\ncp -p -- {bak} {q}\nrm -f -- {bak}\n");
    run(
        runner,
        path,
        "restoring the file from its .bak backup",
        &script,
    )
    .await?;
    Ok(())
}
